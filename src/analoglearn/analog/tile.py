"""The analog tile: one frozen dataclass that says what every matrix-vector product (MVM) suffers.

A crossbar tile computes y = W·x in the analog domain: the digital inputs x are converted by DACs
into voltages on the rows, the conductances sum the currents on the columns, and ADCs convert the
column currents back. :class:`TileConfig` describes that chain, one switch per non-ideality, in
the order a read applies them (see :func:`analoglearn.analog.read.read` for the code):

1. *input range and clipping*: x ← clip(x, −r_in, r_in) (signed) or clip(x, 0, r_in) (unsigned);
2. *DAC*: x ← Δ_in·round(x/Δ_in), Δ_in = r_in/(2^(b−1) − 1) signed (2^b − 1 levels, the
   aihwkit-lightning convention ``inp_res = 2^b − 2``) or Δ_in = r_in/(2^b − 1) unsigned (2^b levels);
3. *optional weight clipping*: W ← clip(W, ±κ·std(W));
4. *tiling*: the rows (the read's input dimension) are split over tiles of at most ``tile_rows``
   rows; each tile computes its partial sum y_t = W_t·x_t in analog;
5. *output noise*, per tile and per read, fresh every time: y_t ← y_t + σ_out·y_ref·ξ, ξ ~ N(0, 1);
6. *output clipping and ADC*: y_t ← Δ_out·clip(round(y_t/Δ_out), −n, n), n = 2^(b−1) − 1 and
   Δ_out = β·y_ref/n (2^b − 1 signed levels in [−β·y_ref, β·y_ref]);
7. the tiles' digital outputs are summed (or, for a transposed read, concatenated), the bias added.

**The output reference y_ref** (the "output range" the noise and the ADC bound are relative to) is
the output of one row driven at full scale through the largest weight of the tile:

    y_ref = r_ref · w_max,   r_ref = max of r_in over the tile's inputs,
    w_max = max |W_t| over the tile (``out_per_channel=False``) or over each output column (True).

It follows aihwkit-lightning (``input_range × assumed_wmax``), so ``out_noise = 0.04`` and
``out_bound = 10`` mean what they mean there. Two differences, both deliberate: y_ref is detached
(no gradient flows through the converter ranges), and the noise std of each tile is σ_out·y_ref,
not σ_out·y_ref/√T: a tile does not know how many others share the layer, so a layer split over T
tiles carries √T times the noise of an untiled one (aihwkit-lightning keeps the layer's total fixed).

Everything off (the default) is bit-equal to ``F.linear`` / ``F.conv2d``: the read then calls the
op itself. Validation raises :class:`~analoglearn.errors.ConfigError` with one line naming the field
and its valid domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import ConfigError

RANGES = ("off", "static", "calibrated", "learned")
"""How the input range r_in is set: ``off`` (no clipping, no DAC), ``static`` (``r_in`` of the
config), ``calibrated`` (by :func:`analoglearn.analog.calibrate` on training batches) or ``learned``
(an ``nn.Parameter`` per layer, trained with a straight-through gradient)."""

CALIBRATIONS = ("max", "percentile", "std")
"""Calibration methods of the input range (see :attr:`TileConfig.calibration`)."""

MAX_BITS = 24
"""Largest converter resolution accepted (beyond float32's 24-bit mantissa a level is meaningless)."""


@dataclass(frozen=True)
class TileConfig:
    """The non-idealities of every analog MVM (module doc: formulas and their order).

    >>> TileConfig(in_range="static", r_in=3.0, dac_bits=8, adc_bits=8, out_bound=10.0, out_noise=0.04)
    """

    in_range: str = "off"
    """How the input range r_in is set: off | static | calibrated | learned (see :data:`RANGES`).
    Off: no input clipping and no DAC. Any other value clips the inputs to the range."""
    r_in: float = 1.0
    """Input range r_in, in the units of the layer's input: the static range, and the initial value
    of learned ranges. Must be finite and > 0."""
    in_signed: bool = True
    """True: range [−r_in, r_in] (2^b − 1 DAC levels); False: [0, r_in] (2^b levels, for inputs
    that follow a ReLU; negative inputs are clipped to 0)."""
    in_per_channel: bool = False
    """One r_in per input channel (a linear layer's input feature, a conv's input channel) instead
    of one per layer. Applies to calibrated and learned ranges."""
    dac_bits: int | None = None
    """DAC resolution b_in in bits (1 to 24; ≥ 2 for a signed range); None: no input quantisation."""
    calibration: str = "max"
    """Calibration of r_in (with ``calibrate``): ``max`` (largest |x| seen), ``percentile``
    (the ``quantile``-th quantile of |x|, or of x for unsigned ranges) or ``std``
    (``std_alpha`` × the mean over batches of each batch's std of x)."""
    quantile: float = 0.99995
    """Quantile q in (0, 1] of the ``percentile`` calibration (aihwkit-lightning's default)."""
    std_alpha: float = 3.0
    """Multiplier α of the ``std`` calibration: r_in = α·mean_batches(std(x)). Finite, > 0."""
    w_clip: float | None = None
    """Weight clipping κ: the read uses clip(W, ±κ·std(W)) (std over the whole tensor, detached);
    None: no clipping. The nn.Parameter itself is not changed."""
    tile_rows: int | None = None
    """Rows per tile N ≥ 1: the read's input dimension (a conv's C_in × kernel positions) is split
    over ⌈rows/N⌉ tiles of balanced size; None: one tile holds the whole layer."""
    out_noise: float = 0.0
    """Output noise σ_out ≥ 0 per tile output and per read, relative to y_ref (module doc): the
    std of the added Gaussian is σ_out·y_ref. Temporal: fresh at every read, in eval and training."""
    out_bound: float | None = None
    """Output bound β > 0: tile outputs are clipped to ±β·y_ref (the ADC's full scale); None: no
    clipping. Required by the ADC."""
    adc_bits: int | None = None
    """ADC resolution b_out in bits (2 to 24; signed, 2^b − 1 levels within ±β·y_ref); None: none."""
    out_per_channel: bool = False
    """w_max of y_ref per output column of the tile instead of per tile."""

    def __post_init__(self) -> None:
        _check_choice("in_range", self.in_range, RANGES)
        _check_choice("calibration", self.calibration, CALIBRATIONS)
        _check_positive("r_in", self.r_in)
        _check_positive("std_alpha", self.std_alpha)
        if not (isinstance(self.quantile, (int, float)) and 0 < self.quantile <= 1):
            raise ConfigError(f"tile.quantile must be a number in (0, 1]; got {self.quantile!r}.")
        _check_bits("dac_bits", self.dac_bits, low=2 if self.in_signed else 1)
        _check_bits("adc_bits", self.adc_bits, low=2)
        if self.w_clip is not None:
            _check_positive("w_clip", self.w_clip)
        if self.out_bound is not None:
            _check_positive("out_bound", self.out_bound)
        if not (isinstance(self.out_noise, (int, float)) and math.isfinite(self.out_noise) and self.out_noise >= 0):
            raise ConfigError(f"tile.out_noise must be a finite number ≥ 0; got {self.out_noise!r}.")
        if self.tile_rows is not None and (
            isinstance(self.tile_rows, bool) or int(self.tile_rows) != self.tile_rows or self.tile_rows < 1
        ):
            raise ConfigError(f"tile.tile_rows must be an integer ≥ 1 or null; got {self.tile_rows!r}.")
        if self.dac_bits is not None and self.in_range == "off":
            raise ConfigError("tile.dac_bits needs an input range: set tile.in_range to static, calibrated or learned.")
        if self.adc_bits is not None and self.out_bound is None:
            raise ConfigError("tile.adc_bits needs the ADC's full scale: set tile.out_bound (β > 0, units of y_ref).")
        if (self.out_noise > 0 or self.out_bound is not None) and self.in_range == "off":
            raise ConfigError("tile.out_noise and tile.out_bound are relative to y_ref = r_in·w_max: set tile.in_range "
                              "to static, calibrated or learned.")

    @property
    def ideal(self) -> bool:
        """Whether every non-ideality is off (then a read is the plain op, bit for bit)."""
        return (self.in_range == "off" and self.w_clip is None and self.tile_rows is None
                and self.out_noise == 0 and self.out_bound is None)

    @property
    def converts_output(self) -> bool:
        """Whether anything happens to a tile's partial sum (noise, clipping, ADC)."""
        return self.out_noise > 0 or self.out_bound is not None

    def check_reads(self, generator: object, names: list[str], ranges: object, what: str, calibrate: str,
                    learn: str) -> None:
        """Refuse to read through this tile without what it needs: a generator for its output noise, and an
        input range for each of ``names`` (``what``: ``layer`` or ``site``) when ranges are calibrated or
        learned (``ranges``: a mapping or None; ``calibrate``/``learn``: the calls that make them)."""
        if self.out_noise > 0 and generator is None:
            raise ConfigError("tile.out_noise > 0 needs a torch.Generator: pass generator=... (replayable draws).")
        if self.in_range in ("calibrated", "learned"):
            missing = [name for name in names if name not in (ranges or {})]
            if missing:
                hint = calibrate if self.in_range == "calibrated" else learn
                raise ConfigError(f"tile.in_range = {self.in_range!r} but no range for {what}(s) {missing}: pass "
                                  f"ranges=... from {hint}.")

    @property
    def label(self) -> str:
        """The fields that differ from their defaults, ``dac_bits=8;adc_bits=8`` (``ideal`` if none)."""
        default = TileConfig()
        changed = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                   if getattr(self, f.name) != getattr(default, f.name)]
        return ";".join(changed) if changed else "ideal"


def levels(bits: int, signed: bool) -> int:
    """Largest level index n of a b-bit converter: 2^(b−1) − 1 signed (levels −n..n), 2^b − 1 unsigned (0..n)."""
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


def _check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"tile.{name} must be one of {', '.join(valid)}; got {value!r}.")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"tile.{name} must be a finite number > 0; got {value!r}.")


def _check_bits(name: str, value: object, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_BITS:
        raise ConfigError(f"tile.{name} must be an integer from {low} to {MAX_BITS} or null; got {value!r}.")


def field_docs(cls: type) -> dict[str, str]:
    """The first sentence of each field's docstring (the string under it in the class body), by field name."""
    import ast
    import inspect
    import itertools
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
            text = " ".join(following.value.value.split())
            docs[node.target.id] = text.split(". ")[0].rstrip(".")
    return docs


def describe() -> list[tuple[str, str]]:
    """``(name, summary)`` rows for ``analoglearn list analog``: the tile's fields with their defaults and
    formulas, then the device update models."""
    from . import devices

    rows = [(f"tile.{f.name}", f"{field_docs(TileConfig).get(f.name, '')} (default {f.default!r})")
            for f in fields(TileConfig)]
    for cls in (devices.IdealDevice, devices.ConstantStep, devices.SoftBounds):
        rows.append((f"device {cls.__name__}", (cls.__doc__ or "").strip().splitlines()[0]))
    return rows
