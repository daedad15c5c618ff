"""Shared by the generator pretraining benchmarks: train, measure before/after, tabulate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from synthcl.eval.generator_eval import evaluate_generator
from synthcl.io import atomic_write_text
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


def write_report(out: Path, *, title: str, command: str, machine: str, recipe: str, measured: dict[str, Any],
                 steps: int, n: int, images: str) -> None:
    """Write (and print) the markdown report of one pretraining benchmark run.

    Args:
        title: the page's heading; command: how the run was started; machine: its markdown lines.
        recipe: the recipe line's text; measured: :func:`train_and_measure`'s result.
        steps: the generator steps trained; n: images per measurement; images: where the pictures are.
    """
    before, after = measured["before"], measured["after"]
    lines = [
        f"# {title}",
        "",
        f"- Command: `{command}`",
        machine,
        f"- Recipe: {recipe}",
        f"- Feature space: {after['feature_space']}; {n} generated vs. {n} real training images "
        "(FID depends on the sample size: compare only numbers with the same n)",
        "",
        *score_table(before, after, steps),
        "",
        f"Pretraining took {measured['train_s']:.0f} s; the four measurements took {measured['eval_s']:.0f} s.",
        images,
        "",
    ]
    atomic_write_text(out, "\n".join(lines))
    print("\n".join(lines))
