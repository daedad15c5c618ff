"""One training iteration, named: :class:`LearnerStep` (steps 5 to 9 of the learner loop) and
:class:`GeneratorStep` (one step of generator pretraining).

The loops call them once per step and keep only the run's bookkeeping; the speed benchmark times
them as they are, and the tests drive them directly, so there is one copy of each step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from synthcl.augment import ViewAugment
from synthcl.interfaces import ContrastiveLearner, Generator, scalar_loss
from synthcl.nn.momentum import frozen_call
from synthcl.synthesis.engine import Synthesizer
from synthcl.training.session import step_seed


def to_signed(images: Tensor) -> Tensor:
    """uint8 images (B, C, H, W) -> float in [-1, 1], what generators and critics take."""
    return images.float().div(127.5).sub(1.0)


class LearnerStep:
    """One learner iteration: real views (5), synthetic views (6), the learner update (7), momentum
    encoders and queues (8), the critic, generator and partner updates with the learner frozen (9).

    Args:
        learner: what the learner update calls (the prepared, possibly DDP-wrapped or compiled module).
        unwrapped: the plain learner: the generator step, features and momentum hooks use it.
        optimizer, scheduler: the learner's.
        augment: the batched view augmentation (real and synthetic views).
        synth: the synthesizer, or None for plain contrastive learning.
        seed: ``train.seed``: every random draw of step s comes from seeds of (seed, s, rank), so a resumed
            run draws what an uninterrupted one would.
        global_batch: real images per step over all processes (synthetic group ids start after them).
        total_steps: the schedule's length (for the momentum schedules).
        views_per_image, channels_last, grad_clip: the recipe's.
        rank, world: this process and the number of processes.
        backward: ``backward(loss)`` (default ``loss.backward()``; Accelerate's for mixed precision / DDP).
        clip: ``clip(parameters, max_norm)`` (default ``torch.nn.utils.clip_grad_norm_``).
        autocast: a context manager factory around the learner's forward (Accelerate's prepared module
            does its own; the speed benchmark passes ``torch.autocast`` for its bf16 rows).
        synthetic_augment: the augmentation of synthetic views (default: ``augment``).
        synthetic_weight: the weight of synthetic anchors in the learner's loss (1: a plain mean).
        extra_real: ``extra_real(step) -> uint8 images``: more real images for the ``matched-views``
            control, four views each, as many as synthetic latents would be drawn (``extra_ratio``).

    ``times`` accumulates host seconds per phase (``augment``, ``learner``); the synthesizer keeps its own.
    """

    def __init__(self, learner: nn.Module, unwrapped: ContrastiveLearner, optimizer: Any, scheduler: Any,
                 augment: ViewAugment, synth: Synthesizer | None, *, seed: int, global_batch: int, total_steps: int,
                 views_per_image: int = 2, channels_last: bool = False, grad_clip: float | None = None,
                 rank: int = 0, world: int = 1, backward: Callable[[Tensor], None] | None = None,
                 clip: Callable[..., Any] | None = None,
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                 synthetic_augment: ViewAugment | None = None, synthetic_weight: float = 1.0,
                 extra_real: Callable[[int], Tensor] | None = None, extra_ratio: float = 0.0) -> None:
        self.learner, self.unwrapped, self.optimizer, self.scheduler = learner, unwrapped, optimizer, scheduler
        self.augment, self.synth = augment, synth
        self.synthetic_augment = synthetic_augment or augment
        self.synthetic_weight, self.extra_real = synthetic_weight, extra_real
        self.seed, self.global_batch, self.total_steps = seed, global_batch, total_steps
        self.views_per_image, self.channels_last, self.grad_clip = views_per_image, channels_last, grad_clip
        self.rank, self.world = rank, world
        self.local_batch = global_batch // world
        self.n_synthetic = 0 if synth is None else max(1, round(synth.config.ratio * self.local_batch))
        self.n_extra = 0 if extra_real is None else max(1, round(extra_ratio * self.local_batch))
        self.backward = backward or (lambda loss: loss.backward())
        self.clip = clip or nn.utils.clip_grad_norm_
        self.autocast = autocast or contextlib.nullcontext
        device = next(unwrapped.parameters()).device
        self.rng = torch.Generator(device=device)
        self.times = {"augment": 0.0, "learner": 0.0}

    def frozen_loss(self, views: Tensor, groups: Tensor) -> Tensor:
        """The learner's loss with the learner frozen: what the generator's hard term sees."""
        return frozen_call(self.unwrapped, views, groups)

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """The learner's embedding (projector output) of images in [0, 1], in eval mode: where the hardness
        controller measures pairs."""
        was_training = self.unwrapped.training
        self.unwrapped.eval()
        out = self.unwrapped.embed(self.augment.standardize(images)).float()
        self.unwrapped.train(was_training)
        return out

    def features(self, images: Tensor) -> Tensor:
        """Backbone features of images in [0, 1] in eval mode (the pair-similarity monitor)."""
        was_training = self.unwrapped.training
        self.unwrapped.eval()
        out = self.unwrapped.features(self.augment.standardize(images))
        self.unwrapped.train(was_training)
        return out

    def real_views(self, step: int, images: Tensor) -> tuple[Tensor, Tensor]:
        """Step 5: ``views_per_image`` augmentations of each uint8 image, one group id per image."""
        self.rng.manual_seed(step_seed(self.seed, step, self.rank))
        # Draws from the default RNG (a generator's DiffAugment, dropout) are per-step too.
        torch.manual_seed(step_seed(self.seed + 1, step, self.rank))
        views = self.augment.views(images, self.views_per_image, self.rng)
        return views, self.groups(images.shape[0], images.device)

    def groups(self, n: int, device: torch.device) -> Tensor:
        """Group ids of ``n`` real images of this process, view-major."""
        return (torch.arange(n, device=device) + self.rank * self.local_batch).repeat(self.views_per_image)

    def __call__(self, step: int, images: Tensor, real: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Run steps 5 to 9 on this process's uint8 ``images``; return the learner's loss, detached.

        Args:
            real: precomputed (views, groups) of the images (a benchmark's DataLoader pipeline); default:
                :meth:`real_views`.
        """
        start = time.perf_counter()
        views, groups = real if real is not None else self.real_views(step, images)
        if self.extra_real is not None:  # the matched-views control: more real images, four views each
            more = self.augment.views(self.extra_real(step), 4, self.rng)
            extra_ids = torch.arange(self.n_extra, device=groups.device) + self.global_batch + self.rank * self.n_extra
            views, groups = torch.cat([views, more.to(views.dtype)]), torch.cat([groups, extra_ids.repeat(4)])
        real_views = (views, groups)
        if self.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        self.times["augment"] += time.perf_counter() - start

        # 6. Synthetic views, their group ids after every process's real ids, detached for the learner.
        weights = None
        if self.synth is not None:
            synthetic = self.synth.synthesize(step, images.shape[0], self.global_batch + self.rank * self.n_synthetic,
                                              self.synthetic_augment.views, self.rng, embed=self.embed)
            if synthetic is not None:
                n_real = views.shape[0]
                views = torch.cat([views, synthetic[0].to(views.dtype)])
                groups = torch.cat([groups, synthetic[1]])
                if self.channels_last:
                    views = views.contiguous(memory_format=torch.channels_last)
                if self.synthetic_weight != 1.0:
                    weights = torch.ones(views.shape[0], device=views.device)
                    weights[n_real:] = self.synthetic_weight

        # 7. The learner update on real and synthetic views; 8. momentum encoders and queues.
        start = time.perf_counter()
        with self.autocast():
            loss = self.learner(views, groups) if weights is None else self.learner(views, groups, weights)
        self.backward(loss)
        if self.grad_clip is not None:
            self.clip(self.learner.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.unwrapped.on_step_end(step + 1, self.total_steps)
        self.times["learner"] += time.perf_counter() - start

        # 9. Critic and generator steps with the learner frozen, then the moving-average partner.
        if self.synth is not None:
            self.synth.update_generator(step, to_signed(images), self.frozen_loss, real_views=real_views)
            self.synth.update_partner(step)
        return loss.detach().float()


class GeneratorStep:
    """One step of generator pretraining on real images: critic step(s) on real vs. detached samples, the
    realism step (the critic not updated), the moving-average partner.

    Args:
        generator: the generator (with its critic, if it has one).
        g_opt, d_opt: Adam for the generator and for the critic (None: no critic).
        critic_steps: critic updates per generator update.
        partner_momentum: EMA momentum of the partner.
        seed: ``train.seed`` (every random draw of step s is seeded from (seed, s)).
        autocast: a context manager factory (Accelerate's ``autocast`` for bf16).
    """

    def __init__(self, generator: Generator, g_opt: torch.optim.Optimizer, d_opt: torch.optim.Optimizer | None, *,
                 critic_steps: int, partner_momentum: float, seed: int,
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> None:
        self.generator, self.g_opt, self.d_opt = generator, g_opt, d_opt
        self.critic_steps, self.partner_momentum, self.seed = critic_steps, partner_momentum, seed
        self.autocast = autocast or contextlib.nullcontext

    def __call__(self, step: int, images: Tensor) -> Tensor:
        """One step on uint8 ``images``; returns (critic loss, generator loss), detached."""
        g = self.generator
        real = to_signed(images)
        # Every random draw of this step (latents, DiffAugment, ...) comes from a seed of the step.
        torch.manual_seed(step_seed(self.seed, step, 0))
        n = real.shape[0]
        critic_loss = torch.zeros((), device=real.device)
        if self.d_opt is not None:
            for _ in range(self.critic_steps):
                with torch.no_grad(), self.autocast():
                    fake = g(g.sample_latents(n))
                with self.autocast():
                    critic_loss = scalar_loss(g.critic_loss(real, fake.float()), g, "critic_loss")
                self.d_opt.zero_grad(set_to_none=True)
                critic_loss.backward()
                self.d_opt.step()
        # A realism term on real images alone (diffusion's denoising loss) gets no samples: none are drawn.
        with self.autocast():
            fake = g(g.sample_latents(n)).float() if g.realism_needs_samples else None
            generator_loss = scalar_loss(g.realism_loss(fake, real), g, "realism_loss")
        self.g_opt.zero_grad(set_to_none=True)
        generator_loss.backward()
        self.g_opt.step()
        if self.d_opt is not None:
            self.d_opt.zero_grad(set_to_none=True)  # the generator step left gradients on the critic
        g.update_partner(self.partner_momentum)
        return torch.stack([critic_loss.detach().float(), generator_loss.detach().float()])
