"""The one read function through which every analog matrix-vector product goes.

``read(x, weight, op, tile, ...)`` applies the chain of :mod:`analoglearn.analog.tile` around
``op(x, weight)``: input clipping and DAC, optional weight clipping, tiling, and per tile output
noise, clipping and ADC; then the digital sum over tiles and the bias. It is generic over ``op``:
any function registered in :data:`OPS` with its :class:`Geometry`; :func:`register_op` adds more
(e.g. a Hopfield network's own drive), and a ``functools.partial`` of a registered function
(``partial(F.conv2d, stride=2, padding=1)``) has the geometry of that function.

**Tiles and their geometry.** ``weight`` is always the tensor stored in the crossbar, shaped as a
forward layer stores it: ``(N_out, N_in)`` dense, ``(C_out, C_in, *kernel)`` conv. Its axis 1
indexes the physical *rows* (with the kernel positions: a conv's rows are C_in × k_h × k_w, channel
major, as im2col and aihwkit-lightning order them), axis 0 the *columns*. Tiles split the rows at
whole input channels, into ⌈C_in/c⌉ balanced groups of at most c = ⌊tile_rows/(k_h·k_w)⌋ channels
(a kernel that does not fit one tile is an error); a linear layer's rows split at single features,
so its tiles are exactly aihwkit-lightning's ``max_input_size`` slices.

- *Forward read* (``F.linear``, ``F.conv*d``): x drives the rows. Each tile t computes the partial
  sum y_t = op(x_t, W[:, rows_t]), which gets its own noise and ADC; the digital periphery adds them.
- *Transposed read* (``linear_transposed``, ``F.conv_transpose*d``: the feedback of the same
  crossbar, e.g. in a Hopfield network's relaxation): x drives the columns, the rows are read. The
  same physical tiles are used; each drives all its columns at once (the model limits rows, not
  columns, per tile) and reads out its own rows, so tile t gives the slice ``rows_t`` of the output
  with its own noise and ADC, and the slices are concatenated: nothing is summed digitally. For a
  transposed conv, the overlap-add of neighbouring kernel positions happens inside the tile's
  analog sum (one ADC per output pixel), an approximation of a chip that reads each kernel position
  separately and adds them digitally.

**Shapes.** Dense: x ``(..., N_in)`` → y ``(..., N_out)`` (forward) or x ``(..., N_out)`` → y
``(..., N_in)`` (transposed). Conv: x ``(B, C, *spatial)`` → y ``(B, C', *spatial')``. A range r_in
is a float, a 0-dim tensor or a per-channel tensor ``(C,)`` over x's channels (axis −1 dense, 1 conv).

**Digital periphery.** The bias is added after the ADC, digitally; activation functions, pooling
(max-pooling included) and normalisation act on the converted outputs, outside the read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .quantize import TINY, convert, read_out
from .tile import TileConfig, levels

Op = Callable[..., torch.Tensor]


def linear_transposed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The transposed read of a dense crossbar: y = x·W, x ``(..., N_out)``, W ``(N_out, N_in)`` → ``(..., N_in)``."""
    y = x @ weight
    return y if bias is None else y + bias


@dataclass(frozen=True)
class Geometry:
    """How an op maps onto a crossbar (module doc).

    ``axis``: the channel axis of x and of y (−1 dense, 1 conv). ``transposed``: False if x drives
    the rows (weight axis 1) and tiles' partial sums are added; True if x drives the columns
    (weight axis 0) and each tile returns its rows' slice of y.
    """

    axis: int
    transposed: bool = False


OPS: dict[Callable[..., torch.Tensor], Geometry] = {
    F.linear: Geometry(-1),
    F.conv1d: Geometry(1),
    F.conv2d: Geometry(1),
    F.conv3d: Geometry(1),
    linear_transposed: Geometry(-1, transposed=True),
    F.conv_transpose1d: Geometry(1, transposed=True),
    F.conv_transpose2d: Geometry(1, transposed=True),
    F.conv_transpose3d: Geometry(1, transposed=True),
}
"""The ops :func:`read` knows, with their crossbar geometry."""


def register_op(fn: Callable[..., torch.Tensor], geometry: Geometry) -> None:
    """Let :func:`read` accept ``fn`` (called as ``fn(x, weight)`` or ``fn(x, weight, bias)``)."""
    OPS[fn] = geometry


def geometry(op: Op) -> Geometry:
    """The geometry of ``op`` or of the function a ``functools.partial`` wraps."""
    fn = op
    while isinstance(fn, functools.partial):
        fn = fn.func
    if fn not in OPS:
        names = ", ".join(getattr(f, "__name__", repr(f)) for f in OPS)
        raise ConfigError(f"read() does not know the op {getattr(fn, '__name__', fn)!r}: use one of {names} "
                          "(or a functools.partial of one), or register it with analog.read.register_op.")
    return OPS[fn]


def tile_slices(channels: int, kernel_positions: int, tile_rows: int | None) -> list[tuple[int, int]]:
    """``(start, size)`` of each tile's input channels: ⌈C/c⌉ balanced groups of at most
    c = ⌊tile_rows/kernel_positions⌋ channels (one group if ``tile_rows`` is None)."""
    if tile_rows is None or channels * kernel_positions <= tile_rows:
        return [(0, channels)]
    per_tile = tile_rows // kernel_positions
    if per_tile < 1:
        raise ConfigError(f"tile.tile_rows = {tile_rows} cannot hold one input channel of a kernel with "
                          f"{kernel_positions} positions: use tile_rows ≥ {kernel_positions}.")
    count = math.ceil(channels / per_tile)
    base, extra = divmod(channels, count)
    sizes = [base + (i < extra) for i in range(count)]
    starts = [sum(sizes[:i]) for i in range(count)]
    return list(zip(starts, sizes))


def read(
    x: torch.Tensor,
    weight: torch.Tensor,
    op: Op,
    tile: TileConfig,
    *,
    bias: torch.Tensor | None = None,
    in_range: torch.Tensor | float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One analog MVM: ``op(x, weight) + bias`` through the tile model (module doc for shapes and geometry).

    Args:
        x: the inputs (digital values).
        weight: the crossbar's weights, forward-shaped (an ``nn.Parameter``; weight noise applied
            to it in place, e.g. by :func:`analoglearn.noise.perturbed`, is read as programmed).
        op: a function of :data:`OPS`, or a ``functools.partial`` of one.
        tile: the non-idealities.
        bias: added digitally after the conversion, on y's channel axis.
        in_range: r_in of this layer (float, 0-dim or ``(C,)`` tensor; a tensor that requires
            grad is learned). None with ``tile.in_range == "static"`` uses ``tile.r_in``.
        generator: source of the output noise (required when ``tile.out_noise > 0``); the draws
            follow the order of the reads, so one seed replays a whole forward pass.

    Returns:
        y, shaped as ``op(x, weight)``.
    """
    if tile.ideal:
        return op(x, weight, bias)
    geo = geometry(op)
    if tile.out_noise > 0 and generator is None:
        raise ConfigError("tile.out_noise > 0 needs a torch.Generator: pass generator=... (replayable draws).")
    r = _input_range(x, geo.axis, tile, in_range)
    if r is not None:
        x = convert(x, r, tile.in_signed, levels(tile.dac_bits, tile.in_signed) if tile.dac_bits else None)
    w = weight
    if tile.w_clip is not None:
        limit = tile.w_clip * weight.detach().std()
        w = weight.clamp(-limit, limit)
    slices = tile_slices(w.shape[1], math.prod(w.shape[2:]), tile.tile_rows)
    if len(slices) == 1 and not tile.converts_output:
        return op(x, w, bias)
    if len(slices) > 1:
        _check_ungrouped(x, w, op, geo)
    r_ref = None if r is None else (r.detach() if isinstance(r, torch.Tensor) else torch.tensor(r))
    parts = []
    for start, size in slices:
        w_t = w if len(slices) == 1 else w.narrow(1, start, size)
        if geo.transposed:
            y_t = op(x, w_t)
        else:
            y_t = op(x if len(slices) == 1 else x.narrow(geo.axis, start, size), w_t)
        if tile.converts_output:
            r_t = r_ref if r_ref.dim() == 0 or geo.transposed else r_ref.flatten().narrow(0, start, size)
            y_ref = r_t.max().to(y_t.device, y_t.dtype) * _w_max(w_t, geo, y_t.dim(), tile.out_per_channel)
            y_t = read_out(y_t, y_ref, tile.out_noise, tile.out_bound,
                           levels(tile.adc_bits, True) if tile.adc_bits else None, generator)
        parts.append(y_t)
    y = torch.cat(parts, geo.axis) if geo.transposed else _sum(parts)
    if bias is None:
        return y
    b = bias.view(-1, *([1] * (y.dim() - 2))) if geo.axis == 1 else bias
    return y + b if torch.is_grad_enabled() and (y.requires_grad or b.requires_grad) else y.add_(b)


def _input_range(x: torch.Tensor, axis: int, tile: TileConfig,
                 in_range: torch.Tensor | float | None) -> torch.Tensor | float | None:
    """r_in broadcastable to x (module doc), or None when the tile has no input range."""
    if tile.in_range == "off":
        return None
    if in_range is None:
        if tile.in_range != "static":
            raise ConfigError(f"tile.in_range = {tile.in_range!r} needs this layer's range: pass in_range= "
                              "(from analog.calibrate for calibrated ranges, analog.init_ranges for learned ones).")
        return float(tile.r_in)
    if not isinstance(in_range, torch.Tensor):
        return float(in_range)
    r = in_range.abs() if in_range.requires_grad else in_range
    r = r.to(x.device, x.dtype).clamp_min(TINY)
    if r.numel() == 1:
        return r.reshape(())
    channels = x.shape[axis]
    if r.numel() != channels:
        raise ConfigError(f"a per-channel input range has {r.numel()} values but the input has {channels} channels "
                          f"(shape {tuple(x.shape)}): calibrate with this tile and model again.")
    return r.view(-1, *([1] * (x.dim() - 2))) if axis == 1 else r.reshape(-1)


def _w_max(w_t: torch.Tensor, geo: Geometry, y_dim: int, per_channel: bool) -> torch.Tensor:
    """max |W_t| over the tile (0-dim) or per output column of the read, shaped to broadcast on y."""
    a = w_t.detach().abs()
    if not per_channel:
        return a.amax()
    out_dim = 1 if geo.transposed else 0
    m = a.amax(dim=[d for d in range(a.dim()) if d != out_dim])
    return m.view(-1, *([1] * (y_dim - 2))) if geo.axis == 1 else m


def _sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """The digital sum of the tiles' outputs (in place on the first when no gradient is needed)."""
    y = parts[0]
    grad = torch.is_grad_enabled() and any(p.requires_grad for p in parts)
    for p in parts[1:]:
        y = y + p if grad else y.add_(p)
    return y


def _check_ungrouped(x: torch.Tensor, w: torch.Tensor, op: Op, geo: Geometry) -> None:
    """Tiling splits whole input channels; a grouped conv's channels do not map to rows one to one."""
    groups = op.keywords.get("groups", 1) if isinstance(op, functools.partial) else 1
    forward_grouped = not geo.transposed and x.shape[geo.axis] != w.shape[1]
    if groups != 1 or forward_grouped:
        raise ConfigError("tile.tile_rows splits a grouped convolution: tiling needs groups = 1 "
                          "(set tile_rows to null, or large enough for one tile per layer).")
