"""The step contract shared by both pillars (DESIGN.md, "The closure contract").

A *method* turns a batch into a *closure*. The training loop (:mod:`analoglearn.train`) builds the
model, the optimiser (a torch optimiser, or SAM/ASAM/RWP wrapping one: the ``perturb`` section) and
the method from ``METHODS.create(name, model, options, generator=...)``, then per batch::

    outcome = optimizer.step(method.closure(x, y, scaler))     # zero_grad first for a plain optimiser

The closure takes no arguments, fills ``.grad`` with the gradient at the current weights (adding to
what is there, as ``backward()`` does; the caller zeroes ``.grad`` before each call) and returns an
:class:`Outcome`, the batch's loss and correct count. Backprop (``sgd``) runs forward and backward;
an energy-based estimator (``CEP``, ``PEP``, ...) relaxes and writes its estimate ``ĝ``. A
perturbation calls it once or more around moving the weights, so every method meets every
perturbation. Nothing else passes between loop, method and optimiser but an optional
``torch.amp.GradScaler``: under it the closure leaves ``S·∇L`` in ``.grad`` (S the current scale).

Two settings of the loop reach the method as attributes: ``accumulate`` (k micro-batches summed into
one closure call; the gradient is that of the whole batch) and ``autocast`` (a dtype for
``torch.autocast`` of the forward pass, or None).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

GradScaler = torch.amp.GradScaler


@dataclass
class Outcome:
    """What a closure returns: its batch-mean loss (unscaled) and how many examples it got right.

    ``float(outcome)`` is the loss, so any code that expects a closure to return a loss works.
    ``correct`` counts predictions at the weights of the call (for SAM's first call: the clean ones).
    """

    loss: torch.Tensor
    """Batch-mean loss, a detached 0-dim tensor."""
    correct: int
    """Examples of the batch whose prediction was right."""

    def __float__(self) -> float:
        return float(self.loss)


Closure = Callable[[], Outcome]


def chunks(x: torch.Tensor, y: torch.Tensor, parts: int) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """``x, y`` split into ``min(parts, B)`` micro-batches ``(x_i, y_i, b_i/B)`` along the batch axis."""
    n = min(parts, x.shape[0])
    return [(xi, yi, xi.shape[0] / x.shape[0]) for xi, yi in zip(x.tensor_split(n), y.tensor_split(n))]


class Method:
    """Base class of training methods; subclasses implement :meth:`closure`.

    Args:
        model: the network.
        options: the method's options dataclass instance (see its registry entry), or ``None``.
        generator: the method's own random generator, derived from the run seed.

    Attributes:
        accumulate: micro-batches per closure call (``train.accumulate``), ≥ 1.
        autocast: dtype of ``torch.autocast`` around the forward pass (``train.autocast``), or None.
    """

    def __init__(self, model: nn.Module, options: Any = None, *, generator: torch.Generator | None = None) -> None:
        self.model = model
        self.options = options
        self.generator = generator
        self.accumulate = 1
        self.autocast: torch.dtype | None = None

    def closure(self, x: torch.Tensor, y: torch.Tensor, scaler: GradScaler | None = None) -> Closure:
        """The closure of one batch.

        Args:
            x: normalised inputs, shape ``(B, C, H, W)``.
            y: integer labels, shape ``(B,)``.
            scaler: an enabled ``GradScaler``: the closure leaves ``S·∇L`` in ``.grad``.
        """
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, K)`` at evaluation time (the default calls ``model(x)`` in eval mode)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model(x)
        finally:
            self.model.train(was_training)

    def epoch_metrics(self) -> dict[str, float]:
        """Extra metrics gathered during the epoch (diagnostics); resets them. Default: none."""
        return {}

    def final_artifacts(self, x: torch.Tensor) -> dict[str, Any]:
        """Files to write into the run directory at the end of training, ``{file name: JSON-able data}``,
        computed on a test batch ``x``. Default: none (energy-based methods write ``relaxation.json``)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Persistent state beyond model and optimiser (e.g. warm-start states), plain tensors only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
