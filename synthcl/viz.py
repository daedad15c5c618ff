"""Pictures: sample grids and ladders of positive pairs, written as PNG atomically."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from einops import rearrange
from PIL import Image
from torch import Tensor

from synthcl.io import atomic_write


def to_uint8(images: Tensor) -> Tensor:
    """(B, C, H, W) floats in [-1, 1] -> uint8 in [0, 255]."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def grid(images: Tensor, nrow: int | None = None, padding: int = 2) -> Tensor:
    """Tile (B, C, H, W) uint8 images into one (C, H', W') uint8 image, ``nrow`` images per row."""
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    canvas = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[:, top : top + h, left : left + w] = images[i]
    return canvas


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a (C, H, W) uint8 image (C = 1 or 3) as PNG, atomically."""
    array = rearrange(image, "c h w -> h w c").numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return atomic_write(path, lambda p: picture.save(p, format="PNG"))


def save_sample_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save generated images (B, C, H, W) in [-1, 1] as one PNG grid."""
    return save_png(grid(to_uint8(images), nrow), path)


def save_pair_ladder(rungs: list[tuple[Tensor, Tensor]], path: str | Path) -> Path:
    """Save positive pairs at increasing hardness: one column pair per rung, one row per latent.

    Args:
        rungs: for each hardness, the two (B, C, H, W) batches in [-1, 1] of a pair.
    """
    columns = [torch.stack([to_uint8(a), to_uint8(b)], dim=1) for a, b in rungs]  # each (B, 2, C, H, W)
    tiles = rearrange(torch.cat(columns, dim=1), "b k c h w -> (b k) c h w")
    return save_png(grid(tiles, nrow=2 * len(rungs)), path)
