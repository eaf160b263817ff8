"""The common machinery of training-time perturbations (SAM, ASAM, RWP): a torch optimiser around another.

A *perturbation* is a ``torch.optim.Optimizer`` that wraps any base optimiser and takes a *closure*
(DESIGN.md): a callable without arguments that fills ``.grad`` at the current weights and returns the
loss. The wrapper zeroes ``.grad`` before each closure call, moves the weights in place under
``torch.no_grad`` and restores them from a saved copy (bit-exact, no ``p.data`` swapping), then calls
the base optimiser's ``step`` with the gradient it assembled. Because it only needs ``.grad``, the
closure may be backprop or an energy-based estimator (``analoglearn.energy``).

**Shared state.** ``wrapper.param_groups``, ``wrapper.state`` and ``wrapper.defaults`` *are* the base
optimiser's (the same objects, read through to the base at every access, so they stay shared even after
``base.load_state_dict`` rebinds them). A torch LR scheduler built on the wrapper (``StepLR``,
``CosineAnnealingLR``, ``OneCycleLR`` with its momentum/β₁ cycling, ``LambdaLR``, ...) therefore moves
the ``lr`` the base optimiser steps with; ``zero_grad`` and ``add_param_group`` go to the base.

**Mixed precision.** ``step(closure, progress, scaler)`` takes an optional ``torch.amp.GradScaler``;
the closure then backpropagates ``scaler.scale(loss)``, so every pass of one step has gradients S·∇L at
the same scale S. A scaler allows one ``unscale_`` per ``update()``, so the wrapper

1. divides an intermediate gradient (SAM's first pass) by S itself, after checking it is finite; on
   inf/NaN it takes no ascent step and no second pass, and hands that gradient to the scaler, which
   skips the base step and lowers S (S ← S·backoff), as for a plain optimiser;
2. sends the final gradient (SAM's second pass; RWP's combination, which is linear in S) through
   ``scaler.unscale_(base)``, the optional clipping to ``max_grad_norm``, ``scaler.step(base)`` (skipped
   on inf/NaN) and ``scaler.update()``. The caller does not call ``scaler.step``/``update`` itself.

A skipped step does not advance the wrapper's step counter (the clock of its schedule) and records
no diagnostics; ``skipped`` counts them. Without a scaler (fp32, or bf16 autocast) there is no
finiteness check and the step is exactly that of plain fp32.

Strengths (ρ, σ_train) are numbers or schedules of :mod:`analoglearn.schedule` (functions of the
optimiser steps taken, t ↦ x(t)), evaluated at the wrapper's own step counter; a schedule with
``observe`` (the feedback schedule) is told the clean and perturbed gradient norms after each step.

The closure may return a float, a 0-dim tensor or an :class:`~analoglearn.method.Outcome`;
``step`` returns what its first call returned (the clean call for SAM, ASAM and RWP with a clean pass).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..method import GradScaler
from .diagnostics import EpochDiagnostics, StepDiagnostics

Closure = Callable[[], Any]
"""A closure (DESIGN.md): fills ``.grad`` at the current weights, returns the loss (float, tensor or Outcome)."""
Strength = float | Callable[[int], float]
"""ρ or σ_train: a number, or a schedule t ↦ x(t) of the steps taken (:mod:`analoglearn.schedule`)."""


def check_strength(what: str, value: Strength) -> Strength:
    """A strength: a number ≥ 0 or a schedule (a callable of the step)."""
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{what} must be a number ≥ 0 or a schedule; got {value!r}.")
    return float(value)


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module | None) -> Iterator[None]:
    """BatchNorm running statistics left untouched inside the block (momentum 0, buffers restored).

    Used for every forward pass of a step after the first, so statistics are updated once per step
    (Paper B §B.2; davda54/sam updates them twice).
    """
    if model is None:
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, {k: b.clone() for k, b in m.named_buffers(recurse=False)}) for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, buffers) in zip(layers, saved):
                m.momentum = momentum
                for k, b in m.named_buffers(recurse=False):
                    b.copy_(buffers[k])


def call(closure: Closure) -> tuple[float, Any]:
    """Run a closure with gradients enabled: its loss as a float, and what it returned."""
    with torch.enable_grad():
        result = closure()
    loss = result.detach() if isinstance(result, torch.Tensor) else result
    return float(loss), result


def all_finite(grads: Iterable[torch.Tensor | None]) -> bool:
    """Whether every entry of every tensor is finite (``None`` entries skipped): the scaler's test."""
    return all(bool(torch.isfinite(g).all()) for g in grads if g is not None)


def active(scaler: GradScaler | None) -> GradScaler | None:
    """``scaler`` if it is enabled, else ``None`` (a disabled scaler is a no-op, as in torch)."""
    return scaler if scaler is not None and scaler.is_enabled() else None


class _Shared:
    """An attribute of the wrapper that is the base optimiser's attribute of the same name.

    ``torch.optim.Optimizer.__init__`` assigns ``defaults``, ``state`` and ``param_groups`` before the
    base is attached; those throwaway values are kept aside and dropped once it is.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        base = obj.__dict__.get("base_optimizer")
        return getattr(base, self.name) if base is not None else obj.__dict__[f"_init_{self.name}"]

    def __set__(self, obj: Any, value: Any) -> None:
        base = obj.__dict__.get("base_optimizer")
        if base is None:
            obj.__dict__[f"_init_{self.name}"] = value
        else:
            setattr(base, self.name, value)


class Perturbation(torch.optim.Optimizer):
    """Base class: a torch optimiser sharing ``base_optimizer``'s parameter groups, with the strength
    (number or schedule), the step counter and the base step (scaler and clipping included).

    Args:
        base_optimizer: any torch optimiser whose ``step()`` uses ``.grad`` (not another perturbation).
        strength: ρ or σ_train, a number ≥ 0 or a schedule.
        model: the network, needed to keep BatchNorm statistics to one update per step (optional
            for SAM/ASAM, required by RWP which perturbs its layers).
        diagnostics: gather :class:`StepDiagnostics` each step (costs one gradient copy).
        max_grad_norm: clip the final, unscaled gradient to ‖ĝ‖₂ ≤ this before the base step
            (``torch.nn.utils.clip_grad_norm_``); ``None``: no clipping.
    """

    param_groups = _Shared()
    state = _Shared()
    defaults = _Shared()

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        strength: Strength,
        *,
        model: nn.Module | None = None,
        diagnostics: bool = False,
        max_grad_norm: float | None = None,
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer) or isinstance(base_optimizer, Perturbation):
            got = type(base_optimizer).__name__
            raise ConfigError(f"a perturbation wraps a plain torch.optim.Optimizer (SGD, Adam, ...); got {got}.")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0 or None; got {max_grad_norm!r}.")
        super().__init__([{"params": []}], dict(base_optimizer.defaults))  # torch's hooks and bookkeeping
        for name in ("defaults", "state", "param_groups"):
            self.__dict__.pop(f"_init_{name}", None)
        self.base_optimizer = base_optimizer
        self.strength = check_strength(f"{type(self).__name__} strength", strength)
        self.model = model
        self.diagnostics = diagnostics
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.steps = 0
        self.skipped = 0
        self.last: StepDiagnostics | None = None
        self.epoch = EpochDiagnostics()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the base optimiser (so to the wrapper, which shares its groups)."""
        if "base_optimizer" not in self.__dict__:  # torch's __init__, before the base is attached
            super().add_param_group(param_group)
            return
        self.base_optimizer.add_param_group(param_group)

    def params(self) -> list[torch.Tensor]:
        """Every parameter of the base optimiser."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero ``.grad`` of every parameter (the closure contract)."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def current_strength(self) -> float:
        """ρ or σ_train at the wrapper's step counter (steps taken)."""
        return float(self.strength(self.steps)) if callable(self.strength) else float(self.strength)

    def step(self, closure: Closure, scaler: GradScaler | None = None) -> Any:  # type: ignore[override]
        """One optimiser step: call ``closure`` around moved weights, then the base step; returns what
        the first closure call returned.

        With ``scaler`` (module doc) the closure backpropagates ``scaler.scale(loss)`` and the step
        unscales, steps and updates the scaler itself.
        """
        raise NotImplementedError

    @property
    def needs_record(self) -> bool:
        """Whether steps must measure diagnostics (asked for, or read by a feedback schedule)."""
        return self.diagnostics or bool(getattr(self.strength, "needs_feedback", False))

    @torch.no_grad()
    def _unscale_in_place(self, scaler: GradScaler) -> bool:
        """An intermediate pass: ``.grad`` ← ``.grad``/S if every entry is finite (then True); else
        ``.grad`` is left scaled and False is returned."""
        grads = [p.grad for p in self.params() if p.grad is not None]
        if not all_finite(grads):
            return False
        scale = scaler.get_scale()
        for g in grads:
            g.div_(scale)
        return True

    def _unscale_final(self, scaler: GradScaler | None) -> bool:
        """The final gradient through ``scaler.unscale_`` (the step's one unscale); whether it is finite
        (always True without a scaler, which checks nothing)."""
        if scaler is None:
            return True
        finite = all_finite(p.grad for p in self.params())
        scaler.unscale_(self.base_optimizer)
        return finite

    def _finish(
        self, record: StepDiagnostics | None, scaler: GradScaler | None = None, finite: bool = True
    ) -> bool:
        """Clipping, the base step (through the scaler, which skips it on inf/NaN, then updates S),
        step counter, schedule feedback and diagnostics bookkeeping; whether the step was taken."""
        if self.max_grad_norm is not None and finite:
            torch.nn.utils.clip_grad_norm_(self.params(), self.max_grad_norm)
        if scaler is None:
            self.base_optimizer.step()
        else:
            scaler.step(self.base_optimizer)
            scaler.update()
        if not finite:
            self.skipped += 1
            self.last = None
            return False
        self.steps += 1
        self.last = record
        if record is not None:
            if hasattr(self.strength, "observe"):
                self.strength.observe(record.perturbed_grad_norm, record.grad_norm)
            if self.diagnostics:
                self.epoch.add(record)
        return True

    def own_state_dict(self) -> dict[str, Any]:
        """The wrapper's state without the base optimiser: step counter, skipped steps, schedule state
        and the current epoch's diagnostics sums (primitives only)."""
        sched = self.strength.state_dict() if hasattr(self.strength, "state_dict") else {}
        return {"steps": self.steps, "skipped": self.skipped, "schedule": sched,
                "diagnostics": self.epoch.state_dict()}

    def load_own_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`own_state_dict` (a state without ``skipped`` or ``diagnostics`` also loads)."""
        self.steps = int(state["steps"])
        self.skipped = int(state.get("skipped", 0))
        if "diagnostics" in state:
            self.epoch.load_state_dict(state["diagnostics"])
        if hasattr(self.strength, "load_state_dict"):
            self.strength.load_state_dict(state["schedule"])

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """``{"base": base optimiser state, **own state}`` (tensors and primitives only, so it loads with
        ``torch.load(weights_only=True)``)."""
        return {"base": self.base_optimizer.state_dict(), **self.own_state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore :meth:`state_dict`, base optimiser included (the shared groups follow it)."""
        self.base_optimizer.load_state_dict(state["base"])
        self.load_own_state_dict(state)
