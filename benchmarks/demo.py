"""`make demo`'s table: the floors, plain SimCLR and the paper's method side by side on the primary metric.

Reads the eval JSON files that `synthcl eval` wrote into the two runs (trained; `--init pixels` and
`--init random` on the plain run) and the training minutes from their metrics, and prints whatever they say.

    python benchmarks/demo.py runs/fashion-mnist-scarce runs/fashion-mnist-scarce-joint
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe

from synthcl.rundir import training_seconds


def minutes(run: Path) -> float:
    """Training minutes of a run: its learner steps, plus its generator warm-up when it had one."""
    return (training_seconds(run / "generator-pretrain") + training_seconds(run)) / 60


def main(plain: Path, joint: Path) -> None:
    def read(run: Path, name: str) -> dict:
        path = run / name
        if not path.is_file():
            sys.exit(f"error: {path} is missing; run `synthcl eval {run}` (see the Makefile's demo target)")
        return json.loads(path.read_text())

    rows = [("raw pixels (no encoder)", read(plain, "eval-pixels.json"), None),
            ("random-init encoder", read(plain, "eval-random.json"), None),
            (f"plain SimCLR ({plain.name})", read(plain, "eval.json"), minutes(plain)),
            (f"SimCLR + joint GAN ({joint.name})", read(joint, "eval.json"), minutes(joint))]
    fraction = rows[2][1]["few_label_fraction"]
    machine = describe()
    print()
    print(f"Fashion-MNIST, {machine['cpu']}, GPU: {machine['gpu']}")
    print(f"primary metric: linear probe on {100 * fraction:g}% of the labels (mean ± sd over label subsets)")
    print(f"{'features':44s} {'primary':>15s} {'kNN':>7s} {'linear':>7s} {'minutes':>8s}")
    for name, e, mins in rows:
        primary = f"{e['linear_few_top1']:.2f} ± {e['linear_few_sd']:.2f}"
        print(f"{name:44s} {primary:>15s} {e['knn_top1']:7.2f} {e['linear_top1']:7.2f} "
              f"{'' if mins is None else f'{mins:.1f}':>8s}")
    gap = rows[3][1]["linear_few_top1"] - rows[2][1]["linear_few_top1"]
    print(f"joint - plain: {gap:+.2f} points on the primary metric (one seed; "
          "benchmarks/results/quality.md has three, paired)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/demo.py PLAIN_RUN JOINT_RUN")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
