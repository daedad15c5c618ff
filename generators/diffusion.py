"""Diffusion backend ``"diffusion"``: a diffusers ``UNet2DModel`` sampled by a short, differentiable DDIM chain.

The model is an unconditional UNet built with diffusers' ``UNet2DModel`` (Ho et al. 2020, "Denoising
Diffusion Probabilistic Models"). Everything around it is written here, so that the sampler can carry
gradients (diffusers' pipelines run under ``torch.no_grad``):

- **Noise schedule**: ``train_timesteps`` (1000) betas, ``linear`` (1e-4 to 0.02, DDPM's) or ``cosine``
  (Nichol & Dhariwal 2021, betas capped at 0.999), computed in float64.
- **Prediction**: ``v_prediction`` (default; Salimans & Ho 2022, v = sqrt(ab) eps - sqrt(1 - ab) x0) or
  ``epsilon``. With few steps, trailing spacing and no clipping, epsilon prediction is ill-conditioned:
  the first step starts at t = T - 1, where x0 = (x - sqrt(1 - ab) eps) / sqrt(ab) multiplies the
  model's error by 1 / sqrt(ab) = 156 (linear schedule); measured on Fashion-MNIST after 300 steps, the
  x0 error there is ~300 (MSE) and every sample saturates, while v prediction (x0 = sqrt(ab) x - sqrt(1 -
  ab) v, no division) gives recognisable clothes. This is the fix of Lin et al. (below), without their
  zero-terminal-SNR rescaling (ab at T - 1 is 4e-5, close enough to pure noise).
- **Realism term**: the denoising loss on *real* images, ``E_t,eps ||f_theta(x_t, t) - target||^2``
  (target v or eps) with ``t`` uniform over the training timesteps. It plays the part of the GAN's
  critic: it keeps the model a model of the data while the hard-sample term pulls it elsewhere. It needs
  no samples, so :attr:`realism_needs_samples` is False and the training loops pass no fakes (``fake``
  is ignored).
- **Sampling**: deterministic DDIM (Song et al. 2021, eta = 0) over ``sampling_steps`` timesteps with
  "trailing" spacing (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
  Table 2: the first step starts at the last training timestep, where the model was trained on almost
  pure noise). The predicted x0 is *not* clipped inside the chain; the final image is clamped to
  [-1, 1], the same conversion diffusers' pipelines make. The latents are the initial Gaussian noise.
- **Truncated backpropagation**: only the last ``grad_steps`` (K) sampler steps record a graph; the earlier
  steps run under ``torch.no_grad``. Each recorded step is wrapped in ``torch.utils.checkpoint``
  (non-reentrant), so the graph keeps the step's input, not its activations, and the backward pass
  recomputes one step at a time: memory grows with K, not with the number of sampling steps.
- **Positive pairs**, option ``pair_method``: ``ema`` (the generator and its moving-average partner from
  the same noise, the direct analogue of G / G_ema) or ``branch`` (one denoising path that splits in
  two; the earlier the split, the harder the pair). In both, ``hardness`` in [0, 1] is the standard
  deviation of the fresh noise mixed in (variance-preserving), see :meth:`Diffusion.pair`.
- **Export**: :meth:`Diffusion.save_pretrained` also writes the UNet (and its moving-average copy) in
  diffusers' own format with a matching ``DDIMScheduler`` and a ``model_index.json``, so the folder
  loads with plain diffusers (``UNet2DModel.from_pretrained(folder / "unet")`` or
  ``DDIMPipeline.from_pretrained(folder)``).

diffusers is imported only when a model is built, so ``import synthcl.generators.diffusion`` and the rest of
synthcl work without it; building one without diffusers raises a one-line ConfigError.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from synthcl.errors import ConfigError, suggest
from synthcl.interfaces import Generator
from synthcl.io import default_mode
from synthcl.registry import GENERATORS

__all__ = ["PAIR_METHODS", "PREDICTIONS", "PRESETS", "SCHEDULES", "Diffusion", "Preset", "make_betas", "trailing_timesteps"]


@dataclass(frozen=True)
class Preset:
    """UNet size: channels per resolution level, residual blocks per level, GroupNorm groups, attention."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    norm_num_groups: int
    attention: bool


#: preset name -> UNet size. ``tiny`` is for tests; ``cpu`` for 28-px Fashion-MNIST on two CPU cores
#: (about 0.16 M parameters, no attention); ``small`` and ``cifar`` for a GPU (``cifar`` is the
#: width/depth of DDPM's CIFAR-10 model, 36 M parameters).
PRESETS: dict[str, Preset] = {
    "tiny": Preset((8, 16), 1, 4, False),
    "cpu": Preset((8, 16, 32), 1, 4, False),
    "small": Preset((64, 128, 128), 2, 32, True),
    "cifar": Preset((128, 256, 256, 256), 2, 32, True),
}
SCHEDULES = ("linear", "cosine")
PAIR_METHODS = ("ema", "branch")
PREDICTIONS = ("v_prediction", "epsilon")
#: attention goes into the first resolution level at or below this side (DDPM: 16 x 16 on CIFAR-10)
ATTENTION_SIDE = 16


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError:
        raise ConfigError(
            "the 'diffusion' generator needs the diffusers package: pip install 'synthcl[diffusion]'"
        ) from None
    return diffusers


def make_betas(name: str, timesteps: int) -> Tensor:
    """The (timesteps,) float64 betas of a named schedule.

    ``linear``: DDPM's, 1e-4 to 0.02 (scaled to 1000 steps whatever ``timesteps``, as in improved DDPM).
    ``cosine``: alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), s = 0.008, betas capped at 0.999.
    """
    if name == "linear":
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    if name == "cosine":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), 0.999)
                             for i in range(timesteps)], dtype=torch.float64)
    raise ConfigError(f"unknown diffusion beta_schedule '{name}'{suggest(str(name), SCHEDULES)} "
                      f"(valid: {', '.join(SCHEDULES)})")


def trailing_timesteps(train_timesteps: int, steps: int) -> list[int]:
    """``steps`` descending sampling timesteps with "trailing" spacing: T-1 first, then every T/steps.

    The same rounding as diffusers' ``DDIMScheduler(timestep_spacing="trailing")``.
    """
    ratio = train_timesteps / steps
    return [round(train_timesteps - i * ratio) - 1 for i in range(steps)]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"diffusion {name} must be a positive integer, got {value!r}")
    return value


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"unknown diffusion {name} '{value}'{suggest(str(value), choices)} (valid: {', '.join(choices)})")
    return value


def _head_dim(widths: tuple[int, ...]) -> int:
    """Channels per attention head: the largest divisor of every width up to 64 (so every attention
    layer, wherever it sits, splits its channels evenly)."""
    common = math.gcd(*widths)
    return next(d for d in range(min(64, common), 0, -1) if common % d == 0)


def _replace_folder(target: Path, write: Any) -> None:
    """Write a folder next to ``target`` with ``write(tmp)``, then swap it into place (no half folder)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        for f in tmp.rglob("*"):  # diffusers' safetensors files come out 0600
            default_mode(f)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@GENERATORS.register("diffusion")
class Diffusion(Generator):
    """Unconditional diffusion model (diffusers ``UNet2DModel``, v or epsilon prediction) with a
    differentiable few-step DDIM sampler, truncated to its last ``grad_steps`` steps.

    The UNet is the submodule ``unet``; there is no critic. Sizes come from a preset; the UNet options
    override it one by one.

    Args:
        image_size: image side; divisible by 2 ** (levels - 1) (28 allows at most 3 levels).
        channels: 1 or 3.
        preset: UNet size by name (:data:`PRESETS`): ``tiny`` (tests), ``cpu`` (28-px Fashion-MNIST on two
            CPU cores), ``small``, ``cifar`` (DDPM's CIFAR-10 UNet; 32-px CIFAR, 96-px STL-10).
        block_out_channels: channels per resolution level; overrides the preset.
        layers_per_block: residual blocks per level (the decoder has one more); overrides the preset.
        norm_num_groups: GroupNorm groups, dividing every channel count; overrides the preset.
        attention: self-attention in the middle block and in the first level at or below 16 px;
            overrides the preset.
        sampling_steps: DDIM steps of the sampler (trailing spacing, eta = 0).
        grad_steps: K, how many of the last sampler steps carry gradients (1 <= K <= sampling_steps).
        pair_method: ``ema`` (generator vs. moving-average partner) or ``branch`` (one path split in two).
        train_timesteps: T, the length of the noise schedule.
        beta_schedule: ``linear`` (DDPM) or ``cosine``.
        prediction_type: what the UNet predicts, ``v_prediction`` (default, well conditioned at every
            noise level) or ``epsilon`` (needs many steps or a well-trained model without clipping).
        realism_batch: at most this many real images enter the denoising loss (None: all); the first ones
            of the batch, which is already in random order.
        checkpointing: recompute the recorded sampler steps in the backward pass instead of keeping
            their activations (memory O(K * image) instead of O(K * UNet activations)).

    Raises:
        ConfigError: for an unsupported size, channel count or option (one line), or when diffusers is
            not installed.
    """

    test_options: ClassVar[dict] = {"preset": "tiny", "sampling_steps": 2}  # small instance for the contract tests
    realism_needs_samples: ClassVar[bool] = False  # the denoising loss sees real images only

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        *,
        preset: str = "cpu",
        block_out_channels: list[int] | None = None,
        layers_per_block: int | None = None,
        norm_num_groups: int | None = None,
        attention: bool | None = None,
        sampling_steps: int = 4,
        grad_steps: int = 1,
        pair_method: str = "ema",
        train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        prediction_type: str = "v_prediction",
        realism_batch: int | None = None,
        checkpointing: bool = True,
    ) -> None:
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ConfigError(f"diffusion channels must be 1 or 3, got {channels!r}")
        preset_ = PRESETS[_choice("preset", preset, tuple(PRESETS))]
        widths = tuple(preset_.block_out_channels if block_out_channels is None else block_out_channels)
        if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
            raise ConfigError(f"diffusion block_out_channels must be a list of positive integers, got {block_out_channels!r}")
        layers = _positive_int("layers_per_block", preset_.layers_per_block if layers_per_block is None else layers_per_block)
        groups = _positive_int("norm_num_groups", preset_.norm_num_groups if norm_num_groups is None else norm_num_groups)
        if any(w % groups for w in widths):
            raise ConfigError(f"diffusion norm_num_groups {groups} must divide every block_out_channels {list(widths)}")
        attention = preset_.attention if attention is None else attention
        if not isinstance(attention, bool):
            raise ConfigError(f"diffusion attention must be true or false, got {attention!r}")
        factor = 2 ** (len(widths) - 1)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < factor or image_size % factor:
            raise ConfigError(
                f"diffusion image_size {image_size!r} must be a positive multiple of {factor} for a UNet with "
                f"{len(widths)} levels; choose fewer block_out_channels or another preset"
            )
        _positive_int("train_timesteps", train_timesteps)
        _positive_int("sampling_steps", sampling_steps)
        if sampling_steps > train_timesteps:
            raise ConfigError(f"diffusion sampling_steps {sampling_steps} exceeds train_timesteps {train_timesteps}")
        _positive_int("grad_steps", grad_steps)
        if grad_steps > sampling_steps:
            raise ConfigError(f"diffusion grad_steps {grad_steps} must be <= sampling_steps {sampling_steps}")
        _choice("pair_method", pair_method, PAIR_METHODS)
        _choice("beta_schedule", beta_schedule, SCHEDULES)
        _choice("prediction_type", prediction_type, PREDICTIONS)
        if realism_batch is not None:
            _positive_int("realism_batch", realism_batch)
        if not isinstance(checkpointing, bool):
            raise ConfigError(f"diffusion checkpointing must be true or false, got {checkpointing!r}")
        diffusers = _diffusers()
        super().__init__(image_size, channels)
        self.train_timesteps, self.sampling_steps, self.grad_steps = train_timesteps, sampling_steps, grad_steps
        self.pair_method, self.beta_schedule, self.prediction_type = pair_method, beta_schedule, prediction_type
        self.realism_batch, self.checkpointing = realism_batch, checkpointing

        # Attention (if any) in the first level at or below 16 px, as DDPM's CIFAR-10 model at 16 x 16.
        sides = [image_size // 2**i for i in range(len(widths))]
        attn_level = next((i for i, s in enumerate(sides) if s <= ATTENTION_SIDE), None) if attention else None
        down = ["AttnDownBlock2D" if i == attn_level else "DownBlock2D" for i in range(len(widths))]
        up = [name.replace("Down", "Up") for name in reversed(down)]
        self.unet = diffusers.UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels,
            block_out_channels=widths, layers_per_block=layers, norm_num_groups=groups,
            down_block_types=tuple(down), up_block_types=tuple(up), add_attention=attention,
            attention_head_dim=_head_dim(widths),
        )

        # The schedule is a constant of the options, not state: plain tensors (not buffers), so that it is
        # neither saved nor averaged into the partner.
        betas = make_betas(self.beta_schedule, self.train_timesteps)
        self._alphas_cumprod = torch.cumprod(1 - betas, 0)
        self._ab = self._alphas_cumprod.tolist()
        self._noise_std = (1 - self._alphas_cumprod).sqrt().tolist()  # ascending in t
        self.timesteps = trailing_timesteps(self.train_timesteps, self.sampling_steps)

    # -- schedule -----------------------------------------------------------------------------------------

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t = prod_{s <= t} (1 - beta_s); 1.0 for t = -1 (the clean image)."""
        return 1.0 if t < 0 else self._ab[t]

    def branch_timestep(self, hardness: float) -> int:
        """The timestep whose noise standard deviation sqrt(1 - alpha_bar_t) first reaches ``hardness``."""
        return min(bisect.bisect_left(self._noise_std, hardness), self.train_timesteps - 1)

    # -- the model ------------------------------------------------------------------------------------

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        weight = self.unet.conv_in.weight
        return weight.device, weight.dtype

    def model_output(self, x: Tensor, t: int | Tensor) -> Tensor:
        """The UNet's prediction at x_t (eps or v, by ``prediction_type``); ``t`` an int or a (B,) tensor."""
        if not torch.is_tensor(t):
            t = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        return self.unet(x, t, return_dict=False)[0]

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Initial noise of the sampler.

        Args:
            n: how many.
            generator: RNG; drawn on its device (a seeded CPU generator gives the same latents on any
                device) and moved to the module's.

        Returns:
            (n, channels, image_size, image_size) standard-normal noise in the parameters' dtype.
        """
        device, dtype = self._device_dtype()
        return self._randn((n, self.channels, self.image_size, self.image_size), generator, device, dtype)

    @staticmethod
    def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
               dtype: torch.dtype) -> Tensor:
        draw_on = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=draw_on).to(device, dtype)

    def _denoise(self, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """(x0, eps) at timestep t, not clipped. With a = sqrt(ab_t), s = sqrt(1 - ab_t):
        epsilon: x0 = (x - s eps) / a;  v: x0 = a x - s v, eps = s x + a v."""
        out = self.model_output(x, t)
        ab = self.alpha_bar(t)
        a, s = math.sqrt(ab), math.sqrt(1 - ab)
        if self.prediction_type == "epsilon":
            return (x - s * out) / a, out
        return a * x - s * out, s * x + a * out

    def _step(self, x: Tensor, t: int, t_next: int) -> Tensor:
        """One DDIM move (eta = 0) from timestep t to t_next (-1: the clean image):
        x_next = sqrt(ab_next) x0 + sqrt(1 - ab_next) eps."""
        x0, eps = self._denoise(x, t)
        ab_next = self.alpha_bar(t_next)
        return math.sqrt(ab_next) * x0 + math.sqrt(1 - ab_next) * eps

    def _records_graph(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.unet.parameters())

    def _call(self, record: bool, fn: Any, *args: Any) -> Any:
        """``fn(*args)``: with a graph (checkpointed, if enabled) when ``record``, else without."""
        if not record:
            with torch.no_grad():
                return fn(*args)
        if self.checkpointing:
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _run(self, x: Tensor, timesteps: list[int], grad_moves: int, end: int = -1) -> Tensor:
        """DDIM along descending ``timesteps`` and on to ``end`` (-1: the clean image); only the last
        ``grad_moves`` moves record a graph."""
        record = self._records_graph()
        targets = [*timesteps[1:], end]
        for i, (t, t_next) in enumerate(zip(timesteps, targets)):
            x = self._call(record and i >= len(timesteps) - grad_moves, self._step, x, t, t_next)
        return x

    def _check_latents(self, z: Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if z.ndim != 4 or tuple(z.shape[1:]) != expected:
            raise ValueError(f"diffusion expects latents of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(z.shape)}")

    def forward(self, z: Tensor) -> Tensor:
        """Initial noise (B, C, H, W) -> images (B, C, H, W) in [-1, 1] by few-step DDIM.

        Gradients reach the UNet through the last ``grad_steps`` steps only. The final clamp to [-1, 1]
        (not a clipping of the predicted x0 inside the chain) passes gradients for the pixels inside the
        range; a saturated pixel gets none, as a small change would not change the image.

        Raises:
            ValueError: if ``z`` is not (B, channels, image_size, image_size).
        """
        self._check_latents(z)
        return self._run(z, self.timesteps, self.grad_steps).clamp(-1.0, 1.0)

    # -- realism ----------------------------------------------------------------------------------------

    def realism_loss(self, fake: Tensor | None, real: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Denoising loss on real images: mean ||f_theta(sqrt(ab_t) x + sqrt(1 - ab_t) eps, t) - target||^2,
        target = sqrt(ab_t) eps - sqrt(1 - ab_t) x (v prediction) or eps (epsilon prediction).

        Args:
            fake: unused (the loss needs no samples; the training loops pass None); accepted for the
                interface.
            real: (B, C, H, W) real images in [-1, 1]; the first ``realism_batch`` are used.
            generator: RNG for the timesteps and the noise; the global RNG when None.

        Returns:
            Scalar loss (1.0 on average for a model that predicts zero).

        Raises:
            ValueError: if ``real`` does not have this generator's image shape.
        """
        expected = (self.channels, self.image_size, self.image_size)
        if real.ndim != 4 or tuple(real.shape[1:]) != expected:
            raise ValueError(f"diffusion real images must be (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(real.shape)}")
        x0 = real[: self.realism_batch] if self.realism_batch else real
        device, dtype = self._device_dtype()
        x0 = x0.to(device, dtype)
        draw_on = generator.device if generator is not None else device
        t = torch.randint(0, self.train_timesteps, (x0.shape[0],), generator=generator, device=draw_on).to(device)
        noise = self._randn(tuple(x0.shape), generator, device, dtype)
        ab = self._alphas_cumprod.to(device)[t].to(dtype).view(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        target = noise if self.prediction_type == "epsilon" else a * noise - s * x0
        return F.mse_loss(self.model_output(a * x0 + s * noise, t).float(), target.float())

    # -- positive pairs -----------------------------------------------------------------------------------

    def pair(self, z: Tensor, hardness: float = 0.0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two similar-but-distinct batches from the same initial noise, by ``pair_method``.

        ``hardness`` h (clamped to [0, 1]) is the standard deviation of fresh noise mixed in, keeping the
        variance: ``sqrt(1 - h^2) * signal + h * noise``.

        - ``ema``: the generator's sample of ``z`` and the moving-average partner's sample of
          ``sqrt(1 - h^2) z + h n``; h = 0 gives the same noise, h = 1 independent noise.
        - ``branch``: one DDIM path from ``z`` down to the timestep tau whose noise level is h, where
          it splits: from the predicted clean image x0 at that point, each branch is re-noised to tau
          with its own noise (``sqrt(ab_tau) x0 + sqrt(1 - ab_tau) n_i``, the branch move) and denoised
          by the remaining trailing timesteps below tau. h = 0 returns one image twice; larger h
          branches earlier (at a noisier point), so the pair shares less; h = 1 branches at the start.

        The first batch keeps gradients (through its last ``grad_steps`` moves, which may reach back
        into the shared path); the second is detached. All noise is drawn from ``generator`` in a
        fixed order, so pairs are reproducible.

        Args:
            z: (B, C, H, W) latents from :meth:`sample_latents`.
            hardness: >= 0; values above 1 act as 1.
            generator: RNG for the fresh noise.

        Returns:
            Two (B, C, H, W) tensors in [-1, 1].
        """
        if hardness < 0:
            raise ValueError(f"hardness must be >= 0, got {hardness}")
        self._check_latents(z)
        h = min(float(hardness), 1.0)
        if self.pair_method == "ema":
            shifted = z
            if h > 0:
                shifted = math.sqrt(1 - h * h) * z + h * self._randn(tuple(z.shape), generator, z.device, z.dtype)
            return self(z), self.partner(shifted)
        if h == 0:
            first = self(z)
            return first, first.detach()
        noises = [self._randn(tuple(z.shape), generator, z.device, z.dtype) for _ in range(2)]
        tau = self.branch_timestep(h)
        shared = [t for t in self.timesteps if t > tau] or self.timesteps[:1]
        tau = min(tau, shared[-1])
        after = [tau, *[t for t in self.timesteps if t < tau]]
        # The first branch's gradient window, its last grad_steps UNet calls, may reach back past the split.
        in_after = min(self.grad_steps, len(after))
        before = self.grad_steps - in_after
        record = self._records_graph()
        # Shared path: DDIM down to the last shared timestep, then one prediction of the clean image there.
        x = self._run(z, shared[:-1], max(0, before - 1), end=shared[-1])
        x0, _ = self._call(record and before >= 1, self._denoise, x, shared[-1])
        a, s = math.sqrt(self.alpha_bar(tau)), math.sqrt(1 - self.alpha_bar(tau))
        first = self._run(a * x0 + s * noises[0], after, in_after)
        with torch.no_grad():
            second = self._run(a * x0.detach() + s * noises[1], after, 0)
        return first.clamp(-1.0, 1.0), second.clamp(-1.0, 1.0)

    # -- export ---------------------------------------------------------------------------------------

    def scheduler_config(self) -> dict[str, Any]:
        """Options of a diffusers ``DDIMScheduler`` that samples like :meth:`forward` (when
        ``sampling_steps`` divides ``train_timesteps``; otherwise diffusers' trailing steps end at t=0)."""
        return {
            "num_train_timesteps": self.train_timesteps,
            "beta_schedule": {"linear": "linear", "cosine": "squaredcos_cap_v2"}[self.beta_schedule],
            "beta_start": 1e-4 * 1000 / self.train_timesteps,
            "beta_end": 0.02 * 1000 / self.train_timesteps,
            "clip_sample": False,
            "set_alpha_to_one": True,
            "steps_offset": 0,
            "prediction_type": self.prediction_type,
            "timestep_spacing": "trailing",
        }

    def partner_unet(self) -> nn.Module:
        """A standalone diffusers ``UNet2DModel`` with the moving-average partner's weights."""
        diffusers = _diffusers()
        unet = diffusers.UNet2DModel.from_config(self.unet.config)
        prefix = "unet."
        unet.load_state_dict({k[len(prefix):]: v for k, v in self.partner_tensors().items() if k.startswith(prefix)})
        return unet.to(self.unet.conv_in.weight.device)

    def save_pretrained(self, folder: str | Path) -> Path:
        """synthcl's ``config.json`` + ``model.safetensors`` (the base's), plus diffusers' own layout:
        ``unet/`` (this UNet), ``unet_ema/`` (the moving-average partner's), ``scheduler/`` (a matching
        ``DDIMScheduler``: trailing spacing, no clipping) and ``model_index.json`` (a ``DDIMPipeline``).
        ``config.json`` is written last, so a folder that has it is complete."""
        diffusers = _diffusers()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        scheduler = diffusers.DDIMScheduler(**self.scheduler_config())
        _replace_folder(folder / "unet", lambda p: self.unet.save_pretrained(p, safe_serialization=True))
        _replace_folder(folder / "unet_ema", lambda p: self.partner_unet().save_pretrained(p, safe_serialization=True))
        _replace_folder(folder / "scheduler", scheduler.save_pretrained)
        from synthcl.io import atomic_write_text

        index = {"_class_name": "DDIMPipeline", "_diffusers_version": diffusers.__version__,
                 "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"]}
        atomic_write_text(folder / "model_index.json", json.dumps(index, indent=2) + "\n")
        return super().save_pretrained(folder)
