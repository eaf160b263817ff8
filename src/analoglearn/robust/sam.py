"""Sharpness-aware minimisation (SAM) and its adaptive, scale-invariant variant (ASAM).

SAM (Foret et al., ICLR 2021), as used by Paper B (Jacobson et al., arXiv 2602.07320, §B.2):

    ε* = ρ·g/‖g‖₂,   g = ∇L(w);   w ← base_step(w, ∇L(w + ε*))

ASAM (Kwon et al., ICML 2021) measures the neighbourhood in the scaled coordinates T_w⁻¹w with
T_w = diag(|w| + η):

    ε* = ρ·T_w²·g/‖T_w·g‖₂.

As in Kwon et al.'s reference code, when the model is given only parameters whose name ends in
``weight`` are scaled (T = 1 for biases); without a model every parameter is scaled.

Two passes per step; BatchNorm running statistics are updated on the first pass only. ``step`` is the
explicit ``first_step``/``second_step`` pair, which maps one-to-one onto the paper (and davda54/sam)::

    loss = closure()            # fills .grad at w
    sam.first_step()            # w ← w + ε*, .grad zeroed
    closure()                   # fills .grad at w + ε*
    sam.second_step()           # w restored bit-exact, base optimiser steps

Under a ``torch.amp.GradScaler`` (``scaler=`` to ``step``, or to both explicit calls) the first pass is
divided by S here, the second goes through the scaler (:mod:`~analoglearn.robust.perturbation`): ε* is
scale-free, but the inf/NaN check and the diagnostics need the unscaled g. A non-finite first pass
skips the step in ``first_step``; ``step`` then makes no second call, ``second_step`` discards its gradient.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .diagnostics import global_norm, measure
from .perturbation import Closure, GradScaler, Perturbation, Strength, active, call, frozen_batchnorm

EPS = 1e-12


class SAM(Perturbation):
    """SAM around ``base_optimizer`` with radius ``rho`` ≥ 0, a number or a schedule (Foret et al. use
    0.05 on CIFAR-10); ``adaptive``: ASAM's scaling T_w = |w| + η with ``eta`` η (Kwon et al.: 0.01).
    ``model`` also tells ASAM weights from biases; the other arguments are :class:`Perturbation`'s."""

    def __init__(self, base_optimizer: torch.optim.Optimizer, rho: Strength = 0.05, *, model: nn.Module | None = None,
                 adaptive: bool = False, eta: float = 0.0, diagnostics: bool = False,
                 max_grad_norm: float | None = None) -> None:
        super().__init__(base_optimizer, rho, model=model, diagnostics=diagnostics, max_grad_norm=max_grad_norm)
        if not eta >= 0:
            raise ConfigError(f"ASAM eta must be ≥ 0; got {eta!r}.")
        self.adaptive, self.eta = adaptive, float(eta)
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._clean: list[torch.Tensor | None] = []
        self._params: list[torch.Tensor] = []
        named = model.named_parameters() if model is not None else ()
        self._unscaled = {id(p) for n, p in named if not n.endswith("weight")}
        self._clean_loss, self._rho = float("nan"), 0.0
        self._bn = contextlib.ExitStack()
        self._skip_second = False

    def _scaled(self, p: torch.Tensor, power: int) -> torch.Tensor:
        """T_w^power ⊙ ∇L for ASAM, ∇L itself (no copy) for SAM and for ASAM's unscaled parameters."""
        if not self.adaptive or id(p) in self._unscaled:
            return p.grad
        return p.grad * (p.detach().abs() + self.eta) ** power

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True, loss: float = float("nan"), scaler: GradScaler | None = None) -> float:
        """Move to w + ε* using the gradient in ``.grad`` (S·∇L(w) under ``scaler``: divided by S here, or
        if not finite the step is skipped now and the next :meth:`second_step` only discards its
        gradient); freeze BatchNorm statistics. Returns ρ."""
        self._rho = self.current_strength()
        scaler = active(scaler)
        if scaler is not None and not self._unscale_in_place(scaler):
            self._finish(None, scaler, finite=self._unscale_final(scaler))
            self._skip_second = True
        else:
            params = [p for p in self.params() if p.grad is not None]
            factor = self._rho / (global_norm([self._scaled(p, 1) for p in params]) + EPS)
            self._params, self._clean_loss = params, loss
            self._clean = [p.grad.detach().clone() for p in params] if self.needs_record else []
            self._saved = [(p, p.detach().clone()) for p in params]
            for p in params:
                p.add_(self._scaled(p, 2), alpha=factor)
            self._bn.enter_context(frozen_batchnorm(self.model))
        if zero_grad:
            self.zero_grad()
        return self._rho

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, loss: float = float("nan"),
                    scaler: GradScaler | None = None) -> None:
        """Restore w from its saved copy and step the base optimiser with ∇L(w + ε*) in ``.grad``
        (through ``scaler``: unscale, clip, step, update, when given)."""
        if self._skip_second:
            self._skip_second = False
        else:
            if not self._saved:
                raise RuntimeError("SAM.second_step called without first_step")
            self._restore()
            finite = self._unscale_final(active(scaler))
            record = None
            if self.needs_record and finite:
                record = measure(self._clean_loss, loss, self._clean, [p.grad for p in self._params], self._rho)
            self._clean = []
            self._finish(record, active(scaler), finite)
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Closure, scaler: GradScaler | None = None) -> Any:  # type: ignore[override]
        """One SAM step: two closure calls (one if a scaled first pass is not finite); returns what the
        clean call (at w) returned."""
        self.zero_grad()
        loss, result = call(closure)
        self.first_step(zero_grad=True, loss=loss, scaler=scaler)
        perturbed = float("nan")
        if not self._skip_second:
            try:
                perturbed, _ = call(closure)
            except BaseException:
                self._restore()
                raise
        self.second_step(loss=perturbed, scaler=scaler)
        return result

    @torch.no_grad()
    def _restore(self) -> None:
        for p, clean in self._saved:
            p.copy_(clean)
        self._saved = []
        self._bn.close()


class ASAM(SAM):
    """Adaptive SAM (Kwon et al., ICML 2021): SAM with T_w = |w| + η; ρ default 0.5, η 0.01."""

    def __init__(self, base_optimizer: torch.optim.Optimizer, rho: Strength = 0.5, *, model: nn.Module | None = None,
                 eta: float = 0.01, diagnostics: bool = False, max_grad_norm: float | None = None) -> None:
        super().__init__(base_optimizer, rho, model=model, adaptive=True, eta=eta, diagnostics=diagnostics,
                         max_grad_norm=max_grad_norm)
