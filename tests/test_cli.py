"""The command line: commands work, and every kind of bad input gets one line, exit 2, files intact."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from synthcl.cli import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `synthcl ARGS` in-process through the real entry point; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["synthcl", *args])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture
def trained_run(tmp_path_factory, tiny_recipe_file):
    from synthcl.training import train

    run = tmp_path_factory.mktemp("runs") / "run"
    train(tiny_recipe_file(), out=run, quiet=True)
    return run


def test_train_and_eval_from_the_cli(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    run = tmp_path / "run"
    code, out, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "optim.lr=0.02",
                             "--out", str(run), "--quiet")
    assert code == 0, err
    assert "run written to" in out and "optim" in (run / "recipe.yaml").read_text()
    assert "lr: 0.02" in (run / "recipe.yaml").read_text()
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--quiet")
    assert code == 0, err
    assert "linear probe top-1:" in out and "kNN top-1:" in out
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--protocol", "knn", "--init", "random", "-q")
    assert code == 0 and "kNN top-1 (random init)" in out and "linear" not in out


def test_recipes_list_and_show(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "recipes", "list")
    assert code == 0 and "quickstart" in out and "cifar10-byol" in out
    # one column of descriptions, however long the longest name
    starts = {len(line) - len(line.split("  ", 1)[1].lstrip()) for line in out.splitlines()}
    assert len(starts) == 1, out
    code, out, _ = run_cli(monkeypatch, capsys, "recipes", "show", "quickstart")
    assert code == 0 and out.startswith("# synthcl train quickstart")


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "synthcl", "recipes", "list"], capture_output=True, text=True)
    assert result.returncode == 0 and "quickstart" in result.stdout


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["optim.lrr=0.1"], "unknown recipe key 'optim.lrr'; did you mean 'optim.lr'?"),
        (["optim.lr=fast"], "optim.lr: expected float, got 'fast'"),
        (["data.dataset=cifar-10"], "unknown dataset 'cifar-10'; did you mean 'cifar10'?"),
        (["model.learner=simsiam"], "unknown learner 'simsiam'"),
        (["model.backbone=resnet34"], "unknown backbone 'resnet34'"),
        (["data.fraction=0"], "data.fraction must be in (0, 1]"),
        (["data.fraction=1.2"], "data.fraction must be in (0, 1]"),
    ],
)
def test_bad_recipe_values(monkeypatch, capsys, tmp_path, tiny_recipe_file, overrides, fragment):
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), *overrides,
                           "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_missing_data_root_says_how_to_get_the_data(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    import synthcl.data.roots

    monkeypatch.delenv("SYNTHCL_DATA", raising=False)
    monkeypatch.setattr(synthcl.data.roots, "SYSTEM_DATA_DIRS", [tmp_path / "nowhere"])
    monkeypatch.setattr(synthcl.data.roots, "CACHE_DIR", tmp_path / "cache")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "data.dataset=cifar10",
                           "data.channels=null", "data.options={}", "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, "cifar10")
    assert "data.root" in err or "SYNTHCL_DATA" in err


def test_unreadable_image_in_a_folder_dataset(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    from PIL import Image

    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(10):
            Image.new("L", (20, 20), color=i * 20).save(folder / label / f"{i}.png")
    (folder / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "data.dataset=image-folder",
                           f"data.root={folder}", "data.num_workers=0", "data.options={}",
                           "train.max_steps=4", "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, "broken.png")


def test_existing_run_is_refused_and_left_intact(monkeypatch, capsys, trained_run, tiny_recipe_file):
    before = tree_digest(trained_run)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "--out", str(trained_run), "-q")
    assert_one_line_error(code, err, "already holds a run")
    assert tree_digest(trained_run) == before


def test_eval_on_a_directory_that_is_not_a_run(monkeypatch, capsys, tmp_path):
    (tmp_path / "something.txt").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(tmp_path))
    assert_one_line_error(code, err, "is not a synthcl run directory")


def test_eval_on_a_truncated_checkpoint(monkeypatch, capsys, trained_run):
    weights = trained_run / "backbone.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = tree_digest(trained_run)
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(trained_run))
    assert_one_line_error(code, err, "truncated or corrupt")
    assert tree_digest(trained_run) == before


def test_eval_on_a_checkpoint_of_another_architecture(monkeypatch, capsys, trained_run, tmp_path):
    from safetensors.torch import save_file

    from synthcl.nn.backbones import SmallCNN

    other = SmallCNN(1, width=8)  # the run's backbone has width 4
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(trained_run / "backbone.safetensors"))
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(trained_run))
    assert_one_line_error(code, err, "written by another architecture")


def test_code_option_registers_a_user_learner(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    plugin = tmp_path / "my_learner.py"
    plugin.write_text(
        "from synthcl.learners import SimCLR\n"
        "from synthcl.registry import LEARNERS\n\n"
        "@LEARNERS.register('my-simclr')\n"
        "class MySimCLR(SimCLR):\n"
        "    pass\n"
    )
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "model.learner=my-simclr",
                           "--code", str(plugin), "--out", str(tmp_path / "run"), "-q")
    assert code == 0, err


def test_recipe_that_is_not_a_mapping(monkeypatch, capsys, tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(path), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "must be a mapping of sections")


def test_output_path_that_is_a_file(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "--out", str(target), "-q")
    assert_one_line_error(code, err, "is a file")
    assert target.read_text() == "keep me"


def test_generate_on_a_learner_run(monkeypatch, capsys, tmp_path, trained_run):
    code, _, err = run_cli(monkeypatch, capsys, "generate", str(trained_run), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "is a learner run, not a generator run")


def test_output_under_a_file_is_an_os_error_in_one_line(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    (tmp_path / "file.txt").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()),
                           "--out", str(tmp_path / "file.txt" / "run"), "-q")
    assert_one_line_error(code, err, "file.txt")


def test_eval_linear_on_a_generator_run_points_to_the_generator_protocol(monkeypatch, capsys, tmp_path,
                                                                       tiny_recipe_file):
    run = tmp_path / "gen"
    recipe = tiny_recipe_file(stage="generator", generator={"name": "gan", "options": {"preset": "tiny"}},
                              data={"image_size": 28}, train={"max_steps": 2})
    assert run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(run))
    assert_one_line_error(code, err, "--protocol generator")


def test_corrupt_run_recipe_is_one_line(monkeypatch, capsys, trained_run):
    (trained_run / "recipe.yaml").write_text("optim: [unclosed\n")
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(trained_run))
    assert_one_line_error(code, err, "recipe.yaml")


def test_yaml_no_and_exponent_without_dot_are_understood():
    from synthcl.config import load_recipe

    recipe = load_recipe("quickstart", ["train.precision=no", "optim.lr=1e-3"])
    assert recipe.train.precision == "no" and recipe.optim.lr == 1e-3


def test_auto_resume_starts_continues_and_leaves_a_finished_run(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    """The same `--auto-resume` command run again: a run cut short continues to the weights of an
    uninterrupted run, a finished run is left byte for byte, and an empty --out starts the run."""
    import torch
    from safetensors.torch import load_file

    from synthcl.training import train

    recipe = str(tiny_recipe_file())
    full, part = tmp_path / "full", tmp_path / "part"
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(full), "--auto-resume", "-q")
    assert code == 0, err
    assert (full / "checkpoints/last").is_dir()
    train(recipe, out=part, quiet=True, overrides=["train.max_steps=2"])  # stopped after 2 of 4 steps
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(part), "--auto-resume", "-q")
    assert code == 0, err
    a, b = (load_file(str(run / "checkpoints/last/weights.safetensors")) for run in (full, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before = tree_digest(part)
    code, out, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(part), "--auto-resume", "-q")
    assert code == 0 and "nothing to train" in err and "run written to" not in out  # -q: still said
    assert tree_digest(part) == before


def test_auto_resume_refuses_another_recipe_a_diverged_run_and_other_flags(monkeypatch, capsys, trained_run,
                                                                           tiny_recipe_file):
    import json

    recipe, before = str(tiny_recipe_file()), tree_digest(trained_run)
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "optim.lr=0.01", "--out", str(trained_run),
                           "--auto-resume", "-q")
    assert_one_line_error(code, err, "optim.lr")
    assert "--overwrite" in err
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(trained_run), "--auto-resume",
                           "--overwrite", "-q")
    assert_one_line_error(code, err, "--auto-resume excludes")
    assert tree_digest(trained_run) == before
    status = json.loads((trained_run / "run.json").read_text())
    (trained_run / "run.json").write_text(json.dumps(status | {"status": "diverged", "step": 2}))
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe, "--out", str(trained_run), "--auto-resume", "-q")
    assert_one_line_error(code, err, "diverged")
    # A failed run (an error that may not come back: a file system that went away, a --code file since
    # mended) is resumed, as a killed one is.
    from synthcl.config import load_recipe
    from synthcl.rundir import auto_resume_plan

    (trained_run / "run.json").write_text(json.dumps(status | {"status": "failed", "step": 2, "error": "OSError: x"}))
    assert auto_resume_plan(trained_run, load_recipe(recipe)) == "resume"


@pytest.mark.parametrize("args, fragment, see", [
    (["eval", "RUN", "--init", "nope"], "invalid value for '--init': 'nope' is not one of 'trained', 'random', 'pixels'",
     "eval --help"),
    (["generate", "RUN", "--quiet"], "no such option: --quiet", "generate --help"),
    (["eval"], "missing argument 'run_dir'", "eval --help"),
    (["recipes", "show"], "missing argument 'name'", "recipes show --help"),
    (["trian"], "no such command 'trian'", "synthcl --help"),
    (["eval", "RUN", "--label-fractions"], "option '--label-fractions' requires an argument", "synthcl --help"),
])
def test_usage_errors_are_one_line_too(args, fragment, see, monkeypatch, capsys, tmp_path):
    """A mistyped command line gets the same one-line error as a bad recipe (with the help to read), not the
    framework's box."""
    args = [str(tmp_path) if a == "RUN" else a for a in args]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, fragment)
    assert err.rstrip().endswith(f"{see})"), err  # "(see PROGRAM ... --help)"
    assert out == ""


@pytest.mark.parametrize("args", [[], ["recipes"]])
def test_a_bare_command_shows_its_help_and_no_error_line(args, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "Usage:" in out + err and "error:" not in out + err


@pytest.mark.parametrize("raised, line, status", [(KeyboardInterrupt, "interrupted", 130),
                                                  (EOFError, "error: unexpected EOFError", 1)])
def test_ctrl_c_in_a_command_says_interrupted_and_a_stray_eof_is_a_crash(raised, line, status, monkeypatch, capsys):
    """Typer turns a Ctrl-C inside a command into status 130 and an EOFError into its Abort: the first is said
    as "interrupted", the second is the bug it is (one line, the traceback in a log)."""
    import synthcl.config

    def raise_it():
        raise raised()

    monkeypatch.setattr(synthcl.config, "bundled_recipes", raise_it)
    code, _, err = run_cli(monkeypatch, capsys, "recipes", "list")
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == status and len(lines) == 1 and lines[0].startswith(line), err


def test_help_and_a_commands_own_refusal_keep_their_exit_status(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "eval", "--help")
    assert code == 0 and "Usage:" in out and "--protocol" in out
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(tmp_path), "--protocol", "transfer")
    assert_one_line_error(code, err, "--protocol transfer needs --dataset NAME")
