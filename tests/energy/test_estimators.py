"""Estimators: EP bias orders, TBP vs finite differences, RBP vs TBP, descent of every algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ebl_helpers import make_batch, make_net

from analoglearn.energy.diagnose import flatten, gradient_fidelity
from analoglearn.energy.estimators import ALGORITHMS, Settings, cost, estimate, onehot, write_gradients
from analoglearn.energy.minimize import Minimizer


def _slope(betas, errors) -> float:
    return float(np.polyfit(np.log(betas), np.log(errors), 1)[0])


def test_centered_ep_bias_is_second_order_and_one_sided_first_order():
    betas = [0.008, 0.004, 0.002, 0.001]
    errors = {name: [] for name in ("CEP", "PEP", "NEP")}
    for beta in betas:
        result = gradient_fidelity("tiny", beta, batch_size=4, algorithms=list(errors))
        for name in errors:
            errors[name].append(result[name]["relative_error"])
    assert 1.8 < _slope(betas, errors["CEP"]) < 2.2
    assert 0.8 < _slope(betas, errors["PEP"]) < 1.2
    assert 0.8 < _slope(betas, errors["NEP"]) < 1.2
    assert errors["CEP"][-1] < 1e-4


def test_gradient_fidelity_targets_on_tiny():
    result = gradient_fidelity("tiny", 0.05)
    assert set(result) == set(ALGORITHMS)
    assert result["CEP"]["cosine"] > 0.99
    assert result["CEP"]["relative_error"] < result["PEP"]["relative_error"]
    assert result["TBP"]["relative_error"] < 1e-8
    assert set(result["CEP"]["per_layer"]) == {"layer1", "layer2", "layer3"}


def _unrolled_cost(net, x, target, start, iterations):
    state = Minimizer(precision="fp64").relax(net, x, start, iterations).state
    return float(cost(state[-1], target).mean())


def test_truncated_backprop_matches_finite_differences():
    net = make_net(seed=2)
    x, y = make_batch(batch=3, seed=3)
    target = onehot(y, 3, torch.float64)
    free = Minimizer(precision="fp64").relax(net, x, net.zero_state(3), 6).state  # not at equilibrium
    settings = Settings(0.1, 5, Minimizer(precision="fp64"))
    grad = flatten(estimate("TBP", net, x, target, free, settings))
    params = [p for pair in net.layer_parameters() for p in pair]
    direction = [
        torch.randn(p.shape, generator=torch.Generator().manual_seed(9), dtype=p.dtype) for p in params
    ]
    eps = 1e-6
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
        values.append(_unrolled_cost(net, x, target, free, 5))
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    analytic = float(grad @ torch.cat([d.flatten() for d in direction]))
    assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(analytic))


def test_recurrent_backprop_agrees_with_truncated_backprop_when_long(net, batch):
    x, y = batch
    target = onehot(y, 3, torch.float64)
    tight = Minimizer(precision="fp64", tolerance=1e-13)
    free = tight.relax(net, x, net.zero_state(4), 2000).state
    tbp = flatten(estimate("TBP", net, x, target, free, Settings(0.1, 150, Minimizer(precision="fp64"))))
    rbp = flatten(estimate("RBP", net, x, target, free, Settings(0.1, 15, tight, rbp_steps=300)))
    assert (tbp - rbp).norm() < 1e-8 * rbp.norm()
    short = flatten(estimate("RBP", net, x, target, free, Settings(0.1, 15, tight, rbp_steps=2)))
    assert (short - rbp).norm() > 1e-3 * rbp.norm()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_estimator_lowers_the_training_cost(algorithm):
    net = make_net(seed=1, dtype=torch.float32)
    x, y = make_batch(batch=8, seed=2, dtype=torch.float32)
    target = onehot(y, 3, torch.float32)
    minimizer = Minimizer(precision="fp32", tolerance=1e-6)
    settings = Settings(1.0 if algorithm == "CL" else 0.2, 40, minimizer, rbp_steps=40)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def free_cost():
        free = minimizer.relax(net, x, net.zero_state(8), 300).state
        return free, float(cost(free[-1], target).mean())

    _, before = free_cost()
    for _ in range(5):
        free, _ = free_cost()
        optimizer.zero_grad()
        write_gradients(net, estimate(algorithm, net, x, target, free, settings))
        optimizer.step()
    _, after = free_cost()
    assert after < 0.85 * before


def test_gradient_sign_matches_the_cost_gradient(net, batch):
    x, y = batch
    target = onehot(y, 3, torch.float64)
    free = Minimizer(precision="fp64", tolerance=1e-13).relax(net, x, net.zero_state(4), 2000).state
    cep = flatten(
        estimate(
            "CEP", net, x, target, free, Settings(0.01, 2000, Minimizer(precision="fp64", tolerance=1e-13))
        )
    )
    tbp = flatten(estimate("TBP", net, x, target, free, Settings(0.01, 150, Minimizer(precision="fp64"))))
    assert float(cep @ tbp) > 0.99 * float(cep.norm() * tbp.norm())


@pytest.mark.parametrize("algorithm", ["CEP", "CCpL", "CL"])
def test_reusing_the_input_drive_changes_nothing(net, batch, algorithm):
    x, y = batch
    target = onehot(y, 3, torch.float64)
    minimizer = Minimizer(precision="fp64")
    free = minimizer.relax(net, x, net.zero_state(4), 30)
    assert free.input_drive is not None
    settings = Settings(0.2, 10, minimizer)
    plain = flatten(estimate(algorithm, net, x, target, free.state, settings))
    reused = flatten(estimate(algorithm, net, x, target, free.state, settings, free.input_drive))
    assert torch.equal(plain, reused)


def test_diagnose_rejects_unknown_names():
    from analoglearn.errors import ConfigError

    with pytest.raises(ConfigError, match="valid presets"):
        gradient_fidelity("resnet", 0.1)
    with pytest.raises(ConfigError, match="CEP"):
        gradient_fidelity("tiny", 0.1, algorithms=["XEP"])
