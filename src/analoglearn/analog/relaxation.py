"""The tile model inside a Hopfield network's relaxation: every drive and feedback read on the chip.

A :class:`~analoglearn.energy.network.HopfieldNetwork` is not a feed-forward map: its relaxation
(:mod:`analoglearn.energy.minimize`) computes, at every layer update, the pre-activation

    h_k = Σ_{I→k} drive_I(s_source) + b_k + Σ_{I←k} feedback_I(s_target),

and every matrix-vector product of a drive or a feedback goes through one function,
:func:`analoglearn.energy.interactions.read`. :func:`analoglearn.analog.analog` on a Hopfield network
(implemented here by :func:`tile_relaxation`) installs a reader there, so that the relaxation of every
method (free and nudged phases, CL's clamped phases, TBP's differentiable relaxation, RBP's map,
``method.predict``) reads its weights through :func:`analoglearn.analog.read.read`.

**Sites.** Each interaction I = ``interactions.<i>`` (0-based, input to output) is one crossbar
holding W_i, read in two directions; each direction is a *site* with its own input range:

- ``interactions.<i>.drive``: the forward read y = W_i·x, x the source layer s_source
  (conv-pool: ``conv3x3(s, W)`` on ``(B, C_in, H, W)`` → ``(B, C_out, H, W)``, 3×3 kernel, padding 1;
  dense: ``F.linear(flatten(s), W)`` on ``(B, n_in)`` → ``(B, n_out)``);
- ``interactions.<i>.feedback``: the transposed read of the same crossbar, x the target layer
  (conv-pool: ``conv_transpose2d(maxunpool(s_target), W)`` on ``(B, C_out, H, W)`` → ``(B, C_in, H, W)``;
  dense: ``s_target·W`` on ``(B, n_out)`` → ``(B, n_in)``). The tile geometry is that of
  :mod:`analoglearn.analog.read` (its module doc): the target drives the columns, the same physical
  tiles (rows split at whole input channels, ``tile_rows``) read out their own rows, each with its
  own noise and ADC, and the slices are concatenated (nothing is summed digitally); y_ref uses the
  same w_max of the tile. The feedback of interaction 0 (into the clamped input) is never read, so
  ``interactions.0.feedback`` does not exist (:func:`relaxation_sites`).

Ranges (``calibrated``, ``learned``) are keyed by these site names; a per-channel range is over
the read's input channels (C_in or n_in for a drive, C_out or n_out for a feedback).

**Digital periphery.** Max-pooling (and its arg-max indices), max-unpooling, the biases b_k, the sum
of the drives and feedbacks into a layer, the clamp to the layer's range and the nudging (of the
output, or of s_L under the cross-entropy read-out, whose force W_outᵀ∂C/∂o is a transposed read of
the read-out) are digital, outside the read: a conv-pool drive is ``maxpool₂(ADC(tile(s)))``, the
pooling acts on converted values.

**Noise and its order.** The output noise is temporal: every read of every iteration draws fresh
noise from the one generator, in the order of the reads, so the same seed replays a whole relaxation
(and a whole evaluation) exactly. What the minimiser reads once it holds: the drive of an interaction
is computed once while its source is unchanged (:class:`~analoglearn.energy.network.DriveCache`) and
used for both the target's update and the arg-max of the source's feedback, like a value latched in
the periphery; in particular the clamped input's drive ``interactions.0.drive`` is read once per
relaxation (once per batch when an estimator hands the free phase's ``input_drive`` to the nudged
phases). Reads per iteration, for a chain of L+1 interactions with the output free: every iteration
reads the drives of the L interactions not fed by the input and the L feedbacks once each (2L reads),
plus, once per relaxation, the input drive and, asynchronously, when interaction 1 is a conv-pool,
the arg-max of s_1's first feedback before s_1 changes. ``tiny`` (L = 2): 4 per iteration, 4n + 2
asynchronous and 4n + 1 synchronous in n iterations; ``dchn_cpu`` (L = 1): 2 per iteration, 2n + 1.
The estimators' weight gradients (the arg-max indices of ∂E/∂W), RBP's map and the
logged free-state energy, computed inside the block, read through the tile as well.

**Precision.** In a bf16 or fp16 relaxation each non-ideal read converts x and W to fp32, applies
the tile in fp32 and casts y back to the relaxation's dtype (the converters' levels and the noise are
not rounded to 8 or 11 mantissa bits before the ADC); fp32 and fp64 relaxations read in their own
dtype. An ideal tile (every non-ideality off) calls the op itself: bit-equal to the plain relaxation
in every precision, gradients of all nine estimators included.

**Energy descent under quantisation and noise.** The digital asynchronous schedule is block-
coordinate descent on E (each update minimises E in one parity group; E never increases). On the
chip the drive and the feedback of an interaction are two separate reads, quantised (and noised)
separately: the update is s_k ← clamp(Q(W s_{k−1}) + b_k + Q'(Wᵀ s_{k+1}), 0, 1) with Q ≠ Q'ᵀ, which
is not the gradient of any energy (the effective couplings are no longer symmetric), so nothing is
guaranteed to decrease, and with converters and no noise the relaxation is a deterministic map on a
finite grid that ends in a fixed point or a cycle. Measured (``tests/analog/test_analog_relaxation.py``,
16 random inputs, fp32, ranges calibrated (max) on the digital relaxation, ``out_bound`` 10,
``tile_rows`` 256, no output noise; "iteration k" is the first iteration whose state was seen before):

=========  ============  ====================================  ====================================
preset     schedule      8-bit DACs and ADCs                   4-bit
=========  ============  ====================================  ====================================
dchn_cpu   asynchronous  fixed point (iteration 6 changes      fixed point (iteration 4)
                         nothing: residual exactly 0)
dchn_cpu   synchronous   fixed point (iteration 11)            fixed point (iteration 6)
tiny       asynchronous  fixed point (iteration 7)             2-cycle from iteration 7, max|Δs| = 0.031
tiny       synchronous   2-cycle from iteration 11,            2-cycle from iteration 11,
                         max|Δs| = 0.0072                      max|Δs| = 0.031
=========  ============  ====================================  ====================================

The digital energy E evaluated along the quantised trajectory is not monotone: it rises in some steps
(``dchn_cpu`` 4-bit: twice, by up to 9·10⁻⁴; ``tiny`` 8-bit asynchronous: by up to 10⁻⁴), and on a
2-cycle it rises and falls every period (``tiny`` 4-bit: ±3·10⁻⁵ of E ≈ −3.05). The quantised fixed
point is not the digital one: ``dchn_cpu``'s free output differs from the digital relaxation's (200
iterations) by up to 0.0038 at 8 bits and 0.074 at 4 bits. So with converters, use a fixed iteration
budget, or a tolerance that a 2-cycle can meet; the tolerance stop works at a fixed point (residual 0).

With output noise the state never settles: the residual floor max|Δs| after many iterations grows
with σ_out. ``dchn_cpu`` on 16×16 inputs, batch 8, 8-bit converters as above, mean of the last 10 of
40 iterations over 3 seeds: 0 at σ_out = 0, 0.0026 at 0.02, 0.0049 at 0.05, 0.0090 at 0.1 (on
28×28 inputs, batch 16, last 20 of 100 iterations, 4 seeds: 0.0029, 0.0055, 0.0104): monotone and
somewhat sublinear (5× the noise, 3.5× the floor).

**The tolerance stop sees the noise floor.** ``Minimizer(tolerance=τ)`` stops when max|Δs| < τ. With
output noise the residual stays at the floor above, so a τ below it never triggers: every relaxation
runs its full iteration budget (``free_iterations``, ``nudged_iterations``, ``eval_iterations``),
which is then the only stop, and ``free_iterations`` in the logs equals the budget. A τ above the
floor stops at the first iteration whose noisy change happens to fall below τ, i.e. at a random
point of the noise cloud around the fixed point. Without noise but with converters, τ works at a fixed
point (residual exactly 0, the relaxation stops at the first iteration that changes nothing); on a
cycle it triggers only if τ exceeds the cycle's max|Δs|, otherwise the budget runs out.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigError
from .read import Op, geometry, read
from .tile import TileConfig

if TYPE_CHECKING:
    from ..energy.network import HopfieldNetwork

DRIVE, FEEDBACK = "drive", "feedback"
"""The two directions of an interaction's crossbar (forward and transposed read)."""

HALF = (torch.bfloat16, torch.float16)
"""Relaxation dtypes whose non-ideal reads are computed in fp32 (module doc)."""

_active: set[int] = set()
_lock = threading.Lock()


def is_hopfield(model: nn.Module) -> bool:
    """Whether ``model`` is a :class:`~analoglearn.energy.network.HopfieldNetwork` (imported lazily)."""
    from ..energy.network import HopfieldNetwork

    return isinstance(model, HopfieldNetwork)


def site_name(index: int, transposed: bool) -> str:
    """``interactions.<index>.drive`` (forward read) or ``interactions.<index>.feedback`` (transposed)."""
    return f"interactions.{index}.{FEEDBACK if transposed else DRIVE}"


def relaxation_sites(net: HopfieldNetwork) -> list[tuple[str, Op, int]]:
    """``(site name, op, input channels)`` of every read the relaxation of ``net`` makes, input to output.

    Each interaction gives its drive (input channels ``W.shape[1]``: C_in or n_in) and, unless its
    source is the clamped input, its feedback (``W.shape[0]``: C_out or n_out).
    """
    sites = []
    for i, interaction in enumerate(net.interactions):
        w = interaction.weight
        if interaction.drive_op is None or interaction.feedback_op is None:
            raise ConfigError(f"interaction {i} ({type(interaction).__name__}) names no drive_op / feedback_op: "
                              "the tile model needs to know its products")
        sites.append((site_name(i, False), interaction.drive_op, int(w.shape[1])))
        if interaction.source != 0:
            sites.append((site_name(i, True), interaction.feedback_op, int(w.shape[0])))
    return sites


def tile_read(x: torch.Tensor, weight: torch.Tensor, op: Op, tile: TileConfig,
              in_range: torch.Tensor | float | None, generator: torch.Generator | None) -> torch.Tensor:
    """:func:`analoglearn.analog.read.read` of one relaxation product, in fp32 for bf16/fp16 inputs.

    Shapes as ``op(x, weight)``; the result has x's dtype. An ideal tile calls ``op(x, weight)``.
    """
    if tile.ideal:
        return op(x, weight)
    if x.dtype in HALF:
        y = read(x.float(), weight.float(), op, tile, in_range=in_range, generator=generator)
        return y.to(x.dtype)
    return read(x, weight, op, tile, in_range=in_range, generator=generator)


def reader(net: HopfieldNetwork, tile: TileConfig, generator: torch.Generator | None,
           ranges: Mapping[str, Any] | None = None) -> Callable[..., torch.Tensor]:
    """The :data:`~analoglearn.energy.interactions.Reader` of :func:`tile_relaxation`.

    ``reader(op, x, W, site)`` reads ``op(x, W)`` through the tile with the range of
    ``interactions.<i>.drive`` / ``.feedback`` (``i`` the index of ``site`` in ``net.interactions``,
    the direction whether ``op`` is transposed). An interaction of another network is read digitally.
    """
    index = {id(m): i for i, m in enumerate(net.interactions)}
    ranges = dict(ranges or {})

    def read_site(op: Op, x: torch.Tensor, weight: torch.Tensor, site: nn.Module) -> torch.Tensor:
        i = index.get(id(site))
        if i is None:
            return op(x, weight)
        name = site_name(i, geometry(op).transposed)
        return tile_read(x, weight, op, tile, ranges.get(name), generator)

    return read_site


@contextlib.contextmanager
def tile_relaxation(
    net: HopfieldNetwork,
    tile: TileConfig,
    generator: torch.Generator | None = None,
    ranges: Mapping[str, Any] | None = None,
) -> Iterator[list[str]]:
    """Every drive and feedback of ``net``'s relaxations through the tile inside the block (module doc).

    What :func:`analoglearn.analog.analog` does for a Hopfield network. Nesting on one network is
    refused; the reader is removed on exit, on error too.

    Args:
        net: the Hopfield network.
        tile: the non-idealities.
        generator: source of the output noise (required when ``tile.out_noise > 0``).
        ranges: input ranges by site name (``calibrated``: from :func:`analoglearn.analog.calibrate`
            with ``run``; ``learned``: :func:`analoglearn.analog.init_ranges`).

    Yields:
        The site names (:func:`relaxation_sites`).
    """
    from ..energy.interactions import reading

    sites = [name for name, _, _ in relaxation_sites(net)]
    tile.check_reads(generator, sites, ranges, "site", "analog.calibrate(net, tile, batches, run=method.predict)",
                     "analog.init_ranges(net, tile)")
    with _lock:
        if id(net) in _active:
            raise ConfigError("this Hopfield network is already inside analog(): nested contexts are not supported.")
        _active.add(id(net))
    try:
        with reading(reader(net, tile, generator, ranges)):
            yield sites
    finally:
        with _lock:
            _active.discard(id(net))


@contextlib.contextmanager
def recorded(net: HopfieldNetwork, record: Callable[[str, Op, torch.Tensor], None]) -> Iterator[None]:
    """Inside the block, ``record(site name, op, x)`` sees the input of every read of ``net``'s
    relaxations (detached), which stay digital (``op(x, W)``)."""
    from ..energy.interactions import reading

    index = {id(m): i for i, m in enumerate(net.interactions)}

    def read_site(op: Op, x: torch.Tensor, weight: torch.Tensor, site: nn.Module) -> torch.Tensor:
        i = index.get(id(site))
        if i is not None:
            record(site_name(i, geometry(op).transposed), op, x.detach())
        return op(x, weight)

    with reading(read_site):
        yield


def site_ranges(net: HopfieldNetwork, tile: TileConfig, value: float) -> dict[str, nn.Parameter]:
    """Learnable ranges of every site, shape ``()`` or ``(channels,)`` (``tile.in_per_channel``)."""
    ref = net.interactions[0].weight
    return {name: nn.Parameter(torch.full((channels,) if tile.in_per_channel else (), float(value),
                                          dtype=ref.dtype, device=ref.device))
            for name, _, channels in relaxation_sites(net)}
