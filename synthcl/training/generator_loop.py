"""Generator pretraining (`stage: generator`): the generator and its critic on the learner's real data.

The same run-directory rules as the learner's loop: resolved recipe, metrics, atomic checkpoints, exact
resume, NaN stop; plus sample grids in ``samples/`` and the final generator in ``generator/``
(``save_pretrained`` format, loadable with ``Generator.from_pretrained``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from synthcl._version import __version__
from synthcl.config import Recipe, dump_recipe, schedule_steps
from synthcl.errors import ConfigError, DataError, TrainingDiverged, describe
from synthcl.interfaces import Generator
from synthcl.io import atomic_write_text, read_json
from synthcl.rundir import (
    RECIPE_FILE,
    REPLACED,
    STATUS_FILE,
    clear_old_run,
    drop_replaced_run,
    lock_released_on_error,
    prepare_run_dir,
    release_lock,
    resumable_checkpoint,
    train_command,
    write_status,
)
from synthcl.training.build import EXPORT, build_generator, load_train_source, make_accelerator
from synthcl.training.checkpoint import load_checkpoint, save_checkpoint, state_of
from synthcl.training.session import RunInterrupted, RunSession, StopRequest, refuse_resume_past_the_end
from synthcl.training.step import GeneratorStep
from synthcl.viz import save_sample_grid

PRETRAIN_DIR = "generator-pretrain"
GENERATOR_COLUMNS = ["step", "epoch", "critic_loss", "generator_loss", "images_per_s", "elapsed_s"]


def train_generator(recipe: Recipe, run_dir: Path, *, resume: bool, overwrite: bool, quiet: bool,
                    stop: StopRequest | None = None) -> Path:
    """Pretrain the recipe's generator on the (fraction of the) training images; return the run dir. ``stop``:
    the stop request of a learner run that warms its generator up with this (see :class:`RunSession`).

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

    # 1. Data, generator and optimizers; only then the old run is set aside. 2. Resume.
    source, generator, g_opt, d_opt, steps_per_epoch, run_steps = _build_generator_run(recipe, device)
    if overwrite:
        clear_old_run(run_dir)
    start_step = _resume_generator(run_dir, generator, g_opt, d_opt, run_steps, t.max_steps) if resume else 0

    info: dict[str, Any] = {
        "stage": "generator", "generator": generator.registry_name(), "image_size": source.image_size,
        "channels": source.channels, "dataset": recipe.data.dataset, "processes": 1,
        "synthcl_version": __version__,
    }

    def save(step: int) -> None:
        state = {"generator_optimizer": g_opt.state_dict(), "step": step}
        if d_opt is not None:
            state["critic_optimizer"] = d_opt.state_dict()
        save_checkpoint(run_dir, generator, state, {"step": step, "epoch": step / steps_per_epoch, **info})
        drop_replaced_run(run_dir)  # --overwrite: the old run goes once this one can be resumed

    fixed_latents = generator.sample_latents(g.samples, torch.Generator(device=device).manual_seed(t.seed))

    def write_samples(step: int) -> None:
        generator.eval()
        with torch.no_grad(), accelerator.autocast():
            images = generator(fixed_latents)
        generator.train()
        save_sample_grid(images, run_dir / "samples" / f"step-{step:07d}.png")

    session = RunSession(
        run_dir, info, run_steps=run_steps, start_step=start_step, steps_per_epoch=steps_per_epoch,
        log_every=t.log_every, checkpoint_every=t.checkpoint_every, columns=GENERATOR_COLUMNS,
        loss_names=["critic_loss", "generator_loss"], save=save,
        divergence=("critic/generator loss", "Try lower generator.lr"), batch_size=t.batch_size,
        title=f"pretrain {recipe.name}", quiet=quiet, device=device, stop=stop,
    )  # checks metrics.csv: a refused resume leaves recipe.yaml as it was
    atomic_write_text(run_dir / RECIPE_FILE, dump_recipe(recipe))
    generator_step = GeneratorStep(generator, g_opt, d_opt, critic_steps=g.critic_steps,
                                   partner_momentum=g.partner_momentum, seed=t.seed, autocast=accelerator.autocast)
    session.write_status("running", start_step)
    generator.train()
    batches = None
    has_critic = bool(list(generator.critic_parameters()))  # a diffusion model has none: no d_loss of 0 shown

    def progress(row: dict[str, float]) -> dict[str, float]:
        return ({"d_loss": row["critic_loss"]} if has_critic else {}) | {"g_loss": row["generator_loss"]}

    with session:
        if start_step == 0:
            write_samples(0)
        for step in range(start_step, run_steps):
            epoch, index = divmod(step, steps_per_epoch)
            if batches is None or index == 0:
                batches = source.batches(t.batch_size, device=device, seed=t.seed, epoch=epoch, start_batch=index)
            # 3.-5. Critic step(s) on real vs. detached samples, the realism step (critic not updated), the
            #       moving-average partner (synthcl.training.step).
            losses = generator_step(step, next(batches)[0])

            # 6. Bookkeeping (synthcl.training.session), sample grids.
            session.record(step, losses)
            done = step + 1
            if done % g.sample_every == 0 or done == run_steps:
                session.check_divergence()
                write_samples(done)
            session.end_step(done, progress=progress)

        # 7. Export the generator (with its partner) in save_pretrained format.
        generator.save_pretrained(run_dir / EXPORT)
        session.write_status("completed", run_steps)
    release_lock(run_dir)
    return run_dir


def _build_generator_run(recipe: Recipe, device: torch.device) -> tuple[Any, Generator, Any, Any, int, int]:
    """The training images, the generator (seeded), its Adam and its critic's, steps per epoch and steps to run."""
    t, g = recipe.train, recipe.generator
    source = load_train_source(recipe)
    steps_per_epoch = source.batches_per_epoch(t.batch_size)
    if steps_per_epoch == 0:
        raise DataError(f"the training set has {len(source)} images, fewer than train.batch_size {t.batch_size}")
    total_steps = schedule_steps(t, steps_per_epoch)
    torch.manual_seed(t.seed)
    generator = build_generator(recipe, source, device)
    g_opt = torch.optim.Adam(generator.generator_parameters(), lr=g.lr, betas=tuple(g.betas))
    critic_params = list(generator.critic_parameters())
    d_opt = torch.optim.Adam(critic_params, lr=g.critic_lr, betas=tuple(g.betas)) if critic_params else None
    return (source, generator, g_opt, d_opt, steps_per_epoch,
            min(total_steps, t.max_steps) if t.max_steps else total_steps)


def _resume_generator(run_dir: Path, generator: Generator, g_opt: Any, d_opt: Any, run_steps: int,
                      max_steps: int | None) -> int:
    """Load checkpoints/last (if any) into the generator and its optimizers; the step to continue from.
    Refuses (before anything is written) a ``train.max_steps`` below the checkpoint's step."""
    found = resumable_checkpoint(run_dir)
    if found is None:
        return 0
    state, meta = load_checkpoint(found, generator)
    refuse_resume_past_the_end(meta["step"], run_steps, max_steps, found)
    with state_of(found):
        g_opt.load_state_dict(state["generator_optimizer"])
        if d_opt is not None:
            d_opt.load_state_dict(state["critic_optimizer"])
    return meta["step"]


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


def pretrain_in_run(recipe: Recipe, run_dir: Path, *, quiet: bool, stop: StopRequest) -> Recipe:
    """Warm the recipe's generator up inside a learner run; return the recipe its synthesizer is built from.
    ``stop`` is the run's stop request, held from the warm-up's first step to the learner's last: a signal
    that arrives after the warm-up's last step (while it exports the generator) stops the run here.

    The warm-up is the generator run of :func:`pretrain_recipe` in ``run_dir/generator-pretrain``:
    trained there, resumed where it stopped, or reused once complete. The returned recipe names it as
    `generator.pretrained`; the run's own recipe keeps saying `pretrain_steps`, so resuming compares like
    with like.

    Raises:
        RunInterrupted: on Ctrl-C, naming the learner run to resume; or, when the run replaces an earlier one
            (``--overwrite``) that is put back because this one has no checkpoint yet, saying so and to start
            again with ``--overwrite``.
    """
    folder = run_dir / PRETRAIN_DIR
    if _read_status(folder / STATUS_FILE) != "completed" or not (folder / EXPORT / "config.json").is_file():
        try:
            with lock_released_on_error(folder):
                train_generator(pretrain_recipe(recipe), folder, resume=(folder / RECIPE_FILE).is_file(),
                                overwrite=False, quiet=quiet, stop=stop)
                if stop.requested:  # after the warm-up's last step: complete, and reused on --resume (not --overwrite)
                    raise RunInterrupted("interrupted after the warm-up's last step")
        except TrainingDiverged as err:
            kept = _kept_by_overwrite(run_dir)
            if kept is None:
                raise
            # Its last good checkpoint goes with the new run's files: the message must not name it.
            raise TrainingDiverged(f"the generator's warm-up diverged: {err.what}; {kept}"
                                   + (f". {err.advice}" if err.advice else "")) from None
        except RunInterrupted:
            kept = _kept_by_overwrite(run_dir)
            if kept is not None:
                raise RunInterrupted(
                    f"interrupted{stop.by()} while warming the generator up, before the new run's first checkpoint; {kept}; "
                    f"start again with: {train_command(run_dir, '--overwrite')}"
                ) from None
            write_status(run_dir, "interrupted", 0)
            what = f"interrupted{stop.by()} while warming the generator up"
            again = train_command(run_dir, "--resume", recipe=run_dir / RECIPE_FILE)  # written before the warm-up
            raise RunInterrupted(f"{what}; continue with: {again}", what=what) from None
        except (Exception, SystemExit) as err:  # SystemExit: sys.exit() in a --code file
            # The warm-up's own run.json says failed; the run's must not stay "pretraining generator".
            if _kept_by_overwrite(run_dir) is None:
                write_status(run_dir, "failed", 0, error=describe(err))
            raise
    return dataclasses.replace(recipe, generator=dataclasses.replace(recipe.generator, pretrained=str(folder)))


def _kept_by_overwrite(run_dir: Path) -> str | None:
    """What an ``--overwrite`` run that stops before its first learner checkpoint leaves in ``run_dir`` (the
    caller's lock_released_on_error puts the earlier run back and removes this one, its warm-up included, so
    --resume could only fail on another recipe or continue the earlier run); None without ``--overwrite``."""
    aside = run_dir / REPLACED
    if not aside.is_dir():
        return None
    return (f"the previous run in {run_dir} was kept" if any(aside.iterdir())
            else f"the new run's files in {run_dir} were removed")


def _read_status(path: Path) -> str | None:
    try:
        return str(read_json(path).get("status"))
    except (OSError, ValueError, AttributeError):
        return None
