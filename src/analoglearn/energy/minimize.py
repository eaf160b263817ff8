"""Energy minimisation: the fast fixed-point minimiser of Scellier et al. 2023 (PAPERS.md A.2).

Every layer update is ``s_k ← clamp(h_k, 0, 1)`` with the pre-activation
``h_k = drive_k(s_{k−1}) + b_k + feedback_{k+1}(s_{k+1})`` of :meth:`HopfieldNetwork.preactivation`
(a majorise-minimise step on E). Layers of equal parity never interact, so

* the **asynchronous** schedule updates the odd group ``{s1, s3, …}`` then the even group
  ``{s2, s4, …}`` (the output belongs to the group of its parity, and is left out when clamped):
  block-coordinate descent, E never increases;
* the **synchronous** schedule (Laborieux et al. 2021) updates all layers from the old state.

The output update is exact: ``o = W·s_L + b`` when free, and the minimiser of ``E + β·C``,
``o = (W·s_L + b + β·y)/(1 + β)``, when nudged (``output_update='exact'``); the reference code's
iteration ``o ← W·s_L + b − β(o − y)`` (same fixed point for |β| < 1) is ``'reference'``.

Caching (:class:`DriveCache`): the drive of each interaction, e.g. ``maxpool(conv(s_k))``, and
its arg-max indices are computed once and reused for the feedback into s_k until s_k changes, so
no convolution is computed twice in an iteration (the reference recomputes the indices: about a
third more convolutions).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .network import Drive, DriveCache, HopfieldNetwork, State, Weights

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}
"""Relaxation precisions: states and weights are cast to this dtype during the relaxation."""
RELAXATION_SCHEDULES = ("asynchronous", "synchronous")
"""Relaxation schedules of :class:`Minimizer`."""
OUTPUT_UPDATES = ("exact", "reference")


@functools.cache
def _probe(dtype: torch.dtype, device: str) -> str | None:
    """Run the relaxation's kernels once in ``dtype`` on ``device``; the error text, or None."""
    try:
        x = torch.ones(1, 2, 4, 4, dtype=dtype, device=device)
        w = torch.ones(2, 2, 3, 3, dtype=dtype, device=device)
        pooled, idx = F.max_pool2d(F.conv2d(x, w, padding=1), 2, return_indices=True)
        F.conv_transpose2d(F.max_unpool2d(pooled, idx, 2, output_size=(4, 4)), w, padding=1)
        (pooled.flatten(1) @ torch.ones(8, 3, dtype=dtype, device=device)).clamp(0, 1)
    except (RuntimeError, NotImplementedError, TypeError) as err:
        return str(err).splitlines()[0]
    return None


def check_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype of ``precision``; :class:`ConfigError` if unknown or not runnable on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    device = str(torch.device(device))
    error = _probe(PRECISIONS[precision], device)
    if error is not None:
        usable = [name for name, dt in PRECISIONS.items() if _probe(dt, device) is None]
        raise ConfigError(
            f"precision {precision!r} cannot run on device {device!r} ({error}); "
            f"precisions this device runs: {', '.join(usable)}"
        )
    return PRECISIONS[precision]


@dataclass
class Relaxation:
    """Result of :meth:`Minimizer.relax`.

    Attributes:
        state: final layer states, cast back to the parameters' dtype.
        iterations: iterations actually run (fewer than asked when the tolerance was met).
        residual: ``max|Δs|`` of the last iteration (``None`` unless tolerance or trace was set).
        trace: ``max|Δs|`` per iteration when ``trace=True``.
        input_drive: ``{i: (drive_I(x), aux_I)}`` of the interactions fed by the clamped input, in
            the relaxation's dtype, reusable by later relaxations on the same input and weights
            (``None`` when caching is off or the relaxation was differentiable).
    """

    state: State
    iterations: int
    residual: float | None = None
    trace: list[float] = field(default_factory=list)
    input_drive: dict[int, Drive] | None = None


@dataclass(frozen=True)
class Minimizer:
    """Fixed-point energy minimiser.

    Attributes:
        schedule: ``'asynchronous'`` (odd then even layers) or ``'synchronous'`` (all at once).
        precision: ``'fp32'``, ``'bf16'``, ``'fp16'`` (or ``'fp64'`` for diagnostics): states and
            weights are cast for the relaxation; results come back in the parameters' dtype.
        output_update: nudged output update, ``'exact'`` minimiser or the ``'reference'`` iteration.
        tolerance: stop early when ``max|Δs| < tolerance`` (``None``: fixed iteration count).
        cache: reuse drives and max-pool indices between half-sweeps (``False``: the reference's
            recomputation, kept for benchmarks and tests).
    """

    schedule: str = "asynchronous"
    precision: str = "fp32"
    output_update: str = "exact"
    tolerance: float | None = None
    cache: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in RELAXATION_SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.schedule!r}; valid schedules: {', '.join(RELAXATION_SCHEDULES)}"
            )
        if self.output_update not in OUTPUT_UPDATES:
            raise ConfigError(
                f"unknown output_update {self.output_update!r}; valid: {', '.join(OUTPUT_UPDATES)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; valid precisions: {', '.join(PRECISIONS)}"
            )
        if self.tolerance is not None and not self.tolerance > 0:
            raise ConfigError(f"tolerance must be positive or null, got {self.tolerance}")

    def groups(self, num_layers: int, clamped: bool) -> list[list[int]]:
        """0-based layer indices updated together: parity groups, or one group if synchronous."""
        free = list(range(num_layers - 1 if clamped else num_layers))
        if self.schedule == "synchronous":
            return [free]
        groups = [[k for k in free if k % 2 == 0], [k for k in free if k % 2 == 1]]
        return [group for group in groups if group]

    def relax(
        self,
        net: HopfieldNetwork,
        x: Tensor,
        state: State,
        iterations: int,
        *,
        beta: float = 0.0,
        target: Tensor | None = None,
        clamp_output: Tensor | None = None,
        differentiable: bool = False,
        trace: bool = False,
        input_drive: dict[int, Drive] | None = None,
    ) -> Relaxation:
        """Minimise ``E`` (or ``E + β·C`` with ``C = ½‖o − target‖²``) from ``state``.

        Args:
            net: the network.
            x: clamped input ``(B, C, H, W)``.
            state: initial layer states (not modified).
            iterations: maximum number of iterations (one iteration = every free layer once).
            beta: nudging strength of the output (ignored when the output is clamped).
            target: ``(B, K)`` one-hot targets, needed when ``beta != 0``.
            clamp_output: ``(B, K)`` value at which the output is held, or ``None`` (free output).
            differentiable: keep the autograd graph to the parameters (truncated backprop).
            trace: record ``max|Δs|`` at every iteration.
            input_drive: ``Relaxation.input_drive`` of an earlier relaxation of the same input with
                the same weights and precision: the input layer's conv and max-pool are not recomputed.
        """
        dtype = check_precision(self.precision, x.device)
        weights = net.weights(dtype, detach=not differentiable)
        s = [t.to(dtype) if differentiable else t.detach().to(dtype) for t in state]
        if clamp_output is not None:
            s[-1] = clamp_output.detach().to(dtype)
        target = target.to(dtype) if target is not None else None
        x, drives = x.to(dtype), DriveCache(net, self.cache)
        if input_drive and self.cache and not differentiable and next(iter(input_drive.values()))[0].dtype == dtype:
            drives.values.update(input_drive)
        track = trace or self.tolerance is not None
        result = Relaxation(state=s, iterations=0)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            for _ in range(iterations):
                delta = self._iterate(net, x, s, drives, weights, beta, target, clamp_output is not None, track)
                result.iterations += 1
                if track:
                    result.residual = float(delta)
                    result.trace.append(result.residual)
                    if self.tolerance is not None and result.residual < self.tolerance:
                        break
        out_dtype = net.biases[0].dtype
        result.state = [t.to(out_dtype) for t in s]
        sourced = {i: drives.values[i] for i in net.outgoing[0] if i in drives.values}
        result.input_drive = sourced if sourced and not differentiable else None
        return result

    def _iterate(
        self, net: HopfieldNetwork, x: Tensor, s: State, drives: DriveCache, weights: Weights,
        beta: float, target: Tensor | None, clamped: bool, track: bool,
    ) -> Tensor | float:
        """One iteration in place on the list ``s``; returns ``max|Δs|`` when ``track``."""
        delta: Tensor | float = 0.0
        for group in self.groups(len(s), clamped):
            new = {k: self._update(net, k, x, s, drives, weights, beta, target) for k in group}
            if track:
                changes = torch.stack([(new[k] - s[k]).detach().abs().max() for k in group])
                delta = torch.maximum(torch.as_tensor(delta, dtype=changes.dtype), changes.max())
            for k in group:
                s[k] = new[k]
                drives.changed(k + 1)
        return delta

    def _update(
        self, net: HopfieldNetwork, k: int, x: Tensor, s: State, drives: DriveCache, weights: Weights,
        beta: float, target: Tensor | None,
    ) -> Tensor:
        """New value of layer ``k`` (0-based) from the current state: ``clamp(h, 0, 1)``, or the output's."""
        h = net.preactivation(k + 1, x, s, weights, drives)
        if k < len(s) - 1:
            return h.clamp(0.0, 1.0)
        if beta == 0:
            return h
        if self.output_update == "exact":
            return (h + beta * target) / (1.0 + beta)
        return h - beta * (s[k] - target)


