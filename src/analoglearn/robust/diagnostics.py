"""Loss-landscape diagnostics of perturbed training, gathered per step and averaged per epoch.

Paper B (Jacobson et al., arXiv 2602.07320), §B.2 "vanishing gradients": with large perturbations
the gradient at the perturbed point collapses. Logged per epoch (means over the epoch's steps):

- ``clean_loss`` L(w) and ``perturbed_loss`` L(w+ε) (for RWP, the mean over its K samples);
- ``grad_norm`` ‖∇L(w)‖₂ and ``perturbed_grad_norm`` ‖∇L(w+ε)‖₂ (global norms over all parameters);
- ``grad_ratio`` ‖∇L(w+ε)‖/‖∇L(w)‖ and ``grad_cosine`` ⟨∇L(w), ∇L(w+ε)⟩/(‖∇L(w)‖·‖∇L(w+ε)‖);
- ``sharpness`` L(w+ε) − L(w); ``strength`` the ρ or σ_train in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

Grads = Sequence[torch.Tensor | None]


def global_norm(grads: Grads) -> float:
    """‖g‖₂ over all tensors of ``grads``, accumulated in at least float32 (``None`` entries skipped)."""
    wide = [(g, torch.promote_types(g.dtype, torch.float32)) for g in grads if g is not None]
    norms = [torch.linalg.vector_norm(g, dtype=dtype).double().cpu() for g, dtype in wide]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def global_dot(a: Grads, b: Grads) -> float:
    """⟨a, b⟩ summed over all tensor pairs, in at least float32 (pairs with a ``None`` skipped)."""
    total = torch.zeros((), dtype=torch.float64)
    for x, y in zip(a, b):
        if x is not None and y is not None:
            wide = torch.promote_types(x.dtype, torch.float32)
            total = total + (x.to(wide) * y.to(wide)).sum().double().cpu()
    return float(total)


@dataclass
class StepDiagnostics:
    """The diagnostics of one perturbed step (module doc)."""

    clean_loss: float
    perturbed_loss: float
    grad_norm: float
    perturbed_grad_norm: float
    grad_cosine: float
    strength: float

    @property
    def grad_ratio(self) -> float:
        """‖∇L(w+ε)‖/‖∇L(w)‖ (NaN when the clean gradient is zero)."""
        return self.perturbed_grad_norm / self.grad_norm if self.grad_norm > 0 else float("nan")

    @property
    def sharpness(self) -> float:
        """L(w+ε) − L(w)."""
        return self.perturbed_loss - self.clean_loss

    def as_dict(self) -> dict[str, float]:
        """All fields and derived values, as floats."""
        return {**asdict(self), "grad_ratio": self.grad_ratio, "sharpness": self.sharpness}


def measure(clean_loss: float, perturbed_loss: float, clean: Grads, perturbed: Grads,
            strength: float) -> StepDiagnostics:
    """Diagnostics of one step from the two losses and the two gradient lists."""
    n_clean, n_pert = global_norm(clean), global_norm(perturbed)
    cosine = global_dot(clean, perturbed) / (n_clean * n_pert) if n_clean * n_pert > 0 else float("nan")
    return StepDiagnostics(float(clean_loss), float(perturbed_loss), n_clean, n_pert, cosine, float(strength))


class EpochDiagnostics:
    """Running means of :class:`StepDiagnostics` over an epoch; :meth:`summary` returns and resets them."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, step: StepDiagnostics) -> None:
        for key, value in step.as_dict().items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1

    def state_dict(self) -> dict[str, Any]:
        """The running sums of the current epoch (a checkpoint taken mid-epoch keeps them)."""
        return {"sums": dict(self._sums), "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sums, self._count = {k: float(v) for k, v in state["sums"].items()}, int(state["count"])

    def summary(self) -> dict[str, float]:
        """Epoch means, keys as in the module doc (empty if no step was recorded); then reset."""
        out = {k: v / self._count for k, v in self._sums.items()} if self._count else {}
        self._sums, self._count = {}, 0
        return out
