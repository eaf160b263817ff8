"""Isotropic weight noise: additive and multiplicative, Gaussian and uniform.

Paper B (Jacobson et al., arXiv 2602.07320), §B.1: the main test-time corruption is additive
Gaussian noise on conv and linear weights, scaled per output filter f by max|W_f|. The paper's
covariance reads σ²·max|W_f|·I (std σ·√max|W_f|); the hardware convention (aihwkit, CrossSim)
is std σ·max|W_f|. Both are offered; the default is the hardware convention.

A *filter* is the slice ``W[f]`` along the first (output) dimension of a tensor of 2 or more
dimensions: a row of a linear weight ``(out, in)`` or one kernel ``(in, kh, kw)`` of a conv weight
``(out, in, kh, kw)``. A 1-D tensor (a bias, a norm scale) counts as one filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import NoiseModel, check_choice, check_nonnegative, rand_like, randn_like, register

SCALES = ("filter-max", "tensor-max", "filter-l2", "rms", "absolute")
"""Scale references of the additive models (see :func:`reference_scale`)."""


def reference_scale(w: torch.Tensor, scale: str, sqrt: bool = False) -> torch.Tensor:
    """The reference r by which the additive noise std is σ·r, broadcastable to ``w``.

    - ``filter-max``: r_f = max|W_f| per output filter (shape ``(out, 1, ..., 1)``);
    - ``tensor-max``: r = max|W| over the whole tensor;
    - ``filter-l2``: r_f = ‖W_f‖₂, the Euclidean norm of each filter;
    - ``rms``: r = √(mean W²) over the whole tensor;
    - ``absolute``: r = 1 (σ in the weights' own unit).

    With ``sqrt=True`` the reference becomes √r (the paper's literal σ·√max|W_f|).
    """
    check_choice("noise scale", scale, SCALES)
    a = w.detach().abs().float()
    per_filter = a.reshape(a.shape[0], -1) if a.dim() >= 2 else a.reshape(1, -1)
    view = (a.shape[0],) + (1,) * (a.dim() - 1) if a.dim() >= 2 else (1,)
    if scale == "filter-max":
        r = per_filter.amax(dim=1).reshape(view)
    elif scale == "filter-l2":
        r = per_filter.norm(dim=1).reshape(view)
    elif scale == "tensor-max":
        r = a.max()
    elif scale == "rms":
        r = a.pow(2).mean().sqrt()
    else:
        r = torch.ones((), device=w.device)
    return (r.sqrt() if sqrt else r).to(w.dtype)


@dataclass(frozen=True)
class _Additive(NoiseModel):
    sigma: float = 0.02
    """Noise level σ, relative to the scale reference (dimensionless unless ``scale='absolute'``)."""
    scale: str = "filter-max"
    """Reference r of the std σ·r: filter-max, tensor-max, filter-l2, rms or absolute."""
    sqrt: bool = False
    """Use √r instead of r (the paper's literal covariance σ²·max|W_f|·I)."""

    strength_field: ClassVar[str] = "sigma"

    @property
    def deterministic(self) -> bool:
        return self.sigma == 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative(f"{self.name}.sigma", self.sigma)
        check_choice(f"{self.name}.scale", self.scale, SCALES)


@register("additive_gaussian", aliases=("gaussian", "additive-gaussian"))
@dataclass(frozen=True)
class AdditiveGaussian(_Additive):
    """Additive Gaussian weight noise: W ← W + σ·r·ξ, ξ ~ N(0, 1), r the scale reference.

    Strength: σ. With the default ``scale='filter-max'`` the std of the noise on filter f is
    σ·max|W_f| (Paper B, §B.1; test levels σ ∈ {0.02, 0.03, 0.05, 0.07}).
    """

    name: ClassVar[str] = "additive_gaussian"

    def perturb_(self, weight: torch.Tensor, generator: torch.Generator | None) -> None:
        std = self.sigma * reference_scale(weight, self.scale, self.sqrt)
        weight.add_(randn_like(weight, generator).mul_(std))


@register("additive_uniform", aliases=("uniform", "additive-uniform"))
@dataclass(frozen=True)
class AdditiveUniform(_Additive):
    """Additive uniform weight noise: W ← W + σ·r·u, u ~ U(−1, 1), r the scale reference.

    Strength: σ, the half-width relative to r (std σ·r/√3).
    """

    name: ClassVar[str] = "additive_uniform"

    def perturb_(self, weight: torch.Tensor, generator: torch.Generator | None) -> None:
        half = self.sigma * reference_scale(weight, self.scale, self.sqrt)
        weight.add_(rand_like(weight, generator).mul_(2.0).sub_(1.0).mul_(half))


@dataclass(frozen=True)
class _Multiplicative(NoiseModel):
    sigma: float = 0.02
    """Relative noise level σ (dimensionless)."""

    strength_field: ClassVar[str] = "sigma"

    @property
    def deterministic(self) -> bool:
        return self.sigma == 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative(f"{self.name}.sigma", self.sigma)


@register("multiplicative_gaussian", aliases=("multiplicative", "multiplicative-gaussian"))
@dataclass(frozen=True)
class MultiplicativeGaussian(_Multiplicative):
    """Multiplicative Gaussian weight noise: w ← w·(1 + σξ), ξ ~ N(0, 1) per weight.

    Strength: σ, the relative std of each weight (Paper B's wide sweep).
    """

    name: ClassVar[str] = "multiplicative_gaussian"

    def perturb_(self, weight: torch.Tensor, generator: torch.Generator | None) -> None:
        weight.mul_(randn_like(weight, generator).mul_(self.sigma).add_(1.0))


@register("multiplicative_uniform", aliases=("multiplicative-uniform",))
@dataclass(frozen=True)
class MultiplicativeUniform(_Multiplicative):
    """Multiplicative uniform weight noise: w ← w·(1 + σu), u ~ U(−1, 1) per weight.

    Strength: σ, the relative half-width (relative std σ/√3).
    """

    name: ClassVar[str] = "multiplicative_uniform"

    def perturb_(self, weight: torch.Tensor, generator: torch.Generator | None) -> None:
        weight.mul_(rand_like(weight, generator).mul_(2.0).sub_(1.0).mul_(self.sigma).add_(1.0))
