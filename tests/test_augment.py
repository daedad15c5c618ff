"""Tests for synthcl.augment: ViewAugment's contract and its per-sample kernels against torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from synthcl.augment import (
    ViewAugment,
    _affine_grid,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    rgb_to_gray,
    sample_crop_boxes,
)
from synthcl.errors import ConfigError, DataError

# Every random op off and the crop pinned to the whole image: the module should be the identity.
IDENTITY = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_p=0.0,
    jitter_p=0.0,
    gray_p=0.0,
    blur_p=0.0,
    solarize_p=0.0,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, C, size, size) float images in [0, 1] with texture at several scales, like real photos."""
    coarse = torch.rand(batch, channels, size // 4, size // 4, generator=seeded(seed))
    fine = torch.rand(batch, channels, size, size, generator=seeded(seed + 1))
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.7 * up + 0.3 * fine).clamp(0, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_range(channels):
    aug = ViewAugment(24, channels, blur_p=0.5, solarize_p=0.5)
    images = torch.randint(0, 256, (6, channels, 28, 28), dtype=torch.uint8)
    out = aug(images, seeded(0))
    assert out.shape == (6, channels, 24, 24)
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_views_are_view_major_and_normalized():
    aug = ViewAugment(16, 3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    images = smooth_images(4, 3, 20)
    out = aug.views(images, n_views=3, generator=seeded(0))
    assert out.shape == (12, 3, 16, 16)
    # Normalisation maps [0, 1] to [-mean/std, (1-mean)/std] per channel; negatives prove it ran.
    assert out.min() < 0
    lows = torch.tensor([-0.5 / 0.2, -0.4 / 0.25, -0.3 / 0.3])
    assert (out.amin(dim=(0, 2, 3)) >= lows - 1e-5).all()


def test_identity_config_returns_input():
    for channels in (1, 3):
        images = smooth_images(5, channels, 28)
        out = ViewAugment(28, channels, **IDENTITY)(images, seeded(0))
        torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_input_is_not_modified():
    images = smooth_images(3, 3, 28)
    before = images.clone()
    ViewAugment(28, 3, blur_p=1.0, solarize_p=1.0, mean=0.5, std=0.5)(images, seeded(0))
    assert torch.equal(images, before)


def test_per_sample_randomness():
    images = smooth_images(1, 3, 28).expand(8, -1, -1, -1)
    out = ViewAugment(28, 3)(images, seeded(0))
    diffs = (out[1:] - out[0]).abs().flatten(1).amax(dim=1)
    assert (diffs > 1e-3).all()


def test_seeded_generator_is_deterministic():
    aug = ViewAugment(28, 3, blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2))
    images = smooth_images(6, 3, 28)
    first = aug.views(images, generator=seeded(7))
    again = aug.views(images, generator=seeded(7))
    other = aug.views(images, generator=seeded(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_default_rng_follows_manual_seed():
    aug = ViewAugment(20, 1)
    images = smooth_images(4, 1, 28)
    torch.manual_seed(3)
    first = aug(images)
    torch.manual_seed(3)
    assert torch.equal(first, aug(images))


def test_gradient_reaches_input():
    aug = ViewAugment(24, 3, blur_p=1.0, solarize_p=0.5, mean=0.5, std=0.25)
    images = smooth_images(4, 3, 28).requires_grad_(True)
    out = aug.views(images, generator=seeded(0))
    (out * torch.randn(out.shape, generator=seeded(1))).sum().backward()
    assert images.grad is not None
    assert torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0
    # Every image receives gradient, not just some of them.
    assert (images.grad.abs().flatten(1).sum(dim=1) > 0).all()


def test_uint8_equals_float_over_255():
    images = torch.randint(0, 256, (5, 3, 28, 28), dtype=torch.uint8, generator=seeded(0))
    aug = ViewAugment(24, 3, blur_p=0.5, solarize_p=0.5)
    from_uint8 = aug(images, seeded(4))
    from_float = aug(images.float() / 255, seeded(4))
    torch.testing.assert_close(from_uint8, from_float, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input(dtype):
    images = smooth_images(4, 3, 28)
    aug = ViewAugment(24, 3, blur_p=1.0)
    out = aug(images.to(dtype), seeded(0))
    assert out.dtype == dtype and torch.isfinite(out).all()
    reference = aug(images.to(dtype).float(), seeded(0))
    torch.testing.assert_close(out.float(), reference, atol=1e-2, rtol=0)


def test_autocast_context():
    images = smooth_images(4, 3, 28)
    aug = ViewAugment(24, 3, blur_p=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = aug(images, seeded(0))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, aug(images, seeded(0)))


def test_flip_only_mirrors_exactly():
    images = smooth_images(4, 3, 28)
    config = {**IDENTITY, "flip_p": 1.0}
    out = ViewAugment(28, 3, **config)(images, seeded(0))
    torch.testing.assert_close(out, images.flip(-1), atol=1e-5, rtol=0)


def test_grayscale_only_gives_equal_channels_of_luma():
    images = smooth_images(4, 3, 28)
    config = {**IDENTITY, "gray_p": 1.0}
    out = ViewAugment(28, 3, **config)(images, seeded(0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    torch.testing.assert_close(out[:, :1], TF.rgb_to_grayscale(images), atol=1e-5, rtol=0)


def test_solarize_only_inverts_bright_pixels():
    images = smooth_images(4, 3, 28)
    config = {**IDENTITY, "solarize_p": 1.0}
    out = ViewAugment(28, 3, **config)(images, seeded(0))
    expected = torch.where(images >= 0.5, 1 - images, images)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, TF.solarize(images, 0.5), atol=1e-5, rtol=0)


def test_per_view_blur_probability():
    images = smooth_images(4, 3, 32)
    config = {**IDENTITY, "blur_p": (1.0, 0.0), "blur_sigma": (1.0, 2.0)}
    aug = ViewAugment(32, 3, **config)
    both = aug.views(images, n_views=2, generator=seeded(0))
    blurred, sharp = both[:4], both[4:]
    torch.testing.assert_close(sharp, images, atol=1e-5, rtol=0)
    assert ((blurred - images).abs().flatten(1).amax(dim=1) > 1e-2).all()
    # Blur smooths: neighbouring-pixel differences shrink.
    assert blurred.diff(dim=-1).abs().mean() < 0.8 * images.diff(dim=-1).abs().mean()
    # forward(view=...) picks the same entries.
    torch.testing.assert_close(aug(images, seeded(0), view=1), images, atol=1e-5, rtol=0)
    assert not torch.allclose(aug(images, seeded(0), view=0), images, atol=1e-3)


def test_blur_matches_torchvision_gaussian_blur():
    images = smooth_images(3, 3, 32)
    config = {**IDENTITY, "blur_p": 1.0, "blur_sigma": (1.5, 1.5)}
    aug = ViewAugment(32, 3, **config)
    out = aug(images, seeded(0))
    expected = TF.gaussian_blur(images, kernel_size=[aug.kernel_size] * 2, sigma=[1.5, 1.5])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_single_channel_skips_colour_ops_and_works():
    images = smooth_images(4, 1, 28)
    # Only grayscale + saturation + hue enabled: for one channel these are no-ops, so identity.
    config = {**IDENTITY, "jitter_p": 1.0, "brightness": 0.0, "contrast": 0.0, "gray_p": 1.0}
    out = ViewAugment(28, 1, **config)(images, seeded(0))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    full = ViewAugment(20, 1, blur_p=0.5, solarize_p=0.5).views(images, generator=seeded(0))
    assert full.shape == (8, 1, 20, 20)


FACTORS = torch.tensor([0.0, 0.6, 1.0, 1.4, 2.5])


@pytest.mark.parametrize(
    ("ours", "theirs", "channels"),
    [
        (adjust_brightness, TF.adjust_brightness, 1),
        (adjust_brightness, TF.adjust_brightness, 3),
        (adjust_contrast, TF.adjust_contrast, 1),
        (adjust_contrast, TF.adjust_contrast, 3),
        (adjust_saturation, TF.adjust_saturation, 3),
    ],
)
def test_colour_factors_match_torchvision(ours, theirs, channels):
    images = smooth_images(len(FACTORS), channels, 16)
    out = ours(images, FACTORS)
    for i, factor in enumerate(FACTORS.tolist()):
        torch.testing.assert_close(out[i], theirs(images[i], factor), atol=2e-6, rtol=0)


def test_hue_shift_approximates_hsv_and_keeps_luma():
    images = smooth_images(4, 3, 16)
    torch.testing.assert_close(adjust_hue(images, torch.zeros(4)), images, atol=1e-5, rtol=0)
    # Pure primaries in an unclamped range: red shifted by a third of a turn becomes (close to) green.
    red = torch.tensor([0.5, 0.0, 0.0]).view(1, 3, 1, 1)
    shifted = adjust_hue(red, torch.tensor([1 / 3]))
    assert shifted[0, 1] > shifted[0, 0] and shifted[0, 1] > shifted[0, 2]
    # Same direction as torchvision's HSV shift: closer to +h than to -h.
    hue = torch.full((4,), 0.1)
    ours = adjust_hue(images, hue)
    plus = torch.stack([TF.adjust_hue(im, 0.1) for im in images])
    minus = torch.stack([TF.adjust_hue(im, -0.1) for im in images])
    assert (ours - plus).abs().mean() < 0.5 * (ours - minus).abs().mean()
    # Luma is kept wherever nothing was clamped.
    unclamped = ((ours > 0) & (ours < 1)).all(dim=1, keepdim=True)
    luma_diff = (rgb_to_gray(ours) - rgb_to_gray(images)).abs()
    assert luma_diff[unclamped].max() < 1e-3


def test_crop_boxes_inside_image_and_distributed_like_torchvision():
    n, height, width = 4000, 28, 36
    uniforms = torch.rand(n, 40, generator=seeded(0))
    boxes = sample_crop_boxes(uniforms, height, width, (0.08, 1.0), (3 / 4, 4 / 3))
    top, left, h, w = boxes.unbind(dim=1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height + 1e-4).all() and (left + w <= width + 1e-4).all()
    area = h * w / (height * width)
    assert area.min() >= 0.08 - 1e-4 and area.max() <= 1 + 1e-4
    torch.manual_seed(0)
    reference = T.RandomResizedCrop(8, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    dummy = torch.zeros(1, height, width)
    ref_areas = []
    for _ in range(n):
        params = reference.make_params([dummy])
        ref_areas.append(params["height"] * params["width"] / (height * width))
    ref = torch.tensor(ref_areas)
    assert abs(area.mean() - ref.mean()) < 0.02
    assert abs(area.std() - ref.std()) < 0.02


def test_crop_scale_and_ratio_reach_the_output():
    # A horizontal ramp: a crop of width w resampled to S pixels has slope w / S per output pixel.
    size = 32
    ramp_x = torch.arange(size, dtype=torch.float32).expand(size, size) / size
    images = torch.stack([ramp_x, ramp_x.T, torch.zeros(size, size)]).expand(4, -1, -1, -1)
    config = {**IDENTITY, "crop_scale": (0.25, 0.25), "crop_ratio": (2.0, 2.0)}
    out = ViewAugment(size, 3, **config)(images.contiguous(), seeded(0))
    crop_w, crop_h = (0.25 * size * size * 2) ** 0.5, (0.25 * size * size / 2) ** 0.5
    slope_x = out[:, 0, :, 1:-1].diff(dim=-1)
    slope_y = out[:, 1, 1:-1, :].diff(dim=-2)
    torch.testing.assert_close(slope_x, torch.full_like(slope_x, crop_w / size / size), atol=1e-5, rtol=0)
    torch.testing.assert_close(slope_y, torch.full_like(slope_y, crop_h / size / size), atol=1e-5, rtol=0)


def test_separable_grid_equals_affine_grid():
    theta = torch.zeros(6, 2, 3)
    theta[:, 0, 0] = torch.tensor([1.0, -1.0, 0.5, -0.3, 0.9, 0.2])
    theta[:, 1, 1] = torch.tensor([1.0, 0.7, 0.5, 0.3, 0.1, 1.0])
    theta[:, :, 2] = torch.rand(6, 2, generator=seeded(0)) - 0.5
    expected = torch.nn.functional.affine_grid(theta, [6, 1, 12, 12], align_corners=False)
    torch.testing.assert_close(_affine_grid(theta, 12), expected, atol=1e-6, rtol=0)


def test_brightness_factors_drawn_like_colorjitter():
    # On a flat grey image only brightness acts, so output / input is the drawn factor itself.
    images = torch.full((512, 1, 8, 8), 0.25)
    config = {**IDENTITY, "jitter_p": 1.0, "brightness": 0.4, "contrast": 0.0}
    factors = ViewAugment(8, 1, **config)(images, seeded(0))[:, 0, 0, 0] / 0.25
    assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5
    assert factors.min() < 0.65 and factors.max() > 1.35
    # jitter_p picks which samples are jittered; the rest keep factor 1 exactly.
    config["jitter_p"] = 0.5
    factors = ViewAugment(8, 1, **config)(images, seeded(0))[:, 0, 0, 0] / 0.25
    untouched = (factors == 1).float().mean()
    assert 0.4 < untouched < 0.6
    # A strength above 1 clips the lower end at 0, as torchvision's ColorJitter does.
    config.update(jitter_p=1.0, brightness=1.5)
    factors = ViewAugment(8, 1, **config)(images, seeded(0))[:, 0, 0, 0] / 0.25
    assert factors.min() >= 0 and (factors < 0.1).any()
    assert (factors == 0).float().mean() < 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"blur_p": (1.5, 0.0)},
        {"flip_p": -0.1},
        {"crop_scale": (0.5, 0.1)},
        {"mean": 0.5},  # without std
        {"mean": (0.5, 0.5), "std": (1.0, 1.0)},  # two entries for three channels
    ],
)
def test_bad_config_raises_config_error(kwargs):
    with pytest.raises(ConfigError):
        ViewAugment(16, 3, **kwargs)


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (3, 28, 28), (2, 3, 1, 28, 28)])
def test_wrong_shape_raises_data_error(shape):
    with pytest.raises(DataError, match="channel|\\(B, C, H, W\\)"):
        ViewAugment(28, 3)(torch.zeros(shape))


def test_module_moves_with_to_and_has_no_state():
    aug = ViewAugment(16, 3, mean=0.5, std=0.5)
    assert aug.state_dict() == {}
    assert aug.to(torch.float64)(smooth_images(2, 3, 16).double(), seeded(0)).dtype == torch.float64
