"""The training-method contract shared by both pillars.

A *method* turns one batch into an optimiser step. The training loop (:mod:`analoglearn.train`)
builds the model and a torch optimiser from the config, then the method from
``METHODS.create(name, model, optimizer, options, generator=...)`` and calls, per batch,
``method.train_step(x, y, progress)``. Backprop methods (``sgd``, ``sam``, ``asam``, ``rwp``) and
energy-based estimators (``CEP``, ``PEP``, ...) implement the same four calls, so the loop, the
checkpoints and the evaluation never ask which pillar a run belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Progress:
    """Where training stands, for schedules.

    Attributes:
        step: optimiser steps completed before this one (0-based, global).
        epoch: current epoch (0-based).
        steps_per_epoch: batches in one epoch.
        total_steps: ``epochs * steps_per_epoch``.
    """

    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int

    @property
    def fraction(self) -> float:
        """Fraction of training done, t/T ∈ [0, 1)."""
        return self.step / max(self.total_steps, 1)


class Method:
    """Base class of training methods.

    Subclasses implement :meth:`train_step`; the others have sensible defaults.

    Args:
        model: the network; its parameters are those of ``optimizer``.
        optimizer: a torch optimiser over ``model``'s parameters (the method may wrap it).
        options: the method's options dataclass instance (see its registry entry), or ``None``.
        generator: the method's own random generator (training noise), derived from the run seed.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        options: Any = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.options = options
        self.generator = generator

    def train_step(self, x: torch.Tensor, y: torch.Tensor, progress: Progress) -> dict[str, float]:
        """One optimiser step on a batch.

        Args:
            x: normalised inputs, shape ``(B, C, H, W)``.
            y: integer labels, shape ``(B,)``.
            progress: position in training, for schedules.

        Returns:
            metrics of the batch: at least ``loss`` (batch mean, float) and ``correct``
            (number of examples whose prediction before the step was right).
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
