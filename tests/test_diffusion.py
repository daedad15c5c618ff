"""Tests for synthcl.generators.diffusion: options, the noise schedule against diffusers', the truncated and
checkpointed sampler (gradients, graph size), both ways of making positive pairs, export in diffusers'
format, and the diffusion generator in every synthesis mode and in generator pretraining."""

from __future__ import annotations

import csv
import subprocess
import sys
from itertools import pairwise

import pytest
import torch
from safetensors.torch import load_file
from test_cli import assert_one_line_error, run_cli

from synthcl.errors import ConfigError
from synthcl.generators.diffusion import PRESETS, Diffusion, make_betas, trailing_timesteps
from synthcl.interfaces import Generator
from synthcl.registry import GENERATORS
from synthcl.synthesis.similarity import ssim
from synthcl.testing import GeneratorContract
from synthcl.training import train

diffusers = pytest.importorskip("diffusers")


pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(image_size: int = 16, channels: int = 1, **options: object) -> Diffusion:
    torch.manual_seed(0)
    return Diffusion(image_size, channels, preset="tiny", **options)


def shapes(n: int = 8, size: int = 16) -> torch.Tensor:
    """(n, 1, size, size) images in [-1, 1]: bright squares on a dark ground, one per image."""
    images = torch.full((n, 1, size, size), -1.0)
    for i in range(n):
        a = 1 + i % (size // 2)
        images[i, :, a : a + size // 3, a : a + size // 3] = 1.0
    return images


def fit(model: Diffusion, steps: int = 30) -> Diffusion:
    """A few denoising steps on `shapes`, so that samples and pairs have structure to lose."""
    optimizer = torch.optim.Adam(model.generator_parameters(), lr=3e-3)
    real = shapes(16, model.image_size)
    for step in range(steps):
        loss = model.realism_loss(None, real, generator=seeded(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


# -- construction ---------------------------------------------------------------------------------------


def test_registered_as_diffusion_and_needs_no_samples_for_realism():
    assert GENERATORS.get("diffusion") is Diffusion
    model = tiny()
    assert model.registry_name() == "diffusion"
    assert Diffusion.realism_needs_samples is False and Generator.realism_needs_samples is True
    assert model.critic_parameters() == [] and model.critic_loss(shapes(), shapes()) is None


def test_presets_build_at_their_sizes():
    assert Diffusion(28, 1, preset="cpu").unet.config.block_out_channels == PRESETS["cpu"].block_out_channels
    # Attention in the first level at or below 16 px: 16 px for 32-px images, 12 px for 96-px ones.
    assert Diffusion(32, 3, preset="small").unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    model = Diffusion(96, 3, preset="tiny", block_out_channels=[8, 8, 8, 8], attention=True)
    assert model.unet.config.down_block_types[-1] == "AttnDownBlock2D"
    assert model.config["block_out_channels"] == [8, 8, 8, 8] and model.config["preset"] == "tiny"


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"image_size": 15}, "multiple of 2"),
        ({"image_size": 28, "preset": "cifar"}, "multiple of 8"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"preset": "cifar10"}, "did you mean 'cifar'"),
        ({"pair_method": "branches"}, "did you mean 'branch'"),
        ({"beta_schedule": "cosin"}, "did you mean 'cosine'"),
        ({"prediction_type": "v"}, "prediction_type"),
        ({"grad_steps": 5, "sampling_steps": 4}, "grad_steps 5 must be <= sampling_steps 4"),
        ({"grad_steps": 0}, "grad_steps"),
        ({"norm_num_groups": 3}, "must divide"),
        ({"block_out_channels": [8, -8]}, "block_out_channels"),
        ({"realism_batch": 0}, "realism_batch"),
    ],
)
def test_bad_options_raise_one_line_config_error(options, needle):
    with pytest.raises(ConfigError) as err:
        Diffusion(**{"image_size": 16, "channels": 1, "preset": "tiny", **options})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_without_diffusers_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    with pytest.raises(ConfigError, match=r"needs the diffusers package: pip install 'synthcl\[diffusion\]'"):
        Diffusion(16, 1, preset="tiny")


def test_importing_synthcl_and_the_backend_does_not_import_diffusers():
    code = ("import sys, synthcl, synthcl.training, synthcl.generators.diffusion; "
            "from synthcl.registry import GENERATORS; GENERATORS.get('diffusion'); "
            "sys.exit(int('diffusers' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- schedule -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ours", "theirs"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_schedule_matches_diffusers(ours, theirs):
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    expected = scheduler.alphas_cumprod.double()
    torch.testing.assert_close(torch.cumprod(1 - make_betas(ours, 1000), 0), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 3, 4, 8, 10])
def test_trailing_timesteps_match_diffusers(steps):
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    assert trailing_timesteps(1000, steps) == scheduler.timesteps.tolist()
    assert trailing_timesteps(1000, steps)[0] == 999


def test_branch_timestep_is_where_the_noise_reaches_the_hardness():
    model = tiny()
    for h in (0.05, 0.3, 0.5, 0.9):
        t = model.branch_timestep(h)
        assert (1 - model.alpha_bar(t)) ** 0.5 >= h > (1 - model.alpha_bar(t - 1)) ** 0.5
    assert model.branch_timestep(1.0) == 999


# -- the sampler ----------------------------------------------------------------------------------------


def test_samples_are_deterministic_under_a_seed_and_in_range():
    model = tiny(sampling_steps=4)
    a = model(model.sample_latents(4, seeded(1)))
    b = model(model.sample_latents(4, seeded(1)))
    assert torch.equal(a, b) and a.shape == (4, 1, 16, 16)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, model(model.sample_latents(4, seeded(2))))


def test_sampler_is_ddim_with_eta_zero_and_no_clipping():
    """Epsilon prediction, two steps (999 -> 499 -> clean): x0 = (x - sqrt(1 - ab) eps) / sqrt(ab), unclipped,
    x_next = sqrt(ab_next) x0 + sqrt(1 - ab_next) eps; only the final image is clamped."""
    model = tiny(sampling_steps=2, prediction_type="epsilon")
    z = model.sample_latents(2, seeded(0))
    with torch.no_grad():
        x, overshoot = z, False
        for t, t_next in [(999, 499), (499, -1)]:
            ab, ab_next = model.alpha_bar(t), model.alpha_bar(t_next)
            eps = model.model_output(x, t)
            x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
            overshoot |= bool(x0.abs().max() > 1)
            x = ab_next**0.5 * x0 + (1 - ab_next) ** 0.5 * eps
        assert overshoot  # an untrained model overshoots: the chain must not clip it
        torch.testing.assert_close(model(z), x.clamp(-1, 1))


def test_v_prediction_recovers_x0_without_dividing_by_the_signal():
    """For v = sqrt(ab) eps - sqrt(1 - ab) x0 the sampler's x0 and eps are exact, at every noise level."""
    model = tiny()
    assert model.prediction_type == "v_prediction"
    x0, eps = shapes(2), torch.randn(2, 1, 16, 16, generator=seeded(0))
    for t in (0, 500, 999):
        a, s = model.alpha_bar(t) ** 0.5, (1 - model.alpha_bar(t)) ** 0.5
        model.model_output = lambda x, _t, a=a, s=s: a * eps - s * x0  # an oracle UNet
        got_x0, got_eps = model._denoise(a * x0 + s * eps, t)
        torch.testing.assert_close(got_x0, x0, atol=1e-5, rtol=0)
        torch.testing.assert_close(got_eps, eps, atol=1e-5, rtol=0)


def test_forward_rejects_latents_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        tiny()(torch.zeros(2, 1, 8, 8))


class UNetCalls:
    """Counts the UNet's forward calls, and how many of them record a graph."""

    def __init__(self, model: Diffusion) -> None:
        self.total = self.recording = 0
        self.handle = model.unet.register_forward_pre_hook(self)

    def __call__(self, module, args) -> None:
        self.total += 1
        self.recording += int(torch.is_grad_enabled())


def graph_size(output: torch.Tensor) -> int:
    """Operations in the autograd graph behind ``output`` (the parameters' own leaf nodes not counted:
    every step shares them)."""
    seen, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(type(node).__name__ != "AccumulateGrad" for node in seen)


def saved_bytes(model: Diffusion, z: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Bytes the autograd graph of ``model(z)`` keeps for its backward pass, and the output."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(z)
    return total, out


@pytest.mark.parametrize("grad_steps", [1, 2])
def test_gradients_reach_every_unet_parameter_through_the_last_k_steps_only(grad_steps):
    model = tiny(sampling_steps=4, grad_steps=grad_steps)
    calls = UNetCalls(model)
    out = model(model.sample_latents(2, seeded(0)))
    assert (calls.total, calls.recording) == (4, grad_steps)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.unet.parameters())
    assert calls.total == 4 + grad_steps  # checkpointing recomputes each recorded step once, nothing else


def test_graph_and_memory_grow_with_k_not_with_the_number_of_steps():
    def measure(steps: int, k: int, checkpointing: bool) -> tuple[int, int]:
        model = tiny(sampling_steps=steps, grad_steps=k, checkpointing=checkpointing)
        nbytes, out = saved_bytes(model, model.sample_latents(2, seeded(0)))
        return graph_size(out), nbytes

    plain = {(s, k): measure(s, k, False) for s, k in [(4, 1), (8, 1), (4, 2), (8, 2)]}
    # Without checkpointing: the saved activations and the graph depend on K only, ...
    assert plain[4, 1] == plain[8, 1] and plain[4, 2] == plain[8, 2]
    # ... and double from one recorded step to two.
    assert 1.8 < plain[4, 2][1] / plain[4, 1][1] < 2.2 and 1.8 < plain[4, 2][0] / plain[4, 1][0] < 2.2
    # Checkpointing keeps the graph's shape but not the UNet's activations: a step's saved tensors
    # shrink to almost nothing (its input is kept for the recomputation).
    ckpt = {(s, k): measure(s, k, True) for s, k in [(4, 1), (8, 1), (4, 2)]}
    assert ckpt[4, 1] == ckpt[8, 1]
    assert 1.8 < ckpt[4, 2][0] / ckpt[4, 1][0] < 2.2
    assert ckpt[4, 2][1] < plain[4, 1][1] / 20


def test_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (True, False):
        model = tiny(sampling_steps=3, grad_steps=2, checkpointing=checkpointing)
        model(model.sample_latents(2, seeded(0))).square().mean().backward()
        grads.append([p.grad for p in model.unet.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_no_graph_without_grad_or_for_frozen_parameters():
    model = tiny(sampling_steps=3, grad_steps=2)
    calls = UNetCalls(model)
    with torch.no_grad():
        model(model.sample_latents(2))
    model.requires_grad_(False)  # static mode: a frozen generator
    assert not model(model.sample_latents(2)).requires_grad
    assert calls.recording == 0


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_realism_loss_is_denoising_on_real_images_and_ignores_fakes(prediction):
    model = tiny(realism_batch=4, prediction_type=prediction)
    real = shapes(8)
    calls = UNetCalls(model)
    a = model.realism_loss(None, real, generator=seeded(0))
    b = model.realism_loss(model(model.sample_latents(2)).detach(), real, generator=seeded(0))
    torch.testing.assert_close(a, b)
    assert calls.total == 1 + 4 + 1  # one UNet call per loss, the sampler's four between them
    # A naive reference: the first realism_batch images, noised at the drawn timesteps.
    rng = seeded(0)
    t = torch.randint(0, 1000, (4,), generator=rng)
    noise = torch.randn(4, 1, 16, 16, generator=rng)
    ab = torch.tensor([model.alpha_bar(int(s)) for s in t]).view(-1, 1, 1, 1)
    target = noise if prediction == "epsilon" else ab.sqrt() * noise - (1 - ab).sqrt() * real[:4]
    with torch.no_grad():
        expected = (model.model_output(ab.sqrt() * real[:4] + (1 - ab).sqrt() * noise, t) - target).pow(2).mean()
    torch.testing.assert_close(a.detach(), expected)
    # Training on it lowers it.
    before = model.realism_loss(None, real, generator=seeded(99)).item()
    fit(model, 30)
    assert model.realism_loss(None, real, generator=seeded(99)).item() < before


def test_realism_loss_rejects_images_of_another_shape():
    with pytest.raises(ValueError, match="real images"):
        tiny().realism_loss(None, torch.zeros(2, 3, 16, 16))


# -- positive pairs ---------------------------------------------------------------------------------------


class TestBranchPairsKeepTheContract(GeneratorContract):
    """The generator contract with branched pairs (the registered instance tests the `ema` pairs)."""

    image_size, channels = 16, 1

    def make_generator(self, image_size, channels):
        return Diffusion(image_size, channels, preset="tiny", sampling_steps=3, pair_method="branch")


@pytest.fixture(scope="module")
def fitted():
    """A tiny model after a few denoising steps, its partner a lagging average (so ema pairs differ)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = tiny(sampling_steps=4)
    fit(model, 20)
    model.update_partner(0.5)
    yield model.eval()
    torch.set_num_threads(threads)  # later test files compare in-process runs with fresh processes


@pytest.mark.parametrize("method", ["ema", "branch"])
def test_pair_similarity_falls_as_hardness_rises(fitted, method):
    fitted.pair_method = method
    z = fitted.sample_latents(16, seeded(7))
    with torch.no_grad():
        pairs = [fitted.pair(z, h, generator=seeded(8)) for h in (0.0, 0.2, 0.6, 1.0)]
    similarity = [float(ssim(a, b).mean()) for a, b in pairs]
    distance = [float((a - b).pow(2).mean()) for a, b in pairs]
    assert all(x > y for x, y in pairwise(similarity)), similarity
    assert all(x < y for x, y in pairwise(distance)), distance
    if method == "branch":
        assert torch.equal(*pairs[0])  # hardness 0 branches at the very end: one image twice


@pytest.mark.parametrize("method", ["ema", "branch"])
def test_pairs_are_deterministic_first_differentiable_second_detached(method):
    model = tiny(sampling_steps=3, grad_steps=1, pair_method=method)
    z = model.sample_latents(2, seeded(0))
    a1, b1 = model.pair(z, 0.4, generator=seeded(1))
    a2, b2 = model.pair(z, 0.4, generator=seeded(1))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert a1.requires_grad and not b1.requires_grad
    a1.mean().backward()
    assert all(p.grad is not None for p in model.unet.parameters())
    assert not torch.equal(b1, model.pair(z, 0.4, generator=seeded(2))[1])


@pytest.mark.parametrize(("hardness", "grad_steps", "recording"), [(0.3, 1, 1), (0.3, 2, 2), (0.9, 3, 3)])
def test_branch_truncation_counts_the_first_branchs_last_unet_calls(hardness, grad_steps, recording):
    model = tiny(sampling_steps=3, grad_steps=grad_steps, pair_method="branch", checkpointing=False)
    calls = UNetCalls(model)
    model.pair(model.sample_latents(2, seeded(0)), hardness, generator=seeded(1))
    assert calls.recording == recording


def test_hardness_above_one_acts_as_one_and_negative_is_refused():
    model = tiny(pair_method="branch")
    z = model.sample_latents(2, seeded(0))
    with torch.no_grad():
        assert all(torch.equal(x, y) for x, y in zip(model.pair(z, 1.0, seeded(1)), model.pair(z, 3.0, seeded(1))))
    with pytest.raises(ValueError, match="hardness"):
        model.pair(z, -0.1)


# -- export ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_save_loads_in_plain_diffusers_and_in_synthcl(tmp_path, prediction):
    model = tiny(sampling_steps=4, prediction_type=prediction)
    fit(model, 3)
    model.update_partner(0.5)
    model.eval()
    folder = model.save_pretrained(tmp_path / "gen")
    assert {"config.json", "model.safetensors", "unet", "unet_ema", "scheduler", "model_index.json"} <= {
        p.name for p in folder.iterdir()}
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    x, t = torch.randn(3, 1, 16, 16, generator=seeded(0)), torch.tensor([5, 500, 999])
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    ema = diffusers.UNet2DModel.from_pretrained(folder / "unet_ema").eval()
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t).sample, model.model_output(x, t), rtol=0, atol=0)
        partner = torch.func.functional_call(model.unet, {k[5:]: v for k, v in model.partner_tensors().items()},
                                             (x, t), {"return_dict": False})[0]
        torch.testing.assert_close(ema(x, t).sample, partner, rtol=0, atol=0)
        assert not torch.equal(partner, model.model_output(x, t))

        # diffusers' own DDIM pipeline samples what the generator samples (trailing spacing, no clipping).
        pipeline = diffusers.DDIMPipeline.from_pretrained(folder)
        theirs = pipeline(batch_size=2, generator=seeded(3), num_inference_steps=4, eta=0.0, output_type="np").images
        ours = (model(model.sample_latents(2, seeded(3))) + 1) / 2
        torch.testing.assert_close(torch.from_numpy(theirs).permute(0, 3, 1, 2), ours, rtol=0, atol=1e-5)

        loaded = Generator.from_pretrained(folder).eval()
        z = model.sample_latents(4, seeded(5))
        assert type(loaded) is Diffusion and loaded.config == model.config
        assert torch.equal(loaded(z), model(z)) and torch.equal(loaded.partner(z), model.partner(z))

    model.save_pretrained(folder)  # saving again replaces the diffusers folders in place
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_pretrained_options_override_the_saved_ones(tmp_path, tiny_recipe):
    from synthcl.training.build import build_generator, load_train_source

    tiny(sampling_steps=4).save_pretrained(tmp_path / "g")
    recipe = tiny_recipe(generator={"pretrained": str(tmp_path / "g"), "options": {"sampling_steps": 2,
                                                                                  "pair_method": "branch"}})
    generator = build_generator(recipe, load_train_source(recipe))
    assert (generator.sampling_steps, generator.pair_method) == (2, "branch")
    assert torch.equal(load_file(str(tmp_path / "g/model.safetensors"))["unet.conv_in.weight"],
                       generator.unet.conv_in.weight)


def test_switching_generator_name_drops_the_other_generators_options(tmp_path, tiny_recipe, caplog):
    """A GAN recipe with generator.name switched to diffusion (and back) builds the named generator; the
    other generator's options are dropped with one warning naming them; a typo still fails."""
    from synthcl.training.build import build_generator, load_train_source

    gan_options = {"preset": "tiny", "diffaugment": "translation,cutout"}
    recipe = tiny_recipe(generator={"name": "diffusion", "options": gan_options})
    with caplog.at_level("WARNING"):
        generator = build_generator(recipe, load_train_source(recipe))
    assert isinstance(generator, Diffusion) and generator.config["preset"] == "tiny"
    assert [r.getMessage() for r in caplog.records] == [
        "generator.options: diffaugment is for another generator (gan), not 'diffusion'; ignored"]

    caplog.clear()
    recipe = tiny_recipe(data={"image_size": 28}, generator={"name": "gan", "options": {
        "preset": "tiny", "sampling_steps": 3, "pair_method": "branch"}})
    with caplog.at_level("WARNING"):
        generator = build_generator(recipe, load_train_source(recipe))
    assert generator.registry_name() == "gan"
    assert "sampling_steps, pair_method are for another generator (diffusion)" in caplog.records[0].getMessage()

    recipe = tiny_recipe(generator={"name": "diffusion", "options": {"preset": "tiny", "sampling_stepz": 3}})
    with pytest.raises(ConfigError, match="sampling_stepz"):
        build_generator(recipe, load_train_source(recipe))


# -- training --------------------------------------------------------------------------------------------

TINY_DIFFUSION = {"name": "diffusion", "options": {"preset": "tiny", "sampling_steps": 2}, "lr": 1e-3,
                  "betas": [0.9, 0.999]}
# Every synthesis mode and exact joint resume, for both generators: tests/test_synthesis.py.


def _synthesizer(mode: str, warmup_steps: int):
    from synthcl.config import GeneratorConfig, SynthesisConfig
    from synthcl.synthesis.engine import Synthesizer

    model = tiny(sampling_steps=2)
    synth = Synthesizer(SynthesisConfig(mode=mode, ratio=0.5, warmup_steps=warmup_steps), GeneratorConfig(lr=1e-3),
                        model, total_steps=10)

    def augment(images, n_views, rng):
        return torch.cat([images] * n_views) * 2 - 1

    return model, synth, augment


def test_warmup_trains_the_realism_term_without_sampling():
    model, synth, augment = _synthesizer("joint", warmup_steps=5)
    calls = UNetCalls(model)
    seen = []
    original = model.realism_loss
    model.realism_loss = lambda fake, real: seen.append(fake) or original(fake, real)
    before = model.unet.conv_in.weight.detach().clone()
    assert synth.synthesize(0, 8, 100, augment, seeded(0)) is None
    synth.update_generator(0, shapes(8), lambda v, g: v.mean())
    assert seen == [None] and calls.total == 1  # the denoising loss's one UNet call; no sampler
    assert not torch.equal(before, model.unet.conv_in.weight)
    assert torch.isnan(synth.last["sample_std"])


@pytest.mark.parametrize(("mode", "recording"), [("hard-pairs", 0), ("joint", 1)])
def test_the_sampler_records_a_graph_only_for_the_hard_term(mode, recording):
    model, synth, augment = _synthesizer(mode, warmup_steps=0)
    calls = UNetCalls(model)
    views, groups = synth.synthesize(0, 8, 100, augment, seeded(0))
    assert views.shape[0] == groups.shape[0] == 16
    assert calls.recording == recording
    synth.update_generator(0, shapes(8), lambda v, g: v.float().pow(2).mean())
    assert float(synth.last["sample_std"]) >= 0


def test_generator_pretraining_runs_and_resumes_exactly(tmp_path, tiny_recipe, monkeypatch, capsys):
    stage = {"stage": "generator", "generator": {**TINY_DIFFUSION, "sample_every": 2, "samples": 4},
             "train": {"batch_size": 16, "max_steps": 4, "log_every": 2, "checkpoint_every": 2}}
    full = train(tiny_recipe(**stage), out=tmp_path / "full", quiet=True)
    rows = list(csv.DictReader((full / "metrics.csv").read_text().splitlines()))
    assert [r["step"] for r in rows] == ["2", "4"] and all(0 < float(r["generator_loss"]) < 2 for r in rows)
    assert (full / "samples" / "step-0000004.png").is_file()
    assert diffusers.UNet2DModel.from_pretrained(full / "generator" / "unet") is not None
    part = tmp_path / "part"
    train(tiny_recipe(**{**stage, "train": {**stage["train"], "max_steps": 2}}), out=part, quiet=True)
    train(tiny_recipe(**stage), out=part, resume=True, quiet=True)
    a = load_file(str(full / "generator/model.safetensors"))
    b = load_file(str(part / "generator/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # `synthcl generate` draws samples and pair ladders from the run.
    code, _, err = run_cli(monkeypatch, capsys, "generate", str(full), "--pairs", "--n", "2", "--steps", "3",
                           "--out", str(tmp_path / "p.png"))
    assert code == 0, err
    assert (tmp_path / "p.png").is_file()


@pytest.mark.parametrize("generator", ["gan", "diffusion"])
def test_pretraining_progress_shows_a_critic_loss_only_where_there_is_a_critic(generator, tmp_path, tiny_recipe,
                                                                              monkeypatch):
    """The diffusion model has no critic: its progress bar shows g_loss alone, not a d_loss that is always 0."""
    from synthcl.progress import ProgressBar

    shown: list[set[str]] = []
    real_update = ProgressBar.update
    monkeypatch.setattr(ProgressBar, "update",
                        lambda self, completed, **fields: (shown.append(set(fields)), real_update(self, completed, **fields)))
    options = TINY_DIFFUSION if generator == "diffusion" else {"name": "gan", "options": {"preset": "tiny"}}
    recipe = tiny_recipe(stage="generator", data={"image_size": 28}, generator={**options, "sample_every": 2, "samples": 4},
                         train={"batch_size": 16, "max_steps": 2, "log_every": 1, "checkpoint_every": 2})
    train(recipe, out=tmp_path / "run", quiet=False)
    fields = set().union(*shown)
    assert "g_loss" in fields
    assert ("d_loss" in fields) == (generator == "gan")


def test_unsupported_image_size_is_one_line(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    recipe = tiny_recipe_file(stage="generator", generator=TINY_DIFFUSION)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "data.image_size=18",
                           "generator.options={preset: cpu}", "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, "multiple of 4")


@pytest.mark.parametrize("name", ["fashion-mnist-diffusion", "fashion-mnist-joint-diffusion", "cifar10-diffusion",
                                  "cifar100-diffusion", "cifar10-joint-diffusion"])
def test_bundled_diffusion_recipes_validate(name):
    from synthcl.config import load_recipe

    recipe = load_recipe(name)
    assert recipe.generator.name == "diffusion" or "diffusion" in recipe.generator.pretrained
