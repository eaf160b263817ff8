"""VGG, ResNet-18 (CIFAR stem) and WRN: shapes, parameter counts, seeded initialisation."""

from __future__ import annotations

import pytest
import torch

import analoglearn.nets.resnet
import analoglearn.nets.vgg  # noqa: F401  (registers the models)
from analoglearn.errors import ConfigError
from analoglearn.registry import MODELS


def create(name: str, seed: int = 0, num_classes: int = 10, in_shape=(3, 32, 32), **options):
    opts = MODELS.get(name).options(**options)
    return MODELS.create(name, opts, in_shape=in_shape, num_classes=num_classes,
                         generator=torch.Generator().manual_seed(seed))


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("name", "params"),
    [("resnet18", 11_173_962), ("wrn", 10_961_370), ("vgg16", 14_724_042), ("vgg11", 9_228_362)],
)
def test_parameter_counts(name: str, params: int) -> None:
    assert count(create(name)) == params


@pytest.mark.parametrize("name", ["resnet18", "wrn", "vgg11"])
def test_output_shapes(name: str) -> None:
    options = {"widen": 1} if name == "wrn" else {"width": 0.25}
    net = create(name, num_classes=100, **options)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_small_inputs_and_one_channel() -> None:
    assert create("vgg11", in_shape=(1, 28, 28), width=0.125)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert create("resnet18", in_shape=(1, 28, 28), width=0.125)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_initialisation_is_drawn_from_the_generator() -> None:
    a, b, c = (create("resnet18", seed=s, width=0.125) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.stem[0].weight, c.stem[0].weight)


def test_resnet18_has_the_cifar_stem() -> None:
    net = create("resnet18", width=0.125)
    conv = net.stem[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())


def test_options_validate() -> None:
    with pytest.raises(ConfigError, match="6n \\+ 4"):
        MODELS.get("wrn").options(depth=15)
    with pytest.raises(ConfigError, match="width"):
        MODELS.get("vgg16").options(width=0)
    assert MODELS.canonical("wrn-16-8") == "wrn"
