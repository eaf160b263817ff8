"""The per-example tolerance stop: each example of a batch stops on its own, as it would alone."""

from __future__ import annotations

import pytest
import torch
from ebl_helpers import make_batch, make_net
from test_deep import batch as deep_batch
from test_deep import build

from analoglearn.energy.estimators import Settings, estimate
from analoglearn.energy.methods import EnergyMethod, EnergyOptions
from analoglearn.energy.minimize import Minimizer
from analoglearn.errors import ConfigError

TOL, CAP = 1e-9, 400


def _varied_batch(size: int = 12):
    """Inputs of very different scales, so that their relaxations need different iteration counts."""
    x, y = make_batch(size, seed=3)
    return x * torch.linspace(0.05, 3.0, size, dtype=x.dtype).view(-1, 1, 1, 1), y


def _gap(a, b) -> float:
    return max(float((s - t).abs().max()) for s, t in zip(a, b))


@pytest.mark.parametrize("every", [1, 3])
def test_each_example_stops_when_it_alone_has_converged(every):
    net = make_net()
    x, _ = _varied_batch()
    init = net.zero_state(x.shape[0])
    fixed = Minimizer(precision="fp64").relax(net, x, init, CAP).state
    together = Minimizer(precision="fp64", tolerance=TOL, check_every=every, per_example=False).relax(
        net, x, init, CAP)
    each = Minimizer(precision="fp64", tolerance=TOL, check_every=every).relax(net, x, init, CAP)
    used = each.example_iterations
    assert together.example_iterations is None and used is not None and used.shape == (x.shape[0],)
    assert int(used.max()) == each.iterations == together.iterations < CAP
    assert int(used.min()) < each.iterations  # some examples left the batch early
    assert bool((used % every == 0).all())
    assert _gap(each.state, fixed) < 10 * TOL and _gap(together.state, fixed) < 10 * TOL
    for b in range(x.shape[0]):  # every example ends as it would alone, after as many iterations
        alone = Minimizer(precision="fp64", tolerance=TOL, check_every=every, per_example=False).relax(
            net, x[b:b + 1], [t[b:b + 1] for t in init], CAP)
        assert alone.iterations == int(used[b])
        torch.testing.assert_close([t[b:b + 1] for t in each.state], alone.state, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["cross-entropy", "input-skip", "max-skip-ranges"])
def test_the_per_example_stop_under_nudging_and_other_layouts(name):
    net = build(name)
    x, target = deep_batch(8)
    x = x * torch.linspace(0.1, 2.0, 8, dtype=x.dtype).view(-1, 1, 1, 1)
    init = net.zero_state(8)
    for beta in (0.0, 0.2, -0.2):
        kw = {"beta": beta, "target": target} if beta else {}
        fixed = Minimizer(precision="fp64").relax(net, x, init, CAP, **kw).state
        each = Minimizer(precision="fp64", tolerance=TOL, check_every=2).relax(net, x, init, CAP, **kw)
        assert each.iterations < CAP
        assert _gap(each.state, fixed) < 10 * TOL, (name, beta)


def test_clamped_output_and_reused_input_drive_under_the_per_example_stop():
    net = make_net()
    x, y = _varied_batch()
    target = torch.nn.functional.one_hot(y, 3).double()
    minimizer = Minimizer(precision="fp64", tolerance=TOL, check_every=2)
    free = minimizer.relax(net, x, net.zero_state(x.shape[0]), CAP)
    plain = Minimizer(precision="fp64").relax(net, x, net.zero_state(x.shape[0]), CAP)
    assert free.input_drive is not None and set(free.input_drive) == set(plain.input_drive)
    for i, (drive, aux) in free.input_drive.items():  # the whole batch's, not the last examples'
        assert torch.equal(drive, plain.input_drive[i][0])
        assert aux is None or torch.equal(aux, plain.input_drive[i][1])
    clamped = minimizer.relax(net, x, free.state, CAP, clamp_output=target, input_drive=free.input_drive)
    reference = Minimizer(precision="fp64").relax(net, x, free.state, CAP, clamp_output=target)
    assert torch.equal(clamped.state[-1], target.double())
    assert _gap(clamped.state, reference.state) < 10 * TOL
    for algorithm in ("CEP", "CL"):
        settings = Settings(beta=0.2, iterations=CAP, minimizer=minimizer)
        fixed = Settings(beta=0.2, iterations=CAP, minimizer=Minimizer(precision="fp64"))
        stopped = estimate(algorithm, net, x, target, free.state, settings, free.input_drive)
        exact = estimate(algorithm, net, x, target, plain.state, fixed, plain.input_drive)
        for got, want in zip(stopped, exact):
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_the_stop_option_and_where_it_does_not_apply():
    net = make_net()
    x, _ = _varied_batch()
    assert EnergyMethod("CEP", net, EnergyOptions(tolerance=1e-6)).minimizer.per_example
    assert not EnergyMethod("CEP", net, EnergyOptions(tolerance=1e-6, stop="batch")).minimizer.per_example
    with pytest.raises(ConfigError, match="stop 'row'.*example, batch"):
        EnergyOptions(stop="row")
    with pytest.raises(ConfigError, match="per_example"):
        Minimizer(per_example="yes")
    # no tolerance, or a differentiable relaxation (truncated backprop's one graph): no per-example stop
    assert Minimizer(precision="fp64").relax(net, x, net.zero_state(12), 5).example_iterations is None
    graph = Minimizer(precision="fp64", tolerance=TOL).relax(net, x, net.zero_state(12), 50, differentiable=True)
    assert graph.example_iterations is None

