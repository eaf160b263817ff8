"""The tile model as a Monte-Carlo *corruption*: what ``eval.analog`` and ``evaluate --analog`` sweep.

An :class:`AnalogCorruption` is evaluated exactly like a weight-noise model (same trials, paired
trial seeds, statistics, tables and plots; :func:`analoglearn.evaluate.noisy_accuracy`): trial t at
value v of the swept field draws from one generator seeded by ``trial_seed(eval.seed, label, v, t)``.
Inside a trial, the optional weight-noise model draws first (one fixed corruption for the whole test
set, as in the noise trials), then every read of every test batch draws fresh output noise from the
same generator (temporal noise). So the trials are replayable from their seeds, and two runs of
equal shapes evaluated with the same ``eval.seed`` see the same draws.

The *strength* of an entry is the value of one :class:`~analoglearn.analog.tile.TileConfig` field
(``sweep``: e.g. ``out_noise``, ``adc_bits``, ``dac_bits``, ``tile_rows``); its label names the
other fields that differ from their defaults, ``analog[in_range=calibrated;dac_bits=8](out_noise)``,
and the weight-noise model when there is one (``...+additive_gaussian(0.05)``).

Calibrated input ranges (``in_range: calibrated``) are measured once per entry, on the digital
network with its clean weights, over the first ``calibration_images`` training images.

Hopfield networks are evaluated the same way: inside a trial every drive and feedback read of every
iteration of the relaxation (``method.predict``) goes through the tile and draws fresh output noise
from the trial's generator (:mod:`analoglearn.analog.relaxation`); their ranges are calibrated over
all reads of the digital relaxations of the calibration images (``run=method.predict``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..noise import NoiseModel, perturbed
from .layers import analog, analog_layers, calibrate
from .tile import TileConfig

SWEEPABLE = ("out_noise", "dac_bits", "adc_bits", "out_bound", "r_in", "tile_rows", "w_clip", "quantile",
             "std_alpha")
"""Tile fields an entry may sweep (its *strength*)."""
WHOLE = ("dac_bits", "adc_bits", "tile_rows")
"""Swept fields that take whole numbers."""
OFF_AT_ZERO = ("dac_bits", "adc_bits", "tile_rows", "w_clip", "out_bound")
"""Swept fields whose value 0 means "off" (None in the tile)."""


@dataclass(frozen=True)
class AnalogCorruption:
    """The tile model at one value of its swept field, optionally over a weight-noise draw.

    Attributes:
        tile: the non-idealities (the swept field holds the current value).
        sweep: the swept field of ``tile`` (one of :data:`SWEEPABLE`).
        noise: a weight-noise model applied under the tile in each trial, or ``None``.
        ranges: calibrated input ranges by layer name (set by :meth:`calibrated`).
    """

    tile: TileConfig
    sweep: str = "out_noise"
    noise: NoiseModel | None = None
    ranges: Mapping[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.sweep not in SWEEPABLE:
            raise ConfigError(f"analog sweep must be one of {', '.join(SWEEPABLE)}; got {self.sweep!r}.")

    @property
    def strength(self) -> float:
        """The value of the swept field (None counts as 0: the non-ideality is off)."""
        value = getattr(self.tile, self.sweep)
        return 0.0 if value is None else float(value)

    @property
    def label(self) -> str:
        """``analog[<changed tile fields but the swept one>](<swept field>)``, then ``+<noise>(<strength>)``."""
        default = TileConfig()
        changed = [f"{f.name}={getattr(self.tile, f.name)}" for f in dataclasses.fields(self.tile)
                   if f.name != self.sweep and getattr(self.tile, f.name) != getattr(default, f.name)]
        text = f"analog[{';'.join(changed)}]({self.sweep})" if changed else f"analog({self.sweep})"
        return text if self.noise is None else f"{text}+{self.noise.label}({self.noise.strength:g})"

    @property
    def deterministic(self) -> bool:
        """Whether a trial draws nothing (no output noise, no weight noise or a draw-free one)."""
        return self.tile.out_noise == 0 and (self.noise is None or self.noise.deterministic)

    def with_strength(self, strength: float) -> AnalogCorruption:
        """A copy with the swept field set to ``strength`` (an integer field takes an integer)."""
        integral = self.sweep in WHOLE
        if integral and float(strength) != int(strength):
            raise ConfigError(f"analog sweep {self.sweep} takes whole numbers; got {strength!r}.")
        value: float | int | None = int(strength) if integral else float(strength)
        if self.sweep in OFF_AT_ZERO and strength == 0:
            value = None  # 0 bits / rows / bound: that converter or limit is off
        return dataclasses.replace(self, tile=dataclasses.replace(self.tile, **{self.sweep: value}))

    def describe(self) -> dict[str, Any]:
        """The options results record beside the label: the tile's fields and the noise model's."""
        tile = {k: v for k, v in dataclasses.asdict(self.tile).items() if k != self.sweep}
        noise = None if self.noise is None else {"name": self.noise.name, **self.noise.describe()}
        return {"tile": tile, "sweep": self.sweep, "noise": noise}

    def check(self, model: nn.Module) -> None:
        """Refuse a model the tile model cannot be applied to (no conv/linear layer, or a weight-noise
        model that selects none of its parameters). Hopfield networks are read inside their relaxation."""
        if not analog_layers(model):
            raise ConfigError(f"{type(model).__name__} has no conv or linear layer for the tile model to read through")
        if self.noise is not None and not self.noise.select(model):
            raise ConfigError(f"the weight noise {self.noise.label} selects no parameter of {type(model).__name__}")

    def calibrated(self, model: nn.Module, batches: Iterable[Any] | None,
                   run: Callable[[torch.Tensor], Any] | None = None) -> AnalogCorruption:
        """This corruption with its input ranges measured on ``batches`` when the tile calibrates them.

        ``run(x)``: the network's inference (``method.predict``; needed for a Hopfield network, whose
        ranges are measured over its relaxation's reads; default ``model(x)``).
        """
        if self.tile.in_range != "calibrated":
            return self
        if batches is None:
            raise ConfigError("in_range: calibrated needs training images to calibrate on")
        return dataclasses.replace(self, ranges=calibrate(model, self.tile, batches, run=run))

    @contextlib.contextmanager
    def applied(self, model: nn.Module, generator: torch.Generator | None) -> Iterator[None]:
        """One trial: the weight-noise draw (restored on exit), then every read through the tile."""
        self.check(model)
        with contextlib.ExitStack() as stack:
            if self.noise is not None:
                stack.enter_context(perturbed(model, self.noise, generator))
            stack.enter_context(analog(model, self.tile, generator=generator, ranges=self.ranges))
            yield


def from_spec(spec: Any) -> AnalogCorruption:
    """The corruption of an ``eval.analog`` entry (:class:`analoglearn.config.AnalogSpec`: plain ``tile``
    fields, ``sweep``, ``noise`` entry or None), at its first value."""
    from ..noise import from_config

    noise = from_config(spec.noise) if spec.noise is not None else None
    return AnalogCorruption(TileConfig(**spec.tile), spec.sweep, noise).with_strength(spec.values[0])


def calibration_batches(loader: Iterable[tuple[torch.Tensor, torch.Tensor]], images: int) -> list[torch.Tensor]:
    """The first ``images`` inputs of ``loader``, as a list of batches (for :meth:`AnalogCorruption.calibrated`)."""
    out, seen = [], 0
    for x, _ in loader:
        part = x[: images - seen]
        out.append(part)
        seen += int(part.shape[0])
        if seen >= images:
            break
    return out
