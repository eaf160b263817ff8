"""Noise-robust training: perturbation wrappers (SAM, ASAM, RWP) and landscape diagnostics.

Paper B (Jacobson et al., arXiv 2602.07320), §B.2. Each wrapper is a torch optimiser around any base one
(:mod:`~analoglearn.robust.perturbation`), stepping on a closure that fills ``.grad`` (backprop or an
energy-based estimator; DESIGN.md), and torch LR schedulers drive it::

    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.05, model=model)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(sam, T_max=epochs)
    loss = sam.step(closure)                  # or sam.step(closure, scaler) under fp16 autocast

Strengths ramp with :mod:`analoglearn.schedule`. :mod:`analoglearn.robust.methods` registers the method
``sgd`` (``METHODS``) and the perturbations ``none``, ``sam``, ``asam``, ``rwp`` (``PERTURBATIONS``).
"""

from . import methods  # noqa: F401  (registers sgd and the perturbations)
from .diagnostics import EpochDiagnostics, StepDiagnostics
from .perturbation import Perturbation, frozen_batchnorm
from .rwp import RWP
from .sam import ASAM, SAM

__all__ = ["ASAM", "RWP", "SAM", "EpochDiagnostics", "Perturbation", "StepDiagnostics", "frozen_batchnorm"]
