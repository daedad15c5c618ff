"""Contract tests every generator must pass, as a pytest mixin for synthcl's and third-party generators.

Use it in a test module::

    from synthcl.testing import GeneratorContract

    class TestMyGenerator(GeneratorContract):
        def make_generator(self, image_size, channels):
            return MyGenerator(image_size, channels, width=8)

synthcl's own test suite runs it for every name in ``GENERATORS`` (built with ``cls.test_options``).
"""

from __future__ import annotations

import abc

import torch

from synthcl.interfaces import Generator


class GeneratorContract(abc.ABC):
    """Shape and range, determinism, gradients, save/load, and the partner's behaviour."""

    image_size: int = 32
    channels: int = 3
    batch: int = 4

    @abc.abstractmethod
    def make_generator(self, image_size: int, channels: int) -> Generator:
        """A small instance of the generator under test."""

    def _make(self) -> Generator:
        torch.manual_seed(0)
        return self.make_generator(self.image_size, self.channels)

    def _real(self) -> torch.Tensor:
        return torch.rand(self.batch, self.channels, self.image_size, self.image_size, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def test_samples_have_the_right_shape_and_range(self) -> None:
        gen = self._make()
        images = gen(gen.sample_latents(self.batch))
        assert images.shape == (self.batch, self.channels, self.image_size, self.image_size)
        assert images.min() >= -1 - 1e-5 and images.max() <= 1 + 1e-5
        assert torch.isfinite(images).all()

    def test_sampling_is_deterministic_under_a_seed(self) -> None:
        gen = self._make().eval()
        a = gen(gen.sample_latents(self.batch, torch.Generator().manual_seed(3)))
        b = gen(gen.sample_latents(self.batch, torch.Generator().manual_seed(3)))
        c = gen(gen.sample_latents(self.batch, torch.Generator().manual_seed(4)))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def _fakes(self) -> int:
        """Fewer generated than real images, as in joint training (synthesis.ratio of the batch)."""
        return max(1, self.batch // 2)

    def test_realism_loss_backpropagates_into_the_generator(self) -> None:
        gen = self._make()
        loss = gen.realism_loss(gen(gen.sample_latents(self._fakes())), self._real())
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in gen.generator_parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)

    def test_critic_loss_backpropagates_into_the_critic_only(self) -> None:
        gen = self._make()
        critic = list(gen.critic_parameters())
        fake = gen(gen.sample_latents(self._fakes())).detach()
        loss = gen.critic_loss(self._real(), fake)
        assert loss is None or loss.ndim == 0, "critic_loss must return a scalar"
        if loss is None:
            assert not critic, "a generator with critic parameters must implement critic_loss"
            return
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in critic)
        assert all(p.grad is None for p in gen.generator_parameters())

    def test_save_and_load_give_the_same_samples(self, tmp_path) -> None:
        gen = self._make().eval()
        gen.update_partner(0.5)
        gen.save_pretrained(tmp_path / "gen")
        loaded = Generator.from_pretrained(tmp_path / "gen").eval()
        assert type(loaded) is type(gen)
        z = gen.sample_latents(self.batch, torch.Generator().manual_seed(5))
        assert torch.equal(gen(z), loaded(z))
        assert torch.equal(gen.partner(z), loaded.partner(z))

    def test_partner_is_frozen_until_updated(self) -> None:
        gen = self._make()
        z = gen.sample_latents(self.batch, torch.Generator().manual_seed(6))
        gen.eval()
        assert torch.allclose(gen(z), gen.partner(z), atol=1e-6)  # starts as a copy
        before = {k: v.clone() for k, v in gen.partner_tensors().items()}
        params = gen.generator_parameters()
        optimizer = torch.optim.SGD(params, lr=0.5)
        gen.train()
        (gen(gen.sample_latents(self.batch)) ** 2).mean().backward()
        optimizer.step()
        after = gen.partner_tensors()
        assert all(not v.requires_grad for v in after.values())
        floats = [k for k, v in before.items() if v.is_floating_point() and "running" not in k]
        assert all(torch.equal(before[k], after[k]) for k in floats), "the partner moved without update_partner"
        gen.update_partner(0.5)
        moved = [not torch.equal(before[k], gen.partner_tensors()[k]) for k in floats]
        assert any(moved)
        gen.eval()
        assert not torch.allclose(gen(z), gen.partner(z), atol=1e-6)

    def test_pair_gets_less_similar_as_hardness_rises(self) -> None:
        gen = self._make().eval()
        z = gen.sample_latents(16, torch.Generator().manual_seed(7))
        distances = []
        for hardness in (0.0, 0.5, 2.0):
            a, b = gen.pair(z, hardness, generator=torch.Generator().manual_seed(8))
            distances.append((a - b).pow(2).mean().item())
        assert distances[0] < distances[1] < distances[2]
