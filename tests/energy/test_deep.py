"""Deeper energy-based networks: skip interactions, the coloured schedule, activation ranges, the
output gain and the cross-entropy read-out (physics and gradients, in float64)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from analoglearn.energy.diagnose import compare, gradient_fidelity, tight_minimizer, true_gradient
from analoglearn.energy.estimators import Settings, estimate, onehot, parameters
from analoglearn.energy.interactions import ConvInteraction
from analoglearn.energy.layout import Readout, colour_layers
from analoglearn.energy.methods import EnergyMethod, EnergyOptions
from analoglearn.energy.minimize import Minimizer
from analoglearn.energy.network import HopfieldNetwork
from analoglearn.energy.presets import HopfieldOptions, HopfieldSpec, hopfield, hopfield_resnet13
from analoglearn.errors import ConfigError

CLASSES = 3

# Networks with skips of every kind, other activation ranges and both read-outs (1×8×8 inputs).
NETWORKS = {
    "avg-skip": dict(conv_channels=(4, 8), downsample=["avg", "avg"], skips=[(1, 3)]),
    "stride-skip-relu6": dict(conv_channels=(4, 8, 8), downsample=["max", "none", "max"], ranges=(0.0, 6.0),
                              skips=[{"source": 1, "target": 3, "kernel": 1, "mode": "stride"}]),
    "input-skip": dict(conv_channels=(4, 8), downsample=["stride", "stride"],
                       skips=[{"source": 0, "target": 2, "kernel": 3, "mode": "avg"}]),
    "max-skip-ranges": dict(conv_channels=(4, 6, 8), downsample=["none", "max", "avg"],
                            ranges=[(-1.0, 1.0), (0.0, 2.0), (0.0, 1.5)],
                            skips=[{"source": 1, "target": 3, "mode": "max"}]),
    "dense-skips": dict(conv_channels=(4,), dense_units=(6, 5), skips=[(1, 3), (2, 4)]),
    "cross-entropy": dict(conv_channels=(4, 8), readout="cross_entropy", output_gain=2.0),
    "cross-entropy-skip": dict(conv_channels=(4, 8, 8), downsample=["avg", "none", "avg"], skips=[(1, 3)],
                               readout="cross_entropy"),
    "output-gain": dict(conv_channels=(4, 8), output_gain=0.5),
}


def build(name: str, seed: int = 0) -> HopfieldNetwork:
    spec = dict(NETWORKS[name])
    count = len(spec["conv_channels"]) + len(spec.get("dense_units", ())) + 1 + len(spec.get("skips", ()))
    net = HopfieldNetwork((1, 8, 8), num_classes=CLASSES, gains=[0.6] * count,
                          generator=torch.Generator().manual_seed(seed), **spec)
    return net.double()


def batch(size: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((size, 1, 8, 8), generator=g, dtype=torch.float64)
    return x, onehot(torch.randint(0, CLASSES, (size,), generator=g), CLASSES, torch.float64)


def random_state(net: HopfieldNetwork, size: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape, (lo, hi) in zip(net.layer_shapes, net.ranges):
        u = torch.rand((size, *shape), generator=g, dtype=torch.float64)
        out.append(lo + (hi - lo) * u if math.isfinite(lo) else 2 * u - 1)
    return out


# ---------------------------------------------------------------- interactions


@pytest.mark.parametrize("kernel, factor, mode, size", [
    (3, 2, "max", 8), (3, 2, "avg", 8), (3, 2, "stride", 8), (3, 2, "stride", 7), (1, 2, "stride", 8),
    (1, 4, "avg", 8), (1, 2, "max", 8), (3, 1, "max", 6),
])
def test_conv_interactions_drive_feedback_and_weight_gradient_are_derivatives_of_their_energy(kernel, factor,
                                                                                              mode, size):
    g = torch.Generator().manual_seed(3)
    m = ConvInteraction(3, 5, source=1, target=3, kernel=kernel, factor=factor, mode=mode).double()
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64))
    pre = torch.randn(2, 3, size, size, generator=g, dtype=torch.float64, requires_grad=True)
    drive, aux = m.drive(pre.detach(), m.weight.detach())
    post = torch.randn(drive.shape, generator=g, dtype=torch.float64, requires_grad=True)
    energy = m.energy(pre, post, m.weight)
    d_pre, d_post, d_weight = torch.autograd.grad(energy.sum(), (pre, post, m.weight))
    torch.testing.assert_close(-d_post, drive, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(-d_pre, m.feedback(post.detach(), aux, m.weight.detach(), pre.shape),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_weight / 2, m.weight_gradient(pre.detach(), post.detach(), aux, m.weight.detach()),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_state_and_parameter_gradients_of_networks_with_skips_match_autograd(name):
    net = build(name)
    x, _ = batch()
    state = [s.requires_grad_(True) for s in random_state(net, 4)]
    energy = net.energy(x, state).sum()
    layers = state if net.readout.in_energy else state[:-1]  # the cross-entropy read-out is outside E
    autograd_states = torch.autograd.grad(energy, layers, retain_graph=True)
    for analytic, exact in zip(net.state_gradients(x, [s.detach() for s in state]), autograd_states):
        torch.testing.assert_close(analytic, exact, rtol=1e-10, atol=1e-10)
    params = parameters(net)
    exact = torch.autograd.grad(energy / 4, params, allow_unused=True)
    analytic = [g for group in net.parameter_gradients(x, [s.detach() for s in state]) for g in group]
    for a, e, p in zip(analytic, exact, params):
        torch.testing.assert_close(a, e if e is not None else torch.zeros_like(p), rtol=1e-10, atol=1e-10)


def test_cross_entropy_readout_gradients_equal_autograd():
    net = build("cross-entropy")
    x, target = batch()
    state = random_state(net, 4)
    w, b = net.interactions[-1].weight, net.biases[-1]
    s_last = state[-2].clone().requires_grad_(True)
    out = torch.nn.functional.linear(s_last.flatten(1), w, b)
    loss = net.readout.cost(out, target).sum()
    torch.testing.assert_close(net.readout.cost(out, target),
                               torch.nn.functional.cross_entropy(2.0 * out, target.argmax(1), reduction="none"))
    d_s, d_w, d_b = torch.autograd.grad(loss, (s_last, w, b))
    force, logits = net.readout_force(x, state, net.weights(), target)
    torch.testing.assert_close(force, d_s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, out.detach())
    beta = 0.3
    grads = net.parameter_gradients(x, state, beta=beta, target=target)
    torch.testing.assert_close(grads[-1][0], beta * d_w / 4, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[-1][1], beta * d_b / 4, rtol=1e-12, atol=1e-12)
    assert float(net.parameter_gradients(x, state)[-1][0].abs().max()) == 0.0  # β = 0: outside the energy


def test_energy_readout_cost_with_gain_and_its_output_gradient():
    readout = Readout("energy", 0.5)
    o, y = torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.eye(4, dtype=torch.float64)[:3]
    cost = readout.cost(o, y)
    torch.testing.assert_close(cost, 0.5 * (0.5 * o - y).pow(2).sum(1))
    torch.testing.assert_close(readout.output_gradient(o.detach(), y), torch.autograd.grad(cost.sum(), o)[0])


# ---------------------------------------------------------------- the coloured schedule


def _parity_groups(self, net, clamped):
    """Paper A's schedule as the code had it before the colouring (the oracle)."""
    num_layers = len(net.layer_shapes)
    free = list(range(num_layers - 1 if clamped else num_layers))
    groups = [[k for k in free if k % 2 == 0], [k for k in free if k % 2 == 1]]
    return [group for group in groups if group]


@pytest.mark.parametrize("preset, shape", [("tiny", (1, 8, 8)), ("dchn_cpu", (1, 12, 12)), ("dchn32", (3, 32, 32))])
def test_two_colour_schedule_is_bit_equal_to_the_even_odd_schedule(monkeypatch, preset, shape):
    from analoglearn.registry import MODELS

    if preset == "dchn32":  # a narrow copy of dchn32's layout (4 conv-pool layers, 32×32)
        net = HopfieldNetwork(shape, (4, 4, 8, 8), 10, gains=[0.5] * 5, generator=torch.Generator().manual_seed(0))
    else:
        net = MODELS.create(preset, None, in_shape=shape, num_classes=10, generator=torch.Generator().manual_seed(0))
    assert max(net.colours) == 1
    x = torch.randn((3, *shape), generator=torch.Generator().manual_seed(1))
    y = onehot(torch.tensor([0, 4, 9]), 10, torch.float32)
    runs = []
    for groups in (None, _parity_groups):
        if groups is not None:
            monkeypatch.setattr(Minimizer, "groups", groups)
        m = Minimizer()
        free = m.relax(net, x, net.zero_state(3), 7).state
        nudged = m.relax(net, x, free, 4, beta=0.3, target=y).state
        clamped = m.relax(net, x, free, 4, clamp_output=y).state
        runs.append([*free, *nudged, *clamped])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_colouring_splits_interacting_layers_and_keeps_chains_two_coloured():
    assert build("avg-skip").colours == [0, 1, 2] == colour_layers(3, build("avg-skip").interactions)
    net = hopfield_resnet13(None, in_shape=(3, 32, 32), num_classes=10, generator=torch.Generator().manual_seed(0))
    assert net.colours == [0, 1, 0, 2, 0, 1, 0, 2, 0]  # {s1,s3,s5,s7,o}, {s2,s6}, {s4,s8}
    for name in NETWORKS:
        net = build(name)
        for m in net.interactions:
            if m.source >= 1:
                assert net.colours[m.source - 1] != net.colours[m.target - 1], (name, m.source, m.target)


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("seed", [0, 1, 2])
@torch.no_grad()
def test_energy_never_increases_along_the_coloured_asynchronous_schedule(name, seed):
    net = build(name, seed)
    x, _ = batch(seed=seed + 10)
    m = Minimizer(precision="fp64")
    state = net.zero_state(4)
    energies = [net.energy(x, state)]
    for _ in range(25):
        state = m.relax(net, x, state, 1).state
        energies.append(net.energy(x, state))
    steps = torch.stack(energies).diff(dim=0)
    assert float(steps.max()) <= 1e-10 * float(torch.stack(energies).abs().max()), (name, float(steps.max()))


@pytest.mark.parametrize("name", ["cross-entropy", "cross-entropy-skip", "output-gain", "stride-skip-relu6"])
@pytest.mark.parametrize("beta", [0.5, -0.5, 2.0])
@torch.no_grad()
def test_nudged_energy_never_increases_either_read_out(name, beta):
    net = build(name)
    if net.readout.in_energy and beta * net.readout.gain**2 <= -1:
        pytest.skip("E − |β|C unbounded below in the output")
    x, target = batch()
    free = Minimizer(precision="fp64").relax(net, x, net.zero_state(4), 40).state
    m = Minimizer(precision="fp64")

    def nudged_energy(state):
        output = state[-1]
        if not net.readout.in_energy:  # the read-out of s_L (relax refreshes it; here between iterations)
            readout = net.interactions[net.chain - 1]
            output = readout.drive(state[-2], readout.weight)[0] + net.biases[-1]
        return net.energy(x, state) + beta * net.readout.cost(output, target)

    state, values = free, [nudged_energy(free)]
    for _ in range(20):
        state = m.relax(net, x, state, 1, beta=beta, target=target).state
        values.append(nudged_energy(state))
    steps = torch.stack(values).diff(dim=0)
    assert float(steps.max()) <= 1e-10 * float(torch.stack(values).abs().max()), float(steps.max())


def test_activation_ranges_clamp_states_and_start_in_range():
    net = build("max-skip-ranges")
    x, _ = batch()
    assert [float(s.abs().max()) for s in net.zero_state(2)[:-1]] == [0.0, 0.0, 0.0]
    net.ranges[2] = (0.5, 1.5)  # a start of 0 is projected into the range
    assert float(net.zero_state(2)[2].min()) == 0.5
    net.ranges[2] = (0.0, 1.5)
    state = Minimizer(precision="fp64").relax(net, x, net.zero_state(4), 30).state
    for s, (lo, hi) in zip(state[:-1], net.ranges):
        assert lo <= float(s.min()) and float(s.max()) <= hi
    assert float(state[0].min()) == -1.0  # the range [-1, 1] is used


# ---------------------------------------------------------------- EP → the true gradient as β → 0


def _slope(betas, errors) -> float:
    return float(np.polyfit(np.log(betas), np.log(errors), 1)[0])


@pytest.mark.parametrize("name", ["stride-skip-relu6", "dense-skips", "cross-entropy", "output-gain",
                                  "input-skip"])
def test_ep_approaches_the_true_gradient_centered_second_order_one_sided_first_order(name):
    net = build(name)
    x, target = batch()
    free = tight_minimizer().relax(net, x, net.zero_state(4), 20_000).state
    truth = true_gradient(net, x, target, free)
    betas = [0.0004, 0.0002, 0.0001]
    errors = {"CEP": [], "PEP": [], "NEP": []}
    for beta in betas:
        settings = Settings(beta, 20_000, tight_minimizer(), 20_000, rbp_tolerance=1e-16)
        for algorithm in errors:
            score = compare(estimate(algorithm, net, x, target, free, settings), truth)
            errors[algorithm].append(score["relative_error"])
    assert 1.7 < _slope(betas, errors["CEP"]) < 2.3, errors
    assert 0.8 < _slope(betas, errors["PEP"]) < 1.2, errors
    assert 0.8 < _slope(betas, errors["NEP"]) < 1.2, errors
    tbp = estimate("TBP", net, x, target, free, Settings(0.1, 400, Minimizer(precision="fp64")))
    assert compare(tbp, truth)["relative_error"] < 1e-8


def test_diagnose_gradients_runs_on_the_new_presets():
    result = gradient_fidelity("dchn_deep_cpu", 0.01, batch_size=1, algorithms=["CEP", "TBP"])
    assert result["TBP"]["relative_error"] < 1e-8 and result["CEP"]["cosine"] > 0.99
    assert set(result["CEP"]["per_layer"]) == {"layer1", "layer2", "layer3", "layer4"}  # 4 interactions
    ce = gradient_fidelity("tiny", 0.01, batch_size=2, options=HopfieldOptions(readout="cross_entropy"))
    assert set(ce) == {"PEP", "NEP", "CEP", "TBP", "RBP"} and ce["CEP"]["cosine"] > 0.999
    with pytest.raises(ConfigError, match="clamp the output"):
        gradient_fidelity("tiny", 0.01, algorithms=["CL"], options=HopfieldOptions(readout="cross_entropy"))


# ---------------------------------------------------------------- presets and training


def test_hopfield_resnet13_has_the_anchor_layout():
    net = hopfield_resnet13(None, in_shape=(3, 32, 32), num_classes=10, generator=torch.Generator().manual_seed(0))
    assert len(net.interactions) == 13 and net.chain == 9
    assert [tuple(m.weight.shape) for m in net.interactions][-4:] == [(128, 3, 1, 1), (256, 128, 1, 1),
                                                                      (512, 256, 1, 1), (512, 512, 1, 1)]
    assert [(m.source, m.target) for m in net.interactions][-4:] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert net.layer_shapes[-2:] == [(512, 2, 2), (10,)] and net.ranges[:-1] == [(0.0, 6.0)] * 8
    bound = 0.7 / math.sqrt(3)  # skip x → s2: gain 0.7, fan-in 3·1·1
    assert 0.9 * bound < float(net.interactions[9].weight.detach().abs().max()) <= bound


def test_a_network_with_skips_trains_with_every_allowed_method():
    spec = HopfieldSpec(conv_channels=[4, 8], downsample=["max", "stride"], skips=[[1, 3]], activation_range=[0, 2])
    net = hopfield(spec, in_shape=(1, 8, 8), num_classes=CLASSES, generator=torch.Generator().manual_seed(0))
    x, target = batch(16)
    y = target.argmax(1)
    for algorithm in ("CEP", "NEP", "PEP", "TBP", "RBP", "CL", "CCpL"):
        model = hopfield(spec, in_shape=(1, 8, 8), num_classes=CLASSES, generator=torch.Generator().manual_seed(0))
        method = EnergyMethod(algorithm, model, EnergyOptions(free_iterations=20, nudged_iterations=10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        losses = []
        for _ in range(15):
            optimizer.zero_grad()
            losses.append(float(method.closure(x.float(), y)()))
            optimizer.step()
        assert losses[-1] < losses[0], (algorithm, losses)
    groups = net.param_groups()
    assert len(groups) == 4 and len(groups[-1]) == 1 and groups[-1][0] is net.interactions[-1].weight  # a skip: W


@pytest.mark.parametrize("options, expected", [
    (dict(conv_channels=[4, 8], skips=[[0, 1]]), "source < target - 1"),
    (dict(conv_channels=[4, 8], downsample=["none", "none"], skips=[[1, 3]], readout="cross_entropy"),
     "reads s2 only"),
    (dict(conv_channels=[4, 8, 8], downsample=["max", "none", "none"],
          skips=[{"source": 0, "target": 3, "mode": "max"}]), None),
    (dict(conv_channels=[4, 8], dense_units=[5], skips=[[1, 3], [1, 4]]), None),
    (dict(conv_channels=[4, 8], dense_units=[5], skips=[[2, 3]]), "adjacent layers"),
    (dict(conv_channels=[4, 8], skips=[[1, 5]]), "source < target - 1 <= 2"),
    (dict(conv_channels=[4, 8], skips=[{"source": 0, "target": 2, "kernel": 5}]), "kernel must be 1 or 3"),
    (dict(conv_channels=[4, 8], skips=[[0, 2, 1]]), "a skip is [source, target]"),
    (dict(conv_channels=[4, 8], activation_range=[1, 1]), "lo < hi"),
    (dict(conv_channels=[4, 8], activation_range=[0, float("inf")]), "finite"),
    (dict(conv_channels=[4, 8], activation_range=[[-1, 1], [0, 1]]), "admits negative values"),
    (dict(conv_channels=[4, 8], readout="softmax"), "choose one of energy, cross_entropy"),
    (dict(conv_channels=[4, 8], output_gain=0), "output_gain"),
    (dict(conv_channels=[4, 8], downsample=["max", "pool"]), "downsample"),
])
def test_bad_architectures_are_refused_with_a_clear_message(options, expected):
    def make():
        spec = HopfieldSpec(**options)
        return hopfield(spec, in_shape=(1, 8, 8), num_classes=CLASSES, generator=torch.Generator().manual_seed(0))

    if expected is None:
        make()
        return
    with pytest.raises(ConfigError, match=re.escape(expected)):
        make()


def test_clamping_methods_and_unbounded_nudges_are_refused():
    net = build("cross-entropy").float()
    for algorithm in ("CL", "PCpL", "NCpL", "CCpL"):
        with pytest.raises(ConfigError, match="clamps the output"):
            EnergyMethod(algorithm, net)
    with pytest.raises(ConfigError, match="unbounded below"):
        EnergyMethod("CEP", build("output-gain").float(), EnergyOptions(beta=4.5))
