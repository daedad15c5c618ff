"""The training loop: run directory, every learner and optimizer, exact resume, divergence, refusals."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

from synthcl.errors import ConfigError, RunDirError, TrainingDiverged
from synthcl.interfaces import ContrastiveLearner
from synthcl.learners import SimCLR
from synthcl.registry import LEARNERS
from synthcl.training import train
from synthcl.training.session import RunSession


def test_run_directory_holds_everything(tmp_path, tiny_recipe):
    run = train(tiny_recipe(), out=tmp_path / "run", quiet=True)
    for name in ("recipe.yaml", "metrics.csv", "run.json", "backbone.safetensors", "backbone.json",
                 "checkpoints/last/weights.safetensors", "checkpoints/last/state.pt", "checkpoints/last/meta.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.*"))
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "completed" and status["step"] == 4
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(float(r["loss"]) > 0 for r in rows)


@pytest.mark.parametrize("learner", ["simclr", "mocov2", "byol"])
@pytest.mark.parametrize("optimizer", ["sgd", "lars", "adamw"])
def test_every_learner_trains_with_every_optimizer(tmp_path, tiny_recipe, learner, optimizer):
    recipe = tiny_recipe(model={"learner": learner}, optim={"name": optimizer, "grad_clip": 1.0,
                                                            "lr": 1e-3 if optimizer == "adamw" else 0.05})
    run = train(recipe, out=tmp_path / "run", quiet=True)
    weights = load_file(str(run / "checkpoints/last/weights.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
    assert json.loads((run / "run.json").read_text())["learner"] == learner


def test_training_changes_the_weights_and_lowers_the_loss(tmp_path, tiny_recipe, monkeypatch):
    from synthcl.training.step import LearnerStep

    initial = {}
    step = LearnerStep.__call__

    def first_weights(self, *args, **kwargs):
        if not initial:
            initial.update({k: v.detach().clone() for k, v in self.unwrapped.named_parameters()})
        return step(self, *args, **kwargs)

    monkeypatch.setattr(LearnerStep, "__call__", first_weights)
    recipe = tiny_recipe(train={"max_steps": None, "epochs": 6, "log_every": 8, "checkpoint_every": 100},
                         optim={"lr": 0.1})
    run = train(recipe, out=tmp_path / "run", quiet=True)
    final = load_file(str(run / "checkpoints/last/weights.safetensors"))
    # Every trained tensor moved from where the first step found it (the projector and the encoder alike).
    assert initial and all(not torch.equal(final[k], v) for k, v in initial.items())
    losses = [float(r["loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    # Not a coin flip: the last three logged losses average at least 5% below the first.
    assert sum(losses[-3:]) / 3 < 0.95 * losses[0], losses


def _weights(run):
    return load_file(str(run / "checkpoints/last/weights.safetensors"))


@pytest.mark.parametrize("learner", ["simclr", "mocov2"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, tiny_recipe, learner):
    full = train(tiny_recipe(model={"learner": learner}, train={"max_steps": 6, "checkpoint_every": 3}),
                 out=tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    train(tiny_recipe(model={"learner": learner}, train={"max_steps": 3, "checkpoint_every": 3}), out=part, quiet=True)
    train(tiny_recipe(model={"learner": learner}, train={"max_steps": 6, "checkpoint_every": 3}),
          out=part, resume=True, quiet=True)
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa = torch.load(full / "checkpoints/last/state.pt", weights_only=True)
    sb = torch.load(part / "checkpoints/last/state.pt", weights_only=True)
    assert sa["scheduler"] == sb["scheduler"]
    rows = [r["step"] for r in csv.DictReader(open(part / "metrics.csv"))]
    # The stopped run logged its last step (3); the resumed one continues from there without duplicates.
    assert rows == ["2", "3", "4", "6"]


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path, tiny_recipe):
    run = train(tiny_recipe(), out=tmp_path / "run", quiet=True)
    before = (run / "backbone.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run; pass --resume .* or --overwrite"):
        train(tiny_recipe(), out=run, quiet=True)
    assert (run / "backbone.safetensors").read_bytes() == before
    train(tiny_recipe(optim={"lr": 0.01}), out=run, overwrite=True, quiet=True)
    assert (run / "backbone.safetensors").read_bytes() != before


def test_non_run_directory_is_never_overwritten(tmp_path, tiny_recipe):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(RunDirError, match="exists and is not empty"):
        train(tiny_recipe(), out=folder, overwrite=True, quiet=True)
    assert (folder / "notes.txt").read_text() == "precious"


def test_resume_refuses_a_changed_recipe(tmp_path, tiny_recipe):
    run = train(tiny_recipe(), out=tmp_path / "run", quiet=True)
    with pytest.raises(ConfigError, match="changed: optim.lr"):
        train(tiny_recipe(optim={"lr": 0.5}), out=run, resume=True, quiet=True)
    with pytest.raises(RunDirError, match="cannot resume"):
        train(tiny_recipe(), out=tmp_path / "nothing", resume=True, quiet=True)


class _DivergingLearner(SimCLR):
    """SimCLR whose loss turns NaN from its fourth call."""

    def loss(self, views, groups):
        self.calls = getattr(self, "calls", 0) + 1
        value = super().loss(views, groups)
        return value * float("nan") if self.calls >= 4 else value


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, tiny_recipe):
    LEARNERS.register("diverging-test", _DivergingLearner, override=True)
    recipe = tiny_recipe(model={"learner": "diverging-test"}, train={"max_steps": 6, "log_every": 1})
    with pytest.raises(TrainingDiverged) as info:
        train(recipe, out=tmp_path / "run", quiet=True)
    message = str(info.value)
    assert "loss became nan at step 4" in message and "step 2" in message and "\n" not in message
    meta = json.loads((tmp_path / "run/checkpoints/last/meta.json").read_text())
    assert meta["step"] == 2
    weights = _weights(tmp_path / "run")
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
    status = json.loads((tmp_path / "run/run.json").read_text())
    assert status["status"] == "diverged" and status["diverged_at"] == 4


def _session(tmp_path, reduce=None, failure=None):
    return RunSession(tmp_path, {}, run_steps=10, start_step=0, steps_per_epoch=10, log_every=5, checkpoint_every=5,
                      columns=["step", "epoch", "loss"], loss_names=["loss"], save=lambda step: None,
                      divergence=("loss", "Try a lower optim.lr"), batch_size=4, title="t", quiet=True,
                      reduce=reduce, failure=failure)


def test_processes_agree_on_the_earliest_non_finite_loss(tmp_path):
    """Each process flags its own first bad step; the reduce finds the earliest of all, and the values printed
    are this process's only where its step is that one."""
    seen = []

    def other_process_bad_at(step):
        def reduce(state, op):
            seen.append(op)
            return torch.maximum(state, torch.full_like(state, -step))
        return reduce

    session = _session(tmp_path, reduce=other_process_bad_at(2))
    for step in range(4):
        session.record(step, torch.tensor([float("inf") if step >= 2 else 1.0]))  # bad from step 3 here
    with pytest.raises(TrainingDiverged, match="loss became non-finite at step 2 on another process"):
        session.check_divergence()
    assert json.loads((tmp_path / "run.json").read_text())["diverged_at"] == 2 and seen == ["max"]
    session = _session(tmp_path, reduce=other_process_bad_at(7))  # the other process went bad later
    for step in range(4):
        session.record(step, torch.tensor([float("inf") if step >= 2 else 1.0]))
    with pytest.raises(TrainingDiverged, match=r"loss became inf at step 3;"):
        session.check_divergence()
    assert json.loads((tmp_path / "run.json").read_text())["diverged_at"] == 3
    session = _session(tmp_path, reduce=lambda state, op: state)
    session.record(0, torch.tensor([1.0]))
    session.check_divergence()  # nothing went wrong anywhere


def test_whichever_went_wrong_first_is_blamed(tmp_path):
    """A learner loss that went NaN at step 5 makes every later generator loss NaN too, and the back-offs
    end in a synthesis failure at step 15: the learner is the one to blame. On a tie (samples that went
    non-finite make the loss non-finite at the same step) the generator is."""
    for synthesis_step, blamed in ((15, "loss became nan at step 5"), (5, "synthesis diverged at step 5")):
        session = _session(tmp_path, failure=lambda s=synthesis_step: (f"synthesis diverged at step {s} (x)", s))
        for step in range(6):
            session.record(step, torch.tensor([float("nan") if step == 4 else 1.0]))
        with pytest.raises(TrainingDiverged, match=blamed):
            session.check_divergence()
        assert json.loads((tmp_path / "run.json").read_text())["diverged_at"] == 5


@pytest.fixture
def python_signal_handlers():
    """Python's own SIGINT and SIGTERM handlers for the test, whatever this process inherited (a job started
    with `&` from a non-interactive shell begins with SIGINT ignored), and the inherited ones back after."""
    import signal

    inherited = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in inherited.items():
        signal.signal(sig, handler)


def test_a_second_ctrl_c_aborts_but_one_passed_on_by_a_launcher_does_not(monkeypatch, python_signal_handlers):
    import os
    import signal

    from synthcl.training.session import StopRequest

    clock = [100.0]
    monkeypatch.setattr("synthcl.training.session.time.monotonic", lambda: clock[0])
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the scheduler's, then the launcher's: still one request
        assert stop.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        clock[0] += 0.5
        os.kill(os.getpid(), signal.SIGINT)  # the same keypress, from the launcher
        assert stop.requested == "SIGINT"
        clock[0] += 2.0
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C: stop now
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_synthesis_failure_records_its_step(tmp_path):
    session = _session(tmp_path, failure=lambda: ("synthesis diverged at step 6 (x)", 6))
    with pytest.raises(TrainingDiverged, match="synthesis diverged at step 6"):
        session.check_divergence()
    status = json.loads((tmp_path / "run.json").read_text())
    assert status["status"] == "diverged" and status["diverged_at"] == 6


RANK_ONE_FAILS = """
import os

from synthcl.learners import SimCLR
from synthcl.registry import LEARNERS


@LEARNERS.register("rank-one-fails", override=True)
class RankOneFails(SimCLR):
    def loss(self, views, groups):
        self.calls = getattr(self, "calls", 0) + 1
        if os.environ.get("RANK") == "1" and self.calls == 3:
            raise RuntimeError("process 1 broke")
        return super().loss(views, groups)
"""


def test_an_error_on_another_process_is_what_run_json_records(tmp_path, tiny_recipe_file):
    """The main process then fails in its next collective ("connection closed by peer"): run.json keeps the
    error that came first, the one that says what went wrong, and the process it came from."""
    import subprocess
    import sys

    (tmp_path / "rank.py").write_text(RANK_ONE_FAILS)
    recipe = tiny_recipe_file(model={"learner": "rank-one-fails"}, train={"max_steps": 6, "log_every": 1})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "synthcl", "train", str(recipe), "--out", str(tmp_path / "run"), "-q", "--code", str(tmp_path / "rank.py")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    status = json.loads((tmp_path / "run/run.json").read_text())
    assert status["status"] == "failed", result.stderr[-4000:]
    assert status["error"] == "RuntimeError: process 1 broke (process 1)"
    assert status["step"] == json.loads((tmp_path / "run/checkpoints/last/meta.json").read_text())["step"]


def _failing_session(tmp_path, main, process):
    session = _session(tmp_path)
    session.main, session.process, session.info = main, process, {"processes": 2}
    return session


def test_the_first_process_to_record_an_error_keeps_it(tmp_path):
    with pytest.raises(RuntimeError), _failing_session(tmp_path, main=False, process=1):
        raise RuntimeError("seen by a process without the run's folder")
    assert not (tmp_path / "run.json").exists()  # another node's disk: nothing written there
    _session(tmp_path).write_status("running", 0)
    with pytest.raises(RuntimeError), _failing_session(tmp_path, main=False, process=1):
        raise RuntimeError("the cause")
    with pytest.raises(RuntimeError), _failing_session(tmp_path, main=True, process=0):
        raise RuntimeError("connection closed by peer")
    status = json.loads((tmp_path / "run.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: the cause (process 1)"


def test_a_checkpoint_of_the_main_process_keeps_another_process_s_failure(tmp_path):
    """Process 1 fails mid-run; the main process reaches a checkpoint before its next collective fails. The
    checkpoint's `running` used to replace the failure, and the main process's own error ("connection closed")
    was then recorded as the first; a failure left by an earlier attempt of the run is still replaced. Every
    process holds the main process's attempt (the loop broadcasts it)."""
    def other_process(main):
        session = _failing_session(tmp_path, main=False, process=1)
        session.attempt = main.attempt
        return session

    main = _failing_session(tmp_path, main=True, process=0)
    main.write_status("running", 0)  # the attempt's first write
    with pytest.raises(RuntimeError), other_process(main):
        raise RuntimeError("the cause")
    main.record(4, torch.zeros(1))
    main.end_step(5)  # a checkpoint step
    status = json.loads((tmp_path / "run.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: the cause (process 1)"
    main.write_status("interrupted", 5)  # a Ctrl-C on the main process before its collective fails
    with pytest.raises(RuntimeError), main:
        raise RuntimeError("connection closed by peer")
    assert json.loads((tmp_path / "run.json").read_text())["error"] == "RuntimeError: the cause (process 1)"

    resumed = _failing_session(tmp_path, main=True, process=0)
    resumed.write_status("running", 5)
    resumed.record(9, torch.zeros(1))
    resumed.end_step(10)
    status = json.loads((tmp_path / "run.json").read_text())
    assert status["status"] == "running" and status["step"] == 10 and "error" not in status

    # Process 1 fails before the main process has written anything of this attempt: its first write keeps it.
    again = _failing_session(tmp_path, main=True, process=0)
    with pytest.raises(RuntimeError), other_process(again):
        raise RuntimeError("failed early")
    again.write_status("running", 10)
    assert json.loads((tmp_path / "run.json").read_text())["error"] == "RuntimeError: failed early (process 1)"


def test_learner_interface_is_what_the_loop_uses():
    assert issubclass(SimCLR, ContrastiveLearner)
    with pytest.raises(TypeError):
        ContrastiveLearner()  # abstract: loss() is required


def test_distributed_launch_trains_on_two_cpu_processes(tmp_path, tiny_recipe_file):
    """Two gloo processes through a standard launcher; Accelerate picks the world up from the env."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "synthcl", "train", str(tiny_recipe_file()), "--out", str(tmp_path / "run"), "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    status = json.loads((tmp_path / "run/run.json").read_text())
    assert status["status"] == "completed" and status["processes"] == 2



def test_a_refusal_on_the_main_process_ends_every_process_with_its_line(tmp_path, tiny_recipe_file):
    """The folder's checks run on the main process only; the other process must stop with the same line
    instead of waiting at the next collective (where only a launcher that tears the job down ends it)."""
    import subprocess
    import sys

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "synthcl", "train", str(tiny_recipe_file()), "--out", str(out), "-q"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and lines[0] == lines[1] and str(out) in lines[0], result.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

@pytest.mark.parametrize("stage", ["learner", "generator"])
@pytest.mark.parametrize("precision", ["bf16", "no"])
def test_train_precision_is_the_precision_the_convolutions_run_in(tmp_path, tiny_recipe, monkeypatch, stage, precision):
    """`train.precision: bf16` runs the forward passes under bf16 autocast (learner runs and generator
    pretraining alike); `no` keeps them in fp32."""
    dtypes = set()
    forward = torch.nn.Conv2d.forward
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda self, x: (out := forward(self, x), dtypes.add(out.dtype))[0])
    sections = {"train": {"precision": precision}}
    if stage == "generator":
        sections = {"stage": "generator", "data": {"image_size": 28}, "train": {"precision": precision, "max_steps": 2},
                    "generator": {"name": "gan", "options": {"preset": "tiny"}, "sample_every": 2, "samples": 4}}
    run = train(tiny_recipe(**sections), out=tmp_path / "run", quiet=True)
    assert dtypes == ({torch.bfloat16} if precision == "bf16" else {torch.float32})
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert rows and all(math.isfinite(float(v)) for r in rows for k, v in r.items() if k.endswith("loss") and v)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])  # Ctrl-C; a scheduler's pre-emption or time limit
def test_ctrl_c_stops_cleanly_and_resume_equals_an_uninterrupted_run(tmp_path, tiny_recipe_file, signal_name):
    import signal
    import subprocess
    import sys
    import time

    recipe = tiny_recipe_file(train={"max_steps": 40, "epochs": 5, "log_every": 1, "checkpoint_every": 1000})
    full = train(recipe, out=tmp_path / "full", quiet=True)
    run = tmp_path / "run"
    # The child trains with this process's thread count (the same float reductions), whatever
    # OMP_NUM_THREADS the suite was started with.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "synthcl", "train", str(recipe), "--out", str(run), "-q"],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few steps are logged
        if (run / "metrics.csv").is_file() and len((run / "metrics.csv").read_text().splitlines()) > 3:
            break
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signal_name))
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    by = " by SIGTERM" if signal_name == "SIGTERM" else ""
    assert proc.returncode == 2 and f"interrupted{by} after step" in err and "Traceback" not in err
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted"
    stopped_at = json.loads((run / "checkpoints/last/meta.json").read_text())["step"]
    assert 0 < stopped_at < 40 and status["step"] == stopped_at
    train(recipe, out=run, resume=True, quiet=True)
    a, b = _weights(full), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_falls_back_to_the_previous_checkpoint_after_a_crash_mid_swap(tmp_path, tiny_recipe):
    full = train(tiny_recipe(train={"max_steps": 6, "checkpoint_every": 3}), out=tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    train(tiny_recipe(train={"max_steps": 3, "checkpoint_every": 3}), out=part, quiet=True)
    # A crash between the two renames of a checkpoint swap leaves only .last.old.
    (part / "checkpoints/last").rename(part / "checkpoints/.last.old")
    train(tiny_recipe(train={"max_steps": 6, "checkpoint_every": 3}), out=part, resume=True, quiet=True)
    a, b = _weights(full), _weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_when_progress_was_recorded_but_no_checkpoint_is_left(tmp_path, tiny_recipe):
    run = train(tiny_recipe(), out=tmp_path / "run", quiet=True)
    import shutil

    shutil.rmtree(run / "checkpoints")
    before = (run / "metrics.csv").read_text()
    with pytest.raises(RunDirError, match="holds no checkpoint"):
        train(tiny_recipe(), out=run, resume=True, quiet=True)
    assert (run / "metrics.csv").read_text() == before


def test_eval_uses_the_newest_weights_after_a_run_is_extended(tmp_path, tiny_recipe):
    import shutil

    from synthcl.eval.run import load_run_backbone

    run = train(tiny_recipe(train={"max_steps": 2}), out=tmp_path / "run", quiet=True)
    old_export = tmp_path / "export-2"
    old_export.mkdir()
    for name in ("backbone.json", "backbone.safetensors"):
        shutil.copy(run / name, old_export / name)
    train(tiny_recipe(train={"max_steps": 4}), out=run, resume=True, quiet=True)
    backbone, info = load_run_backbone(run)
    assert info["step"] == 4
    # A run resumed past its export and stopped before exporting again: its step-2 export beside a step-4
    # checkpoint. The checkpoint's weights are the ones measured.
    for name in ("backbone.json", "backbone.safetensors"):
        shutil.copy(old_export / name, run / name)
    backbone, info = load_run_backbone(run)
    checkpoint = load_file(str(run / "checkpoints/last/weights.safetensors"))
    weights = {k: v for k, v in backbone.state_dict().items() if v.is_floating_point()}
    assert info["step"] == 4 and weights
    assert all(torch.equal(v, checkpoint[f"backbone.{k}"]) for k, v in weights.items())
    stale = load_file(str(old_export / "backbone.safetensors"))
    assert any(not torch.equal(v, stale[k]) for k, v in weights.items())  # the export would have differed


def test_resume_restores_the_fp16_loss_scale(tmp_path, tiny_recipe, monkeypatch):
    """With fp16 (on a GPU) Accelerate scales the loss; the scale and its growth tracker are part of a
    checkpoint, so a resumed run continues with the scale the stopped one had reached. CPUs have no fp16
    autocast, so the scaler is installed by hand: it scales and unscales by powers of two, exactly."""
    from synthcl.training import loop

    original = loop.make_accelerator

    def with_scaler(**kwargs):
        accelerator = original(**kwargs)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
        return accelerator

    monkeypatch.setattr(loop, "make_accelerator", with_scaler)
    full = train(tiny_recipe(train={"max_steps": 6, "checkpoint_every": 3}), out=tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    train(tiny_recipe(train={"max_steps": 3, "checkpoint_every": 3}), out=part, quiet=True)
    train(tiny_recipe(train={"max_steps": 6, "checkpoint_every": 3}), out=part, resume=True, quiet=True)
    sa = torch.load(full / "checkpoints/last/state.pt", weights_only=True)
    sb = torch.load(part / "checkpoints/last/state.pt", weights_only=True)
    assert sa["grad_scaler"]["scale"] == 2.0**16  # grew once per step: the scaler really ran
    assert sa["grad_scaler"] == sb["grad_scaler"]
    a, b = _weights(full), _weights(part)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(("world", "threads", "cpu", "cuda", "refused"), [
    ("2", "", True, False, "OMP_NUM_THREADS=''"),
    ("2", "four", True, True, "OMP_NUM_THREADS='four'"),  # train.cpu=true: CPU processes even beside a GPU
    ("2", "", False, False, "OMP_NUM_THREADS=''"),  # no CUDA device: CPU processes whatever train.cpu says
    ("two", None, True, False, "WORLD_SIZE='two'"),
    ("2", "1", True, False, None),
    ("2", " 4 ", True, False, None),  # what int() reads, accelerate reads
    ("1", "", True, False, None),  # one process: OpenMP alone reads it, and ignores what it cannot read
    ("2", "", False, True, None),  # GPU processes: accelerate does not read it either
])
def test_a_cpu_launch_whose_thread_count_accelerate_cannot_read_is_refused_in_one_line(monkeypatch, world, threads,
                                                                                       cpu, cuda, refused):
    from synthcl.errors import SynthclError
    from synthcl.training.build import check_launch_environment

    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
    if refused is None:
        check_launch_environment(cpu)
        return
    with pytest.raises(SynthclError, match=refused) as err:
        check_launch_environment(cpu)
    assert "\n" not in str(err.value)


def test_training_checks_the_launch_environment_before_building_the_accelerator(tmp_path, tiny_recipe, monkeypatch):
    """Without the check, accelerate's own int('') ends every process of the launch with a bare ValueError."""
    from synthcl.errors import SynthclError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    with pytest.raises(SynthclError, match="OMP_NUM_THREADS"):
        train(tiny_recipe(), out=tmp_path / "run", quiet=True)


@pytest.mark.parametrize("kind", [PermissionError, "RunDirError", "needs-two-arguments"])
def test_every_process_raises_the_failure_of_another(monkeypatch, kind):
    """agreed(): a process whose own work went well raises what failed on another, as one synthcl line."""
    import accelerate.utils

    from synthcl.errors import RunDirError, SynthclError
    from synthcl.training.build import agreed

    class NeedsTwo(SynthclError):
        def __init__(self, message, extra):
            super().__init__(message)

    kinds = {"RunDirError": RunDirError, "needs-two-arguments": NeedsTwo}
    failed = (kinds.get(kind, kind), "cannot write runs/x: permission denied")
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda mine: [failed, *mine])
    world = type("World", (), {"num_processes": 2})()
    with pytest.raises(SynthclError, match="^cannot write runs/x: permission denied$") as info:
        agreed(world, lambda: "fine here")
    assert type(info.value) is (RunDirError if kind == "RunDirError" else SynthclError)
    # the process that failed raises its own error, after handing it on
    with pytest.raises(ZeroDivisionError):
        agreed(world, lambda: 1 / 0)
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda mine: [*mine, None])
    assert agreed(world, lambda: "fine") == "fine"
