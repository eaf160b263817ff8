"""ImageNet32 (downsampled ImageNet 32×32): the reader, the restricted unpickler, the spec, locating and loading.

The files are written here in exactly the official format: pickled dicts with str keys ``'data'`` (uint8
``(N, 3072)``, R, G, B planes row-major), ``'labels'`` (a list of ints in 1..1000) and, in the train files,
``'mean'`` (the float64 mean image), as the authors' ``image2numpy_imagenet_*.py`` scripts write them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from analoglearn import data
from analoglearn.data import formats, locate
from analoglearn.errors import ConfigError, DataError

TRAIN_FILES = [f"train_data_batch_{k}" for k in range(1, 11)]


def _pattern_images(n: int, offset: int = 0) -> np.ndarray:
    """uint8 (n, 3, 32, 32) whose pixel value encodes (example, channel, row, column)."""
    e, c, h, w = np.meshgrid(np.arange(offset, offset + n), np.arange(3), np.arange(32), np.arange(32),
                             indexing="ij")
    return ((7 * e + 50 * c + 3 * h + w) % 256).astype(np.uint8)


def _write(path: Path, images: np.ndarray, labels, mean: bool = True, protocol: int = pickle.DEFAULT_PROTOCOL,
           bytes_keys: bool = False) -> None:
    """One file in the official layout; ``labels`` as stored (1..1000)."""
    entry = {"data": images.reshape(len(images), 3 * 32 * 32), "labels": labels}
    if mean:
        entry["mean"] = images.reshape(len(images), -1).mean(axis=0)
    if bytes_keys:  # how a Python 2 pickle reads back with encoding='bytes'
        entry = {key.encode(): value for key, value in entry.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=protocol)


def _write_split(folder_train: Path, folder_val: Path, per_batch: int = 3, n_val: int = 4, seed: int = 0):
    """All eleven files (a few images each); returns (train images, train labels 1-based, val images, val labels)."""
    rng = np.random.default_rng(seed)
    train_x = rng.integers(0, 256, (10 * per_batch, 3, 32, 32), dtype=np.uint8)
    train_y = rng.integers(1, 1001, 10 * per_batch)
    train_y[:2] = (1, 1000)  # both ends of the stored range
    for k, name in enumerate(TRAIN_FILES):
        part = slice(k * per_batch, (k + 1) * per_batch)
        _write(folder_train / name, train_x[part], [int(v) for v in train_y[part]])
    val_x = rng.integers(0, 256, (n_val, 3, 32, 32), dtype=np.uint8)
    val_y = rng.integers(1, 1001, n_val)
    _write(folder_val / "val_data", val_x, [int(v) for v in val_y], mean=False)
    return train_x, train_y, val_x, val_y


# ---------------------------------------------------------------- the reader


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batch_round_trip_shifts_labels(tmp_path, protocol):
    images = _pattern_images(5)
    _write(tmp_path / "train_data_batch_1", images, [1, 1000, 42, 7, 500], protocol=protocol)
    x, y = formats.read_imagenet32_batch(tmp_path / "train_data_batch_1")
    assert x.dtype == torch.uint8 and x.shape == (5, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(images))  # plane order R, G, B; rows then columns
    assert y.dtype == torch.int64 and y.tolist() == [0, 999, 41, 6, 499]


def test_python2_bytes_keys_and_array_labels(tmp_path):
    images = _pattern_images(3)
    _write(tmp_path / "val_data", images, np.array([3, 2, 1], dtype=np.int32), mean=False, protocol=2,
           bytes_keys=True)
    x, y = formats.read_imagenet32_batch(tmp_path / "val_data")
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [2, 1, 0]


def test_batches_fill_one_preallocated_array(tmp_path):
    paths, expected_x, expected_y = [], [], []
    for k, n in enumerate([4, 2, 5]):
        images, labels = _pattern_images(n, offset=10 * k), [1 + (3 * i + k) % 1000 for i in range(n)]
        paths.append(tmp_path / f"train_data_batch_{k + 1}")
        _write(paths[-1], images, labels)
        expected_x.append(images)
        expected_y.extend(v - 1 for v in labels)
    x, y = formats.read_imagenet32(paths, size=11)
    assert torch.equal(x, torch.from_numpy(np.concatenate(expected_x))) and y.tolist() == expected_y
    assert x.untyped_storage().nbytes() == 11 * 3072 and x.is_contiguous()  # exactly one array, no slack
    x2, y2 = formats.read_imagenet32(paths)  # without a size: read, then concatenated
    assert torch.equal(x2, x) and torch.equal(y2, y)
    with pytest.raises(DataError, match=r"train_data_batch_3 brings the ImageNet32 split to more than the 10"):
        formats.read_imagenet32(paths, size=10)
    with pytest.raises(DataError, match=r"hold 11 images, expected 12"):
        formats.read_imagenet32(paths, size=12)


class _CreatesFile:
    """Unpickled by a plain ``pickle.load``, this opens (so creates) the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_code_running_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "train_data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({"data": _CreatesFile(marker), "labels": [1]}, f)
    with pytest.raises(DataError) as info:
        formats.read_imagenet32_batch(path)
    message = str(info.value)
    assert str(path) in message and "refusing to load global io.open" in message
    assert "refused before anything in it ran" in message
    assert not marker.exists()
    with pytest.raises(DataError, match="refusing to load global"):
        formats.imagenet32_stats([path])
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the file really is an exploit: a plain unpickler runs it
    assert marker.exists()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 5, 999], r"labels outside 1\.\.1000 \(found 0\.\.999\) \(0-based labels"),
        ([1, 1001, 3], r"labels outside 1\.\.1000 \(found 1\.\.1001\)"),
        ([1, -2, 3], r"labels outside 1\.\.1000"),
        ([1, 2], r"3 images but 'labels' of shape \(2,\)"),
        ([1.0, 2.0, 3.0], r"3 images but 'labels' of shape \(3,\) \(float64\)"),
    ],
)
def test_bad_labels_are_refused_naming_the_file(tmp_path, labels, message):
    path = tmp_path / "val_data"
    _write(path, _pattern_images(3), labels, mean=False)
    with pytest.raises(DataError, match=message) as info:
        formats.read_imagenet32_batch(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match=message):
        formats.read_imagenet32([path], size=3)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"data": np.zeros((2, 3072), np.float32), "labels": [1, 2]}, r"uint8 array \(N, 3072\), found float32"),
        ({"data": np.zeros((2, 1024), np.uint8), "labels": [1, 2]}, r"found uint8 \(2, 1024\)"),
        ({"data": [[0] * 3072], "labels": [1]}, r"found list"),
        ({"data": np.zeros((1, 3072), np.uint8)}, r"with 'data' and 'labels', found \['data'\]"),
        ([1, 2, 3], r"found list"),
    ],
)
def test_wrong_structure_is_refused_naming_the_file(tmp_path, entry, message):
    path = tmp_path / "train_data_batch_2"
    with open(path, "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(DataError, match=message) as info:
        formats.read_imagenet32_batch(path)
    assert str(path) in str(info.value) and "damaged" in str(info.value)


def test_truncated_file_is_damaged(tmp_path):
    path = tmp_path / "train_data_batch_1"
    _write(path, _pattern_images(4), [1, 2, 3, 4])
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"damaged: not a readable ImageNet32 pickle"):
        formats.read_imagenet32_batch(path)


def test_channel_stats_match_numpy(tmp_path):
    rng = np.random.default_rng(3)
    sizes = [4100, 7, 1]  # the first crosses the 4096-image chunk boundary
    arrays = [rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8) for n in sizes]
    arrays[1][:, 2] = 255  # make the channels differ
    paths = []
    for k, images in enumerate(arrays):
        paths.append(tmp_path / f"train_data_batch_{k + 1}")
        _write(paths[-1], images, [1] * len(images))
    mean, std = formats.imagenet32_stats(paths)
    pixels = np.concatenate(arrays).astype(np.float64) / 255
    assert mean == pytest.approx(tuple(pixels.mean(axis=(0, 2, 3))), abs=1e-12)
    assert std == pytest.approx(tuple(pixels.std(axis=(0, 2, 3))), abs=1e-12)
    assert len(mean) == len(std) == 3 and all(isinstance(v, float) for v in (*mean, *std))
    with pytest.raises(DataError, match="at least one file"):
        formats.imagenet32_stats([])


# ---------------------------------------------------------------- spec, locating, loading


def test_spec_and_names():
    spec = data.get_spec("ImageNet32")
    assert (spec.shape, spec.num_classes, spec.train_size, spec.test_size) == ((3, 32, 32), 1000, 1_281_167, 50_000)
    assert (spec.crop_padding, spec.padding_mode, spec.hflip) == (4, "edge", True)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert spec.splits == ("train", "test") and spec.size("test") == 50_000
    for alias in ("imagenet32", "IMAGENET32", "imagenet-32", "imagenet_32", "imagenet32x32"):
        assert data.get_spec(alias) is spec
    with pytest.raises(ConfigError, match="Did you mean 'ImageNet32'"):
        data.get_spec("imagenet")  # full-resolution ImageNet is not a dataset of analoglearn


@pytest.mark.parametrize(
    ("train_folder", "val_folder"),
    [
        ("ImageNet32/Imagenet32_train", "ImageNet32/Imagenet32_val"),  # both zips unpacked into ImageNet32/
        ("ImageNet32", "ImageNet32"),  # flat, as the authors' code reads them
        ("Imagenet32_train", "Imagenet32_val"),  # both zips unpacked into the data root
        ("imagenet32/train", "imagenet32/val"),
    ],
)
def test_load_end_to_end(tmp_path, patch_sizes, train_folder, val_folder):
    train_x, train_y, val_x, val_y = _write_split(tmp_path / train_folder, tmp_path / val_folder)
    patch_sizes("ImageNet32", 30, 4)
    train = data.load("imagenet32", "train", root=tmp_path)
    assert train.spec.name == "ImageNet32" and train.split == "train"
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images, torch.from_numpy(train_x))  # batches 1..10 in order
    assert train.labels.tolist() == (train_y - 1).tolist() and train.labels[:2].tolist() == [0, 999]
    test = data.load("ImageNet32", "test", root=tmp_path)
    assert torch.equal(test.images, torch.from_numpy(val_x)) and test.labels.tolist() == (val_y - 1).tolist()
    status = data.status("ImageNet32", root=tmp_path)
    assert status.available and status.folder == tmp_path / train_folder
    assert "no checksums are published" in status.detail
    loader = data.Loader(train, 8, shuffle=True, augment=True, seed=0)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (8,)
    assert x.min() >= (0 - 0.485) / 0.229 - 1e-5 and x.max() <= (1 - 0.406) / 0.225 + 1e-5


def test_load_refuses_wrong_size_and_code(tmp_path, patch_sizes):
    folder = tmp_path / "ImageNet32"
    _write_split(folder, folder)
    with pytest.raises(DataError, match=r"hold 30 images, expected 1281167.*image-net\.org"):
        data.load("ImageNet32", "train", root=tmp_path)
    marker = tmp_path / "pwned"
    with open(folder / "val_data", "wb") as f:
        pickle.dump({"data": _CreatesFile(marker), "labels": [1]}, f)
    patch_sizes("ImageNet32", 30, 1)
    with pytest.raises(DataError, match=r"refusing to load global io\.open.*cannot be downloaded"):
        data.load("ImageNet32", "test", root=tmp_path)
    assert not marker.exists()


def test_missing_files_say_where_and_what(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(DataError) as info:
        data.load("ImageNet32", "train", root=root)
    message = str(info.value)
    assert f"The data root {root} does not exist" in message
    assert "none of the 12 folders it may be in exists" in message
    assert "cannot download ImageNet32" in message and "https://image-net.org/download-images" in message
    assert "login" in message and "Imagenet32_train.zip" in message and "Imagenet32_val.zip" in message
    assert f"Unzip both archives into {root / 'ImageNet32'}/" in message
    assert "(train split) not found" in message
    assert "`train_data_batch_1`, `train_data_batch_2`" in message and "`train_data_batch_10`, `val_data`" in message
    assert "analoglearn data fetch" not in message  # there is no download to offer
    assert not root.exists()


def test_partial_folder_is_reported(tmp_path):
    folder = tmp_path / "ImageNet32" / "Imagenet32_train"
    _write_split(folder, tmp_path / "ImageNet32" / "Imagenet32_val")
    (folder / "train_data_batch_10").unlink()
    with pytest.raises(DataError) as info:
        data.load("ImageNet32", "train", root=tmp_path)
    message = str(info.value)
    assert f"{folder} (has train_data_batch_1, " in message and "train_data_batch_9 but not the rest)" in message
    assert f"{tmp_path / 'ImageNet32'} (none of them)" in message


def test_fetch_explains_instead_of_downloading(tmp_path, monkeypatch):
    fetch_module = __import__("analoglearn.data.fetch", fromlist=["fetch"])
    monkeypatch.setattr(fetch_module, "_open_url", lambda url: pytest.fail(f"tried to download {url}"))
    root = tmp_path / "root"
    with pytest.raises(DataError, match=r"cannot download ImageNet32.*image-net\.org"):
        data.fetch("imagenet32", root=root, log=lambda _: None)
    assert not root.exists()  # no empty dataset folder left behind
    status = data.status("ImageNet32", root=root)
    assert not status.available and "downloaded by hand" in status.detail
    assert "cannot download ImageNet32" in status.help
    folder = root / "ImageNet32"
    _write_split(folder, folder)
    lines: list[str] = []
    assert data.fetch("ImageNet32", root=root, log=lines.append) == folder
    assert lines == [f"ImageNet32: already present and found (no checksums are published) in {folder}; nothing to do."]


def test_layout_has_no_checksums_and_is_not_fetchable():
    lay = locate.layout("ImageNet32")
    assert not lay.fetchable and all(locate.layout(n).fetchable for n in ("MNIST", "CIFAR10", "SVHN"))
    assert [f.name for f in lay.splits["train"]] == TRAIN_FILES
    assert [f.name for f in lay.splits["test"]] == ["val_data"]
    assert all(f.digest == "" for files in lay.splits.values() for f in files)
