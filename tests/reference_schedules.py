"""Reference for tests/test_schedule.py: the strength schedules as they were before analoglearn.schedule.

Frozen copy of the former ``analoglearn.robust.schedules`` (registry replaced by a dict, ``Progress``
defined here), kept so the one schedule module is checked bit for bit against what produced the
published numbers. Also :func:`schedule_factor`, the former learning-rate schedule of train.py.

Schedules of a perturbation strength (ρ of SAM/ASAM, σ_train of RWP).

Paper B (Jacobson et al., arXiv 2602.07320), §B.2 "dynamic perturbation schedule": the strength
ramps up during training; the best results use the quadratic ramp x(t) = x_final·(t/T)².
Every ramp here is

    x(τ) = x_start + (x_final − x_start)·shape(u),   u = clamp((τ − begin)/(end − begin), 0, 1),

with τ = t/T the fraction of training done: t = optimiser steps done and T = total steps
(``per='step'``), or t = epochs done and T = epochs (``per='epoch'``). Shapes: constant 1,
linear u, quadratic u², power u^p, cosine-increase (1 − cos πu)/2. ``total`` overrides T (in steps
or epochs) when the schedule is used without the training loop's :class:`~analoglearn.method.Progress`.

The ``feedback`` schedule (an analoglearn extension addressing the paper's "vanishing gradients"
finding) follows a ramp whose clock advances by one step only while the perturbed gradient keeps
its size: after each step, if ‖∇L(w+ε)‖ ≥ fraction·‖∇L(w)‖ the clock advances, otherwise the
strength holds. It therefore never exceeds the plain ramp at the same step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from analoglearn.errors import ConfigError
from analoglearn.registry import Registry

SCHEDULES: Registry[Any] = Registry("schedule")


@dataclass(frozen=True)
class Progress:
    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int


def schedule_factor(kind: str, lr_min: float, epoch: int, epochs: int, base: float) -> float:
    """The former train.schedule_factor: cosine, linear or constant learning rate at ``epoch``."""
    t = epoch / max(epochs, 1)
    if kind == "cosine":
        return lr_min + (base - lr_min) * (1 + math.cos(math.pi * t)) / 2
    if kind == "linear":
        return base + (lr_min - base) * t
    return base

S = TypeVar("S", bound=type)
SHAPES: dict[str, Callable[[float, float], float]] = {
    "constant": lambda u, p: 1.0,
    "linear": lambda u, p: u,
    "quadratic": lambda u, p: u * u,
    "power": lambda u, p: u**p,
    "cosine": lambda u, p: 0.5 * (1.0 - math.cos(math.pi * u)),
}


def _register(name: str, aliases: tuple[str, ...] = ()) -> Callable[[S], S]:
    def decorate(cls: S) -> S:
        def factory(options: Any = None, **fields: Any) -> Schedule:
            return options if options is not None else cls(**fields)

        summary = (cls.__doc__ or name).strip().splitlines()[0]
        SCHEDULES.register(name, aliases=aliases, options=cls, summary=summary)(factory)
        return cls

    return decorate


@dataclass
class Schedule:
    """A ramp x(τ) of a strength (see the module doc). Subclasses fix the shape."""

    shape: ClassVar[str] = "constant"
    needs_feedback: ClassVar[bool] = False
    """Whether the schedule reads gradient norms after each step (costs RWP a clean pass)."""

    final: float = 0.05
    """x_final: the value at the end of the ramp (ρ or σ_train)."""
    start: float = 0.0
    """x_start: the value before the ramp begins (ignored by ``constant``)."""
    per: str = "step"
    """Clock of the ramp: ``step`` or ``epoch``."""
    begin: float = 0.0
    """Fraction of training at which the ramp starts, in [0, 1]."""
    end: float = 1.0
    """Fraction of training at which the ramp reaches x_final, in (begin, 1]."""
    total: int | None = None
    """T in steps (or epochs): overrides the training loop's total when given."""
    power: float = 2.0
    """Exponent p of the ``power`` shape."""

    def __post_init__(self) -> None:
        if self.per not in ("step", "epoch"):
            raise ConfigError(f"schedule.per must be one of step, epoch; got {self.per!r}.")
        for what in ("final", "start"):
            value = getattr(self, what)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"schedule.{what} must be a strength ≥ 0; got {value!r}.")
        if not 0.0 <= self.begin < self.end <= 1.0:
            raise ConfigError(
                "schedule must start before it ends, with 0 ≤ begin < end ≤ 1; "
                f"got begin={self.begin}, end={self.end}."
            )
        if self.total is not None and self.total < 1:
            raise ConfigError(f"schedule.total must be ≥ 1 or null; got {self.total!r}.")
        if not self.power > 0:
            raise ConfigError(f"schedule.power must be > 0; got {self.power!r}.")

    def fraction(self, progress: Progress) -> float:
        """τ = t/T for this schedule's clock."""
        if self.per == "step":
            t, total = progress.step, progress.total_steps
        else:
            t = progress.epoch
            total = max(1, math.ceil(progress.total_steps / max(progress.steps_per_epoch, 1)))
        return t / (self.total or max(total, 1))

    def at(self, tau: float) -> float:
        """x(τ) for a fraction τ of training (τ ≥ 1 gives x_final)."""
        if self.shape == "constant":
            return float(self.final)
        u = min(max((tau - self.begin) / (self.end - self.begin), 0.0), 1.0)
        return self.start + (self.final - self.start) * SHAPES[self.shape](u, self.power)

    def __call__(self, progress: Progress) -> float:
        """The strength at ``progress``."""
        return self.at(self.fraction(progress))

    def observe(self, perturbed_grad_norm: float, clean_grad_norm: float) -> None:
        """Feedback after a step (ignored by open-loop schedules)."""

    def state_dict(self) -> dict[str, Any]:
        """Mutable state (none for open-loop schedules)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@_register("constant")
@dataclass
class Constant(Schedule):
    """x(t) = x_final throughout training."""

    shape: ClassVar[str] = "constant"


@_register("linear")
@dataclass
class Linear(Schedule):
    """x(t) = x_start + (x_final − x_start)·u (linear ramp)."""

    shape: ClassVar[str] = "linear"


@_register("quadratic")
@dataclass
class Quadratic(Schedule):
    """x(t) = x_start + (x_final − x_start)·u², i.e. x_final·(t/T)² by default (Paper B's best)."""

    shape: ClassVar[str] = "quadratic"


@_register("power")
@dataclass
class Power(Schedule):
    """x(t) = x_start + (x_final − x_start)·u^p."""

    shape: ClassVar[str] = "power"


@_register("cosine", aliases=("cosine-increase", "cosine_increase"))
@dataclass
class CosineIncrease(Schedule):
    """x(t) = x_start + (x_final − x_start)·(1 − cos πu)/2 (a smooth increase)."""

    shape: ClassVar[str] = "cosine"


@_register("feedback")
@dataclass
class Feedback(Schedule):
    """A ramp that advances only while ‖∇L(w+ε)‖ ≥ fraction·‖∇L(w)‖ (module doc); per step only."""

    needs_feedback: ClassVar[bool] = True

    ramp: str = "quadratic"
    """Shape of the underlying ramp: linear, quadratic, power or cosine."""
    fraction_kept: float = 0.5
    """The ramp advances while the perturbed gradient keeps at least this fraction of the clean one."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ramp not in ("linear", "quadratic", "power", "cosine"):
            valid = "linear, quadratic, power, cosine"
            raise ConfigError(f"feedback.ramp must be one of {valid}; got {self.ramp!r}.")
        if self.per != "step":
            raise ConfigError("the feedback schedule advances per step; set per: step.")
        if not 0 < self.fraction_kept <= 1:
            raise ConfigError(f"feedback.fraction_kept must be in (0, 1]; got {self.fraction_kept!r}.")
        self.clock = 0

    @property
    def shape(self) -> str:  # type: ignore[override]
        return self.ramp

    def fraction(self, progress: Progress) -> float:
        return self.clock / (self.total or max(progress.total_steps, 1))

    def observe(self, perturbed_grad_norm: float, clean_grad_norm: float) -> None:
        if perturbed_grad_norm >= self.fraction_kept * clean_grad_norm:
            self.clock += 1

    def state_dict(self) -> dict[str, Any]:
        return {"clock": self.clock}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock = int(state["clock"])


Strength = float | Schedule


def build(name: str, final: float, **options: Any) -> Schedule:
    """The schedule registered as ``name`` ramping to ``final``; unknown options → ConfigError."""
    entry = SCHEDULES.get(name)
    valid = [f.name for f in dataclasses.fields(entry.options) if f.name != "final"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} of schedule {entry.name!r}; valid: {', '.join(valid)}."
        )
    return entry.options(final=final, **options)


def check_strength(what: str, value: Strength) -> Strength:
    """Validate a strength: a number ≥ 0 or a :class:`Schedule`."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{what} must be a number ≥ 0 or a schedule; got {value!r}.")
    return float(value)
