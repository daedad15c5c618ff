"""`synthcl eval`: probe the backbone of a finished run, or one of the two floors beside it: a randomly
initialised copy of it (``init="random"``) and the raw pixels themselves (``init="pixels"``: the images
resized and standardised exactly as the encoder sees them, flattened, no encoder)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from synthcl.config import read_run_recipe
from synthcl.data import load_dataset
from synthcl.errors import CheckpointError, ConfigError, RegistryError, RunDirError
from synthcl.eval.probes import extract_features, few_label_probe, knn_accuracy, linear_probe
from synthcl.eval.results import CHECKPOINT, combine_probes, fingerprint, update_result
from synthcl.io import read_json
from synthcl.nn.backbones import build_backbone
from synthcl.rundir import LAST, STATUS_FILE, require_run_dir
from synthcl.weights import load_weights

Protocol = Literal["linear", "knn", "few-label", "all"]
Init = Literal["trained", "random", "pixels"]
INITS = ("trained", "random", "pixels")
# what each init measures, for the progress lines
FEATURES_OF = {"trained": "trained backbone", "random": "randomly initialised backbone", "pixels": "raw pixels"}
PROBE_CONTEXT = ("init", "dataset", "train_images", "test_images")
"""What results merged into one eval.json share besides the weights measured."""


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        raise CheckpointError(f"{path} is truncated or corrupt") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is truncated or corrupt")
    return data


def _step(info: dict[str, Any], where: Path) -> int:
    step = info.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int):
        raise CheckpointError(f"{where} is damaged: its step is {step!r}, not a whole number")
    return step


def check_init(init: str) -> None:
    """Refuse an ``init`` other than "trained", "random" or "pixels", naming them."""
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}, got {init!r}")


def load_run_backbone(run_dir: Path, init: str = "trained") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's backbone and load its weights (``init="random"``: same seed, no weights;
    ``init="pixels"``: no encoder at all, the standardised images flattened).

    Uses the final export (``backbone.json``/``backbone.safetensors``), or the ``last`` checkpoint of a
    run that has not finished; the floors (``random``, ``pixels``) of a run stopped before its first
    checkpoint use the description in its ``run.json``.

    Raises:
        RunDirError: if ``run_dir`` is not a run, or has no weights yet.
        CheckpointError: if the weights are truncated, corrupt, or from another architecture.
    """
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    if read_run_recipe(run_dir).stage == "generator":
        raise RunDirError(f"{run_dir} is a generator run; measure it with --protocol generator")
    export = _read_json(run_dir / "backbone.json")
    checkpoint = run_dir / "checkpoints" / LAST
    meta = _read_json(checkpoint / "meta.json")
    # A run resumed past its export has a newer checkpoint than backbone.safetensors: use the newest.
    if export is not None and (meta is None or _step(meta, checkpoint) <= _step(export, run_dir / "backbone.json")):
        info, weights, prefix = export, run_dir / "backbone.safetensors", ""
    elif meta is not None:
        info, weights, prefix = meta, checkpoint / "weights.safetensors", "backbone."
    elif init != "trained" and _described(status := _read_json(run_dir / STATUS_FILE) or {}):
        # The floors need no trained weights: the description run.json holds from the first step on will do.
        info, weights, prefix = status, None, ""
    else:
        raise RunDirError(f"run {run_dir} has no checkpoint yet; train it further or resume it")
    if not _described(info):
        raise CheckpointError(f"{run_dir}: the backbone description is incomplete or damaged; retrain or resume the run")
    if init == "pixels":
        return nn.Flatten(), info
    torch.manual_seed(0)
    try:
        backbone = build_backbone(info["backbone"], info["in_channels"], **info["options"])
    except (TypeError, ValueError, RegistryError) as err:
        raise CheckpointError(f"{run_dir}: the backbone description is damaged ({err})") from None
    if init == "random":
        return backbone, info
    assert weights is not None
    load_weights(backbone, weights, prefix)
    return backbone, info


def _described(info: dict[str, Any]) -> bool:
    """Whether ``info`` says how to rebuild the backbone and standardise its input."""
    return (isinstance(info.get("backbone"), str) and isinstance(info.get("options"), dict)
            and isinstance(info.get("in_channels"), int) and isinstance(info.get("normalization"), dict))


def evaluate_run(
    run_dir: str | Path,
    protocol: Protocol = "all",
    *,
    init: Init = "trained",
    quiet: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Probe a run's frozen backbone on its dataset's labelled train and test sets.

    Args:
        run_dir: a directory written by ``synthcl train``.
        protocol: "linear" (linear probe on all labels), "knn" (weighted kNN on all labels), "few-label"
            (linear probe on ``eval.few_label_fraction`` of the labels, class-balanced, averaged over
            ``eval.few_label_seeds`` label subsets) or "all" (the three).
        init: "trained" (the run's weights), or a floor: "random" (a randomly initialised copy) or
            "pixels" (the standardised images themselves, no encoder).

    Returns:
        A dict with ``linear_top1``, ``knn_top1`` and/or ``linear_few_top1`` with ``linear_few_sd``
        (percent), the settings and the weights measured (``checkpoint``). It is also added to ``eval.json``
        (``eval-random.json``, ``eval-pixels.json``) in the run directory: the results of other protocols
        measured on the same weights stay in the file; those measured on other weights (the run trained
        further since) move to its ``superseded`` list (see :mod:`synthcl.eval.results`).
    """
    check_init(init)
    run_dir = Path(run_dir)
    start = time.perf_counter()
    f = run_features(run_dir, init, device=device, quiet=quiet)
    e = f.recipe.eval
    x_train, y_train, x_test, y_test = f.x_train, f.y_train, f.x_test, f.y_test
    result: dict[str, Any] = {"run_dir": str(run_dir), "init": init, "dataset": f.recipe.data.dataset,
                              "train_images": len(y_train), "test_images": len(y_test), CHECKPOINT: f.checkpoint}
    if protocol in ("linear", "all"):
        result["linear_top1"] = linear_probe(
            x_train, y_train, x_test, y_test, epochs=e.linear_epochs, lr=e.linear_lr,
            batch_size=e.linear_batch_size, weight_decay=e.linear_weight_decay,
        )
    if protocol in ("knn", "all"):
        result["knn_top1"] = knn_accuracy(x_train, y_train, x_test, y_test, k=e.knn_k, temperature=e.knn_temperature)
    if protocol in ("few-label", "all"):
        result.update(few_label_probe(x_train, y_train, x_test, y_test, e))
    result["seconds"] = round(time.perf_counter() - start, 1)
    path = run_dir / ("eval.json" if init == "trained" else f"eval-{init}.json")
    update_result(path, result, context=PROBE_CONTEXT, combine=combine_probes, quiet=quiet)
    return result


@dataclasses.dataclass
class RunFeatures:
    """Frozen-backbone features of a run's own labelled train and test sets."""

    recipe: Any
    info: dict[str, Any]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The weights measured: see :func:`weights_measured`."""


def weights_measured(backbone: nn.Module, info: dict[str, Any], init: str) -> dict[str, Any]:
    """The ``checkpoint`` record of a result: a digest of the backbone's tensors (none for the pixels) and
    of the standardisation, with the training step of trained weights."""
    return fingerprint(None if init == "pixels" else backbone, info.get("normalization"),
                       info.get("step") if init == "trained" else None)


def run_device(recipe: Any, device: str | None) -> torch.device:
    """``device``, or the GPU where there is one and the run's recipe did not force the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() and not recipe.train.cpu else "cpu"))


def run_features(run_dir: Path, init: str, *, device: str | None = None, quiet: bool = False) -> RunFeatures:
    """Load the run's backbone (trained or random init) and embed its dataset's train and test splits."""
    backbone, info = load_run_backbone(run_dir, init)
    checkpoint = weights_measured(backbone, info, init)
    recipe = read_run_recipe(run_dir)
    d, e = recipe.data, recipe.eval
    dev = run_device(recipe, device)
    backbone.to(dev)
    kwargs: dict[str, Any] = {"root": d.root, "image_size": d.image_size, "channels": d.channels,
                              "download": d.download, "num_workers": d.num_workers, "options": d.options}
    train_set, test_set = load_dataset(d.dataset, "train", **kwargs), load_dataset(d.dataset, "test", **kwargs)
    mean, std = info["normalization"]["mean"], info["normalization"]["std"]
    if not quiet:
        print(f"extracting features of {len(train_set)} train and {len(test_set)} test images ({FEATURES_OF[init]})")
    x_train, y_train = extract_features(backbone, train_set, mean, std, batch_size=e.batch_size, device=dev)
    x_test, y_test = extract_features(backbone, test_set, mean, std, batch_size=e.batch_size, device=dev)
    return RunFeatures(recipe, info, x_train, y_train, x_test, y_test, checkpoint)
