"""The synthesis side of one training iteration (steps 6 and 9 of the training loop, numbered as in
docs/architecture.md), for any generator.

The training loop owns the learner; a :class:`Synthesizer` owns the generator, its optimizers and the
schedules, and is called at fixed points of the loop:

1. ``synthesize``: latents -> samples (and partner samples) -> augmented synthetic views with group ids,
   returned detached for the learner step; the views keep their graph for the generator step, so the
   generator's forward pass and the augmentation are computed once per iteration.
2. ``update_generator``: the critic step on real vs. detached fake images, then the generator step
   ``lambda_real * realism - lambda_hard * learner_loss(synthetic views)`` with the learner frozen.
3. ``update_partner``: the moving-average partner, with the momentum from its schedule.

Every ``control_every`` learner steps (a fixed cadence, whatever ``train.log_every`` is) the pairs of the
step are measured in the learner's projector space (:meth:`Synthesizer.observe`): the cosine of the two
members of each pair beside the cosine of unrelated samples. With ``hardness_control: target`` the
measurement steers the hardness (the latent scale of the partner branch) towards a scheduled target.

Stability: a non-finite generator loss or a collapse of the samples (no variety left) multiply lambda_hard
by ``backoff`` (logged); with ``monitor: steer``, so do pairs that the learner no longer sees as similar.
After enough back-offs the run stops with a clear message, keeping the last good checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from synthcl.config import GeneratorConfig, SynthesisConfig
from synthcl.flags import FirstStep, Reduce, earliest, mark_of
from synthcl.interfaces import Generator, scalar_loss

TRAINS_GENERATOR = {"hard-samples", "hard-pairs", "joint"}
USES_PAIRS = {"hard-pairs", "joint", "static-pairs"}
HARD_TERM = {"hard-samples", "joint"}
MAX_BACKOFFS = 10
MIN_HARDNESS = 0.01  # the controller works in log space: it never reaches 0


def mean_across_processes(values: Tensor) -> Tensor:
    """The mean of ``values`` over processes (identity in one process): every process steers alike."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def average_gradients(params: Any) -> None:
    """Average gradients over processes: every process keeps an identical generator (and critic),
    like DDP does for the learner, without wrapping a module whose loss is not its forward."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def linear(start: float, end: float | None, progress: float) -> float:
    """``start`` moving linearly to ``end`` (None: constant) as ``progress`` goes from 0 to 1."""
    if end is None:
        return start
    return start + (end - start) * min(max(progress, 0.0), 1.0)


def to_unit(images: Tensor) -> Tensor:
    """Generator images in [-1, 1] -> [0, 1], what the augmentation expects."""
    return (images + 1) * 0.5


class Synthesizer:
    """Generator, optimizers and schedules of one synthesis mode.

    Args:
        config: the recipe's ``synthesis`` section.
        gen_config: the recipe's ``generator`` section (learning rates, betas, critic steps).
        generator: the generator, already on the training device.
        total_steps: learner steps of the whole schedule.
    """

    def __init__(self, config: SynthesisConfig, gen_config: GeneratorConfig, generator: Generator,
                 total_steps: int) -> None:
        self.config, self.gen_config, self.generator = config, gen_config, generator
        self.mode = config.mode
        self.total_steps = total_steps
        self.trains_generator = self.mode in TRAINS_GENERATOR
        self.g_opt = self.d_opt = None
        if self.trains_generator:
            betas = tuple(gen_config.betas)
            self.g_opt = torch.optim.Adam(generator.generator_parameters(), lr=gen_config.lr, betas=betas)
            critic = list(generator.critic_parameters())
            if critic:
                self.d_opt = torch.optim.Adam(critic, lr=gen_config.critic_lr, betas=betas)
            generator.train()
        else:
            generator.requires_grad_(False)
            generator.eval()
        self.lambda_scale = 1.0
        self.hardness = max(config.hardness, MIN_HARDNESS)  # the controller's output (hardness_control: target)
        self.balance: float | None = None  # lambda_hard_mode balanced: |realism grad| / |hard grad|, measured
        self.backoffs = 0
        self.failure: str | None = None
        self.failure_step: int | None = None  # the (1-based) step of the back-off that made ``failure``
        # The first step whose samples held a NaN or an infinity, flagged on the device (no sync): the
        # learner's loss goes non-finite at the same step, and the message must blame the generator.
        self._bad_images = FirstStep(next(generator.parameters()).device)
        self._pending = False  # synthesize() prepared a generator update
        self._fake: Tensor | None = None
        self._views: Tensor | None = None
        self._groups: Tensor | None = None
        self.last: dict[str, Any] = {}
        self.times = {"synthesize": 0.0, "critic": 0.0, "generator": 0.0}

    def autocast(self, precision: str | None = None) -> Any:
        """bf16 autocast around the generator's and critic's forward passes (``generator_precision: bf16``),
        or around another pass at ``precision``."""
        device = next(self.generator.parameters()).device
        enabled = (precision or self.config.generator_precision) == "bf16"
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)

    # -- schedules ------------------------------------------------------------------------------------

    def active(self, step: int) -> bool:
        """Whether synthetic views enter the learner's batch at ``step`` (after the warm-up)."""
        return self.mode != "none" and step >= self.config.warmup_steps

    def schedule(self, step: int) -> dict[str, float]:
        """lambda_hard (after back-offs), hardness (scheduled, or the controller's), the partner's momentum
        and, under control, the target pair cosine, at ``step``."""
        c = self.config
        span = max(1, self.total_steps - c.warmup_steps)
        progress = (step - c.warmup_steps) / span
        out = {
            "lambda_hard": linear(c.lambda_hard, c.lambda_hard_final, progress) * self.lambda_scale,
            "hardness": min(linear(c.hardness, c.hardness_final, progress), c.hardness_cap),
            "partner_momentum": linear(c.partner_momentum, c.partner_momentum_final, progress),
        }
        if c.hardness_control == "target":
            out["hardness"] = self.hardness
            out["pair_target"] = linear(c.pair_target, c.pair_target_final, progress)
        return out

    def begin(self) -> None:
        """Called once when a run's learner training starts (not on resume): with ``partner_reset``, the
        partner becomes a copy of the generator, so pairs start easy and drift apart from there."""
        if self.config.partner_reset and self.mode in USES_PAIRS:
            self.generator.update_partner(0.0)

    def observing(self, step: int) -> bool:
        """Whether ``step`` is a measurement step of the monitor and the controller (a fixed cadence)."""
        return self.mode in USES_PAIRS and self.active(step) and step % self.config.control_every == 0

    @torch.no_grad()
    def observe(self, step: int, first: Tensor, second: Tensor, embed: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """Measure this step's pairs in the learner's space and act on it.

        ``pair_cosine_step``: the mean cosine of the two members of each pair; ``random_cosine``: the mean
        cosine of unrelated samples (each first member against the next one's), the level of "nothing in
        common", which for generated images can be high (a learner may map them all close together);
        ``pair_similarity``: the pair cosine relative to that level, ``(pair - random) / (1 - random)``: 1 for
        identical members, 0 for members as different as unrelated samples. Under ``hardness_control:
        target`` the hardness moves by ``exp(gain * (similarity - target) / 0.1)`` (pairs more similar than
        the target get harder), within [0.01, hardness_cap]; under ``monitor: steer`` a pair cosine below
        ``min_pair_similarity`` backs lambda_hard off.

        Args:
            first, second: the pair members in [-1, 1].
            embed: images in [0, 1] -> the learner's embedding (projector output).
        """
        c = self.config
        a, b = embed(to_unit(first.detach().float())), embed(to_unit(second.detach().float()))
        pair = torch.nn.functional.cosine_similarity(a, b, dim=1).mean()
        unrelated = torch.nn.functional.cosine_similarity(a, a.roll(1, dims=0), dim=1).mean()
        pair, unrelated = mean_across_processes(torch.stack([pair, unrelated])).tolist()
        similarity = (pair - unrelated) / max(1.0 - unrelated, 1e-3)
        measured = {"pair_cosine_step": pair, "random_cosine": unrelated, "pair_similarity": similarity,
                    "hardness_used": self.schedule(step)["hardness"]}
        if c.hardness_control == "target":
            target = self.schedule(step)["pair_target"]
            self.hardness = min(max(self.hardness * math.exp(c.control_gain * (similarity - target) / 0.1),
                                    MIN_HARDNESS), c.hardness_cap)
            measured["pair_target"] = target
        if c.monitor == "steer" and pair < c.min_pair_similarity:
            self.back_off(step, f"pair cosine {pair:.3g}")
        self.last.update(measured)
        return measured

    # -- step 6: synthetic views ----------------------------------------------------------------------

    def synthesize(self, step: int, n_real: int, group_base: int, augment: Callable[..., Tensor],
                   rng: torch.Generator, embed: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor] | None:
        """Synthetic views for the learner (detached) and their group ids, or None during warm-up.

        Args:
            n_real: real images in this process's batch; ``round(ratio * n_real)`` latents are drawn.
            group_base: first group id of this process's synthetic groups (unique across processes).
            augment: ``augment(images_in_0_1, n_views, rng) -> (n_views * B, C, H, W)``.
            embed: the learner's embedding of images in [0, 1], for :meth:`observe` on measurement steps.
        """
        start = time.perf_counter()
        g, m = self.generator, max(1, round(self.config.ratio * n_real))
        active = self.active(step)
        self._pending = self.trains_generator and step % self.config.generator_every == 0
        # The generator's step sees its samples through the critic and the realism term (a GAN), or, for a
        # realism term on real images alone (diffusion), only through the hard term: then no graph (and,
        # before the synthetic views enter, no samples) is needed for it.
        uses_samples = g.realism_needs_samples or self.d_opt is not None
        needs_graph = self._pending and (uses_samples or (self.mode in HARD_TERM and active))
        if not active and not (self._pending and uses_samples):
            self._fake = self._views = self._groups = None
            self.times["synthesize"] += time.perf_counter() - start
            return None
        z = g.sample_latents(m, rng)
        with torch.set_grad_enabled(needs_graph), self.autocast():
            if self.mode in USES_PAIRS:
                first, second = g.pair(z, self.schedule(step)["hardness"], generator=rng)
                k = self.config.pair_views
                views = torch.cat([augment(to_unit(first), k, rng), augment(to_unit(second), k, rng)])
                finite = torch.isfinite(first.detach()).all() & torch.isfinite(second.detach()).all()
                per_group = 2 * k
                if embed is not None and self.observing(step):
                    self.observe(step, first, second, embed)
            else:
                first = g(z)
                views = augment(to_unit(first), 2, rng)
                finite = torch.isfinite(first.detach()).all()
                per_group = 2
        self._bad_images.flag(~finite, step + 1)
        groups = (torch.arange(m, device=views.device) + group_base).repeat(per_group)
        self._fake, self._views, self._groups = (first, views, groups) if self._pending else (None, None, None)
        self.times["synthesize"] += time.perf_counter() - start
        return (views.detach(), groups) if active else None

    # -- step 9: critic and generator ----------------------------------------------------------

    def update_generator(self, step: int, real: Tensor, frozen_learner_loss: Callable[[Tensor, Tensor], Tensor],
                         real_views: tuple[Tensor, Tensor] | None = None) -> None:
        """Critic step, then generator step, on the samples of :meth:`synthesize` (if it kept them).

        Args:
            real: (B, C, H, W) real images in [-1, 1].
            frozen_learner_loss: the learner's loss with its parameters and statistics frozen.
            real_views: the learner's real views of this step and their group ids: with
                ``hard_real_negatives`` the hard term is the learner's loss on them and the synthetic
                views together, so real images are negatives of the synthetic ones.
        """
        if not self._pending:
            return
        fake, views, groups = self._fake, self._views, self._groups
        self._pending, self._fake, self._views, self._groups = False, None, None, None
        g, gc = self.generator, self.gen_config
        start = time.perf_counter()
        critic_loss = torch.zeros((), device=real.device)
        # The critic every `critic_every` generator updates (1: every one).
        critic_now = (step // self.config.generator_every) % self.config.critic_every == 0
        if self.d_opt is not None and critic_now:
            for _ in range(gc.critic_steps):
                with self.autocast():
                    critic_loss = scalar_loss(g.critic_loss(real, fake.detach().float()), g, "critic_loss")
                self.d_opt.zero_grad(set_to_none=True)
                critic_loss.backward()
                average_gradients(g.critic_parameters())
                self.d_opt.step()
        self.times["critic"] += time.perf_counter() - start

        start = time.perf_counter()
        weights = self.schedule(step)
        hard_active = self.mode in HARD_TERM and self.active(step)
        with self.autocast():
            # With the hard term on, a realism term without a gradient (a constant) is allowed: the hard
            # term alone then trains the generator.
            realism = scalar_loss(g.realism_loss(None if fake is None else fake.float(), real), g, "realism_loss",
                                  needs_grad=not hard_active)
        hard = torch.zeros((), device=real.device)
        if hard_active:
            views = views.float()  # a bf16 generator hands bf16 views; the pass's own precision applies
            if self.config.hard_real_negatives and real_views is not None:
                views = torch.cat([views, real_views[0].detach().to(views.dtype)])
                groups = torch.cat([groups, real_views[1]])
            with self.autocast(self.config.hard_term_precision):
                hard = frozen_learner_loss(views, groups).float()
        weighted_realism = self.config.lambda_real * realism
        if hard_active and (step % self.config.control_every == 0 or
                            (self.config.lambda_hard_mode == "balanced" and self.balance is None)):
            self._measure_gradients(weighted_realism, hard, weights["lambda_hard"])
        hard_weight = weights["lambda_hard"] * self.balance_factor()
        loss = weighted_realism - hard_weight * hard
        # No samples (a realism term on real images during warm-up): no spread to watch, logged as NaN.
        spread = torch.full((), float("nan"), device=real.device) if fake is None else fake.detach().float().std(dim=0).mean()
        # One host sync per generator update: the stability monitor must decide before the step.
        finite, collapsed = bool(torch.isfinite(loss)), bool(spread < self.config.min_sample_std)
        if finite:
            self.g_opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(g.generator_parameters())
            self.g_opt.step()
        if self.d_opt is not None:
            self.d_opt.zero_grad(set_to_none=True)
        self.times["generator"] += time.perf_counter() - start
        # Kept as tensors: turned into numbers only when a metrics row is written.
        self.last.update({"critic_loss": critic_loss.detach(), "generator_loss": loss.detach(),
                          "hard_loss": hard.detach(), "sample_std": spread, "hard_weight": hard_weight})
        if not finite:
            self.back_off(step, f"generator loss {float(loss.detach()):.4g}")
        elif collapsed and self.mode in HARD_TERM:
            self.back_off(step, f"samples collapsed (pixel std {float(spread):.3g})")

    def _measure_gradients(self, realism: Tensor, hard: Tensor, lambda_hard: float) -> None:
        """The norms of the realism term's and the hard term's gradients on the generator, logged as
        ``grad_ratio`` = |hard weight * hard grad| / |realism grad|; under ``lambda_hard_mode: balanced``
        they set the hard weight so that this ratio is ``lambda_hard``. Two extra backward passes, once
        every ``control_every`` steps."""
        params = [p for p in self.generator.generator_parameters() if p.requires_grad]

        def norm(term: Tensor) -> Tensor:
            if not term.requires_grad:
                return torch.zeros((), device=term.device)
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            return torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None) + 0.0)

        real_norm, hard_norm = mean_across_processes(torch.stack([norm(realism), norm(hard)])).tolist()
        if (self.config.lambda_hard_mode == "balanced" and hard_norm > 0 and real_norm > 0
                and math.isfinite(real_norm / hard_norm)):
            self.balance = real_norm / hard_norm
        weight = lambda_hard * self.balance_factor()
        self.last.update({"realism_grad": real_norm, "hard_grad": hard_norm,
                          "grad_ratio": weight * hard_norm / real_norm if real_norm > 0 else float("nan")})

    def balance_factor(self) -> float:
        """What multiplies lambda_hard in the generator's loss: 1 (``weight``), or the measured ratio of the
        gradient norms (``balanced``; 1 until first measured)."""
        if self.config.lambda_hard_mode != "balanced" or self.balance is None:
            return 1.0
        return self.balance

    def failed(self, reduce: Reduce | None = None) -> tuple[str, int] | None:
        """Why synthesis stopped the run and at which step, or None: too many back-offs of lambda_hard, or
        samples that became non-finite; the earliest of them over all processes.

        Every process calls it at the same step and they agree (one ``reduce(tensor, "max")`` and one host
        sync): back-offs are decided on each process's own batch, and a process that stopped alone would
        leave the others waiting.
        """
        device = self._bad_images.mark.device
        backed_off, bad_images = earliest([mark_of(self.failure_step, device), self._bad_images.mark], reduce)
        if backed_off is not None and (bad_images is None or backed_off <= bad_images):
            if self.failure is not None and self.failure_step == backed_off:
                return self.failure, backed_off
            return (f"synthesis diverged at step {backed_off} on another process (lambda_hard backed off too often "
                    "there)", backed_off)
        if bad_images is None:
            return None
        hint = ("Try a lower generator.lr or generator.critic_lr" if self.trains_generator else
                "The generator is frozen in this mode: check generator.pretrained with synthcl generate")
        return f"the generator's samples became non-finite at step {bad_images}. {hint}", bad_images

    def back_off(self, step: int, reason: str) -> None:
        """Halve (by ``backoff``) lambda_hard; record a failure after too many back-offs."""
        self.lambda_scale *= self.config.backoff
        self.backoffs += 1
        self.last_backoff = f"step {step + 1}: {reason}; lambda_hard x{self.lambda_scale:.3g}"
        if self.backoffs > MAX_BACKOFFS and self.failure is None:  # the first time is the one to report
            self.failure = (f"synthesis diverged at step {step + 1} ({reason}) after {MAX_BACKOFFS} back-offs of "
                            "lambda_hard")
            self.failure_step = step + 1

    # -- step 9, last: the partner --------------------------------------------------------------------------

    def update_partner(self, step: int) -> None:
        if self.trains_generator and step % self.config.generator_every == 0:
            self.generator.update_partner(self.schedule(step)["partner_momentum"])

    # -- observation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def measure_pairs(self, step: int, features: Callable[[Tensor], Tensor], n: int = 32, seed: int = 0) -> dict[str, float]:
        """SSIM and the learner's feature cosine between the two members of fixed-latent pairs."""
        from synthcl.synthesis.similarity import ssim

        g = self.generator
        was_training = g.training
        g.eval()
        z = g.sample_latents(n, torch.Generator(device=next(g.parameters()).device).manual_seed(seed))
        a, b = g.pair(z, self.schedule(step)["hardness"], generator=torch.Generator(device=z.device).manual_seed(seed + 1))
        g.train(was_training)
        a, b = a.float(), b.float()  # a generator may sample in another precision; the learner takes fp32
        cosine = torch.nn.functional.cosine_similarity(features(to_unit(a)), features(to_unit(b)), dim=1).mean()
        # Observation only: steering happens in observe(), at its own cadence, never on a logging step.
        return {"pair_ssim": float(ssim(a, b).mean()), "pair_cosine": float(cosine)}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"lambda_scale": self.lambda_scale, "backoffs": self.backoffs,
                                 "hardness": self.hardness, "balance": self.balance}
        if self.g_opt is not None:
            state["generator_optimizer"] = self.g_opt.state_dict()
        if self.d_opt is not None:
            state["critic_optimizer"] = self.d_opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lambda_scale, self.backoffs = float(state["lambda_scale"]), int(state["backoffs"])
        # Checkpoints written before the controller existed hold neither: the values a new run starts from.
        self.hardness = float(state.get("hardness", self.hardness))
        self.balance = None if state.get("balance") is None else float(state["balance"])
        if self.g_opt is not None:
            self.g_opt.load_state_dict(state["generator_optimizer"])
        if self.d_opt is not None:
            self.d_opt.load_state_dict(state["critic_optimizer"])
