"""Checkpoints: safetensors weights + a weights-only training state, written atomically.

Layout inside a run directory::

    checkpoints/last/weights.safetensors   learner state (momentum encoders and queues included)
    checkpoints/last/state.pt              optimizer, scheduler, step (torch.load(weights_only=True))
    checkpoints/last/meta.json             step, epoch, names
    backbone.safetensors + backbone.json   the final backbone export, read by `synthcl eval`
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from synthcl.errors import CheckpointError, first_line
from synthcl.io import atomic_write_json, default_mode, read_json
from synthcl.rundir import LAST
from synthcl.weights import _tensors, load_weights, save_weights


def save_checkpoint(
    run_dir: Path,
    learner: nn.Module,
    training_state: dict[str, Any],
    meta: dict[str, Any],
    name: str = LAST,
    extra: dict[str, nn.Module] | None = None,
) -> Path:
    """Write ``checkpoints/<name>`` as a whole: a crash leaves the previous checkpoint intact.

    The new checkpoint is assembled in a temporary folder and swapped in with renames.
    """
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
    default_mode(tmp)  # mkdtemp makes 0700
    try:
        save_file(_tensors(learner), str(tmp / "weights.safetensors"))
        for key, module in (extra or {}).items():  # e.g. the generator trained jointly with the learner
            save_file(_tensors(module), str(tmp / f"{key}.safetensors"))
        torch.save(training_state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            default_mode(f)  # safetensors writes 0600
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        target, old = folder / name, folder / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / name


def load_checkpoint(path: Path, learner: nn.Module, extra: dict[str, nn.Module] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load learner weights from a checkpoint folder; return (training_state, meta).

    Raises:
        CheckpointError: if the folder is incomplete, damaged or from another architecture.
    """
    if not (path / "meta.json").is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    load_weights(learner, path / "weights.safetensors")
    for key, module in (extra or {}).items():
        load_weights(module, path / f"{key}.safetensors")
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        meta = read_json(path / "meta.json")
        if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or meta["step"] < 0:
            raise ValueError("meta.json has no step count")
        if not isinstance(state, dict):
            raise ValueError("state.pt holds no training state")
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({first_line(err)})") from None
    return state, meta


@contextlib.contextmanager
def state_of(path: Path) -> Iterator[None]:
    """Loading a checkpoint's training state into optimizers and schedules: a missing or wrong-typed entry
    of ``state.pt`` becomes one :class:`CheckpointError` that names the checkpoint."""
    try:
        yield
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else first_line(err)
        raise CheckpointError(f"checkpoint {path} does not fit this run ({detail}); retrain or resume from another") from None


def export_backbone(run_dir: Path, backbone: nn.Module, info: dict[str, Any]) -> None:
    """Write the final backbone (``backbone.safetensors``) and how to rebuild it (``backbone.json``)."""
    save_weights(backbone, run_dir / "backbone.safetensors")
    atomic_write_json(run_dir / "backbone.json", info)
