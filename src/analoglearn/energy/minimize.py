"""Energy minimisation: the fast fixed-point minimiser of Scellier et al. 2023 (PAPERS.md A.2).

Every layer update is ``s_k ← clamp(h_k, lo_k, hi_k)`` with the pre-activation
``h_k = Σ drives into k + b_k + Σ feedbacks into k`` of :meth:`HopfieldNetwork.preactivation`
(the exact minimiser of E in s_k over its range, a majorise-minimise step where max-pooling is
involved). Layers of one colour of the interaction graph (``net.colours``) never interact, so

* the **asynchronous** schedule updates the colours in turn: block-coordinate descent, E never
  increases. On a chain the colouring is paper A's odd group ``{s1, s3, …}`` then even group
  ``{s2, s4, …}`` (the output belongs to the group of its parity, and is left out when clamped);
  a skip between layers of equal parity splits a group further;
* the **synchronous** schedule (Laborieux et al. 2021) updates all layers from the old state.

Nudging, with the cost ``C`` of the network's read-out (γ its output gain):

* energy read-out, ``C = ½‖γo − y‖²``: the output update is exact: ``o = W·s_L + b`` when free, and the
  minimiser of ``E + β·C``, ``o = (h + βγ·y)/(1 + βγ²)``, when nudged (``output_update='exact'``);
  the reference code's iteration ``o ← h − βγ(γo − y)`` (same fixed point for |βγ²| < 1) is
  ``'reference'``;
* cross-entropy read-out: the output ``o = W_out·s_L + b_out`` is outside the energy and never
  nudged; s_L is. With ``g = ∂C/∂s_L`` at the current s_L, C is convex in s_L with curvature at most
  ``λ = ½γ²‖W_out‖₂²`` (the softmax Jacobian's eigenvalues are ≤ ½), so for β > 0
  ``C(s) ≤ C(s₀) + ⟨g, s − s₀⟩ + (λ/2)‖s − s₀‖²`` and the minimiser of that majoriser of E + βC is
  ``s_L = clamp((h − βg + βλ·s₀) / (1 + βλ), lo, hi)``; for β < 0, βC is concave and its
  linearisation majorises it: ``s_L = clamp(h − βg, lo, hi)``. Either way E + βC never increases
  under the asynchronous schedule (``output_update`` does not apply).

Caching (:class:`DriveCache`): the drive of each interaction, e.g. ``maxpool(conv(s_k))``, and
its arg-max indices are computed once and reused for the feedback into s_k until s_k changes, so
no convolution is computed twice in an iteration (the reference recomputes the indices: about a
third more convolutions); the sum of a layer's drives and bias is kept while its sources are
unchanged (the input layer's: once per relaxation).

Stopping: the iteration count is the cap (and, without a tolerance, the paper's fixed schedule).
With a tolerance τ the residual ``max|Δs|`` of an iteration is measured every ``check_every``
iterations; per example (the default), an example whose own residual is below τ keeps its state and
leaves the batch, so a batch costs about the mean of its examples' iterations; otherwise the batch
stops when its largest residual is below τ. Either way the state ends within about 10·τ of the fixed
point the uncapped fixed schedule reaches (``tests/energy/test_stop.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
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
STOPS = ("example", "batch")
"""Who stops a relaxation under a tolerance (``method.stop``): each example on its own, or the batch."""


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
        iterations: iterations actually run (fewer than asked when the tolerance was met); under the
            per-example stop, those of the example that ran longest.
        residual: ``max|Δs|`` of the last checked iteration (``None`` unless tolerance or trace was set).
        trace: ``max|Δs|`` per iteration when ``trace=True``.
        input_drive: ``{i: (drive_I(x), aux_I)}`` of the interactions fed by the clamped input, in
            the relaxation's dtype, reusable by later relaxations on the same input and weights
            (``None`` when caching is off or the relaxation was differentiable).
        example_iterations: ``(B,)`` iterations each example ran under the per-example stop
            (``Minimizer.per_example``), else ``None``.
    """

    state: State
    iterations: int
    residual: float | None = None
    trace: list[float] = field(default_factory=list)
    input_drive: dict[int, Drive] | None = None
    example_iterations: Tensor | None = None

    @property
    def mean_iterations(self) -> float:
        """Iterations per example: their mean under the per-example stop, else ``iterations``."""
        used = self.example_iterations
        return float(used.float().mean()) if used is not None else float(self.iterations)


@dataclass(frozen=True)
class Minimizer:
    """Fixed-point energy minimiser.

    Attributes:
        schedule: ``'asynchronous'`` (odd then even layers) or ``'synchronous'`` (all at once).
        precision: ``'fp32'``, ``'bf16'``, ``'fp16'`` (or ``'fp64'`` for diagnostics): states and
            weights are cast for the relaxation; results come back in the parameters' dtype.
        output_update: nudged output update, ``'exact'`` minimiser or the ``'reference'`` iteration.
        tolerance: stop early when one iteration's ``max|Δs| < tolerance`` (``None``: fixed iteration
            count; the iteration count stays the cap).
        cache: reuse drives and max-pool indices between half-sweeps (``False``: the reference's
            recomputation, kept for benchmarks and tests).
        check_every: with a tolerance, measure the residual only on every ``check_every``-th iteration
            (iterations k, 2k, …): the check (one pass over the state and one host synchronisation)
            costs about as much as an iteration of a small network, so checking every iteration
            can eat what stopping saves. The relaxation stops at the first checked iteration
            below the tolerance, so it runs at most ``check_every − 1`` iterations more than
            ``check_every = 1`` would.
        per_example: with a tolerance, each example stops on its own: at a check, the examples whose
            own ``max|Δs|`` (over their layers) is below the tolerance keep their state and leave
            the batch, and the iterations that follow compute only the rest (their drives, arg-max
            indices and bases are cut to the rest's rows). The examples of a batch never interact,
            so every example ends as it would alone; a batch costs about the mean of its examples'
            iterations instead of their maximum. ``False``: the batch stops when all its examples
            have (the whole-batch residual). Not with a differentiable relaxation (truncated
            backprop keeps one graph) nor with ``compile`` (the shapes would change every check).
        compile: run each iteration (one asynchronous or synchronous sweep) through
            ``torch.compile`` (the sweep, not the unrolled loop: loops unroll and compile for
            minutes). The first relaxation of each shape compiles (tens of seconds on a CPU); the
            states equal the eager ones to rounding (``tests/energy/test_minimize.py``). Needs a C++
            compiler on CPU (Triton on CUDA): :func:`check_compile`.
    """

    schedule: str = "asynchronous"
    precision: str = "fp32"
    output_update: str = "exact"
    tolerance: float | None = None
    cache: bool = True
    check_every: int = 1
    compile: bool = False
    per_example: bool = True

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
        if self.tolerance is not None and not (math.isfinite(self.tolerance) and self.tolerance > 0):
            raise ConfigError(f"tolerance must be a finite number > 0 or null, got {self.tolerance}")
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 1:
            raise ConfigError(f"check_every must be a positive integer, got {self.check_every!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be true or false, got {self.compile!r}")
        if not isinstance(self.per_example, bool):
            raise ConfigError(f"per_example must be true or false, got {self.per_example!r}")

    def groups(self, net: HopfieldNetwork, clamped: bool) -> list[list[int]]:
        """0-based layer indices updated together: the colour groups of ``net.colours`` in colour
        order (parity groups on a chain), or one group if synchronous; the output left out if clamped."""
        num_layers = len(net.layer_shapes)
        free = list(range(num_layers - 1 if clamped else num_layers))
        if self.schedule == "synchronous":
            return [free]
        groups = [[k for k in free if net.colours[k] == c] for c in range(max(net.colours) + 1)]
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
        input_indices: bool = True,
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
            input_indices: ``False`` when nothing will take a weight gradient at this state (an
                evaluation): the max-pools of the drives from the clamped input keep their values only
                (no feedback flows into the input, so the relaxation never reads their arg-max), and the
                result has no ``input_drive``.
        """
        dtype = check_precision(self.precision, x.device)
        if clamp_output is not None and not net.readout.in_energy:
            raise ConfigError(
                "the cross-entropy read-out has no output state to clamp (CL and CpL need the energy read-out)"
            )
        weights = net.weights(dtype, detach=not differentiable)
        s = [t.to(dtype) if differentiable else t.detach().to(dtype) for t in state]
        if clamp_output is not None:
            s[-1] = clamp_output.detach().to(dtype)
        target = target.to(dtype) if target is not None else None
        x, drives = x.to(dtype), DriveCache(net, self.cache, input_indices)
        if input_drive and self.cache and not differentiable and next(iter(input_drive.values()))[0].dtype == dtype:
            drives.values.update(input_drive)
        result = Relaxation(state=s, iterations=0)
        nudge = _Nudge(beta, target, self._curvature(net, weights, beta))
        iterate = _compiled(self) if self.compile else self._iterate
        per_example = self.per_example and self.tolerance is not None and not differentiable and not self.compile
        leavers = _Leavers(net, x) if per_example else None
        active_x = x
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            for n in range(1, iterations + 1):
                check = self.tolerance is not None and n % self.check_every == 0
                track = trace or check
                delta = iterate(net, active_x, s, drives, weights, nudge, clamp_output is not None, track,
                                per_example and check)
                result.iterations += 1
                if track:
                    result.residual = float(delta.max()) if isinstance(delta, Tensor) else float(delta)
                    result.trace.append(result.residual)
                    if self.tolerance is not None and result.residual < self.tolerance:
                        break
                if leavers is not None and check and bool((stopped := delta < self.tolerance).any()):
                    active_x, nudge = leavers.leave(stopped, n, active_x, s, drives, nudge)
            if leavers is not None:
                s = leavers.finish(s, result.iterations)
                result.example_iterations = leavers.used
                if leavers.done is not None:  # the cache holds the last rows only: the input's drives are whole
                    drives = DriveCache(net, self.cache, input_indices)
                    drives.values.update(leavers.sourced)
            if not net.readout.in_energy:  # the read-out of the final s_L
                s[-1] = net.preactivation(len(s), x, s, weights, drives)
        out_dtype = net.biases[0].dtype
        result.state = [t.to(out_dtype) for t in s]
        sourced = leavers.sourced if leavers is not None and leavers.done is not None else _input_drives(net, drives)
        result.input_drive = sourced if sourced and not differentiable and input_indices else None
        return result

    @staticmethod
    def _curvature(net: HopfieldNetwork, weights: Weights, beta: float) -> float:
        """``λ = ½γ²‖W_out‖₂²`` of the cross-entropy read-out when β > 0 (module doc), else 0."""
        if net.readout.in_energy or beta <= 0:
            return 0.0
        w = weights[net.chain - 1][0].detach().float()
        return 0.5 * net.readout.gain**2 * float(torch.linalg.matrix_norm(w, ord=2)) ** 2

    def _iterate(
        self, net: HopfieldNetwork, x: Tensor, s: State, drives: DriveCache, weights: Weights, nudge: _Nudge,
        clamped: bool, track: bool, per_example: bool = False,
    ) -> Tensor | float:
        """One iteration in place on the list ``s``; returns ``max|Δs|`` when ``track`` (per example,
        ``(B,)``, when ``per_example``)."""
        delta: Tensor | float = 0.0
        for group in self.groups(net, clamped):
            new = {k: self._update(net, k, x, s, drives, weights, nudge) for k in group}
            if track:
                # |Δs| in place in the difference's own buffer: one temporary per layer, not two
                if per_example:
                    changes = torch.stack([(new[k] - s[k]).detach().abs_().flatten(1).amax(1) for k in group])
                    change = changes.amax(0)
                else:
                    change = torch.stack([(new[k] - s[k]).detach().abs_().max() for k in group]).max()
                delta = change if isinstance(delta, float) else torch.maximum(delta, change)
            for k in group:
                s[k] = new[k]
                drives.changed(k + 1)
        return delta

    def _update(
        self, net: HopfieldNetwork, k: int, x: Tensor, s: State, drives: DriveCache, weights: Weights, nudge: _Nudge,
    ) -> Tensor:
        """New value of layer ``k`` (0-based) from the current state (module doc)."""
        h = net.preactivation(k + 1, x, s, weights, drives)
        beta, last = nudge.beta, len(s) - 1
        if beta == 0 or (k < last - 1) or (k == last - 1 and net.readout.in_energy):
            # h is this update's own tensor unless it is the layer's cached base (no feedback into k)
            own = not (drives.enabled and not net.feedbacks[k + 1])
            return net.activate(k, h, inplace=own and not (torch.is_grad_enabled() and h.requires_grad))
        readout = net.readout
        if k == last - 1:  # s_L under the cross-entropy read-out's nudge
            force, _ = net.readout_force(x, s, weights, nudge.target, drives)
            if nudge.curvature > 0:
                h = (h - beta * force + (beta * nudge.curvature) * s[k]) / (1.0 + beta * nudge.curvature)
            else:
                h = h - beta * force
            return net.activate(k, h)
        if not readout.in_energy:
            return h
        gain = readout.gain
        if self.output_update == "exact":  # at γ = 1 the products are exact: paper A's (h + βy)/(1 + β)
            return (h + (beta * gain) * nudge.target) / (1.0 + beta * gain * gain)
        return h - beta * readout.output_gradient(s[k], nudge.target)


def check_compile(device: torch.device | str) -> None:
    """:class:`ConfigError` unless ``torch.compile`` can build kernels on ``device`` (a C++ compiler on
    CPU, Triton on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            raise ConfigError("method.compile needs Triton on CUDA (pip install triton), or set compile: false"
                              ) from None
        return
    if device.type == "cpu":
        from torch._inductor import config as inductor

        names = [n for n in (inductor.cpp.cxx if isinstance(inductor.cpp.cxx, tuple) else (inductor.cpp.cxx,)) if n]
        if not any(shutil.which(n) for n in [*names, "g++", "c++", "clang++"]):
            raise ConfigError("method.compile needs a C++ compiler on CPU (none found: install g++), "
                              "or set compile: false")


RECOMPILE_LIMIT = 64
"""``torch._dynamo.config.recompile_limit`` while ``compile`` is on (raised from torch's 8, never lowered):
one sweep specialises on whether the residual is tracked, the nudging (free, ±β, clamped), which drives
are cached yet and the shapes, so a training step alone needs about ten variants."""


@functools.cache
def _compiled(minimizer: Minimizer):
    """``minimizer._iterate`` through ``torch.compile`` (one per minimizer; shapes recompile as needed)."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(minimizer._iterate, dynamic=False)


@dataclass(frozen=True)
class _Nudge:
    """β, the one-hot target and the read-out curvature λ of one relaxation."""

    beta: float
    target: Tensor | None
    curvature: float

    def select(self, rows: Tensor) -> _Nudge:
        """The nudge of the examples ``rows`` (a boolean mask over the batch)."""
        return self if self.target is None else dataclasses.replace(self, target=self.target[rows])


def _input_drives(net: HopfieldNetwork, drives: DriveCache) -> dict[int, Drive]:
    """The cached drives of the interactions fed by the clamped input."""
    return {i: drives.values[i] for i in net.outgoing[0] if i in drives.values}


class _Leavers:
    """The per-example stop's book-keeping over a batch of B: the rows still relaxing, the final states
    of those that left, the iterations each ran, the input's drives of the whole batch."""

    def __init__(self, net: HopfieldNetwork, x: Tensor) -> None:
        self.net = net
        self.rows = torch.arange(x.shape[0], device=x.device)
        self.used = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        self.done: State | None = None
        self.sourced: dict[int, Drive] = {}

    def leave(self, stopped: Tensor, n: int, x: Tensor, s: State, drives: DriveCache,
              nudge: _Nudge) -> tuple[Tensor, _Nudge]:
        """The examples ``stopped`` (mask over the active rows) leave after iteration ``n``: their states
        are kept, ``s`` and the cache are cut to the others in place; the others' input and nudge."""
        if self.done is None:
            self.sourced = _input_drives(self.net, drives)
            self.done = [t.clone() for t in s]
        index = self.rows[stopped]
        for full, t in zip(self.done, s):
            full[index] = t[stopped]
        self.used[index] = n
        keep = ~stopped
        self.rows = self.rows[keep]
        s[:] = [t[keep] for t in s]
        drives.select(keep)
        return x[keep], nudge.select(keep)

    def finish(self, s: State, iterations: int) -> State:
        """The whole batch's final states, once the rows still active ran ``iterations``."""
        self.used[self.rows] = iterations
        if self.done is None:
            return s
        for full, t in zip(self.done, s):
            full[self.rows] = t
        return self.done
