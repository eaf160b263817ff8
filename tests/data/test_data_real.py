"""Checks that the real MNIST and Fashion-MNIST in the user's data root are the real thing.

Skipped when the data is absent (get it with ``analoglearn data fetch MNIST`` / ``FashionMNIST``).
Reference numbers: DATA.md (mean and std of the pixels scaled to [0, 1]).
"""

from __future__ import annotations

import pytest
import torch

from analoglearn import data


def _load_or_skip(name: str, split: str, root) -> data.ImageDataset:
    status = data.status(name, root)
    if not status.available:
        pytest.skip(f"real {name} not in {root}: {status.detail[:200]}")
    return data.load(name, split, root)


def _mean_std(dataset: data.ImageDataset) -> tuple[float, float]:
    pixels = dataset.images.double() / 255
    return pixels.mean().item(), pixels.std().item()


def test_real_mnist(real_data_root):
    train = _load_or_skip("MNIST", "train", real_data_root)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    mean, std = _mean_std(train)
    assert mean == pytest.approx(0.1307, abs=5e-5) and std == pytest.approx(0.3081, abs=5e-5)
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(train.labels).tolist() == counts
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    test = data.load("MNIST", "test", real_data_root)
    assert test.images.shape == (10000, 1, 28, 28)
    assert _mean_std(test)[0] == pytest.approx(0.1325, abs=5e-5)


def test_real_fashion_mnist(real_data_root):
    train = _load_or_skip("FashionMNIST", "train", real_data_root)
    assert train.images.shape == (60000, 1, 28, 28)
    mean, std = _mean_std(train)
    assert mean == pytest.approx(0.2860, abs=5e-5) and std == pytest.approx(0.3530, abs=5e-5)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert len(data.load("FashionMNIST", "test", real_data_root)) == 10000


def test_real_mnist_through_the_loader(real_data_root):
    """The paper's MNIST pipeline: zero-pad 28→32, random crop 32 with edge padding 2, normalise."""
    train = _load_or_skip("MNIST", "train", real_data_root)
    loader = data.Loader(train, 1000, shuffle=True, augment=True, seed=0, pad_to=32)
    x, y = next(iter(loader))
    assert x.shape == (1000, 1, 32, 32) and y.shape == (1000,)
    background = -0.1307 / 0.3081
    black = torch.isclose(x, torch.tensor(background), atol=1e-6)
    assert black.float().mean() > 0.5  # mostly black, including the zero padding
    assert black[:, :, 0, :].all()  # top row: zero padding (edge-replicated by the crop)
