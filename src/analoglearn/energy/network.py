"""Layered convolutional / dense Hopfield networks (Scellier et al. 2023, PAPERS.md A.1).

A network has a clamped input ``s0 = x`` and free *layer states* ``s1 … sL`` (hard-sigmoid, in
[0, 1]) followed by an unbounded output ``o = s_{L+1}``. Layers are coupled by *interactions*
(:mod:`.interactions`), each with its own energy term ``E_I = −⟨drive_I(s_source), s_target⟩``:
conv-pool interactions, then dense ones, consecutive layers coupled. The energy of one example::

    E(s) = Σ_k (½‖s_k‖² − ⟨b_k, s_k⟩) + Σ_I E_I(s_source(I), s_target(I))      (k = 1 … L+1)

Its minimiser in ``s_k`` alone, before the clamp to [0, 1], is the *pre-activation* (the rule the
minimiser, ``∂E/∂s_k = s_k − h_k`` and the estimators share, :meth:`HopfieldNetwork.preactivation`)::

    h_k = Σ_{I: target k} drive_I(s_source) + b_k + Σ_{I: source k} feedback_I(s_target)

A state is a list ``[s1, …, sL, o]`` of tensors with a leading batch dimension. Weights stay the
``.weight`` of an ``nn.Conv2d`` / ``nn.Linear`` (``bias=False``) so that weight-noise models find
them by module type; biases are separate per-channel parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .interactions import ConvPoolInteraction, DenseInteraction, Interaction

__all__ = [
    "ConvPoolInteraction",
    "DenseInteraction",
    "DriveCache",
    "HopfieldNetwork",
    "Interaction",
    "State",
    "Weights",
]

State = list[Tensor]
"""Layer states ``[s1, …, sL, o]``, each ``(B, *layer_shape)``."""
Weights = list[tuple[Tensor, Tensor]]
"""``[(W_k, b_k)]``, k = 1 … L+1: the weight of interaction k−1 (0-based) and the bias of layer k."""
Drive = tuple[Tensor, Tensor | None]
"""``(drive_I(s_source), aux_I)`` of one interaction."""


def _uniform_(tensor: Tensor, bound: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        values = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
        tensor.copy_((2.0 * values - 1.0) * bound)


class DriveCache:
    """``(drive_I, aux_I)`` per interaction index, kept while the interaction's source is unchanged.

    ``enabled=False`` keeps nothing (every drive and arg-max is recomputed: the reference code).
    """

    def __init__(self, net: HopfieldNetwork, enabled: bool = True) -> None:
        self.enabled, self.outgoing = enabled, net.outgoing
        self.values: dict[int, Drive] = {}

    def changed(self, layer: int) -> None:
        """Layer ``layer`` (0 = x) was updated: the drives of the interactions it feeds are stale."""
        for i in self.outgoing[layer]:
            self.values.pop(i, None)


class HopfieldNetwork(nn.Module):
    """A layered Hopfield network: conv-pool layers, then dense layers, then a dense output.

    Relax it with its method (``method.predict(x)``) or a minimiser
    (``Minimizer(...).relax(net, x, net.zero_state(B), iterations)``); calling it raises TypeError.

    Args:
        in_shape: ``(C, H, W)`` of the clamped input ``s0``.
        conv_channels: channels of the conv-pool layers ``s1 … s_m`` (each halves H and W).
        num_classes: output units ``K``.
        gains: one gain per interaction (``len(conv_channels) + len(dense_units) + 1``).
        generator: random generator for the initialisation of A.1: weights ``U(±gain/√fan_in)``,
            biases ``U(±0.5/√fan_in)``.
        dense_units: widths of dense hidden layers after the conv layers (may be empty).

    Attributes:
        interactions: the energy terms (:class:`Interaction`), input to output.
        incoming, outgoing: per layer number k (0 = x … L+1 = o), the indices of the interactions
            whose target (resp. source) is layer k.
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
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.interactions = nn.ModuleList()
        self.biases = nn.ParameterList()
        self.layer_shapes: list[tuple[int, ...]] = []
        channels, height, width = self.in_shape
        for layer, out_channels in enumerate(conv_channels, start=1):
            self.interactions.append(ConvPoolInteraction(channels, out_channels, source=layer - 1, target=layer))
            channels, height, width = out_channels, height // 2, width // 2
            self.layer_shapes.append((channels, height, width))
        features = channels * height * width
        for units in (*dense_units, num_classes):
            layer = len(self.layer_shapes) + 1
            self.interactions.append(DenseInteraction(features, units, source=layer - 1, target=layer))
            self.layer_shapes.append((units,))
            features = units
        if len(gains) != len(self.interactions):
            raise ConfigError(
                f"model gains: expected {len(self.interactions)} values (one per interaction), "
                f"got {list(gains)}"
            )
        for interaction, (gain, shape) in zip(self.interactions, zip(gains, self.layer_shapes)):
            bias = nn.Parameter(torch.empty(shape[0]))
            _uniform_(interaction.weight, gain / math.sqrt(interaction.fan_in), generator)
            _uniform_(bias, 0.5 / math.sqrt(interaction.fan_in), generator)
            self.biases.append(bias)
        layers = range(len(self.layer_shapes) + 1)
        self.incoming = [[i for i, m in enumerate(self.interactions) if m.target == k] for k in layers]
        self.outgoing = [[i for i, m in enumerate(self.interactions) if m.source == k] for k in layers]

    # ----------------------------------------------------------------- structure
    def layer_parameters(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """``[(W_k, b_k)]`` for k = 1 … L+1."""
        return [(i.weight, b) for i, b in zip(self.interactions, self.biases)]

    def param_groups(self) -> list[list[nn.Parameter]]:
        """One group per layer, ``[W_k, b_k]``, for per-layer learning rates (A.4)."""
        return [[w, b] for w, b in self.layer_parameters()]

    def weights(self, dtype: torch.dtype | None = None, *, detach: bool = True) -> Weights:
        """``[(W_k, b_k)]`` cast to ``dtype`` (the relaxation's precision), detached by default."""
        out = []
        for w, b in self.layer_parameters():
            w, b = (w.detach(), b.detach()) if detach else (w, b)
            out.append((w.to(dtype), b.to(dtype)) if dtype is not None else (w, b))
        return out

    def zero_state(self, batch: int, *, dtype: torch.dtype | None = None, device=None) -> State:
        """All-zero layer states for a batch."""
        ref = self.biases[0]
        dtype, device = dtype or ref.dtype, device or ref.device
        return [torch.zeros((batch, *shape), dtype=dtype, device=device) for shape in self.layer_shapes]

    def bias_view(self, k: int, bias: Tensor) -> Tensor:
        """Bias ``b_k`` (0-based layer index) shaped to broadcast against ``(B, *layer_shape)``."""
        return bias.view(-1, 1, 1) if len(self.layer_shapes[k]) == 3 else bias

    # ----------------------------------------------------------------- the pre-activation rule
    def drive(self, i: int, x: Tensor, state: State, weights: Weights, cache: DriveCache | None = None) -> Drive:
        """``(drive_I(s_source), aux_I)`` of interaction ``i`` (0-based), from ``cache`` if there."""
        if cache is not None and i in cache.values:
            return cache.values[i]
        interaction = self.interactions[i]
        pre = x if interaction.source == 0 else state[interaction.source - 1]
        value = interaction.drive(pre, weights[i][0])
        if cache is not None and cache.enabled:
            cache.values[i] = value
        return value

    def preactivation(
        self, k: int, x: Tensor, state: State, weights: Weights, cache: DriveCache | None = None
    ) -> Tensor:
        """``h_k = Σ_{I→k} drive_I(s_source) + b_k + Σ_{I←k} feedback_I(s_target)``, ``(B, *shape_k)``.

        Args:
            k: layer number, 1 … L+1 (L+1 = the output).
            x: clamped input ``(B, C, H, W)``; state: ``[s1, …, o]``; weights: ``[(W_k, b_k)]``, all
                in one dtype.
            cache: drives and arg-max indices to reuse and keep (``None``: computed afresh).
        """
        drives = [self.drive(i, x, state, weights, cache)[0] for i in self.incoming[k]]
        h = drives[0]
        for drive in drives[1:]:
            h = h + drive
        h = h + self.bias_view(k - 1, weights[k - 1][1])
        for i in self.outgoing[k]:
            interaction = self.interactions[i]
            aux = self.drive(i, x, state, weights, cache)[1] if interaction.uses_aux else None
            h = h + interaction.feedback(state[interaction.target - 1], aux, weights[i][0], state[k - 1].shape)
        return h

    # ----------------------------------------------------------------- energy and gradients
    def energy(self, x: Tensor, state: State) -> Tensor:
        """Hopfield energy ``E(s)`` of A.1 per example, shape ``(B,)`` (self terms included)."""
        weights = self.weights(state[0].dtype, detach=False)
        layers = [x, *state]
        total = 0.0
        for k, (s, (_, b)) in enumerate(zip(state, weights)):
            total = total + (0.5 * s * s - self.bias_view(k, b) * s).flatten(1).sum(1)
        for interaction, (w, _) in zip(self.interactions, weights):
            total = total + interaction.energy(layers[interaction.source], layers[interaction.target], w)
        return total

    def state_gradients(self, x: Tensor, state: State) -> State:
        """Analytic ``∂E/∂s_k = s_k − h_k`` (:meth:`preactivation`), each ``(B, *shape_k)``."""
        weights, cache = self.weights(state[0].dtype, detach=False), DriveCache(self)
        return [s - self.preactivation(k, x, state, weights, cache) for k, s in enumerate(state, start=1)]

    def parameter_gradients(
        self, x: Tensor, state: State, input_drive: dict[int, Drive] | None = None
    ) -> Weights:
        """Analytic batch-mean ``(∂E/∂W_k, ∂E/∂b_k)`` at ``state``, in the parameters' dtype.

        ``∂E/∂W_k = −⟨pre ⊗ post⟩`` (through the max-pool arg-max for conv layers) and
        ``∂E/∂b_k = −Σ post`` (summed over positions), both averaged over the batch.
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
        return list(zip(g_w, g_b))

    def forward(self, x: Tensor) -> Tensor:
        """Not a feed-forward map: raises TypeError (relax with a method or a minimiser)."""
        raise TypeError(
            "a HopfieldNetwork is not called: it is relaxed by its method (method.predict(x)) or by "
            "Minimizer(...).relax(net, x, net.zero_state(B), iterations)"
        )
