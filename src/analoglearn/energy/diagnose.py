"""Gradient fidelity: every estimator against the true gradient of the cost at equilibrium.

On one random batch, in float64, with every relaxation run to a tight tolerance, the *true*
gradient ``g* = dC̄/dθ`` at the free equilibrium is computed by recurrent backprop run to
convergence (Almeida–Pineda; PAPERS.md A.3). Each estimator ``ĝ`` is then scored by::

    cosine = ⟨ĝ, g*⟩ / (‖ĝ‖ ‖g*‖)        relative_error = ‖ĝ − g*‖ / ‖g*‖

over all parameters and per layer (``W_k`` with ``b_k``). Theory (Scellier et al. 2023): as
β → 0, EP tends to ``g*``; the centered variant's error is O(β²), the one-sided ones' O(β).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import MODELS
from .estimators import ALGORITHMS, CLAMPING, Gradients, Settings, estimate, onehot
from .minimize import Minimizer
from .network import HopfieldNetwork, State
from .presets import HopfieldOptions

PRESET_INPUTS: dict[str, tuple[tuple[int, int, int], int]] = {
    "tiny": ((1, 8, 8), 4),
    "dchn_cpu": ((1, 28, 28), 10),
    "dchn_deep_cpu": ((1, 28, 28), 10),
    "dchn32": ((3, 32, 32), 10),
    "dchn_vgg": ((3, 32, 32), 10),
    "hopfield_resnet13": ((3, 32, 32), 10),
}
"""Input shape and number of classes used to diagnose each preset."""

TOLERANCE = 1e-13
"""Relaxation tolerance (max|Δs|) of the float64 diagnostics."""
MAX_ITERATIONS = 20_000
"""Cap on relaxation iterations and RBP steps."""
TBP_ITERATIONS = 400
"""Unrolled iterations of TBP (fixed: it starts at equilibrium, so a tolerance would stop it at once)."""


def flatten(grads: Gradients) -> Tensor:
    """All gradients as one vector."""
    return torch.cat([g.flatten() for pair in grads for g in pair])


def compare(estimate_: Gradients, truth: Gradients) -> dict:
    """``{'cosine', 'relative_error', 'per_layer': {'layer1': {...}, ...}}`` of ``estimate_`` vs ``truth``."""

    def score(a: Tensor, b: Tensor) -> dict[str, float]:
        cosine = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))
        return {"cosine": cosine, "relative_error": float((a - b).norm() / b.norm().clamp_min(1e-300))}

    out = score(flatten(estimate_), flatten(truth))
    out["per_layer"] = {
        f"layer{k}": score(torch.cat([e.flatten() for e in est]), torch.cat([t.flatten() for t in tru]))
        for k, (est, tru) in enumerate(zip(estimate_, truth), start=1)
    }
    return out


def setup(preset: str, batch_size: int, seed: int, options: HopfieldOptions | None = None
          ) -> tuple[HopfieldNetwork, Tensor, Tensor, State]:
    """A float64 network of ``preset`` (with ``options``), a random batch ``(x, one-hot y)`` and its
    free equilibrium."""
    if preset not in PRESET_INPUTS:
        raise ConfigError(
            f"unknown preset {preset!r} for diagnostics; valid presets: {', '.join(PRESET_INPUTS)}"
        )
    in_shape, classes = PRESET_INPUTS[preset]
    generator = torch.Generator().manual_seed(seed)
    net = MODELS.create(preset, options, in_shape=in_shape, num_classes=classes, generator=generator).double()
    x = torch.randn((batch_size, *in_shape), generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (batch_size,), generator=generator)
    free = tight_minimizer().relax(net, x, net.zero_state(batch_size), MAX_ITERATIONS).state
    return net, x, onehot(y, classes, torch.float64), free


def tight_minimizer() -> Minimizer:
    """Asynchronous float64 relaxation to :data:`TOLERANCE`."""
    return Minimizer(precision="fp64", tolerance=TOLERANCE)


def true_gradient(net: HopfieldNetwork, x: Tensor, target: Tensor, free: State) -> Gradients:
    """``dC̄/dθ`` at the free equilibrium: recurrent backprop run to convergence."""
    settings = Settings(1.0, MAX_ITERATIONS, tight_minimizer(), MAX_ITERATIONS, rbp_tolerance=1e-16)
    return estimate("RBP", net, x, target, free, settings)


def gradient_fidelity(
    preset: str,
    beta: float,
    *,
    batch_size: int = 8,
    seed: int = 0,
    algorithms: Iterable[str] | None = None,
    options: HopfieldOptions | None = None,
) -> dict:
    """Score every estimator against the true gradient on one batch (float64, converged phases).

    Args:
        preset: a registered Hopfield preset (see :data:`PRESET_INPUTS`).
        beta: nudging strength of EP and CpL (CL always clamps fully, β = 1).
        batch_size: examples in the random batch.
        seed: seed of the network initialisation and of the batch.
        algorithms: names to score (default: all nine, or the five that need no clamped output under
            the cross-entropy read-out; TBP and RBP are run to convergence).
        options: the preset's options (read-out, output gain, activation range, gains).

    Returns:
        ``{name: {'cosine', 'relative_error', 'per_layer': {...}}}`` for each algorithm.
    """
    if not beta > 0:
        raise ConfigError(f"beta must be > 0, got {beta}")
    readout_ok = options is None or options.readout == "energy"
    default = [n for n in ALGORITHMS if readout_ok or n not in CLAMPING]
    names = list(algorithms) if algorithms is not None else default
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        raise ConfigError(f"unknown algorithm(s) {unknown}; valid: {', '.join(ALGORITHMS)}")
    if not readout_ok and (refused := [n for n in names if n in CLAMPING]):
        raise ConfigError(f"{', '.join(refused)} clamp the output, which the cross-entropy read-out does not have; "
                          f"valid here: {', '.join(default)}")
    net, x, target, free = setup(preset, batch_size, seed, options)
    truth = true_gradient(net, x, target, free)
    results = {}
    for name in names:
        b = 1.0 if name == "CL" else beta
        iterations = TBP_ITERATIONS if name == "TBP" else MAX_ITERATIONS
        minimizer = Minimizer(precision="fp64") if name == "TBP" else tight_minimizer()
        settings = Settings(b, iterations, minimizer, MAX_ITERATIONS, rbp_tolerance=1e-16)
        results[name] = compare(estimate(name, net, x, target, free, settings), truth)
    return results


def format_table(results: dict) -> str:
    """Plain-text table of :func:`gradient_fidelity` results (one row per algorithm)."""
    layers = next(iter(results.values()))["per_layer"] if results else {}
    head = f"{'algorithm':<10}{'cosine':>10}{'rel. error':>12}" + "".join(f"{k + ' err':>13}" for k in layers)
    rows = [head]
    for name, r in results.items():
        per = "".join(f"{r['per_layer'][k]['relative_error']:>13.3e}" for k in layers)
        rows.append(f"{name:<10}{r['cosine']:>10.6f}{r['relative_error']:>12.3e}{per}")
    return "\n".join(rows)
