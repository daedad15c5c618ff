"""The first step at which something went wrong (a loss or a sample turned non-finite), kept on the device so
that training never waits for the host, and agreed on by every process with one ``max`` reduce.

A mark holds minus the (1-based) step, so that the maximum over processes is the earliest step; before
anything went wrong it holds :data:`NO_STEP`, below every real mark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

NO_STEP = -(2**62)
"""A mark that nothing has gone wrong yet."""

Reduce = Callable[[Tensor, str], Tensor]


class FirstStep:
    """A device-side record of the first step at which a condition held."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.mark = torch.full((), NO_STEP, dtype=torch.long, device=device)

    def flag(self, hit: Tensor, step: int) -> Tensor:
        """Record ``step`` (1-based) if ``hit`` (a boolean scalar on the device) holds and nothing was recorded
        before; returns whether this call recorded it. No host sync."""
        newly = hit & (self.mark == NO_STEP)
        self.mark = torch.where(newly, torch.full_like(self.mark, -step), self.mark)
        return newly

    def local(self) -> int | None:
        """This process's first step, or None (one host sync)."""
        return step_of(int(self.mark))


def mark_of(step: int | None, device: torch.device | str = "cpu") -> Tensor:
    """The mark of a step known on the host (None: nothing went wrong), to reduce beside device marks."""
    return torch.full((), NO_STEP if step is None else -step, dtype=torch.long, device=device)


def step_of(mark: int) -> int | None:
    return None if mark == NO_STEP else -mark


def earliest(marks: Sequence[Tensor], reduce: Reduce | None = None) -> list[int | None]:
    """The earliest step of each mark over all processes (None where none went wrong): one ``max`` reduce of
    them all, and one host sync. Every process must call it at the same step."""
    state = torch.stack([m.to(marks[0].device) for m in marks])
    if reduce is not None:
        state = reduce(state, "max")
    return [step_of(m) for m in state.tolist()]
