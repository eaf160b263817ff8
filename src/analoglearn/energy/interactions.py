"""Interactions: the energy terms that couple two layers of a Hopfield network (PAPERS.md A.1).

Layers are numbered ``0 = x`` (the clamped input), ``1 … L`` (``s1 … sL``) and ``L+1`` (the output
``o``). An interaction couples its ``source`` layer ``s_i`` to its ``target`` layer ``s_j`` by::

    E_I(s_i, s_j) = −⟨drive(s_i; W), s_j⟩                                  (one value per example)

and owns everything the network and the minimiser need of it: the weight ``W``, the drive into the
target ``drive(s_i)``, the feedback into the source ``−∂E_I/∂s_i`` and the weight gradient
``∂E_I/∂W``. Today's chain couples ``i = j − 1``; a skip interaction (``i < j − 1``) is one more
subclass, nothing else assumes adjacency.

**The read.** Every matrix-vector product of a drive or a feedback (the conv, its transpose, the
dense product, its transpose) goes through :func:`read`, by default ``op(x, weight)``. Inside
``with reading(reader):`` it calls ``reader(op, x, weight, site)`` instead, ``site`` the
:class:`Interaction` whose product it is (the direction, drive or feedback, is whether ``op`` is a
transposed op: :data:`conv3x3_transposed`, ``linear_transposed``), e.g. the analog tile model
``lambda op, x, w, site: analoglearn.analog.read.read(x, w, op, tile)`` (what
``analoglearn.analog.analog(net, tile, ...)`` installs, with per-site ranges). Max-pooling,
unpooling, biases and clamps stay outside the read: they are the chip's digital periphery.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..analog.read import linear_transposed

Op = Callable[..., Tensor]
"""A matrix-vector product ``op(x, weight) -> y``."""
Reader = Callable[[Op, Tensor, Tensor, "Interaction"], Tensor]
"""``reader(op, x, weight, site) -> y``: how the products of interaction ``site`` are computed
(default ``op(x, weight)``); ``op`` is one of the four ops of this module's doc."""

conv3x3 = functools.partial(F.conv2d, padding=1)
"""Drive product of :class:`ConvPoolInteraction`: x ``(B, C_in, H, W)`` → ``(B, C_out, H, W)``."""
conv3x3_transposed = functools.partial(F.conv_transpose2d, padding=1)
"""Feedback product of :class:`ConvPoolInteraction`: x ``(B, C_out, H, W)`` → ``(B, C_in, H, W)``."""

_local = threading.local()


def read(op: Op, x: Tensor, weight: Tensor, site: Interaction) -> Tensor:
    """``op(x, weight)``, or ``reader(op, x, weight, site)`` of the innermost :func:`reading` block.

    Args:
        op: the product (drive: ``conv3x3``, ``F.linear``; feedback: ``conv3x3_transposed``,
            ``linear_transposed``).
        x: its input, ``(B, C, H, W)`` for the convs, ``(B, n)`` for the dense products.
        weight: the interaction's weight as the relaxation holds it (its dtype, maybe with a graph).
        site: the interaction whose product this is.
    """
    readers = getattr(_local, "readers", None)
    return readers[-1](op, x, weight, site) if readers else op(x, weight)


@contextlib.contextmanager
def reading(reader: Reader) -> Iterator[Reader]:
    """Route every :func:`read` of this thread through ``reader`` inside the block (nestable).

    The previous reader is restored on exit, on error too.
    """
    readers = _local.__dict__.setdefault("readers", [])
    readers.append(reader)
    try:
        yield reader
    finally:
        readers.pop()


class Interaction(nn.Module):
    """``E_I = −⟨drive(s_source; W), s_target⟩``; subclasses give the weight, drive and feedback.

    Attributes:
        source: layer number ``i`` of the pre layer (0 = x).
        target: layer number ``j`` of the post layer (``L+1`` = o).
        fan_in: inputs per unit of the target (for the ``U(±gain/√fan_in)`` initialisation).
        uses_aux: whether :meth:`feedback` needs the ``aux`` that :meth:`drive` returns.

    ``aux`` is what the drive computes on the way and the feedback reuses (max-pool arg-max
    indices), or ``None``.

    Class attributes ``drive_op`` / ``feedback_op``: the products the drive and the feedback pass
    to :func:`read` (the crossbar's forward and transposed reads; ``None`` in this base class).
    """

    uses_aux: ClassVar[bool] = False
    drive_op: ClassVar[Op | None] = None
    feedback_op: ClassVar[Op | None] = None

    def __init__(self, source: int, target: int, fan_in: int) -> None:
        super().__init__()
        self.source, self.target, self.fan_in = source, target, fan_in

    @property
    def weight(self) -> nn.Parameter:
        """The weight parameter ``W``."""
        raise NotImplementedError

    def drive(self, pre: Tensor, weight: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(drive(pre; W), aux)``: the input fed to the target, shaped like the target layer."""
        raise NotImplementedError

    def feedback(self, post: Tensor, aux: Tensor | None, weight: Tensor, pre_shape: torch.Size) -> Tensor:
        """``−∂E_I/∂s_source`` at ``s_target = post``, shape ``pre_shape``."""
        raise NotImplementedError

    def weight_gradient(self, pre: Tensor, post: Tensor, aux: Tensor | None, weight: Tensor) -> Tensor:
        """Batch mean ``(1/B) Σ_b ∂E_I/∂W``, shape of ``weight``."""
        raise NotImplementedError

    def energy(self, pre: Tensor, post: Tensor, weight: Tensor) -> Tensor:
        """``E_I = −⟨drive(pre; W), post⟩`` per example, shape ``(B,)``."""
        return -(self.drive(pre, weight)[0] * post).flatten(1).sum(1)


class ConvPoolInteraction(Interaction):
    """``E_I = −⟨maxpool₂(conv(s_i; W)), s_j⟩``: 3×3 conv, padding 1, then 2×2 max-pool.

    Shapes: pre ``(B, C_in, H, W)``, post ``(B, C_out, H//2, W//2)``, weight ``(C_out, C_in, 3, 3)``
    (the ``.conv.weight`` of an ``nn.Conv2d`` without bias); aux: the max-pool arg-max indices.
    """

    uses_aux = True
    drive_op = conv3x3
    feedback_op = conv3x3_transposed

    def __init__(self, in_channels: int, out_channels: int, *, source: int, target: int) -> None:
        super().__init__(source, target, in_channels * 9)
        # skip_init: the network initialises from its own generator, never from the global one
        self.conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, 3, padding=1, bias=False)

    @property
    def weight(self) -> nn.Parameter:
        """``conv.weight``, ``(C_out, C_in, 3, 3)``."""
        return self.conv.weight

    def drive(self, pre: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(maxpool(conv(pre)), arg-max indices)``, both ``(B, C_out, H//2, W//2)``."""
        return F.max_pool2d(read(conv3x3, pre, weight, self), 2, return_indices=True)

    def feedback(self, post: Tensor, aux: Tensor | None, weight: Tensor, pre_shape: torch.Size) -> Tensor:
        """``−∂E_I/∂s_i = convᵀ(maxunpool(s_j))`` with the arg-max indices ``aux`` of ``conv(s_i)``."""
        unpooled = F.max_unpool2d(post, aux, 2, output_size=pre_shape[-2:])
        return read(conv3x3_transposed, unpooled, weight, self)

    def weight_gradient(self, pre: Tensor, post: Tensor, aux: Tensor | None, weight: Tensor) -> Tensor:
        """``∂E_I/∂W = −(1/B) Σ_b pre ⋆ maxunpool(post)`` (batch mean), shape of ``weight``."""
        unpooled = F.max_unpool2d(post, aux, 2, output_size=pre.shape[-2:])
        grad = torch.ops.aten.convolution_backward(
            unpooled, pre, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]
        )[1]
        return -grad / pre.shape[0]


class DenseInteraction(Interaction):
    """``E_I = −⟨W · flatten(s_i), s_j⟩``.

    Shapes: pre ``(B, *pre_shape)`` with ``n_in`` elements, post ``(B, n_out)``, weight
    ``(n_out, n_in)`` (the ``.linear.weight`` of an ``nn.Linear`` without bias); no aux.
    """

    drive_op = staticmethod(F.linear)
    feedback_op = staticmethod(linear_transposed)

    def __init__(self, in_features: int, out_features: int, *, source: int, target: int) -> None:
        super().__init__(source, target, in_features)
        self.linear = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=False)

    @property
    def weight(self) -> nn.Parameter:
        """``linear.weight``, ``(n_out, n_in)``."""
        return self.linear.weight

    def drive(self, pre: Tensor, weight: Tensor) -> tuple[Tensor, None]:
        """``(W · flatten(pre), None)``, ``(B, n_out)``."""
        return read(F.linear, pre.flatten(1), weight, self), None

    def feedback(self, post: Tensor, aux: Tensor | None, weight: Tensor, pre_shape: torch.Size) -> Tensor:
        """``−∂E_I/∂s_i = Wᵀ s_j``, reshaped to ``pre_shape``."""
        return read(linear_transposed, post, weight, self).view(pre_shape)

    def weight_gradient(self, pre: Tensor, post: Tensor, aux: Tensor | None, weight: Tensor) -> Tensor:
        """``∂E_I/∂W = −(1/B) Σ_b s_j ⊗ flatten(s_i)``, ``(n_out, n_in)``."""
        return -(post.t() @ pre.flatten(1)) / pre.shape[0]
