"""Energy-based learning (Scellier, Ernoult, Kendall, Kumar, NeurIPS 2023; PAPERS.md A).

* :mod:`.interactions` — the energy terms between layers (conv with max/avg/stride downsampling,
  dense), each with its drive, feedback and weight gradient; every product goes through
  ``interactions.read`` (``reading(reader)``);
* :mod:`.layout` — read-outs (cost, output gain), skip specifications, activation ranges, the colouring;
* :mod:`.network` — layered Hopfield networks, the pre-activation rule, energy, analytic gradients;
* :mod:`.minimize` — asynchronous / synchronous relaxation, precision, conv and max-pool caching;
* :mod:`.estimators` — CL, PEP, NEP, CEP, PCpL, NCpL, CCpL, TBP, RBP;
* :mod:`.methods` — the nine algorithms registered in ``METHODS``;
* :mod:`.presets` — ``dchn32``, ``dchn_cpu``, ``dchn_deep_cpu``, ``dchn_vgg``, ``hopfield_resnet13``,
  ``hopfield``, ``tiny`` registered in ``MODELS``;
* :mod:`.diagnose` — gradient fidelity of every estimator against the true gradient.
"""

from __future__ import annotations

from . import interactions, methods, presets
from .estimators import ALGORITHMS, cost, estimate
from .methods import EnergyMethod, EnergyOptions
from .minimize import Minimizer, Relaxation
from .network import ConvPoolInteraction, DenseInteraction, HopfieldNetwork, Interaction, State, Weights
from .presets import HopfieldOptions

__all__ = [
    "ALGORITHMS",
    "ConvPoolInteraction",
    "DenseInteraction",
    "EnergyMethod",
    "EnergyOptions",
    "HopfieldNetwork",
    "HopfieldOptions",
    "Interaction",
    "Minimizer",
    "Relaxation",
    "State",
    "Weights",
    "cost",
    "estimate",
    "interactions",
    "methods",
    "presets",
]
