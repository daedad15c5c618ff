"""Runs that must be refused before anything is written, and messages whose advice must work: resuming below
the step a run reached, a Ctrl-C while an --overwrite run warms its generator up, batches the training set
cannot fill, and a metrics.csv with columns the run does not write."""

from __future__ import annotations

import csv
import json
import shlex

import pytest
from conftest import merge
from test_cli import assert_one_line_error, run_cli, tree_digest

from synthcl.errors import ConfigError
from synthcl.training import train
from synthcl.training.session import RunInterrupted, StopRequest

# The joint method with its generator warmed up inside the run, at the GAN's smallest size.
JOINT = {"data": {"image_size": 28},
         "generator": {"name": "gan", "options": {"preset": "tiny"}, "pretrain_steps": 2, "pretrain_batch_size": 16,
                       "sample_every": 2, "samples": 4},
         "synthesis": {"mode": "joint", "ratio": 0.25, "sample_every": 2},
         "train": {"max_steps": 2}}
GENERATOR_STAGE = {"stage": "generator", "data": {"image_size": 28},
                   "generator": {"name": "gan", "options": {"preset": "tiny"}, "sample_every": 2, "samples": 4},
                   "train": {"max_steps": 2}}


def status_of(run):
    return json.loads((run / "run.json").read_text())


def stop_at_the_first_step(monkeypatch):
    """A Ctrl-C during the first step of every run session (as the review's sigint_driver.py does)."""
    original = StopRequest.__enter__

    def enter(self):
        entered = original(self)
        self.requested = "SIGINT"
        return entered

    monkeypatch.setattr(StopRequest, "__enter__", enter)


# -- train.max_steps below the step a run reached (review finding 2) -----------------------------------


@pytest.mark.parametrize("stage", [{}, GENERATOR_STAGE], ids=["learner", "generator"])
def test_resume_with_max_steps_below_the_reached_step_is_refused_before_anything_is_written(
        stage, tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    recipe = tiny_recipe_file(**merge(stage, {"train": {"max_steps": 2, "checkpoint_every": 2}}))
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")[0] == 0
    before = tree_digest(run)
    assert status_of(run)["step"] == 2

    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "train.max_steps=1", "--out", str(run),
                           "--resume", "-q")
    assert_one_line_error(code, err, "train.max_steps 1 is below the step 2 the run has reached")
    # run.json, recipe.yaml, metrics, the exports and the checkpoint: byte for byte, and no lock left
    assert tree_digest(run) == before
    assert status_of(run)["status"] == "completed" and "max_steps: 2" in (run / "recipe.yaml").read_text()

    # The advice works: a train.max_steps of the reached step or more resumes.
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "train.max_steps=3", "--out", str(run),
                           "--resume", "-q")
    assert code == 0, err
    assert (status_of(run)["status"], status_of(run)["step"]) == ("completed", 3)


# -- Ctrl-C before an --overwrite run's first checkpoint (review finding 4) ----------------------------


def test_ctrl_c_during_the_warm_up_of_an_overwrite_keeps_the_old_run_and_says_to_overwrite_again(
        tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "--out", str(run), "-q")[0] == 0
    before = tree_digest(run)
    joint = tiny_recipe_file(**JOINT)
    with monkeypatch.context() as patch:
        stop_at_the_first_step(patch)
        code, _, err = run_cli(monkeypatch, capsys, "train", str(joint), "--out", str(run), "--overwrite", "-q")
    assert_one_line_error(code, err, f"the previous run in {run} was kept")
    assert "--overwrite" in err and "--resume" not in err
    assert tree_digest(run) == before  # the old run, put back byte for byte
    assert not (run / ".replaced").exists() and not (run / ".lock").exists()

    # The advice works: the same command with --overwrite replaces the old run.
    code, _, err = run_cli(monkeypatch, capsys, "train", str(joint), "--out", str(run), "--overwrite", "-q")
    assert code == 0, err
    assert status_of(run)["status"] == "completed" and status_of(run)["synthesis"] == "joint"


def test_ctrl_c_during_the_warm_up_of_an_overwrite_into_a_new_folder_says_to_start_again(
        tmp_path, one_thread, tiny_recipe, monkeypatch):
    run = tmp_path / "run"
    stop_at_the_first_step(monkeypatch)
    with pytest.raises(RunInterrupted, match=r"the new run's files in .* were removed; start again with: .*--overwrite"):
        train(tiny_recipe(**JOINT), out=run, overwrite=True, quiet=True)
    assert not any(run.iterdir())



def test_a_diverging_warm_up_of_an_overwrite_keeps_the_old_run_and_names_no_removed_checkpoint(
        tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    """The warm-up's last good checkpoint is removed with the new run when the old one is put back: the
    message says the old run was kept, and names no checkpoint that is gone."""
    from synthcl.registry import GENERATORS, load_builtins

    load_builtins()
    gan = GENERATORS.get("gan")
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "--out", str(run), "-q")[0] == 0
    before = tree_digest(run)
    joint = tiny_recipe_file(**merge(JOINT, {"generator": {"pretrain_steps": 4}}))
    with monkeypatch.context() as patch:
        patch.setattr(gan, "realism_loss", lambda self, fake, real, generator=None: fake.sum() * float("nan"))
        code, _, err = run_cli(monkeypatch, capsys, "train", str(joint), "--out", str(run), "--overwrite", "-q")
    assert_one_line_error(code, err, "the generator's warm-up diverged: ")
    assert f"the previous run in {run} was kept" in err
    assert "checkpoint" not in err and "generator-pretrain" not in err
    assert tree_digest(run) == before  # the old run, put back byte for byte
    assert not (run / ".replaced").exists() and not (run / ".lock").exists()

def test_ctrl_c_at_the_first_learner_step_of_an_overwrite_checkpoints_first_so_resume_works(
        tmp_path, one_thread, tiny_recipe, monkeypatch, capsys):
    """The learner loop checkpoints before it stops, which drops the old run: its --resume advice holds, pasted
    as it is (the run's own recipe.yaml, paths quoted: this folder has a space)."""
    run = train(tiny_recipe(), out=tmp_path / "a run", quiet=True)
    new = tiny_recipe(optim={"lr": 0.01})
    with monkeypatch.context() as patch:
        stop_at_the_first_step(patch)
        with pytest.raises(RunInterrupted, match=r"interrupted after step 1; continue with: .* --resume") as stopped:
            train(new, out=run, overwrite=True, quiet=True)
    assert not (run / ".replaced").exists() and status_of(run)["status"] == "interrupted"
    advice = str(stopped.value).split("continue with: ")[1]
    assert advice == f"synthcl train {shlex.quote(str(run / 'recipe.yaml'))} --out {shlex.quote(str(run))} --resume"
    assert run_cli(monkeypatch, capsys, *shlex.split(advice)[1:], "-q")[0] == 0
    assert status_of(run)["status"] == "completed" and "lr: 0.01" in (run / "recipe.yaml").read_text()


# -- batches the training set cannot fill (review finding 5) -------------------------------------------


@pytest.mark.parametrize(("overrides", "fragment"), [
    # 9 x 16 = 144 extra real images per step from 128
    (["synthesis.mode=matched-views", "synthesis.ratio=9"],
     "synthesis.ratio 9 needs 144 extra real images per step (matched-views: ratio x train.batch_size 16), "
     "more than the 128 training images"),
    (["synthesis.mode=matched-views", "synthesis.ratio=3", "data.fraction=0.25"], "needs 48 extra real images"),
    (["train.batch_size=256"], "fewer than train.batch_size 256"),
])
def test_batches_larger_than_the_training_set_are_refused_before_the_folder_is_made(
        overrides, fragment, tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    recipe = tiny_recipe_file()
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), *overrides, "--out", str(tmp_path / "new"), "-q")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "new").exists()

    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")[0] == 0
    before = tree_digest(run)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), *overrides, "--out", str(run), "--overwrite",
                           "-q")
    assert_one_line_error(code, err, fragment)
    assert tree_digest(run) == before


def test_a_warm_up_batch_larger_than_the_training_set_is_refused_before_the_folder_is_made(
        tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    recipe = tiny_recipe_file(**merge(JOINT, {"generator": {"pretrain_batch_size": 256}}))
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, "fewer than generator.pretrain_batch_size 256")
    assert not (tmp_path / "run").exists()


def test_matched_views_that_fit_exactly_train(tmp_path, one_thread, tiny_recipe):
    # 8 x 16 = 128 extra real images per step: the whole training set, drawn afresh each step
    run = train(tiny_recipe(synthesis={"mode": "matched-views", "ratio": 8}, train={"max_steps": 1}),
                out=tmp_path / "run", quiet=True)
    assert status_of(run)["status"] == "completed"


# -- metrics.csv with columns the run does not write (review finding 11) ------------------------------


@pytest.mark.parametrize("stage", [{}, GENERATOR_STAGE], ids=["learner", "generator"])
@pytest.mark.parametrize("damage", ["extra column", "long row"])
def test_resume_refuses_a_metrics_file_with_columns_the_run_does_not_write(
        damage, stage, tmp_path, one_thread, tiny_recipe_file, monkeypatch, capsys):
    """Like a row without a whole step number (the existing convention): one line, nothing rewritten, and
    moving the file away resumes."""
    recipe = tiny_recipe_file(**merge(stage, {"train": {"max_steps": 2, "checkpoint_every": 2}}))
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")[0] == 0
    rows = list(csv.reader(open(run / "metrics.csv", newline="")))
    if damage == "extra column":
        rows = [rows[0] + ["extra"]] + [row + ["1"] for row in rows[1:]]
    else:
        rows = [rows[0]] + [row + ["1"] for row in rows[1:]]
    with open(run / "metrics.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    before = tree_digest(run)

    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "train.max_steps=4", "--out", str(run),
                           "--resume", "-q")
    assert_one_line_error(code, err, f"{run / 'metrics.csv'} is damaged (columns this run does not write")
    assert ("extra" if damage == "extra column" else "(unnamed)") in err
    assert tree_digest(run) == before  # metrics.csv and recipe.yaml untouched

    # The advice works: with the file moved away, the run resumes.
    (run / "metrics.csv").rename(tmp_path / "metrics-moved.csv")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "train.max_steps=4", "--out", str(run),
                           "--resume", "-q")
    assert code == 0, err
    assert status_of(run)["step"] == 4


# -- messages that say what to do (a user-journey review) ---------------------------------------------


def test_resuming_with_another_recipe_names_the_command_that_resumes(tmp_path, one_thread, tiny_recipe_file,
                                                                     monkeypatch, capsys):
    recipe = tiny_recipe_file(train={"max_steps": 2})
    run = tmp_path / "my runs" / "run 1"  # the advice is pasted into a shell: its paths are quoted
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "optim.lr=0.0123", "--out", str(run), "-q")[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "--resume", "-q")
    advice = f"synthcl train {shlex.quote(str(run / 'recipe.yaml'))} --out {shlex.quote(str(run))} --resume"
    assert_one_line_error(code, err, f"(changed: optim.lr); resume with the run's own recipe: {advice}")
    assert run_cli(monkeypatch, capsys, *shlex.split(advice)[1:], "-q")[0] == 0  # the advice works


def test_a_run_whose_recipe_names_a_component_not_registered_says_to_pass_its_file(tmp_path, one_thread, plain_run,
                                                                                  monkeypatch, capsys):
    """The recipe file is whole; the dataset (say) came from a --code file that this command was not given.
    It was called damaged, with a near-miss suggestion of a built-in."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(plain_run, run)
    stored = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(stored.replace("dataset: shapes", "dataset: stripes"))
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "knn", "-q")
    assert_one_line_error(code, err, "names a component this command has not registered (data.dataset: unknown dataset")
    assert "passing its file again (--code FILE)" in err and "damaged" not in err
    # a name with no near miss: the registry's hint about --code is not said twice
    (run / "recipe.yaml").write_text(stored.replace("dataset: shapes", "dataset: zzqx-mine"))
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "knn", "-q")
    assert_one_line_error(code, err, "(data.dataset: unknown dataset 'zzqx-mine' (valid: ")
    assert err.count("--code FILE") == 1, err


def test_a_pretrained_generator_that_does_not_exist_says_to_train_it(tmp_path, one_thread, tiny_recipe_file,
                                                                     monkeypatch, capsys):
    recipe = tiny_recipe_file(**merge(JOINT, {"generator": {"pretrained": str(tmp_path / "gan"), "pretrain_steps": 0},
                                              "synthesis": {"mode": "static"}}))
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, f"generator.pretrained: {(tmp_path / 'gan').resolve()} does not exist; train a "
                                     "generator there")


def test_a_generator_run_resumes_under_another_synthesis_section_but_not_another_generator(tmp_path, one_thread,
                                                                                          tiny_recipe):
    """A generator run never reads `synthesis`: resuming it with other synthesis settings (another mode's
    recipe sharing its warm-up) continues it; a changed generator setting is still another run."""
    stage = merge(GENERATOR_STAGE, {"train": {"max_steps": 4, "checkpoint_every": 2}})
    run = tmp_path / "gen"
    train(tiny_recipe(**merge(stage, {"train": {"max_steps": 2}})), out=run, quiet=True)
    other = merge(stage, {"synthesis": {"ratio": 0.5, "generator_every": 4}})
    with pytest.raises(ConfigError, match=r"changed: generator.lr"):
        train(tiny_recipe(**merge(other, {"generator": {"lr": 0.5}})), out=run, resume=True, quiet=True)
    train(tiny_recipe(**other), out=run, resume=True, quiet=True)
    assert status_of(run)["status"] == "completed" and status_of(run)["step"] == 4
