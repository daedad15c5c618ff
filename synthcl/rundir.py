"""The run directory: its file names, what makes a folder a run, and how a run opens one.

A run directory holds the resolved recipe (``recipe.yaml``), the status (``run.json``), metrics
(``metrics.csv``), checkpoints (``checkpoints/last``) and the exports. Training writes it; evaluation,
generation and reports read it through this module alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from synthcl.config import Recipe, read_run_recipe, recipe_to_dict
from synthcl.errors import ConfigError, RunDirError

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.csv"
STATUS_FILE = "run.json"
LAST = "last"
"""The checkpoint a run resumes from: ``checkpoints/last``."""
LOCK_FILE = ".lock"
# What a run writes into its directory: --overwrite removes these, and refuses a folder that holds anything
# else (a file of the user's is never deleted).
RUN_ENTRIES = frozenset({RECIPE_FILE, STATUS_FILE, METRICS_FILE, LOCK_FILE, "checkpoints", "tensorboard",
                         "backbone.safetensors", "backbone.json", "generator", "generator-pretrain", "samples",
                         "pairs", "report"})
RUN_PATTERNS = ("eval*.json", "eval*.png")
# Keys that may change when a run is resumed: they do not alter the computation up to the stop.
RESUMABLE_CHANGES = {("train", "max_steps"), ("train", "log_every"), ("train", "checkpoint_every")}



def is_run_dir(path: Path) -> bool:
    return (path / RECIPE_FILE).is_file() and (path / STATUS_FILE).is_file()


def _recipe_differences(old: dict, new: dict, prefix: tuple[str, ...] = ()) -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        path = prefix + (key,)
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _recipe_differences(a, b, path)
        elif a != b and path not in RESUMABLE_CHANGES:
            diffs.append(".".join(path))
    return diffs


def prepare_run_dir(run_dir: Path, recipe: Recipe, *, resume: bool, overwrite: bool) -> Recipe:
    """Create, refuse, or reopen a run directory and lock it for this process; return the recipe the run uses.

    With ``overwrite``, nothing is deleted here: :func:`clear_old_run` removes the old run's files once the
    new run has its data and model.

    Raises:
        RunDirError: if the directory holds a run and neither ``resume`` nor ``overwrite`` is set, if it
            holds other files, or if there is nothing to resume.
        ConfigError: if resuming with a recipe that differs from the run's own.
    """
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if resume:
        if not is_run_dir(run_dir):
            raise RunDirError(f"cannot resume: {run_dir} is not a synthcl run directory (no {RECIPE_FILE})")
        stored = recipe_to_dict(read_run_recipe(run_dir))
        diffs = _recipe_differences(stored, recipe_to_dict(recipe))
        if diffs:
            raise ConfigError(
                f"cannot resume {run_dir} with a different recipe (changed: {', '.join(diffs[:5])}); "
                "resume with the run's own recipe"
            )
        acquire_lock(run_dir)
        return recipe
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output path {run_dir} is a file, not a directory")
    if run_dir.exists() and any(p.name != LOCK_FILE or _held_by_another(p) for p in run_dir.iterdir()):
        if not is_run_dir(run_dir):
            _refuse_if_in_use(run_dir)
            raise RunDirError(f"output directory {run_dir} exists and is not empty; choose another --out")
        if not overwrite:
            raise RunDirError(
                f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        foreign = sorted(p.name for p in run_dir.iterdir() if not _is_run_entry(p))
        if foreign:
            raise RunDirError(
                f"{run_dir} holds files that are not the run's ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); move them before --overwrite, or choose another --out"
            )
        # The old run is removed by clear_old_run, once the new one has its data and model: a run that
        # fails before that (missing data, a bad option) leaves the old run as it was.
    run_dir.mkdir(parents=True, exist_ok=True)
    acquire_lock(run_dir)
    return recipe


def _is_run_entry(path: Path) -> bool:
    return path.name in RUN_ENTRIES or any(path.match(p) for p in RUN_PATTERNS)


def clear_old_run(run_dir: Path) -> None:
    """Remove what an earlier run wrote into ``run_dir`` (``--overwrite``), keeping the lock of this one."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK_FILE or not _is_run_entry(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def acquire_lock(run_dir: Path) -> None:
    """Take ``run_dir/.lock`` for this process: a second ``synthcl train`` into the same folder stops with
    one line instead of silently replacing the first. A lock whose process is gone (a crash, a kill) or
    that this process left behind is taken over; :func:`release_lock` gives it back.

    Raises:
        RunDirError: if a live process holds it.
    """
    path = run_dir / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _refuse_if_in_use(run_dir)
            path.unlink(missing_ok=True)  # stale
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return
    raise RunDirError(f"cannot lock {run_dir}: another process keeps creating {LOCK_FILE}")


def release_lock(run_dir: Path) -> None:
    """Give ``run_dir/.lock`` back if this process holds it."""
    path = run_dir / LOCK_FILE
    if _lock_owner(path) == os.getpid():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def lock_released_on_error(run_dir: Path) -> Iterator[None]:
    """Give the lock of ``run_dir`` back if the block raises (a failed or interrupted run)."""
    try:
        yield
    except BaseException:
        release_lock(run_dir)
        raise


def _refuse_if_in_use(run_dir: Path) -> None:
    """Raise if a live process other than this one holds ``run_dir``'s lock."""
    path = run_dir / LOCK_FILE
    if _held_by_another(path):
        raise RunDirError(f"{run_dir} is being written by another synthcl process (pid {_lock_owner(path)}); "
                          "wait for it to finish or choose another --out")


def _held_by_another(path: Path) -> bool:
    owner = _lock_owner(path)
    return owner is not None and owner != os.getpid() and _alive(owner)


def _lock_owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resumed run starts from; None for a run stopped before its first checkpoint.

    A crash between the two renames of a checkpoint swap leaves only ``.last.old``: it is used then.

    Raises:
        RunDirError: if the run recorded progress but no checkpoint is left (nothing is overwritten).
    """
    folder = run_dir / "checkpoints"
    for candidate in (folder / LAST, folder / f".{LAST}.old"):
        if (candidate / "meta.json").is_file():
            return candidate
    try:
        recorded = int(json.loads((run_dir / STATUS_FILE).read_text()).get("step", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        recorded = 0
    if recorded > 0:
        raise RunDirError(f"{run_dir} recorded {recorded} steps but holds no checkpoint to resume from")
    return None
