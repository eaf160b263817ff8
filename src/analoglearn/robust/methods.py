"""Backprop (``METHODS``: ``sgd``) and the perturbations of the ``perturb`` section (``PERTURBATIONS``).

``sgd`` gives the closure of DESIGN.md, ``loss = CE(model(x), y); loss.backward(); return loss``. A
perturbation (Paper B, arXiv 2602.07320, §B.2; :mod:`~analoglearn.robust.sam`, :mod:`~analoglearn.robust.rwp`)
wraps the base optimiser and calls any method's closure, so method × perturbation is a plain sweep axis::

    method:  {name: CEP}                                   # or {name: sgd}
    perturb: {name: rwp, sigma: 0.2, schedule: quadratic, noise: {name: additive_gaussian}}
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from .. import noise, schedule
from ..errors import ConfigError
from ..method import Closure, GradScaler, Method, Outcome, chunks
from ..registry import METHODS, PERTURBATIONS
from .perturbation import Perturbation
from .rwp import RWP
from .sam import ASAM, SAM


@dataclass
class BackpropOptions:
    """Options of ``sgd`` (plain backpropagation)."""

    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy, in [0, 1)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"method.label_smoothing must be in [0, 1), got {self.label_smoothing}")


class Backprop(Method):
    """Minimise the mean cross-entropy L(w) = −(1/B) Σ_b log softmax(f_w(x_b))_{y_b} by backprop; with
    ``accumulate = k`` the batch is split into k micro-batches and ∇L = Σ_i (b_i/B)·∇L_i, the full
    batch's gradient (exactly so without BatchNorm, whose statistics are per micro-batch)."""

    def __init__(self, model: nn.Module, options: BackpropOptions | None = None, *,
                 generator: torch.Generator | None = None) -> None:
        from ..energy.network import HopfieldNetwork

        if isinstance(model, HopfieldNetwork):
            raise ConfigError("backprop of the cross-entropy needs a feed-forward model, and this one is an "
                              "energy-based network; train it with CL, PEP, NEP, CEP, PCpL, NCpL, CCpL, TBP or RBP "
                              "(and add a perturb section for noise-robust training)")
        super().__init__(model, options or BackpropOptions(), generator=generator)

    def closure(self, x: torch.Tensor, y: torch.Tensor, scaler: GradScaler | None = None) -> Closure:
        """Forward and backward of every micro-batch; ``.grad`` += ∇L (``S·∇L`` under ``scaler``)."""
        smoothing, parts, cast = self.options.label_smoothing, chunks(x, y, self.accumulate), self.autocast
        self.model.train()

        def run() -> Outcome:
            total: torch.Tensor | None = None
            correct = 0
            for xi, yi, share in parts:
                with torch.autocast(xi.device.type, cast) if cast is not None else contextlib.nullcontext():
                    scores = self.model(xi)
                loss = F.cross_entropy(scores.float(), yi, label_smoothing=smoothing)
                part = loss if share == 1.0 else loss * share
                (scaler.scale(part) if scaler is not None else part).backward()
                total = part.detach() if total is None else total + part.detach()
                correct += int((scores.detach().argmax(1) == yi).sum())
            assert total is not None
            return Outcome(total, correct)

        return run


@METHODS.register("sgd", aliases=("backprop", "bp"), options=BackpropOptions)
def sgd(model: nn.Module, options: BackpropOptions, *, generator: torch.Generator) -> Method:
    """Plain backpropagation of the cross-entropy (the optimiser is chosen by ``optim.name``)."""
    return Backprop(model, options, generator=generator)


@dataclass(frozen=True)
class Clock:
    """What a perturbation's schedule needs to know of training: optimiser steps in all and per epoch."""

    total_steps: int = 1
    steps_per_epoch: int = 1


@dataclass
class Ramped:
    """A strength ≥ 0 (the field named by ``STRENGTH``) and its schedule (:mod:`analoglearn.schedule`)."""

    STRENGTH: ClassVar[str] = "rho"
    schedule: str = "constant"
    """Schedule of the strength: constant, linear, quadratic, power, cosine or feedback."""
    schedule_options: dict[str, Any] = field(default_factory=dict)
    """Options of the schedule (start, per, begin, end, total, power, ramp, fraction_kept)."""
    diagnostics: bool = False
    """Log per-epoch landscape diagnostics (clean/perturbed loss and gradient norms, cosine, sharpness)."""

    def __post_init__(self) -> None:
        if not getattr(self, self.STRENGTH) >= 0:
            raise ConfigError(f"perturb.{self.STRENGTH} must be ≥ 0, got {getattr(self, self.STRENGTH)}")
        self.schedule = schedule.canonical(self.schedule)
        self.strength()

    def strength(self, clock: Clock = Clock()) -> schedule.Schedule | float:
        """The strength: its final value under the constant schedule, else the schedule ramping to it."""
        final = getattr(self, self.STRENGTH)
        if schedule.canonical(self.schedule) == "constant" and not self.schedule_options:
            return final
        return schedule.from_config(self.schedule, final, clock.total_steps, clock.steps_per_epoch,
                                    **self.schedule_options)


@dataclass
class SAMOptions(Ramped):
    """Options of ``sam`` (Foret et al. 2021; Paper B §B.2): ε = ρ·g/‖g‖."""

    rho: float = 0.05
    """Neighbourhood radius ρ ≥ 0 (its final value when a schedule ramps it)."""
    diagnostics: bool = True
    local_ascent: bool = False
    """Data-parallel runs: ε from each worker's own gradient (the first pass is not all-reduced, as under
    ``no_sync``); default: from the global gradient, so several workers equal one."""


@dataclass
class ASAMOptions(SAMOptions):
    """Options of ``asam`` (Kwon et al. 2021): ε = ρ·T²g/‖Tg‖, T = |w| + η."""

    rho: float = 0.5
    """Neighbourhood radius ρ in the scaled coordinates (Kwon et al.: 0.5 on CIFAR-10)."""
    eta: float = 0.01
    """η of the scaling T_w = |w| + η."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eta >= 0:
            raise ConfigError(f"perturb.eta must be ≥ 0, got {self.eta}")


@dataclass
class RWPOptions(Ramped):
    """Options of ``rwp`` (random weight perturbation, Paper B §B.2): λ·E[L(w+ε)] + (1−λ)·L(w)."""

    STRENGTH: ClassVar[str] = "sigma"
    sigma: float = 0.02
    """σ_train, the strength of the training noise (its final value under a schedule)."""
    noise: dict[str, Any] = field(default_factory=lambda: {"name": "additive_gaussian"})
    """Training noise model ``{name, **options}`` (``analoglearn list noise``; a bare name also works);
    its strength is σ_train."""
    samples: int = 1
    """K, noise draws per step."""
    mix: float = 1.0
    """λ in λ·E[L(w+ε)] + (1−λ)·L(w); λ < 1 adds a clean pass per step."""
    per_worker_noise: bool = False
    """Data-parallel runs: each worker draws its own ε (default: the same draw on every worker)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        spec = {"name": self.noise} if isinstance(self.noise, str) else dict(self.noise)
        name = spec.pop("name", "additive_gaussian")
        if not isinstance(name, str):
            raise ConfigError(f"perturb.noise.name must be a noise model name, got {name!r}")
        try:
            self.noise = {"name": noise.build(name, self.sigma, **spec).name, **spec}
        except ConfigError as err:
            raise ConfigError(f"perturb.noise: {err}") from None
        if self.samples < 1:
            raise ConfigError(f"perturb.samples must be ≥ 1, got {self.samples}")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"perturb.mix must be in [0, 1], got {self.mix}")


@PERTURBATIONS.register("none", summary="no perturbation: the base optimiser steps on the method's gradient")
def no_perturbation(base: torch.optim.Optimizer, model: nn.Module, options: None, *,
                    generator: torch.Generator | None, clock: Clock) -> torch.optim.Optimizer:
    """The base optimiser itself."""
    return base


@PERTURBATIONS.register("sam", options=SAMOptions)
def sam(base: torch.optim.Optimizer, model: nn.Module, options: SAMOptions, *,
        generator: torch.Generator | None, clock: Clock) -> Perturbation:
    """Sharpness-aware minimisation: step with ∇L(w + ρ·g/‖g‖)."""
    if isinstance(options, ASAMOptions):
        return ASAM(base, options.strength(clock), model=model, eta=options.eta, diagnostics=options.diagnostics)
    return SAM(base, options.strength(clock), model=model, diagnostics=options.diagnostics)


PERTURBATIONS.register("asam", options=ASAMOptions, summary="Adaptive SAM: ε = ρ·T²g/‖Tg‖ with T = |w| + η.")(sam)


@PERTURBATIONS.register("rwp", options=RWPOptions)
def rwp(base: torch.optim.Optimizer, model: nn.Module, options: RWPOptions, *,
        generator: torch.Generator | None, clock: Clock) -> Perturbation:
    """Random weight perturbation: minimise λ·E[L(w+ε)] + (1−λ)·L(w), ε the noise model at σ_train."""
    spec = dict(options.noise)
    return RWP(base, noise.build(spec.pop("name"), options.sigma, **spec), options.strength(clock), model=model,
               samples=options.samples, mix=options.mix, generator=generator, diagnostics=options.diagnostics)
