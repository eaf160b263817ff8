"""Hardware-aware training: the tile model inside every training forward pass (the ``analog`` config section).

With ``analog: {tile: {...}}`` each training step of a feed-forward network runs inside
:func:`analoglearn.analog.analog`: every conv/linear MVM of the forward pass goes through the DACs,
tiles, output noise and ADCs of the tile, and the backward pass through the quantisers' straight-
through gradients (identity inside the ranges, zero outside). It composes with the perturbations:
SAM and RWP move the weights, then the closure reads them through the tile. The test error logged
after each epoch is the digital network's; ``eval.analog`` measures the trained network on the chip.

- Output noise is drawn from its own generator, seeded from the run seed (independent of the data
  order and of RWP's draws) and checkpointed, so a resumed run reproduces the uninterrupted one.
- Weight clipping (``weight_clip`` κ, aihwkit's layer-Gaussian clip): after every optimiser step each
  conv/linear weight is clipped in place to ±κ·std(W). Without it a hardware-aware run can diverge:
  the output noise and the ADC range scale with max|W| (y_ref), so larger weights buy no margin over
  the noise, yet the cross-entropy gradient keeps asking for larger logits, and the weights grow
  without bound (measured: LeNet-5, 6-bit tiles, σ_out = 0.05, weights ~10⁶ by epoch 7 of 10).
- Ranges: ``static`` (``tile.r_in``), or ``calibrated``: measured at the start of every epoch on the
  first ``calibration_images`` training images (in order, no augmentation) with the current
  weights, and kept in the checkpoint (a run resumed mid-epoch uses the epoch's ranges). Learned
  ranges are part of the Python API (:func:`~analoglearn.analog.layers.init_ranges`).

**Hopfield networks.** With ``run`` (``method.predict``, given by
:func:`analoglearn.build.build_hardware`) a Hopfield network trains on the chip too: inside
:meth:`HardwareAware.reads` every relaxation of the step (the free phase, the nudged or clamped
phases, TBP's differentiable relaxation, RBP's map) reads each drive and feedback through the tile
(:mod:`analoglearn.analog.relaxation`), and TBP's and RBP's autograd passes through the converters'
straight-through gradients. The estimators' contrast ∂E/∂W stays the digital formula at the relaxed
states. Calibrated ranges are those of the sites ``interactions.<i>.drive`` / ``.feedback``, measured
over all reads of the digital relaxations (``run``) of the calibration images; weight clipping acts
on ``interactions.<i>.conv.weight`` / ``.linear.weight``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .corruption import AnalogCorruption, calibration_batches
from .layers import analog, analog_layers, calibrate
from .tile import TileConfig


class HardwareAware:
    """The tile of hardware-aware training, its output-noise generator and its calibrated ranges.

    Args:
        tile: the non-idealities of every training MVM (``in_range`` static or calibrated).
        model: the feed-forward network being trained.
        seed: seed of the output-noise generator.
        calibration_images: N, images of each epoch's calibration (``in_range: calibrated``).
        weight_clip: κ of the weight clipping after every step, or None.
        run: the network's inference ``run(x)`` used by the calibration (``method.predict``);
            required for a Hopfield network with calibrated ranges (default ``model(x)``).
    """

    def __init__(self, tile: TileConfig, model: nn.Module, seed: int, calibration_images: int = 1000,
                 weight_clip: float | None = None, run: Callable[[torch.Tensor], Any] | None = None) -> None:
        from .relaxation import is_hopfield

        if tile.in_range == "learned":
            raise ConfigError("analog.tile.in_range: learned ranges are trained through the Python API "
                              "(analog.init_ranges); the config takes static or calibrated ranges")
        AnalogCorruption(tile).check(model)
        if tile.in_range == "calibrated" and run is None and is_hopfield(model):
            raise ConfigError("analog.tile.in_range: calibrated ranges of a Hopfield network are measured over its "
                              "relaxation: HardwareAware needs run=method.predict")
        self.tile, self.model, self.images, self.weight_clip = tile, model, calibration_images, weight_clip
        self.run = run
        self.layers = [layer for _, layer in analog_layers(model)]
        self.generator = torch.Generator().manual_seed(seed)
        self.ranges: dict[str, torch.Tensor] | None = None

    def start_epoch(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], fresh: bool) -> None:
        """Calibrate the ranges on ``loader``'s first images at the start of an epoch (``fresh``), or
        when a resumed run has none yet."""
        if self.tile.in_range == "calibrated" and (fresh or self.ranges is None):
            self.ranges = calibrate(self.model, self.tile, calibration_batches(loader, self.images), run=self.run)

    @contextlib.contextmanager
    def reads(self) -> Iterator[None]:
        """Every conv/linear MVM of the block through the tile (a Hopfield network: every relaxation read)."""
        with analog(self.model, self.tile, generator=self.generator, ranges=self.ranges):
            yield

    @torch.no_grad()
    def clip_weights(self) -> None:
        """After an optimiser step: W ← clip(W, ±κ·std(W)) for every conv/linear weight (no-op without κ)."""
        if self.weight_clip is None:
            return
        for layer in self.layers:
            limit = self.weight_clip * float(layer.weight.std())
            layer.weight.clamp_(-limit, limit)

    def state_dict(self) -> dict[str, Any]:
        """The generator's state and the ranges (plain tensors)."""
        return {"generator": self.generator.get_state(), "ranges": dict(self.ranges) if self.ranges else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
        self.ranges = dict(state["ranges"]) if state["ranges"] else None
