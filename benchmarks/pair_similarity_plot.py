"""Hard positive pairs over training: their measured similarity and the hardness schedule, as one PNG.

Reads the metrics.csv of a run trained with hard pairs (synthesis mode ``hard-pairs`` or ``joint``):
``pair_ssim`` (SSIM between the generator's and its moving-average partner's images of the same latents),
``pair_cosine`` (the learner's cosine similarity between their features) and ``hardness`` (the latent
perturbation of the schedule), against the training step. Rows before the generator warm-up, where these
are empty, are left out. Writes docs/images/pair-similarity.png by default.

With ``--controller`` it draws the hardness controller of a run with ``synthesis.hardness_control: target``
instead: the target and the measured pair similarity (the pair cosine relative to the cosine of unrelated
samples), the raw cosines of pairs and of unrelated samples (all in the learner's projector space), and the
hardness it chose.

    synthcl train fashion-mnist-joint --out runs/fashion-mnist-joint
    python benchmarks/pair_similarity_plot.py runs/fashion-mnist-joint/metrics.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from synthcl.io import save_figure  # noqa: E402

COLUMNS = ("pair_ssim", "pair_cosine", "hardness")
CONTROLLER = ("pair_target", "pair_similarity", "pair_cosine_step", "random_cosine", "hardness")


def read_series(path: Path, columns: tuple[str, ...] = COLUMNS) -> dict[str, list[tuple[int, float]]]:
    """step -> value series for each of ``columns``, finite values only."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("step", *columns) if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"error: {path} has no column(s) {', '.join(missing)}: is it the metrics.csv of a "
                             "run with synthesis.mode hard-pairs or joint?")
        series: dict[str, list[tuple[int, float]]] = {c: [] for c in columns}
        for row in reader:
            for column in columns:
                try:
                    value = float(row[column])
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    series[column].append((int(row["step"]), value))
    if not any(series[c] for c in columns if c != "hardness"):
        raise SystemExit(f"error: {path} has no measured pair similarity yet (still in the generator warm-up, or "
                         "no hardness controller?)")
    return series


LINES = {
    "pairs": (("pair_ssim", "SSIM (pixels)", "-"), ("pair_cosine", "cosine (learner features)", "--")),
    "controller": (("pair_target", "target pair similarity", "-"), ("pair_similarity", "measured pair similarity", "--"),
                   ("pair_cosine_step", "pair cosine", ":"), ("random_cosine", "cosine of unrelated samples", "-.")),
}


def plot(series: dict[str, list[tuple[int, float]]], out: Path, title: str, kind: str = "pairs") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 3.6), dpi=120)
    for column, label, style in LINES[kind]:
        if series[column]:
            steps, values = zip(*series[column])
            left.plot(steps, values, style, label=label)
    left.set_xlabel("training step")
    left.set_ylabel("pair similarity" if kind == "pairs" else "similarity / cosine (learner projector)")
    right = left.twinx()
    if series["hardness"]:
        steps, values = zip(*series["hardness"])
        right.plot(steps, values, ":", color="grey", label="hardness (latent perturbation)")
    right.set_ylabel("hardness")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="best", fontsize="small")
    left.set_title(title, fontsize="medium")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", type=Path, help="metrics.csv of a joint or hard-pairs run (or the run directory)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "pair-similarity.png")
    parser.add_argument("--title", default=None)
    parser.add_argument("--controller", action="store_true",
                        help="plot the hardness controller: target vs measured pair cosine, and the hardness")
    args = parser.parse_args(argv)
    path = args.metrics / "metrics.csv" if args.metrics.is_dir() else args.metrics
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist")
    kind = "controller" if args.controller else "pairs"
    title = args.title or ("The controller steers pair similarity to its target" if args.controller
                           else "Hard positive pairs drift apart as training goes on")
    out = plot(read_series(path, CONTROLLER if args.controller else COLUMNS), args.out, title, kind)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
