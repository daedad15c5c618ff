"""Progress display for long work: a rich progress bar with throughput and ETA, or nothing (--quiet)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressBar:
    """A context manager showing ``done/total``, a rate in ``unit``/s, elapsed time, ETA and fields.

    Args:
        total: number of steps.
        description: shown on the left.
        unit: what ``rate_per_step`` counts (e.g. "img").
        rate_per_step: units processed per step (e.g. the global batch size).
        enabled: False shows nothing (``--quiet``, or a non-main process).
    """

    def __init__(self, total: int, description: str, *, unit: str = "it", rate_per_step: float = 1.0,
                 enabled: bool = True, completed: int = 0) -> None:
        self.total, self.unit, self.rate_per_step = total, unit, rate_per_step
        self.enabled = enabled
        self._start_completed = completed
        self._start_time = time.perf_counter()
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(description, total=total, completed=completed, rate="", info="")

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, completed: int, **fields: float | str) -> None:
        """Move to ``completed`` steps; ``fields`` (e.g. loss=0.5) are shown after the ETA."""
        if self._progress is None:
            return
        elapsed = max(time.perf_counter() - self._start_time, 1e-9)
        rate = (completed - self._start_completed) * self.rate_per_step / elapsed
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self._progress.update(self._task, completed=completed, rate=f"{rate:,.0f} {self.unit}/s", info=info)
