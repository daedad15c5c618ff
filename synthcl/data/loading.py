"""``load_dataset``: a registered builder, its :class:`DatasetRequest`, and the checks every source passes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from synthcl.data.sources import ImageSource, TensorImages, _check_size_and_channels
from synthcl.errors import DataError, suggest
from synthcl.registry import DATASETS

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")


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
