"""File formats of the dataset families: IDX (MNIST-style), CIFAR pickles through a safe unpickler that builds
only plain data, STL-10 binaries. Nothing here executes code from a data file."""

from __future__ import annotations

import gzip
import logging
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from synthcl.data.sources import TensorImages
from synthcl.errors import DataError

logger = logging.getLogger(__name__)


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


MAX_DECOMPRESSED = 4 * 2**30
"""A compressed dataset file that inflates beyond this is refused (a decompression bomb, not a dataset)."""


def _bounded_gunzip(path: Path, limit: int | None = None) -> bytes:
    """gzip-decompress ``path`` in chunks, refusing to inflate beyond ``limit`` bytes (DataError)."""
    limit = MAX_DECOMPRESSED if limit is None else limit
    chunks, total = [], 0
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(2**24):
            total += len(chunk)
            if total > limit:
                raise DataError(f"'{path}' decompresses to more than {limit} bytes: not a dataset file")
            chunks.append(chunk)
    return b"".join(chunks)


def _read_idx(folder: Path, stem: str) -> np.ndarray:
    """Read ``<folder>/<stem>`` or ``<stem>.gz`` in the IDX format (big-endian header, then raw array)."""
    path = folder / stem if (folder / stem).is_file() else folder / f"{stem}.gz"
    if not path.is_file():
        raise DataError(f"missing {stem} (or {stem}.gz) in {folder}")
    try:
        data = _bounded_gunzip(path) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:  # zlib.error: a corrupt compressed body
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
