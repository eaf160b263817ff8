"""Dataset specifications: shape, classes, sizes, normalisation and augmentation per dataset.

One frozen :class:`DatasetSpec` per dataset, registered in :data:`analoglearn.registry.DATASETS`
(the registered factory takes no argument and returns the spec). The normalisation constants and
augmentations are those of the comparative study of energy-based learning (PAPERS.md, A.4), except for
ImageNet32, which the study does not use (its constants are explained where it is registered below):

========== ============================== ============================== ==========================
dataset    mean                           std                            augmentation (train)
========== ============================== ============================== ==========================
MNIST      0.1307                         0.3081                         crop, edge padding 2
F-MNIST    0.2860                         0.3530                         crop, edge padding 2, flip
SVHN       (0.4377, 0.4438, 0.4728)       (0.1980, 0.2010, 0.1970)       crop, edge padding 4
CIFAR-10   (0.4914, 0.4822, 0.4465)       3 × (0.2023, 0.1994, 0.2010)   crop, edge padding 4, flip
CIFAR100   (0.5071, 0.4867, 0.4408)       (0.2675, 0.2565, 0.2761)       crop, edge padding 4, flip
ImageNet32 (0.485, 0.456, 0.406)          (0.229, 0.224, 0.225)          crop, edge padding 4, flip
========== ============================== ============================== ==========================

The paper zero-pads MNIST and Fashion-MNIST from 28 to 32 pixels before cropping 32 with edge
padding 2; in analoglearn the zero-pad is the loader option ``pad_to=32`` (see
:class:`analoglearn.data.loader.Loader`), so the spec only says "crop to the input size with edge
padding 2".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import DATASETS

PADDING_MODES = ("edge", "constant")


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is and how it is normalised and augmented.

    Attributes:
        name: canonical name, as registered in ``DATASETS``.
        shape: image shape ``(C, H, W)`` as stored (before any loader ``pad_to``).
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        train_size: number of training examples.
        test_size: number of test examples.
        mean: per-channel mean of the pixel values scaled to ``[0, 1]``; length ``C``.
        std: per-channel divisor; the loader feeds ``x = (p / 255 - mean) / std``.
        crop_padding: random-crop padding in pixels (0: no random crop). The crop has the input size.
        padding_mode: ``'edge'`` (replicate the border pixels) or ``'constant'`` (zeros, i.e. black).
        hflip: whether training augmentation flips images horizontally with probability 1/2.
        summary: one line shown by ``analoglearn data list``.
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    train_size: int
    test_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    padding_mode: str = "edge"
    hflip: bool = False
    summary: str = ""

    def __post_init__(self) -> None:
        channels = self.shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean and std need one value per channel ({channels})")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"{self.name}: padding_mode must be one of {PADDING_MODES}")

    @property
    def splits(self) -> tuple[str, ...]:
        """The valid split names: ``('train', 'test')``."""
        return ("train", "test")

    def size(self, split: str) -> int:
        """Number of examples in ``split``."""
        return self.train_size if split == "train" else self.test_size


def _register(spec: DatasetSpec, aliases: tuple[str, ...] = ()) -> DatasetSpec:
    def factory() -> DatasetSpec:
        return spec

    factory.__doc__ = spec.summary
    DATASETS.register(spec.name, aliases=aliases, summary=spec.summary)(factory)
    return spec


MNIST = _register(
    DatasetSpec(
        "MNIST", (1, 28, 28), 10, 60_000, 10_000, (0.1307,), (0.3081,),
        crop_padding=2, summary="handwritten digits, 1x28x28, 60k/10k (LeCun et al. 1998)",
    ),
    aliases=("mnist",),
)
FASHION_MNIST = _register(
    DatasetSpec(
        "FashionMNIST", (1, 28, 28), 10, 60_000, 10_000, (0.2860,), (0.3530,),
        crop_padding=2, hflip=True, summary="Zalando clothing images, 1x28x28, 60k/10k (Xiao et al. 2017)",
    ),
    aliases=("fashion-mnist", "fashion_mnist", "fmnist", "f-mnist"),
)
SVHN = _register(
    DatasetSpec(
        "SVHN", (3, 32, 32), 10, 73_257, 26_032, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        crop_padding=4, summary="street view house numbers, 3x32x32, 73k/26k (Netzer et al. 2011)",
    ),
    aliases=("svhn",),
)
# The CIFAR-10 divisor is three times the usual per-channel std (0.2023, 0.1994, 0.2010), so inputs
# have a std of about 1/3 rather than 1. This is not a typo: the comparative study (PAPERS.md A.4)
# inherits it from the code of Laborieux et al. (2021), and it is kept so that results are comparable.
CIFAR10 = _register(
    DatasetSpec(
        "CIFAR10", (3, 32, 32), 10, 50_000, 10_000, (0.4914, 0.4822, 0.4465),
        (3 * 0.2023, 3 * 0.1994, 3 * 0.2010),
        crop_padding=4, hflip=True,
        summary="tiny natural images, 10 classes, 3x32x32, 50k/10k (Krizhevsky 2009)",
    ),
    aliases=("cifar-10", "cifar_10"),
)
CIFAR100 = _register(
    DatasetSpec(
        "CIFAR100", (3, 32, 32), 100, 50_000, 10_000, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761),
        crop_padding=4, hflip=True,
        summary="tiny natural images, 100 fine classes, 3x32x32, 50k/10k (Krizhevsky 2009)",
    ),
    aliases=("cifar-100", "cifar_100"),
)
# ImageNet32: ImageNet (ILSVRC-2012) box-resized to 32x32 (Chrabaszcz, Loshchilov & Hutter 2017, arXiv:1707.08819).
# Normalisation: the dataset's authors publish no per-channel constants (their code subtracts the mean image stored
# in the train files and divides by 255). The values that circulate in third-party code agree on a mean near
# (0.4810, 0.4574, 0.4078) but give two stds, (0.2146, 0.2104, 0.2138) and (0.2605, 0.2533, 0.2684), with no
# stated provenance, so neither is a trustworthy published value. We use the ImageNet full-resolution constants
# (torchvision's models documentation), as the energy-based-learning work on ImageNet32 does (Laborieux & Zenke
# 2022, holomorphic EP, code github.com/Laborieux-Axel/holomorphic_eqprop, which divides by 1.5 times this std).
# analoglearn.data.formats.imagenet32_stats measures the exact values from the files.
# Augmentation as CIFAR here (edge padding 4 + flip); the authors' own code pads with zeros.
IMAGENET32 = _register(
    DatasetSpec(
        "ImageNet32", (3, 32, 32), 1000, 1_281_167, 50_000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        crop_padding=4, hflip=True,
        summary="ImageNet downsampled to 3x32x32, 1000 classes, 1.28M/50k (Chrabaszcz et al. 2017)",
    ),
    aliases=("imagenet32", "imagenet-32", "imagenet_32", "imagenet32x32", "imagenet-32x32"),
)
# Mean and std measured on the generated training split (see analoglearn.data.synthetic).
SYNTHETIC = _register(
    DatasetSpec(
        "Synthetic", (1, 28, 28), 10, 2_000, 500, (0.4532,), (0.3691,),
        crop_padding=2, summary="generated class prototypes + noise, 1x28x28, 2000/500, no files",
    ),
    aliases=("synthetic", "synth"),
)


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` (any registered spelling); ConfigError listing valid names if unknown."""
    return DATASETS.create(name)
