"""Layered convolutional / dense Hopfield networks (Scellier et al. 2023, PAPERS.md A.1), with skips.

A network has a clamped input ``s0 = x`` and free *layer states* ``s1 … sL`` (each clamped to its
activation range ``[lo_k, hi_k]``, [0, 1] by default: the hard sigmoid) followed by an unbounded
output ``o = s_{L+1}``. Layers are coupled by *interactions* (:mod:`.interactions`), each with its
own energy term ``E_I = −⟨drive_I(s_source), s_target⟩``: the *chain* (conv(-pool) interactions,
then dense ones, consecutive layers coupled; ``interactions[k−1]`` is the chain interaction into
layer k) and then the *skips* (a layer coupled to a non-adjacent one, :class:`Skip`). The energy
of one example::

    E(s) = Σ_k (½‖s_k‖² − ⟨b_k, s_k⟩) + Σ_I E_I(s_source(I), s_target(I))      (k = 1 … L+1)

Its minimiser in ``s_k`` alone, before the clamp to the range, is the *pre-activation* (the rule
the minimiser, ``∂E/∂s_k = s_k − h_k`` and the estimators share, :meth:`HopfieldNetwork.preactivation`)::

    h_k = Σ_{I: target k} drive_I(s_source) + b_k + Σ_{I: source k} feedback_I(s_target)

Minimising ``½‖s_k‖² − ⟨h_k, s_k⟩`` over the box ``[lo_k, hi_k]`` (separable, convex) gives
``s_k = clamp(h_k, lo_k, hi_k)`` for any range, so the minimiser's update is exact in s_k; only the
max-pool terms need the majorise-minimise argument of :class:`~.interactions.ConvInteraction`, which
holds when the max-pooled interaction's target is non-negative (checked here).

**Read-out** (:class:`Readout`). ``'energy'`` (paper A): the output is the last layer of the energy and
the cost is ``C = ½‖γ·o − y‖²`` (γ the *output gain*, 1 by default). ``'cross_entropy'`` (Laborieux
et al. 2021): the output ``o = W_out·flatten(s_L) + b_out`` is a linear read-out *outside* the
energy (no feedback into s_L, no energy term) and ``C = −Σ_c y_c log softmax(γ·o)_c``; the nudging acts
on s_L through ``∂C/∂s_L`` (:mod:`.minimize`), and W_out, b_out learn from ``β·∂C/∂θ``
(:meth:`HopfieldNetwork.parameter_gradients`).

A state is a list ``[s1, …, sL, o]`` of tensors with a leading batch dimension. Weights stay the
``.weight`` of an ``nn.Conv2d`` / ``nn.Linear`` (``bias=False``) so that weight-noise models find
them by module type; biases are separate per-channel parameters, one per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .interactions import ConvInteraction, ConvPoolInteraction, DenseInteraction, Interaction
from .layout import DOWNSAMPLE, READOUTS, Range, Readout, Skip, check_range, colour_layers

__all__ = [
    "DOWNSAMPLE",
    "READOUTS",
    "ConvInteraction",
    "ConvPoolInteraction",
    "DenseInteraction",
    "DriveCache",
    "HopfieldNetwork",
    "Interaction",
    "Readout",
    "Skip",
    "State",
    "Weights",
]

State = list[Tensor]
"""Layer states ``[s1, …, sL, o]``, each ``(B, *layer_shape)``."""
Weights = list[tuple[Tensor, ...]]
"""One tuple per interaction i (:meth:`HopfieldNetwork.layer_parameters`): ``(W_i, b_{i+1})`` for the
chain interaction into layer i+1 (its weight and that layer's bias), ``(W_i,)`` for a skip."""
Drive = tuple[Tensor, Tensor | None]
"""``(drive_I(s_source), aux_I)`` of one interaction."""

def _uniform_(tensor: Tensor, bound: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        values = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
        tensor.copy_((2.0 * values - 1.0) * bound)


class DriveCache:
    """``(drive_I, aux_I)`` per interaction index, kept while the interaction's source is unchanged,
    and per layer k the sum ``Σ_{I→k} drive_I + b_k`` (``bases``), kept while all its sources are.

    The base of the layer fed by the clamped input is computed once per relaxation instead of once
    per iteration; it is the same sum in the same order as :meth:`HopfieldNetwork.preactivation`'s,
    so the states are bit-equal. ``enabled=False`` keeps nothing (every drive and arg-max is
    recomputed: the reference code).
    """

    def __init__(self, net: HopfieldNetwork, enabled: bool = True, input_indices: bool = True) -> None:
        self.enabled, self.outgoing = enabled, net.outgoing
        self.targets = [interaction.target for interaction in net.interactions]
        self.sources = [interaction.source for interaction in net.interactions]
        self.values: dict[int, Drive] = {}
        self.bases: dict[int, Tensor] = {}
        self.input_indices = input_indices  # False: the drives from the clamped input skip their arg-max indices

    def changed(self, layer: int) -> None:
        """Layer ``layer`` (0 = x) was updated: the drives of the interactions it feeds are stale."""
        for i in self.outgoing[layer]:
            self.values.pop(i, None)
            self.bases.pop(self.targets[i], None)

    def select(self, rows: Tensor) -> None:
        """Keep only the examples ``rows`` (a boolean mask or indices over the batch) of every cached
        drive, arg-max and base: the relaxation dropped the others (:class:`~.minimize.Minimizer`).

        A drive from the clamped input whose target's base is cached is no longer read (the base holds
        it, and no feedback flows into the input): it is dropped rather than cut."""
        self.values = {i: (drive[rows], None if aux is None else aux[rows]) for i, (drive, aux) in self.values.items()
                       if not (self.sources[i] == 0 and self.targets[i] in self.bases)}
        self.bases = {k: base[rows] for k, base in self.bases.items()}


class HopfieldNetwork(nn.Module):
    """A Hopfield network: conv(-pool) layers, then dense layers, a dense output, and skips.

    Relax it with its method (``method.predict(x)``) or a minimiser
    (``Minimizer(...).relax(net, x, net.zero_state(B), iterations)``); calling it raises TypeError.

    Args:
        in_shape: ``(C, H, W)`` of the clamped input ``s0``.
        conv_channels: channels of the conv layers ``s1 … s_m``.
        num_classes: output units ``K``.
        gains: one gain per interaction, chain then skips (``len(conv_channels) + len(dense_units)
            + 1 + len(skips)``).
        generator: random generator for the initialisation of A.1: weights ``U(±gain/√fan_in)``,
            biases ``U(±0.5/√fan_in)`` (fan-in of the chain interaction into the layer).
        dense_units: widths of dense hidden layers after the conv layers (may be empty).
        downsample: per conv layer, how its chain interaction halves H and W: ``'max'`` (2×2
            max-pool, paper A's, the default), ``'avg'`` (2×2 average pool), ``'stride'`` (stride-2
            conv), or ``'none'`` (same resolution).
        skips: skip interactions (:class:`Skip` or ``[source, target]``), initialised after the chain.
        ranges: activation range ``(lo, hi)`` of every hidden layer, or one per hidden layer
            (default (0, 1)); the output is unbounded.
        readout: ``'energy'`` or ``'cross_entropy'`` (:class:`Readout`).
        output_gain: the output gain γ of the cost (:class:`Readout`).

    Attributes:
        interactions: the energy terms (:class:`Interaction`): the chain, then the skips.
        incoming, outgoing: per layer number k (0 = x … L+1 = o), the indices of the interactions
            whose target (resp. source) is layer k.
        ranges: ``(lo_k, hi_k)`` per layer 1 … L+1 (the output's is ``(−inf, inf)``).
        colours: colour of each layer 1 … L+1 (:func:`colour_layers`), the asynchronous groups.
        readout: the :class:`Readout`.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        conv_channels: Sequence[int],
        num_classes: int,
        *,
        gains: Sequence[float],
        generator: torch.Generator,
        dense_units: Sequence[int] = (),
        downsample: Sequence[str] | None = None,
        skips: Sequence[Skip | Sequence[int]] = (),
        ranges: Range | Sequence[Range] | None = None,
        readout: str = "energy",
        output_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.readout = Readout(readout, output_gain)
        self.interactions = nn.ModuleList()
        self.biases = nn.ParameterList()
        self.layer_shapes: list[tuple[int, ...]] = []
        downsample = ["max"] * len(conv_channels) if downsample is None else list(downsample)
        if len(downsample) != len(conv_channels):
            raise ConfigError(
                f"downsample: expected one of {', '.join(DOWNSAMPLE)} per conv layer ({len(conv_channels)}), "
                f"got {downsample}"
            )
        channels, height, width = self.in_shape
        for layer, (out_channels, mode) in enumerate(zip(conv_channels, downsample), start=1):
            if mode not in DOWNSAMPLE:
                raise ConfigError(f"downsample of layer s{layer}: {mode!r} is not one of {', '.join(DOWNSAMPLE)}")
            factor = 1 if mode == "none" else 2
            if height % factor or width % factor:
                raise ConfigError(f"layer s{layer} halves its input, so its size {height}×{width} must be even")
            interaction = ConvInteraction(channels, out_channels, source=layer - 1, target=layer, factor=factor,
                                          mode="max" if mode == "none" else mode)
            self.interactions.append(interaction)
            channels, height, width = out_channels, height // factor, width // factor
            self.layer_shapes.append((channels, height, width))
        features = channels * height * width
        for units in (*dense_units, num_classes):
            layer = len(self.layer_shapes) + 1
            self.interactions.append(DenseInteraction(features, units, source=layer - 1, target=layer))
            self.layer_shapes.append((units,))
            features = units
        self.chain = len(self.interactions)
        if not self.readout.in_energy and len(self.layer_shapes) < 2:
            raise ConfigError("the cross-entropy read-out reads the last hidden layer: give at least one hidden layer")
        self.ranges = self._ranges(ranges)
        for skip in map(Skip.parse, skips):
            self.interactions.append(self._skip(skip))
        if len(gains) != len(self.interactions):
            raise ConfigError(
                f"model gains: expected {len(self.interactions)} values (one per interaction: {self.chain} "
                f"in the chain, {len(self.interactions) - self.chain} skips), got {list(gains)}"
            )
        for i, (interaction, gain) in enumerate(zip(self.interactions, gains)):
            _uniform_(interaction.weight, gain / math.sqrt(interaction.fan_in), generator)
            if i < self.chain:
                bias = nn.Parameter(torch.empty(self.layer_shapes[i][0]))
                _uniform_(bias, 0.5 / math.sqrt(interaction.fan_in), generator)
                self.biases.append(bias)
        for i, m in enumerate(self.interactions):
            if getattr(m, "mode", None) == "max" and self.ranges[m.target - 1][0] < 0:
                raise ConfigError(
                    f"interaction {i} max-pools into layer s{m.target}, whose activation range "
                    f"{list(self.ranges[m.target - 1])} admits negative values: the minimiser's majorise-"
                    "minimise step needs a non-negative target there (use lo >= 0, or avg pooling)"
                )
        layers = range(len(self.layer_shapes) + 1)
        self.incoming = [[i for i, m in enumerate(self.interactions) if m.target == k] for k in layers]
        self.outgoing = [[i for i, m in enumerate(self.interactions) if m.source == k] for k in layers]
        readout_index = self.chain - 1 if not self.readout.in_energy else None
        self.feedbacks = [[i for i in out if i != readout_index] for out in self.outgoing]
        self.colours = colour_layers(len(self.layer_shapes), self.interactions)

    def _ranges(self, ranges: Range | Sequence[Range] | None) -> list[Range]:
        hidden = len(self.layer_shapes) - 1
        if ranges is None:
            values: list[object] = [(0.0, 1.0)] * hidden
        elif isinstance(ranges, (list, tuple)) and len(ranges) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in ranges
        ):
            values = [ranges] * hidden
        elif isinstance(ranges, (list, tuple)) and len(ranges) == hidden:
            values = list(ranges)
        else:
            raise ConfigError(
                f"activation ranges: give one [lo, hi] for every hidden layer or one per hidden layer "
                f"({hidden}), got {ranges!r}"
            )
        out = [check_range(k, v) for k, v in enumerate(values, start=1)]
        return [*out, (-math.inf, math.inf)]

    def _skip(self, skip: Skip) -> Interaction:
        last = len(self.layer_shapes)
        shapes = [self.in_shape, *self.layer_shapes]
        i, j = skip.source, skip.target
        if not (isinstance(i, int) and isinstance(j, int) and 0 <= i < j - 1 and j <= last):
            raise ConfigError(
                f"skip {[i, j]}: source and target are layer numbers with 0 <= source < target - 1 <= {last - 1} "
                "(0 = input; adjacent layers are already coupled by the chain)"
            )
        if j == last and not self.readout.in_energy:
            raise ConfigError(
                f"skip {[i, j]}: the cross-entropy read-out reads s{last - 1} only; skip into a hidden layer"
            )
        pre, post = shapes[i], shapes[j]
        if len(post) == 1:
            return DenseInteraction(math.prod(pre), post[0], source=i, target=j)
        if len(pre) == 1:
            raise ConfigError(f"skip {[i, j]}: a dense layer s{i} cannot feed the conv layer s{j} (shape {post})")
        factor = pre[1] // post[1]
        if factor < 1 or pre[1] != factor * post[1] or pre[2] != factor * post[2]:
            raise ConfigError(
                f"skip {[i, j]}: shapes {pre} → {post} cannot match by pooling (the target's height and "
                "width must divide the source's by one integer factor)"
            )
        return ConvInteraction(pre[0], post[0], source=i, target=j, kernel=skip.kernel, factor=factor,
                               mode=skip.mode)

    # ----------------------------------------------------------------- structure
    def layer_parameters(self) -> list[tuple[nn.Parameter, ...]]:
        """One tuple per interaction: ``(W_i, b_{i+1})`` for the chain, ``(W_i,)`` for a skip (:data:`Weights`)."""
        chain = [(m.weight, b) for m, b in zip(self.interactions, self.biases)]
        return [*chain, *((m.weight,) for m in list(self.interactions)[self.chain:])]

    def param_groups(self) -> list[list[nn.Parameter]]:
        """One group per interaction (:meth:`layer_parameters`), for per-layer learning rates (A.4)."""
        return [list(group) for group in self.layer_parameters()]

    def weights(self, dtype: torch.dtype | None = None, *, detach: bool = True) -> Weights:
        """:meth:`layer_parameters` cast to ``dtype`` (the relaxation's precision), detached by default."""
        return [
            tuple((p.detach() if detach else p).to(dtype) if dtype is not None else (p.detach() if detach else p)
                  for p in group)
            for group in self.layer_parameters()
        ]

    def zero_state(self, batch: int, *, dtype: torch.dtype | None = None, device=None) -> State:
        """The state nearest zero for a batch: zero clamped into each layer's activation range."""
        ref = self.biases[0]
        dtype, device = dtype or ref.dtype, device or ref.device
        state = []
        for shape, (lo, hi) in zip(self.layer_shapes, self.ranges):
            value = min(max(0.0, lo), hi)
            state.append(torch.full((batch, *shape), value, dtype=dtype, device=device))
        return state

    def bias_view(self, k: int, bias: Tensor) -> Tensor:
        """Bias ``b_k`` (0-based layer index) shaped to broadcast against ``(B, *layer_shape)``."""
        return bias.view(-1, 1, 1) if len(self.layer_shapes[k]) == 3 else bias

    def activate(self, k: int, h: Tensor, inplace: bool = False) -> Tensor:
        """``clamp(h, lo_k, hi_k)`` for a hidden layer (0-based index ``k``), ``h`` itself for the output.

        ``inplace``: clamp ``h`` itself (the caller owns it and needs no gradient through it)."""
        if k == len(self.layer_shapes) - 1:
            return h
        lo, hi = self.ranges[k]
        # in place as hardtanh_, which is clamp_ bit for bit but has a vmap batching rule (clamp_ has none)
        return F.hardtanh_(h, lo, hi) if inplace else h.clamp(lo, hi)

    # ----------------------------------------------------------------- the pre-activation rule
    def drive(self, i: int, x: Tensor, state: State, weights: Weights, cache: DriveCache | None = None) -> Drive:
        """``(drive_I(s_source), aux_I)`` of interaction ``i`` (0-based), from ``cache`` if there."""
        if cache is not None and i in cache.values:
            return cache.values[i]
        interaction = self.interactions[i]
        pre = x if interaction.source == 0 else state[interaction.source - 1]
        indices = interaction.source != 0 or cache is None or cache.input_indices
        value = interaction.drive(pre, weights[i][0], indices)
        if cache is not None and cache.enabled:
            cache.values[i] = value
        return value

    def preactivation(
        self, k: int, x: Tensor, state: State, weights: Weights, cache: DriveCache | None = None
    ) -> Tensor:
        """``h_k = Σ_{I→k} drive_I(s_source) + b_k + Σ_{I←k} feedback_I(s_target)``, ``(B, *shape_k)``.

        The cross-entropy read-out is outside the energy: it sends no feedback into s_L.

        Args:
            k: layer number, 1 … L+1 (L+1 = the output).
            x: clamped input ``(B, C, H, W)``; state: ``[s1, …, o]``; weights: :data:`Weights`, all
                in one dtype.
            cache: drives and arg-max indices to reuse and keep (``None``: computed afresh).
        """
        h = cache.bases.get(k) if cache is not None else None
        if h is None:
            drives = [self.drive(i, x, state, weights, cache)[0] for i in self.incoming[k]]
            h = drives[0]
            for drive in drives[1:]:
                h = h + drive
            h = h + self.bias_view(k - 1, weights[k - 1][1])
            if cache is not None and cache.enabled:
                cache.bases[k] = h
        fresh = False  # h is a tensor of this call's own (not a cached base): add into it in place
        for i in self.feedbacks[k]:
            interaction = self.interactions[i]
            aux = self.drive(i, x, state, weights, cache)[1] if interaction.uses_aux else None
            feedback = interaction.feedback(state[interaction.target - 1], aux, weights[i][0], state[k - 1].shape)
            if fresh and not (torch.is_grad_enabled() and (h.requires_grad or feedback.requires_grad)):
                h.add_(feedback)
            else:
                h, fresh = h + feedback, True
        return h

    def readout_force(self, x: Tensor, state: State, weights: Weights, target: Tensor,
                      cache: DriveCache | None = None) -> tuple[Tensor, Tensor]:
        """``(∂C/∂s_L, o)`` of the cross-entropy read-out at the current ``s_L``: ``o = W_out·s_L + b_out``
        and ``∂C/∂s_L = W_outᵀ ∂C/∂o`` (a transposed read of the read-out), shaped like s_L."""
        i = self.chain - 1
        out = self.drive(i, x, state, weights, cache)[0] + weights[i][1]
        grad = self.interactions[i].feedback(self.readout.output_gradient(out, target), None, weights[i][0],
                                             state[-2].shape)
        return grad, out

    # ----------------------------------------------------------------- energy and gradients
    def energy(self, x: Tensor, state: State) -> Tensor:
        """Hopfield energy ``E(s)`` of A.1 per example, shape ``(B,)`` (self terms included; the
        cross-entropy read-out is not part of it)."""
        weights = self.weights(state[0].dtype, detach=False)
        layers = [x, *state]
        total = 0.0
        in_energy = len(state) if self.readout.in_energy else len(state) - 1
        for k in range(in_energy):
            s, b = state[k], weights[k][1]
            total = total + (0.5 * s * s - self.bias_view(k, b) * s).flatten(1).sum(1)
        for i, interaction in enumerate(self.interactions):
            if self.readout.in_energy or i != self.chain - 1:
                total = total + interaction.energy(layers[interaction.source], layers[interaction.target],
                                                   weights[i][0])
        return total

    def state_gradients(self, x: Tensor, state: State) -> State:
        """Analytic ``∂E/∂s_k = s_k − h_k`` (:meth:`preactivation`), each ``(B, *shape_k)``.

        Under the cross-entropy read-out the output is not in E: its entry is the read-out's residual
        ``o − (W_out·s_L + b_out)``."""
        weights, cache = self.weights(state[0].dtype, detach=False), DriveCache(self)
        return [s - self.preactivation(k, x, state, weights, cache) for k, s in enumerate(state, start=1)]

    def parameter_gradients(
        self, x: Tensor, state: State, input_drive: dict[int, Drive] | None = None, *, beta: float = 0.0,
        target: Tensor | None = None,
    ) -> Weights:
        """Analytic batch-mean ``∂F/∂θ`` of ``F = E + β·C`` at ``state``, in the parameters' dtype.

        ``∂E/∂W_I = −⟨pre ⊗ adjoint(post)⟩`` (through the max-pool arg-max) and ``∂E/∂b_k = −Σ s_k``
        (summed over positions), both averaged over the batch. With the energy read-out C depends
        on θ only through the state, so ``∂F/∂θ = ∂E/∂θ``; with the cross-entropy read-out the
        read-out's parameters are outside E and ``∂F/∂W_out = β·⟨∂C/∂o ⊗ s_L⟩``,
        ``∂F/∂b_out = β·⟨∂C/∂o⟩`` at ``o = W_out·s_L + b_out`` (``target`` one-hot ``(B, K)``).
        ``input_drive``: ``{i: (drive, aux)}`` of the interactions fed by the clamped input, if
        already known (``Relaxation.input_drive``): their arg-max indices are not recomputed.
        """
        dtype = self.biases[0].dtype
        x, state = x.to(dtype), [s.detach().to(dtype) for s in state]
        weights = self.weights(dtype)
        cache = DriveCache(self)
        cache.values.update(input_drive or {})
        layers, g_w = [x, *state], []
        for i, interaction in enumerate(self.interactions):
            aux = self.drive(i, x, state, weights, cache)[1] if interaction.uses_aux else None
            pre, post = layers[interaction.source], layers[interaction.target]
            g_w.append(interaction.weight_gradient(pre, post, aux, weights[i][0]))
        g_b = [(-s.sum((0, 2, 3)) if s.dim() == 4 else -s.sum(0)) / s.shape[0] for s in state]
        if not self.readout.in_energy:
            i = self.chain - 1
            if beta == 0:
                g_w[i], g_b[i] = torch.zeros_like(g_w[i]), torch.zeros_like(g_b[i])
            else:
                assert target is not None, "the cross-entropy read-out's nudged gradient needs the target"
                s_last = state[-2].flatten(1)
                out = self.drive(i, x, state, weights, cache)[0] + weights[i][1]
                grad_out = self.readout.output_gradient(out, target.to(dtype))
                g_w[i] = beta * (grad_out.t() @ s_last) / s_last.shape[0]
                g_b[i] = beta * grad_out.mean(0)
        grads: Weights = [(g_w[i], g_b[i]) for i in range(self.chain)]
        return grads + [(g,) for g in g_w[self.chain:]]

    def forward(self, x: Tensor) -> Tensor:
        """Not a feed-forward map: raises TypeError (relax with a method or a minimiser)."""
        raise TypeError(
            "a HopfieldNetwork is not called: it is relaxed by its method (method.predict(x)) or by "
            "Minimizer(...).relax(net, x, net.zero_state(B), iterations)"
        )
