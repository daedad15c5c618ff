"""Tests for synthcl.generators.gan: shapes and sizes, spectral norm, hinge losses, DiffAugment, a short GAN
fit, save/load, and the moving-average partner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from synthcl.errors import ConfigError
from synthcl.generators.gan import GAN, PRESETS, SUPPORTED_SIZES, diff_augment
from synthcl.interfaces import Generator
from synthcl.registry import GENERATORS

POLICIES = ["color", "translation", "cutout", "translation,cutout,color"]


pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(image_size: int = 28, channels: int = 1, **options: object) -> GAN:
    torch.manual_seed(0)
    return GAN(image_size, channels, preset="tiny", **options)


def grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    return [p.grad for p in params]


def textured(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, C, size, size) images in [-1, 1] without flat regions, so that any change shows."""
    return torch.rand(batch, channels, size, size, generator=seeded(seed)) * 1.8 - 0.9


# -- construction -------------------------------------------------------------------------------------------


def test_registered_as_gan():
    assert GENERATORS.get("gan") is GAN
    assert tiny().registry_name() == "gan"


@pytest.mark.parametrize("image_size", [28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_default_preset_output_shape_and_range(image_size, channels):
    torch.manual_seed(0)
    model = GAN(image_size, channels)
    images = model(model.sample_latents(4, generator=seeded(0)))
    assert images.shape == (4, channels, image_size, image_size)
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.01  # not collapsed to a constant at init
    assert images.is_contiguous()  # NCHW out, whatever layout the convolutions use inside
    assert model.discriminator(images).shape == (4,)


@pytest.mark.parametrize("image_size", [48, 64, 96])
def test_larger_sizes_with_tiny_preset(image_size):
    model = tiny(image_size, 3)
    images = model(model.sample_latents(2))
    assert images.shape == (2, 3, image_size, image_size)
    assert images.abs().max() <= 1
    assert model.discriminator(images).shape == (2,)


def test_supported_sizes_follow_the_base_times_power_of_two_rule():
    assert SUPPORTED_SIZES == (28, 32, 40, 48, 56, 64, 80, 96)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"image_size": 20}, "supported sizes: 28, 32"),
        ({"image_size": 100}, "supported sizes"),
        ({"image_size": 30}, "supported sizes"),
        ({"image_size": 112}, "supported sizes"),  # 7 * 16, but above 96
        ({"image_size": 32.0}, "supported sizes"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"preset": "cifar10"}, "did you mean 'cifar'"),
        ({"g_width": 0}, "g_width"),
        ({"latent_dim": -1}, "latent_dim"),
        ({"diffaugment": "translation,colour"}, "did you mean 'color'"),
    ],
)
def test_bad_options_raise_one_line_config_error(options, needle):
    with pytest.raises(ConfigError) as err:
        GAN(**{"preset": "tiny", **options})
    message = str(err.value)
    assert needle in message
    assert "\n" not in message


def test_widths_come_from_the_preset_unless_overridden():
    model = GAN(32, 3, preset="tiny", d_width=8)
    assert (model.g_width, model.d_width) == (PRESETS["tiny"][0], 8)
    assert model.config["d_width"] == 8 and model.config["preset"] == "tiny"


def test_parameters_split_into_generator_and_critic():
    model = tiny()
    critic = {id(p) for p in model.critic_parameters()}
    generator = {id(p) for p in model.generator_parameters()}
    assert critic == {id(p) for p in model.discriminator.parameters()}
    assert critic and generator and not critic & generator
    assert critic | generator == {id(p) for p in model.parameters()}


def test_sample_latents_are_seeded_standard_normal():
    model = tiny(latent_dim=32)
    z = model.sample_latents(2000, generator=seeded(3))
    assert z.shape == (2000, 32)
    assert torch.equal(z, model.sample_latents(2000, generator=seeded(3)))
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02


def test_forward_rejects_latents_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"\(B, 128\)"):
        tiny()(torch.zeros(2, 64))


# -- the critic ---------------------------------------------------------------------------------------------


def test_every_critic_weight_is_spectrally_normalised():
    model = tiny(32, 3)
    layers = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    raw = [m.parametrizations.weight.original for m in layers]
    # The test is only meaningful if the raw weights are not already normalised.
    assert max(abs(torch.linalg.matrix_norm(w.flatten(1), ord=2).item() - 1) for w in raw) > 0.1
    images = textured(4, 3, 32)
    for _ in range(20):  # each training-mode forward runs one power iteration
        model.discriminator(images)
    with torch.no_grad():
        for layer in layers:
            sigma = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2).item()
            assert 0.99 < sigma < 1.05


def test_hinge_losses_match_a_naive_reference_without_augmentation():
    model = tiny(diffaugment="").eval()  # eval: no power iteration, so every critic call is the same map
    real, fake = textured(6, 1, 28, seed=1), textured(5, 1, 28, seed=2)
    d_real, d_fake = model.discriminator(real), model.discriminator(fake)
    hinge = sum(max(0.0, 1 - s) for s in d_real.tolist()) / 6 + sum(max(0.0, 1 + s) for s in d_fake.tolist()) / 5
    torch.testing.assert_close(model.critic_loss(real, fake).item(), hinge, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.realism_loss(fake, real).item(), -d_fake.mean().item(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("detach", [True, False])
def test_critic_loss_trains_only_the_critic(detach):
    model = tiny()
    fake = model(model.sample_latents(4))
    loss = model.critic_loss(textured(4, 1, 28), fake.detach() if detach else fake)
    loss.backward()
    assert all(g is not None and torch.isfinite(g).all() for g in grads(model.critic_parameters()))
    assert any(g.abs().sum() > 0 for g in grads(model.critic_parameters()))
    # critic_loss detaches the fakes itself, so a forgotten .detach() cannot move the generator.
    assert all(g is None for g in grads(model.generator_parameters()))


def test_realism_loss_trains_only_the_generator():
    model = tiny()
    model.realism_loss(model(model.sample_latents(4)), textured(4, 1, 28)).backward()
    generator_grads = grads(model.generator_parameters())
    assert all(g is not None and torch.isfinite(g).all() for g in generator_grads)
    assert all(g.abs().sum() > 0 for g in generator_grads)
    assert all(g is None for g in grads(model.critic_parameters()))


def test_losses_reject_images_of_another_shape():
    model = tiny()
    with pytest.raises(ValueError, match="real images must be"):
        model.critic_loss(textured(2, 3, 28), textured(2, 1, 28))
    with pytest.raises(ValueError, match="fake images must be"):
        model.realism_loss(textured(2, 1, 32), textured(2, 1, 28))


# -- DiffAugment --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("channels", [1, 3])
def test_diff_augment_keeps_shape_and_changes_every_sample_differently(policy, channels):
    image = textured(1, channels, 28)
    out = diff_augment(image.repeat(8, 1, 1, 1), policy, seeded(0))
    assert out.shape == (8, channels, 28, 28) and out.dtype == image.dtype
    # All eight copies of one image are augmented differently: parameters are drawn per sample.
    flat = out.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(8)).min() > 0
    assert not torch.equal(out[0], image[0])


@pytest.mark.parametrize("policy", POLICIES)
def test_diff_augment_is_differentiable(policy):
    images = textured(2, 3, 8).double().requires_grad_()
    # A fixed seed per call makes the transform a fixed function of the images, as gradcheck needs.
    assert torch.autograd.gradcheck(lambda x: diff_augment(x, policy, seeded(5)), (images,))


def test_diff_augment_empty_policy_is_identity():
    images = textured(3, 3, 28)
    assert torch.equal(diff_augment(images, ""), images)
    assert torch.equal(diff_augment(images, " , "), images)


def test_diff_augment_is_deterministic_under_a_seeded_generator():
    images = textured(4, 3, 32)
    policy = "translation,cutout,color"
    first = diff_augment(images, policy, seeded(7))
    assert torch.equal(first, diff_augment(images, policy, seeded(7)))
    assert not torch.equal(first, diff_augment(images, policy, seeded(8)))


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Naive reference: out[y, x] = image[y + dy, x + dx], zero where that falls off the image."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[..., y, x] = image[..., y + dy, x + dx]
    return out


def test_translation_is_a_zero_filled_shift_of_at_most_an_eighth():
    images = textured(6, 3, 16, seed=4)
    out = diff_augment(images, "translation", seeded(1))
    limit = 2  # 16 / 8
    for image, result in zip(images, out):
        matches = [
            (dy, dx)
            for dy in range(-limit, limit + 1)
            for dx in range(-limit, limit + 1)
            if torch.equal(result, shifted(image, dy, dx))
        ]
        assert len(matches) == 1


def test_cutout_zeroes_one_square_of_half_the_side():
    images = torch.ones(64, 1, 28, 28)
    holes = diff_augment(images, "cutout", seeded(2))[:, 0] == 0
    for hole in holes:
        rows, cols = hole.any(dim=1), hole.any(dim=0)
        assert torch.equal(hole, rows[:, None] & cols[None, :])  # a single axis-aligned rectangle
        for line in (rows, cols):
            idx = line.nonzero().flatten()
            assert 1 <= len(idx) <= 14 and idx[-1] - idx[0] + 1 == len(idx)
            if 0 < idx[0] and idx[-1] < 27:  # away from the borders the square is whole
                assert len(idx) == 14


def test_color_is_a_per_sample_affine_map_for_one_channel():
    images = textured(8, 1, 28)
    out = diff_augment(images, "color", seeded(3))
    for x, y in zip(images.flatten(1), out.flatten(1)):
        # brightness then contrast: y = a * x + b with a = contrast factor in [0.5, 1.5]
        a = torch.cov(torch.stack([x, y]))[0, 1] / x.var()
        assert 0.5 <= a <= 1.5
        torch.testing.assert_close(y, a * x + (y - a * x).mean(), rtol=1e-4, atol=1e-4)


# -- a short fit ------------------------------------------------------------------------------------------


def test_a_few_gan_steps_on_two_constant_images_teach_the_critic():
    torch.manual_seed(0)
    model = GAN(28, 1, preset="cpu")  # width 16: in 30 steps the 8-wide tiny critic is not reliably ahead
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(model.critic_parameters(), lr=2e-4, betas=(0.0, 0.9))
    data = torch.cat([torch.full((1, 1, 28, 28), -1.0), torch.full((1, 1, 28, 28), 0.5)])
    real = data.repeat(4, 1, 1, 1)
    critic_losses = []
    for _ in range(30):
        with torch.no_grad():
            fake = model(model.sample_latents(8))
        opt_d.zero_grad()
        loss_d = model.critic_loss(real, fake)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss_g = model.realism_loss(model(model.sample_latents(8)), real)
        loss_g.backward()
        opt_g.step()
        assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
        critic_losses.append(loss_d.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # 2.0 is the hinge loss of a critic that cannot tell real from fake (scores all 0); an average over
    # the last steps smooths the noise of DiffAugment and of the generator moving.
    late = sum(critic_losses[-5:]) / 5
    assert late < min(2.0, critic_losses[0])


# -- save / load and the partner ----------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    model = tiny(32, 3, latent_dim=16, d_width=8)
    model(model.sample_latents(8))  # move BatchNorm statistics off their initial values
    model.update_partner(0.5)
    model.eval()
    folder = model.save_pretrained(tmp_path / "gan")
    loaded = Generator.from_pretrained(folder).eval()
    assert isinstance(loaded, GAN) and loaded.config == model.config
    z = model.sample_latents(4, generator=seeded(0))
    assert torch.equal(loaded(z), model(z))
    assert torch.equal(loaded.partner(z), model.partner(z))
    images = textured(2, 3, 32)
    assert torch.equal(loaded.discriminator(images), model.discriminator(images))


def test_partner_starts_as_a_copy_and_moves_only_under_update_partner():
    model = tiny()
    z = model.sample_latents(4, generator=seeded(0))
    model.eval()
    start = model(z)
    assert torch.equal(model.partner(z), start)
    before = {k: v.clone() for k, v in model.partner_tensors().items()}

    model.train()
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=1e-2, betas=(0.0, 0.9))
    model.realism_loss(model(model.sample_latents(8)), textured(8, 1, 28)).backward()
    opt_g.step()
    model.eval()
    after_step = model(z)
    assert not torch.allclose(after_step, start)
    assert all(torch.equal(v, before[k]) for k, v in model.partner_tensors().items())
    assert torch.equal(model.partner(z), start)

    model.update_partner(0.5)
    current = dict(model.named_parameters())
    for name, shadow in model.partner_tensors().items():
        if name in current:
            torch.testing.assert_close(shadow, 0.5 * (before[name] + current[name].detach()))
    moved = model.partner(z)
    assert not torch.allclose(moved, start) and not torch.allclose(moved, after_step)


def test_pair_gives_a_differentiable_sample_and_its_partner():
    model = tiny()
    first, second = model.pair(model.sample_latents(4), hardness=0.1, generator=seeded(0))
    assert first.shape == second.shape == (4, 1, 28, 28)
    assert first.requires_grad and not second.requires_grad
    F.mse_loss(first, second).backward()
    assert all(g is not None for g in grads(model.generator_parameters()))
