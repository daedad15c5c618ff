"""Careless and hostile input, drawn at random: many override values against every recipe key, and damaged
run files against eval and resume. Whatever comes in, the CLI answers with exit status 2 and one line
(or succeeds), never a traceback, and a refused command leaves every file it found byte-identical.
An unexpected error becomes one line naming a log of its traceback."""

from __future__ import annotations

import dataclasses
import random
import shutil
import typing

import pytest
from test_cli import run_cli, tree_digest

from synthcl.config import Recipe

VALUES = ["nan", "inf", "-inf", "-1", "0", "1", "-0.5", "0.5", "1.5", "2", "1e308", "-1e308", "1e-300",
          "1180591620717411303424", "9" * 40, "abc", "''", "null", "true", "false", "[]", "[1, 2, 3]", "[nan, 1]",
          "{}", "{a: 1}", "[[1]]", "../../etc", "/abs", "!!python/object:os.system 'true'", "0x10", "1_000"]


def recipe_keys(cls: type = Recipe, prefix: str = "") -> list[str]:
    """Every dotted key of the recipe schema (nested sections expanded)."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        section = tp if dataclasses.is_dataclass(tp) else (args[0] if len(args) == 1 and dataclasses.is_dataclass(args[0]) else None)
        if section is not None:
            keys += recipe_keys(section, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def assert_refused_in_one_line(code: int, err: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished run, trained once for the module."""
    import yaml
    from conftest import TINY

    from synthcl.training import train

    root = tmp_path_factory.mktemp("fuzz")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    train(recipe, out=root / "run", quiet=True)
    return recipe, root / "run"


def test_random_override_values_never_crash(finished_run, monkeypatch, capsys, one_thread):
    """300 (key, value) draws: each one is refused in one line (a bad value, or a valid one refused because
    the run directory exists) and the existing run is untouched."""
    recipe, run = finished_run
    before = tree_digest(run)
    keys = recipe_keys()
    assert len(keys) > 80  # the schema really was walked
    rng = random.Random(0)
    for _ in range(300):
        key, value = rng.choice(keys), rng.choice(VALUES)
        code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), f"{key}={value}", "--out", str(run), "--quiet")
        assert_refused_in_one_line(code, err)
    assert tree_digest(run) == before


def train_each_for_a_step(draws, tmp_path, monkeypatch, capsys) -> int:
    """Each (key, value) into a fresh folder, trained for one step: accepted means trained (a checkpoint), refused
    means one line. Returns how many trained."""
    import yaml
    from conftest import TINY

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    trained = 0
    for i, (key, value) in enumerate(draws):
        out = tmp_path / f"run{i}"
        code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), f"{key}={value}", "train.max_steps=1",
                               "--out", str(out), "--quiet")
        if code == 0:
            trained += 1
            assert (out / "checkpoints" / "last").is_dir(), (key, value)
        else:
            assert_refused_in_one_line(code, err)
    return trained


# train.compile is left out (compiling takes minutes on a CPU; test_speed_knobs covers it).
TRAINABLE_KEYS = [k for k in recipe_keys() if k not in ("train.compile", "train.max_steps")]


def test_random_override_values_train_a_step_or_are_refused_in_one_line(tmp_path, monkeypatch, capsys, one_thread):
    """120 more draws, each into a fresh folder and trained for one step: a value that passes validation must
    then build and train the run (learner, optimizer, schedule, augmentation, synthesis), not fail on the way
    with a traceback."""
    rng = random.Random(1)
    draws = [(rng.choice(TRAINABLE_KEYS), rng.choice(VALUES)) for _ in range(120)]
    assert train_each_for_a_step(draws, tmp_path, monkeypatch, capsys) >= 10  # the draws did reach training


def test_extreme_numbers_for_every_key_train_a_step_or_are_refused_in_one_line(tmp_path, monkeypatch, capsys,
                                                                               one_thread):
    """Every key with the largest, the smallest and a 40-digit number: accepted means trainable (before,
    train.epochs=1e308 and a 40-digit weight decay passed validation and failed in the schedule and the
    optimizer with a traceback)."""
    draws = [(k, v) for k in TRAINABLE_KEYS for v in ("1e308", "1e-300", "9" * 40)]
    train_each_for_a_step(draws, tmp_path, monkeypatch, capsys)


DAMAGE = {
    "empty": lambda data: b"",
    "half": lambda data: data[: len(data) // 2],
    "garbage": lambda data: bytes(random.Random(len(data)).getrandbits(8) for _ in range(64)),
    "json-list": lambda data: b"[]",
    "json-wrong-types": lambda data: b'{"step": "x", "feature_dim": [1], "learner": 3}',
}


def test_damaged_run_files_never_crash(finished_run, tmp_path, monkeypatch, capsys, one_thread):
    """Every run file under each damage: eval and resume either succeed or refuse in one line; a refusal
    changes nothing."""
    recipe, run = finished_run
    files = sorted(p.relative_to(run) for p in run.rglob("*") if p.is_file() and "tensorboard" not in p.parts)
    assert len(files) >= 6
    rng = random.Random(1)
    cases = rng.sample([(f, d) for f in files for d in DAMAGE], 36)
    for i, (name, damage) in enumerate(cases):
        copy = tmp_path / f"case{i}"
        shutil.copytree(run, copy)
        target = copy / name
        target.write_bytes(DAMAGE[damage](target.read_bytes()))
        for command in (["eval", str(copy), "--protocol", "knn", "--quiet"],
                        ["train", str(recipe), "--out", str(copy), "--resume", "--quiet"]):
            before = tree_digest(copy)
            code, _, err = run_cli(monkeypatch, capsys, *command)
            assert "Traceback" not in err, (name, damage, command, err)
            if code != 0:
                assert_refused_in_one_line(code, err)
                assert tree_digest(copy) == before, (name, damage, command)


def test_an_unexpected_error_is_one_line_and_a_log(monkeypatch, capsys, tmp_path):
    import synthcl.config

    def broken(name):
        raise ValueError("something inside broke\nsecond line")

    monkeypatch.setattr(synthcl.config, "find_recipe", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("SYNTHCL_DEBUG", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    code, _, err = run_cli(monkeypatch, capsys, "recipes", "show", "quickstart")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("error: unexpected ValueError: something inside broke")
    logs = list(tmp_path.glob("synthcl-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    assert "Traceback" in logs[0].read_text() and "broken" in logs[0].read_text()
    monkeypatch.setenv("SYNTHCL_DEBUG", "1")
    with pytest.raises(ValueError, match="something inside broke"):
        run_cli(monkeypatch, capsys, "recipes", "show", "quickstart")


# --- resource bounds on untrusted files ------------------------------------------------------------------


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    import gzip

    from synthcl.data import formats
    from synthcl.errors import DataError

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * 2**20))  # 1 MiB of zeros
    monkeypatch.setattr(formats, "MAX_DECOMPRESSED", 2**16)
    with pytest.raises(DataError, match="decompresses to more than 65536 bytes"):
        formats._read_idx(tmp_path, "train-images-idx3-ubyte")


@pytest.mark.parametrize("content", ["[" * 100_000, "a: " + "{b: " * 20_000 + "1" + "}" * 20_000])
def test_deeply_nested_recipes_and_run_files_are_one_line(tmp_path, monkeypatch, capsys, content):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text(content)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(tmp_path / "run"), "-q")
    assert_refused_in_one_line(code, err)
    from synthcl.io import read_json

    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_json(tmp_path / "deep.json")


def test_oversized_run_files_are_refused(tmp_path, finished_run, monkeypatch, capsys, one_thread):
    _, run = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "backbone.json").write_text(" " * (16 * 2**20 + 1))
    before = tree_digest(copy)
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(copy), "--protocol", "knn", "-q")
    assert_refused_in_one_line(code, err)
    assert tree_digest(copy) == before


def test_generate_draws_in_batches_and_bounds_the_grid(tmp_path, monkeypatch, capsys):
    import torch

    from synthcl import generation
    from synthcl.registry import GENERATORS

    folder = tmp_path / "gan"
    torch.manual_seed(0)
    GENERATORS.get("gan")(image_size=28, channels=1, preset="tiny").save_pretrained(folder)
    sizes = []
    original = generation.load_generator

    def spying_loader(path):
        g = original(path)
        forward = g.forward
        g.forward = lambda z: sizes.append(z.shape[0]) or forward(z)
        return g

    monkeypatch.setattr(generation, "load_generator", spying_loader)
    monkeypatch.setattr(generation, "GENERATE_BATCH", 16)
    generation.write_samples(folder, tmp_path / "grid.png", n=40)
    assert sizes == [16, 16, 8]
    code, _, err = run_cli(monkeypatch, capsys, "generate", str(folder), "--n", "100000", "--out", str(tmp_path / "big.png"))
    assert_refused_in_one_line(code, err)
    assert "at most 16384" in err and not (tmp_path / "big.png").exists()
