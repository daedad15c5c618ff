"""One run session, what every training loop of a run shares around its steps: the status file, the
metrics log, progress, a clean stop on Ctrl-C, device-side divergence flags, the cadence of logs and
checkpoints (:class:`RunSession`), and the per-step seeds that make a resumed run equal an uninterrupted
one."""

from __future__ import annotations

import csv
import io
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from synthcl.errors import ConfigError, DataError, RunDirError, SynthclError, TrainingDiverged, describe
from synthcl.flags import FirstStep, Reduce, earliest
from synthcl.io import atomic_write_text, read_json_object
from synthcl.progress import ProgressBar
from synthcl.rundir import LAST, METRICS_FILE, RECIPE_FILE, STATUS_FILE, train_command, write_status

# t_*_s: seconds spent in each phase over the logging interval (host time: on a GPU, without a
# synchronisation, this is the time to issue the work).
METRIC_COLUMNS = ["step", "epoch", "loss", "lr", "images_per_s", "elapsed_s", "t_augment_s", "t_learner_s"]


class RunInterrupted(SynthclError):
    """Training was interrupted (Ctrl-C); a checkpoint of the last finished step was written.

    ``what`` says what stopped and where, without the advice on how to continue, for a caller that continues
    the run its own way (the quality benchmark runs its command again).
    """

    def __init__(self, message: str, *, what: str = "") -> None:
        super().__init__(message)
        self.what = what or message


def step_seed(seed: int, step: int, rank: int) -> int:
    # Every (seed, step, rank) gets its own augmentation stream, so a resumed run draws what an
    # uninterrupted one would have drawn without saving any RNG state.
    return ((seed * 1_000_003 + step) * 8191 + rank) % (2**63 - 1)


def refuse_resume_past_the_end(step: int, run_steps: int, max_steps: int | None, checkpoint: Path) -> None:
    """Refuse to resume from a checkpoint at ``step`` a run that would stop at ``run_steps`` < ``step``: the
    loop would not run, and the run's files would call it complete at ``run_steps`` with the weights of
    ``step``. Called before the resumed run writes anything.

    Raises:
        ConfigError: naming the step reached and the ``train.max_steps`` that would resume it.
        DataError: if the schedule itself ends before ``step`` (the training set is smaller than it was).
    """
    if step <= run_steps:
        return
    if max_steps is not None and max_steps < step:
        raise ConfigError(f"train.max_steps {max_steps} is below the step {step} the run has reached ({checkpoint}); "
                          f"resume with train.max_steps={step} or more, or without train.max_steps to train to the end")
    raise DataError(f"the run has reached step {step} ({checkpoint}) but this recipe trains {run_steps} steps "
                    "(did the training set shrink?); resume it with the data it was trained on")


class MetricsLog:
    """metrics.csv (rows appended and flushed) and TensorBoard, both truncated to the resume step."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool, columns: list[str] = METRIC_COLUMNS) -> None:
        self.enabled, self.columns = enabled, columns
        self.path = run_dir / METRICS_FILE
        if not enabled:
            return
        kept = []
        if self.path.is_file():
            try:
                with open(self.path, newline="") as fh:
                    kept = [row for row in csv.DictReader(fh) if int(row["step"]) <= start_step]
            except (KeyError, ValueError, TypeError, csv.Error):
                raise RunDirError(f"{self.path} is damaged (a row without a whole step number); move it away to "
                                  "resume without the earlier metrics") from None
        # The kept rows are rewritten whole (one atomic write, after every check): a column this run does not
        # write, or a row longer than the header, is damage like a bad step number, never silently dropped.
        unknown = sorted({"(unnamed)" if key is None else str(key) for row in kept for key in row} - set(columns))
        if unknown:
            raise RunDirError(f"{self.path} is damaged (columns this run does not write: {', '.join(unknown[:3])}"
                              f"{', ...' if len(unknown) > 3 else ''}); move it away to resume without the earlier "
                              "metrics")
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


STOP_CHECK_EVERY = 10
"""With several processes, the steps between their agreements on whether to stop (Ctrl-C, SIGTERM)."""


class StopRequest:
    """Turns Ctrl-C (SIGINT), or the SIGTERM a scheduler sends before it pre-empts or times out a job, into a
    request to stop after the current step with a clean checkpoint.

    SIGTERM stays handled for the whole session: a launcher (torchrun) passes the signal its processes
    were also sent by the scheduler on to them, so each may receive it twice. A second Ctrl-C aborts at
    once, as it would without synthcl, unless it comes within a second of the first (the same keypress,
    passed on by a launcher).
    """

    SIGNALS = ("SIGINT", "SIGTERM")
    SAME_KEYPRESS_S = 1.0

    def __init__(self) -> None:
        self.requested: str | None = None  # the name of the signal that asked
        self._previous: dict[int, Any] = {}
        self._at = 0.0

    def __enter__(self) -> StopRequest:
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is None:
                continue
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.requested is None:
            self.requested, self._at = signal.Signals(signum).name, now
        elif signum == signal.SIGINT and now - self._at > self.SAME_KEYPRESS_S:
            signal.signal(signum, self._restored(signum))  # a second Ctrl-C: stop now
            raise KeyboardInterrupt

    def by(self) -> str:
        """`` by SIGTERM`` (with its leading space) for a message, where a signal other than Ctrl-C asked."""
        return "" if self.requested in (None, "SIGINT") else f" by {self.requested}"

    def _restored(self, signum: int) -> Any:
        previous = self._previous.get(signum)
        if previous is not None:
            return previous
        return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL

    def __exit__(self, *exc: object) -> None:
        for number in self._previous:
            signal.signal(number, self._restored(number))
        self._previous = {}


class RunSession:
    """The bookkeeping of one run around its steps, shared by the learner loop and generator pretraining:
    the status file, the metrics log, the progress bar, Ctrl-C, device-side divergence flags, and when to
    log, checkpoint and stop.

    A loop calls :meth:`record` after every step with that step's losses (on the device, no host sync)
    and :meth:`end_step` after it; divergence is checked at log and checkpoint steps only.

    Args:
        run_dir: the run directory.
        info: what ``run.json`` and checkpoints say about the run besides its status and step.
        run_steps: the step the run stops at; start_step: the step it starts from (resume).
        steps_per_epoch: for the ``epoch`` column.
        log_every, checkpoint_every: the recipe's cadences.
        columns: metrics.csv's columns.
        loss_names: the columns of the recorded losses, in order.
        save: ``save(step)`` writes a checkpoint (every process calls it; it writes on the main one).
        divergence: ``(label, hint)`` of the one-line divergence error, e.g. ``("loss", "Try a lower optim.lr")``.
        batch_size: images per step (throughput); title: the progress bar's; quiet: no bar.
        main: whether this process writes files (any process records its own error); process: its index;
            reduce: ``reduce(tensor, op)`` across processes (None: one process).
        failure: a divergence found elsewhere (the synthesizer's monitor): its message and the (1-based) step
            it names, or None; every process calls it at the same step, and the earlier of it and a
            non-finite loss is reported.
        stop: a :class:`StopRequest` its caller holds over more than this session (a run's generator warm-up
            and its learner): a signal that arrives between two sessions is not lost. Default: the session's own.
    """

    def __init__(self, run_dir: Path, info: dict[str, Any], *, run_steps: int, start_step: int, steps_per_epoch: int,
                 log_every: int, checkpoint_every: int, columns: list[str], loss_names: list[str],
                 save: Callable[[int], None], divergence: tuple[str, str], batch_size: int, title: str,
                 quiet: bool, main: bool = True, process: int = 0, reduce: Reduce | None = None,
                 failure: Callable[[], tuple[str, int] | None] | None = None,
                 device: torch.device | str = "cpu", stop: StopRequest | None = None) -> None:
        self.run_dir, self.info = run_dir, info
        self.run_steps, self.start_step, self.steps_per_epoch = run_steps, start_step, steps_per_epoch
        self.log_every, self.checkpoint_every = log_every, checkpoint_every
        self.loss_names, self.save, self.divergence = loss_names, save, divergence
        self.main, self.process, self.reduce, self.failure = main, process, reduce, failure
        self.last_good = start_step
        # Tells this session's run.json writes from an earlier one's (a failure recorded before a resume); the
        # caller gives every process of a distributed run the main process's.
        self.attempt = uuid.uuid4().hex[:12]
        self.metrics = MetricsLog(run_dir, start_step, enabled=main, columns=columns)
        self.bar = ProgressBar(run_steps, title, unit="img", rate_per_step=batch_size, enabled=main and not quiet,
                               completed=start_step)
        self.stop, self._own_stop = stop or StopRequest(), stop is None
        self.batch_size = batch_size
        self._sums = torch.zeros(len(loss_names), device=device)
        self._bad_step = FirstStep(device)
        self._bad_values = torch.zeros(len(loss_names), device=device)
        self._interval_start = self._run_start = time.perf_counter()
        self._interval_steps = 0

    def __enter__(self) -> RunSession:
        self.bar.__enter__()
        if self._own_stop:
            self.stop.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: object) -> None:
        try:
            self.metrics.close()
        finally:  # the signal handlers go back even when closing the log fails (a full disk)
            if self._own_stop:
                self.stop.__exit__(kind, err, tb)
            self.bar.__exit__(kind, err, tb)
        if err is not None and not isinstance(err, (TrainingDiverged, RunInterrupted)):  # those wrote theirs
            self._record_failure(err)

    def _record_failure(self, err: BaseException) -> None:
        """``run.json`` says the run stopped and why, instead of ``running`` forever: the step is the last
        checkpoint's, the one ``--resume`` continues from.

        Every process records its own error and the first one recorded stays: an error on one process makes
        the others fail in their next collective, with a message that says less ("connection closed by
        peer"). A process that does not see the run's ``run.json`` (another node's disk) writes nothing.
        """
        try:
            if isinstance(err, KeyboardInterrupt):  # a second Ctrl-C, mid-step
                self.write_status("interrupted", self.last_good)
                return
            error = describe(err) + (f" (process {self.process})" if self.info.get("processes", 1) > 1 else "")
            current = read_json_object(self.run_dir / STATUS_FILE)
            if (current is None and not self.main) or (current or {}).get("status") == "failed":
                return
            self.write_status("failed", self.last_good, every_process=True, error=error)
        except OSError:  # a full disk: the error on its way out says more than this one would
            pass

    def write_status(self, status: str, step: int, every_process: bool = False, **extra: Any) -> None:
        """``run.json`` (on the main process only, unless ``every_process``), with this session's ``attempt``.

        ``running`` and ``interrupted`` leave a failure that another process of this attempt recorded in
        place: the main process goes on until its next collective fails, and that failure would otherwise
        be written over at a checkpoint between the two, leaving the error that says less.
        """
        if not (self.main or every_process):
            return
        if self.main and status in ("running", "interrupted"):
            current = read_json_object(self.run_dir / STATUS_FILE) or {}
            if current.get("status") == "failed" and current.get("attempt") == self.attempt:
                return
        extra.setdefault("attempt", self.attempt)
        write_status(self.run_dir, status, step, total_steps=self.run_steps, **self.info, **extra)

    def record(self, step: int, losses: Tensor) -> None:
        """Add a step's losses (1-D, on the device) to the interval; flag the first non-finite one."""
        newly_bad = self._bad_step.flag(~torch.isfinite(losses).all(), step + 1)
        self._bad_values = torch.where(newly_bad, losses, self._bad_values)
        self._sums += torch.nan_to_num(losses)
        self._interval_steps += 1

    def where(self) -> str:
        return f"{self.run_dir / 'checkpoints' / LAST} (step {self.last_good})" if self.last_good else "none yet"

    def check_divergence(self) -> None:
        """One host sync: raise if any step since the start recorded a non-finite loss on any process, or
        ``failure`` says synthesis failed, naming whichever came first (synthesis on a tie: samples that went
        non-finite make the loss non-finite at the same step)."""
        found = self.failure() if self.failure else None
        (first,) = earliest([self._bad_step.mark], self.reduce)
        if found is not None and (first is None or found[1] <= first):
            message, step = found
            self.write_status("diverged", self.last_good, diverged_at=step)
            raise TrainingDiverged(f"{message}; stopped. Last good checkpoint: {self.where()}", what=message)
        if first is not None:
            self.write_status("diverged", self.last_good, diverged_at=first)
            label, hint = self.divergence
            if self._bad_step.local() == first:
                values = "/".join(f"{float(v):.4g}" for v in self._bad_values)
                what = f"{label} became {values} at step {first}"
            else:  # the values are another process's
                what = f"{label} became non-finite at step {first} on another process"
            raise TrainingDiverged(f"{what}; stopped. Last good checkpoint: {self.where()}. {hint}",
                                   what=what, advice=hint)

    def log_due(self, done: int) -> bool:
        return done % self.log_every == 0 or done == self.run_steps

    def end_step(self, done: int, row: Callable[[int], dict[str, float]] | None = None,
                 progress: Callable[[dict[str, float]], dict[str, float]] | None = None) -> None:
        """After step ``done``: the metrics row (the mean losses, throughput and ``row(done)``) at log steps,
        a checkpoint at checkpoint steps, and on Ctrl-C a checkpoint and :class:`RunInterrupted`."""
        if self.log_due(done):
            self.check_divergence()
            sums = self.reduce(self._sums, "mean") if self.reduce else self._sums
            now = time.perf_counter()
            values = {"step": done, "epoch": round(done / self.steps_per_epoch, 4)}
            values |= {name: float(sums[i]) / self._interval_steps for i, name in enumerate(self.loss_names)}
            values |= {"images_per_s": self._interval_steps * self.batch_size / (now - self._interval_start),
                       "elapsed_s": now - self._run_start}
            values |= row(done) if row is not None else {}
            self.metrics.write(values)
            self.bar.update(done, **(progress(values) if progress else {}))
            self._sums.zero_()
            self._interval_start, self._interval_steps = now, 0
        if done % self.checkpoint_every == 0 or done == self.run_steps:
            self.check_divergence()
            self.save(done)
            self.last_good = done
            self.write_status("running", done)
        if self._stop_agreed(done):
            self.check_divergence()
            self.save(done)
            self.last_good = done
            self.write_status("interrupted", done)
            what = f"interrupted{self.stop.by()} after step {done}"
            # recipe.yaml is the run's resolved recipe (overrides included), written before its first step.
            again = train_command(self.run_dir, "--resume", recipe=self.run_dir / RECIPE_FILE)
            raise RunInterrupted(f"{what}; continue with: {again}", what=what)

    def _stop_agreed(self, done: int) -> bool:
        # Every process must stop after the same step: a lone rank at the checkpoint barrier while the
        # others start the next step's all-reduce would hang. Processes agree every STOP_CHECK_EVERY steps
        # (or log steps, if more often): soon enough for a scheduler's grace period after SIGTERM, without a
        # host sync every step.
        if self.reduce is None:
            return self.stop.requested is not None
        if done % min(self.log_every, STOP_CHECK_EVERY) != 0 and done != self.run_steps:
            return False
        flag = torch.tensor(float(self.stop.requested is not None), device=self._sums.device)
        return bool(self.reduce(flag, "sum") > 0)
