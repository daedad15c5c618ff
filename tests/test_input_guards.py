"""Input that used to end as "a bug in synthcl" (exit 1) or pass silently, and run files that a teammate
could not read: each now gets one line and exit 2, or the permissions of any file the user writes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run_cli

from synthcl.config import load_recipe
from synthcl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")
            if p.name != ".lock"}


def test_every_file_of_a_run_has_the_permissions_of_the_umask(tmp_path, one_thread, tiny_recipe):
    """safetensors writes 0600 files, mkstemp/mkdtemp 0600/0700: a shared run folder must not need chmod."""
    from synthcl.training import train

    run = tmp_path / "run"
    train(tiny_recipe(train={"max_steps": 2, "checkpoint_every": 1}), out=run, quiet=True)
    expected = {False: 0o666 & ~_umask(), True: 0o777 & ~_umask()}
    modes = _modes(run)
    assert "backbone.safetensors" in modes and "checkpoints/last/weights.safetensors" in modes
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != expected[(run / name).is_dir()]}
    assert not wrong, wrong


def test_a_saved_diffusion_generator_has_the_permissions_of_the_umask(tmp_path, one_thread):
    pytest.importorskip("diffusers")
    from synthcl.generators.diffusion import Diffusion

    folder = Diffusion(16, 1, preset="tiny").save_pretrained(tmp_path / "gen")
    files = {name: mode for name, mode in _modes(folder).items() if (folder / name).is_file()}
    assert any(name.endswith(".safetensors") for name in files if name.startswith("unet"))
    wrong = {name: oct(mode) for name, mode in files.items() if mode != 0o666 & ~_umask()}
    assert not wrong, wrong


@pytest.mark.parametrize("override, fragment", [
    ("model.width=" + "1" * 31, "model.width: 111111111111... (31 digits) is too large"),
    ("optim.lr=1" + "0" * 400, "optim.lr: 100000000000... (401 digits) is too large for a number"),
    (f"train.seed={2**63}", "train.seed: 9223372036854775808 is too large (a 64-bit integer at most)"),
])
def test_integers_beyond_64_bits_are_refused_when_the_recipe_is_read(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_recipe("quickstart", [override])
    assert fragment in str(err.value)


@pytest.mark.parametrize("override, fragment", [
    # Found by drawing override values and training each for a step: each was a traceback (exit 1) before.
    ("train.epochs=1e308", "train.epochs must lie within float32's range"),
    ("optim.warmup_epochs=1e308", "optim.warmup_epochs must lie within float32's range"),
    ("optim.weight_decay=" + "9" * 40, "optim.weight_decay must lie within float32's range"),
    # Accepted before: a cosine "decay" up to a minimum above the learning rate.
    ("optim.min_lr=1180591620717411303424", "optim.min_lr must be in [0, optim.lr]"),
])
def test_values_that_overflow_float32_or_invert_the_schedule_are_one_line(tmp_path, one_thread, tiny_recipe_file,
                                                                           override, fragment, monkeypatch, capsys):
    out = tmp_path / "r"
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), override, "train.max_steps=1",
                           "--out", str(out), "-q")
    assert_one_line_error(code, err, fragment)
    assert not out.exists()  # refused before the run folder was made


@pytest.mark.parametrize("override", [f"model.width={2**62}", f"data.image_size={2**62}"])
def test_a_size_whose_bytes_overflow_is_the_out_of_memory_line(tmp_path, one_thread, tiny_recipe_file, override,
                                                                monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), override, "--out",
                           str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, "out of memory")


def test_a_key_written_twice_in_a_recipe_section_is_refused(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("data:\n  dataset: shapes\n  image_size: 16\n  dataset: cifar10\n")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, "key 'dataset' appears twice in one section (line 4)")
    assert not (tmp_path / "r").exists()
    recipe.write_text("data:\n  dataset: shapes\nmodel:\n  width: 8\ndata:\n  image_size: 16\n")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, "key 'data' appears twice")


def test_recipes_show_refuses_a_file_that_is_not_text(tmp_path, monkeypatch, capsys):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01binary")
    code, out, err = run_cli(monkeypatch, capsys, "recipes", "show", str(binary))
    assert_one_line_error(code, err, "is not a text file")
    assert out == ""


def test_code_that_exits_while_imported_is_an_error_not_a_silent_success(tmp_path, monkeypatch, capsys,
                                                                          tiny_recipe_file):
    code_file = tmp_path / "leaves.py"
    code_file.write_text("import sys\nsys.exit(0)\n")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "--out", str(tmp_path / "r"),
                           "--code", str(code_file), "-q")
    assert_one_line_error(code, err, "leaves.py called sys.exit(0) while being imported")
    assert not (tmp_path / "r").exists()


def test_code_that_takes_a_builtin_name_fails_in_that_file(tmp_path, tiny_recipe_file):
    """In a fresh process (the built-ins not yet imported), as a user's first command runs."""
    code_file = tmp_path / "mine.py"
    code_file.write_text("from synthcl.registry import LEARNERS\n\n@LEARNERS.register('simclr')\nclass Mine:\n"
                         "    pass\n")
    proc = subprocess.run([sys.executable, "-m", "synthcl", "train", str(tiny_recipe_file()), "--out",
                           str(tmp_path / "r"), "--code", str(code_file), "-q"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, "mine.py: ValueError while importing it: learner 'simclr' "
                                                        "is already registered")


@pytest.mark.parametrize("leftover", [".run.json.k2x9_q1.tmp", ".report.a1b2c3d4.tmp", ".report.old",
                                      ".eval.json.zz00yy11.tmp"])
def test_overwrite_removes_what_a_killed_synthcl_command_left(tmp_path, one_thread, tiny_recipe_file, leftover,
                                                              monkeypatch, capsys):
    run, recipe = tmp_path / "run", str(tiny_recipe_file())
    assert run_cli(monkeypatch, capsys, "train", recipe, "--out", str(run), "-q")[0] == 0
    (run / leftover).mkdir() if "report" in leftover else (run / leftover).write_text("{")
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(run), "--overwrite", "-q")
    assert code == 0, err
    assert not (run / leftover).exists()


@pytest.mark.parametrize("users", [".notes.tmp", ".mynotes.md.abc123.tmp", "...tmp", ".report.older"])
def test_overwrite_still_refuses_a_users_hidden_file(tmp_path, one_thread, tiny_recipe_file, users, monkeypatch,
                                                     capsys):
    run, recipe = tmp_path / "run", str(tiny_recipe_file())
    assert run_cli(monkeypatch, capsys, "train", recipe, "--out", str(run), "-q")[0] == 0
    (run / users).write_text("mine")
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(run), "--overwrite", "-q")
    assert_one_line_error(code, err, users)
    assert (run / users).read_text() == "mine"


def test_auto_resume_on_an_unreadable_status_advises_what_works(tmp_path, one_thread, tiny_recipe_file, monkeypatch,
                                                                 capsys):
    run, recipe = tmp_path / "run", str(tiny_recipe_file())
    assert run_cli(monkeypatch, capsys, "train", recipe, "--out", str(run), "train.max_steps=2", "-q")[0] == 0
    (run / "run.json").write_text("not json{")
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(run), "--auto-resume", "-q")
    assert_one_line_error(code, err, "pass --resume instead of --auto-resume")
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(run), "--resume", "-q")
    assert code == 0, err  # the advice works


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("x"), "is a file, not a run directory"),
    (lambda p: (p.mkdir(), (p / "recipe.yaml").write_text("name: x\n")), "not a synthcl run directory (no run.json)"),
    (lambda p: (p.mkdir(), (p / "run.json").write_text("{}")), "(no recipe.yaml)"),
    (lambda p: p.mkdir(), "(no recipe.yaml and no run.json)"),
])
@pytest.mark.parametrize("command", [["eval"], ["eval", "--report"], ["eval", "--protocol", "generator"],
                                     ["train", "quickstart", "--resume"]])
def test_a_folder_that_is_not_a_run_is_told_what_it_lacks(tmp_path, make, fragment, command, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    target = tmp_path / "target"
    make(target)
    args = [*command[:2], "--out", str(target), *command[2:]] if command[0] == "train" else \
        [command[0], str(target), *command[1:]]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, fragment)


@pytest.mark.parametrize("options, named", [(["--n", "5"], "--n only applies"),
                                            (["--features", "encoder"], "--features only applies"),
                                            (["--encoder", "x", "--n", "4"], "--encoder/--n only apply")])
@pytest.mark.parametrize("protocol", [[], ["--protocol", "knn"], ["--protocol", "efficiency"]])
def test_generator_options_on_another_protocol_are_refused(tmp_path, options, named, protocol, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(tmp_path), *protocol, *options)
    assert_one_line_error(code, err, f"{named} to --protocol generator")


def test_an_encoder_given_with_features_auto_is_the_feature_space(tmp_path, monkeypatch):
    """`--encoder RUN` names the space to measure in: auto must not measure in Inception instead."""
    from synthcl.eval import generator_eval

    monkeypatch.setattr(generator_eval, "inception_features", lambda: pytest.fail("Inception was chosen"))
    monkeypatch.setattr(generator_eval, "read_run_recipe", lambda run: type("R", (), {"stage": "generator"})())
    monkeypatch.setattr(generator_eval, "require_run_dir", lambda *a, **k: None)
    monkeypatch.setattr("synthcl.generation.load_generator", lambda run: None)

    class Chosen(Exception):
        pass

    def encoder_run(path):
        raise Chosen(str(path))

    monkeypatch.setattr("synthcl.eval.run.load_run_backbone", encoder_run)
    with pytest.raises(Chosen, match="enc"):
        generator_eval.evaluate_generator(tmp_path, encoder=tmp_path / "enc", features="auto", n=4, quiet=True)


@pytest.mark.parametrize("protocol", ["evaluate_transfer", "evaluate_efficiency"])
def test_an_unknown_init_is_refused_by_every_probe_protocol(protocol, tmp_path):
    from synthcl.errors import ConfigError
    from synthcl.eval import protocols

    arguments = {"dataset": "mnist"} if protocol == "evaluate_transfer" else {}
    with pytest.raises(ConfigError, match="init must be one of trained, random, pixels, got 'pixel'"):
        getattr(protocols, protocol)(tmp_path, init="pixel", **arguments)


def test_features_encoder_without_an_encoder_asks_for_one(tmp_path):
    """Not "install the metrics extra": the user chose the encoder's space and named no encoder."""
    from synthcl.errors import ConfigError
    from synthcl.eval import generator_eval

    # before any file is read: tmp_path holds no run at all
    with pytest.raises(ConfigError, match=r"^--features encoder needs --encoder RUN_DIR"):
        generator_eval.evaluate_generator(tmp_path, features="encoder", n=4, quiet=True)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times come from Linux's /proc")
def test_a_lock_whose_pid_now_names_another_process_is_taken_over(tmp_path, one_thread, tiny_recipe):
    """After a reboot or a container restart a dead run's pid may be a live, unrelated process: the lock
    records when its process started, so only the process that took it holds it."""
    from synthcl.errors import RunDirError
    from synthcl.rundir import LOCK_FILE, _start_time, acquire_lock, release_lock
    from synthcl.training import train

    run = tmp_path / "run"
    run.mkdir()
    acquire_lock(run)
    assert (run / LOCK_FILE).read_text().split() == [str(os.getpid()), str(_start_time(os.getpid()))]
    release_lock(run)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = _start_time(sleeper.pid)
        assert started is not None
        (run / LOCK_FILE).write_text(f"{sleeper.pid} {started}")  # the live process that took the lock
        with pytest.raises(RunDirError, match=rf"another synthcl process \(pid {sleeper.pid}\)"):
            train(tiny_recipe(), out=run, quiet=True)
        (run / LOCK_FILE).write_text(f"{sleeper.pid} {started - 1}")  # its pid, but an earlier process's lock
        assert train(tiny_recipe(), out=run, quiet=True) == run
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (run / LOCK_FILE).exists()


@pytest.mark.parametrize("content", ["²", "abc def", "-5 7", "12x", b"\xff\xfe\x00", ""],
                         ids=["superscript", "words", "negative", "suffix", "binary", "empty"])
def test_a_damaged_lock_file_is_taken_over_not_a_crash(tmp_path, content):
    """A lock whose content names no process (damaged, or written by something else) holds nothing."""
    from synthcl.rundir import LOCK_FILE, acquire_lock, held_elsewhere, release_lock

    path = tmp_path / LOCK_FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert held_elsewhere(tmp_path) is None
    acquire_lock(tmp_path)
    assert path.read_text().split()[0] == str(os.getpid())
    release_lock(tmp_path)
    assert not path.exists()
