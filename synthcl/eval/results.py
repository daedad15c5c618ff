"""How a run's ``eval*.json`` files grow: a later evaluation adds to what they hold.

Every result records the weights it measured (``"checkpoint"``: a digest of the tensors and the input
standardisation, and the training step they come from). A new result is merged into the file when the
file's results were measured on the same weights with the same settings: another protocol's keys in
``eval.json``, other label fractions in ``eval-efficiency.json`` / ``eval-transfer-*.json``, another feature
space or sample count in ``eval-generator.json``. Results measured on other weights (the run was resumed and
trained further since), or written before weights were recorded, are stale: they are moved, whole, into the
file's ``"superseded"`` list, which nothing reports, and the file's top level holds only current results.
Nothing already measured is deleted. The read, merge and write of :func:`update_result` hold a lock on the
run folder, so two ``synthcl eval`` processes on one run (a kNN and a linear probe started side by side)
both land in the file instead of the later write dropping the earlier result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthcl.io import atomic_write_json, read_json_object

CHECKPOINT = "checkpoint"
SUPERSEDED = "superseded"
MEASUREMENTS = "measurements"


def fingerprint(module: nn.Module | None, normalization: Any = None, step: Any = None) -> dict[str, Any]:
    """What a result was measured on: ``{"weights": digest, "step": step}``.

    The digest covers every tensor of ``module``'s state (names, dtypes, shapes, values) and the input
    standardisation; ``step`` is informative (the digest alone decides whether two results are comparable).
    """
    digest = hashlib.sha256(json.dumps(normalization, sort_keys=True, default=str).encode())
    if module is not None:
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes())
    record: dict[str, Any] = {"weights": digest.hexdigest()[:20]}
    if isinstance(step, int) and not isinstance(step, bool):
        record["step"] = step
    return record


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _why_stale(previous: Any, new: dict[str, Any], same_settings: bool) -> str:
    if not isinstance(previous, dict) or "weights" not in previous:
        return "measured on weights it does not record (an older synthcl wrote it)"
    if previous.get("weights") != new.get("weights"):
        return f"measured on other weights (step {previous.get('step', '?')}; now step {new.get('step', '?')})"
    return "in a shape this synthcl does not merge" if same_settings else "measured with other settings"


def merge_result(
    path: Path,
    new: dict[str, Any],
    *,
    context: Sequence[str],
    combine: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None],
    quiet: bool = False,
) -> dict[str, Any]:
    """``new`` merged into what ``path`` holds (not written; see :func:`update_result`).

    The previous contents are merged by ``combine(previous, new)`` when they carry the same
    ``"checkpoint"`` and the same values of the ``context`` keys as ``new``, and ``combine`` does not return
    None (it does where the previous contents are not in the expected shape). Otherwise they are stale: they
    go, whole, to the front of the ``"superseded"`` list, and the top level is ``new``.
    """
    previous = read_json_object(path)  # a corrupt file holds no result to keep: the new one replaces it
    if previous is None:
        return dict(new)
    history = previous.pop(SUPERSEDED, [])
    history = history if isinstance(history, list) else [history]
    same_settings = all(previous.get(k) == new.get(k) for k in context)
    merged = combine(previous, new) if same_settings and previous.get(CHECKPOINT) == new[CHECKPOINT] else None
    if merged is None:
        history = [previous, *history]
        if not quiet:
            why = _why_stale(previous.get(CHECKPOINT), new[CHECKPOINT], same_settings)
            print(f"note: {path.name} held results {why}; they are kept under \"{SUPERSEDED}\" in it and no "
                  "longer reported")
        merged = dict(new)
    if history:
        merged[SUPERSEDED] = history
    return merged


@contextlib.contextmanager
def folder_locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (``flock`` on the directory: no lock file is left in a
    run folder), against other processes of this machine. Not re-entrant: a block that takes it again on the
    same folder waits for itself. Where the folder cannot be locked (not POSIX, a filesystem without
    ``flock``, a folder that cannot be opened for reading) the block runs unlocked: a finished evaluation is
    written either way."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # ENOLCK, EOPNOTSUPP on some network and FUSE filesystems
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


def update_result(
    path: Path,
    new: dict[str, Any],
    *,
    context: Sequence[str],
    combine: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None],
    quiet: bool = False,
    finish: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Merge ``new`` into ``path`` (see :func:`merge_result`) and write it, under the folder's lock; returns
    what was written. ``finish(merged)`` completes the merged result before it is written (the efficiency
    plot, drawn from every fraction the file holds)."""
    with folder_locked(path.parent):
        merged = merge_result(path, new, context=context, combine=combine, quiet=quiet)
        if finish is not None:
            finish(merged)
        atomic_write_json(path, merged)
    return merged


def _seconds(previous: dict[str, Any], new: dict[str, Any]) -> Any:
    before, now = previous.get("seconds"), new.get("seconds")
    if is_number(before) and is_number(now) and math.isfinite(before):
        return round(before + now, 1)
    return now


def combine_probes(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """eval.json: each protocol's keys, the newest measurement of each; ``seconds`` adds up."""
    return {**previous, **new, "seconds": _seconds(previous, new)}


def combine_fractions(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """eval-efficiency.json, eval-transfer-*.json: one row per label fraction, the newest where both have
    it; the rest of the top level (the kNN of transfer) is the newest measurement's."""
    rows = previous.get("results")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and is_number(r.get("label_fraction"))
                                             for r in rows):
        return None
    by_fraction = {float(r["label_fraction"]): r for r in rows}
    by_fraction.update({float(r["label_fraction"]): r for r in new["results"]})
    fractions = sorted(by_fraction)
    return {**previous, **new, "results": [by_fraction[f] for f in fractions], "label_fractions": fractions,
            "seconds": _seconds(previous, new)}


MEASUREMENT_KEYS = ("feature_space", "n", "generator", "partner", "seconds")


def combine_measurements(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """eval-generator.json: the top level is the newest measurement (as before), and ``measurements`` lists
    one per feature space and sample count, the newest last."""
    kept = previous.get(MEASUREMENTS)
    if not isinstance(kept, list) or not all(isinstance(m, dict) for m in kept):
        return None
    key = (new.get("feature_space"), new.get("n"))
    kept = [m for m in kept if (m.get("feature_space"), m.get("n")) != key]
    return {**new, MEASUREMENTS: [*kept, *new[MEASUREMENTS]]}


def measurement_of(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in MEASUREMENT_KEYS if k in result}
