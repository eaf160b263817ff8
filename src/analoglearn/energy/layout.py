"""The layout of a Hopfield network beside its layers: read-outs, skips, activation ranges, colouring.

* :class:`Readout`: the cost ``C(o, y)`` and whether the output is a layer of the energy;
* :class:`Skip`: a skip interaction's specification (built into an interaction by the network);
* :func:`check_range`: an activation range ``[lo, hi]``, validated;
* :func:`colour_layers`: the groups of mutually non-interacting layers of the asynchronous schedule.

:class:`~.network.HopfieldNetwork` puts them together (its module doc has the energy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .interactions import Interaction

__all__ = ["DOWNSAMPLE", "READOUTS", "Range", "Readout", "Skip", "check_range", "colour_layers"]

DOWNSAMPLE = ("max", "avg", "stride", "none")
"""Downsampling of a chain conv layer (``downsample=``): by 2 with max / average pooling or a stride, or none."""
READOUTS = ("energy", "cross_entropy")
"""Read-outs (:class:`Readout`): the output in the energy with a squared error, or a linear read-out
outside the energy with a softmax cross-entropy."""


@dataclass(frozen=True)
class Readout:
    """The cost ``C(o, y)`` of one example and how the output enters the energy.

    Attributes:
        kind: ``'energy'``: ``C = ½‖γo − y‖²``, the output is an energy layer; ``'cross_entropy'``:
            ``C = −⟨y, log softmax(γo)⟩``, the output is a linear read-out outside the energy.
        gain: the output gain γ > 0 (1: paper A's cost). Predictions are ``argmax o`` either way.
    """

    kind: str = "energy"
    gain: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in READOUTS:
            raise ConfigError(f"unknown readout {self.kind!r}; valid read-outs: {', '.join(READOUTS)}")
        if not (isinstance(self.gain, (int, float)) and math.isfinite(self.gain) and self.gain > 0):
            raise ConfigError(f"output_gain must be a finite number > 0, got {self.gain!r}")

    @property
    def in_energy(self) -> bool:
        """Whether the output is a layer of the energy (``'energy'``) or a read-out outside it."""
        return self.kind == "energy"

    def cost(self, output: Tensor, target: Tensor) -> Tensor:
        """``C(o, y)`` per example, ``(B,)``; ``target`` one-hot ``(B, K)``."""
        if self.kind == "energy":
            return 0.5 * (self.gain * output - target).pow(2).sum(1)
        return -(target * F.log_softmax(self.gain * output, dim=1)).sum(1)

    def output_gradient(self, output: Tensor, target: Tensor) -> Tensor:
        """``∂C/∂o`` per example, ``(B, K)``: ``γ(γo − y)`` or ``γ(softmax(γo) − y)``."""
        if self.kind == "energy":
            return self.gain * (self.gain * output - target)
        return self.gain * (torch.softmax(self.gain * output, dim=1) - target)


@dataclass(frozen=True)
class Skip:
    """A skip interaction from layer ``source`` to layer ``target`` (layer numbers, 0 = x, ``source <
    target − 1``): :class:`~.interactions.ConvInteraction` with a ``kernel``×``kernel`` conv and
    a ``mode`` (``'avg'``, ``'max'``, ``'stride'``) by the factor ``H_source / H_target`` between conv layers, or a
    :class:`~.interactions.DenseInteraction` from ``flatten(s_source)`` into a dense layer."""

    source: int
    target: int
    kernel: int = 1
    mode: str = "avg"

    @classmethod
    def parse(cls, value: object) -> Skip:
        """A :class:`Skip` from itself, ``[source, target]`` or ``{source, target, kernel, mode}``."""
        if isinstance(value, Skip):
            return value
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return cls(*value)
        if isinstance(value, dict) and {"source", "target"} <= set(value) <= {"source", "target", "kernel", "mode"}:
            return cls(**value)
        raise ConfigError(
            f"a skip is [source, target] or {{source, target, kernel, mode}} (layer numbers, 0 = input), "
            f"got {value!r}"
        )


Range = tuple[float, float]
"""An activation range ``(lo, hi)``: a layer's states are clamped to ``[lo, hi]``."""


def check_range(layer: int, value: object) -> Range:
    """``value`` as the activation range ``(lo, hi)`` of layer ``s<layer>``; :class:`ConfigError` unless it
    is a pair of finite numbers with ``lo < hi``."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"activation range of layer s{layer} must be [lo, hi], got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ConfigError(
            f"activation range of layer s{layer} must have finite bounds with lo < hi, got [{lo}, {hi}]"
        )
    return lo, hi


def colour_layers(num_layers: int, interactions: Sequence[Interaction]) -> list[int]:
    """Greedy colouring of the interaction graph: colour of each free layer 1 … ``num_layers``.

    Layers are nodes, interactions between two free layers are edges (the clamped input is no
    node); in layer order each layer takes the smallest colour none of its neighbours has. Layers
    of one colour never interact, so updating one colour at a time is block-coordinate descent. A
    chain gets colours 0, 1, 0, 1, …: paper A's odd/even schedule.
    """
    neighbours: list[set[int]] = [set() for _ in range(num_layers + 1)]
    for m in interactions:
        if m.source >= 1:
            neighbours[m.source].add(m.target)
            neighbours[m.target].add(m.source)
    colours: dict[int, int] = {}
    for k in range(1, num_layers + 1):
        taken = {colours[n] for n in neighbours[k] if n in colours}
        colours[k] = next(c for c in range(num_layers + 1) if c not in taken)
    return [colours[k] for k in range(1, num_layers + 1)]
