"""The quality protocol's parts: train.steps, the pixel floor and the few-label probe, the generator warm-up
inside a learner run (the self-contained scarce recipes), and the benchmark's cache key."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, merge
from safetensors.torch import load_file
from test_cli import assert_one_line_error, run_cli

from synthcl.config import load_recipe, recipe_from_dict, recipe_to_dict
from synthcl.errors import ConfigError
from synthcl.eval import evaluate_run
from synthcl.eval.probes import class_balanced_indices, few_label_probe
from synthcl.training import train
from synthcl.training.generator_loop import PRETRAIN_DIR, pretrain_recipe

# The bundled joint recipe shrunk to 28-px shapes (the GAN's smallest size): everything but sizes as the recipe says.
SHRINK = ["data.dataset=shapes", "data.image_size=28", "data.channels=1", "data.options={n: 128}", "data.fraction=0.5",
          "model.width=4", "model.proj_hidden_dim=16", "model.proj_output_dim=8", "train.batch_size=16",
          "train.steps=4", "train.log_every=2", "train.checkpoint_every=2", "train.cpu=true", "train.precision=no",
          "optim.warmup_steps=1", "eval.linear_epochs=2", "eval.knn_k=5", "generator.pretrain_steps=3",
          "generator.pretrain_batch_size=16", "generator.sample_every=2", "synthesis.sample_every=2"]


def gan_shrink() -> list[str]:
    return [*SHRINK, "generator.options={preset: tiny}"]


# -- train.steps --------------------------------------------------------------------------------------


def test_steps_override_replaces_epochs_and_the_file_may_not_set_both(tiny_recipe_file):
    recipe = load_recipe("quickstart", ["train.steps=3000"])
    assert (recipe.train.steps, recipe.train.epochs) == (3000, None)
    assert load_recipe("fashion-mnist-scarce", ["train.epochs=2"]).train.steps is None
    with pytest.raises(ConfigError, match="train.epochs .* and train.steps .* exclude each other"):
        load_recipe(tiny_recipe_file(train={"steps": 5}))  # TINY sets epochs: the file sets both
    with pytest.raises(ConfigError, match="train.steps must be >= 1"):
        load_recipe("quickstart", ["train.steps=0"])


@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_steps_span_the_schedule_whatever_the_fraction(tmp_path, one_thread, fraction):
    """Exactly train.steps learner steps, the warm-up in steps, and the lr back to its floor at the end."""
    recipe = recipe_from_dict(merge(TINY, {"data": {"fraction": fraction},
                                          "optim": {"warmup_steps": 3, "lr": 0.05},
                                          "train": {"epochs": None, "steps": 6, "max_steps": None, "log_every": 1}}))
    run = train(recipe, out=tmp_path / "run", quiet=True)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    lrs = [float(r["lr"]) for r in rows]
    # a row holds the lr of the next step: 2/3 of the peak after step 1 (3 warm-up steps, not the half epoch of
    # warmup_epochs), the peak after step 2, and the cosine's floor after the last of exactly 6 steps
    assert lrs[0] == pytest.approx(0.05 * 2 / 3) and lrs[1] == pytest.approx(0.05)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9) and lrs[3] < lrs[2]
    assert json.loads((run / "run.json").read_text())["total_steps"] == 6


# -- floors and the few-label probe -------------------------------------------------------------------


def test_pixels_floor_probes_the_standardised_images_without_an_encoder(tmp_path, one_thread, tiny_recipe):
    run = train(tiny_recipe(), out=tmp_path / "run", quiet=True)
    pixels = evaluate_run(run, "knn", init="pixels", quiet=True)
    assert (run / "eval-pixels.json").is_file() and pixels["init"] == "pixels"
    # kNN on pixels by hand: the images standardised with the run's statistics, flattened
    from synthcl.data import load_dataset
    from synthcl.eval.probes import knn_accuracy

    info = json.loads((run / "backbone.json").read_text())
    mean, std = info["normalization"]["mean"][0], info["normalization"]["std"][0]

    def flat(split):
        source = load_dataset("shapes", split, image_size=16, channels=1, options={"n": 128})
        x, y = zip(*source.batches(64, seed=None, drop_last=False))
        return ((torch.cat(x).float() / 255 - mean) / std).flatten(1), torch.cat(y)

    (xa, ya), (xb, yb) = flat("train"), flat("test")
    assert pixels["knn_top1"] == pytest.approx(knn_accuracy(xa, ya, xb, yb, k=10, temperature=0.1))
    with pytest.raises(ConfigError, match="init must be one of"):
        evaluate_run(run, "knn", init="imagenet", quiet=True)


def test_few_label_probe_averages_class_balanced_label_subsets(tiny_recipe):
    torch.manual_seed(0)
    y = torch.arange(10).repeat(50)
    x = torch.nn.functional.one_hot(y, 10).float() + 0.5 * torch.randn(500, 10)
    eval_cfg = tiny_recipe(eval={"few_label_fraction": 0.1, "few_label_seeds": 3, "linear_epochs": 5}).eval
    result = few_label_probe(x, y, x, y, eval_cfg)
    assert result["few_label_images"] == 50 and len(result["linear_few_runs"]) == 3
    assert result["linear_few_top1"] == pytest.approx(sum(result["linear_few_runs"]) / 3)
    assert result["linear_few_sd"] > 0  # three different subsets, three different probes
    assert torch.bincount(y[class_balanced_indices(y, 0.1, seed=2)]).tolist() == [5] * 10


def test_eval_cli_pixels_and_few_label(tmp_path, one_thread, tiny_recipe, monkeypatch, capsys):
    run = train(tiny_recipe(), out=tmp_path / "run", quiet=True)
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--init", "pixels", "--protocol", "few-label", "--quiet")
    assert code == 0, err
    assert "linear probe top-1, 1% labels (pixels init):" in out
    assert "linear_few_top1" in json.loads((run / "eval-pixels.json").read_text())
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(run), "--init", "pixels", "--protocol", "generator")
    assert_one_line_error(code, err, "--init pixels")


# -- the generator's warm-up inside a learner run -----------------------------------------------------


def test_self_contained_joint_recipe_warms_its_generator_up_then_trains_jointly(tmp_path, one_thread, monkeypatch):
    from synthcl.synthesis.engine import Synthesizer

    at_first_step = {}
    synthesize = Synthesizer.synthesize

    def first(self, *args, **kwargs):
        if not at_first_step:
            at_first_step.update({k: v.detach().clone() for k, v in self.generator.state_dict().items()})
        return synthesize(self, *args, **kwargs)

    monkeypatch.setattr(Synthesizer, "synthesize", first)
    run = train("fashion-mnist-scarce-joint", out=tmp_path / "run", quiet=True, overrides=gan_shrink())
    warm = run / PRETRAIN_DIR
    assert json.loads((warm / "run.json").read_text())["status"] == "completed"
    assert json.loads((warm / "run.json").read_text())["step"] == 3  # generator.pretrain_steps
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "completed" and status["step"] == 4  # train.steps counts the learner alone
    # The joint phase started from the warmed-up generator: it is trained further, not re-initialised.
    warmed = load_file(str(warm / "generator" / "model.safetensors"))
    final = load_file(str(run / "checkpoints" / "last" / "generator.safetensors"))
    key = next(k for k in warmed if k.startswith("generator.") or "weight" in k)
    assert key in final and warmed[key].shape == final[key].shape and not torch.equal(warmed[key], final[key])
    # ... and its first joint step saw exactly the warmed-up weights (a fresh initialisation would differ).
    assert at_first_step.keys() >= warmed.keys()
    assert all(torch.equal(at_first_step[k], warmed[k]) for k in warmed)
    # The recipe on disk still says pretrain_steps (not a path), so --resume compares like with like.
    assert load_recipe(run / "recipe.yaml").generator.pretrained is None


def test_self_contained_diffusion_recipe_warms_up_and_trains(tmp_path, one_thread):
    pytest.importorskip("diffusers")
    overrides = [*SHRINK, "generator.options={preset: tiny, sampling_steps: 2, pair_method: branch}",
                 "generator.pretrain_lr=0.001"]
    run = train("fashion-mnist-scarce-joint-diffusion", out=tmp_path / "run", quiet=True, overrides=overrides)
    warm = json.loads((run / PRETRAIN_DIR / "run.json").read_text())
    assert warm["status"] == "completed" and warm["generator"] == "diffusion"
    assert load_recipe(run / PRETRAIN_DIR / "recipe.yaml").generator.lr == 0.001  # generator.pretrain_lr
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_overwriting_a_run_warms_up_afresh(tmp_path, one_thread):
    first = train("fashion-mnist-scarce-joint", out=tmp_path / "run", quiet=True, overrides=gan_shrink())
    (first / PRETRAIN_DIR / "stale.txt").write_text("from the first run")
    again = train("fashion-mnist-scarce-joint", out=tmp_path / "run", quiet=True, overwrite=True, overrides=gan_shrink())
    assert not (again / PRETRAIN_DIR / "stale.txt").exists()
    assert json.loads((again / "run.json").read_text())["status"] == "completed"


def test_warm_up_equals_a_separate_generator_run(tmp_path, one_thread):
    """What the benchmark does (warm up once, pass generator.pretrained) is what the recipe does alone."""
    recipe = load_recipe("fashion-mnist-scarce-joint", gan_shrink())
    separate = train(pretrain_recipe(recipe), out=tmp_path / "warm", quiet=True)
    inside = train(recipe, out=tmp_path / "run", quiet=True)
    a = load_file(str(separate / "generator" / "model.safetensors"))
    b = load_file(str(inside / PRETRAIN_DIR / "generator" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    reused = train("fashion-mnist-scarce-joint", out=tmp_path / "reused", quiet=True,
                   overrides=[*gan_shrink(), f"generator.pretrained={separate}", "generator.pretrain_steps=0"])
    x = load_file(str(inside / "backbone.safetensors"))
    y = load_file(str(reused / "backbone.safetensors"))
    assert all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("again", [{"resume": True}, {"auto_resume": True}])
def test_interrupted_warm_up_resumes_with_the_learner_run(tmp_path, one_thread, monkeypatch, again):
    from synthcl.training import generator_loop
    from synthcl.training.session import RunInterrupted

    recipe = load_recipe("fashion-mnist-scarce-joint", gan_shrink())
    reference = train(recipe, out=tmp_path / "reference", quiet=True)
    original = generator_loop.train_generator
    calls = []

    statuses = []

    def stop_once(*args, **kwargs):
        calls.append(kwargs["resume"])
        statuses.append(json.loads((tmp_path / "run" / "run.json").read_text())["status"])
        if len(calls) == 1:
            raise RunInterrupted("stopped")
        return original(*args, **kwargs)

    monkeypatch.setattr(generator_loop, "train_generator", stop_once)
    with pytest.raises(RunInterrupted, match=r"warming the generator up; continue with: .* --resume"):
        train(recipe, out=tmp_path / "run", quiet=True)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"
    train(recipe, out=tmp_path / "run", quiet=True, **again)  # --resume, or the same command with --auto-resume
    # While the resumed warm-up trains, the run says so (not the last attempt's "interrupted").
    assert statuses == ["pretraining generator"] * 2
    a = load_file(str(reference / "backbone.safetensors"))
    b = load_file(str(tmp_path / "run" / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_warm_up_stopped_after_its_first_checkpoint_continues_from_it(tmp_path, one_thread, monkeypatch):
    """SIGTERM during the warm-up's second step (of 3; a checkpoint every 2): the warm-up stops at its step-2
    checkpoint, the resumed run continues the warm-up from there (train_generator called with resume=True,
    no step trained twice) and ends with the weights of a run never stopped."""
    import os
    import signal

    from synthcl.training import generator_loop
    from synthcl.training.session import RunInterrupted
    from synthcl.training.step import GeneratorStep

    recipe = load_recipe("fashion-mnist-scarce-joint", gan_shrink())
    reference = train(recipe, out=tmp_path / "reference", quiet=True)
    original_train, original_step = generator_loop.train_generator, GeneratorStep.__call__
    resumes, warm_up_steps = [], []

    def recorded(*args, **kwargs):
        resumes.append(kwargs["resume"])
        return original_train(*args, **kwargs)

    def step(self, index, real):
        warm_up_steps.append(index)
        if len(resumes) == 1 and index == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original_step(self, index, real)

    monkeypatch.setattr(generator_loop, "train_generator", recorded)
    monkeypatch.setattr(GeneratorStep, "__call__", step)
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted, match=r"warming the generator up; continue with: .* --resume"):
        train(recipe, out=run, quiet=True)
    assert json.loads((run / PRETRAIN_DIR / "run.json").read_text())["step"] == 2
    train(recipe, out=run, resume=True, quiet=True)
    assert resumes == [False, True] and warm_up_steps == [0, 1, 2]
    a = load_file(str(reference / "backbone.safetensors"))
    b = load_file(str(run / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_while_the_warm_up_exports_its_generator_stops_the_run(tmp_path, one_thread, monkeypatch):
    """A scheduler's SIGTERM after the warm-up's last step (while it writes its generator) is not lost between
    the warm-up and the learner: the run stops before its first learner step, and --resume reuses the
    finished warm-up."""
    import os
    import signal

    from synthcl.interfaces import Generator
    from synthcl.training.session import RunInterrupted

    recipe = load_recipe("fashion-mnist-scarce-joint", gan_shrink())
    original, exports = Generator.save_pretrained, []

    def signalled(self, folder):
        if Path(folder).parent.name == PRETRAIN_DIR:
            exports.append(folder)
            if len(exports) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, folder)

    monkeypatch.setattr(Generator, "save_pretrained", signalled)
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted, match=r"interrupted by SIGTERM while warming the generator up; continue with: .* --resume"):
        train(recipe, out=run, quiet=True)
    assert exports and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert json.loads((run / PRETRAIN_DIR / "run.json").read_text())["status"] == "completed"
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()  # no learner step
    train(recipe, out=run, resume=True, quiet=True)
    assert json.loads((run / "run.json").read_text())["status"] == "completed" and len(exports) == 1  # reused


@pytest.mark.parametrize("name", ["fashion-mnist-scarce", "fashion-mnist-scarce-joint", "fashion-mnist-scarce-joint-diffusion"])
def test_scarce_recipes_take_fraction_and_seed_overrides(name):
    recipe = load_recipe(name, ["data.fraction=0.05", "train.seed=3", "data.fraction_seed=3"])
    assert (recipe.data.fraction, recipe.train.seed, recipe.data.fraction_seed) == (0.05, 3, 3)
    assert recipe.train.steps == load_recipe("fashion-mnist-scarce").train.steps  # same learner steps
    if name != "fashion-mnist-scarce":
        assert recipe.generator.pretrained is None and recipe.generator.pretrain_steps > 0


# -- the quality benchmark's cache key ----------------------------------------------------------------


@pytest.fixture(scope="module")
def quality(benchmark_script):
    return benchmark_script("quality")


def test_cache_key_changes_with_every_setting_that_changes_a_result(quality):
    recipe, overrides = quality.run_spec("joint", "gan", 0.01, 0, [])
    key = quality.cache_key(recipe, overrides)
    assert key == quality.cache_key(recipe, list(overrides))
    for extra in (["train.steps=100"], ["generator.pretrain_steps=10"], ["synthesis.ratio=0.5"], ["train.seed=1"]):
        assert quality.cache_key(recipe, overrides + extra) != key, extra
    assert quality.cache_key(*quality.run_spec("joint", "gan", 0.01, 1, [])) != key  # seed: learner, subset, warm-up
    assert quality.cache_key(*quality.run_spec("static", "gan", 0.01, 0, [])) != key
    plain = quality.run_spec("none", "-", 0.01, 2, [])
    assert "data.fraction_seed=2" in plain[1] and "train.seed=2" in plain[1]
    # a run folder holds its key: a finished run under another key is not reused
    assert recipe_to_dict(load_recipe(recipe, overrides))["train"]["steps"] == 3000


def test_a_new_knob_at_its_neutral_value_keeps_the_keys_of_finished_runs(quality):
    """A setting added after a grid was trained leaves the digest at the value that computes what the code
    did before it (the grid's finished runs stay reusable), and enters it at any other value."""
    import hashlib
    import json

    recipe, overrides = quality.run_spec("joint", "gan", 0.005, 0, [])
    before = recipe_to_dict(load_recipe(recipe, overrides))
    for field in ("name", "description"):
        before.pop(field)
    for (section, name), value in quality.KEY_NEUTRAL.items():
        assert before[section].pop(name) == value  # the recipe's default is the neutral value
    old = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert quality.cache_key(recipe, overrides) == old
    assert quality.cache_key(recipe, overrides + ["synthesis.hard_term_precision=fp32"]) == old
    assert quality.cache_key(recipe, overrides + ["synthesis.hard_term_precision=bf16"]) != old
