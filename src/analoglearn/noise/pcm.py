"""Phase-change memory (PCM): programming noise, drift and 1/f read noise.

The statistical model fitted on IBM's PCM devices (Nandakumar et al., ICECS 2019), with the
formulas of aihwkit's ``PCMLikeNoiseModel``, cited by Paper B's reviewers (Jacobson et al.,
arXiv 2602.07320, §B.4). Weights are stored on a differential pair (see
:mod:`analoglearn.noise.device`), ĝ = g/g_max, conductances in µS, times in seconds:

1. programming: g_prog = max(g + s_p·σ_prog(ĝ)·ξ, 0),
   σ_prog(ĝ) = (0.26348 + 1.9650·ĝ − 1.1731·ĝ²)·g_max/25 µS;
2. drift (only when t_inf > 0): g_drift = g_prog·(t/t0)^(−ν), t = t_inf + t0,
   ν = s_d·|μ_ν + σ_ν·ξ|, μ_ν = clamp(−0.0155·ln ĝ + 0.0244, 0.049, 0.1),
   σ_ν = clamp(−0.0125·ln ĝ − 0.0059, 0.008, 0.045), with ĝ of the *target* conductance
   (floored at 1e-7);
3. 1/f read noise: g = max(g_drift + s_r·|g_drift|·Q·√ln((t + t_read)/(2·t_read))·ξ, 0),
   Q = min(0.0088/max(ĝ_prog^0.65, 1e-3), 0.2), with ĝ_prog of the *programmed* conductance
   (as aihwkit does; applied also at t_inf = 0, the first read).

Optional global drift compensation (aihwkit's ``GlobalDriftCompensation`` idea): the mean absolute
output of each layer for an all-ones input, mean_f |Σ_j W_fj|, is measured once after programming
(no drift, no read noise) and again at t_inf; the weights are rescaled by their ratio, which is
what rescaling the layer's outputs by it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError
from .base import check_nonnegative, randn_like, register
from .device import ConductanceNoise, from_pair, to_pair

PROG_COEFF = (0.26348, 1.9650, -1.1731)
"""Programming-noise polynomial, µS, fitted at g_max = 25 µS."""
PROG_G_MAX_REFERENCE = 25.0


def programming_std(g: torch.Tensor, g_max: float) -> torch.Tensor:
    """σ_prog in µS of target conductances ``g`` (µS): the polynomial in ĝ scaled by g_max/25."""
    u = g / g_max
    return (PROG_COEFF[0] + PROG_COEFF[1] * u + PROG_COEFF[2] * u * u) * (g_max / PROG_G_MAX_REFERENCE)


def drift_parameters(g: torch.Tensor, g_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ_ν, σ_ν) of the drift exponent for target conductances ``g`` (µS)."""
    log_u = torch.log((g / g_max).abs().clamp(min=1e-7))
    mu = (-0.0155 * log_u + 0.0244).clamp(0.049, 0.1)
    sd = (-0.0125 * log_u - 0.0059).clamp(0.008, 0.045)
    return mu, sd


def read_noise_q(g_prog: torch.Tensor, g_max: float) -> torch.Tensor:
    """Relative 1/f read-noise amplitude Q of programmed conductances ``g_prog`` (µS)."""
    return (0.0088 / ((g_prog.abs() / g_max) ** 0.65).clamp(min=1e-3)).clamp(max=0.2)


def _readout(w: torch.Tensor) -> torch.Tensor:
    """mean_f |Σ_j W_fj|: the mean absolute output of the layer for an all-ones input."""
    rows = w.reshape(w.shape[0], -1) if w.dim() >= 2 else w.reshape(1, -1)
    return rows.sum(dim=1).abs().mean().clamp(min=1e-12)


@register("pcm", aliases=("pcm_like",))
@dataclass(frozen=True)
class PCM(ConductanceNoise):
    """PCM programming noise, drift to time t_inf and 1/f read noise (formulas in the module doc).

    Strength: t_inf, the inference time in seconds after programming (0: programming and first read
    only). Without compensation, weights shrink with time (about 0.6× after a day).
    """

    name: ClassVar[str] = "pcm"
    strength_field: ClassVar[str] = "t_inference"

    t_inference: float = 0.0
    """Inference time after programming, seconds."""
    t0: float = 20.0
    """Time of the first read after programming (drift reference), seconds."""
    t_read: float = 250e-9
    """Read duration of the 1/f fit, seconds."""
    prog_noise_scale: float = 1.0
    """Multiplier s_p of the programming noise (0 switches it off)."""
    read_noise_scale: float = 1.0
    """Multiplier s_r of the read noise (0 switches it off)."""
    drift_scale: float = 1.0
    """Multiplier s_d of the drift exponent ν (0 switches drift off)."""
    drift_compensation: bool = False
    """Rescale each layer by the global drift-compensation factor (module doc)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for what in ("t_inference", "prog_noise_scale", "read_noise_scale", "drift_scale"):
            check_nonnegative(f"pcm.{what}", getattr(self, what))
        if not self.t0 > 0 or not self.t_read > 0:
            raise ConfigError(f"pcm.t0 and pcm.t_read must be > 0 s; got {self.t0!r}, {self.t_read!r}.")

    def program(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Programmed conductances g_prog (µS) of targets ``g`` (µS)."""
        noise = self.prog_noise_scale * programming_std(g, self.g_max) * randn_like(g, generator)
        return (g + noise).clamp(min=0)

    def drift_exponent(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Drift exponents ν ≥ 0 of targets ``g`` (µS)."""
        mu, sd = drift_parameters(g, self.g_max)
        return self.drift_scale * (mu + sd * randn_like(g, generator)).abs()

    def drift_and_read(
        self, g_prog: torch.Tensor, nu: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Conductances read at t_inf (µS): drift g_prog·(t/t0)^−ν, then 1/f read noise."""
        t = self.t_inference + self.t0
        g = g_prog * (t / self.t0) ** (-nu) if self.t_inference > 0 else g_prog
        spread = read_noise_q(g_prog, self.g_max) * math.sqrt(math.log((t + self.t_read) / (2 * self.t_read)))
        return (g + self.read_noise_scale * g.abs() * spread * randn_like(g, generator)).clamp(min=0)

    def perturb_conductance(self, g: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        g_prog = self.program(g, generator)
        return self.drift_and_read(g_prog, self.drift_exponent(g, generator), generator)

    def perturb_(self, weight: torch.Tensor, generator: torch.Generator | None) -> None:
        g, w_max = to_pair(weight, self.g_max)
        g_prog = self.program(g, generator)
        g_read = self.drift_and_read(g_prog, self.drift_exponent(g, generator), generator)
        w = from_pair(g_read, w_max, self.g_max)
        if self.drift_compensation:
            w = w * (_readout(from_pair(g_prog, w_max, self.g_max)) / _readout(w))
        weight.copy_(w)
