"""The tile model on feed-forward networks: bit-equality when off, restore, modes, calibration, learned ranges."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analoglearn import plugins
from analoglearn.analog import TileConfig, analog, analog_layers, calibrate, init_ranges, read
from analoglearn.errors import ConfigError
from analoglearn.noise import AdditiveGaussian, perturbed
from analoglearn.registry import MODELS

NOISY = TileConfig(in_range="static", r_in=3.0, dac_bits=8, adc_bits=8, out_bound=10.0, out_noise=0.04, tile_rows=64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    plugins.load_builtins()
    return MODELS.create("lenet", MODELS.build_options("lenet", {}), in_shape=(1, 28, 28), num_classes=10,
                         generator=gen())


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(16, 1, 28, 28, generator=gen(1))


def test_everything_off_lenet_is_bit_equal(lenet, images):
    lenet.eval()
    clean = lenet(images)
    with analog(lenet, TileConfig()) as names:
        inside = lenet(images)
    assert names == [name for name, _ in analog_layers(lenet)] and len(names) == 5
    assert torch.equal(inside, clean)


def test_everything_off_with_padding_modes_and_conv1d_is_bit_equal():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), nn.Flatten(2, 3),
                        nn.Conv1d(3, 4, 3, padding=1, padding_mode="circular"), nn.Flatten(), nn.Linear(4 * 36, 5))
    x = torch.randn(2, 2, 6, 6, generator=gen())
    clean = net(x)
    with analog(net, TileConfig()):
        assert torch.equal(net(x), clean)


def test_layers_are_restored_exactly_also_after_an_error(lenet, images):
    before = {name: dict(m.__dict__) for name, m in lenet.named_modules()}
    with pytest.raises(RuntimeError, match="inside"), analog(lenet, NOISY, gen()):
        raise RuntimeError("inside")
    for name, m in lenet.named_modules():
        assert "forward" not in m.__dict__
        assert m.__dict__.keys() == before[name].keys()


def test_output_noise_acts_in_eval_and_in_training_mode(lenet, images):
    tile = TileConfig(in_range="static", r_in=5.0, out_noise=0.05)
    for mode in (False, True):
        lenet.train(mode)
        with torch.no_grad():
            clean = lenet(images)
            with analog(lenet, tile, gen(3)):
                noisy = lenet(images)
        assert not torch.allclose(noisy, clean)
    lenet.eval()


def test_trials_replay_from_their_seed_and_pair_across_models(lenet, images):
    lenet.eval()
    twin = MODELS.create("lenet", MODELS.build_options("lenet", {}), in_shape=(1, 28, 28), num_classes=10,
                         generator=gen())
    with torch.no_grad():
        with analog(lenet, NOISY, gen(5)):
            a = lenet(images)
        with analog(lenet, NOISY, gen(5)):
            b = lenet(images)
        with analog(twin, NOISY, gen(5)):
            c = twin(images)
        with analog(lenet, NOISY, gen(6)):
            d = lenet(images)
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.equal(a, d)


def test_weight_noise_composes_underneath():
    net = nn.Sequential(nn.Linear(20, 10))
    x = torch.randn(8, 20, generator=gen())
    with perturbed(net, AdditiveGaussian(0.05), generator=gen(1)):
        programmed = net[0].weight.detach().clone()
        with analog(net, NOISY, gen(2)):
            y = net(x)
    expected = read(x, programmed, F.linear, NOISY, bias=net[0].bias, generator=gen(2))
    assert torch.equal(y, expected)
    assert not torch.equal(net[0].weight, programmed)  # the clean weights are back


def test_hardware_aware_training_reaches_weights_and_learned_ranges():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    tile = TileConfig(in_range="learned", r_in=0.5, dac_bits=4, adc_bits=6, out_bound=8.0, out_noise=0.02)
    ranges = init_ranges(net, tile)
    x, y = torch.randn(64, 10, generator=gen()), torch.randint(0, 3, (64,), generator=gen(1))
    opt = torch.optim.SGD([*net.parameters(), *ranges.values()], lr=0.1)
    losses = []
    g = gen(2)
    for _ in range(30):
        opt.zero_grad()
        with analog(net, tile, g, ranges=ranges):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(r.grad is not None and r.grad.abs().sum() > 0 for r in ranges.values())
    assert ranges["0"].item() != 0.5 and losses[-1] < losses[0]


def test_calibrated_percentile_ranges_equal_direct_quantiles():
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))
    batches = [torch.randn(50, 6, generator=gen(i)) for i in range(3)]
    x = torch.cat(batches)
    hidden = torch.relu(net[0](x)).detach()
    tile = TileConfig(in_range="calibrated", calibration="percentile", quantile=0.99)
    r = calibrate(net, tile, batches)
    assert r["0"].shape == () and r["0"] == torch.quantile(x.abs().flatten(), 0.99)
    assert r["2"] == torch.quantile(hidden.flatten(), 0.99)
    per_channel = calibrate(net, TileConfig(in_range="calibrated", in_per_channel=True, in_signed=False,
                                            quantile=0.9), [(b, None) for b in batches], method="percentile")
    assert torch.equal(per_channel["0"], torch.quantile(x.clamp(min=0), 0.9, dim=0))
    assert per_channel["2"].shape == (12,)


def test_calibrated_max_and_std_ranges():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    batches = [torch.randn(10, 3, 6, 6, generator=gen(i)) for i in range(4)]
    x = torch.cat(batches)
    r_max = calibrate(net, TileConfig(in_range="calibrated", in_per_channel=True), batches, method="max")
    assert torch.equal(r_max["0"], x.abs().amax(dim=(0, 2, 3)))
    r_std = calibrate(net, TileConfig(in_range="calibrated", std_alpha=2.5), batches, method="std")
    assert r_std["0"].item() == pytest.approx(2.5 * torch.stack([b.std() for b in batches]).mean().item(), rel=1e-6)
    with analog(net, TileConfig(in_range="calibrated", dac_bits=8), ranges=r_std):
        net(x)


def test_calibration_keeps_modes_and_batch_norm_statistics():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).train()
    stats = net[1].running_mean.clone()
    calibrate(net, TileConfig(in_range="calibrated"), [torch.randn(4, 1, 6, 6, generator=gen())])
    assert net.training and net[1].training and torch.equal(net[1].running_mean, stats)


def test_bad_calibration_and_wrapping_raise_config_errors():
    net = nn.Sequential(nn.Linear(3, 2))
    tile = TileConfig(in_range="calibrated")
    with pytest.raises(ConfigError, match="at least one batch"):
        calibrate(net, tile, [])
    with pytest.raises(ConfigError, match="calibration method"):
        calibrate(net, tile, [torch.ones(1, 3)], method="mean")
    with pytest.raises(ConfigError, match="no range for layer"), analog(net, tile):
        pass
    with pytest.raises(ConfigError, match="Generator"), analog(net, NOISY):
        pass
    with pytest.raises(ConfigError, match="no layer"), analog(nn.ReLU(), TileConfig()):
        pass
    with analog(net, TileConfig()), pytest.raises(ConfigError, match="already inside"), analog(net, TileConfig()):
        pass
    assert "forward" not in net[0].__dict__
