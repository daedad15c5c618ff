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

The package is split by concern: ``sources`` (image sources, conversion, fractions), ``roots`` (where the
files are), ``loading`` (``load_dataset`` and the builder contract), ``formats`` (file formats and the
safe unpickler), and one module per dataset family (``mnist``, ``cifar``, ``stl``, ``folders``,
``shapes``), each registering its builders on import.
"""

from synthcl.data import cifar, folders, mnist, shapes, stl  # noqa: F401  (register the built-in datasets)
from synthcl.data.loading import SPLITS, DatasetRequest, load_dataset
from synthcl.data.roots import CACHE_DIR, SYSTEM_DATA_DIRS, resolve_root
from synthcl.data.shapes import SHAPE_CLASSES
from synthcl.data.sources import FolderImages, ImageSource, TensorImages, convert_images, take_fraction

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
