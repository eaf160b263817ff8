"""Backprop training methods registered in :data:`analoglearn.registry.METHODS`.

``sgd`` is plain backpropagation of the cross-entropy: the closure of DESIGN.md,
``loss = CE(model(x), y); loss.backward(); return loss``, followed by the optimiser's step.
``sam``, ``asam`` and ``rwp`` (Paper B, Jacobson et al., arXiv 2602.07320, §B.2) pass the same
closure to a perturbation wrapper (:mod:`analoglearn.robust.sam`, :mod:`analoglearn.robust.rwp`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import noise
from ..errors import ConfigError
from ..method import Method, Progress
from ..registry import METHODS, SCHEDULES
from . import schedules
from .perturbation import Perturbation
from .rwp import RWP
from .sam import ASAM, SAM
from .schedules import Strength, check_strength


@dataclass
class BackpropOptions:
    """Options of ``sgd`` (plain backpropagation)."""

    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy, in [0, 1)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"method.label_smoothing must be in [0, 1), got {self.label_smoothing}")


class Backprop(Method):
    """Minimise the mean cross-entropy L(w) = −(1/B) Σ_b log softmax(f_w(x_b))_{y_b} by backprop."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, options: Any = None, *,
                 generator: torch.Generator | None = None) -> None:
        from ..energy.network import HopfieldNetwork

        if isinstance(model, HopfieldNetwork):
            raise ConfigError(
                "backprop of the cross-entropy needs a feed-forward model, and this one is an energy-based "
                "network; train it with CL, PEP, NEP, CEP, PCpL, NCpL, CCpL, TBP or RBP, or set "
                "method.estimator (e.g. CEP) to wrap an estimator in sam/asam/rwp"
            )
        super().__init__(model, optimizer, options, generator=generator)

    def loss_closure(
        self, x: torch.Tensor, y: torch.Tensor, record: dict[str, float]
    ) -> Callable[[], torch.Tensor]:
        """The closure of DESIGN.md: fills ``.grad`` with ∇L at the current weights, returns L.

        The first call also stores in ``record`` the batch's loss and number of correct predictions.
        """
        smoothing = self.options.label_smoothing if self.options is not None else 0.0

        def closure() -> torch.Tensor:
            scores = self.model(x)
            loss = F.cross_entropy(scores, y, label_smoothing=smoothing)
            loss.backward()
            if not record:
                record["loss"] = float(loss.detach())
                record["correct"] = float((scores.detach().argmax(1) == y).sum())
            return loss.detach()

        return closure

    def train_step(self, x: torch.Tensor, y: torch.Tensor, progress: Progress) -> dict[str, float]:
        """Zero ``.grad``, run the closure once, step the optimiser."""
        self.model.train()
        record: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_closure(x, y, record)()
        self.optimizer.step()
        return record

    def perturbed_step(self, perturbation: Any, x: torch.Tensor, y: torch.Tensor, progress: Progress) -> dict:
        """One step through a perturbation wrapper: ``perturbation.step(closure, progress)``."""
        self.model.train()
        record: dict[str, float] = {}
        perturbation.step(self.loss_closure(x, y, record), progress)
        return record


@METHODS.register("sgd", aliases=("backprop", "bp"), options=BackpropOptions)
def sgd(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    options: BackpropOptions,
    *,
    generator: torch.Generator,
) -> Method:
    """Plain backpropagation of the cross-entropy (the optimiser is chosen by ``optim.name``)."""
    return Backprop(model, optimizer, options, generator=generator)


# ---------------------------------------------------------------- perturbed backprop: SAM, ASAM, RWP


def _strength(name: str, final: float, schedule: str, options: dict[str, Any]) -> Strength:
    """A number when the schedule is a plain constant, else the schedule ramping to ``final``."""
    if SCHEDULES.canonical(schedule) == "constant" and not options:
        return check_strength(name, final)
    return schedules.build(schedule, final, **options)


@dataclass
class InnerOptions(BackpropOptions):
    """What the perturbation wraps: backprop of the cross-entropy, or an energy-based estimator."""

    estimator: str | None = None
    """None: backprop of the cross-entropy. An energy-based algorithm (CEP, PEP, NEP, CL, ...): its
    gradient estimate, computed by relaxing the Hopfield network at the perturbed weights (the model
    must be an energy-based network: dchn32, dchn_cpu, tiny)."""
    estimator_options: dict[str, Any] = field(default_factory=dict)
    """Options of the estimator (beta, free_iterations, nudged_iterations, ...; see ``method.name: CEP``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.estimator is not None:
            from ..plugins import load_builtins

            load_builtins()
            self.estimator = METHODS.canonical(self.estimator)
            if self.estimator in ("sgd", "sam", "asam", "rwp"):
                raise ConfigError(f"method.estimator must be an energy-based algorithm, got {self.estimator!r}; "
                                  "leave it null for backprop")
            METHODS.build_options(self.estimator, self.estimator_options, where="method.estimator_options")
        elif self.estimator_options:
            raise ConfigError("method.estimator_options given without method.estimator")


def inner_method(model: nn.Module, optimizer: torch.optim.Optimizer, options: InnerOptions,
                 generator: torch.Generator | None) -> Method:
    """The method whose closure the perturbation wraps (backprop, or the named estimator)."""
    if options.estimator is None:
        return Backprop(model, optimizer, options, generator=generator)
    estimator_options = METHODS.build_options(options.estimator, options.estimator_options)
    return METHODS.create(options.estimator, model, optimizer, estimator_options, generator=generator)


@dataclass
class SAMOptions(InnerOptions):
    """Options of ``sam`` (Foret et al. 2021; Paper B §B.2)."""

    rho: float = 0.05
    """Neighbourhood radius ρ (its final value when a schedule ramps it)."""
    schedule: str = "constant"
    """Schedule of ρ: constant, linear, quadratic, power, cosine or feedback."""
    schedule_options: dict[str, Any] = field(default_factory=dict)
    """Options of the schedule (start, per, begin, end, power, fraction_kept, ...)."""
    diagnostics: bool = True
    """Log per-epoch landscape diagnostics (clean/perturbed loss and gradient norms, cosine, sharpness)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _strength("method.rho", self.rho, self.schedule, self.schedule_options)


@dataclass
class ASAMOptions(SAMOptions):
    """Options of ``asam`` (Kwon et al. 2021)."""

    rho: float = 0.5
    """Neighbourhood radius ρ in the scaled coordinates (Kwon et al.: 0.5 on CIFAR-10)."""
    eta: float = 0.01
    """η of the scaling T_w = |w| + η."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eta >= 0:
            raise ConfigError(f"method.eta must be ≥ 0, got {self.eta}")


@dataclass
class RWPOptions(InnerOptions):
    """Options of ``rwp`` (random weight perturbation, Paper B §B.2)."""

    sigma: float = 0.02
    """σ_train, the strength of the training noise (its final value under a schedule)."""
    schedule: str = "constant"
    """Schedule of σ_train: constant, linear, quadratic, power, cosine or feedback."""
    schedule_options: dict[str, Any] = field(default_factory=dict)
    """Options of the schedule (start, per, begin, end, power, fraction_kept, ...)."""
    noise: str = "additive_gaussian"
    """Training noise model (``analoglearn list noise``); the test-time model by default."""
    noise_options: dict[str, Any] = field(default_factory=dict)
    """Options of the noise model (e.g. scale: filter-max); its strength is σ_train."""
    samples: int = 1
    """K, noise draws per step."""
    mix: float = 1.0
    """λ in λ·E[L(w+ε)] + (1−λ)·L(w); λ < 1 adds a clean pass per step."""
    diagnostics: bool = False
    """Log per-epoch landscape diagnostics (adds a clean pass per step when mix = 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _strength("method.sigma", self.sigma, self.schedule, self.schedule_options)
        noise.build(self.noise, self.sigma, **self.noise_options)
        if self.samples < 1:
            raise ConfigError(f"method.samples must be ≥ 1, got {self.samples}")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"method.mix must be in [0, 1], got {self.mix}")


class Perturbed(Method):
    """A method whose optimiser step goes through a perturbation wrapper (SAM, ASAM or RWP).

    The wrapped *inner* method supplies the closure (DESIGN.md): backprop of the cross-entropy, or
    an energy-based estimator (noise-robust equilibrium propagation). The batch metrics ``loss``
    and ``correct`` come from the wrapper's first closure call: at the clean weights for SAM/ASAM
    and for RWP with a clean pass, at the first noisy draw otherwise.
    """

    def __init__(self, inner: Method, perturbation: Perturbation, strength_key: str) -> None:
        super().__init__(inner.model, inner.optimizer, inner.options, generator=inner.generator)
        self.inner, self.perturbation, self.strength_key = inner, perturbation, strength_key

    def train_step(self, x: torch.Tensor, y: torch.Tensor, progress: Progress) -> dict[str, float]:
        """One perturbed step; metrics also hold the strength in force (``rho`` or ``sigma``)."""
        strength = self.perturbation.current_strength(progress)
        record = self.inner.perturbed_step(self.perturbation, x, y, progress)  # type: ignore[attr-defined]
        record[self.strength_key] = strength
        return record

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The inner method's prediction (a relaxation from zero for an energy-based network)."""
        return self.inner.predict(x)

    def final_artifacts(self, x: torch.Tensor) -> dict[str, Any]:
        """The inner method's end-of-training files."""
        return self.inner.final_artifacts(x)

    def epoch_metrics(self) -> dict[str, float]:
        """The inner method's epoch metrics and the landscape diagnostics (when on)."""
        return {**self.inner.epoch_metrics(), **self.perturbation.epoch.summary()}

    def state_dict(self) -> dict[str, Any]:
        """Step counter, schedule state (feedback clock), RWP's generator state, the inner method's state."""
        return {"perturbation": self.perturbation.own_state_dict(), "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perturbation.load_own_state_dict(state["perturbation"])
        self.inner.load_state_dict(state.get("inner", {}))


@METHODS.register("sam", options=SAMOptions)
def sam(model: nn.Module, optimizer: torch.optim.Optimizer, options: SAMOptions, *,
        generator: torch.Generator) -> Method:
    """Sharpness-aware minimisation: step with ∇L(w + ρ·g/‖g‖)."""
    options = options or SAMOptions()
    rho = _strength("method.rho", options.rho, options.schedule, options.schedule_options)
    wrapper = SAM(optimizer, rho, model=model, diagnostics=options.diagnostics)
    return Perturbed(inner_method(model, optimizer, options, generator), wrapper, "rho")


@METHODS.register("asam", options=ASAMOptions)
def asam(model: nn.Module, optimizer: torch.optim.Optimizer, options: ASAMOptions, *,
         generator: torch.Generator) -> Method:
    """Adaptive SAM: ε = ρ·T²g/‖Tg‖ with T = |w| + η."""
    options = options or ASAMOptions()
    rho = _strength("method.rho", options.rho, options.schedule, options.schedule_options)
    wrapper = ASAM(optimizer, rho, model=model, eta=options.eta, diagnostics=options.diagnostics)
    return Perturbed(inner_method(model, optimizer, options, generator), wrapper, "rho")


@METHODS.register("rwp", options=RWPOptions)
def rwp(model: nn.Module, optimizer: torch.optim.Optimizer, options: RWPOptions, *,
        generator: torch.Generator) -> Method:
    """Random weight perturbation: minimise λ·E[L(w+ε)] + (1−λ)·L(w), ε the noise model at σ_train."""
    options = options or RWPOptions()
    sigma = _strength("method.sigma", options.sigma, options.schedule, options.schedule_options)
    model_noise = noise.build(options.noise, options.sigma, **options.noise_options)
    wrapper = RWP(optimizer, model_noise, sigma, model=model, samples=options.samples, mix=options.mix,
                  generator=generator, diagnostics=options.diagnostics)
    return Perturbed(inner_method(model, optimizer, options, generator), wrapper, "sigma")
