"""Image sources: what every dataset is (uint8 images and int64 labels served as device batches), in memory
(:class:`TensorImages`) or decoded from files by CPU workers (:class:`FolderImages`); conversion to a size and
channel count; seeded fractions."""

from __future__ import annotations

import abc
import functools
import hashlib
import itertools
import logging
import math
import numbers
import os
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from synthcl.errors import DataError

logger = logging.getLogger(__name__)


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
