"""Dataset specs, the registry, the Synthetic dataset, ImageDataset and load()'s errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from analoglearn import data
from analoglearn.errors import ConfigError, DataError
from analoglearn.registry import DATASETS

CANONICAL = ["MNIST", "FashionMNIST", "SVHN", "CIFAR10", "CIFAR100", "ImageNet32", "Synthetic"]


def test_registered_names_and_aliases():
    assert DATASETS.names() == CANONICAL
    for alias, name in [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("cifar-10", "CIFAR10"),
                        ("CIFAR-100", "CIFAR100"), ("svhn", "SVHN"), ("synthetic", "Synthetic")]:
        assert data.get_spec(alias).name == name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        data.get_spec("cifar1000")
    for name in CANONICAL:
        assert name in str(info.value)
    with pytest.raises(ConfigError, match="Valid datasets: MNIST"):
        data.load("imagenet")


def test_paper_constants():
    """PAPERS.md A.4: normalisation and augmentation per dataset."""
    mnist, fmnist, svhn = data.get_spec("MNIST"), data.get_spec("FashionMNIST"), data.get_spec("SVHN")
    c10, c100 = data.get_spec("CIFAR10"), data.get_spec("CIFAR100")
    assert (mnist.mean, mnist.std, mnist.crop_padding, mnist.padding_mode, mnist.hflip) == (
        (0.1307,), (0.3081,), 2, "edge", False)
    assert (fmnist.mean, fmnist.std, fmnist.crop_padding, fmnist.hflip) == ((0.2860,), (0.3530,), 2, True)
    assert svhn.mean == (0.4377, 0.4438, 0.4728) and svhn.std == (0.1980, 0.2010, 0.1970)
    assert (svhn.crop_padding, svhn.hflip) == (4, False)
    assert c10.mean == (0.4914, 0.4822, 0.4465)
    assert c10.std == pytest.approx((0.6069, 0.5982, 0.6030))  # 3 × (0.2023, 0.1994, 0.2010)
    assert (c10.crop_padding, c10.hflip, c100.crop_padding, c100.hflip) == (4, True, 4, True)
    assert c100.mean == (0.5071, 0.4867, 0.4408) and c100.std == (0.2675, 0.2565, 0.2761)
    assert (c100.num_classes, c10.num_classes, svhn.shape, mnist.shape) == (100, 10, (3, 32, 32), (1, 28, 28))
    assert (mnist.train_size, svhn.train_size, svhn.test_size, c10.train_size) == (60000, 73257, 26032, 50000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnist.num_classes = 3  # type: ignore[misc]


def test_synthetic_is_deterministic_balanced_and_learnable():
    train, test = data.load("Synthetic", "train"), data.load("Synthetic", "test")
    again = data.load("synthetic")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert train.images.shape == (2000, 1, 28, 28) and len(test) == 500
    assert torch.bincount(train.labels).tolist() == [200] * 10
    train.images.zero_()  # callers own their copy
    assert data.load("Synthetic").images.float().mean() > 50
    train = data.load("Synthetic")
    # Nearest class mean on raw pixels: well above chance (0.1), below perfect.
    x, xt = train.images.flatten(1).float(), test.images.flatten(1).float()
    means = torch.stack([x[train.labels == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(xt, means).argmin(1) == test.labels).float().mean().item()
    assert 0.6 < accuracy < 1.0
    spec = train.spec
    pixels = train.images.float() / 255
    assert pixels.mean().item() == pytest.approx(spec.mean[0], abs=5e-4)
    assert pixels.std().item() == pytest.approx(spec.std[0], abs=5e-4)


def test_invalid_split_lists_valid_splits():
    with pytest.raises(DataError, match="valid splits: train, test"):
        data.load("Synthetic", "validation")


def test_subset_is_fixed_stratified_and_ordered():
    train = data.load("Synthetic")
    sub = train.subset(100, seed=3)
    assert len(sub) == 100 and sub.spec is train.spec and sub.split == "train"
    assert torch.bincount(sub.labels, minlength=10).tolist() == [10] * 10
    again = train.subset(100, seed=3)
    assert torch.equal(sub.images, again.images) and torch.equal(sub.labels, again.labels)
    assert not torch.equal(sub.labels, train.subset(100, seed=4).labels)
    assert torch.equal(train.subset(2000).labels, train.labels)  # everything, original order
    # Unbalanced classes are sampled in proportion.
    skewed = data.ImageDataset(train.images[:300], torch.tensor([0] * 200 + [1] * 100), train.spec, "train")
    assert torch.bincount(skewed.subset(30, seed=0).labels).tolist() == [20, 10]
    for bad in (0, 2001):
        with pytest.raises(DataError, match="between 1 and 2000"):
            train.subset(bad)


def test_image_dataset_checks_types():
    spec = data.get_spec("Synthetic")
    with pytest.raises(DataError, match="uint8"):
        data.ImageDataset(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64), spec, "train")
    with pytest.raises(DataError, match="int64"):
        data.ImageDataset(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64),
                          spec, "train")
