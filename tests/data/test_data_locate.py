"""Finding dataset files, verifying them (with the cache), and loading them end to end."""

from __future__ import annotations

import os

import pytest
import torch

from analoglearn import data
from analoglearn.data import formats, locate
from analoglearn.errors import DataError


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("ANALOGLEARN_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("ANALOGLEARN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_root() == tmp_path / "home" / ".cache" / "analoglearn"


def test_missing_root_says_where_it_looked_and_how_to_fetch(tmp_path):
    root = tmp_path / "no-such-root"
    with pytest.raises(DataError) as info:
        data.load("MNIST", "train", root=root)
    message = str(info.value)
    assert f"The data root {root} does not exist" in message
    assert str(root / "MNIST" / "raw") in message
    assert f"`analoglearn data fetch MNIST --root {root}`" in message
    assert "train-images-idx3-ubyte" in message
    assert not root.exists()  # looking does not create anything


def test_missing_with_default_root_gives_plain_fetch_command():
    with pytest.raises(DataError, match=r"`analoglearn data fetch CIFAR10`"):
        data.load("cifar-10", "test")


def test_partial_folder_is_reported(fakes, tmp_path):
    fakes.idx_dataset(tmp_path / "MNIST" / "raw")
    os.remove(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="has train-images-idx3-ubyte but not the rest"):
        data.load("MNIST", root=tmp_path)


def test_checksum_mismatch_names_the_file(fakes, tmp_path):
    fakes.idx_dataset(tmp_path / "MNIST" / "raw")
    with pytest.raises(DataError) as info:
        data.load("MNIST", "test", root=tmp_path)
    message = str(info.value)
    assert "checksum mismatch" in message and str(tmp_path / "MNIST/raw/t10k-") in message
    assert "ff7bcfd4" in message or "0fa7898d" in message  # the expected digest is shown
    assert "analoglearn data fetch MNIST" in message


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dataset_end_to_end(fakes, tmp_path, gz, patch_checksums, patch_sizes):
    contents = fakes.idx_dataset(tmp_path / "FashionMNIST" / "raw", gz=gz)
    patch_checksums("FashionMNIST", contents)
    patch_sizes("FashionMNIST", 12, 6)
    train = data.load("fashion-mnist", "train", root=tmp_path)
    assert train.images.shape == (12, 1, 28, 28) and train.spec.name == "FashionMNIST"
    expected = formats.parse_idx(contents["train-images-idx3-ubyte"])
    assert torch.equal(train.images[:, 0], torch.from_numpy(expected.copy()))
    assert len(data.load("FashionMNIST", "test", root=tmp_path)) == 6


def test_wrong_size_is_not_the_official_release(fakes, tmp_path, patch_checksums):
    contents = fakes.idx_dataset(tmp_path / "MNIST" / "raw")
    patch_checksums("MNIST", contents)
    with pytest.raises(DataError, match=r"expected \(60000, 1, 28, 28\).*not the official release"):
        data.load("MNIST", root=tmp_path)


def test_verification_is_cached_by_size_and_mtime(fakes, tmp_path, monkeypatch, patch_checksums, patch_sizes):
    contents = fakes.idx_dataset(tmp_path / "MNIST" / "raw")
    patch_checksums("MNIST", contents)
    patch_sizes("MNIST", 12, 6)
    data.load("MNIST", root=tmp_path)
    assert (tmp_path / ".verified.json").is_file()
    calls = []
    original = locate.file_digest
    monkeypatch.setattr(locate, "file_digest", lambda path, algo: calls.append(path) or original(path, algo))
    data.load("MNIST", root=tmp_path)
    assert calls == []  # nothing re-hashed
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    os.utime(labels, ns=(0, 12345))
    data.load("MNIST", root=tmp_path)
    assert calls == [labels]  # only the touched file


def test_system_folder_is_searched_after_the_root(fakes, tmp_path, monkeypatch, patch_checksums, patch_sizes):
    system = tmp_path / "usr-share" / "fashion-mnist"
    contents = fakes.idx_dataset(system, gz=True)
    lay = locate.LAYOUTS["FashionMNIST"]
    patched = locate.Layout(lay.folders, (str(system),), lay.splits)
    monkeypatch.setitem(locate.LAYOUTS, "FashionMNIST", patched)
    patch_checksums("FashionMNIST", contents)
    patch_sizes("FashionMNIST", 12, 6)
    root = tmp_path / "root"
    assert len(data.load("FashionMNIST", root=root)) == 12
    assert data.status("FashionMNIST", root=root).folder == system


def test_load_cifar10_and_cifar100(fakes, tmp_path, patch_checksums, patch_sizes):
    folder = tmp_path / "cifar-10-batches-py"
    for k in range(1, 6):
        fakes.cifar_batch(folder / f"data_batch_{k}", 4, b"labels", 10, seed=k)
    fakes.cifar_batch(folder / "test_batch", 3, b"labels", 10, seed=9)
    patch_checksums("CIFAR10", {n: (folder / n).read_bytes() for n in fakes.file_names("CIFAR10")})
    patch_sizes("CIFAR10", 20, 3)
    train = data.load("CIFAR10", "train", root=tmp_path)
    assert train.images.shape == (20, 3, 32, 32)
    first = formats.read_cifar_batch(folder / "data_batch_1")
    assert torch.equal(train.images[:4], first[0]) and torch.equal(train.labels[:4], first[1])

    folder = tmp_path / "cifar-100-python"
    fakes.cifar_batch(folder / "train", 7, b"fine_labels", 100, seed=1)
    fakes.cifar_batch(folder / "test", 2, b"fine_labels", 100, seed=2)
    patch_checksums("CIFAR100", {n: (folder / n).read_bytes() for n in ("train", "test")})
    patch_sizes("CIFAR100", 7, 2)
    test = data.load("cifar-100", "test", root=tmp_path)
    assert test.images.shape == (2, 3, 32, 32) and test.labels.max() < 100


@pytest.mark.parametrize("subfolder", [".", "SVHN"])
def test_load_svhn_from_either_layout(fakes, tmp_path, subfolder, patch_checksums, patch_sizes):
    folder = tmp_path / subfolder
    fakes.svhn(folder / "train_32x32.mat", 5, seed=1)
    fakes.svhn(folder / "test_32x32.mat", 3, seed=2)
    patch_checksums("SVHN", {n: (folder / n).read_bytes() for n in ("train_32x32.mat", "test_32x32.mat")})
    patch_sizes("SVHN", 5, 3)
    test = data.load("SVHN", "test", root=tmp_path)
    assert test.images.shape == (3, 3, 32, 32) and test.labels.min() >= 0 and test.labels.max() <= 9


def test_damaged_file_with_matching_checksum_is_reported_with_fix(fakes, tmp_path, patch_checksums):
    folder = tmp_path / "cifar-10-batches-py"
    fakes.cifar_batch(folder / "test_batch", 3, b"labels", 10, seed=9)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    for k in range(1, 6):
        (folder / f"data_batch_{k}").write_bytes(b"")
    patch_checksums("CIFAR10", {n: (folder / n).read_bytes() for n in fakes.file_names("CIFAR10")})
    with pytest.raises(DataError, match=r"damaged.*analoglearn data fetch CIFAR10"):
        data.load("CIFAR10", "test", root=tmp_path)
