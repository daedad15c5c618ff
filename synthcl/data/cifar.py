"""CIFAR-10 and CIFAR-100 (the python pickles, read safely)."""

from __future__ import annotations

import logging

import torch

from synthcl.data.formats import _cifar_arrays
from synthcl.data.loading import DatasetRequest
from synthcl.data.roots import resolve_root
from synthcl.data.sources import ImageSource, TensorImages
from synthcl.registry import DATASETS

logger = logging.getLogger(__name__)


@DATASETS.register("cifar10")
def build_cifar10(request: DatasetRequest) -> ImageSource:
    """CIFAR-10 python batches (data_batch_1..5, test_batch): 50,000 / 10,000 images, 3x32x32, 10 classes.

    Options: none. Pickles are read with an unpickler that allows numpy arrays and plain containers only.

    Raises:
        DataError: if files are missing, corrupt, or reference anything else.
    """
    request.read_options({})
    folder = resolve_root(request.name, request.root, download=request.download)
    files = [f"data_batch_{i}" for i in range(1, 6)] if request.split == "train" else ["test_batch"]
    parts = [_cifar_arrays(folder / file, "labels") for file in files]
    images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return TensorImages(images, labels, name=request.name, num_classes=10)


@DATASETS.register("cifar100")
def build_cifar100(request: DatasetRequest) -> ImageSource:
    """CIFAR-100 python files (train, test) with the 100 fine labels: 50,000 / 10,000 images, 3x32x32.

    Options: none.

    Raises:
        DataError: if files are missing, corrupt, or reference anything but numpy arrays and containers.
    """
    request.read_options({})
    folder = resolve_root(request.name, request.root, download=request.download)
    images, labels = _cifar_arrays(folder / request.split, "fine_labels")
    return TensorImages(images, labels, name=request.name, num_classes=100)
