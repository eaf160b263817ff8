"""Registered Hopfield-network presets (``MODELS``).

Paper A's ``dchn32``, the CPU presets ``dchn_cpu`` and ``dchn_deep_cpu``, the deeper ``dchn_vgg`` and
``hopfield_resnet13`` (with skip interactions), and ``tiny`` for tests. Factory signature (the
training loop calls it)::

    factory(options, *, in_shape=(C, H, W), num_classes=K, generator=torch.Generator) -> HopfieldNetwork

Every preset takes :class:`HopfieldOptions`: initialisation gains, the read-out (energy / squared
error, or a linear cross-entropy read-out), the output gain and the activation range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..registry import MODELS
from .layout import READOUTS, Readout, Skip, check_range
from .network import HopfieldNetwork


@dataclass
class HopfieldOptions:
    """Options of the Hopfield-network presets."""

    gains: list[float] | None = None
    """Initialisation gain of each interaction, the chain input to output and then the skips (weights
    ``U(±gain/√fan_in)``); ``None``: the preset's default (0.5 for every layer in paper A's presets)."""
    readout: str = "energy"
    """``energy``: the output is the energy's last layer and the cost is ½‖γo − y‖² (paper A);
    ``cross_entropy``: a linear read-out of the last hidden layer outside the energy with a softmax
    cross-entropy cost (Laborieux et al. 2021; EP, TBP and RBP only)."""
    output_gain: float = 1.0
    """γ in the cost, C(γ·o, y): it scales the output seen by the cost and the nudging force on it
    (predictions, argmax o, are unchanged). Not the initialisation gain of the output weights."""
    activation_range: list[Any] | None = None
    """``[lo, hi]`` for every hidden layer, or one ``[lo, hi]`` per hidden layer; ``None``: the
    preset's default ([0, 1], the hard sigmoid, except ``hopfield_resnet13``: [0, 6])."""

    def __post_init__(self) -> None:
        if self.gains is not None and not all(
            isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g) and g > 0 for g in self.gains
        ):
            raise ConfigError(f"model gains must all be finite and positive, got {self.gains}")
        if self.readout not in READOUTS:
            raise ConfigError(f"model readout {self.readout!r} is not valid; choose one of {', '.join(READOUTS)}")
        Readout(self.readout, self.output_gain)
        value = self.activation_range
        if value is not None:
            nested = isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value)
            for k, item in enumerate(value if nested else [value], start=1):
                check_range(k, item)


def _network(options: HopfieldOptions | None, in_shape: tuple[int, int, int], conv_channels: list[int],
             num_classes: int, generator: torch.Generator, *, default_gains: list[float],
             default_range: tuple[float, float] = (0.0, 1.0), **structure: Any) -> HopfieldNetwork:
    """The preset's network with the user's gains, read-out, output gain and activation range."""
    options = options or HopfieldOptions()
    gains = _gains(options, len(default_gains), default_gains)
    return HopfieldNetwork(
        in_shape, conv_channels, num_classes, gains=gains, generator=generator,
        ranges=options.activation_range if options.activation_range is not None else default_range,
        readout=options.readout, output_gain=options.output_gain, **structure,
    )


def _gains(options: HopfieldOptions | None, count: int, default: list[float] | None = None) -> list[float]:
    gains = options.gains if options is not None and options.gains is not None else (default or [0.5] * count)
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
    return _network(options, in_shape, [128, 256, 512, 512], num_classes, generator, default_gains=[0.5] * 5)


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
    return _network(options, in_shape, [32], num_classes, generator, default_gains=[0.5] * 2)


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
    return _network(options, in_shape, [4, 8], num_classes, generator, default_gains=[0.5] * 3)


@MODELS.register("dchn_deep_cpu", options=HopfieldOptions)
def dchn_deep_cpu(
    options: HopfieldOptions | None,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    generator: torch.Generator,
) -> HopfieldNetwork:
    """CPU preset with depth and a skip (28×28): conv-pool 16 → stride-2 conv 32 → output, skip s1 → output.

    Layers: s1 ``16×14×14`` (3×3 conv + 2×2 max-pool of x), s2 ``32×7×7`` (3×3 stride-2 conv of s1),
    o (dense from s2) plus the dense skip interaction ``E ⊃ −⟨W_skip·flatten(s1), o⟩``, so the output
    reads both resolutions and its feedback reaches s1 directly. Interactions: x→s1, s1→s2, s2→o,
    s1→o (gains 0.5 each). s1, s2 and o all interact, so the colouring gives three groups {s1}, {s2},
    {o}. The stride makes the s1↔s2 products 4× cheaper than a conv + max-pool at 14×14: a CEP step
    costs about 1.7× ``dchn_cpu``'s (input conv cached in both). 28×28 or 32×32 inputs (H and W
    multiples of 4).
    """
    _check_divisible("dchn_deep_cpu", in_shape, 2)
    return _network(options, in_shape, [16, 32], num_classes, generator, default_gains=[0.5] * 4,
                    downsample=["max", "stride"], skips=[(1, 3)])


@MODELS.register("dchn_vgg", options=HopfieldOptions)
def dchn_vgg(
    options: HopfieldOptions | None,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    generator: torch.Generator,
) -> HopfieldNetwork:
    """Deeper VGG-style DCHN (32×32): eight 3×3 conv layers, 128-128-256-256-512-512-512-512, dense output.

    The layers come in four pairs; the second of each pair max-pools 2×2 (32 → 16 → 8 → 4 → 2), then
    a dense output from ``512×2×2``. Paper A's ``dchn32`` with a same-resolution conv before each conv-pool (the
    layout of ``hopfield_resnet13`` without its skips and with max-pooling instead of strides).
    Gains 0.5 for every interaction (paper A's), asynchronous groups odd / even layers.
    """
    _check_divisible("dchn_vgg", in_shape, 4)
    return _network(options, in_shape, [128, 128, 256, 256, 512, 512, 512, 512], num_classes, generator,
                    default_gains=[0.5] * 9, downsample=["none", "max"] * 4)


@MODELS.register("hopfield_resnet13", options=HopfieldOptions)
def hopfield_resnet13(
    options: HopfieldOptions | None,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    generator: torch.Generator,
) -> HopfieldNetwork:
    """Hopfield-ResNet13 (Vinayak & Srinivasan, arXiv 2509.26003, 2025) as its public code builds it.

    Thirteen weights: four blocks of two 3×3 convs, ``s_in → s_a`` (stride 1) and ``s_a → s_b``
    (stride 2), with channels 128, 256, 512, 512 (32×32 → 16 → 8 → 4 → 2), a 1×1 stride-2 skip
    ``s_in → s_b`` in each block (x → s2, s2 → s4, s4 → s6, s6 → s8), and a dense output from
    ``512×2×2``. Every hidden layer clamps to [0, 6] (ReLU6-like), the output is free, the cost the
    squared error in the energy. Gains: in→a 0.6, a→b 0.6, skip 0.7, output 0.8 (given here in the
    network's order: the nine chain interactions, then the four skips).

    Taken from the authors' public code (BrainSeek-Lab, ``ConvHopfieldResEnergy32``), where the paper
    leaves it open; assumptions and differences:

    - no pooling anywhere: downsampling is by the strided convs, and the skips have their own weights
      (no identity skips);
    - biases ``U(±0.5/√fan_in)`` with the fan-in of the chain interaction into the layer (the code's
      is ``0.5/√(C·9)`` for the convs, the same for the stride-2 ones);
    - the relaxation schedule: the code updates layers {1, 3, 5, 7, 9} then {2, 4, 6, 8}, but the skips
      couple 2–4, 4–6 and 6–8, so that second group is not a block of non-interacting layers. Here
      the interaction graph is coloured and the groups are {s1, s3, s5, s7, o}, {s2, s6}, {s4, s8}:
      block-coordinate descent, E never increases (the fixed points are the same);
    - its training recipe (``recipes/deep-ebl``): CEP, β 0.1 (0.15 on CIFAR-100), 120 free and 50
      nudged iterations, SGD with Nesterov momentum 0.9, lr 0.03 for every layer, weight decay 2.5e-4
      (3.5e-4 on CIFAR-100), batch 128, cosine to 2e-6 over 300 epochs, gradient clipping at norm 1;
      its RandAugment (3 ops, magnitude 9) is not available here (crop and flip only).
    """
    if tuple(in_shape[1:]) != (32, 32):
        raise ConfigError(
            f"model 'hopfield_resnet13' needs 32×32 inputs, got {in_shape[1]}×{in_shape[2]}; "
            "for 28×28 datasets (MNIST, FashionMNIST) set data.pad_to: 32"
        )
    skips = [Skip(i, i + 2, kernel=1, mode="stride") for i in (0, 2, 4, 6)]
    return _network(options, in_shape, [128, 128, 256, 256, 512, 512, 512, 512], num_classes, generator,
                    default_gains=[0.6] * 8 + [0.8] + [0.7] * 4, default_range=(0.0, 6.0),
                    downsample=["none", "stride"] * 4, skips=skips)


@dataclass
class HopfieldSpec(HopfieldOptions):
    """Options of the ``hopfield`` model: any layered Hopfield network with skips (beside the preset options)."""

    conv_channels: list[int] | None = None
    """Channels of the conv layers s1 … s_m (required; may be empty for a dense network)."""
    downsample: list[str] | None = None
    """Per conv layer: ``max`` (2×2 max-pool, the default), ``avg``, ``stride`` (stride-2 conv) or ``none``."""
    dense_units: list[int] | None = None
    """Widths of dense hidden layers after the conv layers."""
    skips: list[Any] | None = None
    """Skip interactions: ``[source, target]`` or ``{source, target, kernel: 1 | 3, mode: avg | max | stride}``
    (layer numbers, 0 = input; a skip into a dense layer is dense)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conv_channels is None:
            raise ConfigError("model 'hopfield' needs conv_channels (a list of channel counts, e.g. [16, 32])")
        for key in ("conv_channels", "dense_units"):
            value = getattr(self, key) or []
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise ConfigError(f"model {key} must be a list of positive integers, got {value!r}")
        for skip in self.skips or []:
            Skip.parse(skip)


@MODELS.register("hopfield", options=HopfieldSpec)
def hopfield(
    options: HopfieldSpec | None,
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    generator: torch.Generator,
) -> HopfieldNetwork:
    """Any layered Hopfield network: conv layers, dense layers, a dense output and skip interactions.

    ``conv_channels``, ``downsample``, ``dense_units`` and ``skips`` (:class:`HopfieldSpec`), with the
    options of every preset (gains default to 0.5 for every interaction, the chain then the skips)."""
    if options is None:
        raise ConfigError("model 'hopfield' needs conv_channels (a list of channel counts, e.g. [16, 32])")
    count = len(options.conv_channels or []) + len(options.dense_units or []) + 1 + len(options.skips or [])
    return _network(options, in_shape, list(options.conv_channels or []), num_classes, generator,
                    default_gains=[0.5] * count, downsample=options.downsample, dense_units=options.dense_units or (),
                    skips=[Skip.parse(s) for s in options.skips or []])
