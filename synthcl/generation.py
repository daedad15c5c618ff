"""Load a trained generator from a run and draw samples or ladders of positive pairs from it."""

from __future__ import annotations

from pathlib import Path

import torch

from synthcl.errors import ConfigError, RunDirError
from synthcl.interfaces import Generator
from synthcl.viz import save_pair_ladder, save_sample_grid

MAX_GRID = 16384
"""Most images in one PNG grid: beyond it the picture is unreadable and its memory unbounded."""
GENERATE_BATCH = 256
"""Latents per generator call when drawing a grid: memory stays bounded whatever ``--n`` is."""


def load_generator(path: str | Path) -> Generator:
    """The generator of a generator run (its ``generator/`` export or last checkpoint) or of a
    ``save_pretrained`` folder, in eval mode on the CPU.

    Raises:
        RunDirError: if ``path`` holds no generator.
        CheckpointError: if the generator files are damaged or do not fit the architecture.
    """
    from synthcl.rundir import LAST
    from synthcl.training.build import generator_folder

    path = Path(path)
    folder = generator_folder(path)
    if not (folder / "config.json").is_file():
        if (path / "checkpoints" / LAST / "meta.json").is_file() and (path / "run.json").is_file():
            return _from_checkpoint(path)
        raise RunDirError(f"{path} holds no generator (no generator/config.json); pass a generator run directory")
    return Generator.from_pretrained(folder).eval()


def _from_checkpoint(run_dir: Path) -> Generator:
    """A generator run that has not finished: rebuild it from the recipe and the last checkpoint."""
    from synthcl.config import read_run_recipe
    from synthcl.rundir import LAST
    from synthcl.training.build import build_generator, load_train_source
    from synthcl.weights import load_weights

    recipe = read_run_recipe(run_dir)
    if recipe.stage != "generator":
        raise RunDirError(f"{run_dir} is a learner run, not a generator run")
    generator = build_generator(recipe, load_train_source(recipe))
    load_weights(generator, run_dir / "checkpoints" / LAST / "weights.safetensors")
    return generator.eval()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png_target(out: str | Path) -> Path:
    """``out`` as the PNG file to write: it must end in ``.png``, and an existing file there must be a PNG
    (a run's weights or any other file are never replaced by a picture).

    Raises:
        ConfigError: otherwise, naming the file.
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {out}")
    if out.exists():
        if not out.is_file():
            raise ConfigError(f"--out {out} is a folder, not a file")
        with open(out, "rb") as fh:
            if fh.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise ConfigError(f"--out {out} exists and is not a PNG; it is left as it is: choose another --out")
    return out


@torch.no_grad()
def write_samples(run: str | Path, out: str | Path, *, n: int = 64, seed: int = 0) -> Path:
    """Write a grid of ``n`` samples of the run's generator to ``out`` (PNG)."""
    if n > MAX_GRID:
        raise ConfigError(f"--n {n}: a grid holds at most {MAX_GRID} samples")
    out = check_png_target(out)
    generator = load_generator(run)
    z = generator.sample_latents(n, torch.Generator().manual_seed(seed))
    # In batches: the generator's activations stay bounded whatever n is; only the images are kept.
    images = torch.cat([generator(part).cpu() for part in z.split(GENERATE_BATCH)])
    return save_sample_grid(images, out)


@torch.no_grad()
def write_pair_ladder(run: str | Path, out: str | Path, *, n: int = 8, max_hardness: float = 1.0,
                      rungs: int = 5, seed: int = 0) -> Path:
    """Write ``n`` rows of positive pairs (generator, partner) at ``rungs`` hardness levels from 0 to
    ``max_hardness``: each row keeps its latent, so the pair drifts apart from left to right."""
    if 2 * n * rungs > MAX_GRID:
        raise ConfigError(f"--n {n} pairs x {rungs} rungs: a ladder holds at most {MAX_GRID} images")
    out = check_png_target(out)
    generator = load_generator(run)
    z = generator.sample_latents(n, torch.Generator().manual_seed(seed))
    levels = [max_hardness * i / max(1, rungs - 1) for i in range(rungs)]
    ladder = [generator.pair(z, h, generator=torch.Generator().manual_seed(seed + 1)) for h in levels]
    return save_pair_ladder(ladder, out)
