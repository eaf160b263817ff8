"""Registered Hopfield-network presets (``MODELS``): ``dchn32``, ``dchn_cpu`` and ``tiny``.

Factory signature (the training loop calls it)::

    factory(options, *, in_shape=(C, H, W), num_classes=K, generator=torch.Generator) -> HopfieldNetwork
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..registry import MODELS
from .network import HopfieldNetwork


@dataclass
class HopfieldOptions:
    """Options of the Hopfield-network presets."""

    gains: list[float] | None = None
    """Initialisation gain of each interaction, input to output (weights ``U(±gain/√fan_in)``);
    ``None``: the preset's default (0.5 for every layer, as in the paper's comparative study)."""

    def __post_init__(self) -> None:
        if self.gains is not None and not all(g > 0 for g in self.gains):
            raise ConfigError(f"model gains must all be positive, got {self.gains}")


def _gains(options: HopfieldOptions | None, count: int) -> list[float]:
    gains = options.gains if options is not None and options.gains is not None else [0.5] * count
    if len(gains) != count:
        raise ConfigError(
            f"model gains: this network has {count} interactions, so give {count} gains; got {gains}"
        )
    return list(gains)


def _check_divisible(name: str, in_shape: tuple[int, int, int], pools: int) -> None:
    size = 2**pools
    if in_shape[1] % size or in_shape[2] % size:
        raise ConfigError(
            f"model {name!r} max-pools {pools} times, so image height and width must be multiples of {size}; "
            f"got {in_shape[1]}×{in_shape[2]} (set data.pad_to to a multiple of {size})"
        )


@MODELS.register("dchn32", options=HopfieldOptions)
def dchn32(
    options: HopfieldOptions | None,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    generator: torch.Generator,
) -> HopfieldNetwork:
    """The paper's deep convolutional Hopfield network, 128-256-512-512 channels, 32×32 inputs (A.1)."""
    if tuple(in_shape[1:]) != (32, 32):
        raise ConfigError(
            f"model 'dchn32' needs 32×32 inputs, got {in_shape[1]}×{in_shape[2]}; "
            "for 28×28 datasets (MNIST, FashionMNIST) set data.pad_to: 32"
        )
    return HopfieldNetwork(
        in_shape, (128, 256, 512, 512), num_classes, gains=_gains(options, 5), generator=generator
    )


@MODELS.register("dchn_cpu", options=HopfieldOptions)
def dchn_cpu(
    options: HopfieldOptions | None,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    generator: torch.Generator,
) -> HopfieldNetwork:
    """CPU preset for MNIST: one 32-channel conv-pool layer, dense output (28×28 or 32×32 inputs).

    The input layer is clamped, so its convolution and max-pool are computed once per relaxation;
    each iteration then costs two small matrix products, and the network trains on two CPU cores.
    """
    _check_divisible("dchn_cpu", in_shape, 1)
    return HopfieldNetwork(in_shape, (32,), num_classes, gains=_gains(options, 2), generator=generator)


@MODELS.register("tiny", options=HopfieldOptions)
def tiny(
    options: HopfieldOptions | None,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    generator: torch.Generator,
) -> HopfieldNetwork:
    """Tiny network for tests and diagnostics: conv-pool 4 and 8 channels, dense output.

    Height and width must be multiples of 4.
    """
    _check_divisible("tiny", in_shape, 2)
    return HopfieldNetwork(in_shape, (4, 8), num_classes, gains=_gains(options, 3), generator=generator)
