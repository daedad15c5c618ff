"""SNGAN-style GAN backend ``"gan"``: ResNet generator, spectral-norm ResNet critic, hinge loss, DiffAugment.

The architecture follows Miyato et al. 2018 ("Spectral Normalization for Generative Adversarial
Networks", the ResNet models of its appendix) generalised to image sides ``base * 2**k`` with ``base``
in 3..7: the generator maps a Gaussian latent to a ``base x base`` feature map and doubles it ``k``
times with residual up-blocks; the critic halves the image ``k`` times with residual down-blocks (the
first one "optimised", without a leading ReLU), adds one block at ``base x base``, and sums over space.
(SNGAN's CIFAR critic stops at 8 x 8 with two plain blocks; mirroring the generator instead gives one
rule for every size.) Widths are constant across blocks, as in SNGAN's CIFAR models.

Both the critic's loss and the generator's realism loss see images through DiffAugment (Zhao et al.
2020, "Differentiable Augmentation for Data-Efficient GAN Training"): the same random, differentiable
colour / translation / cutout transform applied to real and fake images, which keeps the critic from
memorising a small training set. ``diff_augment`` is public so that it can be tested and reused.

Initialisation (the one of the SNGAN reference code): Xavier-uniform weights with gain sqrt(2) for the
3x3 convolutions inside residual blocks, gain 1 for the 1x1 shortcuts, the latent projection, the
output convolution and the critic's linear head; zero biases; BatchNorm at scale 1, shift 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from synthcl.errors import ConfigError, suggest
from synthcl.interfaces import Generator
from synthcl.registry import GENERATORS

__all__ = ["GAN", "PRESETS", "SUPPORTED_SIZES", "Discriminator", "diff_augment", "parse_policy"]

#: preset name -> (generator width, critic width). ``cpu`` is sized so that a critic + generator step at
#: batch 64 on 28-px images takes about 0.1 s on two CPU cores (oneDNN is fastest at multiples of 8 or
#: 16 channels: 16 costs half of 20 or 24 here); ``cifar`` is SNGAN's CIFAR-10 model.
PRESETS: dict[str, tuple[int, int]] = {
    "tiny": (8, 8),
    "cpu": (16, 16),
    "small": (128, 128),
    "cifar": (256, 128),
}

# The spatial side of the generator's first feature map; 3..7 keeps it a handful of pixels, as in SNGAN
# (4 for CIFAR, 6 for STL-10), for every supported size.
_MIN_BASE, _MAX_BASE = 3, 7
_MIN_SIZE, _MAX_SIZE = 28, 96


def _layout(image_size: int) -> tuple[int, int] | None:
    """image_size -> (base, k) with image_size = base * 2**k, the largest base in 3..7; None if none."""
    base, k = image_size, 0
    # Halving while the side is even and above the largest base gives the largest admissible base, so
    # 48 is 6 * 8 (three blocks) rather than 3 * 16 (four blocks of the same width, for nothing).
    while base > _MAX_BASE and base % 2 == 0:
        base, k = base // 2, k + 1
    if k == 0 or not _MIN_BASE <= base <= _MAX_BASE:
        return None
    return base, k


#: every image side the backend builds (28 = 7 * 4, 32 = 4 * 8, 48 = 6 * 8, 64 = 4 * 16, 96 = 6 * 16, ...)
SUPPORTED_SIZES: tuple[int, ...] = tuple(s for s in range(_MIN_SIZE, _MAX_SIZE + 1) if _layout(s) is not None)


# -- DiffAugment ----------------------------------------------------------------------------------------

# Fractions of the image side, the values of the DiffAugment paper.
_TRANSLATION_RATIO = 0.125
_CUTOUT_RATIO = 0.5


def _per_sample(values: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast a per-sample value over an image batch."""
    return rearrange(values, "b -> b 1 1 1")


def _color(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Random brightness, saturation and contrast per sample (saturation skipped for 1 channel)."""
    # One draw of three columns whatever the channel count, so the stream layout does not depend on it.
    u = torch.rand(x.shape[0], 3, generator=generator, device=x.device, dtype=x.dtype)
    x = x + _per_sample(u[:, 0] - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * _per_sample(u[:, 1] * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(u[:, 2] + 0.5) + mean


def _translation(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Random integer shift per sample, up to 1/8 of each side, with zero fill."""
    b, _, h, w = x.shape
    max_dy, max_dx = int(h * _TRANSLATION_RATIO + 0.5), int(w * _TRANSLATION_RATIO + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (b, 1, 1), generator=generator, device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (b, 1, 1), generator=generator, device=x.device)
    # Index a zero-padded copy: sources that fall off the image clamp onto the padding ring, so the
    # vacated pixels are zero, and the gather is one batched, differentiable indexing op.
    padded = rearrange(F.pad(x, (1, 1, 1, 1)), "b c h w -> b h w c")
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return rearrange(padded[batch, rows, cols], "b h w c -> b c h w").contiguous()


def _cutout(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Zero a random square of half the side per sample (clipped where it crosses the border)."""
    b, _, h, w = x.shape
    cut_h, cut_w = int(h * _CUTOUT_RATIO + 0.5), int(w * _CUTOUT_RATIO + 0.5)
    # Centres range over the whole image (one step further for even sizes), as in the reference, so
    # squares at the border are partly outside and every pixel is equally likely to be cut.
    cy = torch.randint(0, h + (1 - cut_h % 2), (b, 1, 1), generator=generator, device=x.device)
    cx = torch.randint(0, w + (1 - cut_w % 2), (b, 1, 1), generator=generator, device=x.device)
    top, left = cy - cut_h // 2, cx - cut_w // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + cut_h) & (xs >= left) & (xs < left + cut_w)
    return x * rearrange((~inside).to(x.dtype), "b h w -> b 1 h w")


_OPS: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """Split a DiffAugment policy such as ``"translation,cutout,color"`` into op names.

    Args:
        policy: comma-separated op names from ``color``, ``translation``, ``cutout``; "" for none.

    Returns:
        The op names in the order they are applied.

    Raises:
        ConfigError: if ``policy`` is not a string or names an unknown op.
    """
    if not isinstance(policy, str):
        raise ConfigError(f"diffaugment must be a comma-separated string, got {type(policy).__name__}")
    names = tuple(part.strip() for part in policy.split(",") if part.strip())
    for name in names:
        if name not in _OPS:
            raise ConfigError(
                f"unknown DiffAugment op '{name}'{suggest(name, _OPS)} "
                f"(valid: {', '.join(_OPS)}, comma-separated, or '' for none)"
            )
    return names


def diff_augment(x: Tensor, policy: str, generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment: random, per-sample, differentiable colour / translation / cutout.

    Every op draws its parameters for the whole batch at once and is differentiable in ``x``, so the
    generator gets gradients through the critic of augmented fakes.

    Args:
        x: (B, C, H, W) float images in [-1, 1], C = 1 or 3.
        policy: comma-separated ops applied in order: ``color`` (brightness +-0.5, saturation x[0, 2],
            contrast x[0.5, 1.5]), ``translation`` (shift up to 1/8 of the side, zero fill), ``cutout``
            (a zeroed square of half the side); "" returns ``x`` unchanged.
        generator: RNG on ``x``'s device; the global RNG when None.

    Returns:
        (B, C, H, W) augmented images.

    Raises:
        ConfigError: if ``policy`` names an unknown op.
        ValueError: if ``x`` is not a 4-d floating-point batch.
    """
    names = parse_policy(policy)
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"diff_augment expects (B, C, H, W) float images, got {x.dtype} of shape {tuple(x.shape)}")
    for name in names:
        x = _OPS[name](x, generator)
    return x


# -- building blocks --------------------------------------------------------------------------------------

_RESIDUAL_GAIN = math.sqrt(2.0)  # the 3x3 convs inside blocks, each followed by a ReLU somewhere


def _init(layer: nn.Conv2d | nn.Linear, gain: float) -> nn.Conv2d | nn.Linear:
    nn.init.xavier_uniform_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _conv(in_ch: int, out_ch: int, kernel: int, gain: float) -> nn.Conv2d:
    return _init(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), gain)


def _sn(layer: nn.Module) -> nn.Module:
    # One power iteration per training forward, as in SNGAN: u is carried across steps, so it tracks the
    # top singular vector of slowly changing weights; the parametrization keeps state_dict keys stable
    # and works under torch.func.functional_call.
    return spectral_norm(layer, n_power_iterations=1)


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GeneratorBlock(nn.Module):
    """SNGAN up-block: BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus an upsample-conv1x1 shortcut.

    Args:
        in_ch: input channels.
        out_ch: output channels.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv(in_ch, out_ch, 3, _RESIDUAL_GAIN)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv(out_ch, out_ch, 3, _RESIDUAL_GAIN)
        self.shortcut = _conv(in_ch, out_ch, 1, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, 2H, 2W)."""
        h = self.conv1(_upsample(F.relu(self.bn1(x))))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(_upsample(x))


class DiscriminatorBlock(nn.Module):
    """SNGAN critic block: ReLU-conv3x3-ReLU-conv3x3 [-avgpool], with a conv1x1 [-avgpool] shortcut.

    The first block of the critic (``first=True``) is SNGAN's "optimised" block: no ReLU before its first
    convolution (the input is an image, not a feature map) and the shortcut pools before its 1x1
    convolution, which is cheaper and equivalent up to the order of two linear maps.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        downsample: halve the resolution with 2x2 average pooling.
        first: build the optimised first block (always downsamples).
    """

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, first: bool = False) -> None:
        super().__init__()
        self.first, self.downsample = first, downsample or first
        self.conv1 = _sn(_conv(in_ch, out_ch, 3, _RESIDUAL_GAIN))
        self.conv2 = _sn(_conv(out_ch, out_ch, 3, _RESIDUAL_GAIN))
        # An identity shortcut where shapes allow, as in SNGAN; a learnt one only where they change.
        self.shortcut = _sn(_conv(in_ch, out_ch, 1, 1.0)) if (in_ch != out_ch or self.downsample) else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H', W'), H' = H // 2 when downsampling, else H."""
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        if self.shortcut is None:
            return h + x
        if self.first:
            return h + self.shortcut(F.avg_pool2d(x, 2))
        skip = self.shortcut(x)
        return h + (F.avg_pool2d(skip, 2) if self.downsample else skip)


class Discriminator(nn.Module):
    """Spectral-norm ResNet critic: optimised block, ``num_down - 1`` down-blocks, one block at the base
    resolution, ReLU, global sum pooling, spectral-norm linear head.

    Args:
        channels: image channels.
        width: channels of every block.
        num_down: how many times the image side is halved (the generator's number of up-blocks).
    """

    def __init__(self, channels: int, width: int, num_down: int) -> None:
        super().__init__()
        blocks = [DiscriminatorBlock(channels, width, downsample=True, first=True)]
        blocks += [DiscriminatorBlock(width, width, downsample=True) for _ in range(num_down - 1)]
        blocks.append(DiscriminatorBlock(width, width, downsample=False))
        self.blocks = nn.Sequential(*blocks)
        self.head = _sn(_init(nn.Linear(width, 1), 1.0))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B,) unbounded realism scores (higher: more real)."""
        h = F.relu(self.blocks(images))
        # A sum, not a mean, over positions: SNGAN's choice; with the Lipschitz-bounded layers it lets
        # the score scale with the evidence gathered over the image.
        h = reduce(h, "b c h w -> b c", "sum")
        return rearrange(self.head(h), "b 1 -> b")


# -- the backend ------------------------------------------------------------------------------------------


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"GAN {name} must be a positive integer, got {value!r}")
    return value


@GENERATORS.register("gan")
class GAN(Generator):
    """SNGAN-style GAN: ResNet generator with BatchNorm, spectral-norm ResNet critic, hinge loss, DiffAugment.

    The generator proper (``stem``, ``blocks``, ``to_image``) maps latents to images; the critic is the
    submodule ``discriminator`` and owns :meth:`critic_parameters`. Both losses apply DiffAugment, drawn
    independently for each batch, before the critic.

    Args:
        image_size: image side, one of :data:`SUPPORTED_SIZES` (28, 32, 40, 48, 56, 64, 80, 96).
        channels: 1 or 3.
        preset: widths (generator/critic) by name (:data:`PRESETS`): ``tiny`` (8/8, tests), ``cpu``
            (16/16, Fashion-MNIST in minutes on two CPU cores), ``small`` (128/128), ``cifar`` (256/128,
            SNGAN's CIFAR-10 model).
        latent_dim: size of the Gaussian latent.
        g_width: generator channels; overrides the preset.
        d_width: critic channels; overrides the preset.
        diffaugment: DiffAugment policy for the critic's inputs (see :func:`diff_augment`); "" for none.

    Raises:
        ConfigError: for an unsupported size, channel count, preset, width or policy (one line).
    """

    test_options: ClassVar[dict] = {"preset": "tiny"}  # small instance for the generator contract tests

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        *,
        preset: str = "cpu",
        latent_dim: int = 128,
        g_width: int | None = None,
        d_width: int | None = None,
        diffaugment: str = "translation,cutout,color",
    ) -> None:
        layout = _layout(image_size) if isinstance(image_size, int) and not isinstance(image_size, bool) else None
        if layout is None or not _MIN_SIZE <= image_size <= _MAX_SIZE:
            raise ConfigError(
                f"GAN image_size {image_size!r} is not supported; supported sizes: "
                f"{', '.join(map(str, SUPPORTED_SIZES))} (base 3-7 times a power of two, 28 to 96)"
            )
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ConfigError(f"GAN channels must be 1 or 3, got {channels!r}")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ConfigError(
                f"unknown GAN preset '{preset}'{suggest(str(preset), PRESETS)} (valid: {', '.join(PRESETS)})"
            )
        preset_g, preset_d = PRESETS[preset]
        g_width = _positive_int("g_width", preset_g if g_width is None else g_width)
        d_width = _positive_int("d_width", preset_d if d_width is None else d_width)
        latent_dim = _positive_int("latent_dim", latent_dim)
        policy = ",".join(parse_policy(diffaugment))
        super().__init__(image_size, channels)
        self.augment_policy = policy  # normalised, e.g. "translation,cutout,color"
        self.latent_dim, self.g_width, self.d_width = latent_dim, g_width, d_width
        self.base, num_blocks = layout

        self.stem = _init(nn.Linear(latent_dim, g_width * self.base * self.base), 1.0)
        self.blocks = nn.Sequential(*(GeneratorBlock(g_width, g_width) for _ in range(num_blocks)))
        self.to_image = nn.Sequential(nn.BatchNorm2d(g_width), nn.ReLU(), _conv(g_width, channels, 3, 1.0), nn.Tanh())
        self.discriminator = Discriminator(channels, d_width, num_blocks)
        # NHWC convolution weights make every convolution run NHWC (oneDNN follows the weights): about
        # 1.3x faster on CPU here, and the layout cuDNN prefers. Set before the base copies the partner.
        self.to(memory_format=torch.channels_last)

    # -- generator ---------------------------------------------------------------------------------------

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard-normal latents.

        Args:
            n: how many.
            generator: RNG; the latents are drawn on its device (so a seeded CPU generator gives the
                same latents for a model on any device) and moved to the module's.

        Returns:
            (n, latent_dim) on the module's device, in its parameters' dtype.
        """
        device = self.stem.weight.device
        draw_on = generator.device if generator is not None else device
        return torch.randn(n, self.latent_dim, generator=generator, device=draw_on).to(device, self.stem.weight.dtype)

    def forward(self, z: Tensor) -> Tensor:
        """Latents (B, latent_dim) -> images (B, channels, image_size, image_size) in [-1, 1].

        Raises:
            ValueError: if ``z`` is not (B, latent_dim).
        """
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"GAN expects latents of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        h = rearrange(self.stem(z), "b (c h w) -> b c h w", h=self.base, w=self.base)
        # Hand out the usual NCHW layout, whatever the layout inside.
        return self.to_image(self.blocks(h)).contiguous()

    # -- critic -------------------------------------------------------------------------------------------

    def critic_parameters(self) -> list[nn.Parameter]:
        """The discriminator's parameters (spectral-norm ``original`` weights, biases)."""
        return list(self.discriminator.parameters())

    def _check_images(self, name: str, images: Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"GAN {name} images must be (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}"
            )

    def critic_loss(self, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Hinge loss of the critic: mean(relu(1 - D(T(real)))) + mean(relu(1 + D(T(fake)))).

        ``fake`` is detached here, so the critic step never sends gradients into the generator even if
        the caller forgets to. Real and fake pass through the critic in one call: the critic has no
        batch statistics, so this equals two calls, costs one spectral-norm power iteration, not two.

        Args:
            real: (B, C, H, W) real images in [-1, 1].
            fake: (B', C, H, W) generated images in [-1, 1].
            generator: RNG for DiffAugment; the global RNG when None.

        Returns:
            Scalar loss; 2.0 for a critic that scores everything 0.

        Raises:
            ValueError: if either batch does not have this generator's image shape.
        """
        self._check_images("real", real)
        self._check_images("fake", fake)
        policy = self.augment_policy
        views = torch.cat([diff_augment(real, policy, generator), diff_augment(fake.detach(), policy, generator)])
        real_scores, fake_scores = self.discriminator(views).split([real.shape[0], fake.shape[0]])
        return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()

    def realism_loss(self, fake: Tensor, real: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Hinge loss of the generator: -mean(D(T(fake))).

        Gradients flow through the critic into ``fake`` only; the critic's parameters get none.

        Args:
            fake: (B, C, H, W) generated images in [-1, 1], with gradient.
            real: (B', C, H, W) real images; unused by the hinge loss, part of the interface.
            generator: RNG for DiffAugment; the global RNG when None.

        Returns:
            Scalar loss.

        Raises:
            ValueError: if ``fake`` does not have this generator's image shape.
        """
        self._check_images("fake", fake)
        # The critic's weights enter detached: its gradient here would push it to call fakes real, and
        # left in .grad it would corrupt a critic step that does not zero them first. Skipping the
        # weight gradients also saves a third of the critic's backward pass.
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        views = diff_augment(fake, self.augment_policy, generator)
        return -torch.func.functional_call(self.discriminator, frozen, (views,), strict=False).mean()
