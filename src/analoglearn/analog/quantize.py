"""Converters of the analog tile: clipping, uniform quantisation and output noise, with straight-through gradients.

A range [lo·r, r] (lo = −1 signed, 0 unsigned) and n steps from 0 to r give the quantiser

    q(x) = Δ·clip(round(x/Δ), lo·n, n),   Δ = r/n,

so a b-bit signed converter (n = 2^(b−1) − 1) has the 2^b − 1 levels {−n..n}·Δ and an unsigned one
(n = 2^b − 1) the 2^b levels {0..n}·Δ; with ``n=None`` it only clips: q(x) = clip(x, lo·r, r).
Ties round half to even (``torch.round``).

Gradients (straight-through estimator, STE):

    ∂q/∂x = 1 inside [lo·r, r] (bounds included), 0 outside;
    ∂q/∂r = (q − x)/r inside (0 without quantisation), 1 above r, lo below lo·r

(the second is the learned-step-size / PACT gradient of a learnable range r; it is computed only
when ``r`` requires grad). When no gradient is needed the converters run in place on fresh
tensors (one allocation, four element-wise passes), so evaluation pays no autograd overhead.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

TINY = 1e-30
"""Floor of ranges and bounds, so that an all-zero range cannot divide by zero."""


def _quantize(x: torch.Tensor, r: torch.Tensor | float, lo: float, n: int | None) -> torch.Tensor:
    """A new tensor: ``x`` clipped to [lo·r, r] and, if ``n`` is given, rounded to steps of r/n."""
    if n is None:
        if isinstance(r, torch.Tensor):
            return x.clamp(r * lo if lo else torch.zeros_like(r), r)
        return x.clamp(lo * r, r)
    return torch.mul(x, n / r).round_().clamp_(lo * n, n).mul_(r / n)


class _Convert(torch.autograd.Function):
    """Clip-and-quantise with the straight-through gradients of the module doc (same arithmetic as
    :func:`_quantize`, so a read gives the same bits with and without autograd)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, r: torch.Tensor | float, lo: float, n: int | None) -> torch.Tensor:
        q = _quantize(x, r, lo, n)
        ctx.lo, ctx.n = lo, n
        if isinstance(r, torch.Tensor) and ctx.needs_input_grad[1]:
            ctx.save_for_backward(x, r)
        else:
            ctx.save_for_backward((x >= r * lo) & (x <= r))
        return q

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        if len(ctx.saved_tensors) == 1:
            (inside,) = ctx.saved_tensors
            return grad * inside, None, None, None
        x, r = ctx.saved_tensors
        above, below = x > r, x < r * ctx.lo
        inside = ~(above | below)
        if ctx.n is None:
            slope = above.to(grad.dtype) + ctx.lo * below.to(grad.dtype)
        else:
            q = _quantize(x, r, ctx.lo, ctx.n)
            slope = torch.where(inside, (q - x) / r, above.to(grad.dtype) + ctx.lo * below.to(grad.dtype))
        grad_r = (grad * slope).sum_to_size(r.shape)
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        return grad_x, grad_r, None, None


def convert(x: torch.Tensor, r: torch.Tensor | float, signed: bool = True, n: int | None = None) -> torch.Tensor:
    """Clip ``x`` to [−r, r] (``signed``) or [0, r], and quantise it to steps of r/n if ``n`` is given.

    Args:
        x: any shape.
        r: the range, > 0: a float, or a tensor broadcastable to ``x`` (per-channel ranges); a
            tensor that requires grad is learned (∂q/∂r of the module doc).
        signed: symmetric range (levels −n..n) or unsigned (0..n).
        n: largest level index (:func:`analoglearn.analog.tile.levels`); None: clip only.

    Returns:
        A new tensor shaped like ``x``; ``x`` is never modified.
    """
    lo = -1.0 if signed else 0.0
    r = r.clamp_min(TINY) if isinstance(r, torch.Tensor) else max(float(r), TINY)
    learned = isinstance(r, torch.Tensor) and r.requires_grad
    if torch.is_grad_enabled() and (x.requires_grad or learned):
        return _Convert.apply(x, r, lo, n)
    return _quantize(x, r.detach() if isinstance(r, torch.Tensor) else r, lo, n)


_scratch = threading.local()


def _buffer(like: torch.Tensor) -> torch.Tensor:
    """A reusable tensor shaped like ``like`` (per thread, device and dtype; grown as needed).

    The noise of a read is consumed at once, so its memory can serve the next read: this spares
    the page faults of a fresh large allocation, about a fifth of the cost of a draw on CPU.
    """
    cache = _scratch.__dict__.setdefault("buffers", {})
    key = (like.device, like.dtype)
    flat = cache.get(key)
    if flat is None or flat.numel() < like.numel():
        flat = cache[key] = torch.empty(like.numel(), dtype=like.dtype, device=like.device)
    return flat[: like.numel()].view(like.shape)


def normal(like: torch.Tensor, std: float, generator: torch.Generator, reuse: bool = False) -> torch.Tensor:
    """Gaussian draws N(0, std²) shaped like ``like``, made on the generator's device.

    Draws are in ``like``'s dtype when the devices agree (one pass, no cast); otherwise they are
    drawn in float32 on the generator's device and moved, so one CPU seed replays on any device.
    With ``reuse`` the draws land in a per-thread scratch buffer that the next call overwrites:
    consume them before the next draw.
    """
    if generator.device == like.device:
        out = _buffer(like) if reuse else torch.empty_like(like)
        return out.normal_(0.0, std, generator=generator)
    draw = torch.empty(like.shape, dtype=torch.float32, device=generator.device).normal_(0.0, std, generator=generator)
    return draw.to(like.device, like.dtype)


def read_out(y: torch.Tensor, y_ref: torch.Tensor, noise: float, bound: float | None, n: int | None,
             generator: torch.Generator | None) -> torch.Tensor:
    """One tile's output chain: noise, then clipping and ADC (module doc of :mod:`analoglearn.analog.tile`).

        y ← y + noise·y_ref·ξ;   y ← clip(y, ±bound·y_ref), quantised to n levels each side if n is set.

    Args:
        y: the tile's partial sums (any shape); modified in place when no gradient is needed.
        y_ref: the output reference r_ref·w_max, a 0-dim tensor or one broadcastable to ``y``
            (per output channel); detached.
        noise: σ_out (0: no noise). bound: β (None: no clipping). n: ADC levels (needs ``bound``).
        generator: source of the noise draws (required when ``noise > 0``).
    """
    y_ref = y_ref.clamp_min(TINY)
    grad = torch.is_grad_enabled() and y.requires_grad
    if bound is not None and n is not None:  # in ADC units u = y·n/(β·y_ref) the noise std is σ_out·n/β
        inv = n / (bound * y_ref)
        u = y * inv if grad else y.mul_(inv)
        if noise > 0:
            xi = normal(u, noise * n / bound, generator, reuse=True)
            u = u + xi if grad else u.add_(xi)
        if grad:
            return convert(u, float(n), True, n) * inv.reciprocal()
        return u.round_().clamp_(-n, n).mul_(inv.reciprocal())
    if noise > 0:
        xi = normal(y, noise, generator, reuse=True)
        y = torch.addcmul(y, xi, y_ref) if grad else y.addcmul_(xi, y_ref)
    if bound is None:
        return y
    limit = bound * y_ref
    return convert(y, limit, True, None) if grad else y.clamp_(-limit, limit)
