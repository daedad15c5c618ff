"""Joint training: every synthesis mode from the CLI, the generator step's properties, schedules,
exact resume, and back-off on divergence."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file
from test_cli import run_cli

from synthcl.config import GeneratorConfig, ModelConfig, SynthesisConfig
from synthcl.flags import NO_STEP
from synthcl.learners import SimCLR
from synthcl.nn.backbones import SmallCNN
from synthcl.nn.momentum import frozen_call
from synthcl.registry import GENERATORS
from synthcl.synthesis.engine import Synthesizer
from synthcl.training import train

JOINT = {
    "data": {"image_size": 28},
    "generator": {"name": "gan", "options": {"preset": "tiny"}},
    "synthesis": {"mode": "joint", "ratio": 0.5, "warmup_steps": 1, "hardness": 0.2, "hardness_final": 0.6,
                  "sample_every": 2},
    "train": {"max_steps": 4, "log_every": 2, "checkpoint_every": 2},
}


# The recipe sections of each generator's tiny joint run: the GAN at 28 px, the diffusion UNet at the tiny
# recipe's 16 px with its own learning rate.
TINY_GENERATORS = {
    "gan": {"data": {"image_size": 28}, "generator": JOINT["generator"]},
    "diffusion": {"data": {"image_size": 16},
                  "generator": {"name": "diffusion", "options": {"preset": "tiny", "sampling_steps": 2},
                                "lr": 1e-3, "betas": [0.9, 0.999]}},
}


def make_pretrained(name: str, folder):
    """A freshly initialised tiny generator saved as a pretrained folder (the static mode's input)."""
    if name == "diffusion":
        pytest.importorskip("diffusers")
        size, options = 16, {"sampling_steps": 2}
    else:
        size, options = 28, {}
    torch.manual_seed(0)
    GENERATORS.get(name)(image_size=size, channels=1, preset="tiny", **options).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """pretrained(name) -> folder of that generator, built once per module."""
    made = {}

    def get(name: str):
        if name not in made:
            made[name] = make_pretrained(name, tmp_path_factory.mktemp(name) / name)
        return made[name]

    return get


MODE_CASES = [("gan", "none")] + [(g, m) for g in TINY_GENERATORS for m in ("static", "hard-samples", "hard-pairs", "joint")]


@pytest.mark.parametrize(("generator_name", "mode"), MODE_CASES)
def test_every_mode_trains_from_the_cli(monkeypatch, capsys, tmp_path, tiny_recipe_file, pretrained, generator_name, mode):
    """Every synthesis mode with every shipped generator: a recipe switches ``generator.name`` and trains."""
    sections = TINY_GENERATORS[generator_name]
    generator = sections["generator"]
    if mode == "static":
        generator = {"pretrained": str(pretrained(generator_name))}
    elif generator_name == "diffusion" and mode == "hard-pairs":  # the other pair method (joint uses ema)
        generator = {**generator, "options": {**generator["options"], "pair_method": "branch"}}
    recipe = tiny_recipe_file(**{**JOINT, **sections, "generator": generator,
                                 "synthesis": {**JOINT["synthesis"], "mode": mode}})
    run = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(run), "-q")
    assert code == 0, err
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["step"] for r in rows] == ["2", "4"]
    if mode == "none":
        assert "pair_ssim" not in rows[0] and not (run / "generator").exists()
        return
    assert json.loads((run / "run.json").read_text())["synthesis"] == mode
    lowest = -1 if generator_name == "diffusion" else 0  # an untrained UNet's pairs can anti-correlate
    assert all(lowest <= float(r["pair_ssim"]) <= 1 and float(r["hardness"]) > 0 for r in rows)
    assert (run / "pairs" / "step-0000004.png").is_file() and (run / "samples" / "step-0000004.png").is_file()
    assert (run / "generator" / "config.json").is_file()
    if generator_name == "diffusion":  # the UNet also in diffusers' own format
        assert (run / "generator" / "unet" / "config.json").is_file()
    if mode in ("hard-samples", "joint"):
        assert float(rows[-1]["hard_loss"]) > 0
    if mode == "static":  # the frozen generator is unchanged
        before = load_file(str(pretrained(generator_name) / "model.safetensors"))
        after = load_file(str(run / "generator" / "model.safetensors"))
        assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("learner", ["mocov2", "byol"])
def test_joint_mode_works_with_every_learner(tmp_path, tiny_recipe, learner):
    run = train(tiny_recipe(**{**JOINT, "model": {"learner": learner}}), out=tmp_path / "run", quiet=True)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)


@pytest.mark.parametrize("generator_name", list(TINY_GENERATORS))
def test_joint_resume_is_bit_identical(tmp_path, tiny_recipe, generator_name):
    if generator_name == "diffusion":
        pytest.importorskip("diffusers")
    base = {**JOINT, **TINY_GENERATORS[generator_name]}

    def recipe(steps):
        return tiny_recipe(**{**base, "train": {**JOINT["train"], "max_steps": steps}})

    full = train(recipe(4), out=tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    train(recipe(2), out=part, quiet=True)
    train(recipe(4), out=part, resume=True, quiet=True)
    for name in ("weights", "generator"):
        a = load_file(str(full / f"checkpoints/last/{name}.safetensors"))
        b = load_file(str(part / f"checkpoints/last/{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


# --- the generator step itself ------------------------------------------------------------------------


def _setup(mode="joint", **synthesis):
    torch.manual_seed(0)
    learner = SimCLR(SmallCNN(1, 4), ModelConfig(proj_hidden_dim=16, proj_output_dim=8))
    gen = GENERATORS.get("gan")(image_size=28, channels=1, preset="tiny")
    config = SynthesisConfig(mode=mode, ratio=1.0, **synthesis)
    synth = Synthesizer(config, GeneratorConfig(lr=1e-3), gen, total_steps=100)

    def augment(images, n_views, rng):  # identity views: the property is about the generator
        return torch.cat([images] * n_views) * 2 - 1

    def frozen_loss(views, groups):
        return frozen_call(learner, views, groups)

    return learner, gen, synth, augment, frozen_loss


def test_generator_step_raises_the_learners_loss_on_its_samples():
    """Gradient ascent through the frozen learner: on a fixed batch of latents the learner's loss on the
    generator's samples rises step after step (realism switched off to isolate the hard term)."""
    learner, gen, synth, augment, frozen_loss = _setup("hard-samples", lambda_hard=1.0, lambda_real=0.0)
    real = torch.rand(16, 1, 28, 28) * 2 - 1
    losses = []
    for step in range(5):
        synth.synthesize(step, 16, 100, augment, torch.Generator().manual_seed(0))  # the same latents
        synth.update_generator(step, real, frozen_loss)
        losses.append(float(synth.last["hard_loss"]))  # measured before this step's update
    assert all(b > a for a, b in zip(losses, losses[1:])), losses


def test_generator_step_leaves_learner_parameters_and_bn_statistics_unchanged():
    learner, gen, synth, augment, frozen_loss = _setup("joint")
    learner.train()
    state = {k: v.clone() for k, v in learner.state_dict().items()}
    rng = torch.Generator().manual_seed(0)
    synth.synthesize(0, 8, 100, augment, rng)
    synth.update_generator(0, torch.rand(8, 1, 28, 28) * 2 - 1, frozen_loss)
    assert float(synth.last["hard_loss"]) > 0  # the learner's loss was used...
    assert all(p.grad is None for p in learner.parameters())  # ...without gradients into it...
    assert all(torch.equal(v, learner.state_dict()[k]) for k, v in state.items())  # ...or any change


def test_measured_pair_similarity_falls_as_hardness_rises():
    learner, gen, synth, _, _ = _setup("hard-pairs")
    ssims, cosines = [], []
    for hardness in (0.0, 0.5, 1.5):
        synth.config.hardness = synth.config.hardness_cap = hardness
        m = synth.measure_pairs(0, lambda x: learner.features(x * 2 - 1))
        ssims.append(m["pair_ssim"])
        cosines.append(m["pair_cosine"])
    assert ssims[0] > ssims[1] > ssims[2]
    assert cosines[0] > cosines[2]


def test_schedules_are_linear_after_warmup_and_capped():
    synth = _setup("joint", warmup_steps=10, hardness=0.2, hardness_final=2.0, hardness_cap=0.5,
                   lambda_hard=1.0, lambda_hard_final=0.0, partner_momentum=0.99, partner_momentum_final=0.999)[2]
    assert not synth.active(9) and synth.active(10)
    start, middle, end = synth.schedule(10), synth.schedule(55), synth.schedule(100)
    assert start["hardness"] == pytest.approx(0.2) and end["hardness"] == pytest.approx(0.5)  # capped
    assert middle["lambda_hard"] == pytest.approx(0.5) and end["lambda_hard"] == pytest.approx(0.0)
    assert end["partner_momentum"] == pytest.approx(0.999)


def test_divergence_backs_off_lambda_hard_then_stops(tmp_path, tiny_recipe):
    learner, gen, synth, augment, frozen_loss = _setup("joint", lambda_hard=1.0)
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    synth.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
    synth.update_generator(0, real, lambda v, g: frozen_loss(v, g) * float("nan"))
    assert synth.backoffs == 1 and synth.schedule(0)["lambda_hard"] == pytest.approx(0.5)
    assert synth.failure is None
    for step in range(1, 12):
        synth.synthesize(step, 8, 100, augment, torch.Generator().manual_seed(step))
        synth.update_generator(step, real, lambda v, g: frozen_loss(v, g) * float("nan"))
    assert synth.failure is not None and "back-offs" in synth.failure
    assert synth.failed() == (synth.failure, synth.failure_step) and synth.failure_step == 11  # the 11th back-off
    # The generator never took a step on a NaN loss.
    assert all(torch.isfinite(p).all() for p in gen.parameters())


def test_processes_agree_on_a_synthesis_failure_and_name_the_earliest_bad_step():
    """failed() is one reduce every process joins: a back-off limit reached on another process, or samples
    that went non-finite there first, stop this one too, with the earliest step."""
    synth = _setup("joint")[2]
    seen = []

    def other_process(backed_off, bad_images):  # another process's marks (minus the step; NO_STEP: none)
        def reduce(state, op):
            seen.append(op)
            return torch.maximum(state, torch.tensor([backed_off, bad_images]))
        return reduce

    assert synth.failed() is None and synth.failed(other_process(NO_STEP, NO_STEP)) is None
    samples_at_3 = other_process(NO_STEP, -3)
    assert synth.failed(samples_at_3) == (
        "the generator's samples became non-finite at step 3. Try a lower generator.lr or generator.critic_lr", 3)
    synth._bad_images.flag(torch.tensor(True), 5)  # this process's own samples, later
    assert synth.failed(samples_at_3)[1] == 3 and synth.failed() == (
        "the generator's samples became non-finite at step 5. Try a lower generator.lr or generator.critic_lr", 5)
    assert synth.failed(other_process(-4, NO_STEP)) == (
        "synthesis diverged at step 4 on another process (lambda_hard backed off too often there)", 4)
    assert synth.failed(other_process(-6, NO_STEP))[1] == 5  # the samples went bad first
    synth.failure, synth.failure_step = "synthesis diverged at step 2 (x) after 10 back-offs of lambda_hard", 2
    assert synth.failed(other_process(-4, -3)) == (synth.failure, 2)
    assert seen == ["max"] * 6


def test_non_finite_samples_are_flagged_without_a_sync_and_blame_the_generator():
    _, gen, synth, augment, _ = _setup("joint")
    with torch.no_grad():
        next(gen.parameters()).fill_(float("nan"))
    synth.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
    assert synth.failed() == ("the generator's samples became non-finite at step 1. Try a lower generator.lr or "
                              "generator.critic_lr", 1)


def test_joint_training_on_two_processes(tmp_path, tiny_recipe_file):
    import subprocess
    import sys

    recipe = tiny_recipe_file(**JOINT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "synthcl", "train", str(recipe), "--out", str(tmp_path / "run"), "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    status = json.loads((tmp_path / "run/run.json").read_text())
    assert status["status"] == "completed" and status["processes"] == 2 and status["synthesis"] == "joint"
