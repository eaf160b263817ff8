"""Schedules: functions of the number t of optimiser steps done (0-based) → value, each with its formula
in its docstring (:class:`constant`, :class:`ramp`, :class:`feedback`, :class:`learning_rate`).

One vocabulary for the learning rate and for perturbation strengths (ρ of SAM/ASAM, σ_train of RWP;
Paper B, arXiv 2602.07320, §B.2); :func:`from_config` builds the named ones (:data:`NAMES`). A schedule
is built by calling its (lowercase) dataclass like a function: picklable, readable reprs, float values.
Only :class:`feedback` has state (and the attribute ``needs_feedback``, which the others lack).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
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
OPTIONS = {n: _RAMP_OPTIONS for n in NAMES} | {"feedback": (*_RAMP_OPTIONS, "ramp", "fraction_kept")}


@dataclass(frozen=True)
class constant:  # noqa: N801  (a schedule is built like a function, optax-style)
    """x(t) = value."""

    value: float

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class ramp:  # noqa: N801
    """x(t) = start + (final − start)·shape(u),  u = clamp((τ − begin)/(end − begin), 0, 1),  τ the fraction
    of training done: t/T, or with ``steps_per_epoch`` S the epochs done over the epochs, ⌊t/S⌋/⌈T/S⌉.
    Shapes: constant (x = final), linear u, quadratic u², power u^p, cosine (1 − cos πu)/2."""

    start: float
    final: float
    total_steps: int
    _: KW_ONLY
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
class learning_rate:  # noqa: N801
    """train.py's learning rate, stepped per epoch, e = ⌊t/S⌋ of E epochs: constant base; linear
    base + (lr_min − base)·e/E; cosine lr_min + (base − lr_min)·(1 + cos(π·e/E))/2 — the cosine ramp
    from base to lr_min (start + (final − start)·(1 − cos πu)/2), in the equal form that keeps
    CosineAnnealingLR's rounding. e is not clamped: e > E continues the formula (training never gets there)."""

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
class feedback:  # noqa: N801
    """x = ramp(c), where the clock c advances by one after a step only while
    ‖∇L(w+ε)‖ ≥ fraction_kept·‖∇L(w)‖ (:meth:`observe`); the step passed in is ignored."""

    ramp: Schedule
    fraction_kept: float = 0.5
    clock: int = 0
    needs_feedback = True  # class attribute: the caller must report gradient norms after each step

    def __post_init__(self) -> None:
        if not 0 < self.fraction_kept <= 1:
            raise ConfigError(f"feedback.fraction_kept must be in (0, 1]; got {self.fraction_kept!r}.")

    def __call__(self, step: int) -> float:
        return self.ramp(self.clock)

    def observe(self, perturbed_grad_norm: float, clean_grad_norm: float) -> None:
        if perturbed_grad_norm >= self.fraction_kept * clean_grad_norm:
            self.clock += 1

    def state_dict(self) -> dict[str, Any]:
        return {"clock": self.clock}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock = int(state["clock"])


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
    if o["total"] is not None and o["total"] < 1:
        raise ConfigError(f"schedule.total must be ≥ 1 or null; got {o['total']!r}.")
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
