"""The tile model on any network: the :func:`analog` context manager and range calibration.

Feed-forward networks are described below; a Hopfield network
(:class:`~analoglearn.energy.network.HopfieldNetwork`) is read inside its relaxation instead, every
drive and feedback of every iteration through the tile, with ranges per *site*
``interactions.<i>.drive`` / ``interactions.<i>.feedback``: see :mod:`analoglearn.analog.relaxation`.
The same :func:`analog`, :func:`calibrate` (with ``run``, the network's inference) and
:func:`init_ranges` serve both.

Inside ``with analog(model, tile, generator=g):`` every ``nn.Linear`` and ``nn.Conv1d/2d/3d``
forward of ``model`` goes through :func:`analoglearn.analog.read.read`, in evaluation *and* in
training mode (the module's ``training`` flag changes nothing in the tile model, unlike
aihwkit-lightning, whose output noise is silently skipped in eval mode). Gradients flow through the
straight-through converters, so the same context serves hardware-aware training; it composes with
:func:`analoglearn.noise.perturbed` (weight noise in place on the ``nn.Parameter``, which the reads
then see) and with SAM / RWP, which only move the weights. On exit each layer's ``forward`` is
restored exactly (the instance attribute the context set is removed, or the previous one put back).

**State of record.** The weight is the ``nn.Parameter``; the crossbar's conductances are not kept.
A differential-pair mapping (:func:`analoglearn.noise.device.to_pair`) is linear and exact, so it
changes a read only through the conductance noise models of :mod:`analoglearn.noise`, which apply it
themselves. Those models (PCM read noise included) draw once per *trial* and hold the draw for the
whole test set; the tile's ``out_noise`` is *temporal*: drawn again at every read. The two add.

**Ranges.** ``tile.in_range``: ``static`` uses ``tile.r_in``; ``calibrated`` needs the dict that
:func:`calibrate` returns; ``learned`` needs the ``nn.Parameter`` dict of :func:`init_ranges`
(give its values to the optimiser, save them with the checkpoint). Keys are qualified module names.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .read import read
from .tile import CALIBRATIONS, TileConfig

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The layers whose forward :func:`analog` routes through the tile model (crossbars on a chip)."""

_CONV_FN = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


def analog_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(qualified name, layer)`` pairs of ``model``'s conv/linear layers, in module order: those
    :func:`analog` routes, and, in a Hopfield network, the crossbars its relaxation reads
    (``interactions.<i>.conv`` / ``interactions.<i>.linear``, whose ``.weight`` is W_i; weight clipping
    and weight noise act on them)."""
    return [(name, m) for name, m in model.named_modules() if type(m) in LAYER_TYPES]


def layer_op(layer: nn.Module) -> tuple[Any, Any]:
    """``(op, pre)`` of a layer: the op for :func:`read` and a function applied to x first (padding)."""
    if isinstance(layer, nn.Linear):
        return F.linear, None
    fn = _CONV_FN[type(layer)]
    if layer.padding_mode != "zeros":  # as nn.ConvNd does: pad explicitly, then convolve without padding
        pad = functools.partial(F.pad, pad=layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        return functools.partial(fn, stride=layer.stride, padding=0, dilation=layer.dilation, groups=layer.groups), pad
    return functools.partial(fn, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                             groups=layer.groups), None


@contextlib.contextmanager
def analog(
    model: nn.Module,
    tile: TileConfig,
    generator: torch.Generator | None = None,
    ranges: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[list[str]]:
    """Route every conv/linear forward of ``model`` through the tile model; restore it on exit.

    For a :class:`~analoglearn.energy.network.HopfieldNetwork`: every drive and feedback read of its
    relaxations inside the block instead (:func:`analoglearn.analog.relaxation.tile_relaxation`;
    ranges and the yielded names are the sites ``interactions.<i>.drive`` / ``.feedback``).

    Args:
        model: any ``nn.Module``.
        tile: the non-idealities.
        generator: source of the output noise; required when ``tile.out_noise > 0``. Draws follow
            the order of the reads, so the same seed replays a forward pass exactly, and two models
            with the same layer shapes read with the same seed see paired draws.
        ranges: per-layer input ranges (module doc), by qualified module name.

    Yields:
        The qualified names of the routed layers.

    >>> with analog(net, TileConfig(in_range="static", r_in=3, dac_bits=8), torch.Generator().manual_seed(0)):
    ...     scores = net(x)
    """
    from .relaxation import is_hopfield, tile_relaxation

    if is_hopfield(model):
        with tile_relaxation(model, tile, generator, ranges) as sites:  # type: ignore[arg-type]
            yield sites
        return
    layers = analog_layers(model)
    if not layers:
        raise ConfigError(f"analog(): {type(model).__name__} has no layer of the types "
                          f"{', '.join(t.__name__ for t in LAYER_TYPES)} to read through a tile.")
    ranges = dict(ranges or {})
    tile.check_reads(generator, [name for name, _ in layers], ranges, "layer",
                     "analog.calibrate(model, tile, batches)", "analog.init_ranges(model, tile)")
    saved = []
    try:
        for name, layer in layers:
            current = layer.__dict__.get("forward")
            if getattr(current, "_analog_read", False):
                raise ConfigError(f"layer {name!r} is already inside analog(): nested contexts are not supported.")
            saved.append((layer, "forward" in layer.__dict__, current))
            layer.forward = _routed(layer, tile, generator, ranges.get(name))
        yield [name for name, _ in layers]
    finally:
        for layer, had, previous in reversed(saved):
            if had:
                layer.forward = previous
            else:
                del layer.forward


def _routed(layer: nn.Module, tile: TileConfig, generator: torch.Generator | None,
            in_range: torch.Tensor | None) -> Any:
    """The replacement forward of one layer."""
    op, pre = layer_op(layer)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if pre is not None:
            x = pre(x)
        return read(x, layer.weight, op, tile, bias=layer.bias, in_range=in_range, generator=generator)

    forward._analog_read = True  # type: ignore[attr-defined]
    return forward


def init_ranges(model: nn.Module, tile: TileConfig, value: float | None = None) -> dict[str, nn.Parameter]:
    """Learnable input ranges, one ``nn.Parameter`` per layer, filled with ``value`` (default ``tile.r_in``).

    Shape ``()``, or ``(C_in,)`` with ``tile.in_per_channel``; on each layer's device and dtype.
    The read uses |r| (so a step through zero cannot make a range negative). For a Hopfield network:
    one per site (``interactions.<i>.drive`` / ``.feedback``), ``(channels,)`` over the read's input
    channels (:func:`analoglearn.analog.relaxation.relaxation_sites`).
    """
    from .relaxation import is_hopfield, site_ranges

    r = tile.r_in if value is None else value
    if is_hopfield(model):
        return site_ranges(model, tile, r)  # type: ignore[arg-type]
    out = {}
    for name, layer in analog_layers(model):
        shape = (layer.weight.shape[1] * layer.groups,) if not isinstance(layer, nn.Linear) else (layer.in_features,)
        w = layer.weight
        out[name] = nn.Parameter(torch.full(shape if tile.in_per_channel else (), float(r), dtype=w.dtype,
                                            device=w.device))
    return out


def calibrate(
    model: nn.Module,
    tile: TileConfig,
    batches: Iterable[Any],
    method: str | None = None,
    run: Callable[[torch.Tensor], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Input ranges r_in of every conv/linear layer of ``model``, measured on ``batches``.

    The inputs are those of the digital network (no tile model), in evaluation mode (batch-norm
    statistics are used, not updated; each module's mode is restored afterwards), without gradients.
    ``run(x)`` is the network's inference on a batch (default ``model(x)``). A Hopfield network
    needs it (its ``method.predict``, a digital relaxation): the ranges are then those of its sites
    (``interactions.<i>.drive`` / ``.feedback``), the statistic taken over the inputs of *all* reads of
    the relaxations of all batches (every iteration; a drive held by the minimiser counts once) — a
    "batch" of ``std`` below is then one read.
    With a signed range the statistic is taken of |x|, with an unsigned one of max(x, 0):

    - ``max``: r = max over all batches;
    - ``percentile``: r = the ``tile.quantile``-th quantile (``torch.quantile``, linear
      interpolation) of all values of all batches (held in memory until the end);
    - ``std``: r = ``tile.std_alpha`` × the mean over batches of each batch's std of x (the
      cumulative moving average aihwkit-lightning initialises its ranges with).

    Per layer (0-dim tensors) or, with ``tile.in_per_channel``, per input channel ``(C,)``
    (statistics over every axis but the channel axis). Layers that ``model`` never called are
    left out.

    Args:
        batches: tensors of inputs, or tuples/lists whose first element is the input.
        method: one of :data:`~analoglearn.analog.tile.CALIBRATIONS`; default ``tile.calibration``.

    Raises:
        ConfigError: for an unknown method, or if ``batches`` yields nothing.
    """
    from .read import geometry
    from .relaxation import HALF, is_hopfield, recorded, relaxation_sites

    method = tile.calibration if method is None else method
    if method not in CALIBRATIONS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIBRATIONS)}; got {method!r}.")
    hopfield = is_hopfield(model)
    if hopfield and run is None:
        raise ConfigError("calibrate() of a Hopfield network needs run=...: its inference (method.predict), "
                          "whose relaxation reads are recorded")
    forward = model if run is None else run
    stats: dict[str, list[torch.Tensor]]
    with contextlib.ExitStack() as stack:
        if hopfield:
            stats = {name: [] for name, _, _ in relaxation_sites(model)}  # type: ignore[arg-type]

            def record(name: str, op: Any, x: torch.Tensor) -> None:
                value = _statistic(x.float() if x.dtype in HALF else x, geometry(op).axis, method, tile)
                if method == "percentile" and value.shape[1] > READ_SAMPLE:  # every k-th value of this read
                    value = value[:, :: -(-value.shape[1] // READ_SAMPLE)]
                stats[name].append(value)

            stack.enter_context(recorded(model, record))  # type: ignore[arg-type]
        else:
            layers = analog_layers(model)
            stats = {name: [] for name, _ in layers}

            def hook(name: str, layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                x = args[0].detach()
                axis = -1 if isinstance(layer, nn.Linear) else 1
                stats[name].append(_statistic(x, axis, method, tile))

            for name, layer in layers:
                stack.callback(layer.register_forward_pre_hook(functools.partial(hook, name)).remove)
        count = _run_batches(model, forward, batches)
    if count == 0:
        raise ConfigError("calibrate() needs at least one batch of inputs; the batches given were empty.")
    return {name: _combine(values, method, tile) for name, values in stats.items() if values}


def _run_batches(model: nn.Module, forward: Callable[[torch.Tensor], Any], batches: Iterable[Any]) -> int:
    """``forward`` on every batch in evaluation mode without gradients (modes restored); the count."""
    modes = {m: m.training for m in model.modules()}
    count = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                forward(batch[0] if isinstance(batch, (tuple, list)) else batch)
                count += 1
    finally:
        for m, mode in modes.items():
            m.training = mode
    return count


READ_SAMPLE = 8192
"""Percentile calibration of a Hopfield network keeps at most this many values per channel of each read
(every k-th, in order): a relaxation reads each site once or twice per iteration, and keeping all of
them would hold iterations × images × units values (gigabytes for 2000 images)."""


def _statistic(x: torch.Tensor, axis: int, method: str, tile: TileConfig) -> torch.Tensor:
    """The per-batch summary of inputs ``x`` that :func:`_combine` reduces over batches."""
    v = x.abs() if tile.in_signed else x.clamp(min=0)
    if method == "std":
        source = x.movedim(axis, 0).reshape(x.shape[axis], -1) if tile.in_per_channel else x.reshape(1, -1)
        return source.std(dim=1)
    v = v.movedim(axis, 0).reshape(x.shape[axis], -1) if tile.in_per_channel else v.reshape(1, -1)
    return v.amax(dim=1) if method == "max" else v


def _combine(values: list[torch.Tensor], method: str, tile: TileConfig) -> torch.Tensor:
    """r_in from the per-batch statistics: ``(C,)`` per channel, else 0-dim."""
    if method == "max":
        r = torch.stack(values).amax(dim=0)
    elif method == "std":
        r = tile.std_alpha * torch.stack(values).mean(dim=0)
    else:
        r = _quantile(torch.cat(values, dim=1), tile.quantile)
    r = r.to(values[0].dtype)
    return r if tile.in_per_channel else r.reshape(())


def _quantile(v: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise q-quantile of ``v`` ``(C, M)`` with ``torch.quantile``'s linear interpolation.

    ``torch.quantile`` refuses inputs of more than 2^24 elements; larger inputs use two
    ``kthvalue`` selections and the same interpolation.
    """
    if v.numel() <= 2**24:
        return torch.quantile(v, q, dim=1)
    pos = q * (v.shape[1] - 1)
    low, frac = int(pos), pos - int(pos)
    below = v.kthvalue(low + 1, dim=1).values
    above = v.kthvalue(min(low + 2, v.shape[1]), dim=1).values
    return torch.lerp(below, above, frac)
