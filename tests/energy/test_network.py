"""Network: energy, analytic gradients against autograd, initialisation, presets."""

from __future__ import annotations

import math

import pytest
import torch
from ebl_helpers import IN_SHAPE, make_net
from torch import nn

from analoglearn.energy.network import HopfieldNetwork
from analoglearn.errors import ConfigError
from analoglearn.registry import MODELS


def random_state(net: HopfieldNetwork, batch: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    state = [torch.rand((batch, *shape), generator=g, dtype=torch.float64) for shape in net.layer_shapes]
    state[-1] = 2 * state[-1] - 1
    return state


def test_state_gradients_match_autograd(net, batch):
    x, _ = batch
    state = [s.requires_grad_(True) for s in random_state(net, x.shape[0])]
    auto = torch.autograd.grad(net.energy(x, state).sum(), state)
    for analytic, reference in zip(net.state_gradients(x, state), auto):
        torch.testing.assert_close(analytic, reference, rtol=1e-12, atol=1e-12)


def test_parameter_gradients_match_autograd(net, batch):
    x, _ = batch
    state = random_state(net, x.shape[0])
    params = [p for pair in net.layer_parameters() for p in pair]
    auto = torch.autograd.grad(net.energy(x, state).mean(), params)
    analytic = [g for pair in net.parameter_gradients(x, state) for g in pair]
    for a, r in zip(analytic, auto):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_energy_is_one_value_per_example_with_self_terms(net, batch):
    x, _ = batch
    zero = net.zero_state(x.shape[0])
    torch.testing.assert_close(net.energy(x, zero), torch.zeros(x.shape[0], dtype=torch.float64))
    ones = [torch.ones_like(s) for s in zero]
    assert net.energy(x, ones).shape == (x.shape[0],)


def test_weights_live_in_conv_and_linear_modules(net):
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 2 and len(linears) == 1
    assert all(m.bias is None for m in convs + linears)
    assert [len(g) for g in net.param_groups()] == [2, 2, 2]
    assert sum(p.numel() for g in net.param_groups() for p in g) == sum(p.numel() for p in net.parameters())


def test_initialisation_bounds_and_determinism():
    state = torch.get_rng_state()
    make_net(seed=3)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is never touched
    a, b = make_net(seed=3, gains=[0.4, 0.7, 0.6]), make_net(seed=3, gains=[0.4, 0.7, 0.6])
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    for gain, ((w, bias), inter) in zip([0.4, 0.7, 0.6], zip(a.layer_parameters(), a.interactions)):
        assert w.abs().max() <= gain / math.sqrt(inter.fan_in)
        assert w.abs().max() > 0.8 * gain / math.sqrt(inter.fan_in)
        assert bias.abs().max() <= 0.5 / math.sqrt(inter.fan_in)


def test_calling_the_network_raises_and_names_the_ways_to_relax_it(net, batch):
    x, _ = batch
    with pytest.raises(TypeError, match=r"method\.predict\(x\).*Minimizer\(\.\.\.\)\.relax"):
        net(x)
    assert not hasattr(net, "eval_iterations") and not hasattr(net, "num_layers")


def test_state_dict_keys_are_those_of_existing_checkpoints(net):
    assert list(net.state_dict()) == [
        "interactions.0.conv.weight",
        "interactions.1.conv.weight",
        "interactions.2.linear.weight",
        "biases.0",
        "biases.1",
        "biases.2",
    ]
    assert [(m.source, m.target) for m in net.interactions] == [(0, 1), (1, 2), (2, 3)]
    assert net.incoming == [[], [0], [1], [2]] and net.outgoing == [[0], [1], [2], []]


def test_presets_check_shapes_and_gains():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="pad_to: 32"):
        MODELS.create("dchn32", None, in_shape=(1, 28, 28), num_classes=10, generator=g)
    with pytest.raises(ConfigError, match="3 gains"):
        make_net(gains=[0.5, 0.5])
    with pytest.raises(ConfigError, match="multiples of 4"):
        MODELS.create("tiny", None, in_shape=(1, 6, 6), num_classes=10, generator=g)
    net = MODELS.create("dchn_cpu", None, in_shape=(1, 28, 28), num_classes=10, generator=g)
    assert net.layer_shapes == [(32, 14, 14), (10,)]
    assert net_in_shape_of_tiny() == IN_SHAPE


def net_in_shape_of_tiny():
    return make_net().in_shape
