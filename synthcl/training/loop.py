"""The training loop: ``train(recipe) -> run_dir``, written as numbered steps (docs/architecture.md lists them)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import torch

from synthcl._version import __version__
from synthcl.config import Recipe, dump_recipe, load_recipe, recipe_from_dict, schedule_steps, uses_generator
from synthcl.errors import ConfigError, RunDirError
from synthcl.interfaces import ContrastiveLearner
from synthcl.io import atomic_write_text
from synthcl.rundir import (
    RECIPE_FILE,
    auto_resume_plan,
    clear_old_run,
    drop_replaced_run,
    lock_released_on_error,
    prepare_run_dir,
    release_lock,
    resumable_checkpoint,
    write_status,
)
from synthcl.training.build import (
    agreed,
    build_augment,
    build_learner,
    build_synthesizer,
    channel_stats,
    check_batches_fit,
    check_launch_environment,
    compile_learner,
    load_train_source,
    make_accelerator,
    matched_views_per_process,
)
from synthcl.training.checkpoint import export_backbone, load_checkpoint, save_checkpoint, state_of
from synthcl.training.optim import build_optimizer, build_scheduler
from synthcl.training.session import METRIC_COLUMNS, RunSession, StopRequest, refuse_resume_past_the_end
from synthcl.training.step import LearnerStep


def train(
    recipe: Recipe | str | Path,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    overrides: list[str] | tuple[str, ...] = (),
    auto_resume: bool = False,
) -> Path:
    """Train a learner from a recipe and return its run directory.

    Args:
        recipe: a :class:`Recipe`, a recipe file, or the name of a bundled recipe.
        out: the run directory (default ``runs/<recipe name>``).
        resume: continue the run in ``out`` from its last checkpoint; the result equals an
            uninterrupted run.
        overwrite: replace an existing run in ``out``.
        quiet: no progress bar.
        overrides: dotted assignments applied to a recipe loaded from a file or name.
        auto_resume: start the run if ``out`` holds none, resume it if it stopped part-way, leave it as it
            is if it already finished (see :func:`synthcl.rundir.auto_resume_plan`); excludes ``resume``
            and ``overwrite``.

    Raises:
        SynthclError: on bad input (recipe, data, run directory), divergence or interruption; the
            message is one line and every file already written stays intact.
    """
    # 1. Recipe and run directory.
    recipe, run_dir = resolve_run(recipe, out, overrides)
    if auto_resume:
        if resume or overwrite:
            raise RunDirError("--auto-resume excludes --resume and --overwrite")
        plan = auto_resume_plan(run_dir, recipe)
        if plan == "finished":
            if not quiet:
                print(f"{run_dir} holds this recipe's finished run: nothing to train", file=sys.stderr)
            return run_dir
        resume = plan == "resume"
    with lock_released_on_error(run_dir):  # a run that stops on an error leaves the folder free
        if recipe.stage == "generator":
            from synthcl.training.generator_loop import train_generator

            return train_generator(recipe, run_dir, resume=resume, overwrite=overwrite, quiet=quiet)
        return _train_learner(recipe, run_dir, resume=resume, overwrite=overwrite, quiet=quiet)


def resolve_run(recipe: Recipe | str | Path, out: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> tuple[Recipe, Path]:
    """The recipe a :func:`train` call resolves (overrides applied) and the run directory it writes."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        recipe = recipe_from_dict(_override_dict(recipe, overrides))
    return recipe, Path(out) if out is not None else Path("runs") / recipe.name


def _train_learner(recipe: Recipe, run_dir: Path, *, resume: bool, overwrite: bool, quiet: bool) -> Path:
    # 1a. The training set, and whether every batch of the recipe can be drawn from it: a run that cannot
    #     start says so before its folder is created or changed.
    t = recipe.train
    source = load_train_source(recipe)
    steps_per_epoch = check_batches_fit(recipe, source, check_launch_environment(t.cpu))
    # 1b. The generator's warm-up inside the run (generator.pretrain_steps), then the run directory. One stop
    #     request (Ctrl-C, SIGTERM) is held from the warm-up's first step to the learner's last: a signal that
    #     arrives between the two sessions (the warm-up's export, building the learner) is not lost.
    with StopRequest() if needs_in_run_pretraining(recipe) else contextlib.nullcontext() as stop:
        recipe, build_recipe, resume, overwrite = _warm_up_generator(recipe, run_dir, resume, overwrite, quiet, stop)
        return _learn(recipe, build_recipe, run_dir, source, steps_per_epoch, resume=resume, overwrite=overwrite,
                      quiet=quiet, stop=stop)


def _learn(recipe: Recipe, build_recipe: Recipe, run_dir: Path, source: Any, steps_per_epoch: int, *, resume: bool,
           overwrite: bool, quiet: bool, stop: StopRequest | None) -> Path:
    """A learner run after its step 1b: the run directory, the run's objects (2-3), resume (4), the steps and the
    export (5-11)."""
    t = recipe.train
    accelerator = make_accelerator(cpu=t.cpu, mixed_precision=t.precision)
    main = accelerator.is_main_process
    # A refusal on the main process (the folder's checks) ends every process, not only the main one.
    recipe = agreed(accelerator, lambda: prepare_run_dir(run_dir, recipe, resume=resume, overwrite=overwrite)
                    if main else recipe)

    # 2.-3. Data, augmentation, model, optimizer, schedule, synthesizer; only then the old run is set aside.
    run = _build_run(recipe, build_recipe, accelerator, source, steps_per_epoch)
    if main and overwrite:
        clear_old_run(run_dir)
    # 4. Resume: weights, optimizer, schedule and synthesis state from checkpoints/last.
    start_step = _resume(run, run_dir, accelerator, t.max_steps) if resume else 0
    learner, optimizer = accelerator.prepare(run.learner, run.optimizer)
    unwrapped: ContrastiveLearner = accelerator.unwrap_model(learner)
    if t.compile:  # only step 7 goes through the compiled wrapper: saved keys never carry `_orig_mod.`
        learner = compile_learner(learner, accelerator.device)
    info = _run_info(recipe, run, unwrapped, accelerator.num_processes)
    synth, source = run.synth, run.source

    def save(step: int) -> None:
        if main:
            save_checkpoint(run_dir, unwrapped, _training_state(run, optimizer, accelerator, step),
                            {"step": step, "epoch": step / run.steps_per_epoch, **info}, extra=run.extra_modules)
            drop_replaced_run(run_dir)  # --overwrite: the old run goes once this one can be resumed
        accelerator.wait_for_everyone()

    # The session checks metrics.csv on the main process: its refusal, too, ends every process.
    session = agreed(accelerator, lambda: _session(recipe, run, run_dir, info, start_step, save, accelerator, quiet,
                                                   stop))
    if accelerator.num_processes > 1:  # one attempt for all: a failure elsewhere, even before the main process's
        from accelerate.utils import broadcast_object_list  # first run.json of it, is known as this run's

        session.attempt = broadcast_object_list([session.attempt])[0]
    if main:  # after every check of the resumed run's files: a refused resume leaves recipe.yaml as it was
        atomic_write_text(run_dir / RECIPE_FILE, dump_recipe(recipe))
    learner_step = _learner_step(recipe, run, learner, unwrapped, optimizer, accelerator)

    def row(done: int) -> dict[str, float]:
        times, learner_step.times = learner_step.times, dict.fromkeys(learner_step.times, 0.0)
        out = {"lr": run.scheduler.get_last_lr()[0], "t_augment_s": times["augment"], "t_learner_s": times["learner"]}
        return out | (synthesis_row(synth, done, learner_step.features) if synth is not None else {})

    if synth is not None and start_step == 0:
        synth.begin()  # e.g. the partner reset: before the first step, so a resumed run never repeats it
    session.write_status("running", start_step)
    learner.train()
    batches = None
    with session:
        for step in range(start_step, run.run_steps):
            epoch, index = divmod(step, run.steps_per_epoch)
            if batches is None or index == 0:
                batches = source.batches(t.batch_size, device=accelerator.device, seed=t.seed, epoch=epoch,
                                         start_batch=index, rank=accelerator.process_index,
                                         world_size=accelerator.num_processes)
            images, _ = next(batches)

            # 5.-9. Real and synthetic views, the learner update, momentum hooks, then the critic,
            #       generator and partner updates with the learner frozen (synthcl.training.step).
            loss = learner_step(step, images)

            # 10. Bookkeeping without host syncs (divergence is flagged on the device): metrics, grids,
            #     checkpoints, Ctrl-C (synthcl.training.session).
            session.record(step, loss.reshape(1))
            done = step + 1
            if synth is not None and main and (done % recipe.synthesis.sample_every == 0 or done == run.run_steps):
                write_synthesis_grids(synth, run_dir, done)
            session.end_step(done, row, progress=lambda r: {"loss": r["loss"], "lr": r["lr"]})

        # 11. Export the backbone for evaluation (and the generator) and mark the run complete (inside the
        #     session: an export that fails marks the run failed).
        if main:
            export_backbone(run_dir, unwrapped.backbone, {**info, "step": run.run_steps})
            if synth is not None:
                synth.generator.save_pretrained(run_dir / "generator")
        session.write_status("completed", run.run_steps)
    if main:
        release_lock(run_dir)
    accelerator.wait_for_everyone()
    return run_dir


@dataclasses.dataclass
class _Run:
    """What steps 2 and 3 build for a learner run."""

    source: Any
    steps_per_epoch: int
    total_steps: int
    run_steps: int
    mean: list[float]
    std: list[float]
    augment: Any
    synthetic_augment: Any
    learner: ContrastiveLearner
    optimizer: Any
    scheduler: Any
    synth: Any
    extra_modules: dict[str, Any] | None


def _warm_up_generator(recipe: Recipe, run_dir: Path, resume: bool, overwrite: bool, quiet: bool,
                       stop: StopRequest | None) -> tuple[Recipe, Recipe, bool, bool]:
    """Step 1b: with ``generator.pretrain_steps``, generator-only steps before the learner's first, in a generator
    run of its own (``generator-pretrain/``) that a resumed run resumes or reuses. Returns the recipe, the recipe
    the synthesizer is built from (its generator pretrained), and the resume / overwrite flags left to apply."""
    if not needs_in_run_pretraining(recipe):
        return recipe, recipe, resume, overwrite
    from synthcl.training.generator_loop import pretrain_in_run

    recipe = prepare_run_dir(run_dir, recipe, resume=resume, overwrite=overwrite)
    if overwrite:  # the data was loaded and checked (step 1a) before the old run is set aside
        clear_old_run(run_dir)
    if not resume:
        atomic_write_text(run_dir / RECIPE_FILE, dump_recipe(recipe))
    if not resume or resumable_checkpoint(run_dir) is None:  # a resumed warm-up: not the last attempt's status
        write_status(run_dir, "pretraining generator", 0)
    return recipe, pretrain_in_run(recipe, run_dir, quiet=quiet, stop=stop), True, False  # the folder is this run's now


def _build_run(recipe: Recipe, build_recipe: Recipe, accelerator: Any, source: Any, steps_per_epoch: int) -> _Run:
    """Steps 2 and 3: the (fraction of the) training set (``source``, checked by step 1a), device-resident when
    it fits; the augmentations; the learner with the same initial weights on every process; optimizer,
    schedule and synthesizer."""
    t, o, sy, device = recipe.train, recipe.optim, recipe.synthesis, accelerator.device
    total_steps = schedule_steps(t, steps_per_epoch)
    mean, std = channel_stats(source)
    augment = build_augment(recipe.augment, source, mean, std).to(device)
    synthetic_augment = None if sy.augment is None else build_augment(sy.augment, source, mean, std).to(device)
    torch.manual_seed(t.seed)
    learner = build_learner(recipe, source.channels)
    if sy.synthetic_weight != 1.0 and not learner.takes_weights():
        raise ConfigError(f"synthesis.synthetic_weight needs a learner whose loss takes anchor weights; "
                          f"'{recipe.model.learner}' does not (add a `weights` argument to its loss)")
    if t.channels_last:
        learner = learner.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(learner, o)
    scheduler = build_scheduler(optimizer, o, steps_per_epoch, total_steps)
    synth = build_synthesizer(build_recipe, source, device, total_steps)
    return _Run(source, steps_per_epoch, total_steps, min(total_steps, t.max_steps) if t.max_steps else total_steps,
                mean, std, augment, synthetic_augment, learner, optimizer, scheduler, synth,
                {"generator": synth.generator} if synth is not None else None)


def _resume(run: _Run, run_dir: Path, accelerator: Any, max_steps: int | None) -> int:
    """Step 4: load checkpoints/last (if any) into the run's objects; return the step to continue from.
    Refuses (before anything is written) a ``train.max_steps`` below the checkpoint's step."""
    found = resumable_checkpoint(run_dir)
    if found is None:
        return 0
    state, meta = load_checkpoint(found, run.learner, run.extra_modules)
    refuse_resume_past_the_end(meta["step"], run.run_steps, max_steps, found)
    with state_of(found):
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.synth is not None:
            run.synth.load_state_dict(state["synthesis"])
        if accelerator.scaler is not None and "grad_scaler" in state:
            accelerator.scaler.load_state_dict(state["grad_scaler"])
    return meta["step"]


def _training_state(run: _Run, optimizer: Any, accelerator: Any, step: int) -> dict[str, Any]:
    """What a checkpoint's state.pt holds beside the weights (keys unchanged since the first release)."""
    inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    state = {"optimizer": inner.state_dict(), "scheduler": run.scheduler.state_dict(), "step": step}
    if run.synth is not None:
        state["synthesis"] = run.synth.state_dict()
    if accelerator.scaler is not None:  # fp16: the loss scale and its growth tracker
        state["grad_scaler"] = accelerator.scaler.state_dict()
    return state


def _run_info(recipe: Recipe, run: _Run, unwrapped: ContrastiveLearner, world: int) -> dict[str, Any]:
    """How to rebuild the backbone for evaluation, and what the run was (backbone.json, run.json, meta.json)."""
    m = recipe.model
    return {
        "learner": m.learner, "backbone": m.backbone, "in_channels": run.source.channels,
        "image_size": run.source.image_size, "options": {"cifar_stem": m.cifar_stem, "width": m.width, "norm": m.norm},
        "feature_dim": unwrapped.backbone.feature_dim, "normalization": {"mean": run.mean, "std": run.std},
        "dataset": recipe.data.dataset, "synthesis": recipe.synthesis.mode, "processes": world,
        "synthcl_version": __version__,
    }


def _session(recipe: Recipe, run: _Run, run_dir: Path, info: dict[str, Any], start_step: int, save: Any,
             accelerator: Any, quiet: bool, stop: StopRequest | None) -> RunSession:
    t, synth, world = recipe.train, run.synth, accelerator.num_processes
    reduce = (lambda x, op: accelerator.reduce(x, reduction=op)) if world > 1 else None
    return RunSession(
        run_dir, info, run_steps=run.run_steps, start_step=start_step, steps_per_epoch=run.steps_per_epoch,
        log_every=t.log_every, checkpoint_every=t.checkpoint_every,
        columns=METRIC_COLUMNS + (SYNTHESIS_COLUMNS if synth is not None else []), loss_names=["loss"], save=save,
        divergence=("loss", "Try a lower optim.lr or set optim.grad_clip"), batch_size=t.batch_size,
        title=f"train {recipe.name}", quiet=quiet, main=accelerator.is_main_process,
        process=accelerator.process_index, device=accelerator.device,
        reduce=reduce, failure=(lambda: synth.failed(reduce)) if synth is not None else None, stop=stop,
    )


def _learner_step(recipe: Recipe, run: _Run, learner: Any, unwrapped: ContrastiveLearner, optimizer: Any,
                  accelerator: Any) -> LearnerStep:
    t, sy = recipe.train, recipe.synthesis
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    return LearnerStep(
        learner, unwrapped, optimizer, run.scheduler, run.augment, run.synth, seed=t.seed, global_batch=t.batch_size,
        total_steps=run.total_steps, views_per_image=recipe.augment.views, channels_last=t.channels_last,
        grad_clip=recipe.optim.grad_clip, rank=rank, world=world, backward=accelerator.backward,
        clip=accelerator.clip_grad_norm_, synthetic_augment=run.synthetic_augment, synthetic_weight=sy.synthetic_weight,
        extra_real=matched_views(run.source, t, sy.ratio, rank, world, device) if sy.mode == "matched-views" else None,
        extra_ratio=sy.ratio,
    )


SYNTHESIS_COLUMNS = ["critic_loss", "generator_loss", "hard_loss", "lambda_hard", "hard_weight", "grad_ratio",
                     "hardness", "pair_target", "pair_similarity", "pair_cosine_step", "random_cosine", "partner_momentum",
                     "pair_ssim", "pair_cosine", "sample_std", "backoffs", "t_synthesize_s", "t_critic_s",
                     "t_generator_s"]


def matched_views(source: Any, t: Any, ratio: float, rank: int, world: int, device: torch.device) -> Any:
    """The ``matched-views`` control's extra real images of a step: ``round(ratio * batch)`` per process
    (as many as synthetic latents would be), drawn afresh at every step from a seed of (train.seed, step),
    so a resumed run draws the same ones."""
    from synthcl.training.session import step_seed

    per_process = matched_views_per_process(ratio, t.batch_size, world)  # check_batches_fit: fits the training set

    def draw(step: int) -> torch.Tensor:
        batches = source.batches(per_process * world, device=device, seed=step_seed(t.seed + 2, step, 0), epoch=0,
                                 rank=rank, world_size=world)
        return next(batches)[0]

    return draw


def synthesis_row(synth: Any, step: int, features: Any) -> dict[str, float]:
    """The synthesis columns of a metrics row: losses, schedules, pair similarity, phase times."""
    row = {k: float("nan") for k in SYNTHESIS_COLUMNS}
    row.update({k: float(v) for k, v in synth.last.items()})
    row.update(synth.schedule(step))
    row.update(synth.measure_pairs(step, features))
    row["backoffs"] = synth.backoffs
    row.update({f"t_{k}_s": v for k, v in synth.times.items()})
    synth.times = dict.fromkeys(synth.times, 0.0)
    return row


def write_synthesis_grids(synth: Any, run_dir: Path, step: int) -> None:
    """Grids of samples and of positive pairs (fixed latents) under samples/ and pairs/."""
    from synthcl.viz import save_pair_ladder, save_sample_grid

    g = synth.generator
    was_training = g.training
    g.eval()
    with torch.no_grad():
        device = next(g.parameters()).device
        z = g.sample_latents(16, torch.Generator(device=device).manual_seed(0))
        save_sample_grid(g(z), run_dir / "samples" / f"step-{step:07d}.png")
        pair = g.pair(z[:8], synth.schedule(step)["hardness"], generator=torch.Generator(device=device).manual_seed(1))
        save_pair_ladder([pair], run_dir / "pairs" / f"step-{step:07d}.png")
    g.train(was_training)


def needs_in_run_pretraining(recipe: Recipe) -> bool:
    """Whether the run warms its generator up itself before the learner's first step.

    Raises:
        ConfigError: under a distributed launcher (the warm-up runs in one process: pretrain first).
    """
    g = recipe.generator
    needed = uses_generator(recipe.synthesis.mode) and g.pretrained is None and g.pretrain_steps > 0
    if needed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("generator.pretrain_steps runs in one process; pretrain first (stage: generator) and "
                          "set generator.pretrained for a distributed run")
    return needed


def _override_dict(recipe: Recipe, overrides: list[str] | tuple[str, ...]) -> dict:
    from synthcl.config import apply_overrides

    return apply_overrides(dataclasses.asdict(recipe), list(overrides))
