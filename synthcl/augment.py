"""Batched, differentiable SimCLR/BYOL view augmentation: ``ViewAugment`` and its per-sample kernels.

Every random parameter is drawn per sample with one ``torch.rand`` call on the images' device, and
every op works on the whole batch at once (no Python loop over samples), so a step's augmentation is
a handful of kernel launches on any device. All ops are differentiable with respect to float input
images, so a generator network can be trained through them.

The helper functions (``adjust_brightness``, ``adjust_contrast``, ``adjust_saturation``,
``adjust_hue``, ``gaussian_blur``, ``solarize``, ``sample_crop_boxes``) take per-sample parameter
tensors and are public so that they can be tested against reference implementations and reused.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from synthcl.errors import ConfigError, DataError

__all__ = [
    "ViewAugment",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "gaussian_blur",
    "rgb_to_gray",
    "sample_crop_boxes",
    "solarize",
]

# ITU-R 601 luma weights, the ones torchvision's rgb_to_grayscale uses, so factors match it exactly.
LUMA = (0.2989, 0.587, 0.114)

# RGB -> YIQ (NTSC). Y is ITU-R 601 luma; I and Q span the chroma plane that the hue shift rotates.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)

# torchvision's RandomResizedCrop tries this many (scale, ratio) draws before its centre-crop fallback.
_CROP_ATTEMPTS = 10

# Columns of the single per-sample uniform draw; one draw keeps the stream layout fixed, so the same
# seed gives the same views whatever the probabilities are set to.
_U_CROP = slice(0, 4 * _CROP_ATTEMPTS)
_U_FLIP = 4 * _CROP_ATTEMPTS
_U_JITTER = _U_FLIP + 1
_U_FACTORS = slice(_U_JITTER + 1, _U_JITTER + 5)  # brightness, contrast, saturation, hue
_U_GRAY = _U_JITTER + 5
_U_BLUR = _U_GRAY + 1
_U_SIGMA = _U_BLUR + 1
_U_SOLARIZE = _U_SIGMA + 1
_N_UNIFORMS = _U_SOLARIZE + 1


def _per_sample(values: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast a per-sample value over an image batch."""
    return rearrange(values, "b -> b 1 1 1")


def rgb_to_gray(images: Tensor) -> Tensor:
    """ITU-R 601 luma of RGB images.

    Args:
        images: (B, 3, H, W) float RGB images.

    Returns:
        (B, 1, H, W) luma.
    """
    # Three scaled adds beat einsum here: a 3-long contraction maps poorly onto a matrix product.
    red, green, blue = images.split(1, dim=1)
    return red * LUMA[0] + green * LUMA[1] + blue * LUMA[2]


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * images + (1 - factor) * other``, clamped to [0, 1] as torchvision's ``_blend`` does.

    Args:
        images: (B, C, H, W) float images in [0, 1].
        other: a tensor broadcastable to ``images`` (a grey image, a per-sample mean, ...).
        factor: (B,) per-sample blend factor.

    Returns:
        (B, C, H, W) blended images in [0, 1].
    """
    # lerp is one fused pass and exact at both ends (factor 1 returns ``images`` bit for bit).
    return torch.lerp(other, images, _per_sample(factor.to(images.dtype))).clamp_(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Scales every pixel by a per-sample factor (torchvision's ``adjust_brightness``, batched).

    Args:
        images: (B, C, H, W) float images in [0, 1].
        factor: (B,) non-negative brightness factors; 1 leaves an image unchanged.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    return (images * _per_sample(factor.to(images.dtype))).clamp_(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blends each image with its mean grey level (torchvision's ``adjust_contrast``, batched).

    Args:
        images: (B, C, H, W) float images in [0, 1]; C == 3 is treated as RGB (mean of the luma),
            any other C uses the mean over all channels.
        factor: (B,) non-negative contrast factors; 1 leaves an image unchanged, 0 gives flat grey.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    channel_means = images.mean(dim=(2, 3))  # (B, C)
    if images.shape[1] == 3:
        # Mean of the luma equals the luma of the channel means, which avoids a full grey image.
        mean = channel_means @ images.new_tensor(LUMA)
    else:
        mean = channel_means.mean(dim=1)
    return _blend(images, _per_sample(mean), factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blends each RGB image with its grey version (torchvision's ``adjust_saturation``, batched).

    Args:
        images: (B, 3, H, W) float RGB images in [0, 1].
        factor: (B,) non-negative saturation factors; 1 leaves an image unchanged, 0 gives grey.

    Returns:
        (B, 3, H, W) images in [0, 1].
    """
    return _blend(images, rgb_to_gray(images), factor)


def _hue_basis(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """Constant (3, 3) matrices A, B, S with ``A + cos(t) B + sin(t) S`` = YIQ hue rotation by ``t``.

    The rotation acts in YIQ space (Y kept, the (I, Q) chroma plane rotated) and is expressed back in
    RGB: ``M(t) = T^-1 R(t) T``. Splitting R(t) into its constant, cosine and sine parts lets the
    per-sample matrices be built with two scalar multiplies instead of B small matrix products.
    """
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    from_yiq = torch.linalg.inv(to_yiq)
    keep_y = torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    cos_part = torch.diag(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    sin_part = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    return tuple((from_yiq @ part @ to_yiq).to(dtype) for part in (keep_y, cos_part, sin_part))


def _hue_matrices(hue: Tensor, basis: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Per-sample (B, 3, 3) RGB matrices that shift hue by ``hue`` turns (see ``adjust_hue``)."""
    keep_y, cos_part, sin_part = basis
    # HSV hue runs red -> green -> blue, which is clockwise in the (I, Q) plane, hence the minus.
    angle = rearrange(-2 * math.pi * hue, "b -> b 1 1")
    return keep_y + torch.cos(angle) * cos_part + torch.sin(angle) * sin_part


def adjust_hue(images: Tensor, hue: Tensor) -> Tensor:
    """Shifts hue by a per-sample fraction of a turn, as a rotation of the chroma plane in YIQ space.

    This approximates torchvision's HSV hue shift (the direction and magnitude match for saturated
    colours) but is a single linear 3x3 map per sample: differentiable everywhere and cheap. Unlike
    the HSV shift it keeps luma exactly and can leave the RGB gamut, so the result is clamped.

    Args:
        images: (B, 3, H, W) float RGB images in [0, 1].
        hue: (B,) hue shifts in turns, in [-0.5, 0.5]; 0 leaves an image unchanged (up to rounding).

    Returns:
        (B, 3, H, W) images in [0, 1].
    """
    basis = tuple(m.to(device=images.device, dtype=images.dtype) for m in _hue_basis())
    matrices = _hue_matrices(hue.to(images.dtype), basis)
    return torch.einsum("bij,bjhw->bihw", matrices, images).clamp_(0, 1)


def blur_kernel_size(size: int) -> int:
    """The Gaussian blur kernel size for ``size``-pixel views: about 10% of it, odd, at least 3."""
    kernel_size = max(3, round(0.1 * size))
    return kernel_size + 1 - kernel_size % 2


def _gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """(B,) sigmas -> (B, kernel_size) normalised 1-D Gaussian kernels."""
    offsets = torch.arange(kernel_size, device=sigma.device, dtype=sigma.dtype) - kernel_size // 2
    kernels = torch.exp(-0.5 * (offsets / rearrange(sigma, "b -> b 1")) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, kernels: Tensor) -> Tensor:
    """Separable per-sample blur with reflect padding (torchvision's ``gaussian_blur``, batched).

    Each image gets its own 1-D kernel, applied along width then height as one grouped convolution
    over all (sample, channel) pairs, so the whole batch is two convolution calls.

    Args:
        images: (B, C, H, W) float images.
        kernels: (B, K) per-sample 1-D kernels, K odd, each summing to 1 (a one-hot centre tap is
            the identity, which is how un-blurred samples ride along).

    Returns:
        (B, C, H, W) blurred images.
    """
    batch, channels = images.shape[:2]
    pad = kernels.shape[1] // 2
    weight = repeat(kernels.to(images.dtype), "b k -> (b c) 1 k", c=channels)
    flat = rearrange(images, "b c h w -> 1 (b c) h w")
    groups = batch * channels
    flat = F.pad(flat, (pad, pad, 0, 0), mode="reflect")
    flat = F.conv2d(flat, rearrange(weight, "n 1 k -> n 1 1 k"), groups=groups)
    flat = F.pad(flat, (0, 0, pad, pad), mode="reflect")
    flat = F.conv2d(flat, rearrange(weight, "n 1 k -> n 1 k 1"), groups=groups)
    return rearrange(flat, "1 (b c) h w -> b c h w", b=batch)


def solarize(images: Tensor, apply: Tensor, threshold: float = 0.5) -> Tensor:
    """Inverts pixels at or above ``threshold`` in the selected samples (torchvision's ``solarize``).

    Args:
        images: (B, C, H, W) float images in [0, 1].
        apply: (B,) bool, which samples to solarize.
        threshold: pixels ``>= threshold`` become ``1 - pixel``.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    return torch.where(_per_sample(apply) & (images >= threshold), 1 - images, images)


def sample_crop_boxes(
    uniforms: Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """Per-sample crop boxes distributed as torchvision's ``RandomResizedCrop.get_params``.

    Like torchvision, up to 10 (area, log-aspect) draws are tried and the first one that fits is
    kept; a sample where none fits falls back to the largest centred crop with a clamped aspect
    ratio. The boxes are not rounded to whole pixels: the crop is resampled bilinearly anyway.

    Args:
        uniforms: (B, 40) uniform [0, 1) numbers: columns 0-9 area, 10-19 log-aspect, 20-29
            horizontal and 30-39 vertical position, one per attempt.
        height: input image height H in pixels.
        width: input image width W in pixels.
        scale: (min, max) crop area as a fraction of H * W.
        ratio: (min, max) crop aspect ratio, width / height.

    Returns:
        (B, 4) boxes as (top, left, crop height, crop width) in pixels, inside the image.
    """
    u_area, u_ratio, u_left, u_top = rearrange(uniforms, "b (p n) -> p b n", p=4)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    crop_w = torch.sqrt(area * aspect)
    crop_h = torch.sqrt(area / aspect)
    fits = (crop_w <= width) & (crop_h <= height)  # (B, attempts)
    # argmax returns the first maximal index, i.e. the first attempt that fits.
    first = rearrange(fits.to(torch.uint8).argmax(dim=1), "b -> b 1")
    any_fit = fits.any(dim=1)

    def pick(values: Tensor) -> Tensor:
        return values.gather(1, first).squeeze(1)

    # The centre-crop fallback is the same for every sample: compute it once in Python.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_w, fallback_h = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fallback_w, fallback_h = height * ratio[1], float(height)
    else:
        fallback_w, fallback_h = float(width), float(height)
    crop_w = torch.where(any_fit, pick(crop_w), fallback_w)
    crop_h = torch.where(any_fit, pick(crop_h), fallback_h)
    left = torch.where(any_fit, pick(u_left), 0.5) * (width - crop_w)
    top = torch.where(any_fit, pick(u_top), 0.5) * (height - crop_h)
    return torch.stack([top, left, crop_h, crop_w], dim=1)


def _crop_flip_theta(boxes: Tensor, flip: Tensor, height: int, width: int) -> Tensor:
    """(B, 4) crop boxes and (B,) flips -> (B, 2, 3) ``affine_grid`` matrices (align_corners=False).

    With align_corners=False, normalised coordinate -1 is the left edge of pixel 0 and +1 the right
    edge of pixel W - 1, so a box maps to centre ``(2 left + w) / W - 1`` and half-extent ``w / W``.
    Negating the x scale mirrors the crop about its own centre, i.e. crop-then-flip, for free.
    """
    top, left, crop_h, crop_w = boxes.unbind(dim=1)
    sign = 1 - 2 * flip.to(boxes.dtype)
    zero = torch.zeros_like(top)
    row_x = torch.stack([sign * crop_w / width, zero, (2 * left + crop_w) / width - 1], dim=1)
    row_y = torch.stack([zero, crop_h / height, (2 * top + crop_h) / height - 1], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def _affine_grid(theta: Tensor, size: int) -> Tensor:
    """``F.affine_grid(theta, (B, C, size, size), align_corners=False)`` for axis-aligned ``theta``.

    With no rotation or shear, x depends only on the column and y only on the row, so the grid is two
    (B, size) vectors broadcast together. ``F.affine_grid`` instead multiplies a (B, size * size, 3)
    base grid by theta, a batch of tiny matrix products that costs more than the resampling itself.

    Args:
        theta: (B, 2, 3) affine matrices whose off-diagonal terms [0, 1] and [1, 0] are zero.
        size: output height and width.

    Returns:
        (B, size, size, 2) sampling grid of (x, y) in normalised coordinates.
    """
    # Pixel centres in normalised coordinates, as affine_grid places them with align_corners=False.
    centres = (2 * torch.arange(size, device=theta.device, dtype=theta.dtype) + 1) / size - 1
    grid_x = rearrange(theta[:, 0, 0], "b -> b 1") * centres + theta[:, 0, 2:3]
    grid_y = rearrange(theta[:, 1, 1], "b -> b 1") * centres + theta[:, 1, 2:3]
    return torch.stack(
        [repeat(grid_x, "b w -> b h w", h=size), repeat(grid_y, "b h -> b h w", w=size)], dim=-1
    )


def _probability(value: float, name: str) -> float:
    """A float in [0, 1], or ConfigError."""
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _as_per_view(value: float | Sequence[float], name: str) -> tuple[float, ...]:
    """A probability or a per-view sequence of them -> a non-empty tuple of floats in [0, 1]."""
    values = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ConfigError(
            f"{name} must be a probability in [0, 1] or a non-empty sequence of them, got {value!r}"
        )
    return values


def _check_range(
    value: Sequence[float], name: str, low: float, high: float = math.inf
) -> tuple[float, float]:
    """A (min, max) pair with ``low < min <= max <= high``, or ConfigError."""
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not low < pair[0] <= pair[1] <= high:
        raise ConfigError(
            f"{name} must be a (min, max) pair with {low} < min <= max <= {high}, got {value!r}"
        )
    return pair


def _channel_stats(value: float | Sequence[float], channels: int, name: str) -> Tensor:
    """A scalar or per-channel sequence -> a (C, 1, 1) float32 tensor."""
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ConfigError(f"{name} has {len(values)} entries but the images have {channels} channels")
    return rearrange(torch.tensor(values, dtype=torch.float32), "c -> c 1 1")


class ViewAugment(torch.nn.Module):
    """SimCLR/BYOL view augmentation on whole batches, random per sample, differentiable.

    Ops, in order: random resized crop with horizontal flip (one bilinear ``grid_sample``), colour
    jitter (brightness, contrast, saturation, hue), random grayscale, Gaussian blur, solarize,
    normalisation. Values are clamped to [0, 1] before normalisation, as torchvision does. For
    images that are not 3-channel RGB, saturation, hue and grayscale are skipped.

    Args:
        size: output height and width in pixels.
        channels: number of image channels C the module expects.
        crop_scale: (min, max) crop area as a fraction of the input area.
        crop_ratio: (min, max) crop aspect ratio (width / height).
        flip_p: probability of a horizontal flip.
        jitter_p: probability of applying colour jitter to a sample.
        brightness: brightness factor drawn from [max(0, 1 - brightness), 1 + brightness].
        contrast: contrast factor drawn from [max(0, 1 - contrast), 1 + contrast].
        saturation: saturation factor drawn from [max(0, 1 - saturation), 1 + saturation].
        hue: hue shift drawn from [-hue, hue] turns (at most 0.5).
        gray_p: probability of converting a sample to grayscale.
        blur_p: blur probability, or one per view (view i uses entry ``i % len(blur_p)``).
        blur_sigma: (min, max) Gaussian sigma in output pixels.
        solarize_p: solarize probability, or one per view, like ``blur_p``.
        mean: per-channel (or scalar) mean to subtract after clamping; None leaves [0, 1] values.
        std: per-channel (or scalar) std to divide by; given together with ``mean``.

    Raises:
        ConfigError: if a probability, range or mean/std does not make sense.
    """

    def __init__(
        self,
        size: int,
        channels: int,
        *,
        crop_scale: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        gray_p: float = 0.2,
        blur_p: float | Sequence[float] = 0.0,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_p: float | Sequence[float] = 0.0,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if size < 1 or channels < 1:
            raise ConfigError(f"size and channels must be positive, got size={size}, channels={channels}")
        if min(brightness, contrast, saturation) < 0 or not 0 <= hue <= 0.5:
            raise ConfigError("brightness, contrast and saturation must be >= 0 and hue in [0, 0.5]")
        if (mean is None) != (std is None):
            raise ConfigError("mean and std must be given together")
        self.size = size
        self.channels = channels
        self.crop_scale = _check_range(crop_scale, "crop_scale", 0.0)
        self.crop_ratio = _check_range(crop_ratio, "crop_ratio", 0.0)
        self.flip_p = _probability(flip_p, "flip_p")
        self.jitter_p = _probability(jitter_p, "jitter_p")
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.gray_p = _probability(gray_p, "gray_p")
        self.blur_p = _as_per_view(blur_p, "blur_p")
        self.blur_sigma = _check_range(blur_sigma, "blur_sigma", 0.0)
        self.solarize_p = _as_per_view(solarize_p, "solarize_p")
        self.kernel_size = blur_kernel_size(size)
        self.rgb = channels == 3
        # Constants live in non-persistent buffers: they follow .to(device) but stay out of checkpoints.
        self.register_buffer("hue_basis", torch.stack(_hue_basis(torch.float32)), persistent=False)
        identity_kernel = torch.zeros(self.kernel_size)
        identity_kernel[self.kernel_size // 2] = 1.0
        self.register_buffer("identity_kernel", identity_kernel, persistent=False)
        self.normalize = mean is not None
        if self.normalize:
            std_t = _channel_stats(std, channels, "std")
            if (std_t <= 0).any():
                raise ConfigError(f"std must be positive, got {std!r}")
            self.register_buffer("mean", _channel_stats(mean, channels, "mean"), persistent=False)
            self.register_buffer("std", std_t, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, channels={self.channels}, crop_scale={self.crop_scale}, "
            f"crop_ratio={self.crop_ratio}, flip_p={self.flip_p}, jitter_p={self.jitter_p}, "
            f"gray_p={self.gray_p}, blur_p={self.blur_p}, solarize_p={self.solarize_p}, "
            f"normalize={self.normalize}"
        )

    def forward(self, images: Tensor, generator: torch.Generator | None = None, view: int = 0) -> Tensor:
        """One random view of every image.

        Args:
            images: (B, C, H, W) uint8 in [0, 255] or float in [0, 1].
            generator: a ``torch.Generator`` on the images' device; None uses the default RNG.
            view: which view this is; selects the per-view ``blur_p`` and ``solarize_p`` entries.

        Returns:
            (B, C, size, size) views, normalised with mean/std when given, else in [0, 1]. The dtype is
            the input's float dtype, or float32 for uint8 input.

        Raises:
            DataError: if ``images`` is not 4-D with ``channels`` channels, or not uint8/float.
        """
        return self._augment(images, [view], generator)

    def standardize(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> normalised with this module's mean/std, without augmenting
        (e.g. to show un-augmented images to the learner)."""
        if not self.normalize:
            return images
        return (images - self.mean.to(images.dtype).view(1, -1, 1, 1)) / self.std.to(images.dtype).view(1, -1, 1, 1)

    def views(self, images: Tensor, n_views: int = 2, generator: torch.Generator | None = None) -> Tensor:
        """``n_views`` random views of every image, drawn in one batched pass.

        Args:
            images: (B, C, H, W) uint8 in [0, 255] or float in [0, 1].
            n_views: number of views per image; view i uses the per-view probabilities of entry i.
            generator: a ``torch.Generator`` on the images' device; None uses the default RNG.

        Returns:
            (n_views * B, C, size, size), view-major: rows [0:B] are view 0 of every image, [B:2B]
            view 1, and so on.

        Raises:
            DataError: if ``images`` is not 4-D with ``channels`` channels, or not uint8/float.
            ValueError: if ``n_views`` < 1.
        """
        if n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {n_views}")
        return self._augment(images, list(range(n_views)), generator)

    def _check(self, images: Tensor) -> None:
        if images.ndim != 4:
            raise DataError(f"augmentation expects (B, C, H, W) images, got shape {tuple(images.shape)}")
        if images.shape[1] != self.channels:
            raise DataError(
                f"augmentation was built for {self.channels}-channel images, got {images.shape[1]} channels "
                f"(shape {tuple(images.shape)})"
            )
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise DataError(f"augmentation expects uint8 or float images, got {images.dtype}")

    def _per_row(
        self, probs: tuple[float, ...], view_ids: list[int], batch: int, device: torch.device
    ) -> Tensor:
        """Per-view probabilities -> (V * B,) per-row probabilities, view-major."""
        per_view = torch.tensor([probs[v % len(probs)] for v in view_ids], device=device)
        return repeat(per_view, "v -> (v b)", b=batch)

    def _augment(self, images: Tensor, view_ids: list[int], generator: torch.Generator | None) -> Tensor:
        self._check(images)
        batch, _, height, width = images.shape
        device = images.device
        out_dtype = images.dtype if images.is_floating_point() else torch.float32
        # Compute in float32 (float64 stays float64) and cast back at the end: half-precision kernels
        # are slow or missing for some of these ops on CPU, and the clamps and blends want the precision.
        work_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        # Autocast would push the einsum/conv back to half precision; the views are inputs, not a model.
        no_autocast = (
            torch.autocast(device.type, enabled=False)
            if torch.is_autocast_enabled(device.type)
            else contextlib.nullcontext()
        )
        with no_autocast:
            n_views = len(view_ids)
            # Repeating before the float conversion copies 1-byte pixels when the input is uint8.
            x = repeat(images, "b c h w -> (v b) c h w", v=n_views) if n_views > 1 else images
            x = x.to(work_dtype).div_(255) if images.dtype == torch.uint8 else x.to(work_dtype)
            rows = n_views * batch
            u = torch.rand((rows, _N_UNIFORMS), generator=generator, device=device, dtype=work_dtype)

            # 1. Random resized crop + horizontal flip, fused into one bilinear resample.
            boxes = sample_crop_boxes(u[:, _U_CROP], height, width, self.crop_scale, self.crop_ratio)
            theta = _crop_flip_theta(boxes, u[:, _U_FLIP] < self.flip_p, height, width)
            grid = _affine_grid(theta, self.size)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

            # 2. Colour jitter. torchvision shuffles the four ops per call; here the order is fixed
            #    (brightness, contrast, saturation, hue) so the whole batch takes one code path. The
            #    order changes a view only through the intermediate clamps.
            if self.jitter_p > 0:
                x = self._jitter(x, u)

            # 3. Random grayscale = saturation 0 for the chosen samples, 1 (exact identity) for the rest.
            if self.rgb and self.gray_p > 0:
                x = _blend(x, rgb_to_gray(x), (u[:, _U_GRAY] >= self.gray_p).to(work_dtype))

            # 4. Gaussian blur; un-blurred samples get a one-hot kernel so the batch stays one call.
            if max(self.blur_p[v % len(self.blur_p)] for v in view_ids) > 0:
                blur = u[:, _U_BLUR] < self._per_row(self.blur_p, view_ids, batch, device)
                sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u[:, _U_SIGMA]
                kernels = torch.where(
                    rearrange(blur, "b -> b 1"),
                    _gaussian_kernels(sigma, self.kernel_size),
                    self.identity_kernel.to(work_dtype),
                )
                x = gaussian_blur(x, kernels)

            # 5. Solarize.
            if max(self.solarize_p[v % len(self.solarize_p)] for v in view_ids) > 0:
                x = solarize(x, u[:, _U_SOLARIZE] < self._per_row(self.solarize_p, view_ids, batch, device))

            # 6. Clamp and normalise. Every op above maps [0, 1] into [0, 1]; the clamp catches float
            #    inputs that were outside it, as torchvision's pipeline would.
            x = x.clamp_(0, 1)
            if self.normalize:
                x = x.sub_(self.mean.to(work_dtype)).div_(self.std.to(work_dtype))
        return x.to(out_dtype)

    def _jitter(self, x: Tensor, u: Tensor) -> Tensor:
        """Colour jitter with per-sample factors; skipped samples get identity factors."""
        apply = u[:, _U_JITTER] < self.jitter_p
        u_b, u_c, u_s, u_h = u[:, _U_FACTORS].unbind(dim=1)

        def factor(strength: float, uniform: Tensor) -> Tensor:
            low = max(0.0, 1.0 - strength)
            return torch.where(apply, low + (1.0 + strength - low) * uniform, 1.0)

        if self.brightness > 0:
            x = adjust_brightness(x, factor(self.brightness, u_b))
        if self.contrast > 0:
            x = adjust_contrast(x, factor(self.contrast, u_c))
        if self.rgb and self.saturation > 0:
            x = adjust_saturation(x, factor(self.saturation, u_s))
        if self.rgb and self.hue > 0:
            shift = torch.where(apply, self.hue * (2 * u_h - 1), 0.0)
            matrices = _hue_matrices(shift, tuple(self.hue_basis.to(x.dtype).unbind(0)))
            # Skipped samples get the exact identity, not T^-1 T, which is off by rounding.
            eye = torch.eye(3, device=x.device, dtype=x.dtype)
            matrices = torch.where(rearrange(apply, "b -> b 1 1"), matrices, eye)
            x = torch.einsum("bij,bjhw->bihw", matrices, x).clamp_(0, 1)
        return x
