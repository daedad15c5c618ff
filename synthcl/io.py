"""Atomic file writes (write to a temporary file in the same folder, then rename over the target) and
bounded reads of small files that may be damaged or hostile."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def default_mode(path: str | Path) -> None:
    """Give ``path`` the permissions a new file or folder gets from the umask: writers that make 0600 files
    (mkstemp, mkdtemp, safetensors) would otherwise leave a run that a teammate or a group job cannot read."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one rename.

    A crash leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        default_mode(tmp_path)  # after the write: mkstemp makes 0600, and so does a writer that makes its own file
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_figure(fig: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically, in the format its suffix names (png if none)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda p: fig.savefig(p, format=fmt, **savefig_kwargs))


MAX_SMALL_FILE = 16 * 2**20
"""Run files read whole (JSON, YAML recipes) are never larger than this; a larger one is not synthcl's."""


def read_small_text(path: str | Path, limit: int = MAX_SMALL_FILE) -> str:
    """The text of a small file, refusing one larger than ``limit`` bytes (ValueError)."""
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path} is {size} bytes, more than the {limit} a file of this kind can be")
    return path.read_text()


def read_json(path: str | Path, limit: int = MAX_SMALL_FILE) -> Any:
    """``json.loads`` of a small file; too large, not UTF-8, not JSON or nested too deeply: ValueError."""
    try:
        return json.loads(read_small_text(path, limit))
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a run file") from None


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A small JSON file holding an object, or None where it is missing, unreadable or holds anything else."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
