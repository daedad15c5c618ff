"""The run directory under careless or hostile use: --overwrite never deletes a user's file nor the old run
before the new one can start, a second process cannot write into a run in use, `generate` never replaces a
run's weights, and a recipe's name cannot point the run outside runs/."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_cli import assert_one_line_error, run_cli, tree_digest

from synthcl.config import load_recipe
from synthcl.errors import ConfigError, RunDirError
from synthcl.rundir import LOCK_FILE, acquire_lock, prepare_run_dir, release_lock, training_seconds
from synthcl.training import train


def test_overwrite_refuses_a_folder_that_holds_a_users_file(tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    recipe = tiny_recipe_file()
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")[0] == 0
    (run / "thesis.tex").write_text("two years of work")
    before = tree_digest(run)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "--overwrite", "-q")
    assert_one_line_error(code, err, "holds files that are not the run's (thesis.tex)")
    assert tree_digest(run) == before


def test_overwrite_that_fails_before_training_leaves_the_old_run(tmp_path, one_thread, tiny_recipe_file, monkeypatch,
                                                                 capsys):
    recipe = tiny_recipe_file()
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")[0] == 0
    before = tree_digest(run)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "data.dataset=cifar10",
                           f"data.root={tmp_path / 'nonexistent'}", "--out", str(run), "--overwrite", "-q")
    assert code == 2 and "Traceback" not in err
    assert tree_digest(run) == before  # the old run, whole
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "--overwrite", "-q")[0] == 0
    assert not (run / LOCK_FILE).exists()  # a finished run gives its lock back


def test_a_run_in_use_by_a_live_process_is_refused_and_a_stale_lock_is_taken_over(tmp_path, one_thread, tiny_recipe):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_FILE).write_text(str(sleeper.pid))
        with pytest.raises(RunDirError, match=rf"being written by another synthcl process \(pid {sleeper.pid}\)"):
            train(tiny_recipe(), out=run, quiet=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    # the same pid, its process gone: a crashed run's lock, taken over
    assert train(tiny_recipe(), out=run, quiet=True) == run
    assert not (run / LOCK_FILE).exists()


def test_the_lock_is_exclusive_between_processes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    acquire_lock(run)
    try:
        code = f"from synthcl.rundir import acquire_lock; from pathlib import Path; acquire_lock(Path({str(run)!r}))"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    finally:
        release_lock(run)
    assert not (run / LOCK_FILE).exists()


def test_a_new_run_being_written_is_not_an_empty_folder(tmp_path, tiny_recipe):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_FILE).write_text(str(sleeper.pid))
        with pytest.raises(RunDirError, match="being written by another synthcl process"):
            prepare_run_dir(run, tiny_recipe(), resume=False, overwrite=True)
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("target", ["backbone.safetensors", "recipe.yaml", "grid.jpg"])
def test_generate_never_replaces_a_file_that_is_not_a_png(tmp_path, target, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "backbone.safetensors").write_bytes(b"weights")
    (run / "recipe.yaml").write_text("name: x\n")
    before = tree_digest(run)
    code, _, err = run_cli(monkeypatch, capsys, "generate", str(run), "--out", str(run / target))
    assert_one_line_error(code, err, "--out")
    assert tree_digest(run) == before


@pytest.mark.parametrize("name", ["../escape", "/abs/path", ".hidden", "a/b"])
def test_a_recipe_name_cannot_point_outside_runs(name):
    with pytest.raises(ConfigError, match="must be a plain folder name"):
        load_recipe("quickstart", [f"name={name}"])


@pytest.mark.parametrize("override", ["model.width=100000", "train.epochs=inf", "optim.betas=[2,3]",
                                      "train.seed=99999999999999999999", "eval.linear_lr=nan", "synthesis.sample_every=0"])
def test_values_that_used_to_crash_later_get_one_line(tmp_path, one_thread, tiny_recipe_file, override, monkeypatch,
                                                       capsys):
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), override, "--out", str(tmp_path / "r"),
                           "-q")
    assert_one_line_error(code, err, override.split("=")[0] if "width" not in override else "out of memory")


def _finished(tmp_path, tiny_recipe_file, monkeypatch, capsys):
    run = tmp_path / "run"
    recipe = tiny_recipe_file(train={"max_steps": 4, "checkpoint_every": 2})
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "train.max_steps=2", "-q")[0] == 0
    return run, recipe


@pytest.mark.parametrize("damage", ["meta-step", "state-entries", "metrics"])
def test_damaged_run_files_get_one_line_on_resume(tmp_path, one_thread, tiny_recipe_file, damage, monkeypatch, capsys):
    import json

    import torch

    run, recipe = _finished(tmp_path, tiny_recipe_file, monkeypatch, capsys)
    last = run / "checkpoints" / "last"
    if damage == "meta-step":
        meta = json.loads((last / "meta.json").read_text())
        (last / "meta.json").write_text(json.dumps(meta | {"step": "two"}))
    elif damage == "state-entries":
        torch.save({"step": 2}, last / "state.pt")
    else:
        (run / "metrics.csv").write_text("step,loss\nabc,1\n")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "--resume", "-q")
    assert_one_line_error(code, err, str(run))


def test_damaged_backbone_description_gets_one_line(tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    import json

    run, _ = _finished(tmp_path, tiny_recipe_file, monkeypatch, capsys)
    info = json.loads((run / "backbone.json").read_text())
    (run / "backbone.json").write_text(json.dumps(info | {"options": {"width": "wide"}}))
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "knn", "-q")
    assert_one_line_error(code, err, "backbone description")
    (run / "backbone.json").write_text(json.dumps(info | {"step": "late"}))
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "knn", "-q")
    assert_one_line_error(code, err, "not a whole number")


@pytest.mark.parametrize("body", ["def broken(:\n", "raise RuntimeError('no GPU here')\n"])
def test_code_files_that_fail_to_import_get_one_line(tmp_path, body, tiny_recipe_file, monkeypatch, capsys):
    code_file = tmp_path / "mine.py"
    code_file.write_text(body)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "--code", str(code_file), "-q",
                           "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, f"--code {code_file}")


def test_corrupt_gzip_body_gets_one_line(tmp_path, monkeypatch):
    import gzip

    from synthcl.data import load_dataset

    good = gzip.compress(b"\0" * 64)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(good[:12] + b"\xff" * 20 + good[32:])
    with pytest.raises(Exception) as err:
        load_dataset("fashion-mnist", "train", root=str(tmp_path))
    assert type(err.value).__name__ == "DataError" and "\n" not in str(err.value)


def test_a_full_disk_while_checkpointing_gets_one_line_and_keeps_the_last_checkpoint(tmp_path, one_thread,
                                                                                      tiny_recipe_file, monkeypatch,
                                                                                      capsys):
    from synthcl.training import checkpoint, loop

    recipe = tiny_recipe_file(train={"max_steps": 4, "checkpoint_every": 2})
    run = tmp_path / "run"
    original, calls = checkpoint.save_checkpoint, []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", full_disk)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")
    assert_one_line_error(code, err, "is the disk full?")
    import json

    assert json.loads((run / "checkpoints" / "last" / "meta.json").read_text())["step"] == 2


@pytest.mark.parametrize("failure", [RuntimeError("boom at the first step"), KeyboardInterrupt()])
def test_overwrite_that_fails_after_the_model_is_built_puts_the_old_run_back(
        failure, tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    """The old run is moved aside, not deleted, until the new run has a checkpoint: a failure or Ctrl-C at
    the first step (after data and model were built) restores it byte for byte."""
    from synthcl.training import step as step_module

    recipe = tiny_recipe_file()
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")[0] == 0
    before = tree_digest(run)

    def fail(self, step, images, real=None):
        raise failure

    with monkeypatch.context() as patch:
        patch.setattr(step_module.LearnerStep, "__call__", fail)
        with pytest.raises(type(failure)):
            train(recipe, out=run, overwrite=True, quiet=True)
    assert tree_digest(run) == before
    assert not (run / ".replaced").exists() and not (run / LOCK_FILE).exists()


def test_overwrite_drops_the_old_run_at_the_first_checkpoint(tmp_path, one_thread, tiny_recipe, monkeypatch):
    """Once the new run has written a checkpoint the old run is gone; until then it waits in .replaced."""
    from synthcl.training import loop

    run = train(tiny_recipe(), out=tmp_path / "run", quiet=True)
    seen = []
    original = loop.save_checkpoint

    def spy(run_dir, *args, **kwargs):
        seen.append((run_dir / ".replaced").is_dir())
        return original(run_dir, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", spy)
    train(tiny_recipe(optim={"lr": 0.01}), out=run, overwrite=True, quiet=True)
    assert seen[0] is True  # the old run was still there, aside, until the first checkpoint was written
    assert not (run / ".replaced").exists()
    assert "lr: 0.01" in (run / "recipe.yaml").read_text()


def test_overwrite_replaces_only_folders_with_synthcls_marker(tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    """A folder that merely has files named recipe.yaml and run.json is not a run to delete."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "recipe.yaml").write_text("my notes on recipes\n")
    (folder / "run.json").write_text('{"status": "my own json"}')
    before = tree_digest(folder)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "--out", str(folder), "--overwrite", "-q")
    assert_one_line_error(code, err, "no synthcl run marker")
    assert tree_digest(folder) == before


def test_a_replacement_killed_half_way_keeps_the_older_complete_run(tmp_path, one_thread, tiny_recipe):
    """SIGKILL between moving the old run aside and the first checkpoint leaves .replaced: the next
    --overwrite keeps that complete run aside (not the killed one's partial files) until it has its own."""
    from synthcl.rundir import clear_old_run, restore_replaced_run

    run = train(tiny_recipe(), out=tmp_path / "run", quiet=True)
    complete = tree_digest(run)
    clear_old_run(run)  # what a killed --overwrite left: the old run aside...
    (run / "metrics.csv").write_text("step,loss\n1,nan\n")  # ...and a partial new run
    clear_old_run(run)  # the next --overwrite
    assert not (run / "metrics.csv").exists() and (run / ".replaced").is_dir()
    restore_replaced_run(run)
    assert tree_digest(run) == complete


def test_training_seconds_add_up_the_stretches_of_a_resumed_run(tmp_path):
    assert training_seconds(tmp_path) == 0.0  # no metrics yet
    (tmp_path / "metrics.csv").write_text("step,elapsed_s\n2,1.0\n4,2.0\n6,0.5\n8,1.5\n")
    assert training_seconds(tmp_path) == 3.5  # 2.0 before the stop, 1.5 after the resume
    assert training_seconds(tmp_path, until=4) == 2.0
