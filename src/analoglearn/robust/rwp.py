"""Random weight perturbation (RWP): train the clean weights on the loss under weight noise.

Paper B (Jacobson et al., arXiv 2602.07320), §B.2: minimise

    J(w) = λ·E_ε[L(w + ε)] + (1 − λ)·L(w),

ε drawn from the test-time corruption model at strength σ_train. The step uses

    ĝ = λ·(1/K)·Σ_k ∇L(w + ε_k) + (1 − λ)·∇L(w),   ε_k i.i.d.,

the gradients at the perturbed points updating the clean w (each draw is applied in place with
:func:`analoglearn.noise.perturbed` and restored bit-exact). Cost per step: K closure calls, plus one
for the clean gradient when λ < 1, when diagnostics are on, or for the feedback schedule. λ = 1,
K = 1 is a one-pass method (≈ the cost of plain SGD). Over-regularised RWP (σ_train > σ_test) is
the paper's best setting for noise-robust generalisation.

Under a ``torch.amp.GradScaler`` ĝ is linear in the passes' S·∇L, so they are combined scaled and ĝ
goes once through the scaler (:mod:`~analoglearn.robust.perturbation`); the diagnostics use copies
divided by S. A non-finite clean pass skips the step before any noisy pass, as SAM's first pass does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..noise import NoiseModel, perturbed
from .diagnostics import Grads, measure
from .perturbation import Closure, GradScaler, Perturbation, Strength, active, all_finite, call, frozen_batchnorm


class RWP(Perturbation):
    """RWP around ``base_optimizer``: ``noise`` is the corruption model of ``model``'s layers (its own
    strength replaced by ``sigma`` σ_train, a number or a schedule, at each step; ``None`` keeps it),
    ``samples`` K draws per step, ``mix`` λ ∈ [0, 1] the weight of the perturbed loss, ``generator`` the
    source of the draws (``None``: torch's global one); the other arguments are :class:`Perturbation`'s."""

    def __init__(self, base_optimizer: torch.optim.Optimizer, noise: NoiseModel, sigma: Strength | None = None, *,
                 model: nn.Module, samples: int = 1, mix: float = 1.0, generator: torch.Generator | None = None,
                 diagnostics: bool = False, max_grad_norm: float | None = None) -> None:
        strength = noise.strength if sigma is None else sigma
        super().__init__(base_optimizer, strength, model=model, diagnostics=diagnostics, max_grad_norm=max_grad_norm)
        if not isinstance(model, nn.Module):
            raise ConfigError("RWP needs the model whose weights it perturbs (model=...).")
        if int(samples) != samples or samples < 1:
            raise ConfigError(f"RWP samples must be an integer ≥ 1; got {samples!r}.")
        if not 0.0 <= mix <= 1.0:
            raise ConfigError(f"RWP mix λ must be in [0, 1]; got {mix!r}.")
        self.noise, self.samples, self.mix, self.generator = noise, int(samples), float(mix), generator
        self.last_objective = float("nan")
        if not noise.select(model):
            raise ConfigError(f"noise model {noise.name!r} selects no parameter of {type(model).__name__}.")

    @property
    def clean_pass(self) -> bool:
        """Whether a step also computes ∇L(w) (λ < 1, diagnostics or feedback schedule)."""
        return self.mix < 1.0 or self.needs_record

    def step(self, closure: Closure, scaler: GradScaler | None = None) -> Any:  # type: ignore[override]
        """One RWP step; returns what the first closure call returned (the clean one when a clean pass
        runs, else the first noisy draw's). ``last_objective`` is J = λ·mean_k L(w+ε_k) + (1−λ)·L(w)
        (the mean perturbed loss if λ = 1 and no clean pass ran)."""
        scaler, sigma, params = active(scaler), self.current_strength(), self.params()
        model_at = self.noise.with_strength(sigma)
        clean_loss, clean = float("nan"), None
        if self.clean_pass:
            self.zero_grad()
            clean_loss, first = call(closure)
            if scaler is not None and not all_finite(p.grad for p in params):
                self._finish(None, scaler, self._unscale_final(scaler))  # skipped, S lowered: no noisy pass
                self.last_objective = clean_loss
                return first
            clean = [None if p.grad is None else p.grad.detach().clone() for p in params]
        acc, losses, results = self._perturbed_passes(closure, model_at, params, frozen=self.clean_pass)
        mean_loss = sum(losses) / len(losses)
        record = None
        if clean is not None and (scaler is None or all_finite(acc)):  # not finite: the step is skipped
            scale = 1.0 if scaler is None else scaler.get_scale()
            unscaled = [[g if g is None or scaler is None else g / scale for g in gs] for gs in (clean, acc)]
            record = measure(clean_loss, mean_loss, *unscaled, sigma)
        self._write_grads(params, acc, clean)
        self._finish(record, scaler, self._unscale_final(scaler))
        self.last_objective = mean_loss if clean is None else self.mix * mean_loss + (1 - self.mix) * clean_loss
        return results[0] if clean is None else first

    def _perturbed_passes(self, closure: Closure, model_at: NoiseModel, params: list[torch.Tensor],
                          frozen: bool) -> tuple[list[torch.Tensor | None], list[float], list[Any]]:
        """K closure calls at w + ε_k; the mean gradient (1/K)·Σ ∇L(w+ε_k), the K losses and returns."""
        acc: list[torch.Tensor | None] = [None] * len(params)
        losses, results = [], []
        for k in range(self.samples):
            self.zero_grad()
            bn_model = self.model if (frozen or k > 0) else None
            with frozen_batchnorm(bn_model), perturbed(self.model, model_at, self.generator):
                loss, result = call(closure)
            losses.append(loss)
            results.append(result)
            for i, p in enumerate(params):
                if p.grad is not None:  # a fresh tensor each pass: .grad is set to None before each call
                    g = p.grad.detach() if self.samples == 1 else p.grad.detach() / self.samples
                    acc[i] = g if acc[i] is None else acc[i].add_(g)
        return acc, losses, results

    @torch.no_grad()
    def _write_grads(self, params: list[torch.Tensor], acc: Grads, clean: Grads | None) -> None:
        """Set ``.grad`` = λ·acc + (1−λ)·clean (acc alone when λ = 1)."""
        for i, p in enumerate(params):
            g = acc[i]
            if clean is not None and self.mix < 1.0:
                parts = [t for t in ((g, self.mix), (clean[i], 1.0 - self.mix)) if t[0] is not None]
                g = sum(t * w for t, w in parts) if parts else None
            p.grad = None if g is None else g.to(p.dtype)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """:meth:`Perturbation.state_dict` and the generator's state (if a generator was given)."""
        generator = {"generator": self.generator.get_state()} if self.generator is not None else {}
        return {**super().state_dict(), **generator}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        super().load_state_dict(state)
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])
