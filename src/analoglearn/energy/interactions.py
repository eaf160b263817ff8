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
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..analog.read import linear_transposed
from ..errors import ConfigError

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

    ``drive_op`` / ``feedback_op``: the products the drive and the feedback pass to :func:`read`
    (the crossbar's forward and transposed reads; ``None`` in this base class).
    """

    uses_aux: bool = False
    drive_op: Op | None = None
    feedback_op: Op | None = None

    def __init__(self, source: int, target: int, fan_in: int) -> None:
        super().__init__()
        self.source, self.target, self.fan_in = source, target, fan_in

    @property
    def weight(self) -> nn.Parameter:
        """The weight parameter ``W``."""
        raise NotImplementedError

    def drive(self, pre: Tensor, weight: Tensor, indices: bool = True) -> tuple[Tensor, Tensor | None]:
        """``(drive(pre; W), aux)``: the input fed to the target, shaped like the target layer.

        ``indices=False``: the caller will not use ``aux`` (no feedback into the source, no weight
        gradient), which may then be ``None`` and skipped (max-pooling's arg-max)."""
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


_functorch_level = getattr(torch._C._functorch, "maybe_get_level", None)
"""The functorch level of a tensor (−1: a plain tensor, outside any ``torch.func`` transform)."""


def max_unpool(post: Tensor, indices: Tensor, size: Sequence[int]) -> Tensor:
    """``F.max_unpool2d(post, indices, output_size=size)``: ``post`` ``(B, C, h, w)`` placed at the flat
    arg-max ``indices`` of a ``(B, C, *size)`` zero map, as a scatter (the same values bit for bit: pure
    placement). In place into fresh zeros, 1.2–2.5× faster than ``max_unpool2d`` on a CPU; out of
    place under a ``torch.func`` transform such as ``vmap``, where neither ``max_unpool2d`` nor an
    in-place scatter has a batching rule (both would loop over the vmapped dimension)."""
    flat, where = post.flatten(2), indices.flatten(2)
    zeros = flat.new_zeros((*flat.shape[:2], size[0] * size[1]))
    transformed = _functorch_level is None or (
        not torch.compiler.is_compiling() and (_functorch_level(post) != -1 or _functorch_level(indices) != -1))
    out = torch.scatter(zeros, 2, where, flat) if transformed else zeros.scatter_(2, where, flat)
    return out.view(*post.shape[:2], *size)


def max_pool_values(y: Tensor, factor: int) -> Tensor:
    """``F.max_pool2d(y, factor)``'s values (bit for bit, NaN included) as an elementwise maximum of the
    ``factor²`` strided views of ``y`` ``(B, C, H, W)``: no arg-max, 4–8× faster on this CPU."""
    h, w = y.shape[-2] // factor * factor, y.shape[-1] // factor * factor
    out = y[..., 0:h:factor, 0:w:factor]
    for di in range(factor):
        for dj in range(factor):
            if di or dj:
                out = torch.maximum(out, y[..., di:h:factor, dj:w:factor])
    return out.contiguous()


DOWNSAMPLINGS = ("max", "avg", "stride")
"""How a :class:`ConvInteraction` maps its source's resolution onto its target's: max-pooling (with
arg-max indices), average pooling, or the conv's stride."""

conv1x1 = functools.partial(F.conv2d, padding=0)
"""Drive product of a 1×1 :class:`ConvInteraction` (the usual skip); its feedback is ``conv1x1_transposed``."""
conv1x1_transposed = functools.partial(F.conv_transpose2d, padding=0)
"""Feedback product of a 1×1 :class:`ConvInteraction`."""
_OPS = {3: (conv3x3, conv3x3_transposed), 1: (conv1x1, conv1x1_transposed)}


class ConvInteraction(Interaction):
    """``E_I = −⟨down_p(conv_k(s_i; W)), s_j⟩``: a k×k conv (padding k//2), downsampled by p.

    ``mode`` says how (p = 1: no downsampling, a same-resolution conv):

    * ``'max'``: ``drive = maxpool_p(conv(s_i))`` with its arg-max indices as ``aux``,
      ``feedback = convᵀ(maxunpool_p(s_j))``. For fixed indices the term is bilinear; for ``s_j ≥ 0``
      it is concave in s_i (a max of linear maps weighted by ``−s_j ≤ 0``), so its linearisation at
      the current indices majorises it and the minimiser's update of s_i is a majorise-minimise step
      only if the *target* is non-negative (the network refuses a max-pooled interaction into a layer
      whose range admits negative values).
    * ``'avg'``: ``drive = avgpool_p(conv(s_i))``, ``feedback = convᵀ(upsample_p(s_j) / p²)`` (the
      adjoint of average pooling); bilinear, no sign condition.
    * ``'stride'``: ``drive = conv(s_i)`` with stride p, ``feedback = conv_transpose(s_j)`` with stride p
      (and the output padding that gives back the source's size); bilinear (the Hopfield-ResNet's
      downsampling).

    Paper A's conv-pool interaction is ``kernel=3, factor=2, mode='max'`` (the defaults). A *skip*
    (``source < target − 1``, a residual coupling) is the same class, usually a 1×1 conv with
    ``p = H_i / H_j``.

    Shapes: pre ``(B, C_in, H, W)``, post ``(B, C_out, H/p, W/p)``, weight ``(C_out, C_in, k, k)``
    (the ``.conv.weight`` of an ``nn.Conv2d`` without bias).
    """

    def __init__(self, in_channels: int, out_channels: int, *, source: int, target: int, kernel: int = 3,
                 factor: int = 2, mode: str = "max") -> None:
        if kernel not in _OPS:
            raise ConfigError(f"conv interaction kernel must be 1 or 3, got {kernel!r}")
        if mode not in DOWNSAMPLINGS:
            raise ConfigError(f"downsampling must be one of {', '.join(DOWNSAMPLINGS)}, got {mode!r}")
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ConfigError(f"downsampling factor must be a positive integer, got {factor!r}")
        super().__init__(source, target, in_channels * kernel * kernel)
        self.kernel, self.factor, self.mode = kernel, factor, mode if factor > 1 else "none"
        self.uses_aux = self.mode == "max"
        self.stride = factor if self.mode == "stride" else 1
        self.drive_op, self.feedback_op = _OPS[kernel]
        if self.stride > 1:
            self.drive_op = functools.partial(F.conv2d, stride=self.stride, padding=kernel // 2)
            self.feedback_op = functools.partial(F.conv_transpose2d, stride=self.stride, padding=kernel // 2)
        # skip_init: the network initialises from its own generator, never from the global one
        self.conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, kernel, stride=self.stride,
                                       padding=kernel // 2, bias=False)

    @property
    def weight(self) -> nn.Parameter:
        """``conv.weight``, ``(C_out, C_in, k, k)``."""
        return self.conv.weight

    def extra_repr(self) -> str:
        return f"source={self.source}, target={self.target}, factor={self.factor}, mode={self.mode!r}"

    def drive(self, pre: Tensor, weight: Tensor, indices: bool = True) -> tuple[Tensor, Tensor | None]:
        """``(down_p(conv(pre)), arg-max indices or None)``, each ``(B, C_out, H/p, W/p)`` (no indices
        with ``indices=False``: the max-pool's values alone, :func:`max_pool_values`)."""
        y = read(self.drive_op, pre, weight, self)
        if self.mode == "max":
            return F.max_pool2d(y, self.factor, return_indices=True) if indices else (max_pool_values(y, self.factor),
                                                                                   None)
        if self.mode == "avg":
            return F.avg_pool2d(y, self.factor), None
        return y, None

    def _adjoint(self, post: Tensor, aux: Tensor | None, size: torch.Size) -> Tensor:
        """The adjoint of the pooling applied to ``post`` (``post`` itself for stride / none)."""
        if self.mode == "max":
            return max_unpool(post, aux, size[-2:])
        if self.mode == "avg":
            p = self.factor
            return post.repeat_interleave(p, -2).repeat_interleave(p, -1) / (p * p)
        return post

    def _transposed(self, size: torch.Size):
        """The feedback op, with the output padding that restores ``size`` under a stride."""
        if self.stride == 1:
            return self.feedback_op
        pad = self.kernel // 2
        extra = [size[d] - ((self.conv_out(size[d]) - 1) * self.stride - 2 * pad + self.kernel) for d in (-2, -1)]
        return functools.partial(self.feedback_op, output_padding=tuple(extra)) if any(extra) else self.feedback_op

    def conv_out(self, n: int) -> int:
        """Output size of the conv along a dimension of input size ``n``."""
        return (n + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1

    def feedback(self, post: Tensor, aux: Tensor | None, weight: Tensor, pre_shape: torch.Size) -> Tensor:
        """``−∂E_I/∂s_i = convᵀ(adjoint_p(s_j))`` (arg-max indices ``aux`` for max-pooling)."""
        return read(self._transposed(pre_shape), self._adjoint(post, aux, pre_shape), weight, self)

    def weight_gradient(self, pre: Tensor, post: Tensor, aux: Tensor | None, weight: Tensor) -> Tensor:
        """``∂E_I/∂W = −(1/B) Σ_b pre ⋆ adjoint_p(post)`` (batch mean), shape of ``weight``."""
        pad, stride = self.kernel // 2, self.stride
        grad = torch.ops.aten.convolution_backward(
            self._adjoint(post, aux, pre.shape), pre, weight, None, [stride, stride], [pad, pad], [1, 1], False,
            [0, 0], 1, [False, True, False],
        )[1]
        return -grad / pre.shape[0]


ConvPoolInteraction = ConvInteraction
"""Paper A's conv-pool interaction: :class:`ConvInteraction` with its defaults (3×3, 2×2 max-pool)."""


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

    def drive(self, pre: Tensor, weight: Tensor, indices: bool = True) -> tuple[Tensor, None]:
        """``(W · flatten(pre), None)``, ``(B, n_out)``."""
        return read(F.linear, pre.flatten(1), weight, self), None

    def feedback(self, post: Tensor, aux: Tensor | None, weight: Tensor, pre_shape: torch.Size) -> Tensor:
        """``−∂E_I/∂s_i = Wᵀ s_j``, reshaped to ``pre_shape``."""
        return read(linear_transposed, post, weight, self).view(pre_shape)

    def weight_gradient(self, pre: Tensor, post: Tensor, aux: Tensor | None, weight: Tensor) -> Tensor:
        """``∂E_I/∂W = −(1/B) Σ_b s_j ⊗ flatten(s_i)``, ``(n_out, n_in)``."""
        return -(post.t() @ pre.flatten(1)) / pre.shape[0]
