"""The tile model's read: converter levels and clipping, STE gradients, output noise, tiling, replay."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from analoglearn.analog import TileConfig, convert, levels, linear_transposed, read, tile_slices
from analoglearn.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_unsigned_dac_has_2_to_the_b_levels_and_clips(bits):
    r = 1.5
    x = torch.linspace(-1.0, 2 * r, 200_001, dtype=torch.float64)[:, None]
    tile = TileConfig(in_range="static", r_in=r, in_signed=False, dac_bits=bits)
    q = read(x, torch.eye(1, dtype=torch.float64), F.linear, tile)  # y = q·1: the DAC's output itself
    values = q.unique()
    assert len(values) == 2**bits
    assert values.min() == 0 and values.max() == pytest.approx(r, rel=1e-12)
    step = r / (2**bits - 1)
    assert torch.allclose(values, torch.arange(2**bits, dtype=torch.float64) * step, rtol=0, atol=1e-12)
    assert torch.all(q[x > r] == values.max()) and torch.all(q[x < 0] == 0)


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_signed_dac_has_2_to_the_b_minus_1_levels_and_clips(bits):
    r = 2.0
    x = torch.linspace(-3 * r, 3 * r, 300_001, dtype=torch.float64)
    q = convert(x, r, signed=True, n=levels(bits, True))
    values = q.unique()
    assert len(values) == 2**bits - 1
    assert values.min() == -r and values.max() == r
    assert torch.equal(values, -values.flip(0))  # symmetric, zero included
    assert torch.all(q[x > r] == r) and torch.all(q[x < -r] == -r)


def test_adc_output_lies_on_its_grid_within_its_bound():
    x = torch.randn(512, 64, generator=gen(), dtype=torch.float64)
    w = torch.randn(32, 64, generator=gen(1), dtype=torch.float64)
    tile = TileConfig(in_range="static", r_in=4.0, adc_bits=5, out_bound=3.0)
    y = read(x, w, F.linear, tile)
    bound = 3.0 * 4.0 * w.abs().max()
    step = bound / levels(5, True)
    k = y / step
    assert torch.allclose(k, k.round(), atol=1e-9)
    assert len(y.unique()) <= 2**5 - 1 and y.abs().max() <= bound * (1 + 1e-12)
    clean = F.linear(x.clamp(-4, 4), w)
    assert torch.all(y[clean > bound] == y.max())  # saturated


def test_straight_through_gradient_is_identity_inside_and_zero_outside():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64, requires_grad=True)
    convert(x, 1.0, signed=True, n=levels(4, True)).sum().backward()
    inside = x.detach().abs() <= 1
    assert torch.equal(x.grad, inside.to(x.dtype))
    x.grad = None
    convert(x, 2.0, signed=False, n=None).mul(torch.arange(601.0, dtype=torch.float64)).sum().backward()
    expected = torch.where((x.detach() >= 0) & (x.detach() <= 2), torch.arange(601.0, dtype=torch.float64), 0.0)
    assert torch.equal(x.grad, expected)


def test_adc_straight_through_gradient_through_read():
    x = torch.randn(64, 16, generator=gen(), dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 16, generator=gen(1), dtype=torch.float64)
    tile = TileConfig(in_range="static", r_in=10.0, adc_bits=8, out_bound=0.3)
    y = read(x, w, F.linear, tile)
    y.sum().backward()
    clean = F.linear(x.detach(), w)
    inside = (clean.abs() <= 0.3 * 10.0 * w.abs().max()).to(x.dtype)  # the ADC bound β·r_in·w_max
    assert 0 < inside.mean() < 1
    assert torch.allclose(x.grad, inside @ w)


def test_learned_range_gradient_follows_the_formula():
    x = torch.linspace(-2, 2, 401, dtype=torch.float64)
    r = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    n = levels(3, True)
    q = convert(x, r, signed=True, n=n)
    q.sum().backward()
    inside = x.abs() <= 1.3
    expected = ((q.detach() - x) / 1.3)[inside].sum() + (x > 1.3).sum() - (x < -1.3).sum()
    assert r.grad.item() == pytest.approx(expected.item(), rel=1e-12)


def test_output_noise_has_the_stated_std():
    """std = σ_out·y_ref, y_ref = r_in·max|W|. With N = 10⁶ draws the sample std has relative
    standard error 1/√(2N) ≈ 0.07 %; a 1 % tolerance is > 10 standard errors, so the test is stable."""
    x = torch.rand(4000, 64, generator=gen()) * 2 - 1
    w = torch.randn(250, 64, generator=gen(1))
    tile = TileConfig(in_range="static", r_in=1.0, out_noise=0.05)
    with torch.no_grad():
        noise = read(x, w, F.linear, tile, generator=gen(2)) - F.linear(x, w)
    expected = 0.05 * 1.0 * w.abs().max()
    assert noise.mean().abs() < 5 * expected / math.sqrt(noise.numel())
    assert noise.std().item() == pytest.approx(expected.item(), rel=0.01)


def test_each_tile_draws_its_own_noise():
    """Per tile std σ·r·max|W_t|: the layer's variance is the sum of the tiles' (1 % tolerance as above)."""
    x = torch.rand(4000, 96, generator=gen()) * 2 - 1
    w = torch.randn(250, 96, generator=gen(1))
    w[:, :32] *= 3
    tile = TileConfig(in_range="static", r_in=0.5, out_noise=0.02, tile_rows=32)
    with torch.no_grad():
        noise = read(x.clamp(-0.5, 0.5), w, F.linear, tile, generator=gen(2)) - F.linear(x.clamp(-0.5, 0.5), w)
    per_tile = torch.stack([w[:, i:i + 32].abs().max() for i in (0, 32, 64)]) * 0.5 * 0.02
    assert noise.std().item() == pytest.approx(per_tile.square().sum().sqrt().item(), rel=0.01)


def test_tiled_read_with_converters_off_equals_untiled_fp64():
    x = torch.randn(16, 300, generator=gen(), dtype=torch.float64)
    w = torch.randn(40, 300, generator=gen(1), dtype=torch.float64)
    b = torch.randn(40, generator=gen(2), dtype=torch.float64)
    assert len(tile_slices(300, 1, 64)) == 5
    assert torch.allclose(read(x, w, F.linear, TileConfig(tile_rows=64), bias=b), F.linear(x, w, b),
                          rtol=1e-13, atol=1e-12)
    xc = torch.randn(4, 7, 9, 9, generator=gen(3), dtype=torch.float64)
    wc = torch.randn(5, 7, 3, 3, generator=gen(4), dtype=torch.float64)
    op = functools.partial(F.conv2d, padding=1, stride=2)
    assert len(tile_slices(7, 9, 20)) == 4
    assert torch.allclose(read(xc, wc, op, TileConfig(tile_rows=20)), op(xc, wc), rtol=1e-13, atol=1e-12)


def test_transposed_reads_tile_the_same_rows():
    w = torch.randn(5, 7, 3, 3, generator=gen(4), dtype=torch.float64)
    y = torch.randn(4, 5, 9, 9, generator=gen(5), dtype=torch.float64)
    op = functools.partial(F.conv_transpose2d, padding=1)
    assert torch.allclose(read(y, w, op, TileConfig(tile_rows=20)), op(y, w), rtol=1e-13, atol=1e-12)
    wd = torch.randn(6, 30, generator=gen(6), dtype=torch.float64)
    yd = torch.randn(3, 6, generator=gen(7), dtype=torch.float64)
    assert torch.allclose(read(yd, wd, linear_transposed, TileConfig(tile_rows=8)), yd @ wd, rtol=1e-13)


def test_everything_off_is_the_plain_op_bit_for_bit():
    x = torch.randn(8, 3, 12, 12, generator=gen())
    w = torch.randn(4, 3, 3, 3, generator=gen(1))
    b = torch.randn(4, generator=gen(2))
    op = functools.partial(F.conv2d, padding=1)
    assert torch.equal(read(x, w, op, TileConfig(), bias=b), F.conv2d(x, w, b, padding=1))


def test_reads_replay_from_their_seed():
    x = torch.randn(32, 50, generator=gen())
    w = torch.randn(20, 50, generator=gen(1))
    tile = TileConfig(in_range="static", r_in=2.0, dac_bits=6, adc_bits=6, out_bound=4.0, out_noise=0.1, tile_rows=16)
    a = read(x, w, F.linear, tile, generator=gen(7))
    assert torch.equal(a, read(x, w, F.linear, tile, generator=gen(7)))
    assert not torch.equal(a, read(x, w, F.linear, tile, generator=gen(8)))
    g = gen(7)
    first, second = read(x, w, F.linear, tile, generator=g), read(x, w, F.linear, tile, generator=g)
    assert torch.equal(first, a) and not torch.equal(first, second)  # fresh noise at every read


def test_per_channel_ranges_clip_each_channel():
    x = torch.full((2, 3), 5.0)
    r = torch.tensor([1.0, 2.0, 3.0])
    y = read(x, torch.eye(3), F.linear, TileConfig(in_range="calibrated", in_per_channel=True), in_range=r)
    assert torch.equal(y, r.expand(2, 3))
    with pytest.raises(ConfigError, match="per-channel"):
        read(torch.ones(2, 4), torch.eye(4), F.linear, TileConfig(in_range="calibrated"), in_range=r)


@pytest.mark.parametrize(("fields", "match"), [
    ({"dac_bits": 0, "in_range": "static"}, "dac_bits"),
    ({"dac_bits": 25, "in_range": "static"}, "dac_bits"),
    ({"dac_bits": 1, "in_range": "static"}, "from 2 to 24"),
    ({"adc_bits": 8}, "out_bound"),
    ({"r_in": 0.0}, "r_in"),
    ({"r_in": float("nan")}, "r_in"),
    ({"r_in": float("inf")}, "r_in"),
    ({"out_bound": -1.0, "in_range": "static"}, "out_bound"),
    ({"out_noise": float("nan")}, "out_noise"),
    ({"tile_rows": 0}, "tile_rows"),
    ({"tile_rows": 2.5}, "tile_rows"),
    ({"calibration": "median"}, "calibration"),
    ({"in_range": "dynamic"}, "in_range"),
    ({"quantile": 1.5}, "quantile"),
    ({"dac_bits": 8}, "in_range"),
    ({"out_noise": 0.1}, "in_range"),
])
def test_bad_tile_configs_name_the_field(fields, match):
    with pytest.raises(ConfigError, match=match) as info:
        TileConfig(**fields)
    assert "\n" not in str(info.value)


def test_bad_reads_raise_config_errors():
    tile = TileConfig(in_range="static", out_noise=0.1)
    with pytest.raises(ConfigError, match="Generator"):
        read(torch.ones(1, 2), torch.ones(2, 2), F.linear, tile)
    with pytest.raises(ConfigError, match="does not know the op"):
        read(torch.ones(1, 2), torch.ones(2, 2), torch.matmul, TileConfig(tile_rows=1))
    with pytest.raises(ConfigError, match="kernel"):
        read(torch.ones(1, 1, 5, 5), torch.ones(1, 1, 3, 3), F.conv2d, TileConfig(tile_rows=4))
    with pytest.raises(ConfigError, match="grouped"):
        read(torch.ones(1, 4, 5, 5), torch.ones(4, 2, 1, 1), functools.partial(F.conv2d, groups=2),
             TileConfig(tile_rows=1))
    with pytest.raises(ConfigError, match="in_range="):
        read(torch.ones(1, 2), torch.ones(2, 2), F.linear, TileConfig(in_range="calibrated"))


def test_reads_with_and_without_autograd_give_the_same_bits():
    x = torch.randn(32, 50, generator=gen())
    w = torch.randn(20, 50, generator=gen(1), requires_grad=True)
    for tile in (TileConfig(in_range="static", r_in=2.0, dac_bits=6, adc_bits=6, out_bound=4.0, out_noise=0.1,
                            tile_rows=16),
                 TileConfig(in_range="static", r_in=1.0, out_bound=2.0, out_noise=0.1)):
        with_grad = read(x, w, F.linear, tile, generator=gen(3))
        with torch.no_grad():
            without = read(x, w, F.linear, tile, generator=gen(3))
        assert with_grad.requires_grad and torch.equal(with_grad, without)
