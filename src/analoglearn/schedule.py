"""Schedules: a schedule is a function of the number t of optimiser steps done (0-based) → value.

One vocabulary for the learning rate and for perturbation strengths (ρ of SAM/ASAM, σ_train of
RWP; Paper B, arXiv 2602.07320, §B.2). Every ramp is

    x(t) = start + (final − start)·shape(u),   u = clamp((τ − begin)/(end − begin), 0, 1),

with τ the fraction of training done: τ = t/T (per step), or τ = ⌊t/S⌋/⌈T/S⌉ (per epoch: epochs
done over epochs, S steps per epoch). Shapes: constant (x = final), linear u, quadratic u²,
power u^p, cosine (1 − cos πu)/2. Schedules are small dataclasses: picklable, readable reprs,
float values. Only :func:`feedback` has state (``needs_feedback``; the others lack the attribute).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

Schedule = Callable[[int], float]
SHAPES: dict[str, Callable[[float, float], float]] = {
    "constant": lambda u, p: 1.0,
    "linear": lambda u, p: u,
    "quadratic": lambda u, p: u * u,
    "power": lambda u, p: u**p,
    "cosine": lambda u, p: 0.5 * (1.0 - math.cos(math.pi * u)),
}
NAMES: dict[str, str] = {
    "constant": "x(t) = final throughout training.",
    "linear": "x(t) = start + (final − start)·u (linear ramp).",
    "quadratic": "x(t) = start + (final − start)·u², i.e. final·(t/T)² by default (Paper B's best).",
    "power": "x(t) = start + (final − start)·u^p.",
    "cosine": "x(t) = start + (final − start)·(1 − cos πu)/2 (a smooth increase).",
    "feedback": "A ramp that advances only while ‖∇L(w+ε)‖ ≥ fraction_kept·‖∇L(w)‖; per step only.",
}
ALIASES = {"cosine-increase": "cosine", "cosine_increase": "cosine"}
_RAMP_OPTIONS = ("start", "per", "begin", "end", "total", "power")
OPTIONS: dict[str, tuple[str, ...]] = {n: _RAMP_OPTIONS for n in NAMES} | {
    "feedback": (*_RAMP_OPTIONS, "ramp", "fraction_kept")
}


@dataclass(frozen=True)
class Constant:
    """x(t) = value."""

    value: float

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class Ramp:
    """x(t) = start + (final − start)·shape(u) (module doc); see :func:`ramp`."""

    start: float
    final: float
    total_steps: int
    shape: str = "linear"
    begin: float = 0.0
    end: float = 1.0
    power: float = 2.0
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(f"ramp shape must be one of {', '.join(SHAPES)}; got {self.shape!r}.")
        if not 0.0 <= self.begin < self.end <= 1.0:
            raise ConfigError("schedule must start before it ends, with 0 ≤ begin < end ≤ 1; "
                              f"got begin={self.begin}, end={self.end}.")
        if not self.power > 0:
            raise ConfigError(f"schedule.power must be > 0; got {self.power!r}.")
        if self.total_steps < 1 or (self.steps_per_epoch is not None and self.steps_per_epoch < 1):
            raise ConfigError(f"ramp total_steps and steps_per_epoch must be ≥ 1; got {self}.")

    def __call__(self, step: int) -> float:
        if self.shape == "constant":
            return float(self.final)
        if self.steps_per_epoch is None:
            tau = step / self.total_steps
        else:
            tau = (step // self.steps_per_epoch) / math.ceil(self.total_steps / self.steps_per_epoch)
        u = min(max((tau - self.begin) / (self.end - self.begin), 0.0), 1.0)
        return float(self.start + (self.final - self.start) * SHAPES[self.shape](u, self.power))


@dataclass(frozen=True)
class LearningRate:
    """Stepped per epoch, e = ⌊t/S⌋ of E epochs: constant base; linear base + (lr_min − base)·e/E;
    cosine lr_min + (base − lr_min)·(1 + cos(π·e/E))/2 — the cosine ramp from base to lr_min
    (start + (final − start)·(1 − cos πu)/2), in the equal form that keeps CosineAnnealingLR's
    rounding. e is not clamped: e > E continues the formula (the training loop never gets there)."""

    kind: str
    base: float
    lr_min: float
    epochs: int
    steps_per_epoch: int

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "linear", "cosine"):
            raise ConfigError(f"learning-rate schedule must be one of constant, cosine, linear; got {self.kind!r}.")
        if self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be ≥ 1; got {self.steps_per_epoch!r}.")

    def __call__(self, step: int) -> float:
        t = (step // self.steps_per_epoch) / max(self.epochs, 1)
        if self.kind == "cosine":
            return float(self.lr_min + (self.base - self.lr_min) * (1 + math.cos(math.pi * t)) / 2)
        if self.kind == "linear":
            return float(self.base + (self.lr_min - self.base) * t)
        return float(self.base)


@dataclass
class Feedback:
    """x = ramp(c), where the clock c advances by one after a step only while
    ‖∇L(w+ε)‖ ≥ fraction_kept·‖∇L(w)‖ (:meth:`observe`); the step passed in is ignored."""

    ramp: Schedule
    fraction_kept: float = 0.5
    clock: int = 0
    needs_feedback = True  # class attribute: the caller must report gradient norms after each step

    def __call__(self, step: int) -> float:
        return self.ramp(self.clock)

    def observe(self, perturbed_grad_norm: float, clean_grad_norm: float) -> None:
        if perturbed_grad_norm >= self.fraction_kept * clean_grad_norm:
            self.clock += 1

    def state_dict(self) -> dict[str, Any]:
        return {"clock": self.clock}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock = int(state["clock"])


def constant(value: float) -> Constant:
    """x(t) = value."""
    return Constant(value)


def ramp(start: float, final: float, total_steps: int, *, shape: str = "linear", begin: float = 0.0,
         end: float = 1.0, power: float = 2.0, steps_per_epoch: int | None = None) -> Ramp:
    """x(t) = start + (final − start)·shape(u), u = clamp((τ − begin)/(end − begin), 0, 1), τ = t/T;
    with ``steps_per_epoch`` S, τ = ⌊t/S⌋/⌈T/S⌉. Shapes: constant (x = final), linear, quadratic,
    power u^p, cosine (1 − cos πu)/2."""
    return Ramp(start, final, total_steps, shape, begin, end, power, steps_per_epoch)


def learning_rate(kind: str, base: float, lr_min: float, epochs: int, steps_per_epoch: int) -> LearningRate:
    """The learning rate at step t (formulas in :class:`LearningRate`), as train.py's schedule_factor."""
    return LearningRate(kind, base, lr_min, epochs, steps_per_epoch)


def feedback(ramp_schedule: Schedule, fraction_kept: float = 0.5) -> Feedback:
    """x = ramp_schedule(c), the clock c advancing only while the perturbed gradient keeps its size."""
    if not 0 < fraction_kept <= 1:
        raise ConfigError(f"feedback.fraction_kept must be in (0, 1]; got {fraction_kept!r}.")
    return Feedback(ramp_schedule, fraction_kept)


def canonical(name: str) -> str:
    """The canonical schedule name of ``name`` (case-insensitive, aliases resolved); unknown → ConfigError."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in NAMES:
        hint = difflib.get_close_matches(key, [*NAMES, *ALIASES], n=1)
        guess = f" Did you mean {ALIASES.get(hint[0], hint[0])!r}?" if hint else ""
        raise ConfigError(f"unknown schedule {name!r}.{guess} Valid schedules: {', '.join(NAMES)}.")
    return key


def from_config(name: str, final: float, total_steps: int, steps_per_epoch: int, **options: Any) -> Schedule:
    """The schedule ``name`` (:data:`NAMES`, :data:`ALIASES`) ramping to ``final``, with options
    :data:`OPTIONS` (``total`` overrides T, in steps or epochs per ``per``); invalid → ConfigError."""
    key = canonical(name)
    unknown = sorted(set(options) - set(OPTIONS[key]))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} of schedule {key!r}; valid: {', '.join(OPTIONS[key])}.")
    o = {"start": 0.0, "per": "step", "begin": 0.0, "end": 1.0, "total": None, "power": 2.0,
         "ramp": "quadratic", "fraction_kept": 0.5} | options
    if o["per"] not in ("step", "epoch"):
        raise ConfigError(f"schedule.per must be one of step, epoch; got {o['per']!r}.")
    for what, value in (("final", final), ("start", o["start"])):
        if not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"schedule.{what} must be a strength ≥ 0; got {value!r}.")
    if not 0.0 <= o["begin"] < o["end"] <= 1.0:
        raise ConfigError("schedule must start before it ends, with 0 ≤ begin < end ≤ 1; "
                          f"got begin={o['begin']}, end={o['end']}.")
    if o["total"] is not None and o["total"] < 1:
        raise ConfigError(f"schedule.total must be ≥ 1 or null; got {o['total']!r}.")
    if not o["power"] > 0:
        raise ConfigError(f"schedule.power must be > 0; got {o['power']!r}.")
    spe = max(steps_per_epoch, 1) if o["per"] == "epoch" else None
    steps = o["total"] * (spe or 1) if o["total"] else max(total_steps, 1)
    shape = o["ramp"] if key == "feedback" else key
    if key == "feedback" and shape not in ("linear", "quadratic", "power", "cosine"):
        raise ConfigError(f"feedback.ramp must be one of linear, quadratic, power, cosine; got {shape!r}.")
    if key == "feedback" and spe is not None:
        raise ConfigError("the feedback schedule advances per step; set per: step.")
    x = ramp(o["start"], final, steps, shape=shape, begin=o["begin"], end=o["end"], power=o["power"],
             steps_per_epoch=spe)
    return feedback(x, o["fraction_kept"]) if key == "feedback" else x
