"""The method's knobs: the partner reset, the hardness controller, real views as negatives of the hard
term, the gradient balance, synthetic anchor weights and augmentation, the matched-views and static-pairs
controls, and a monitor whose cadence does not depend on logging."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from safetensors.torch import load_file
from test_synthesis import JOINT, _setup, make_pretrained
from torch import Tensor, nn

from synthcl.config import GeneratorConfig, SynthesisConfig
from synthcl.errors import ConfigError
from synthcl.interfaces import ContrastiveLearner, Generator
from synthcl.losses import ppcl_loss
from synthcl.synthesis.engine import Synthesizer
from synthcl.training import train


class Latent(Generator):
    """A toy generator whose image is its latent: the cosine of a pair (z, z + h n) in 64 dimensions is close
    to 1 / sqrt(1 + h^2), a known, falling function of the hardness."""

    def __init__(self, image_size: int = 8, channels: int = 1, offset: float = 0.0) -> None:
        super().__init__(image_size, channels)
        self.gain = nn.Parameter(torch.ones(()))
        self.offset = offset  # a shared component: unrelated samples then look alike (high random cosine)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.channels, self.image_size, self.image_size, generator=generator)

    def forward(self, z: Tensor) -> Tensor:
        return z * self.gain + self.offset

    def realism_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        return (fake.mean() - real.mean()) ** 2


def joint(**sections: dict) -> dict:
    """The tiny joint run's sections (test_synthesis.JOINT) with ``sections`` merged into them."""
    from conftest import merge

    return merge(JOINT, sections)


def _signed(images: Tensor) -> Tensor:  # observe() hands the embedding images in [0, 1]
    return (images * 2 - 1).flatten(1)


# --- 1. progressive hardness ------------------------------------------------------------------------------


def test_partner_reset_makes_the_partner_a_copy_of_the_generator():
    gen = Latent()
    with torch.no_grad():
        gen.gain.fill_(3.0)  # the generator moved away from its partner (still at gain 1)
    synth = Synthesizer(SynthesisConfig(mode="joint", partner_reset=True), GeneratorConfig(), gen, total_steps=10)
    z = gen.sample_latents(4, torch.Generator().manual_seed(0))
    assert not torch.equal(gen.partner(z), gen(z))
    synth.begin()
    assert torch.equal(gen.partner(z), gen(z).detach())


def test_no_partner_reset_unless_asked():
    gen = Latent()
    with torch.no_grad():
        gen.gain.fill_(3.0)
    Synthesizer(SynthesisConfig(mode="joint"), GeneratorConfig(), gen, total_steps=10).begin()
    z = gen.sample_latents(4, torch.Generator().manual_seed(0))
    assert torch.allclose(gen.partner(z), z)


@pytest.mark.parametrize(("target", "offset"), [(0.9, 0.0), (0.6, 0.0), (0.6, 2.0)])
def test_controller_tracks_its_target_on_a_toy_generator(target, offset):
    """Whatever the starting hardness, the controller brings the measured pair similarity to the target; with
    a shared component (offset 2: unrelated samples have cosine 0.8) it steers the similarity relative to
    unrelated samples, not the raw cosine, which would drive the hardness to its cap."""
    config = SynthesisConfig(mode="static-pairs", ratio=1.0, hardness=0.01, hardness_cap=10.0,
                             hardness_control="target", pair_target=target, pair_target_final=None, control_every=1)
    synth = Synthesizer(config, GeneratorConfig(), Latent(offset=offset), total_steps=100)
    rng = torch.Generator().manual_seed(0)
    for step in range(60):
        synth.synthesize(step, 64, 0, lambda x, n, r: torch.cat([x] * n), rng, embed=_signed)
    measured = [synth.observe(100, *synth.generator.pair(synth.generator.sample_latents(256, rng),
                                                        synth.hardness, generator=rng), _signed)
                for _ in range(5)]
    similarity = sum(m["pair_similarity"] for m in measured) / 5
    assert abs(similarity - target) < 0.03, (measured, synth.hardness)
    if offset == 0:
        # Unrelated latents have no similarity: the relative similarity is the raw cosine, and the hardness
        # settles where the toy's closed form puts it.
        assert synth.last["random_cosine"] == pytest.approx(0.0, abs=0.1)
        assert synth.hardness == pytest.approx(math.sqrt(1 / target**2 - 1), rel=0.15)
    else:
        assert synth.last["random_cosine"] == pytest.approx(0.8, abs=0.05)
        assert synth.hardness < 5.0  # far from the cap of 10


def test_pair_target_is_scheduled_from_easy_to_hard():
    config = SynthesisConfig(mode="joint", hardness_control="target", pair_target=0.9, pair_target_final=0.5)
    synth = Synthesizer(config, GeneratorConfig(), Latent(), total_steps=101)
    assert synth.schedule(0)["pair_target"] == pytest.approx(0.9)
    assert synth.schedule(101)["pair_target"] == pytest.approx(0.5)
    assert synth.schedule(0)["hardness"] == synth.hardness  # the controller's output, not the schedule


# --- 2. the hard term ---------------------------------------------------------------------------------------


def test_real_views_enter_the_generators_objective():
    learner, gen, synth, augment, frozen_loss = _setup("hard-samples", hard_real_negatives=True)
    seen = []

    def spy(views, groups):
        seen.append((views.shape[0], groups.clone()))
        return frozen_loss(views, groups)

    real_views = torch.rand(16, 1, 28, 28) * 2 - 1
    real_groups = torch.arange(8).repeat(2)
    synth.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
    synth.update_generator(0, torch.rand(8, 1, 28, 28) * 2 - 1, spy, real_views=(real_views, real_groups))
    n_synthetic = 2 * 8  # ratio 1.0: 8 latents, 2 views each
    assert seen[0][0] == n_synthetic + 16
    assert set(real_groups.tolist()) <= set(seen[0][1].tolist())


def test_without_the_knob_the_hard_term_sees_synthetic_views_only():
    learner, gen, synth, augment, frozen_loss = _setup("hard-samples")
    seen = []
    synth.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
    synth.update_generator(0, torch.rand(8, 1, 28, 28) * 2 - 1, lambda v, g: seen.append(v.shape[0]) or frozen_loss(v, g),
                           real_views=(torch.rand(16, 1, 28, 28), torch.arange(8).repeat(2)))
    assert seen == [16]


def test_gradient_ratio_is_logged_and_balanced_mode_holds_it_at_lambda_hard():
    _, gen, synth, augment, frozen_loss = _setup("hard-samples", lambda_hard=0.3, lambda_hard_mode="balanced")
    realism_terms = []
    realism_loss = gen.realism_loss
    gen.realism_loss = lambda fake, real: (term := realism_loss(fake, real), realism_terms.append(term.detach()))[0]
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    synth.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
    synth.update_generator(0, real, frozen_loss)
    assert synth.last["grad_ratio"] == pytest.approx(0.3, rel=1e-4)
    assert synth.last["hard_weight"] == pytest.approx(0.3 * synth.balance)
    assert synth.balance == pytest.approx(synth.last["realism_grad"] / synth.last["hard_grad"])
    # ... and that weight is the one the generator's loss was built with: lambda_real * realism - weight * hard.
    assert float(synth.last["generator_loss"]) == pytest.approx(
        float(realism_terms[-1]) - float(synth.last["hard_weight"]) * float(synth.last["hard_loss"]), rel=1e-5)

    _, _, raw, augment, frozen_loss = _setup("hard-samples", lambda_hard=0.3)
    raw.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
    raw.update_generator(0, real, frozen_loss)
    assert raw.last["hard_weight"] == pytest.approx(0.3)
    assert raw.last["grad_ratio"] == pytest.approx(0.3 * raw.last["hard_grad"] / raw.last["realism_grad"], rel=1e-4)


# --- 3. real vs synthetic -----------------------------------------------------------------------------------


def test_anchor_weights_in_the_loss():
    torch.manual_seed(0)
    z, groups = torch.randn(12, 8), torch.arange(6).repeat(2)
    plain = ppcl_loss(z, groups, 0.5)
    assert torch.allclose(ppcl_loss(z, groups, 0.5, torch.ones(12)), plain)
    # Weight 0 on the last 4 anchors: the mean over the first 8 anchors (the others stay negatives).
    w = torch.ones(12)
    w[8:] = 0
    per_anchor = [ppcl_loss(z, groups, 0.5, (torch.arange(12) == i).float()) for i in range(12)]
    assert torch.allclose(ppcl_loss(z, groups, 0.5, w), torch.stack(per_anchor[:8]).mean())


class Unweighted(ContrastiveLearner):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Identity()

    def loss(self, views: Tensor, groups: Tensor) -> Tensor:
        return views.mean()


def test_learner_without_weights_is_refused_for_synthetic_weight(tiny_recipe, tmp_path, monkeypatch):
    assert not Unweighted.takes_weights()
    from synthcl.learners import SimCLR

    assert SimCLR.takes_weights()
    from synthcl.training import loop

    recipe = tiny_recipe(**joint(synthesis={"synthetic_weight": 0.1}))
    monkeypatch.setattr(loop, "build_learner", lambda recipe, channels: Unweighted())
    with pytest.raises(ConfigError, match="synthetic_weight"):
        train(recipe, out=tmp_path / "run", quiet=True)


def test_synthetic_weight_and_augment_reach_the_learner_step(tiny_recipe, tmp_path, monkeypatch):
    """The learner's loss gets weights (1 for real anchors, the knob's value for synthetic ones) and the
    synthetic views come from their own augmentation."""
    from synthcl.training import step as step_module

    calls = []
    original = step_module.LearnerStep.__call__

    def spy(self, step, images, real=None):
        calls.append((self.synthetic_weight, self.synthetic_augment is not self.augment))
        return original(self, step, images, real)

    monkeypatch.setattr(step_module.LearnerStep, "__call__", spy)
    seen_weights = []
    from synthcl.learners import SimCLR

    loss = SimCLR.loss

    def weighted(self, views, groups, weights=None):
        seen_weights.append(None if weights is None else weights.clone())
        return loss(self, views, groups, weights)

    monkeypatch.setattr(SimCLR, "loss", weighted)
    from synthcl.augment import ViewAugment

    augmented = []  # (the augmentation's crop_scale, jitter_p, images) of every call
    views = ViewAugment.views
    monkeypatch.setattr(ViewAugment, "views", lambda self, images, n, rng=None: augmented.append(
        (self.crop_scale, self.jitter_p, images.shape[0])) or views(self, images, n, rng))
    recipe = tiny_recipe(**joint(synthesis={"synthetic_weight": 0.25,
                                             "augment": {"crop_scale": [0.6, 1.0], "jitter_p": 0.0}}))
    train(recipe, out=tmp_path / "run", quiet=True)
    assert calls and all(c[0] == 0.25 and c[1] for c in calls)
    # The 8 synthetic instances of each step go through the weaker augmentation, the 16 real images never do.
    assert {a[2] for a in augmented if a[:2] == ((0.6, 1.0), 0.0)} == {8}
    assert {a[2] for a in augmented if a[:2] != ((0.6, 1.0), 0.0)} == {16}
    active = [w for w in seen_weights if w is not None and w.shape[0] > 32]  # after synthesis.warmup_steps
    assert active
    w = active[0]
    assert (w[:32] == 1).all() and (w[32:] == 0.25).all()  # batch 16 x 2 real views, then synthetic


def test_synthesis_augment_is_validated(tiny_recipe):
    with pytest.raises(ConfigError, match="synthesis.augment.jitter_p"):
        tiny_recipe(**joint(synthesis={"augment": {"jitter_p": 2.0}}))
    with pytest.raises(ConfigError, match="synthetic_weight"):
        tiny_recipe(**joint(synthesis={"synthetic_weight": 0.0}))
    with pytest.raises(ConfigError, match="pair_target"):
        tiny_recipe(**joint(synthesis={"pair_target": 1.5}))
    with pytest.raises(ConfigError, match="pair_target_final"):
        tiny_recipe(**joint(synthesis={"pair_target_final": -0.2}))


# --- 4. controls ------------------------------------------------------------------------------------------


def test_matched_views_adds_four_views_of_more_real_images(tiny_recipe, tmp_path, monkeypatch):
    from synthcl.learners import SimCLR

    seen = []
    loss = SimCLR.loss
    monkeypatch.setattr(SimCLR, "loss", lambda self, v, g, w=None: seen.append((v.shape[0], g.clone())) or loss(self, v, g))
    recipe = tiny_recipe(synthesis={"mode": "matched-views", "ratio": 0.5})
    run = train(recipe, out=tmp_path / "run", quiet=True)
    views, groups = seen[0]
    assert views == 16 * 2 + 8 * 4  # 16 real images x 2 views, then 8 more real images x 4 views
    extra = groups[32:]
    assert sorted(torch.bincount(extra - 16).tolist()) == [4] * 8 and int(extra.min()) == 16
    assert not (run / "generator").exists()


def test_matched_views_resumes_exactly(tiny_recipe, tmp_path):
    recipe = tiny_recipe(synthesis={"mode": "matched-views", "ratio": 0.5})
    full = train(recipe, out=tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    short = tiny_recipe(synthesis={"mode": "matched-views", "ratio": 0.5}, train={**recipe_train(), "max_steps": 2})
    train(short, out=part, quiet=True)
    train(recipe, out=part, resume=True, quiet=True)
    a = load_file(str(full / "checkpoints/last/weights.safetensors"))
    b = load_file(str(part / "checkpoints/last/weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def recipe_train():
    from conftest import TINY

    return dict(TINY["train"])


def test_static_pairs_uses_frozen_pairs(tiny_recipe, tmp_path):
    folder = make_pretrained("gan", tmp_path / "gan")
    recipe = tiny_recipe(**joint(generator={"pretrained": str(folder)}, synthesis={"mode": "static-pairs"}))
    run = train(recipe, out=tmp_path / "run", quiet=True)
    before = load_file(str(folder / "model.safetensors"))
    after = load_file(str(run / "generator" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing trained it
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert any(r["pair_ssim"] not in ("", "nan") for r in rows)  # pairs were made and measured


@pytest.mark.parametrize(("mode", "per_latent"), [("none", 0), ("static", 2), ("static-pairs", 4), ("hard-samples", 2),
                                               ("hard-pairs", 4), ("joint", 4)])
def test_each_mode_puts_its_synthetic_views_in_the_learners_batch(mode, per_latent, tiny_recipe, tmp_path, monkeypatch):
    """After the warm-up step every mode's learner step sees the 16 real images' 2 views each, plus, for the
    generator modes, ratio x 16 = 8 synthetic instances with 2 views (samples) or 2 x 2 (a pair's two members)
    under their own group ids; `none` sees the real views alone."""
    from synthcl.learners import SimCLR

    seen = []
    loss = SimCLR.loss
    monkeypatch.setattr(SimCLR, "loss", lambda self, v, g, w=None: seen.append((v.shape[0], g.clone())) or loss(self, v, g, w))
    generator = {"pretrained": str(make_pretrained("gan", tmp_path / "gan"))} if mode.startswith("static") else {}
    recipe = tiny_recipe(**joint(generator=generator, synthesis={"mode": mode}))
    train(recipe, out=tmp_path / "run", quiet=True)
    batch = 16 * 2 + 8 * per_latent
    learner_calls = [groups for views, groups in seen if views == batch]
    assert learner_calls, sorted({views for views, _ in seen})
    assert len(learner_calls) >= 3  # the steps after the first (synthesis.warmup_steps=1)
    if per_latent:
        extra = learner_calls[-1][32:]
        assert int(extra.min()) == 16 and sorted(torch.bincount(extra - 16).tolist()) == [per_latent] * 8


# --- 5. the monitor's cadence ---------------------------------------------------------------------------


def test_logging_cadence_does_not_change_training(tiny_recipe, tmp_path):
    """With the controller and the steering monitor on, runs logged every step and every third step end
    with the same weights (the measurements run at control_every, inside the step)."""
    synthesis = {"hardness_control": "target", "monitor": "steer", "control_every": 2,
                 "min_pair_similarity": 1.0, "partner_reset": True, "hard_real_negatives": True,
                 "lambda_hard_mode": "balanced"}
    runs = []
    for every in (1, 3):
        recipe = tiny_recipe(**joint(synthesis=synthesis, train={"log_every": every}))
        runs.append(train(recipe, out=tmp_path / f"log{every}", quiet=True))
    for name in ("weights", "generator"):
        a = load_file(str(runs[0] / f"checkpoints/last/{name}.safetensors"))
        b = load_file(str(runs[1] / f"checkpoints/last/{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    rows = list(csv.DictReader(open(runs[0] / "metrics.csv")))
    assert any(r["pair_target"] not in ("", "nan") for r in rows)
    assert any(r["grad_ratio"] not in ("", "nan") for r in rows)
    assert any(float(r["backoffs"]) > 0 for r in rows)  # the steering monitor acted (its bound is 1)


def test_every_knob_resumes_exactly(tiny_recipe, tmp_path):
    synthesis = {"hardness_control": "target", "control_every": 1, "partner_reset": True,
                 "hard_real_negatives": True, "lambda_hard_mode": "balanced", "synthetic_weight": 0.5,
                 "augment": {"crop_scale": [0.5, 1.0]}}
    full = train(tiny_recipe(**joint(synthesis=synthesis)), out=tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    train(tiny_recipe(**joint(synthesis=synthesis, train={"max_steps": 2})), out=part, quiet=True)
    train(tiny_recipe(**joint(synthesis=synthesis)), out=part, resume=True, quiet=True)
    for name in ("weights", "generator"):
        a = load_file(str(full / f"checkpoints/last/{name}.safetensors"))
        b = load_file(str(part / f"checkpoints/last/{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_steering_run_stopped_between_two_measurements_resumes_exactly(tiny_recipe, tmp_path):
    """The state the generator's step carries between its measurements (every control_every=2 steps: the
    gradient balance, the controller's hardness, the monitor's back-offs of lambda_hard) survives a stop after
    step 3, between the measurements of steps 2 and 4 (the first after the warm-up step): the resumed run's
    checkpoint, its logged schedules and its synthesis state equal an uninterrupted run's."""
    synthesis = {"hardness_control": "target", "control_every": 2, "monitor": "steer", "min_pair_similarity": 1.0,
                 "lambda_hard_mode": "balanced", "hard_real_negatives": True}
    steps = {"max_steps": 6, "log_every": 1, "checkpoint_every": 2}
    full = train(tiny_recipe(**joint(synthesis=synthesis, train=steps)), out=tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    train(tiny_recipe(**joint(synthesis=synthesis, train={**steps, "max_steps": 3})), out=part, quiet=True)
    stopped = torch.load(part / "checkpoints/last/state.pt", weights_only=True)["synthesis"]
    assert stopped["backoffs"] > 0 and stopped["balance"] is not None  # state to carry over the stop
    train(tiny_recipe(**joint(synthesis=synthesis, train=steps)), out=part, resume=True, quiet=True)
    for name in ("weights", "generator"):
        a = load_file(str(full / f"checkpoints/last/{name}.safetensors"))
        b = load_file(str(part / f"checkpoints/last/{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    state = [torch.load(run / "checkpoints/last/state.pt", weights_only=True)["synthesis"] for run in (full, part)]
    scalars = ("lambda_scale", "backoffs", "hardness", "balance")
    assert [state[0][k] for k in scalars] == [state[1][k] for k in scalars]
    rows = [list(csv.DictReader(open(run / "metrics.csv"))) for run in (full, part)]
    logged = ("lambda_hard", "hard_weight", "hardness", "backoffs")
    assert [[r[k] for k in logged] for r in rows[0]] == [[r[k] for k in logged] for r in rows[1]]


def test_synthesis_augment_inherits_the_real_views_augmentation(tiny_recipe):
    recipe = tiny_recipe(**joint(synthesis={"augment": {"jitter_p": 0.4}}))
    assert recipe.synthesis.augment.jitter_p == 0.4
    assert recipe.synthesis.augment.crop_scale == recipe.augment.crop_scale == [0.3, 1.0]  # inherited
    from synthcl.config import load_recipe

    over = load_recipe("fashion-mnist-scarce-joint", ["synthesis.augment.crop_scale=[0.5, 1.0]"])
    assert over.synthesis.augment.crop_scale == [0.5, 1.0] and over.synthesis.augment.jitter_p == over.augment.jitter_p


def test_controller_plot(tmp_path, benchmark_script):
    """benchmarks/pair_similarity_plot.py --controller draws target vs measured pair cosine from a metrics log."""
    pytest.importorskip("matplotlib")
    module = benchmark_script("pair_similarity_plot")
    metrics = tmp_path / "metrics.csv"
    rows = ["step,pair_target,pair_similarity,pair_cosine_step,random_cosine,hardness,pair_ssim,pair_cosine"]
    rows += [f"{s},{0.9 - s / 1000},{0.88 - s / 1000},{0.92 - s / 1000},0.3,{0.1 + s / 500},0.8,0.9" for s in range(10, 200, 10)]
    metrics.write_text("\n".join(rows) + "\n")
    out = tmp_path / "controller.png"
    assert module.main([str(metrics), "--controller", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    metrics.write_text("step,pair_ssim,pair_cosine,hardness\n10,0.8,0.9,0.1\n")
    with pytest.raises(SystemExit, match="pair_target"):
        module.main([str(metrics), "--controller", "--out", str(out)])


def test_one_view_per_pair_member_halves_the_synthetic_views():
    """pair_views=1: each pair member is augmented once, so a group holds two views, one of each member."""
    counts = {}
    for k in (2, 1):
        _, _, synth, augment, _ = _setup("joint", pair_views=k)
        views, groups = synth.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
        counts[k] = (views.shape[0], sorted(set(torch.bincount(groups - 100).tolist())))
    assert counts[2] == (32, [4]) and counts[1] == (16, [2])


def test_critic_every_skips_critic_updates():
    _, gen, synth, augment, frozen_loss = _setup("joint", critic_every=2)
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    changed = []
    for step in range(4):
        before = [p.detach().clone() for p in gen.critic_parameters()]
        synth.synthesize(step, 8, 100, augment, torch.Generator().manual_seed(step))
        synth.update_generator(step, real, frozen_loss)
        changed.append(any(not torch.equal(a, b) for a, b in zip(before, gen.critic_parameters())))
    assert changed == [True, False, True, False]


def test_generator_precision_bf16_runs_the_generator_under_autocast():
    _, gen, synth, augment, frozen_loss = _setup("joint", generator_precision="bf16")
    dtypes = []
    handle = gen.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    views, _ = synth.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
    handle.remove()
    assert dtypes == [torch.bfloat16, torch.bfloat16]  # generator and partner ran in bf16
    synth.update_generator(0, torch.rand(8, 1, 28, 28) * 2 - 1, frozen_loss)
    assert all(torch.isfinite(p).all() for p in gen.parameters())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_hard_term_precision_sets_the_frozen_learners_pass(precision):
    """hard_term_precision=bf16: the learner's pass inside the generator step (its forward, the backward to
    the synthetic views) runs under bf16 autocast; fp32 (the default): in full precision, even when the
    generator itself runs in bf16. The generator still gets a finite gradient from the hard term."""
    learner, gen, synth, augment, frozen_loss = _setup("joint", hard_term_precision=precision,
                                                        generator_precision="bf16")
    seen = []
    handle = learner.backbone.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    synth.synthesize(0, 8, 100, augment, torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in gen.generator_parameters()]
    synth.update_generator(0, torch.rand(8, 1, 28, 28) * 2 - 1, frozen_loss)
    handle.remove()
    assert seen == [torch.bfloat16 if precision == "bf16" else torch.float32]
    assert synth.last["hard_loss"].dtype == torch.float32 and torch.isfinite(synth.last["hard_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.generator_parameters()))
