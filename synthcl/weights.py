"""Weights on disk: a module's ``state_dict`` as safetensors, written atomically and read back strictly.

The lowest layer of persistence: checkpoints (``synthcl.training.checkpoint``) and ``Generator``'s
``save_pretrained`` / ``from_pretrained`` both write and read through it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from synthcl.errors import CheckpointError, first_line
from synthcl.io import atomic_write


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; clone keeps it simple and exact.
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(module: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``module.state_dict()`` to a safetensors file atomically."""
    tensors = _tensors(module)
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file.

    Raises:
        CheckpointError: if it is missing, truncated or corrupt.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({first_line(err)})") from None


def load_weights(module: nn.Module, path: Path, prefix: str = "") -> None:
    """Load a safetensors file into ``module``, strictly.

    Args:
        prefix: load only the tensors whose names start with it, stripped (e.g. "backbone.").

    Raises:
        CheckpointError: if the file is damaged or was written by another architecture.
    """
    state = read_weights(path)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if reshaped:
            k = reshaped[0]
            details.append(
                f"{len(reshaped)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})"
            )
        raise CheckpointError(
            f"checkpoint {path} was written by another architecture: {'; '.join(details)} tensors"
        )
    module.load_state_dict(state, strict=True)
