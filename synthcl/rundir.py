"""The run directory: its file names, what makes a folder a run, and how a run opens one.

A run directory holds the resolved recipe (``recipe.yaml``), the status (``run.json``), metrics
(``metrics.csv``), checkpoints (``checkpoints/last``) and the exports. Training writes it; evaluation,
generation and reports read it through this module alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from synthcl.config import Recipe, read_run_recipe, recipe_to_dict
from synthcl.errors import ConfigError, RunDirError

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.csv"
STATUS_FILE = "run.json"
LAST = "last"
"""The checkpoint a run resumes from: ``checkpoints/last``."""
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
    """Create, refuse, or reopen a run directory; return the recipe the run uses.

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
        return recipe
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output path {run_dir} is a file, not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not is_run_dir(run_dir):
            raise RunDirError(f"output directory {run_dir} exists and is not empty; choose another --out")
        if not overwrite:
            raise RunDirError(
                f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return recipe


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
