"""Layered convolutional / dense Hopfield networks (Scellier et al. 2023, PAPERS.md A.1).

A network has a clamped input ``s0 = x`` and free *layer states* ``s1 … sL`` (hard-sigmoid, in
[0, 1]) followed by an unbounded output ``o``. Consecutive layers are coupled by *interactions*:

* :class:`ConvPoolInteraction` — ``−⟨maxpool₂(conv₃ₓ₃(s_{k−1}; W_k)), s_k⟩`` (3×3 conv, pad 1,
  2×2 max-pool, no conv bias);
* :class:`DenseInteraction` — ``−⟨W_k · flatten(s_{k−1}), s_k⟩``.

The energy of one example (the Hopfield energy with its quadratic self terms) is::

    E(s) = ½ Σ_k ‖s_k‖² − Σ_k ⟨drive_k(s_{k−1}), s_k⟩ − Σ_k ⟨b_k, s_k⟩        (k = 1 … L+1, s_{L+1} = o)

A state is a list ``[s1, …, sL, o]`` of tensors with a leading batch dimension. Weights stay the
``.weight`` of an ``nn.Conv2d`` / ``nn.Linear`` (``bias=False``) so that weight-noise models find
them by module type; biases are separate per-channel parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

State = list[Tensor]
"""Layer states ``[s1, …, sL, o]``, each ``(B, *layer_shape)``."""


def _uniform_(tensor: Tensor, bound: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        values = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
        tensor.copy_((2.0 * values - 1.0) * bound)


class ConvPoolInteraction(nn.Module):
    """``E_k = −⟨maxpool₂(conv(s_{k−1}; W)), s_k⟩``: 3×3 conv, padding 1, then 2×2 max-pool.

    Shapes: pre ``(B, C_in, H, W)``, post ``(B, C_out, H//2, W//2)``, weight ``(C_out, C_in, 3, 3)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # skip_init: the network initialises from its own generator, never from the global one
        self.conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, 3, padding=1, bias=False)
        self.fan_in = in_channels * 9

    @staticmethod
    def drive(pre: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(maxpool(conv(pre)), argmax indices)``: the input this interaction feeds to ``s_k``."""
        return F.max_pool2d(F.conv2d(pre, weight, padding=1), 2, return_indices=True)

    @staticmethod
    def feedback(post: Tensor, indices: Tensor, weight: Tensor, pre_shape: torch.Size) -> Tensor:
        """``−∂E_k/∂s_{k−1} = convᵀ(maxunpool(s_k))`` with the arg-max indices of ``conv(s_{k−1})``."""
        unpooled = F.max_unpool2d(post, indices, 2, output_size=pre_shape[-2:])
        return F.conv_transpose2d(unpooled, weight, padding=1)

    @staticmethod
    def weight_gradient(pre: Tensor, post: Tensor, indices: Tensor, weight: Tensor) -> Tensor:
        """``∂E_k/∂W = −(1/B) Σ_b pre ⋆ maxunpool(post)`` (batch mean), shape of ``weight``."""
        unpooled = F.max_unpool2d(post, indices, 2, output_size=pre.shape[-2:])
        grad = torch.ops.aten.convolution_backward(
            unpooled, pre, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]
        )[1]
        return -grad / pre.shape[0]


class DenseInteraction(nn.Module):
    """``E_k = −⟨W · flatten(s_{k−1}), s_k⟩``; weight ``(n_out, n_in)``, post ``(B, n_out)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=False)
        self.fan_in = in_features

    @staticmethod
    def drive(pre: Tensor, weight: Tensor) -> tuple[Tensor, None]:
        """``(W · flatten(pre), None)``."""
        return pre.flatten(1) @ weight.t(), None

    @staticmethod
    def feedback(post: Tensor, indices: None, weight: Tensor, pre_shape: torch.Size) -> Tensor:
        """``−∂E_k/∂s_{k−1} = Wᵀ s_k``, reshaped like the pre layer."""
        return (post @ weight).view(pre_shape)

    @staticmethod
    def weight_gradient(pre: Tensor, post: Tensor, indices: None, weight: Tensor) -> Tensor:
        """``∂E_k/∂W = −(1/B) Σ_b s_k ⊗ flatten(s_{k−1})``."""
        return -(post.t() @ pre.flatten(1)) / pre.shape[0]


Interaction = ConvPoolInteraction | DenseInteraction


class HopfieldNetwork(nn.Module):
    """A layered Hopfield network: conv-pool layers, then dense layers, then a dense output.

    Args:
        in_shape: ``(C, H, W)`` of the clamped input ``s0``.
        conv_channels: channels of the conv-pool layers ``s1 … s_m`` (each halves H and W).
        dense_units: widths of dense hidden layers after the conv layers (may be empty).
        num_classes: output units ``K``.
        gains: one gain per interaction (``len(conv_channels) + len(dense_units) + 1``).
        generator: random generator for the initialisation of A.1: weights ``U(±gain/√fan_in)``,
            biases ``U(±0.5/√fan_in)``.
        eval_iterations: iterations of the free relaxation from zero run by :meth:`forward`.
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
        eval_iterations: int = 60,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.eval_iterations = eval_iterations
        self.interactions = nn.ModuleList()
        self.biases = nn.ParameterList()
        self.layer_shapes: list[tuple[int, ...]] = []
        channels, height, width = self.in_shape
        for out_channels in conv_channels:
            self.interactions.append(ConvPoolInteraction(channels, out_channels))
            channels, height, width = out_channels, height // 2, width // 2
            self.layer_shapes.append((channels, height, width))
        features = channels * height * width
        for units in (*dense_units, num_classes):
            self.interactions.append(DenseInteraction(features, units))
            self.layer_shapes.append((units,))
            features = units
        if len(gains) != len(self.interactions):
            raise ConfigError(
                f"model gains: expected {len(self.interactions)} values (one per interaction), "
                f"got {list(gains)}"
            )
        for interaction, (gain, shape) in zip(self.interactions, zip(gains, self.layer_shapes)):
            bias = nn.Parameter(torch.empty(shape[0]))
            _uniform_(self.weight_of(interaction), gain / math.sqrt(interaction.fan_in), generator)
            _uniform_(bias, 0.5 / math.sqrt(interaction.fan_in), generator)
            self.biases.append(bias)

    # ----------------------------------------------------------------- structure
    @staticmethod
    def weight_of(interaction: Interaction) -> nn.Parameter:
        """The weight parameter of an interaction (``conv.weight`` or ``linear.weight``)."""
        return (
            interaction.conv.weight
            if isinstance(interaction, ConvPoolInteraction)
            else interaction.linear.weight
        )

    @property
    def num_layers(self) -> int:
        """Number of free layers including the output (``L + 1``)."""
        return len(self.interactions)

    def layer_parameters(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """``[(W_k, b_k)]`` for k = 1 … L+1."""
        return [(self.weight_of(i), b) for i, b in zip(self.interactions, self.biases)]

    def param_groups(self) -> list[list[nn.Parameter]]:
        """One group per layer, ``[W_k, b_k]``, for per-layer learning rates (A.4)."""
        return [[w, b] for w, b in self.layer_parameters()]

    def weights(
        self, dtype: torch.dtype | None = None, *, detach: bool = True
    ) -> list[tuple[Tensor, Tensor]]:
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

    # ----------------------------------------------------------------- energy and gradients
    def drives(self, x: Tensor, state: State, weights=None) -> list[tuple[Tensor, Tensor | None]]:
        """``[(drive_k(s_{k−1}), indices_k)]`` for every layer, from the current state."""
        weights = weights or self.weights(state[0].dtype, detach=False)
        pres = [x, *state[:-1]]
        return [i.drive(pre, w) for i, pre, (w, _) in zip(self.interactions, pres, weights)]

    def energy(self, x: Tensor, state: State) -> Tensor:
        """Hopfield energy ``E(s)`` of A.1 per example, shape ``(B,)`` (self terms included)."""
        weights = self.weights(state[0].dtype, detach=False)
        total = 0.0
        for k, ((drive, _), s, (_, b)) in enumerate(zip(self.drives(x, state, weights), state, weights)):
            term = 0.5 * s * s - drive * s - self.bias_view(k, b) * s
            total = total + term.flatten(1).sum(1)
        return total

    def state_gradients(self, x: Tensor, state: State) -> State:
        """Analytic ``∂E/∂s_k = s_k − drive_k(s_{k−1}) − feedback_{k+1}(s_{k+1}) − b_k``."""
        weights = self.weights(state[0].dtype, detach=False)
        drives = self.drives(x, state, weights)
        grads = []
        for k, s in enumerate(state):
            g = s - drives[k][0] - self.bias_view(k, weights[k][1])
            if k + 1 < len(state):
                g = g - self.interactions[k + 1].feedback(
                    state[k + 1], drives[k + 1][1], weights[k + 1][0], s.shape
                )
            grads.append(g)
        return grads

    def parameter_gradients(
        self, x: Tensor, state: State, input_indices: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Analytic batch-mean ``(∂E/∂W_k, ∂E/∂b_k)`` at ``state``, in the parameters' dtype.

        ``∂E/∂W_k = −⟨pre ⊗ post⟩`` (through the max-pool arg-max for conv layers) and
        ``∂E/∂b_k = −Σ post`` (summed over positions), both averaged over the batch.
        ``input_indices``: max-pool indices of ``conv(x)`` if already known (the input is clamped).
        """
        dtype = self.biases[0].dtype
        x, state = x.to(dtype), [s.detach().to(dtype) for s in state]
        weights = self.weights(dtype)
        pres = [x, *state[:-1]]
        out = []
        for k, (interaction, pre, post) in enumerate(zip(self.interactions, pres, state)):
            if isinstance(interaction, DenseInteraction):
                indices = None
            elif k == 0 and input_indices is not None:
                indices = input_indices
            else:
                indices = interaction.drive(pre, weights[k][0])[1]
            g_w = interaction.weight_gradient(pre, post, indices, weights[k][0])
            g_b = -post.sum((0, 2, 3)) if post.dim() == 4 else -post.sum(0)
            out.append((g_w, g_b / post.shape[0]))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Free relaxation from zero (``eval_iterations`` asynchronous iterations); output ``(B, K)``."""
        from .minimize import PRECISIONS, Minimizer

        precision = {dtype: name for name, dtype in PRECISIONS.items()}.get(self.biases[0].dtype, "fp32")
        with torch.no_grad():
            state = self.zero_state(x.shape[0], device=x.device)
            return Minimizer(precision=precision).relax(self, x, state, self.eval_iterations).state[-1]
