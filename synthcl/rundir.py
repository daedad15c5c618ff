"""The run directory: its file names, what makes a folder a run, and how a run opens one.

A run directory holds the resolved recipe (``recipe.yaml``), the status (``run.json``), metrics
(``metrics.csv``), checkpoints (``checkpoints/last``) and the exports. Training writes it; evaluation,
generation and reports read it through this module alone.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import os
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthcl.config import Recipe, read_run_recipe, recipe_to_dict
from synthcl.errors import ConfigError, RunDirError, RunInUseError
from synthcl.io import atomic_write_json, read_json

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.csv"
STATUS_FILE = "run.json"
LAST = "last"
"""The checkpoint a run resumes from: ``checkpoints/last``."""
LOCK_FILE = ".lock"
REPLACED = ".replaced"
"""Where ``--overwrite`` moves the old run until the new one has written its first checkpoint."""
RUN_FORMAT = "synthcl-run/1"
"""The marker in ``run.json`` that only synthcl writes: ``--overwrite`` replaces only folders that carry it."""
# What a run writes into its directory: --overwrite removes these, and refuses a folder that holds anything
# else (a file of the user's is never deleted).
RUN_ENTRIES = frozenset({RECIPE_FILE, STATUS_FILE, METRICS_FILE, LOCK_FILE, REPLACED, "checkpoints", "tensorboard",
                         "backbone.safetensors", "backbone.json", "generator", "generator-pretrain", "samples",
                         "pairs", "report"})
RUN_PATTERNS = ("eval*.json", "eval*.png")
# Keys that may change when a run is resumed: they do not alter the computation up to the stop.
RESUMABLE_CHANGES = {("train", "max_steps"), ("train", "log_every"), ("train", "checkpoint_every")}


def train_command(run_dir: Path | str, flag: str = "", recipe: Path | str = "...") -> str:
    """``synthcl train RECIPE --out RUN FLAG``, the command a message tells the user to run, with its paths
    quoted for a POSIX shell so that it can be pasted as it is (``...``: the recipe the run was started with)."""
    words = ["synthcl", "train", recipe if recipe == "..." else shlex.quote(str(recipe)),
             "--out", shlex.quote(str(run_dir))]
    return " ".join(words + ([flag] if flag else []))


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run to read (evaluate, resume, report): a recipe and a status file."""
    return run_dir_problem(path) is None


def run_dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a run to read, in words that say what to fix; None when it is one."""
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a run directory"
    missing = [name for name in (RECIPE_FILE, STATUS_FILE) if not (path / name).is_file()]
    if missing:
        return f"{path} is not a synthcl run directory (no {' and no '.join(missing)})"
    return None


def require_run_dir(path: Path, advice: str = "pass the --out of a train run") -> None:
    """Raise RunDirError, naming what is missing, unless ``path`` holds a run (:func:`is_run_dir`)."""
    problem = run_dir_problem(path)
    if problem is not None:
        raise RunDirError(f"{problem}; {advice}")


def is_marked_run(path: Path) -> bool:
    """Whether ``path`` holds a run that synthcl wrote: its ``run.json`` carries :data:`RUN_FORMAT` (or the
    run was replaced mid-way and its old run waits in :data:`REPLACED`)."""
    try:
        status = read_json(path / STATUS_FILE)
    except (OSError, ValueError):
        return (path / REPLACED).is_dir()
    return (isinstance(status, dict) and str(status.get("format", "")).startswith("synthcl-run/")) or (path / REPLACED).is_dir()


def training_seconds(run_dir: Path, until: float = float("inf")) -> float:
    """The training seconds a run's ``metrics.csv`` records up to step ``until`` (0 without one). A resumed
    run starts its clock again, so the stretches between stops are added up."""
    total = last = 0.0
    metrics = Path(run_dir) / METRICS_FILE
    if not metrics.is_file():
        return 0.0
    with open(metrics, newline="") as f:
        for row in csv.DictReader(f):
            if int(row["step"]) > until:
                break
            elapsed = float(row["elapsed_s"])
            if elapsed < last:  # a new stretch after a resume
                total += last
            last = elapsed
    return total + last


def write_status(run_dir: Path, status: str, step: int, **extra: Any) -> None:
    """Write ``run.json`` (atomically) with the run marker, the status and the step."""
    atomic_write_json(run_dir / STATUS_FILE, {"format": RUN_FORMAT, "status": status, "step": step, **extra})


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


def _refuse_another_recipe(run_dir: Path, recipe: Recipe, hint: str) -> Recipe:
    """The run's stored recipe, if ``recipe`` may continue it (only :data:`RESUMABLE_CHANGES` differ, and for
    a generator run the synthesis section, which it never reads: modes that share a warm-up may finish it).

    Raises:
        ConfigError: naming the settings that differ.
    """
    stored = read_run_recipe(run_dir)
    old, new = recipe_to_dict(stored), recipe_to_dict(recipe)
    if stored.stage == recipe.stage == "generator":  # a generator run never reads the synthesis section
        del old["synthesis"], new["synthesis"]
    diffs = _recipe_differences(old, new)
    if diffs:
        raise ConfigError(
            f"cannot resume {run_dir} with a different recipe (changed: {', '.join(diffs[:5])}); {hint}"
        )
    return stored


def auto_resume_plan(run_dir: Path, recipe: Recipe) -> str:
    """What ``train(..., auto_resume=True)`` (``synthcl train --auto-resume``) does with ``run_dir``:
    ``"start"`` when it holds no run, ``"finished"`` when it holds this recipe's run trained to its end,
    ``"resume"`` when it holds this recipe's run stopped part-way (killed, interrupted, failed on an error
    that need not come back, cut short by ``train.max_steps``, or stopped while warming its generator up).
    A script or a scheduler that runs the same command again after a pre-emption gets one run, trained once.

    Raises:
        ConfigError: the run there was trained from another recipe.
        RunDirError: the run there diverged (resuming would diverge again), or its status cannot be read.
    """
    if not is_run_dir(run_dir):
        return "start"
    stored = _refuse_another_recipe(run_dir, recipe, "pass --overwrite to replace the run, or choose another --out")
    try:
        status = read_json(run_dir / STATUS_FILE)
        state, step = str(status["status"]), int(status["step"])
    except (OSError, ValueError, TypeError, KeyError):
        # --overwrite replaces only a folder whose run.json carries synthcl's marker, so it cannot help here;
        # --resume reads the checkpoint, not run.json, and rewrites it.
        raise RunDirError(f"{run_dir / STATUS_FILE} cannot be read; pass --resume instead of --auto-resume to "
                          "continue from the run's last checkpoint, or move the folder away") from None
    if state == "diverged":
        raise RunDirError(f"{run_dir} diverged (last good step {step}): resuming would diverge again; "
                          "change the recipe and pass --overwrite")
    total = status.get("total_steps")
    if state == "completed" and isinstance(total, int) and step >= total \
            and stored.train.max_steps == recipe.train.max_steps:
        return "finished"
    return "resume"


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
        problem = run_dir_problem(run_dir)
        if problem is not None:
            raise RunDirError(f"cannot resume: {problem}")
        _refuse_another_recipe(run_dir, recipe, "resume with the run's own recipe: "
                               + train_command(run_dir, "--resume", recipe=run_dir / "recipe.yaml"))
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
        if not is_marked_run(run_dir):
            raise RunDirError(
                f"{run_dir} looks like a run but has no synthcl run marker in {STATUS_FILE} (made by hand or by an "
                "older synthcl); --overwrite replaces only runs synthcl wrote: remove it yourself or choose "
                "another --out"
            )
        # The old run is removed by clear_old_run, once the new one has its data and model: a run that
        # fails before that (missing data, a bad option) leaves the old run as it was.
    run_dir.mkdir(parents=True, exist_ok=True)
    acquire_lock(run_dir)
    return recipe


def _is_run_entry(path: Path) -> bool:
    return _is_run_name(path.name)


def _is_run_name(name: str) -> bool:
    if name in RUN_ENTRIES or any(fnmatch.fnmatchcase(name, p) for p in RUN_PATTERNS):
        return True
    # What a synthcl command killed half-way leaves beside a run entry: an atomic write's or the report's
    # temporary `.<entry>.<random>.tmp` (mkstemp/mkdtemp suffixes hold no dot) and the report's `.report.old`.
    # A user's own hidden file matches none of these unless it is named after a run entry that way.
    if name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
        entry = name[1:-4].rsplit(".", 1)[0]
        return bool(entry) and _is_run_name(entry)
    return name == ".report.old"


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def _run_entries(run_dir: Path) -> list[Path]:
    """What a run wrote into ``run_dir``, without this run's lock and the old run set aside."""
    return [e for e in run_dir.iterdir() if e.name not in (LOCK_FILE, REPLACED) and _is_run_entry(e)]


def clear_old_run(run_dir: Path) -> None:
    """``--overwrite``: move the earlier run in ``run_dir`` aside (into :data:`REPLACED`), keeping this run's
    lock. :func:`drop_replaced_run` deletes it once the new run has written its first checkpoint;
    :func:`lock_released_on_error` puts it back if the new run fails before that. If an earlier replacement
    was killed half-way, the run it had set aside is the one kept, and the killed run's files go."""
    aside = run_dir / REPLACED
    if aside.is_dir():
        for entry in _run_entries(run_dir):
            _remove(entry)
        return
    aside.mkdir()
    for entry in _run_entries(run_dir):
        entry.rename(aside / entry.name)


def drop_replaced_run(run_dir: Path) -> None:
    """Delete the run that ``--overwrite`` set aside: the new run has a checkpoint of its own now."""
    aside = run_dir / REPLACED
    if aside.is_dir():
        shutil.rmtree(aside)


def restore_replaced_run(run_dir: Path) -> None:
    """Put the run set aside by ``--overwrite`` back, removing what the failed new run wrote."""
    aside = run_dir / REPLACED
    if not aside.is_dir():
        return
    for entry in _run_entries(run_dir):
        _remove(entry)
    for entry in aside.iterdir():
        entry.rename(run_dir / entry.name)
    aside.rmdir()


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
            start = _start_time(os.getpid())
            fh.write(f"{os.getpid()}" + ("" if start is None else f" {start}"))
        return
    raise RunDirError(f"cannot lock {run_dir}: another process keeps creating {LOCK_FILE}")


def release_lock(run_dir: Path) -> None:
    """Give ``run_dir/.lock`` back if this process holds it."""
    path = run_dir / LOCK_FILE
    if _lock_owner(path) == os.getpid():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def lock_released_on_error(run_dir: Path) -> Iterator[None]:
    """If the block raises (a failed or interrupted run) while this process holds ``run_dir``: put back a run
    that ``--overwrite`` had set aside and that no checkpoint replaced yet, then give the lock back."""
    try:
        yield
    except BaseException:
        if _lock_owner(run_dir / LOCK_FILE) == os.getpid():
            restore_replaced_run(run_dir)
        release_lock(run_dir)
        raise


def held_elsewhere(run_dir: Path) -> int | None:
    """The process id of another live process that holds ``run_dir``'s lock (it is training there), or None."""
    path = Path(run_dir) / LOCK_FILE
    return _lock_owner(path) if _held_by_another(path) else None


def _refuse_if_in_use(run_dir: Path) -> None:
    """Raise if a live process other than this one holds ``run_dir``'s lock."""
    owner = held_elsewhere(run_dir)
    if owner is not None:
        raise RunInUseError(f"{run_dir} is being written by another synthcl process (pid {owner}); "
                            "wait for it to finish or choose another --out")


def _held_by_another(path: Path) -> bool:
    owner, start = _lock_record(path)  # one read: the pid and its start time from the same lock
    return owner is not None and owner != os.getpid() and _alive(owner, start)


def _lock_record(path: Path) -> tuple[int | None, int | None]:
    """The lock's process id and when that process started (see :func:`_start_time`), each None where the
    lock does not say (no lock, an older synthcl's lock without the start time, a damaged file)."""
    try:
        fields = path.read_text().split()
    except (OSError, ValueError):  # unreadable, or not text
        return None, None
    pid, start = (int(f) if f.isascii() and f.isdecimal() else None for f in (fields + ["", ""])[:2])
    return pid, start


def _lock_owner(path: Path) -> int | None:
    return _lock_record(path)[0]


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's /proc/PID/stat, field 22); None where
    there is no /proc. With the pid it names one process: after a reboot or a container restart, the pid of a
    dead run's lock may belong to an unrelated live process, which must not keep the run locked."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # fields after the command name start at field 3
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, start: int | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    if start is not None:
        now = _start_time(pid)
        return now is None or now == start  # the pid was reused by a process that started later
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
        recorded = int(read_json(run_dir / STATUS_FILE).get("step", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        recorded = 0
    if recorded > 0:
        raise RunDirError(f"{run_dir} recorded {recorded} steps but holds no checkpoint to resume from")
    return None
