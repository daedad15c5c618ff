"""Generator pretraining (`stage: generator`): the generator and its critic on the learner's real data.

The same run-directory rules as the learner's loop: resolved recipe, metrics, atomic checkpoints, exact
resume, NaN stop; plus sample grids in ``samples/`` and the final generator in ``generator/``
(``save_pretrained`` format, loadable with ``Generator.from_pretrained``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

import synthcl
from synthcl.config import Recipe, dump_recipe, schedule_steps
from synthcl.data import ImageSource
from synthcl.errors import CheckpointError, ConfigError, DataError, RegistryError, TrainingDiverged
from synthcl.interfaces import Generator
from synthcl.io import atomic_write_json, atomic_write_text
from synthcl.progress import ProgressBar
from synthcl.registry import GENERATORS
from synthcl.training.checkpoint import LAST, load_checkpoint, save_checkpoint
from synthcl.training.loop import (
    RECIPE_FILE,
    STATUS_FILE,
    MetricsLog,
    RunInterrupted,
    StopRequest,
    load_train_source,
    make_accelerator,
    prepare_run_dir,
    resumable_checkpoint,
    step_seed,
)
from synthcl.viz import save_sample_grid

logger = logging.getLogger(__name__)

PRETRAIN_DIR = "generator-pretrain"
GENERATOR_COLUMNS = ["step", "epoch", "critic_loss", "generator_loss", "images_per_s", "elapsed_s"]
EXPORT = "generator"


def generator_folder(path: str | Path) -> Path:
    """The ``save_pretrained`` folder of a generator run directory, or ``path`` itself."""
    path = Path(path)
    return path / EXPORT if (path / EXPORT / "config.json").is_file() else path


def accepted_options(factory: Any) -> set[str] | None:
    """Keyword options a generator's constructor takes (None: it takes any, ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def portable_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without those that belong to another registered generator and not to ``name``.

    A recipe written for one generator keeps working when ``generator.name`` switches to another (its
    GAN-only ``diffaugment`` does not stop a diffusion run): such options are dropped with a warning that
    names them. An option no registered generator takes is kept, so the constructor's error reports the
    typo.
    """
    try:
        accepted = accepted_options(GENERATORS.get(name))
    except RegistryError:  # an unknown name: left to the caller's lookup, which says so in one line
        return dict(options)
    foreign = [k for k in options if accepted is not None and k not in accepted]
    owners: dict[str, list[str]] = {}
    for other in GENERATORS.names() if foreign else []:
        if other == name:
            continue
        try:
            theirs = accepted_options(GENERATORS.get(other))
        except Exception:  # a broken third-party entry point does not concern this run
            continue
        for key in foreign:
            if theirs is not None and key in theirs:
                owners.setdefault(key, []).append(other)
    if owners:
        logger.warning("generator.options: %s %s for another generator (%s), not '%s'; ignored",
                       ", ".join(owners), "is" if len(owners) == 1 else "are",
                       ", ".join(sorted({o for names in owners.values() for o in names})), name)
    return {k: v for k, v in options.items() if k not in owners}


def build_generator(recipe: Recipe, source: ImageSource) -> Generator:
    """The recipe's generator for images of ``source``'s size and channels (pretrained if asked).

    Raises:
        ConfigError: on options the generator does not accept.
        CheckpointError: if ``generator.pretrained`` cannot be loaded.
        DataError: if a pretrained generator makes images of another size or channel count.
    """
    g = recipe.generator
    options = portable_options(g.name, g.options) if g.name is not None else dict(g.options)
    if g.pretrained is not None:
        # generator.options override the saved options (e.g. a diffusion model's sampling steps).
        generator = Generator.from_pretrained(generator_folder(g.pretrained), **options)
        if g.name is not None and generator.registry_name() != g.name:
            raise CheckpointError(
                f"generator.pretrained holds a '{generator.registry_name()}' generator but generator.name is '{g.name}'"
            )
    else:
        factory = GENERATORS.get(g.name)
        try:
            generator = factory(image_size=source.image_size, channels=source.channels, **options)
        except TypeError as err:
            raise ConfigError(f"generator.options: {err}") from None
    if not isinstance(generator, Generator):
        raise ConfigError(f"generator '{g.name}' does not subclass synthcl.Generator")
    made = (generator.image_size, generator.channels)
    if made != (source.image_size, source.channels):
        raise DataError(
            f"the generator makes {made[0]}-px {made[1]}-channel images but the data has "
            f"{source.image_size}-px {source.channels}-channel images; set data.image_size / data.channels"
        )
    return generator


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) -> float in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def train_generator(recipe: Recipe, run_dir: Path, *, resume: bool, overwrite: bool, quiet: bool) -> Path:
    """Pretrain the recipe's generator on the (fraction of the) training images; return the run dir.

    Raises:
        SynthclError: on bad input, divergence or interruption, as :func:`synthcl.training.train`.
    """
    t, g = recipe.train, recipe.generator
    if t.precision == "fp16":
        raise ConfigError("train.precision fp16 is not supported for generator pretraining; use bf16 or no")
    accelerator = make_accelerator(cpu=t.cpu, mixed_precision=t.precision)
    if accelerator.num_processes > 1:
        raise ConfigError("generator pretraining runs in one process; launch it without a distributed launcher")
    recipe = prepare_run_dir(run_dir, recipe, resume=resume, overwrite=overwrite)
    device = accelerator.device

    # 1. Data, generator and optimizers.
    source = load_train_source(recipe)
    steps_per_epoch = source.batches_per_epoch(t.batch_size)
    if steps_per_epoch == 0:
        raise DataError(f"the training set has {len(source)} images, fewer than train.batch_size {t.batch_size}")
    total_steps = schedule_steps(t, steps_per_epoch)
    run_steps = min(total_steps, t.max_steps) if t.max_steps else total_steps
    torch.manual_seed(t.seed)
    generator = build_generator(recipe, source).to(device)
    g_opt = torch.optim.Adam(generator.generator_parameters(), lr=g.lr, betas=tuple(g.betas))
    critic_params = list(generator.critic_parameters())
    d_opt = torch.optim.Adam(critic_params, lr=g.critic_lr, betas=tuple(g.betas)) if critic_params else None

    # 2. Resume.
    start_step = 0
    checkpoint = run_dir / "checkpoints" / LAST
    if resume and (found := resumable_checkpoint(run_dir)) is not None:
        state, meta = load_checkpoint(found, generator)
        g_opt.load_state_dict(state["generator_optimizer"])
        if d_opt is not None:
            d_opt.load_state_dict(state["critic_optimizer"])
        start_step = int(meta["step"])

    atomic_write_text(run_dir / RECIPE_FILE, dump_recipe(recipe))
    info: dict[str, Any] = {
        "stage": "generator", "generator": generator.registry_name(), "image_size": source.image_size,
        "channels": source.channels, "dataset": recipe.data.dataset, "processes": 1,
        "synthcl_version": synthcl.__version__,
    }

    def write_status(status: str, step: int, **extra: Any) -> None:
        atomic_write_json(run_dir / STATUS_FILE, {"status": status, "step": step, "total_steps": run_steps, **info, **extra})

    def checkpoint_now(step: int) -> None:
        state = {"generator_optimizer": g_opt.state_dict(), "step": step}
        if d_opt is not None:
            state["critic_optimizer"] = d_opt.state_dict()
        save_checkpoint(run_dir, generator, state, {"step": step, "epoch": step / steps_per_epoch, **info})

    fixed_latents = generator.sample_latents(g.samples, torch.Generator(device=device).manual_seed(t.seed))

    def write_samples(step: int) -> None:
        generator.eval()
        with torch.no_grad(), accelerator.autocast():
            images = generator(fixed_latents)
        generator.train()
        save_sample_grid(images, run_dir / "samples" / f"step-{step:07d}.png")

    write_status("running", start_step)
    if start_step == 0:
        write_samples(0)
    metrics = MetricsLog(run_dir, start_step, enabled=True, columns=GENERATOR_COLUMNS)
    sums = torch.zeros(2, device=device)
    bad_step = torch.full((), -1, device=device, dtype=torch.long)
    bad_values = torch.zeros(2, device=device)
    interval_start = run_start = time.perf_counter()
    interval_steps, last_good = 0, start_step

    def check_divergence() -> None:
        if int(bad_step) >= 0:
            write_status("diverged", last_good, diverged_at=int(bad_step))
            where = f"{checkpoint} (step {last_good})" if last_good else "none yet"
            raise TrainingDiverged(
                f"critic/generator loss became {float(bad_values[0]):.4g}/{float(bad_values[1]):.4g} at step "
                f"{int(bad_step)}; stopped. Last good checkpoint: {where}. Try lower generator.lr"
            )

    generator.train()
    batches = None
    with ProgressBar(run_steps, f"pretrain {recipe.name}", unit="img", rate_per_step=t.batch_size,
                     enabled=not quiet, completed=start_step) as bar, StopRequest() as stop:
        try:
            for step in range(start_step, run_steps):
                epoch, index = divmod(step, steps_per_epoch)
                if batches is None or index == 0:
                    batches = source.batches(t.batch_size, device=device, seed=t.seed, epoch=epoch, start_batch=index)
                real = to_signed(next(batches)[0])
                # Every random draw of this step (latents, DiffAugment, ...) comes from a seed of the step.
                torch.manual_seed(step_seed(t.seed, step, 0))
                n = real.shape[0]

                # 3. Critic step(s) on real vs. detached fake images.
                critic_loss = torch.zeros((), device=device)
                if d_opt is not None:
                    for _ in range(g.critic_steps):
                        with torch.no_grad(), accelerator.autocast():
                            fake = generator(generator.sample_latents(n))
                        with accelerator.autocast():
                            critic_loss = generator.critic_loss(real, fake.float())
                        d_opt.zero_grad(set_to_none=True)
                        critic_loss.backward()
                        d_opt.step()

                # 4. Generator step: stay realistic (the critic is not updated here). A realism term on real
                #    images alone (diffusion's denoising loss) gets no samples: none are drawn.
                with accelerator.autocast():
                    fake = generator(generator.sample_latents(n)).float() if generator.realism_needs_samples else None
                    generator_loss = generator.realism_loss(fake, real)
                g_opt.zero_grad(set_to_none=True)
                generator_loss.backward()
                g_opt.step()
                if d_opt is not None:
                    d_opt.zero_grad(set_to_none=True)  # the generator step left gradients on the critic

                # 5. Moving-average partner.
                generator.update_partner(g.partner_momentum)

                # 6. Bookkeeping, grids and checkpoints.
                losses = torch.stack([critic_loss.detach().float(), generator_loss.detach().float()])
                newly_bad = (~torch.isfinite(losses).all()) & (bad_step < 0)
                bad_step = torch.where(newly_bad, step + 1, bad_step)
                bad_values = torch.where(newly_bad, losses, bad_values)
                sums += torch.nan_to_num(losses)
                interval_steps += 1
                done = step + 1
                if done % t.log_every == 0 or done == run_steps:
                    check_divergence()
                    now = time.perf_counter()
                    row = {"step": done, "epoch": round(done / steps_per_epoch, 4),
                           "critic_loss": float(sums[0]) / interval_steps,
                           "generator_loss": float(sums[1]) / interval_steps,
                           "images_per_s": interval_steps * t.batch_size / (now - interval_start),
                           "elapsed_s": now - run_start}
                    metrics.write(row)
                    bar.update(done, d_loss=row["critic_loss"], g_loss=row["generator_loss"])
                    sums.zero_()
                    interval_start, interval_steps = now, 0
                if done % g.sample_every == 0 or done == run_steps:
                    check_divergence()
                    write_samples(done)
                if done % t.checkpoint_every == 0 or done == run_steps:
                    check_divergence()
                    checkpoint_now(done)
                    last_good = done
                    write_status("running", done)
                if stop.requested:
                    check_divergence()
                    checkpoint_now(done)
                    write_status("interrupted", done)
                    raise RunInterrupted(
                        f"interrupted after step {done}; continue with: synthcl train ... --out {run_dir} --resume"
                    )
        finally:
            metrics.close()

    # 7. Export the generator (with its partner) in save_pretrained format.
    generator.save_pretrained(run_dir / EXPORT)
    write_status("completed", run_steps)
    return run_dir


def pretrain_recipe(recipe: Recipe) -> Recipe:
    """The generator run that warms a learner recipe's generator up (`generator.pretrain_steps`).

    The learner recipe's data (fraction and its seed included), generator and `train.seed`, trained for
    `generator.pretrain_steps` steps of `generator.pretrain_batch_size` real images at
    `generator.pretrain_lr`.
    """
    g, t = recipe.generator, recipe.train
    steps = max(1, g.pretrain_steps)
    return dataclasses.replace(
        recipe, name=f"{recipe.name}-generator", stage="generator",
        generator=dataclasses.replace(g, lr=g.lr if g.pretrain_lr is None else g.pretrain_lr),
        train=dataclasses.replace(t, steps=steps, epochs=None, max_steps=None, batch_size=g.pretrain_batch_size,
                                  compile=False, precision="no" if t.precision == "fp16" else t.precision,
                                  checkpoint_every=min(t.checkpoint_every, steps)),
    )


def pretrain_in_run(recipe: Recipe, run_dir: Path, *, quiet: bool) -> Recipe:
    """Warm the recipe's generator up inside a learner run; return the recipe its synthesizer is built from.

    The warm-up is the generator run of :func:`pretrain_recipe` in ``run_dir/generator-pretrain``:
    trained there, resumed where it stopped, or reused once complete. The returned recipe names it as
    `generator.pretrained`; the run's own recipe keeps saying `pretrain_steps`, so resuming compares like
    with like.

    Raises:
        RunInterrupted: on Ctrl-C, naming the learner run to resume.
    """
    folder = run_dir / PRETRAIN_DIR
    if _read_status(folder / STATUS_FILE) != "completed" or not (folder / EXPORT / "config.json").is_file():
        try:
            train_generator(pretrain_recipe(recipe), folder, resume=(folder / RECIPE_FILE).is_file(),
                            overwrite=False, quiet=quiet)
        except RunInterrupted:
            atomic_write_json(run_dir / STATUS_FILE, {"status": "interrupted", "step": 0})
            raise RunInterrupted(
                f"interrupted while warming the generator up; continue with: synthcl train ... --out {run_dir} --resume"
            ) from None
    return dataclasses.replace(recipe, generator=dataclasses.replace(recipe.generator, pretrained=str(folder)))


def _read_status(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text()).get("status"))
    except (OSError, ValueError, AttributeError):
        return None
