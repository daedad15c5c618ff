"""Quality benchmark Q: does the synthetic data teach? (see the project's BENCHMARKS.md, section Q)

For each fraction f of the Fashion-MNIST training images: pretrain the GAN on that fraction (once, the
same budget for every mode), then train SimCLR (the quickstart encoder and settings) in each synthesis
mode and seed, for the same number of steps on the same real images, and probe it (linear probe on the
full labelled training set, top-1 on the 10k test set; kNN beside it). `static` adds samples of the
frozen pretrained generator; the generator schemes start from the same pretrained generator and keep
training it. Writes benchmarks/results/quality.md and quality.png.

    python benchmarks/quality.py --fractions 0.1 1.0 --modes none static joint --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe, markdown  # noqa: E402

from synthcl.eval import evaluate_run  # noqa: E402
from synthcl.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES, BATCH = 60000, 256  # Fashion-MNIST's training set; the quickstart's batch
MODES = ["none", "static", "hard-samples", "hard-pairs", "joint"]


def run_grid(args: argparse.Namespace, runs: Path) -> list[dict]:
    rows = []
    for fraction in args.fractions:
        gan = runs / f"gan-f{fraction}"
        if any(m != "none" for m in args.modes) and not (gan / "generator" / "config.json").is_file():
            start = time.perf_counter()
            train("fashion-mnist-gan", out=gan, overwrite=True, quiet=True,
                  overrides=[f"data.fraction={fraction}", f"train.max_steps={args.gan_steps}", "train.epochs=1000"])
            print(f"f={fraction}: GAN pretrained in {time.perf_counter() - start:.0f} s", flush=True)
        for mode in args.modes:
            for seed in args.seeds:
                out = runs / f"f{fraction}-{mode}-s{seed}"
                # The same number of steps at every fraction: the schedule spans exactly `steps`, with the
                # quickstart's warm-up share (1/8).
                steps_per_epoch = max(1, round(fraction * TRAIN_IMAGES)) // BATCH
                epochs = args.steps / steps_per_epoch
                overrides = [f"data.fraction={fraction}", f"train.seed={seed}", f"train.epochs={epochs}",
                             f"optim.warmup_epochs={epochs / 8}", f"synthesis.mode={mode}"]
                recipe = "quickstart" if mode == "none" else "fashion-mnist-joint"
                if mode != "none":
                    overrides += [f"generator.pretrained={gan}", "generator.name=null", "synthesis.warmup_steps=0"]
                start = time.perf_counter()
                train(recipe, out=out, overwrite=True, quiet=True, overrides=overrides)
                train_s = time.perf_counter() - start
                result = evaluate_run(out, "all", quiet=True)
                rows.append({"fraction": fraction, "mode": mode, "seed": seed, "linear": result["linear_top1"],
                             "knn": result["knn_top1"], "train_s": train_s})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summarize(rows: list[dict], metric: str) -> dict[tuple[float, str], tuple[float, float, int]]:
    table: dict[tuple[float, str], list[float]] = {}
    for r in rows:
        table.setdefault((r["fraction"], r["mode"]), []).append(r[metric])
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in table.items()}


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    stats = summarize(rows, "linear")
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in MODES:
        points = sorted((f, m, s) for (f, mo), (m, s, _) in stats.items() if mo == mode)
        if points:
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                        marker="o", capsize=3, label=mode)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the Fashion-MNIST training images")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["none", "static", "joint"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=936, help="learner steps of every run (same for all modes)")
    parser.add_argument("--gan-steps", type=int, default=2811, help="GAN pretraining steps per fraction")
    parser.add_argument("--runs", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    args = parser.parse_args()
    machine = describe()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_grid(args, args.runs or Path(tmp))
    linear, knn = summarize(rows, "linear"), summarize(rows, "knn")
    command = (f"python benchmarks/quality.py --fractions {' '.join(map(str, args.fractions))} --modes "
               f"{' '.join(args.modes)} --seeds {' '.join(map(str, args.seeds))} --steps {args.steps}")
    lines = ["# Quality benchmark Q: Fashion-MNIST, SimCLR + GAN synthesis", "", f"- Command: `{command}`",
             markdown(machine),
             f"- Every run: quickstart encoder and settings, {args.steps} learner steps on the fraction's real images;"
             " linear probe on all 60k labelled training images, top-1 on the 10k test images; kNN beside it",
             "", "| fraction | mode | linear top-1 (%) | kNN top-1 (%) | seeds |", "|---:|---|---:|---:|---:|"]
    for key in sorted(linear):
        (lm, ls, n), (km, ks, _) = linear[key], knn[key]
        lines.append(f"| {key[0]} | {key[1]} | {lm:.2f} ± {ls:.2f} | {km:.2f} ± {ks:.2f} | {n} |")
    lines += ["", "## Targets", ""]
    for f in sorted({k[0] for k in linear}):
        if (f, "none") in linear and (f, "joint") in linear:
            (jm, js, _), (nm, ns, _) = linear[(f, "joint")], linear[(f, "none")]
            gap = jm - nm
            lines.append(f"- f={f}: joint - none = {gap:+.2f} points (target at f=0.1: >= +2.0 and beyond two standard "
                         f"deviations, here {2 * max(js, ns):.2f}): {'met' if gap >= 2.0 and gap > 2 * max(js, ns) else 'not met'}")
        if (f, "static") in linear and (f, "joint") in linear:
            gap = linear[(f, "joint")][0] - linear[(f, "static")][0]
            lines.append(f"- f={f}: joint - static = {gap:+.2f} points (target > 0): {'met' if gap > 0 else 'not met'}")
    if plot(rows, args.out.with_suffix(".png")):
        lines += ["", f"![linear top-1 against fraction]({args.out.with_suffix('.png').name})"]
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    (args.out.with_suffix(".json")).write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
