"""Helpers for the data tests: small files in the real formats, and layouts whose checksums match them."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from analoglearn.data import dataset, formats, locate

# The data root the user configured, read before any test redirects $ANALOGLEARN_DATA.
REAL_DATA_ROOT = locate.data_root()


def _idx_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _idx_labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, n).astype(np.uint8)


def write_fake_idx_dataset(
    folder: Path, gz: bool = False, n_train: int = 12, n_test: int = 6
) -> dict[str, bytes]:
    """MNIST-format files in ``folder``; returns the decompressed bytes of each, by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": _idx_images(n_train, 1),
        "train-labels-idx1-ubyte": _idx_labels(n_train, 2),
        "t10k-images-idx3-ubyte": _idx_images(n_test, 3),
        "t10k-labels-idx1-ubyte": _idx_labels(n_test, 4),
    }
    contents = {}
    for name, array in arrays.items():
        path = folder / (name + (".gz" if gz else ""))
        formats.write_idx(path, array)
        contents[name] = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    return contents


def write_cifar_batch(path: Path, n: int, label_key: bytes, num_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    entry = {
        b"batch_label": b"testing batch",
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"f{i}.png".encode() for i in range(n)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_svhn(path: Path, n: int, seed: int) -> None:
    import scipy.io

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    scipy.io.savemat(path, {"X": x, "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})


def digest(content: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, content).hexdigest()


@pytest.fixture
def patch_checksums(monkeypatch):
    """``patch(name, {file name: content bytes})``: make the layout of ``name`` expect those contents."""

    def patch(name: str, contents: dict[str, bytes]) -> None:
        lay = locate.LAYOUTS[name]
        splits = {
            split: tuple(dataclasses.replace(f, digest=digest(contents[f.name], f.algorithm)) for f in files)
            for split, files in lay.splits.items()
        }
        monkeypatch.setitem(locate.LAYOUTS, name, dataclasses.replace(lay, splits=splits))

    return patch


@pytest.fixture
def patch_sizes(monkeypatch):
    """``patch(name, train_size, test_size)``: let load() accept small test files for ``name``."""
    original = dataset.get_spec

    def patch(name: str, train_size: int, test_size: int) -> None:
        def get_spec(requested: str):
            spec = original(requested)
            if spec.name != name:
                return spec
            return dataclasses.replace(spec, train_size=train_size, test_size=test_size)

        monkeypatch.setattr(dataset, "get_spec", get_spec)

    return patch


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch, tmp_path):
    """Tests never see the user's data root: $ANALOGLEARN_DATA points to an empty temporary folder."""
    monkeypatch.setenv(locate.ENV_VAR, str(tmp_path / "env-root"))


def file_names(name: str) -> list[str]:
    return [f.name for files in locate.LAYOUTS[name].splits.values() for f in files]


class Fakes:
    """Writers of small files in the real formats (use through the ``fakes`` fixture)."""

    idx_dataset = staticmethod(write_fake_idx_dataset)
    cifar_batch = staticmethod(write_cifar_batch)
    svhn = staticmethod(write_svhn)
    file_names = staticmethod(file_names)
    digest = staticmethod(digest)


@pytest.fixture
def fakes() -> type[Fakes]:
    """Writers of small files in the real formats."""
    return Fakes


@pytest.fixture
def real_data_root() -> Path:
    """The user's data root ($ANALOGLEARN_DATA or ~/.cache/analoglearn), as it was before the tests."""
    return REAL_DATA_ROOT
