"""AnalogSGD: equals SGD on an ideal device, approaches it with many states, checkpoints and resumes exactly."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analoglearn.analog import AnalogSGD, ConstantStep, IdealDevice, SoftBounds
from analoglearn.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


DATA = [(torch.randn(32, 8, generator=gen(i)), torch.randint(0, 3, (32,), generator=gen(100 + i))) for i in range(12)]


def train(model: nn.Module, opt: torch.optim.Optimizer, batches) -> None:
    for x, y in batches:
        def closure(x=x, y=y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)


@pytest.mark.parametrize("options", [{}, {"momentum": 0.9, "weight_decay": 1e-3},
                                     {"momentum": 0.8, "nesterov": True}, {"momentum": 0.5, "dampening": 0.3}])
def test_ideal_device_equals_sgd_bit_for_bit(options):
    a, b = net(), net()
    train(a, torch.optim.SGD(a.parameters(), lr=0.1, **options), DATA)
    train(b, AnalogSGD(b.parameters(), lr=0.1, device=IdealDevice(), **options), DATA)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_many_states_approach_sgd():
    a, b = net(), net()
    train(a, torch.optim.SGD(a.parameters(), lr=0.05), DATA)
    device = ConstantStep(dw_min=1e-6, w_min=-10.0, w_max=10.0, max_pulses=10**7)
    train(b, AnalogSGD(b.parameters(), lr=0.05, device=device), DATA)
    gap = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert gap < len(DATA) * 1e-6  # at most half a step of rounding per update, plus its effect on later ones


def stochastic_opt(model: nn.Module, seed: int) -> AnalogSGD:
    device = SoftBounds(dw_min=0.002, asymmetry=0.05, c2c=0.3, dw_min_d2d=0.2, bounds_d2d=0.1,
                        rounding="stochastic")
    return AnalogSGD(model.parameters(), lr=0.1, momentum=0.9, device=device, generator=gen(seed))


def test_state_dict_round_trips_as_plain_tensors():
    model = net()
    opt = stochastic_opt(model, 1)
    train(model, opt, DATA[:3])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = stochastic_opt(net(), 99)
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh.generator.get_state(), opt.generator.get_state())
    for p, q in zip(model.parameters(), fresh.param_groups[0]["params"]):
        assert opt.state[p].keys() == fresh.state[q].keys() >= {"dw_up", "dw_down", "w_lo", "w_hi", "momentum_buffer"}
        assert all(torch.equal(opt.state[p][k], fresh.state[q][k]) for k in opt.state[p])


def test_resumed_run_equals_the_uninterrupted_one():
    full = net()
    train(full, stochastic_opt(full, 1), DATA)

    cut = net()
    opt = stochastic_opt(cut, 1)
    train(cut, opt, DATA[:5])
    buffer = io.BytesIO()
    torch.save({"model": cut.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = net(seed=7)  # other initial weights and another seed: everything comes from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    opt2 = stochastic_opt(resumed, 42)
    opt2.load_state_dict(checkpoint["optim"])
    train(resumed, opt2, DATA[5:])
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), resumed.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(full.parameters(), net().parameters()))


def test_bad_optimiser_settings():
    params = net().parameters()
    with pytest.raises(ConfigError, match="generator"):
        AnalogSGD(params, lr=0.1, device=ConstantStep(c2c=0.1))
    with pytest.raises(ConfigError, match="lr"):
        AnalogSGD(net().parameters(), lr=-1.0)
    with pytest.raises(ConfigError, match="nesterov"):
        AnalogSGD(net().parameters(), lr=0.1, nesterov=True)
    opt = stochastic_opt(net(), 0)
    plain = AnalogSGD(net().parameters(), lr=0.1, momentum=0.9, device=SoftBounds(dw_min=0.002, asymmetry=0.05))
    with pytest.raises(ConfigError, match="generator"):
        plain.load_state_dict(opt.state_dict())
