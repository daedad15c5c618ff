"""STL-10 (the binary files)."""

from __future__ import annotations

import logging

import torch
from einops import rearrange

from synthcl.data.formats import _read_stl_images, _read_stl_labels
from synthcl.data.loading import DatasetRequest
from synthcl.data.roots import resolve_root
from synthcl.data.sources import ImageSource, TensorImages
from synthcl.errors import DataError
from synthcl.registry import DATASETS

logger = logging.getLogger(__name__)


@DATASETS.register("stl10")
def build_stl10(request: DatasetRequest) -> ImageSource:
    """STL-10 binaries (stl10_binary/*.bin): 5,000 train (+100,000 unlabelled) / 8,000 test, 3x96x96.

    Options:
        unlabeled (bool): add unlabeled_X.bin (label -1) to the train split; default True for "train",
            not allowed for "test".

    Raises:
        DataError: if files are missing or truncated, or ``unlabeled`` is set for the test split.
    """
    unlabeled = request.read_options({"unlabeled": (bool, None)})["unlabeled"]
    if unlabeled is None:
        unlabeled = request.split == "train"
    elif unlabeled and request.split != "train":
        raise DataError("stl10: option 'unlabeled' only applies to the train split")
    folder = resolve_root(request.name, request.root, download=request.download)
    files = [_read_stl_images(folder / f"{request.split}_X.bin")]
    if unlabeled:
        files.append(_read_stl_images(folder / "unlabeled_X.bin"))
    counts = [raw.size // (3 * 96 * 96) for raw in files]
    labels = [_read_stl_labels(folder / f"{request.split}_y.bin", counts[0])]
    if unlabeled:
        labels.append(torch.full((counts[1],), -1, dtype=torch.long))
    # Filled chunk by chunk so the 100,000 unlabelled images are copied once, not twice.
    images = torch.empty((sum(counts), 3, 96, 96), dtype=torch.uint8)
    offset = 0
    for raw in files:
        # Each image is stored channel by channel, each channel column-major (x varies slowest).
        stored = rearrange(torch.from_numpy(raw), "(n c w h) -> n c h w", c=3, w=96, h=96)
        for chunk in stored.split(8192):
            images[offset : offset + len(chunk)].copy_(chunk)
            offset += len(chunk)
    return TensorImages(images, torch.cat(labels), name=request.name, num_classes=10)
