"""Benchmark: synthcl's batched ViewAugment against torchvision's per-image v2 transforms.

Both sides produce two SimCLR views of the same uint8 batch of Fashion-MNIST training images, once as
1-channel 28x28 and once replicated to 3-channel 32x32 (so saturation, hue and grayscale run).
torchvision is applied image by image in a Python loop, the way a DataLoader worker would; synthcl
gets the whole batch in one call. Timing is interleaved (A B A B ...) after a warm-up so that drifts
in machine load hit both sides alike. Writes a Markdown report (default benchmarks/results/augment.md).

    python benchmarks/augment_vs_torchvision.py [--rounds 15] [--batch 256] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.v2 as T
from einops import repeat

# Run as a script from a checkout, synthcl is not necessarily installed: import it from the repo root.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from synthcl.augment import ViewAugment  # noqa: E402
from synthcl.io import atomic_write_text  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
N_VIEWS = 2
WARMUP_ROUNDS = 2


def load_images(batch: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """The first ``batch`` Fashion-MNIST training images as (B, 1, 28, 28) uint8, and their source.

    Falls back to random uint8 images when the IDX file is absent, and says so in the source string.
    """
    if FASHION_MNIST.exists():
        with gzip.open(FASHION_MNIST, "rb") as f:
            data = f.read()
        # IDX header: magic 2051, then image count, rows, cols; all big-endian int32.
        magic, count, rows, cols = np.frombuffer(data[:16], dtype=">i4")
        if magic != 2051:
            raise ValueError(f"{FASHION_MNIST} is not an IDX image file (magic {magic})")
        pixels = np.frombuffer(data[16:], dtype=np.uint8).reshape(count, 1, rows, cols)
        return torch.from_numpy(pixels[:batch].copy()), f"Fashion-MNIST training images ({FASHION_MNIST})"
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return images, f"RANDOM uint8 images ({FASHION_MNIST} not found)"


def to_rgb32(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) uint8 -> (B, 3, 32, 32) uint8, grey replicated to RGB."""
    resized = F.interpolate(images.float(), size=(32, 32), mode="bilinear", antialias=True)
    return repeat(resized.round().clamp(0, 255).to(torch.uint8), "b 1 h w -> b c h w", c=3)


def torchvision_pipeline(size: int) -> T.Compose:
    """The SimCLR view pipeline as a per-image torchvision v2 Compose, ending in float [0, 1] like ours."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            T.RandomHorizontalFlip(0.5),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(0.2),
            T.ToDtype(torch.float32, scale=True),
        ]
    )


def timed(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(images: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Interleaved timings (seconds per call producing N_VIEWS views of the batch) for both sides."""
    channels, size = images.shape[1], images.shape[-1]
    ours = ViewAugment(size, channels)
    theirs = torchvision_pipeline(size)

    def run_ours() -> torch.Tensor:
        return ours.views(images, n_views=N_VIEWS)

    def run_theirs() -> torch.Tensor:
        # One view at a time, image by image, as a Dataset.__getitem__ would.
        return torch.stack([theirs(image) for _ in range(N_VIEWS) for image in images])

    # Same output contract on both sides, so the comparison is like for like.
    assert run_ours().shape == run_theirs().shape == (N_VIEWS * len(images), channels, size, size)
    for _ in range(WARMUP_ROUNDS):
        run_ours()
        run_theirs()
    times: dict[str, list[float]] = {"synthcl": [], "torchvision": []}
    for _ in range(rounds):
        times["synthcl"].append(timed(run_ours))
        times["torchvision"].append(timed(run_theirs))
    return times


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1-minute load average, to show whether other processes shared the CPUs during the run."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per side, after a warm-up")
    parser.add_argument("--batch", type=int, default=256, help="images per batch")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "augment.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    base, source = load_images(args.batch)
    cases = {
        f"1x28x28, {args.batch} images": base,
        f"3x32x32, {args.batch} images": to_rgb32(base),
    }
    load_before = load_average()
    rows = []
    for name, images in cases.items():
        times = run_case(images, args.rounds)
        ours, theirs = (statistics.median(times[k]) for k in ("synthcl", "torchvision"))
        views = N_VIEWS * len(images)
        for side in ("synthcl", "torchvision"):
            t = times[side]
            median = statistics.median(t)
            rows.append(
                f"| {name} | {side} | {1e3 * median:.1f} | {1e3 * min(t):.1f} | {1e3 * max(t):.1f} "
                f"| {views / median:,.0f} | {theirs / median:.1f}x |"
            )
        print(f"{name}: synthcl {1e3 * ours:.1f} ms, torchvision {1e3 * theirs:.1f} ms (medians)")

    command = " ".join(["python", "benchmarks/augment_vs_torchvision.py", *sys.argv[1:]])
    report = "\n".join(
        [
            "# ViewAugment vs torchvision per-image transforms",
            "",
            f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- Command: `{command}`",
            f"- Machine: {cpu_model()}, {torch.get_num_threads()} torch threads "
            f"(os.cpu_count() = {os.cpu_count()}), torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, Python {platform.python_version()}",
            f"- Data: {source}; 3-channel case is the same images replicated to RGB and resized to 32x32",
            f"- Work per call: {N_VIEWS} views of every image in the batch, uint8 in, float32 out",
            "- synthcl: `ViewAugment(size, channels).views(batch, 2)`, default SimCLR settings, "
            "one batched call",
            "- torchvision: v2 `Compose(RandomResizedCrop, RandomHorizontalFlip, "
            "RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8), RandomGrayscale(0.2), ToDtype(float32))` "
            "applied image by image in a loop",
            f"- Rounds: {args.rounds} timed, interleaved (synthcl, torchvision, ...), "
            f"after {WARMUP_ROUNDS} warm-up rounds",
            f"- 1-minute load average before / after: {load_before} / {load_average()} "
            "(other processes on the CPUs inflate times and the max column)",
            "",
            "| batch | implementation | median ms | min ms | max ms | views/s (median) "
            "| speed-up vs torchvision |",
            "|---|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    atomic_write_text(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
