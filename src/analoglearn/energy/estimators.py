"""Gradient estimators of Scellier et al. 2023 (PAPERS.md A.3).

Cost of one example: the network's read-out cost ``C(o, y)`` (``net.readout``; paper A's
``½‖o − onehot(y)‖²`` by default, reported as a batch mean). Every physical algorithm contrasts two
relaxed states ``s¹, s²`` at nudgings ``β¹ < β²`` and sets, with ``F = E + β·C``::

    ĝ = [∂F/∂θ(s², β²) − ∂F/∂θ(s¹, β¹)] / (β² − β¹)        (batch mean)

(``∂F/∂θ = ∂E/∂θ`` unless the read-out's parameters are outside the energy: the cross-entropy
read-out, :meth:`HopfieldNetwork.parameter_gradients`)
so that ``param.grad = ĝ`` approximates ``∂C/∂θ`` and SGD descends. Variants: positive
``(0, +β)``, negative ``(−β, 0)``, centered ``(−β, +β)``.

* EP (PEP, NEP, CEP): the nudged states minimise ``E + β·C`` with the output free.
* CpL (PCpL, NCpL, CCpL): the output is clamped to ``o* − β(o* − y/γ)``, ``o*`` the free output
  (γ the output gain; ``y/γ`` is the output at which ``C = ½‖γo − y‖²`` vanishes). The energy read-out only.
* CL: PCpL at β = 1 (output clamped to the target, versus clamped to its free value).
* TBP: autograd through the nudged-phase iterations started from the free state.
* RBP (Almeida–Pineda): at the free equilibrium ``s* = F(s*)``, with ``F`` one synchronous
  update, ``v ← ∂C/∂s + v·∂F/∂s`` repeated ``rbp_steps`` times, then ``ĝ = v·∂F/∂θ``.

All second states start from the free state; a β = 0 state (P, N variants, CL) is re-relaxed
from the free state for the same number of iterations, as in the reference code.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .minimize import Minimizer
from .network import Drive, DriveCache, HopfieldNetwork, State, Weights

ALGORITHMS = ("CL", "PEP", "NEP", "CEP", "PCpL", "NCpL", "CCpL", "TBP", "RBP")
"""Canonical names of the nine learning algorithms."""
CLAMPING = ("CL", "PCpL", "NCpL", "CCpL")
"""The algorithms that clamp the output (so need the energy read-out, which has an output state)."""

_VARIANTS = {"P": (0.0, 1.0), "N": (-1.0, 0.0), "C": (-1.0, 1.0)}

InputDrive = dict[int, Drive] | None
"""``{i: (drive_I(x), aux_I)}`` of the interactions fed by the clamped input (``Relaxation.input_drive``)."""

Gradients = Weights
"""One tuple per interaction, aligned with :meth:`HopfieldNetwork.layer_parameters` (``(g_W, g_b)``
for the chain, ``(g_W,)`` for a skip)."""


def onehot(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``(B,)`` integer labels to ``(B, K)`` one-hot targets."""
    return F.one_hot(y, num_classes).to(dtype)


def cost(output: Tensor, target: Tensor) -> Tensor:
    """Paper A's ``C = ½‖o − y‖²`` per example, shape ``(B,)``; ``target`` is one-hot ``(B, K)``
    (``net.readout.cost`` is the network's own, with its output gain or cross-entropy)."""
    return 0.5 * (output - target).pow(2).sum(1)


def parameters(net: HopfieldNetwork) -> list[Tensor]:
    """The parameters of :meth:`HopfieldNetwork.layer_parameters`, flattened in order."""
    return [p for group in net.layer_parameters() for p in group]


def regroup(net: HopfieldNetwork, flat: Sequence[Tensor | None]) -> Gradients:
    """``flat`` (aligned with :func:`parameters`; ``None`` read as zero) grouped like :data:`Gradients`."""
    out, i = [], 0
    for group in net.layer_parameters():
        out.append(tuple(flat[i + j] if flat[i + j] is not None else torch.zeros_like(p) for j, p in enumerate(group)))
        i += len(group)
    return out


@dataclass(frozen=True)
class Settings:
    """What an estimator needs besides the network and the batch.

    Attributes:
        beta: nudging strength β (> 0).
        iterations: iterations of each nudged phase (and of TBP's unrolled relaxation).
        minimizer: the relaxation used for the nudged phases.
        rbp_steps: vector-Jacobian steps of RBP (the most it runs).
        rbp_tolerance: stop RBP early when ``max|v_{t+1} − v_t| < rbp_tolerance`` (diagnostics).
    """

    beta: float
    iterations: int
    minimizer: Minimizer
    rbp_steps: int = 15
    rbp_tolerance: float | None = None


def contrast(
    net: HopfieldNetwork,
    x: Tensor,
    first: State,
    second: State,
    beta1: float,
    beta2: float,
    input_drive: InputDrive = None,
    target: Tensor | None = None,
) -> Gradients:
    """``ĝ = [∂F/∂θ(s², β²) − ∂F/∂θ(s¹, β¹)] / (β² − β¹)``, accumulated in the parameters' dtype (fp32).

    ``target``: the one-hot target, needed by the cross-entropy read-out's ``β·∂C/∂θ``.
    """
    g1 = net.parameter_gradients(x, first, input_drive, beta=beta1, target=target)
    g2 = net.parameter_gradients(x, second, input_drive, beta=beta2, target=target)
    scale = 1.0 / (beta2 - beta1)
    return [tuple((b - a) * scale for a, b in zip(p1, p2)) for p1, p2 in zip(g1, g2)]


def equilibrium_propagation(
    variant: str,
    net: HopfieldNetwork,
    x: Tensor,
    target: Tensor,
    free: State,
    settings: Settings,
    input_drive: InputDrive = None,
) -> Gradients:
    """PEP/NEP/CEP: nudged phases minimise ``E + β_i·C`` from the free state, output free."""
    betas = [sign * settings.beta for sign in _VARIANTS[variant]]
    relax = functools.partial(settings.minimizer.relax, target=target, input_drive=input_drive)
    states = [relax(net, x, free, settings.iterations, beta=b).state for b in betas]
    return contrast(net, x, states[0], states[1], betas[0], betas[1], input_drive, target)


def coupled_learning(
    variant: str,
    net: HopfieldNetwork,
    x: Tensor,
    target: Tensor,
    free: State,
    settings: Settings,
    input_drive: InputDrive = None,
) -> Gradients:
    """PCpL/NCpL/CCpL (and CL at β = 1): output clamped to ``o* − β_i(o* − y)``."""
    betas = [sign * settings.beta for sign in _VARIANTS[variant]]
    relax = functools.partial(settings.minimizer.relax, input_drive=input_drive)
    o_free, goal = free[-1].detach(), target / net.readout.gain
    states = [
        relax(net, x, free, settings.iterations, clamp_output=o_free - b * (o_free - goal)).state
        for b in betas
    ]
    return contrast(net, x, states[0], states[1], betas[0], betas[1], input_drive)


def truncated_backprop(
    net: HopfieldNetwork, x: Tensor, target: Tensor, free: State, settings: Settings
) -> Gradients:
    """TBP: ``∂/∂θ`` of the mean cost after ``iterations`` asynchronous iterations from the free state."""
    params = parameters(net)
    with torch.enable_grad():
        final = settings.minimizer.relax(
            net, x, [s.detach() for s in free], settings.iterations, differentiable=True
        )
        loss = net.readout.cost(final.state[-1], target).mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return regroup(net, grads)


def synchronous_map(net: HopfieldNetwork, x: Tensor, state: State, weights: Weights) -> State:
    """``F(s, θ)_k = clamp(h_k, 0, 1)`` (``h_k`` unclamped for the output): one synchronous update
    of every free layer with the pre-activation of :meth:`HopfieldNetwork.preactivation` (RBP's map)."""
    cache = DriveCache(net)
    h = [net.preactivation(k, x, state, weights, cache) for k in range(1, len(state) + 1)]
    return [net.activate(k, hk) for k, hk in enumerate(h)]


def recurrent_backprop(
    net: HopfieldNetwork, x: Tensor, target: Tensor, free: State, settings: Settings
) -> Gradients:
    """RBP (Almeida–Pineda) at the free state, taken as the equilibrium ``s* = F(s*)``.

    ``v₀ = ∂C̄/∂s``; ``v_{t+1} = ∂C̄/∂s + v_t·∂F/∂s`` for ``rbp_steps`` steps; ``ĝ = v·∂F/∂θ``,
    with ``C̄`` the batch-mean cost (all in the parameters' dtype).
    """
    params = [p for pair in net.layer_parameters() for p in pair]
    with torch.enable_grad():
        s_star = [s.detach().to(params[0].dtype).requires_grad_(True) for s in free]
        image = synchronous_map(net, x.to(params[0].dtype), s_star, net.weights(detach=False))
        source = [torch.zeros_like(s) for s in s_star]
        source[-1] = net.readout.output_gradient(s_star[-1].detach(), target) / x.shape[0]
        v = [t.clone() for t in source]
        for _ in range(settings.rbp_steps):
            vjp = torch.autograd.grad(image, s_star, v, retain_graph=True, allow_unused=True)
            new = [src + (g if g is not None else 0.0) for src, g in zip(source, vjp)]
            change = (
                max(float((a - b).abs().max()) for a, b in zip(new, v)) if settings.rbp_tolerance else None
            )
            v = new
            if change is not None and change < settings.rbp_tolerance:
                break
        grads = torch.autograd.grad(image, params, v, allow_unused=True)
    return regroup(net, grads)


def estimate(
    algorithm: str,
    net: HopfieldNetwork,
    x: Tensor,
    target: Tensor,
    free: State,
    settings: Settings,
    input_drive: InputDrive = None,
) -> Gradients:
    """The gradient estimate ``ĝ`` of ``algorithm`` (one of :data:`ALGORITHMS`) at the free state.

    ``input_drive``: the free relaxation's ``Relaxation.input_drive`` (saves the input layer's
    convolution in every later phase; same weights and precision required).
    """
    if algorithm in ("PEP", "NEP", "CEP"):
        return equilibrium_propagation(algorithm[0], net, x, target, free, settings, input_drive)
    if algorithm in ("PCpL", "NCpL", "CCpL"):
        return coupled_learning(algorithm[0], net, x, target, free, settings, input_drive)
    if algorithm == "CL":
        return coupled_learning("P", net, x, target, free, settings, input_drive)
    if algorithm == "TBP":
        return truncated_backprop(net, x, target, free, settings)
    if algorithm == "RBP":
        return recurrent_backprop(net, x, target, free, settings)
    raise ValueError(f"unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}")


def write_gradients(net: HopfieldNetwork, grads: Gradients) -> None:
    """Add ``ĝ`` to ``.grad`` of every parameter (as ``backward()`` would)."""
    for group, g_group in zip(net.layer_parameters(), grads):
        for p, g in zip(group, g_group):
            g = g.detach().to(p.dtype)
            p.grad = g.clone() if p.grad is None else p.grad.add_(g)
