"""What every training loop of a run shares around its steps: the metrics log, a clean stop on Ctrl-C and
the per-step seeds that make a resumed run equal an uninterrupted one."""

from __future__ import annotations

import csv
import io
import signal
from pathlib import Path
from typing import Any

from synthcl.errors import SynthclError
from synthcl.io import atomic_write_text
from synthcl.rundir import METRICS_FILE

# t_*_s: seconds spent in each phase over the logging interval (host time: on a GPU, without a
# synchronisation, this is the time to issue the work).
METRIC_COLUMNS = ["step", "epoch", "loss", "lr", "images_per_s", "elapsed_s", "t_augment_s", "t_learner_s"]


class RunInterrupted(SynthclError):
    """Training was interrupted (Ctrl-C); a checkpoint of the last finished step was written."""


def step_seed(seed: int, step: int, rank: int) -> int:
    # Every (seed, step, rank) gets its own augmentation stream, so a resumed run draws what an
    # uninterrupted one would have drawn without saving any RNG state.
    return ((seed * 1_000_003 + step) * 8191 + rank) % (2**63 - 1)


class MetricsLog:
    """metrics.csv (rows appended and flushed) and TensorBoard, both truncated to the resume step."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool, columns: list[str] = METRIC_COLUMNS) -> None:
        self.enabled, self.columns = enabled, columns
        self.path = run_dir / METRICS_FILE
        if not enabled:
            return
        kept = []
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                kept = [row for row in csv.DictReader(fh) if int(row["step"]) <= start_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.path, buffer.getvalue())
        self._fh = open(self.path, "a", newline="")
        self._csv = csv.DictWriter(self._fh, fieldnames=columns)
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def write(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._csv.writerow({k: row[k] for k in self.columns})
        self._fh.flush()
        for key, value in row.items():
            if key not in ("step", "epoch"):
                self._tb.add_scalar(f"train/{key}", value, int(row["step"]))

    def close(self) -> None:
        if self.enabled:
            self._fh.close()
            self._tb.close()


class StopRequest:
    """Turns the first Ctrl-C into a request to stop after the current step (a clean checkpoint)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
