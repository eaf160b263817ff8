"""A whole dataset split in memory, and :func:`load` that finds, verifies and reads it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from . import formats, locate, synthetic
from .specs import DatasetSpec, get_spec


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A dataset split held as tensors.

    Attributes:
        images: uint8 ``(N, C, H, W)``, raw pixel values 0..255.
        labels: int64 ``(N,)``, values ``0 .. spec.num_classes - 1``.
        spec: the dataset's :class:`DatasetSpec` (normalisation and augmentation).
        split: ``'train'`` or ``'test'``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    spec: DatasetSpec
    split: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            shape = tuple(self.images.shape)
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {shape}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(f"labels must be int64 ({self.images.shape[0]},), got {self.labels.dtype} "
                            f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int, seed: int = 0) -> ImageDataset:
        """A fixed, class-stratified random subset of ``n`` examples, kept in their original order.

        Each class contributes in proportion to its share of the split (up to rounding), and the choice
        within each class is uniformly random. Stratification is done by ranking: examples are put in a
        random order (``torch.randperm`` seeded with ``seed``), each gets the key ``(r + 1/2) / n_c``
        with ``r`` its rank among the examples of its class ``c`` and ``n_c`` the class size, and the
        ``n`` smallest keys are kept. The same ``(n, seed)`` always gives the same subset.
        """
        total = len(self)
        if not 0 < n <= total:
            raise DataError(f"subset size must be between 1 and {total} (the {self.split} split), got {n}.")
        perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        labels = self.labels[perm]
        counts = torch.bincount(labels)
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(total) - starts[labels[order]]
        keys = (rank.double() + 0.5) / counts[labels].double()
        chosen = perm[torch.argsort(keys, stable=True)[:n]].sort().values
        return ImageDataset(self.images[chosen], self.labels[chosen], self.spec, self.split)


def _read(spec: DatasetSpec, split: str, paths: dict[str, Path]) -> tuple[torch.Tensor, torch.Tensor]:
    name = spec.name
    if name in ("MNIST", "FashionMNIST"):
        prefix = "train" if split == "train" else "t10k"
        images = formats.read_idx_images(paths[f"{prefix}-images-idx3-ubyte"])
        labels = formats.read_idx_labels(paths[f"{prefix}-labels-idx1-ubyte"], spec.num_classes)
        if len(images) != len(labels):
            raise DataError(f"{name} {split}: {len(images)} images but {len(labels)} labels.")
        return images, labels
    if name in ("CIFAR10", "CIFAR100"):
        key = b"labels" if name == "CIFAR10" else b"fine_labels"
        return formats.read_cifar(list(paths.values()), key, spec.num_classes)
    if name == "SVHN":
        return formats.read_svhn_mat(next(iter(paths.values())))
    if name == "ImageNet32":  # one preallocated array for the whole split: the train set is 3.9 GB
        files = [paths[f.name] for f in locate.layout(name).splits[split]]
        return formats.read_imagenet32(files, spec.size(split))
    raise DataError(f"no reader for dataset {name}")  # pragma: no cover - every spec has a reader


def _fresh_copy(name: str) -> str:
    """How to replace a damaged file of dataset ``name``."""
    lay = locate.layout(name)
    if lay.fetchable:
        return f"To download a fresh copy, delete it and run `analoglearn data fetch {name}`."
    return f"{name} cannot be downloaded by analoglearn: replace the files with a fresh copy from {lay.origin}."


def load(name: str, split: str = "train", root: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Load split ``split`` of dataset ``name`` as an :class:`ImageDataset`.

    Files are looked for under the data root (``root``, else ``$ANALOGLEARN_DATA``, else
    ``~/.cache/analoglearn``) in torchvision's layout and verified against published checksums (hashed
    once, then cached). ``Synthetic`` is generated and needs no files. ``ImageNet32`` has no published
    checksums and no download (see :mod:`analoglearn.data.locate`); its training split is read into one
    preallocated uint8 tensor of 3.9 GB.

    Raises:
        ConfigError: unknown dataset name (the message lists the valid names).
        DataError: invalid split, missing files (with the command that fetches them), damaged files,
            or content that does not match the spec.
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise DataError(f"unknown split {split!r} of {spec.name}; valid splits: {', '.join(spec.splits)}.")
    if spec.name == "Synthetic":
        return ImageDataset(*synthetic.generate(split), spec, split)
    paths = locate.locate(spec.name, split, root)
    try:
        images, labels = _read(spec, split, paths)
    except OSError as exc:
        raise DataError(f"{exc.filename or spec.name} cannot be read ({exc.strerror or exc}); make it readable "
                        f"by this user, or point data.root at a readable copy of {spec.name}.") from None
    except DataError as exc:
        raise DataError(f"{exc} {_fresh_copy(spec.name)}") from exc
    expected = (spec.size(split), *spec.shape)
    if tuple(images.shape) != expected:
        folder = next(iter(paths.values())).parent
        raise DataError(
            f"{spec.name} {split} split has images of shape {tuple(images.shape)}, expected {expected}: "
            f"the files in {folder} are not the official release. Replace them with the official files "
            + (f"or run `analoglearn data fetch {spec.name}`." if locate.layout(spec.name).fetchable
               else f"from {locate.layout(spec.name).origin}.")
        )
    return ImageDataset(images, labels, spec, split)
