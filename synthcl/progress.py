"""Progress display for long work: a rich progress bar with throughput and ETA, or nothing (--quiet)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import TracebackType

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column
from rich.text import Text


class _TwoLines(Progress):
    """The bar, counts and times on one line and the fields (losses) on the next, so that neither is cut
    short in an 80-column terminal: a long recipe name gives way first (ellipsis), then the bar, which is
    left out where it would leave the name under eight columns."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            if task.fields.get("info"):
                yield Text("  " + task.fields["info"], no_wrap=True, overflow="ellipsis")


class ProgressBar:
    """A context manager showing ``done/total``, a rate in ``unit``/s, elapsed time and ETA on one line, and
    fields (losses) on the next.

    Args:
        total: number of steps.
        description: shown on the left.
        unit: what ``rate_per_step`` counts (e.g. "img").
        rate_per_step: units processed per step (e.g. the global batch size).
        enabled: False shows nothing (``--quiet``, or a non-main process).
        console: where to draw (default: standard error at the terminal's width).
    """

    def __init__(self, total: int, description: str, *, unit: str = "it", rate_per_step: float = 1.0,
                 enabled: bool = True, completed: int = 0, console: Console | None = None) -> None:
        self.total, self.unit, self.rate_per_step = total, unit, rate_per_step
        self.enabled = enabled
        self._start_completed = completed
        self._start_time = time.perf_counter()
        self._progress: Progress | None = None
        if enabled:
            console = console or Console(stderr=True)
            # Counts, rate and times are never cut: the name takes what they and a short bar leave. Reserved:
            # done/total, a rate of up to 7 digits, elapsed, "eta", remaining, a 6-column bar, the gaps.
            bar_width = 6 + 1  # its narrowest, and its gap
            reserve = (2 * len(str(total)) + 1) + len(f"9,999,999 {unit}/s") + (7 + 3 + 7) + bar_width + 6
            bar = console.width - reserve >= 8
            name_width = max(8, min(len(description), console.width - reserve + (0 if bar else bar_width)))
            self._progress = _TwoLines(
                TextColumn("[bold]{task.description}",
                           table_column=Column(width=name_width, no_wrap=True, overflow="ellipsis")),
                *([BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=6))] if bar else []),
                MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[rate]}", table_column=Column(no_wrap=True)),
                TimeElapsedColumn(table_column=Column(no_wrap=True)),
                TextColumn("eta", table_column=Column(no_wrap=True)),
                TimeRemainingColumn(table_column=Column(no_wrap=True)),
                console=console,
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
