"""Datasets for analoglearn: specs, file readers, fetching with checksums, and an on-device loader.

>>> from analoglearn import data
>>> train = data.load("Synthetic", "train")           # ImageDataset: uint8 (2000, 1, 28, 28), int64 labels
>>> loader = data.Loader(train, 128, shuffle=True, augment=True, seed=0)
>>> x, y = next(iter(loader))                          # float32 (128, 1, 28, 28) normalised, int64 (128,)

The real datasets are looked for under ``$ANALOGLEARN_DATA`` (default ``~/.cache/analoglearn``) in
torchvision's layout; ``analoglearn data fetch NAME`` (:func:`fetch`) downloads them. ``ImageNet32``
(downsampled ImageNet 32×32) is the exception: its download needs a login, so its files are put in
``<root>/ImageNet32/`` by hand (the error message when they are missing says how).
"""

from __future__ import annotations

from .dataset import ImageDataset, load
from .fetch import DatasetStatus, fetch, status
from .loader import Loader
from .locate import check_readable, data_root
from .specs import DatasetSpec, get_spec

__all__ = [
    "DatasetSpec",
    "DatasetStatus",
    "ImageDataset",
    "Loader",
    "check_readable",
    "data_root",
    "fetch",
    "get_spec",
    "load",
    "status",
]
