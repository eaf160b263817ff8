"""Hardware-grounded noise: weights stored as differential conductance pairs.

Paper B (Jacobson et al., arXiv 2602.07320), §B.4: reviewers asked for noise tied to real devices.
Each weight tensor W is mapped to a differential pair of conductances in [0, g_max] (µS),

    g⁺ = g_max·max(W, 0)/w_max,   g⁻ = g_max·max(−W, 0)/w_max,   w_max = max|W| (per tensor),

the devices are corrupted, and the weight is read back as W' = (g⁺ − g⁻)·w_max/g_max.
The PCM model is in :mod:`analoglearn.noise.pcm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import ConfigError
from .base import NoiseModel, check_choice, check_nonnegative, rand_like, randn_like, register


def to_pair(w: torch.Tensor, g_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Map weights ``w`` (any shape) to conductances ``g`` of shape ``(2, *w.shape)`` in µS, and w_max.

    ``g[0]`` holds g⁺ and ``g[1]`` holds g⁻; ``w_max`` is a 0-dim tensor (1 for an all-zero tensor).
    """
    w_max = w.detach().abs().max().float()
    w_max = torch.where(w_max > 0, w_max, torch.ones_like(w_max))
    unit = w.float() * (g_max / w_max)
    return torch.stack((unit.clamp(min=0), (-unit).clamp(min=0))), w_max


def from_pair(g: torch.Tensor, w_max: torch.Tensor, g_max: float) -> torch.Tensor:
    """Weights (g⁺ − g⁻)·w_max/g_max of conductances ``g`` ``(2, ...)``, float32."""
    return (g[0] - g[1]) * (w_max / g_max)


@dataclass(frozen=True)
class ConductanceNoise(NoiseModel):
    """Base class of models acting on the conductances of a differential pair (see module doc)."""

    g_max: float = field(default=25.0, kw_only=True)
    """Largest conductance of one device, µS (the weight w_max maps to g_max)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.g_max > 0:
            raise ConfigError(f"{self.name}.g_max must be > 0 µS; got {self.g_max!r}.")

    def perturb_conductance(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Corrupted conductances of ``g`` ``(2, ...)`` in µS. Implemented by subclasses."""
        raise NotImplementedError

    def perturb_(self, weight: torch.Tensor, generator: torch.Generator | None) -> None:
        g, w_max = to_pair(weight, self.g_max)
        weight.copy_(from_pair(self.perturb_conductance(g, generator), w_max, self.g_max))


DEPENDENCES = ("independent", "proportional", "inverse")


@register("device", aliases=("device_noise", "conductance"))
@dataclass(frozen=True)
class DeviceNoise(ConductanceNoise):
    """Generic programming noise on each device: g ← max(g + s(g)·ξ, 0), ξ ~ N(0, 1).

    Strength: σ (dimensionless), with the std s(g) in µS chosen by ``dependence``:

    - ``independent``: s = σ·g_max (state-independent, as CrossSim's generic model);
    - ``proportional``: s = σ·g (relative error, zero for an unprogrammed device);
    - ``inverse``: s = σ·g_max / max(g/g_max, ĝ_min) (low-conductance states noisiest).
    """

    name: ClassVar[str] = "device"
    strength_field: ClassVar[str] = "sigma"

    sigma: float = 0.02
    """Noise level σ (dimensionless; relative to g_max or to g, see ``dependence``)."""
    dependence: str = "independent"
    """How the std depends on the conductance: independent, proportional or inverse."""
    g_min_ratio: float = 0.1
    """Floor ĝ_min of g/g_max in the ``inverse`` law (so a zero conductance has std σ·g_max/ĝ_min)."""

    @property
    def deterministic(self) -> bool:
        return self.sigma == 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("device.sigma", self.sigma)
        check_choice("device.dependence", self.dependence, DEPENDENCES)
        if not 0 < self.g_min_ratio <= 1:
            raise ConfigError(f"device.g_min_ratio must be in (0, 1]; got {self.g_min_ratio!r}.")

    def std(self, g: torch.Tensor) -> torch.Tensor:
        """Programming std s(g) in µS of conductances ``g`` (µS)."""
        if self.dependence == "independent":
            return torch.full_like(g, self.sigma * self.g_max)
        if self.dependence == "proportional":
            return self.sigma * g
        return self.sigma * self.g_max / (g / self.g_max).clamp(min=self.g_min_ratio)

    def perturb_conductance(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return (g + self.std(g) * randn_like(g, generator)).clamp(min=0)


@register("quantize", aliases=("quantise", "quantization", "quantisation"))
@dataclass(frozen=True)
class Quantize(ConductanceNoise):
    """Conductance quantisation: each device holds one of n levels {0, g_max/(n−1), …, g_max}.

    g ← g_max·round((n−1)·g/g_max)/(n−1). Deterministic (no draw). Strength: n, the number of
    levels per device (≥ 2); a weight then takes one of 2n−1 values, ±k·w_max/(n−1).
    """

    name: ClassVar[str] = "quantize"
    strength_field: ClassVar[str] = "levels"

    levels: int = 16
    """Number of conductance levels per device, n ≥ 2."""

    @property
    def deterministic(self) -> bool:
        """Quantisation draws nothing."""
        return True

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.levels) != self.levels or self.levels < 2:
            raise ConfigError(f"quantize.levels must be an integer ≥ 2; got {self.levels!r}.")
        object.__setattr__(self, "levels", int(self.levels))

    def perturb_conductance(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        steps = self.levels - 1
        return torch.round(g * (steps / self.g_max)).clamp(0, steps) * (self.g_max / steps)


STUCK_MODES = ("zero", "max", "both")


@register("stuck_at", aliases=("stuck", "faults", "stuck-at"))
@dataclass(frozen=True)
class StuckAt(ConductanceNoise):
    """Stuck-at faults: each device independently fails with probability p.

    A failed device is stuck at g = 0 (``zero``), at g = g_max (``max``), or at either with equal
    probability (``both``). Strength: p, the fault probability per device, in [0, 1].
    """

    name: ClassVar[str] = "stuck_at"
    strength_field: ClassVar[str] = "p"

    p: float = 0.01
    """Probability that a device is faulty."""
    mode: str = "zero"
    """Value of a faulty device: zero, max or both."""

    @property
    def deterministic(self) -> bool:
        return self.p == 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.p, (int, float)) or not 0 <= self.p <= 1:
            raise ConfigError(f"stuck_at.p must be a probability in [0, 1]; got {self.p!r}.")
        check_choice("stuck_at.mode", self.mode, STUCK_MODES)

    def perturb_conductance(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        u = rand_like(g, generator)
        faulty = u < self.p
        if self.mode == "zero":
            value = torch.zeros_like(g)
        elif self.mode == "max":
            value = torch.full_like(g, self.g_max)
        else:  # u/p is again uniform on [0, 1) given a fault: its half decides the stuck value
            value = torch.where(u < 0.5 * self.p, 0.0, self.g_max).to(g.dtype)
        return torch.where(faulty, value, g)


__all__ = ["ConductanceNoise", "DeviceNoise", "Quantize", "StuckAt", "from_pair", "to_pair"]
