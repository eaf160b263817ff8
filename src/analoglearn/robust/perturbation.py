"""The common machinery of training-time perturbations (SAM, ASAM, RWP): a torch optimiser around another.

A *perturbation* wraps any base optimiser and takes a *closure* (DESIGN.md): a callable without
arguments that fills ``.grad`` at the current weights (backprop or an energy-based estimator) and returns
the loss (a float, a 0-dim tensor or an :class:`~analoglearn.method.Outcome`). It zeroes ``.grad`` before
each closure call, moves the weights in place under ``torch.no_grad``, restores them from a saved copy
(bit-exact, no ``p.data`` swapping) and calls the base ``step`` with the gradient it assembled.
``step(closure, scaler=None)`` returns what its first closure call returned (the clean call for SAM,
ASAM and RWP with a clean pass).

**Shared state.** ``param_groups``, ``state`` and ``defaults`` *are* the base optimiser's (read through
at every access, so they stay shared after ``base.load_state_dict`` rebinds them): a torch LR scheduler
built on the wrapper (``StepLR``, ``CosineAnnealingLR``, ``OneCycleLR`` with its momentum/β₁ cycling,
``LambdaLR``, ...) moves the ``lr`` the base steps with; ``zero_grad`` and ``add_param_group`` go to the base.

**Mixed precision.** With a ``torch.amp.GradScaler`` the closure backpropagates ``scaler.scale(loss)``,
so every pass of one step has gradients S·∇L at one scale S. A scaler allows one ``unscale_`` per
``update()``, so the wrapper (1) divides an intermediate gradient (SAM's first pass) by S itself after
checking it is finite — on inf/NaN it takes no ascent step and no second pass, and hands that gradient
to the scaler, which skips the base step and lowers S (S ← S·backoff), as for a plain optimiser; (2)
sends the final gradient (SAM's second pass; RWP's combination, linear in S) through
``scaler.unscale_(base)``, the optional clipping to ``max_grad_norm``, ``scaler.step(base)`` (skipped on
inf/NaN) and ``scaler.update()``; the caller does not call ``scaler.step``/``update`` itself.

A skipped step does not advance the step counter (the schedule's clock) and records no diagnostics;
``skipped`` counts them. Without a scaler (fp32, or bf16 autocast) there is no finiteness check and the
step is exactly that of plain fp32. Strengths (ρ, σ_train) are numbers or schedules t ↦ x(t) of
:mod:`analoglearn.schedule`, evaluated at the step counter; a schedule with ``observe`` (feedback) is
told the clean and perturbed gradient norms after each step.
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
    """BatchNorm running statistics left untouched inside the block (momentum 0, buffers restored), for
    every pass of a step after the first: they update once per step (Paper B §B.2; davda54/sam: twice)."""
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
    """An attribute of the wrapper that is the base optimiser's attribute of the same name (torch's
    ``Optimizer.__init__`` assigns it before the base is attached: that throwaway value is kept aside)."""

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
    """Base class: a torch optimiser sharing ``base_optimizer``'s parameter groups, with the strength,
    the step counter and the base step (scaler and clipping included).

    Args (shared by SAM, ASAM and RWP):
        base_optimizer: any torch optimiser whose ``step()`` uses ``.grad`` (not another perturbation).
        strength: ρ or σ_train, a number ≥ 0 or a schedule.
        model: the network, needed to keep BatchNorm statistics to one update per step (optional
            for SAM/ASAM, required by RWP which perturbs its layers).
        diagnostics: gather :class:`StepDiagnostics` each step (costs one gradient copy; RWP: a clean pass).
        max_grad_norm: clip the final, unscaled gradient to ‖ĝ‖₂ ≤ this before the base step
            (``torch.nn.utils.clip_grad_norm_``); ``None``: no clipping.
    """

    param_groups = _Shared()
    state = _Shared()
    defaults = _Shared()

    def __init__(self, base_optimizer: torch.optim.Optimizer, strength: Strength, *, model: nn.Module | None = None,
                 diagnostics: bool = False, max_grad_norm: float | None = None) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer) or isinstance(base_optimizer, Perturbation):
            got = type(base_optimizer).__name__
            raise ConfigError(f"a perturbation wraps a plain torch.optim.Optimizer (SGD, Adam, ...); got {got}.")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0 or None; got {max_grad_norm!r}.")
        super().__init__([{"params": []}], dict(base_optimizer.defaults))  # torch's hooks and bookkeeping
        for name in ("defaults", "state", "param_groups"):
            self.__dict__.pop(f"_init_{name}", None)
        self.base_optimizer, self.model, self.diagnostics = base_optimizer, model, diagnostics
        self.strength = check_strength(f"{type(self).__name__} strength", strength)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.steps, self.skipped = 0, 0
        self.last: StepDiagnostics | None = None
        self.epoch = EpochDiagnostics()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the base optimiser (so to the wrapper, which shares its groups)."""
        if "base_optimizer" not in self.__dict__:  # torch's __init__, before the base is attached
            return super().add_param_group(param_group)
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

    def _finish(self, record: StepDiagnostics | None, scaler: GradScaler | None = None, finite: bool = True) -> None:
        """Clipping, the base step (through the scaler, which skips it on inf/NaN, then updates S),
        step counter (or ``skipped``), schedule feedback and diagnostics bookkeeping."""
        if self.max_grad_norm is not None and finite:
            torch.nn.utils.clip_grad_norm_(self.params(), self.max_grad_norm)
        if scaler is None:
            self.base_optimizer.step()
        else:
            scaler.step(self.base_optimizer)
            scaler.update()
        self.steps += int(finite)
        self.skipped += int(not finite)
        self.last = record if finite else None
        if self.last is not None:
            if hasattr(self.strength, "observe"):
                self.strength.observe(self.last.perturbed_grad_norm, self.last.grad_norm)
            if self.diagnostics:
                self.epoch.add(self.last)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """``{"base": base optimiser state}`` plus the wrapper's own: step counter, skipped steps, schedule
        state, the current epoch's diagnostics sums (tensors and primitives only, for ``weights_only``)."""
        sched = self.strength.state_dict() if hasattr(self.strength, "state_dict") else {}
        return {"base": self.base_optimizer.state_dict(), "steps": self.steps, "skipped": self.skipped,
                "schedule": sched, "diagnostics": self.epoch.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore :meth:`state_dict` (the shared groups follow the base; without ``base`` only the
        wrapper's own state loads; older states without ``skipped`` or ``diagnostics`` also load)."""
        if "base" in state:
            self.base_optimizer.load_state_dict(state["base"])
        self.steps = int(state["steps"])
        self.skipped = int(state.get("skipped", 0))
        if "diagnostics" in state:
            self.epoch.load_state_dict(state["diagnostics"])
        if hasattr(self.strength, "load_state_dict"):
            self.strength.load_state_dict(state["schedule"])
