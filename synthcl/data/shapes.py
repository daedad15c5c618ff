"""``shapes``: procedural labelled images, for tests and offline demos (needs no files)."""

from __future__ import annotations

import logging

import torch
from einops import rearrange
from torch import Tensor

from synthcl.data.loading import DatasetRequest
from synthcl.data.sources import ImageSource, TensorImages
from synthcl.errors import DataError
from synthcl.registry import DATASETS

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring", "bar")


def _draw_shapes(count: int, image_size: int, channels: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` images of SHAPE_CLASSES, uint8 (count, channels, image_size, image_size), labels (count,)."""
    generator = torch.Generator().manual_seed(seed)
    # A permutation of repeated class ids keeps the classes balanced.
    labels = torch.randperm(count, generator=generator) % len(SHAPE_CLASSES)
    centre = (0.35 + 0.3 * torch.rand(count, 2, generator=generator)) * image_size
    radius = (0.2 + 0.12 * torch.rand(count, generator=generator)) * image_size
    background = torch.randint(0, 256, (count, channels), generator=generator)
    # A foreground at least 80 levels away from the background in every channel keeps shapes visible.
    foreground = (background + torch.randint(80, 177, (count, channels), generator=generator)) % 256

    pixel = torch.arange(image_size, dtype=torch.float32) + 0.5
    x = (rearrange(pixel, "w -> 1 1 w") - rearrange(centre[:, 0], "n -> n 1 1")) / rearrange(radius, "n -> n 1 1")
    y = (rearrange(pixel, "h -> 1 h 1") - rearrange(centre[:, 1], "n -> n 1 1")) / rearrange(radius, "n -> n 1 1")
    masks = {
        "circle": lambda x, y: x**2 + y**2 <= 1,
        "square": lambda x, y: (x.abs() <= 0.8) & (y.abs() <= 0.8),
        "triangle": lambda x, y: (y <= 0.8) & (x.abs() <= (y + 0.9) * 0.55),
        "cross": lambda x, y: ((x.abs() <= 0.25) & (y.abs() <= 0.95)) | ((y.abs() <= 0.25) & (x.abs() <= 0.95)),
        "ring": lambda x, y: ((x**2 + y**2) <= 1) & ((x**2 + y**2) >= 0.3),
        "bar": lambda x, y: (x.abs() <= 0.95) & (y.abs() <= 0.25),
    }
    mask = torch.zeros(count, image_size, image_size, dtype=torch.bool)
    for label, name in enumerate(SHAPE_CLASSES):
        chosen = labels == label
        mask[chosen] = masks[name](x[chosen], y[chosen])
    images = torch.where(
        rearrange(mask, "n h w -> n 1 h w"),
        rearrange(foreground.to(torch.uint8), "n c -> n c 1 1"),
        rearrange(background.to(torch.uint8), "n c -> n c 1 1"),
    )
    return images, labels


@DATASETS.register("shapes")
def build_shapes(request: DatasetRequest) -> ImageSource:
    """Procedural shapes (circle, square, triangle, cross, ring, bar) on random colours; needs no files.

    Position, size and colours are random; the train split uses seed 0 and the test split seed 1, so each
    split is the same every time. Default 32 px, 3 channels (1 channel: grey levels).

    Options:
        n (int): train images, default 2048; the test split has ``max(1, n // 4)``.

    Raises:
        DataError: if ``n`` is not a positive integer.
    """
    n = request.read_options({"n": (int, 2048)})["n"]
    if n < 1:
        raise DataError(f"shapes: option 'n' must be positive, got {n}")
    count, seed = (n, 0) if request.split == "train" else (max(1, n // 4), 1)
    images, labels = _draw_shapes(count, request.image_size or 32, request.channels or 3, seed)
    return TensorImages(images, labels, name=request.name, num_classes=len(SHAPE_CLASSES))
