"""Readers of the real file formats: IDX, CIFAR python batches, SVHN .mat."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from analoglearn.data import formats
from analoglearn.errors import DataError


def _pattern_images(n: int, channels: int = 1, side: int = 28) -> np.ndarray:
    """uint8 (n, channels, side, side) whose pixel value encodes (example, channel, row, column)."""
    axes = (np.arange(n), np.arange(channels), np.arange(side), np.arange(side))
    e, c, h, w = np.meshgrid(*axes, indexing="ij")
    return ((7 * e + 50 * c + 3 * h + w) % 256).astype(np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    formats.write_idx(path, array)
    back = formats.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_the_published_format(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    formats.write_idx(path, np.array([5, 0, 4], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 5, 0, 4])
    formats.write_idx(path, np.zeros((2, 1, 1), dtype=">i4"))  # big-endian int32 values
    assert path.read_bytes()[:4] == bytes([0, 0, 0x0C, 3])


def test_idx_images_and_labels_as_tensors(tmp_path):
    images = _pattern_images(4)[:, 0]
    formats.write_idx(tmp_path / "i.gz", images)
    formats.write_idx(tmp_path / "l", np.array([1, 9, 0, 3], dtype=np.uint8))
    x = formats.read_idx_images(tmp_path / "i.gz")
    y = formats.read_idx_labels(tmp_path / "l")
    assert x.dtype == torch.uint8 and x.shape == (4, 1, 28, 28)
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    assert y.dtype == torch.int64 and y.tolist() == [1, 9, 0, 3]


def test_idx_truncated_file_raises(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    formats.write_idx(path, _pattern_images(3)[:, 0])
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated") as info:
        formats.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x1f\x8b\x08\x00garbage", "two zero bytes"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]), "type code"),
        (bytes([0, 0, 8, 3, 0, 0]), "header truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]), "bytes where"),  # one byte too many
    ],
)
def test_idx_corrupt_headers_raise(tmp_path, payload, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message):
        formats.read_idx(path)


def test_idx_corrupt_gzip_raises(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    blob = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 100]) + bytes(100))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="damaged"):
        formats.read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="damaged"):
        formats.read_idx(path)


def test_idx_wrong_kind_and_bad_labels_raise(tmp_path):
    formats.write_idx(tmp_path / "a", np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        formats.read_idx_images(tmp_path / "a")
    formats.write_idx(tmp_path / "b", np.array([0, 10], dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels outside 0\.\.9"):
        formats.read_idx_labels(tmp_path / "b")


def _write_cifar_batch(path, images: np.ndarray, labels: list[int], label_key: bytes, extra=None) -> None:
    """A batch in exactly the published layout: bytes keys, uint8 (N, 3072) rows of R, G, B planes."""
    entry = {
        b"batch_label": b"testing batch 1 of 1",
        label_key: labels,
        b"data": images.reshape(len(images), 3 * 32 * 32),
        b"filenames": [f"img_{i:04d}.png".encode() for i in range(len(images))],
        **(extra or {}),
    }
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def test_cifar10_batches(tmp_path):
    images = _pattern_images(12, 3, 32)
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"data_batch_{k + 1}")
        labels = [(i + 6 * k) % 10 for i in range(6)]
        _write_cifar_batch(paths[-1], images[6 * k : 6 * k + 6], labels, b"labels")
    x, y = formats.read_cifar(paths)
    assert x.dtype == torch.uint8 and x.shape == (12, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(images))  # plane order R, G, B; rows then columns
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(12)]


def test_cifar100_uses_fine_labels(tmp_path):
    images = _pattern_images(5, 3, 32)
    _write_cifar_batch(tmp_path / "test", images, [0, 99, 42, 7, 63], b"fine_labels",
                       {b"coarse_labels": [0, 19, 5, 1, 3]})
    x, y = formats.read_cifar_batch(tmp_path / "test", b"fine_labels", num_classes=100)
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [0, 99, 42, 7, 63]
    with pytest.raises(DataError, match="labels"):
        formats.read_cifar_batch(tmp_path / "test", b"labels")


def test_cifar_damaged_batches_raise(tmp_path):
    path = tmp_path / "data_batch_1"
    _write_cifar_batch(path, _pattern_images(4, 3, 32), [1, 2, 3, 4], b"labels")
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="damaged"):
        formats.read_cifar_batch(path)
    _write_cifar_batch(path, _pattern_images(4, 3, 32), [1, 2, 3], b"labels")
    with pytest.raises(DataError, match="4 images but labels"):
        formats.read_cifar_batch(path)
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DataError, match=r"\(N, 3072\)"):
        formats.read_cifar_batch(path)


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_unpickling_refuses_code(tmp_path, capsys):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": _Exploit(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match=r"refusing to load global (__builtin__|builtins)\.print"):
        formats.read_cifar_batch(path)
    assert "must never run" not in capsys.readouterr().out


def _write_svhn(path, x: np.ndarray, y: np.ndarray) -> None:
    import scipy.io

    scipy.io.savemat(path, {"X": x, "y": y.reshape(-1, 1)})


def test_svhn_mat(tmp_path):
    images = _pattern_images(6, 3, 32)  # (N, C, H, W)
    digits = np.array([10, 1, 2, 9, 10, 5], dtype=np.uint8)  # 10 is how SVHN stores a zero
    _write_svhn(tmp_path / "train_32x32.mat", images.transpose(2, 3, 1, 0), digits)  # X is (H, W, C, N)
    x, y = formats.read_svhn_mat(tmp_path / "train_32x32.mat")
    assert x.dtype == torch.uint8 and x.shape == (6, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(images))
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 9, 0, 5]


def test_svhn_damaged_files_raise(tmp_path):
    path = tmp_path / "test_32x32.mat"
    _write_svhn(path, _pattern_images(3, 3, 32).transpose(2, 3, 1, 0), np.array([1, 2, 3], np.uint8))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="damaged"):
        formats.read_svhn_mat(path)
    _write_svhn(path, _pattern_images(3, 3, 32).transpose(2, 3, 1, 0), np.array([0, 2, 3], np.uint8))
    with pytest.raises(DataError, match=r"1\.\.10"):
        formats.read_svhn_mat(path)
    _write_svhn(path, np.zeros((32, 32, 3), np.uint8), np.array([1], np.uint8))
    with pytest.raises(DataError, match=r"\(32, 32, 3, N\)"):
        formats.read_svhn_mat(path)


def test_cifar_pickles_naming_the_old_numpy_module(tmp_path):
    """The official batches were pickled by Python 2 with numpy 1, naming ``numpy.core.multiarray``."""
    images = _pattern_images(3, 3, 32)
    path = tmp_path / "data_batch_1"
    _write_cifar_batch(path, images, [3, 1, 4], b"labels")
    blob = path.read_bytes()
    assert b"numpy._core.multiarray" in blob or b"numpy.core.multiarray" in blob
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    x, y = formats.read_cifar_batch(path)
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [3, 1, 4]
