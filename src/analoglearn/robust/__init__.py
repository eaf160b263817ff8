"""Noise-robust training: perturbation wrappers (SAM, ASAM, RWP) and landscape diagnostics.

Paper B (Jacobson et al., arXiv 2602.07320), §B.2. Each wrapper is a ``torch.optim.Optimizer`` that
shares the parameter groups of any base torch optimiser and takes a closure that fills ``.grad``
(DESIGN.md), so it also wraps an energy-based estimator's step, and torch LR schedulers drive it::

    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.05, model=model)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(sam, T_max=epochs)
    loss = sam.step(closure)                  # or sam.step(closure, scaler) under fp16 autocast

Strengths ramp with :mod:`analoglearn.schedule`. The training method ``sgd`` is registered in
``METHODS``, the perturbations ``none``, ``sam``, ``asam`` and ``rwp`` (the ``perturb`` section) in
``PERTURBATIONS`` (:mod:`analoglearn.robust.methods`).
"""

from . import methods  # noqa: F401  (registers sgd and the perturbations)
from .diagnostics import EpochDiagnostics, StepDiagnostics
from .perturbation import Perturbation, frozen_batchnorm
from .rwp import RWP
from .sam import ASAM, SAM

__all__ = ["ASAM", "RWP", "SAM", "EpochDiagnostics", "Perturbation", "StepDiagnostics", "frozen_batchnorm"]
