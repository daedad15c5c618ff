"""Shared by the generator pretraining benchmarks: train, measure before/after, tabulate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from synthcl.eval.generator_eval import evaluate_generator
from synthcl.training import train


def train_and_measure(recipe: str, out: Path, *, encoder: Path | None, n: int,
                      overrides: list[str] | None = None) -> dict[str, Any]:
    """Train ``recipe`` into ``out``, then score the untrained (step 0, same seed) and the trained generator."""
    features = "encoder" if encoder else "inception"
    start = time.perf_counter()
    run = train(recipe, out=out, overwrite=True, quiet=True, overrides=overrides or [])
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    before = evaluate_generator(run, encoder=encoder, features=features, n=n, init="random", quiet=True)
    after = evaluate_generator(run, encoder=encoder, features=features, n=n, quiet=True)
    return {"run": run, "before": before, "after": after, "train_s": train_s, "eval_s": time.perf_counter() - start}


def score_table(before: dict[str, Any], after: dict[str, Any], steps: int) -> list[str]:
    """Markdown rows: FID (or the labelled Frechet distance) and KID at the start, the end, and of the partner."""
    key = "fid" if "fid" in after["generator"] else "fd"
    label = "FID" if key == "fid" else "Frechet distance"

    def row(name: str, result: dict[str, Any], which: str) -> str:
        m = result[which]
        return f"| {name} | {m[key]:.1f} | {m['kid']:.4f} ± {m['kid_std']:.4f} |"

    return [f"| generator | {label} | KID |", "|---|---:|---:|",
            row("start (untrained, step 0)", before, "generator"), row(f"end (step {steps})", after, "generator"),
            row(f"end, moving-average partner (step {steps})", after, "partner")]
