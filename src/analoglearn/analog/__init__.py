"""The analog chip: a tile model for every conv/linear matrix-vector product, and device update models.

- :class:`TileConfig` (:mod:`.tile`): DAC/ADC quantisation, input ranges, output noise, tiling,
  weight clipping, each with its own switch; everything off is bit-equal to the digital layer.
- :func:`read` (:mod:`.read`): the one function every analog MVM goes through, generic over the
  op (``F.linear``, ``F.conv2d``, their transposed reads ``linear_transposed``, ``F.conv_transpose2d``).
- :func:`analog`, :func:`calibrate`, :func:`init_ranges` (:mod:`.layers`): the tile model on any
  feed-forward ``nn.Module``, in training and evaluation, and on a Hopfield network, whose relaxation
  then reads every drive and feedback through the tile (:mod:`.relaxation`: sites
  ``interactions.<i>.drive`` / ``.feedback``, fixed points and cycles under quantisation, noise floor).
- :class:`ConstantStep`, :class:`SoftBounds`, :class:`IdealDevice` (:mod:`.devices`) and
  :class:`AnalogSGD` (:mod:`.optim`): learning on the chip, updates applied as device pulses.

    tile = TileConfig(in_range="calibrated", dac_bits=8, adc_bits=8, out_bound=10.0, out_noise=0.04)
    ranges = calibrate(net, tile, train_batches[:10])
    with analog(net, tile, generator=torch.Generator().manual_seed(0), ranges=ranges):
        scores = net(x)

    ranges = calibrate(hopfield, tile, train_batches[:10], run=method.predict)   # a Hopfield network
    with analog(hopfield, tile, generator=torch.Generator().manual_seed(0), ranges=ranges):
        scores = method.predict(x)        # every read of every iteration through the tile
"""

from __future__ import annotations

from .devices import ConstantStep, Device, IdealDevice, PulsedDevice, SoftBounds
from .layers import LAYER_TYPES, analog, analog_layers, calibrate, init_ranges
from .optim import AnalogSGD
from .quantize import convert, read_out
from .read import OPS, Geometry, geometry, linear_transposed, read, register_op, tile_slices
from .relaxation import relaxation_sites, tile_relaxation
from .tile import CALIBRATIONS, RANGES, TileConfig, levels

__all__ = [
    "CALIBRATIONS",
    "LAYER_TYPES",
    "OPS",
    "RANGES",
    "AnalogSGD",
    "ConstantStep",
    "Device",
    "Geometry",
    "IdealDevice",
    "PulsedDevice",
    "SoftBounds",
    "TileConfig",
    "analog",
    "analog_layers",
    "calibrate",
    "convert",
    "geometry",
    "init_ranges",
    "levels",
    "linear_transposed",
    "read",
    "read_out",
    "register_op",
    "relaxation_sites",
    "tile_relaxation",
    "tile_slices",
]
