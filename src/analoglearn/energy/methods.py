"""The nine energy-based learning algorithms as training methods (``METHODS``; PAPERS.md A.2–A.4).

``METHODS.create(name, model, options, generator=...)`` with ``name`` one of
``CL, PEP, NEP, CEP, PCpL, NCpL, CCpL, TBP, RBP`` builds an :class:`EnergyMethod`. Its closure runs
the free phase (warm-started from the previous batch's free state) and lets the estimator write
``.grad`` (``ĝ`` of :mod:`analoglearn.energy.estimators`); the optimiser steps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..method import Closure, GradScaler, Method, Outcome, chunks
from ..registry import METHODS
from .estimators import ALGORITHMS, CLAMPING, Settings, estimate, onehot, write_gradients
from .minimize import (
    OUTPUT_UPDATES,
    PRECISIONS,
    RELAXATION_SCHEDULES,
    STOPS,
    Minimizer,
    Relaxation,
    check_compile,
    check_precision,
)
from .network import HopfieldNetwork, State
from .profile import relaxation_profile

DEFAULT_BETA = 0.25
"""β of the comparative study (CL uses 1)."""


@dataclass
class EnergyOptions:
    """Options shared by the nine energy-based algorithms."""

    beta: float | None = None
    """Nudging strength β > 0; ``None``: 0.25 (1.0 for CL, whose output is clamped to the target)."""
    free_iterations: int = 60
    """Iterations of the free phase (warm-started during training)."""
    nudged_iterations: int = 15
    """Iterations of each nudged phase (and of TBP's unrolled relaxation); 20 in the CIFAR-10 SOTA run."""
    eval_iterations: int = 60
    """Iterations of the free relaxation from zero at evaluation time."""
    schedule: str = "asynchronous"
    """Relaxation schedule: 'asynchronous' (odd then even layers, the paper's) or 'synchronous'."""
    precision: str = "fp32"
    """Relaxation precision: 'fp32', 'bf16' or 'fp16' (fp32 master weights and gradients)."""
    output_update: str = "exact"
    """Nudged output update: 'exact' minimiser (o = (W·s + b + β·y)/(1 + β)) or 'reference' iteration."""
    rbp_steps: int = 15
    """Vector-Jacobian steps of RBP (one synchronous step advances about half an asynchronous one)."""
    warm_start: bool = True
    """Start each free phase from the previous batch's free state (reset when the batch size changes)."""
    tolerance: float | None = None
    """Stop a relaxation early when max|Δs| < tolerance; ``None``: fixed iteration counts (the paper).
    The iteration counts stay the caps. Applies to every relaxation (free, nudged, evaluation)."""
    check_every: int = 1
    """With a tolerance, check the residual every this many iterations only (each check is a pass over
    the state and a host synchronisation; 5–10 makes the check cheap, at most k − 1 extra iterations)."""
    compile: bool = False
    """Run each relaxation sweep through ``torch.compile`` (the first batch of each shape compiles, tens
    of seconds on a CPU); needs a C++ compiler on CPU or Triton on CUDA."""
    stop: str = "example"
    """With a tolerance, who stops: ``'example'``, each example of a batch on its own (the examples that
    converged leave the batch, the rest go on: the batch costs about its examples' mean iterations) or
    ``'batch'``, all together when the last one has (:attr:`~.minimize.Minimizer.per_example`)."""
    eval_tolerance: float | None = None
    """A tolerance for the evaluation relaxation only (``predict``, noisy evaluation); ``None``: ``tolerance``.
    Training keeps its fixed schedule, so a trained network can be evaluated faster without changing it."""
    cache_pooling: bool = True
    """Reuse convolutions and max-pool indices between half-sweeps (False: the reference's recomputation)."""

    def __post_init__(self) -> None:
        if self.beta is not None and not self.beta > 0:
            raise ConfigError(f"method beta must be > 0 (or null for the default), got {self.beta}")
        for name in ("free_iterations", "nudged_iterations", "eval_iterations", "rbp_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"method {name} must be a positive integer, got {value!r}")
        choices = {"schedule": RELAXATION_SCHEDULES, "precision": tuple(PRECISIONS), "output_update": OUTPUT_UPDATES}
        for name, valid in choices.items():
            if (value := getattr(self, name)) not in valid:
                raise ConfigError(f"method {name} {value!r} is not valid; choose one of {', '.join(valid)}")
        for name in ("tolerance", "eval_tolerance"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"method {name} must be a finite number > 0 or null, got {value!r}")
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 1:
            raise ConfigError(f"method check_every must be a positive integer, got {self.check_every!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"method compile must be true or false, got {self.compile!r}")
        if self.stop not in STOPS:
            raise ConfigError(f"method stop {self.stop!r} is not valid; choose one of {', '.join(STOPS)}")


class EnergyMethod(Method):
    """Training with ``algorithm``, one of the nine of Scellier et al. 2023 (:data:`ALGORITHMS`).

    The closure relaxes the free phase from the warm start ``warm`` (the previous batch's free state,
    ``None`` before the first batch) and adds the estimator's ``ĝ`` to ``.grad``; its cost ``C`` is the
    loss. The free state of a closure's first call (for SAM: at the clean weights) is the next batch's
    warm start; every call of one closure starts from the same warm start. With ``accumulate = k`` each
    micro-batch relaxes from its slice of the warm start and adds ``(b_i/B)·ĝ_i``."""

    def __init__(self, algorithm: str, model: nn.Module, options: EnergyOptions | None = None, *,
                 generator: torch.Generator | None = None) -> None:
        if not isinstance(model, HopfieldNetwork):
            raise ConfigError(f"method {algorithm!r} trains energy-based networks only, got {type(model).__name__}; "
                              "use a Hopfield preset (analoglearn list models: dchn32, dchn_cpu, tiny, ...)")
        if not model.readout.in_energy and algorithm in CLAMPING:
            raise ConfigError(f"method {algorithm!r} clamps the output, which the cross-entropy read-out does not "
                              "have; use EP (PEP, NEP, CEP), TBP or RBP with it, or model.readout: energy")
        options = options if options is not None else EnergyOptions()
        super().__init__(model, options, generator=generator)
        self.algorithm = algorithm
        self.model: HopfieldNetwork = model
        self.minimizer = Minimizer(options.schedule, options.precision, options.output_update, options.tolerance,
                                   options.cache_pooling, options.check_every, options.compile,
                                   per_example=options.stop == "example")
        if options.compile:
            check_compile(model.biases[0].device)
        self.eval_minimizer = (self.minimizer if options.eval_tolerance is None
                               else dataclasses.replace(self.minimizer, tolerance=options.eval_tolerance))
        check_precision(options.precision, model.biases[0].device)
        beta = options.beta if options.beta is not None else (1.0 if algorithm == "CL" else DEFAULT_BETA)
        gain = model.readout.gain
        if model.readout.in_energy and algorithm in ("NEP", "CEP") and beta * gain * gain >= 1:
            raise ConfigError(f"method {algorithm!r} nudges by −β: with beta {beta} and output_gain {gain}, E − βC is "
                              f"unbounded below in the output (needs beta·output_gain² < 1, got {beta * gain**2})")
        self.settings = Settings(beta, options.nudged_iterations, self.minimizer, options.rbp_steps)
        self.warm: State | None = None
        self._stats: dict[str, float] = {}
        self._batches = 0

    def _initial_state(self, x: Tensor) -> State:
        if self.options.warm_start and self.warm is not None and self.warm[0].shape[0] == x.shape[0]:
            return self.warm
        return self.model.zero_state(x.shape[0], device=x.device)

    def free_phase(self, x: Tensor, iterations: int | None = None, *, warm: bool = True,
                   init: State | None = None, minimizer: Minimizer | None = None,
                   input_indices: bool = True) -> Relaxation:
        """Relax the free network from ``init``, else the warm state (or zero with ``warm=False``);
        ``input_indices=False`` for an evaluation (:meth:`Minimizer.relax`)."""
        if init is None:
            init = self._initial_state(x) if warm else self.model.zero_state(x.shape[0], device=x.device)
        minimizer = minimizer or self.minimizer
        return minimizer.relax(self.model, x, init, iterations or self.options.free_iterations,
                               input_indices=input_indices)

    def closure(self, x: Tensor, y: Tensor, scaler: GradScaler | None = None) -> Closure:
        """The batch's closure: free phase at the current weights, ``ĝ`` (``S·ĝ`` under ``scaler``)
        added to ``.grad``; returns the batch-mean cost of the free state and its correct count."""
        parts = chunks(x, y, self.accumulate)
        init = self._initial_state(x)
        inits = [list(s) for s in zip(*(t.tensor_split(len(parts)) for t in init))] if len(parts) > 1 else [init]
        first = True

        def run() -> Outcome:
            nonlocal first
            total: Tensor | None = None
            correct, frees = 0, []
            for (xi, yi, share), start in zip(parts, inits):
                with torch.no_grad():
                    relaxation = self.free_phase(xi, init=start)
                free = relaxation.state
                target = onehot(yi, free[-1].shape[1], free[-1].dtype)
                readout = self.model.readout
                grads = estimate(self.algorithm, self.model, xi, target, free, self.settings, relaxation.input_drive)
                factor = share * (scaler.get_scale() if scaler is not None else 1.0)
                write_gradients(self.model, grads if factor == 1.0 else [(w * factor, b * factor) for w, b in grads])
                loss = readout.cost(free[-1], target).mean().detach()
                part = loss if share == 1.0 else loss * share
                total = part if total is None else total + part
                correct += int((free[-1].argmax(1) == yi).sum())
                if first:
                    frees.append(free)
                    self._add_stats(xi, free, relaxation.mean_iterations, share)
            if first:
                first = False
                state = [torch.cat(layer) for layer in zip(*frees)] if len(frees) > 1 else frees[0]
                self.warm = [s.detach() for s in state] if self.options.warm_start else None
                self._batches += 1
            assert total is not None
            return Outcome(total, correct)

        return run

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Output ``(B, K)`` after ``eval_iterations`` (the cap under ``eval_tolerance``) of free relaxation
        from zero."""
        return self.free_phase(x, self.options.eval_iterations, warm=False, minimizer=self.eval_minimizer,
                               input_indices=False).state[-1]

    def final_artifacts(self, x: Tensor) -> dict[str, Any]:
        """``relaxation.json``: residual and energy per iteration of both schedules on ``x``, from zero."""
        profile = relaxation_profile(self.model, x, self.options.eval_iterations, precision=self.options.precision)
        return {"relaxation.json": profile}

    def _add_stats(self, x: Tensor, free: State, iterations: float, share: float) -> None:
        """Add ``share`` × (mean energy of the free state before the step, the fractions of units at the
        bounds of their range, the free-phase iterations) to the epoch's sums."""
        with torch.no_grad():
            stats = {"energy": float(self.model.energy(x, free).mean())}
        for k, (s, (lo, hi)) in enumerate(zip(free[:-1], self.model.ranges), start=1):
            stats[f"saturation_low/s{k}"] = float((s <= lo).float().mean())
            stats[f"saturation_high/s{k}"] = float((s >= hi).float().mean())
        for key, value in {**stats, "free_iterations": float(iterations)}.items():
            self._stats[key] = self._stats.get(key, 0.0) + (value if share == 1.0 else value * share)

    def epoch_metrics(self) -> dict[str, float]:
        """Epoch means: free-state energy, fractions of units at their range's bounds, free-phase iterations run."""
        out = {key: value / max(self._batches, 1) for key, value in self._stats.items()}
        self._stats, self._batches = {}, 0
        return out

    def state_dict(self) -> dict[str, Any]:
        """Warm-start states (plain tensors) and the epoch's partial statistics, for exact resumption."""
        warm = [s.clone() for s in self.warm] if self.warm is not None else []
        return {"warm": warm, "stats": dict(self._stats), "batches": self._batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        device = self.model.biases[0].device
        self.warm = [s.clone().to(device) for s in state.get("warm") or []] or None
        self._stats = {key: float(value) for key, value in state.get("stats", {}).items()}
        self._batches = int(state.get("batches", 0))


_SUMMARIES = {
    "CL": "contrastive learning: output clamped to the target vs to its free value",
    "PEP": "equilibrium propagation, positive nudging (0, +β)",
    "NEP": "equilibrium propagation, negative nudging (−β, 0)",
    "CEP": "equilibrium propagation, centered nudging (−β, +β)",
    "PCpL": "coupled learning, positive (0, +β)",
    "NCpL": "coupled learning, negative (−β, 0)",
    "CCpL": "coupled learning, centered (−β, +β)",
    "TBP": "truncated backprop through the nudged-phase iterations (baseline)",
    "RBP": "recurrent backprop (Almeida–Pineda) at the free equilibrium (baseline)",
}

for _name in ALGORITHMS:
    METHODS.register(_name, options=EnergyOptions, summary=_SUMMARIES[_name])(functools.partial(EnergyMethod, _name))
