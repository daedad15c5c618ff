"""How similar the two members of a positive pair are: SSIM in pixel space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: Tensor, b: Tensor, data_range: float = 2.0, window: int = 7, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image pair (Wang et al., 2004), Gaussian window, averaged over pixels
    and channels.

    Args:
        a, b: (B, C, H, W) images, e.g. in [-1, 1] (``data_range`` 2).

    Returns:
        (B,) SSIM in [-1, 1]; 1 for identical images.
    """
    a, b = a.float(), b.float()
    c = a.shape[1]
    w = _gaussian_window(min(window, a.shape[-1]), sigma, c, a.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return score.flatten(1).mean(dim=1)
