"""A quadratic whose gradient is written by hand: the stand-in for an energy-based estimator's step."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class Quadratic(nn.Module):
    """L(w) = ½ (w − c)ᵀ A (w − c), w the ``.weight`` (2, 3) of a linear layer, flattened."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2, bias=False).double()
        with torch.no_grad():
            self.layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.2]], dtype=torch.float64))
        g = torch.Generator().manual_seed(0)
        m = torch.randn(6, 6, generator=g, dtype=torch.float64)
        self.A = m @ m.T / 6 + torch.eye(6, dtype=torch.float64)
        self.c = torch.randn(6, generator=g, dtype=torch.float64)

    def loss_at(self, w: torch.Tensor) -> float:
        d = w.flatten() - self.c
        return float(0.5 * d @ self.A @ d)

    def grad_at(self, w: torch.Tensor) -> torch.Tensor:
        return (self.A @ (w.flatten() - self.c)).reshape(2, 3)

    def closure(self):
        """Fills .grad by hand (no autograd of a loss), like an EP estimator; returns the loss."""
        calls = []

        def closure() -> float:
            w = self.layer.weight.detach()
            self.layer.weight.grad = self.grad_at(w)
            calls.append(w.clone())
            return self.loss_at(w)

        closure.calls = calls
        return closure


@pytest.fixture
def quadratic() -> Quadratic:
    return Quadratic()
