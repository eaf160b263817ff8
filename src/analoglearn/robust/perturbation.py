"""The common machinery of training-time perturbations (SAM, ASAM, RWP) around a torch optimiser.

A *perturbation* wraps any ``torch.optim.Optimizer`` and takes a *closure* (DESIGN.md): a callable
without arguments that fills ``.grad`` at the current weights and returns the loss. The wrapper zeroes
``.grad`` before each closure call, moves the weights in place under ``torch.no_grad`` and restores
them from a saved copy (bit-exact, no ``p.data`` swapping), then calls the base optimiser's ``step``
with the gradient it assembled. Because it only needs ``.grad``, the closure may be backprop or an
energy-based estimator (``analoglearn.energy``).

Strengths (ρ, σ_train) are numbers or :class:`~analoglearn.robust.schedules.Schedule` objects,
evaluated at the :class:`~analoglearn.method.Progress` passed to ``step``; without one, the clock is
the wrapper's own step counter and the schedule's ``total`` (in steps) must be set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..method import Progress
from .diagnostics import EpochDiagnostics, StepDiagnostics
from .schedules import Schedule, Strength, check_strength

Closure = Callable[[], "torch.Tensor | float"]


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


def call(closure: Closure) -> float:
    """Run a closure with gradients enabled; its loss as a float."""
    with torch.enable_grad():
        loss = closure()
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


class Perturbation:
    """Base class: holds the base optimiser, the strength (number or schedule) and the step counter.

    Args:
        base_optimizer: any torch optimiser whose ``step()`` uses ``.grad``.
        strength: ρ or σ_train, a number ≥ 0 or a schedule.
        model: the network, needed to keep BatchNorm statistics to one update per step (optional
            for SAM/ASAM, required by RWP which perturbs its layers).
        diagnostics: gather :class:`StepDiagnostics` each step (costs one gradient copy).
    """

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        strength: Strength,
        *,
        model: nn.Module | None = None,
        diagnostics: bool = False,
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            got = type(base_optimizer).__name__
            raise ConfigError(f"a perturbation wraps a torch.optim.Optimizer; got {got}.")
        self.base_optimizer = base_optimizer
        self.strength = check_strength(f"{type(self).__name__} strength", strength)
        self.model = model
        self.diagnostics = diagnostics
        self.steps = 0
        self.last: StepDiagnostics | None = None
        self.epoch = EpochDiagnostics()

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The base optimiser's parameter groups (so LR schedulers see the same learning rates)."""
        return self.base_optimizer.param_groups

    def params(self) -> list[torch.Tensor]:
        """Every parameter of the base optimiser."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero ``.grad`` of every parameter (the closure contract)."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def current_strength(self, progress: Progress | None = None) -> float:
        """ρ or σ_train at ``progress`` (or at the wrapper's own step counter)."""
        if not isinstance(self.strength, Schedule):
            return float(self.strength)
        if progress is None:
            if self.strength.total is None:
                raise ConfigError("a schedule used without training progress needs `total` (in steps).")
            total = self.strength.total
            progress = Progress(step=self.steps, epoch=self.steps, steps_per_epoch=1, total_steps=total)
        return self.strength(progress)

    def step(self, closure: Closure, progress: Progress | None = None) -> float:
        """One optimiser step: call ``closure`` around moved weights, then the base step; the loss."""
        raise NotImplementedError

    @property
    def needs_record(self) -> bool:
        """Whether steps must measure diagnostics (asked for, or read by a feedback schedule)."""
        return self.diagnostics or (isinstance(self.strength, Schedule) and self.strength.needs_feedback)

    def _finish(self, record: StepDiagnostics | None) -> None:
        """Base step, counter, schedule feedback and diagnostics bookkeeping."""
        self.base_optimizer.step()
        self.steps += 1
        self.last = record
        if record is not None:
            if isinstance(self.strength, Schedule):
                self.strength.observe(record.perturbed_grad_norm, record.grad_norm)
            if self.diagnostics:
                self.epoch.add(record)

    def own_state_dict(self) -> dict[str, Any]:
        """The wrapper's state without the base optimiser: step counter, schedule state and the
        current epoch's diagnostics sums."""
        sched = self.strength.state_dict() if isinstance(self.strength, Schedule) else {}
        return {"steps": self.steps, "schedule": sched, "diagnostics": self.epoch.state_dict()}

    def load_own_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`own_state_dict`."""
        self.steps = int(state["steps"])
        if "diagnostics" in state:
            self.epoch.load_state_dict(state["diagnostics"])
        if isinstance(self.strength, Schedule):
            self.strength.load_state_dict(state["schedule"])

    def state_dict(self) -> dict[str, Any]:
        """``{"base": base optimiser state, **own state}`` (tensors and primitives only)."""
        return {"base": self.base_optimizer.state_dict(), **self.own_state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, base optimiser included."""
        self.base_optimizer.load_state_dict(state["base"])
        self.load_own_state_dict(state)
