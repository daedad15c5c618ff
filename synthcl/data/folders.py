"""Folders of image files: ``image-folder`` (any class-per-subfolder layout) and ``imagenet100``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from synthcl.data.loading import DatasetRequest
from synthcl.data.roots import resolve_root
from synthcl.data.sources import FolderImages, ImageSource
from synthcl.errors import DataError
from synthcl.registry import DATASETS

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
IMAGENET100_CLASSES = Path(__file__).resolve().parents[1] / "data_files" / "imagenet100.txt"


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
    except UnicodeDecodeError:
        raise DataError(f"class list '{path}' is not a UTF-8 text file") from None
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
