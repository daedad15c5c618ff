"""The eval*.json files of a run and the report that reads them: a later evaluation adds to what is there,
results of older weights are set aside (never shown as current, never deleted), damaged files are skipped by
the report, and the report never deletes a file of the user's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest.mock import ANY

import pytest
import yaml
from conftest import TINY, merge, train_tiny
from test_cli import assert_one_line_error, run_cli, tree_digest

from synthcl.eval.results import CHECKPOINT, SUPERSEDED, combine_probes, merge_result, update_result
from synthcl.training import train

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("gen"), stage="generator",
                      generator={"name": "gan", "options": {"preset": "tiny"}}, data={"image_size": 28},
                      train={"max_steps": 2})


@pytest.fixture
def copy_of(tmp_path):
    def make(run, name="run"):
        return shutil.copytree(run, tmp_path / name)
    return make


def _json(path):
    return json.loads(path.read_text())


def _report(monkeypatch, capsys, run):
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--report", "-q")
    assert code == 0, err
    return (run / "report" / "report.md").read_text()


# -- finding 1: a later evaluation adds to the file --------------------------------------------------------


def test_a_later_protocol_adds_to_eval_json(monkeypatch, capsys, plain_run, copy_of):
    run = copy_of(plain_run)
    assert run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "linear", "-q")[0] == 0
    linear = _json(run / "eval.json")["linear_top1"]
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "knn", "-q")
    assert code == 0, err
    assert "kNN top-1" in out and "linear probe" not in out  # prints what it measured, not the whole file
    result = _json(run / "eval.json")
    assert result["linear_top1"] == linear and "knn_top1" in result and SUPERSEDED not in result
    assert result[CHECKPOINT]["step"] == 4 and len(result[CHECKPOINT]["weights"]) == 20
    text = _report(monkeypatch, capsys, run)
    assert "linear probe top-1 (%)" in text and "kNN top-1 (%)" in text and f"{linear:.2f}" in text
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # the atomic write left nothing


def test_efficiency_and_transfer_fractions_add_up(monkeypatch, capsys, plain_run, copy_of):
    run = copy_of(plain_run)
    for fractions in ("0.5", "1,0.25"):
        code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "efficiency",
                                 "--label-fractions", fractions, "-q")
        assert code == 0, err
    assert "50% labels" not in out  # the second run measured (and printed) only its own fractions
    result = _json(run / "eval-efficiency.json")
    assert [r["label_fraction"] for r in result["results"]] == result["label_fractions"] == [0.25, 0.5, 1.0]
    assert result["plot"] == "eval-efficiency.png" and (run / "eval-efficiency.png").stat().st_size > 1000
    # Transfer to the run's own dataset (offline, small): the same.
    for fractions in ("1", "0.5"):
        code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "transfer", "--dataset",
                               "shapes", "--label-fractions", fractions, "-q")
        assert code == 0, err
    transfer = _json(run / "eval-transfer-shapes.json")
    assert [r["label_fraction"] for r in transfer["results"]] == [0.5, 1.0] and "knn_top1" in transfer
    text = _report(monkeypatch, capsys, run)
    assert "| 25% |" in text and "| 50% |" in text and "| 100% |" in text
    # Not quiet: each probe is announced as it starts, and its figure printed once, in the summary.
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "transfer", "--dataset", "shapes",
                             "--label-fractions", "0.25")
    assert code == 0, err
    assert "linear probe on 25% of the labels ..." in out
    figure = f"{_json(run / 'eval-transfer-shapes.json')['results'][0]['linear_top1']:.2f}%"
    assert sum(figure in line for line in out.splitlines() if "linear probe top-1" in line) == 1, out


def test_results_of_weights_trained_further_are_set_aside(monkeypatch, capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(merge(TINY, {"data": {"num_workers": 0}, "train": {"max_steps": 2}})))
    run = train(recipe, out=tmp_path / "run", quiet=True)
    for args in (["--protocol", "linear"], ["--protocol", "knn", "--init", "random"]):
        assert run_cli(monkeypatch, capsys, "eval", str(run), *args, "-q")[0] == 0
    before = _json(run / "eval.json")
    train(recipe, out=run, resume=True, quiet=True, overrides=["train.max_steps=4"])  # trained further

    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "knn")
    assert code == 0, err
    assert "note: eval.json held results measured on other weights (step 2; now step 4)" in out
    result = _json(run / "eval.json")
    assert "linear_top1" not in result and result[CHECKPOINT]["step"] == 4  # the step-2 probe is not current
    assert result[SUPERSEDED] == [before]  # ... but it is kept, whole
    text = _report(monkeypatch, capsys, run)
    assert "kNN top-1 (%)" in text and "linear probe top-1 (%)" not in text

    # The random-init floor does not depend on training: it still adds up after the resume.
    assert run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "linear", "--init", "random", "-q")[0] == 0
    floor = _json(run / "eval-random.json")
    assert {"knn_top1", "linear_top1"} <= set(floor) and SUPERSEDED not in floor and "step" not in floor[CHECKPOINT]


def test_generator_measurements_of_other_feature_spaces_and_n_add_up(monkeypatch, capsys, generator_run, copy_of):
    import torch

    import synthcl.eval.generator_eval as generator_eval

    class Features:
        def __init__(self, label):
            self.label = label

    def metrics(sample, images, extractor, *, n, seed, real_features=None):
        return {"fd": float(n), "kid": 0.5, "kid_std": 0.1, "feature_space": extractor.label,
                "real_features": torch.zeros(1)}

    monkeypatch.setattr(generator_eval, "generator_metrics", metrics)
    run = copy_of(generator_run)
    for label, n in (("space A", 8), ("space B", 8), ("space A", 16), ("space A", 8)):
        monkeypatch.setattr(generator_eval, "inception_features", lambda label=label: Features(label))
        generator_eval.evaluate_generator(run, n=n, quiet=True)
    result = _json(run / "eval-generator.json")
    assert [(m["feature_space"], m["n"]) for m in result["measurements"]] == [("space B", 8), ("space A", 16),
                                                                             ("space A", 8)]
    # The top level is the newest measurement, as before (benchmarks/quality.py reads n and generator).
    assert (result["feature_space"], result["n"], result["generator"]["fd"]) == ("space A", 8, 8.0)
    text = _report(monkeypatch, capsys, run)
    assert "space B, n=8" in text and "space A, n=16" in text and "space A, n=8" in text

    # A file measured on other generator weights is set aside.
    stale = {**result, CHECKPOINT: {"weights": "0" * 20, "step": 1}}
    (run / "eval-generator.json").write_text(json.dumps(stale))
    generator_eval.evaluate_generator(run, n=16, quiet=True)
    result = _json(run / "eval-generator.json")
    assert [(m["feature_space"], m["n"]) for m in result["measurements"]] == [("space A", 16)]
    assert result[SUPERSEDED][0][CHECKPOINT]["step"] == 1


def test_merge_result_keeps_what_it_cannot_merge(tmp_path, capsys):
    path = tmp_path / "eval.json"
    new = {"init": "trained", CHECKPOINT: {"weights": "a"}, "knn_top1": 1.0, "seconds": 1.0}
    path.write_text("not json{")  # a corrupt file holds nothing to keep
    assert merge_result(path, new, context=("init",), combine=combine_probes) == new
    path.write_text(json.dumps({"init": "random", CHECKPOINT: {"weights": "a"}, "linear_top1": 2.0,
                                SUPERSEDED: [{"old": 1}]}))
    merged = merge_result(path, new, context=("init",), combine=combine_probes)
    assert "other settings" in capsys.readouterr().out
    assert "linear_top1" not in merged
    assert merged[SUPERSEDED] == [{"init": "random", CHECKPOINT: {"weights": "a"}, "linear_top1": 2.0}, {"old": 1}]
    path.write_text(json.dumps({"init": "trained", CHECKPOINT: {"weights": "a"}, "linear_top1": 2.0, "seconds": 2.0}))
    assert merge_result(path, new, context=("init",), combine=combine_probes, quiet=True) == {
        **new, "linear_top1": 2.0, "seconds": 3.0}



def test_two_evaluations_of_one_run_at_once_both_land(tmp_path):
    """Two ``synthcl eval`` processes on one run (kNN and linear side by side): the second must merge into
    the first one's file, not write over it from what the file held before the first one wrote."""
    import threading

    path = tmp_path / "eval.json"
    weights = {CHECKPOINT: {"weights": "a"}, "init": "trained"}
    path.write_text(json.dumps({**weights, "few_label_top1": 3.0, "seconds": 1.0}))
    inside, second_done = threading.Event(), threading.Event()

    def slow_combine(previous, new):
        inside.set()  # the first evaluation has read the file and is merging
        second_done.wait(timeout=1.0)  # unlocked, the second one reads, merges and writes meanwhile
        return combine_probes(previous, new)

    first = threading.Thread(target=update_result, args=(path, {**weights, "knn_top1": 1.0, "seconds": 1.0}),
                             kwargs={"context": ("init",), "combine": slow_combine, "quiet": True})
    first.start()
    assert inside.wait(timeout=10)
    update_result(path, {**weights, "linear_top1": 2.0, "seconds": 1.0}, context=("init",), combine=combine_probes,
                  quiet=True)
    second_done.set()
    first.join(timeout=10)
    held = json.loads(path.read_text())
    assert (held["few_label_top1"], held["knn_top1"], held["linear_top1"]) == (3.0, 1.0, 2.0)
    assert held["seconds"] == 3.0 and SUPERSEDED not in held
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no lock file left in the run folder



@pytest.mark.parametrize("failing", ["open", "flock"])
def test_a_folder_that_cannot_be_locked_still_gets_the_result(tmp_path, monkeypatch, failing):
    """A filesystem without flock (some network and FUSE ones), or a folder that cannot be opened for
    reading: the evaluation is finished, so it is written unlocked rather than lost."""
    import fcntl
    import os

    def refuse(*args, **kwargs):
        raise OSError(37, "No locks available")

    if failing == "open":
        real_open = os.open
        monkeypatch.setattr(os, "open", lambda path, *a, **k: refuse() if Path(path) == tmp_path else real_open(path, *a, **k))
    else:
        monkeypatch.setattr(fcntl, "flock", refuse)
    path = tmp_path / "eval.json"
    new = {"init": "trained", CHECKPOINT: {"weights": "a"}, "knn_top1": 1.0, "seconds": 1.0}
    assert update_result(path, new, context=("init",), combine=combine_probes, quiet=True) == new
    assert json.loads(path.read_text()) == new

def test_the_floors_of_a_run_stopped_before_its_first_checkpoint(monkeypatch, capsys, plain_run, copy_of):
    """Random init and raw pixels need no trained weights: run.json's description (written at the first
    step) rebuilds the backbone and its standardisation; the trained protocol still needs a checkpoint."""
    import shutil

    finished, stopped = copy_of(plain_run), copy_of(plain_run, "stopped")
    shutil.rmtree(stopped / "checkpoints")
    for name in ("backbone.json", "backbone.safetensors"):
        (stopped / name).unlink()
    status = _json(stopped / "run.json")
    (stopped / "run.json").write_text(json.dumps(status | {"status": "running", "step": 0}))
    for init in ("random", "pixels"):
        for run in (finished, stopped):
            code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--init", init, "--protocol", "knn", "-q")
            assert code == 0, err
        # the same floor as the finished run's: the same backbone at seed 0, the same standardisation
        assert _json(stopped / f"eval-{init}.json") == _json(finished / f"eval-{init}.json") | {
            "seconds": ANY, "run_dir": str(stopped)}
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(stopped), "--protocol", "knn", "-q")
    assert code == 2 and "has no checkpoint yet" in err

# -- finding 3: the report skips wrong-shaped files ---------------------------------------------------------


@pytest.mark.parametrize(
    "name, content",
    [
        ("eval.json", {"linear_top1": "x", "few_label_fraction": "abc"}),
        ("eval.json", {"knn_top1": [1]}),
        ("eval-random.json", {"linear_few_top1": {"a": 1}, "few_label_fraction": 0.1}),
        ("eval-efficiency.json", {"dataset": "shapes"}),
        ("eval-efficiency.json", {"dataset": "shapes", "results": "none"}),
        ("eval-efficiency.json", {"dataset": "shapes", "results": []}),
        ("eval-efficiency.json", {"dataset": "shapes", "results": [{"label_fraction": 0.0, "linear_top1": 1,
                                                                    "train_images": 1}]}),
        ("eval-efficiency-random.json", {"dataset": 3, "results": [{"label_fraction": 0.1, "linear_top1": 1,
                                                                    "train_images": 1}]}),
        ("eval-transfer-mnist.json", {"results": [{"label_fraction": 0.1}]}),
        ("eval-transfer-mnist.json", {"dataset": "mnist", "results": [5]}),
        ("eval-transfer-mnist.json", {"dataset": "mnist", "knn_top1": "x", "results": [
            {"label_fraction": 0.1, "linear_top1": 1.0, "train_images": 4}]}),
        ("eval-generator.json", {"generator": [1, 2]}),
        ("eval-generator.json", {"generator": {"fd": "x"}}),
        ("eval-generator.json", {"measurements": [3]}),
        ("eval-generator-random.json", {"measurements": [{"partner": {"kid": None}}]}),
    ],
)
def test_report_skips_eval_files_of_the_wrong_shape(monkeypatch, capsys, plain_run, copy_of, name, content):
    run = copy_of(plain_run)
    (run / name).write_text(json.dumps(content))
    text = _report(monkeypatch, capsys, run)
    assert f"Skipped (unreadable or corrupt): {name}." in text


def test_report_shows_the_good_files_beside_a_skipped_one(monkeypatch, capsys, plain_run, copy_of):
    run = copy_of(plain_run)
    (run / "eval.json").write_text(json.dumps({"dataset": "shapes", "knn_top1": 42.125}))
    (run / "eval-efficiency.json").write_text(json.dumps({"dataset": "shapes", "results": [{"label_fraction": 1}]}))
    text = _report(monkeypatch, capsys, run)
    assert "42.12" in text and "Skipped (unreadable or corrupt): eval-efficiency.json." in text


def test_report_on_a_metrics_csv_that_is_not_utf8(monkeypatch, capsys, plain_run, copy_of):
    run = copy_of(plain_run)
    good = (run / "metrics.csv").read_bytes()
    (run / "metrics.csv").write_bytes(b"\xff\xfe\x00binary")
    text = _report(monkeypatch, capsys, run)
    assert "No metrics logged yet" in text and "loss.png" not in text
    # A line of garbage after good rows costs that line only.
    (run / "metrics.csv").write_bytes(good + b"\xff\xfe,\x80\x81\n")
    text = _report(monkeypatch, capsys, run)
    assert "loss.png" in text and "No metrics logged yet" not in text


# -- finding 8: the report never deletes a file of the user's ----------------------------------------------


@pytest.mark.parametrize("mine", ["mynotes.md", "data/notes.txt"])
def test_report_refuses_to_delete_the_users_files_in_report(monkeypatch, capsys, plain_run, copy_of, mine):
    run = copy_of(plain_run)
    _report(monkeypatch, capsys, run)
    (run / "report" / mine).parent.mkdir(parents=True, exist_ok=True)
    (run / "report" / mine).write_text("mine")
    before = tree_digest(run)
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--report")
    assert_one_line_error(code, err, f"holds files that are not the report's ({mine.split('/')[0]})")
    assert tree_digest(run) == before  # the old report and the user's file are untouched
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
