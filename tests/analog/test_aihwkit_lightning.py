"""Cross-check of the tile model against IBM's aihwkit-lightning (optional: ``pip install aihwkit-lightning==2.1.0``).

Same LeNet in both (aihwkit-lightning's ``convert_to_analog`` of the very model analoglearn wraps),
same weights, same inputs, in float64. Where the definitions agree (DAC, input clipping, ADC and its
bound β·r_in·max|W_t|, tiling of a linear layer's inputs and, when tile_rows is a multiple of the
kernel positions, of a conv's) the outputs agree to rounding (≤ 1e-9 relative). Where they differ,
the numbers say so:

- output noise: both draw N(0, σ·r_in·max|W_t|) per tile output; aihwkit-lightning divides each
  tile's std by √T (T tiles per layer), analoglearn does not, so its layer noise std is √T times
  larger on a tiled layer and equal on an untiled one;
- aihwkit-lightning applies output noise only in training mode; analoglearn in both modes.
"""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

lightning = pytest.importorskip(
    "aihwkit_lightning",
    reason="aihwkit-lightning is not installed or cannot be imported (the optional cross-check extra: "
    "pip install aihwkit-lightning==2.1.0, which pins torch==2.13.0)",
    exc_type=ImportError,
)
from aihwkit_lightning.nn.conversion import convert_to_analog  # noqa: E402
from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig  # noqa: E402

from analoglearn.analog import TileConfig, analog  # noqa: E402


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lenet() -> nn.Module:
    """A LeNet-5 for 1×28×28 inputs: conv5(6) → pool → conv5(16) → pool → 120 → 84 → 10 (float64)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    ).double()


def rpu_config(tile: TileConfig) -> TorchInferenceRPUConfig:
    """aihwkit-lightning's configuration of the same tile (static input range, no learning)."""
    config = TorchInferenceRPUConfig()
    config.forward.inp_res = 2**tile.dac_bits - 2 if tile.dac_bits else -1
    config.forward.out_res = 2**tile.adc_bits - 2 if tile.adc_bits else -1
    config.forward.out_bound = tile.out_bound or 0.0
    config.forward.out_noise = tile.out_noise
    config.pre_post.input_range.enable = True
    config.pre_post.input_range.learn_input_range = False
    config.pre_post.input_range.init_value = tile.r_in
    config.pre_post.input_range.init_from_data = 0
    config.mapping.max_input_size = tile.tile_rows or -1
    return config


def to_analog(model: nn.Module, tile: TileConfig) -> nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a notice about its Triton kernels
        return convert_to_analog(model, rpu_config(tile), inplace=False).double()


IMAGES = torch.randn(64, 1, 28, 28, generator=gen(1), dtype=torch.float64)
BASE = {"in_range": "static", "r_in": 2.0}


@pytest.mark.parametrize("fields", [
    {},                                                             # input clipping alone
    {"dac_bits": 8},                                                # + DAC
    {"dac_bits": 4, "adc_bits": 8, "out_bound": 10.0},              # + ADC within β·r·w_max
    {"dac_bits": 6, "adc_bits": 6, "out_bound": 2.0, "tile_rows": 50},   # tiles of 50 rows = 2 conv channels
    {"adc_bits": 8, "out_bound": 1.0, "tile_rows": 100},            # hard output clipping, 4 channels per tile
])
def test_same_outputs_as_aihwkit_lightning_with_noise_off(fields):
    tile = TileConfig(**BASE, **fields)
    ours = lenet().eval()
    theirs = to_analog(ours, tile).eval()
    with torch.no_grad():
        expected = theirs(IMAGES)
        with analog(ours, tile):
            got = ours(IMAGES)
        clean = ours(IMAGES)
    assert not torch.allclose(got, clean, rtol=1e-6)  # the converters do something
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())


@pytest.mark.parametrize(("tile_rows", "tiles"), [(None, 1), (50, 2)])
def test_output_noise_statistics(tile_rows, tiles):
    """Noise std of one linear layer (100 inputs, 20 000 × 250 outputs: the sample std's relative standard
    error is ≈ 0.1 %, so a 2 % tolerance is 20 of them). Untiled both give σ·r·max|W|; tiled,
    aihwkit-lightning's is 1/√T of analoglearn's (module doc)."""
    sigma, r = 0.05, 1.0
    tile = TileConfig(in_range="static", r_in=r, out_noise=sigma, tile_rows=tile_rows)
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(100, 250)).double()
    theirs = to_analog(ours, tile).train()  # aihwkit-lightning draws output noise in training mode only
    x = torch.rand(20_000, 100, generator=gen(2), dtype=torch.float64) * 2 - 1
    w = ours[0].weight.detach()
    with torch.no_grad():
        clean = ours(x)
        torch.manual_seed(3)
        their_noise = theirs(x) - clean
        with analog(ours, tile, gen(3)):
            our_noise = ours(x) - clean
    per_tile = torch.stack([c.abs().max() for c in w.chunk(tiles, dim=1)]) * sigma * r
    ours_expected = per_tile.square().sum().sqrt().item()
    assert our_noise.std().item() == pytest.approx(ours_expected, rel=0.02)
    assert their_noise.std().item() == pytest.approx(ours_expected / math.sqrt(tiles), rel=0.02)
    assert abs(our_noise.mean().item()) < 5 * ours_expected / math.sqrt(our_noise.numel())
    theirs.eval()
    with torch.no_grad():
        assert torch.allclose(theirs(x), F.linear(x.clamp(-r, r), w, ours[0].bias), rtol=1e-12, atol=1e-12)  # no noise
