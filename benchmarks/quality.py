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

from _machine import describe, markdown

from synthcl.eval import evaluate_run
from synthcl.training import train

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES, BATCH = 60000, 256  # Fashion-MNIST's training set; the quickstart's batch
MODES = ["none", "static", "hard-samples", "hard-pairs", "joint"]
# generator -> (pretraining recipe, joint recipe)
GENERATORS = {"gan": ("fashion-mnist-gan", "fashion-mnist-joint"),
              "diffusion": ("fashion-mnist-diffusion", "fashion-mnist-joint-diffusion")}


def row_key(row: dict) -> tuple:
    return (row["fraction"], row["mode"], row.get("generator", "gan"), row.get("variant", "default"), row["seed"])


def label(row: dict) -> str:
    """The table's name for a row's configuration: the mode, plus generator and variant where they apply."""
    if row["mode"] == "none":
        return "none"
    name = row["mode"] if row.get("generator", "gan") == "gan" else f"{row['mode']} ({row['generator']})"
    variant = row.get("variant", "default")
    return name if variant == "default" else f"{name} [{variant}]"


def pretrain(generator: str, fraction: float, steps: int, runs: Path) -> Path:
    """The generator pretrained on the fraction's images (once per generator and fraction, then reused)."""
    out = runs / (f"gan-f{fraction}" if generator == "gan" else f"{generator}-f{fraction}")
    if not (out / "generator" / "config.json").is_file():
        start = time.perf_counter()
        train(GENERATORS[generator][0], out=out, overwrite=True, quiet=True,
              overrides=[f"data.fraction={fraction}", f"train.max_steps={steps}", "train.epochs=1000"])
        print(f"f={fraction}: {generator} pretrained in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def run_grid(args: argparse.Namespace, runs: Path) -> list[dict]:
    rows = []
    for fraction in args.fractions:
        for mode in args.modes:
            for seed in args.seeds:
                variant = args.variant if mode != "none" else "default"
                gen = args.generator if mode != "none" else "gan"
                tag = "" if (gen, variant) == ("gan", "default") else f"-{gen}-{variant}"
                out = runs / f"f{fraction}-{mode}{tag}-s{seed}"
                done = out / "quality-row.json"
                if done.is_file():  # finished earlier with the same settings: reuse (the runs folder is a cache)
                    rows.append(json.loads(done.read_text()))
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                if args.collect:
                    print(f"not finished, left out: {out}", flush=True)
                    continue
                # The same number of steps at every fraction: the schedule spans exactly `steps`, with the
                # quickstart's warm-up share (1/8).
                steps_per_epoch = max(1, round(fraction * TRAIN_IMAGES)) // BATCH
                epochs = args.steps / steps_per_epoch
                overrides = [f"data.fraction={fraction}", f"train.seed={seed}", f"train.epochs={epochs}",
                             f"optim.warmup_epochs={epochs / 8}", f"synthesis.mode={mode}"]
                recipe = "quickstart" if mode == "none" else GENERATORS[gen][1]
                if mode != "none":
                    pretrained = pretrain(gen, fraction, args.gan_steps if gen == "gan" else args.diffusion_steps, runs)
                    overrides += [f"generator.pretrained={pretrained}", "generator.name=null",
                                  "synthesis.warmup_steps=0", *args.set]
                start = time.perf_counter()
                train(recipe, out=out, overwrite=True, quiet=True, overrides=overrides)
                train_s = time.perf_counter() - start
                result = evaluate_run(out, "all", quiet=True)
                rows.append({"fraction": fraction, "mode": mode, "generator": gen, "variant": variant,
                             "overrides": args.set if mode != "none" else [], "seed": seed,
                             "linear": result["linear_top1"], "knn": result["knn_top1"], "train_s": train_s})
                done.write_text(json.dumps(rows[-1]))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summarize(rows: list[dict], metric: str) -> dict[tuple[float, str], tuple[float, float, int]]:
    table: dict[tuple[float, str], list[float]] = {}
    for r in rows:
        table.setdefault((r["fraction"], label(r)), []).append(r[metric])
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in table.items()}


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    stats = summarize(rows, "linear")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in sorted({k[1] for k in stats}):
        points = sorted((f, m, s) for (f, n), (m, s, _) in stats.items() if n == name)
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                    marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the Fashion-MNIST training images")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def targets(linear: dict) -> list[str]:
    lines = []
    for f in sorted({k[0] for k in linear}):
        for name in sorted(n for (ff, n) in linear if ff == f and n.startswith("joint")):
            (jm, js, _), none = linear[(f, name)], linear.get((f, "none"))
            if none is not None:
                gap, spread = jm - none[0], 2 * max(js, none[1])
                verdict = "met" if gap >= 2.0 and gap > spread else "not met"
                lines.append(f"- f={f}: {name} - none = {gap:+.2f} points (target: >= +2.0 and beyond two standard "
                             f"deviations, here {spread:.2f}): {verdict}")
            static = linear.get((f, name.replace("joint", "static", 1)))
            if static is not None:
                gap = jm - static[0]
                lines.append(f"- f={f}: {name} - static = {gap:+.2f} points (target > 0): {'met' if gap > 0 else 'not met'}")
        if (f, "joint") in linear and (f, "joint (diffusion)") in linear:
            gap = linear[(f, "joint (diffusion)")][0] - linear[(f, "joint")][0]
            lines.append(f"- f={f}: joint (diffusion) - joint (gan) = {gap:+.2f} points (target >= 0): "
                         f"{'met' if gap >= 0 else 'not met'}")
    if (0.1, "none") in linear and (1.0, "none") in linear:
        gap = linear[(1.0, "none")][0] - linear[(0.1, "none")][0]
        lines.append(f"- headroom: none at f=1.0 - none at f=0.1 = {gap:+.2f} points: what ten times more real images "
                     "buy at this budget, an upper bound in spirit on what synthetic images can add at f=0.1")
    if (0.5, "joint") in linear and (1.0, "none") in linear:
        gap = linear[(0.5, "joint")][0] - linear[(1.0, "none")][0]
        lines.append(f"- data efficiency: joint at f=0.5 - none at f=1.0 = {gap:+.2f} points (target >= 0): "
                     f"{'met' if gap >= 0 else 'not met'}")
    return lines


def paired(rows: list[dict]) -> list[str]:
    """Differences to ``none`` run by run at the same seed, which fixes the learner's initialisation, the
    order of the real batches and their augmentations (the loop seeds them all from ``train.seed``), so the
    seed-to-seed spread that every mode shares cancels."""
    by_seed: dict[tuple[float, str], dict[int, dict]] = {}
    for r in rows:
        by_seed.setdefault((r["fraction"], label(r)), {})[r["seed"]] = r
    lines = []
    for (f, name), runs in sorted(by_seed.items()):
        none = by_seed.get((f, "none"), {})
        seeds = sorted(set(runs) & set(none))
        if name == "none" or not seeds:
            continue
        parts = []
        for metric in ("linear", "knn"):
            d = [runs[s][metric] - none[s][metric] for s in seeds]
            if len(d) == 1:  # a one-seed sweep point: its difference, no spread
                parts.append(f"{d[0]:+.2f} (seed {seeds[0]} only)")
                continue
            parts.append(f"{statistics.mean(d):+.2f} ± {statistics.stdev(d):.2f} "
                         f"(higher in {sum(x > 0 for x in d)} of {len(d)}: {', '.join(f'{x:+.2f}' for x in d)})")
        lines.append(f"| {f} | {name} - none | {' | '.join(parts)} |")
    if not lines:
        return []
    return ["", "## Paired by seed", "",
            "Each run minus `none` at the same seed (same learner initialisation, real batches and augmentations); "
            "mean ± standard deviation of the differences:", "",
            "| fraction | comparison | linear top-1 | kNN top-1 |", "|---:|---|---|---|", *lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["none", "static", "joint"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=936, help="learner steps of every run (same for all modes)")
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="gan")
    parser.add_argument("--gan-steps", type=int, default=2811, help="GAN pretraining steps per fraction")
    parser.add_argument("--diffusion-steps", type=int, default=1406,
                        help="diffusion pretraining steps per fraction (batch 128: the GAN's 2811 x 64 images)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra recipe overrides for the generator modes (a sweep); name them with --variant")
    parser.add_argument("--variant", default="default", help="the table's name for the --set overrides")
    parser.add_argument("--runs", type=Path, default=None,
                        help="keep the runs here; finished runs found there are reused (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    parser.add_argument("--fresh", action="store_true", help="do not merge with the rows already in --out's .json")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: tabulate the finished runs of this grid found in --runs")
    args = parser.parse_args()
    if args.set and args.variant == "default":
        parser.error("--set needs --variant NAME, so that the sweep's rows are told apart in the table")
    machine = describe()
    # --collect tabulates what the same command without it trains: that is the command that reproduces the rows
    command = "python benchmarks/quality.py " + " ".join(a for a in sys.argv[1:] if a != "--collect")
    if args.collect and args.runs is None:
        parser.error("--collect needs --runs, the folder that holds the finished runs")
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_grid(args, args.runs or Path(tmp))
    store = args.out.with_suffix(".json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = {} if args.fresh or not store.is_file() else json.loads(store.read_text())
    if isinstance(previous, list):  # the first format: rows only
        previous = {"commands": [], "rows": previous}
    merged = {row_key(r): r for r in previous.get("rows", [])} | {row_key(r): r for r in rows}
    commands = [c for c in previous.get("commands", []) if c != command] + [command]
    all_rows = list(merged.values())
    linear, knn = summarize(all_rows, "linear"), summarize(all_rows, "knn")
    lines = ["# Quality benchmark Q: Fashion-MNIST, SimCLR + synthesis", "", "- Commands (rows merge across them):",
             *[f"  - `{c}`" for c in commands], markdown(machine),
             (f"- Every run: quickstart encoder and settings, {args.steps} learner steps on the fraction's real images;"
             " linear probe on all 60k labelled training images, top-1 on the 10k test images; kNN beside it"),
             "- Mean and standard deviation over seeds; training times (in the .json) depend on what else ran on the"
             " machine and are no speed measure (see speed.md)",
             "", "| fraction | mode | linear top-1 (%) | kNN top-1 (%) | seeds |", "|---:|---|---:|---:|---:|"]
    for key in sorted(linear):
        (lm, ls, n), (km, ks, _) = linear[key], knn[key]
        lines.append(f"| {key[0]} | {key[1]} | {lm:.2f} ± {ls:.2f} | {km:.2f} ± {ks:.2f} | {n} |")
    variants = {label(r): r.get("overrides", []) for r in all_rows if r.get("variant", "default") != "default"}
    if variants:
        lines += ["", "Variants (recipe overrides on top of the generator's joint recipe):", ""]
        lines += [f"- `{name}`: `{' '.join(o)}`" for name, o in sorted(variants.items())]
    lines += ["", "## Targets", "", *targets(linear), *paired(all_rows)]
    if plot(all_rows, args.out.with_suffix(".png")):
        lines += ["", f"![linear top-1 against fraction]({args.out.with_suffix('.png').name})"]
    lines.append("")
    args.out.write_text("\n".join(lines))
    store.write_text(json.dumps({"commands": commands, "rows": all_rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
