"""Minimiser: monotone energy, asynchronous vs synchronous, caching, precision."""

from __future__ import annotations

import pytest
import torch
from ebl_helpers import make_batch, make_net

from analoglearn.energy.minimize import Minimizer, check_precision
from analoglearn.errors import ConfigError


def test_energy_never_increases_along_asynchronous_iterations(net, batch):
    x, _ = batch
    g = torch.Generator().manual_seed(5)
    state = [torch.rand((x.shape[0], *shape), generator=g, dtype=torch.float64) for shape in net.layer_shapes]
    minimizer = Minimizer(precision="fp64")
    energies = [net.energy(x, state)]
    for _ in range(25):
        state = minimizer.relax(net, x, state, 1).state
        energies.append(net.energy(x, state))
    energies = torch.stack(energies)
    assert (energies[1:] <= energies[:-1] + 1e-12).all()
    assert (energies[-1] < energies[0]).all()


def test_asynchronous_converges_in_fewer_iterations_than_synchronous():
    net = make_net(seed=4, gains=[1.0, 1.0, 1.0])
    x, _ = make_batch(batch=8, seed=4)
    init = net.zero_state(8)
    fast = Minimizer(precision="fp64", tolerance=1e-5).relax(net, x, init, 200)
    slow = Minimizer(precision="fp64", tolerance=1e-5, schedule="synchronous").relax(net, x, init, 200)
    assert fast.residual < 1e-5
    assert fast.iterations < slow.iterations


def test_fixed_point_is_a_stationary_point_of_the_energy(net, batch):
    x, _ = batch
    state = Minimizer(precision="fp64", tolerance=1e-13).relax(net, x, net.zero_state(4), 1000).state
    grads = net.state_gradients(x, state)
    for s, g in zip(state[:-1], grads[:-1]):
        interior = (s > 1e-9) & (s < 1 - 1e-9)
        assert g[interior].abs().max() < 1e-10
        assert (g[s <= 1e-9] >= -1e-10).all() and (g[s >= 1 - 1e-9] <= 1e-10).all()
    assert grads[-1].abs().max() < 1e-10


@pytest.mark.parametrize("schedule", ["asynchronous", "synchronous"])
def test_cached_and_naive_relaxations_are_identical(net, batch, schedule):
    x, y = batch
    init = net.zero_state(4)
    target = torch.nn.functional.one_hot(y, 3).double()
    cached = Minimizer(schedule, "fp64", cache=True).relax(net, x, init, 12, beta=0.3, target=target)
    naive = Minimizer(schedule, "fp64", cache=False).relax(net, x, init, 12, beta=0.3, target=target)
    for a, b in zip(cached.state, naive.state):
        assert torch.equal(a, b)


def test_bf16_relaxation_ends_near_fp32_state():
    net = make_net(dtype=torch.float32)
    x, _ = make_batch(batch=8, dtype=torch.float32)
    init = net.zero_state(8)
    exact = Minimizer(precision="fp32").relax(net, x, init, 40).state
    low = Minimizer(precision="bf16").relax(net, x, init, 40).state
    assert all(s.dtype == torch.float32 for s in low)
    for a, b in zip(exact, low):
        assert (a - b).abs().max() < 0.05


def test_nudged_output_updates_reach_the_same_fixed_point(net, batch):
    x, y = batch
    target = torch.nn.functional.one_hot(y, 3).double()
    free = Minimizer(precision="fp64").relax(net, x, net.zero_state(4), 200).state
    kw = dict(beta=0.5, target=target)
    exact = Minimizer(precision="fp64", output_update="exact").relax(net, x, free, 300, **kw).state
    ref = Minimizer(precision="fp64", output_update="reference").relax(net, x, free, 300, **kw).state
    for a, b in zip(exact, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_tolerance_reports_iterations_used(net, batch):
    x, _ = batch
    result = Minimizer(precision="fp64", tolerance=1e-8).relax(net, x, net.zero_state(4), 500)
    assert 1 < result.iterations < 500 and result.residual < 1e-8
    assert Minimizer(precision="fp64").relax(net, x, net.zero_state(4), 7).iterations == 7


@pytest.mark.parametrize("precision, tolerance", [("fp64", 1e-9), ("fp32", 1e-6)])
def test_a_tolerance_stop_lands_within_ten_tolerances_of_the_fixed_schedule(net, batch, precision, tolerance):
    x, y = batch
    target = torch.nn.functional.one_hot(y, 3).double()
    cap = 400
    for kw in ({}, {"beta": 0.3, "target": target}):
        fixed = Minimizer(precision=precision).relax(net, x, net.zero_state(4), cap, **kw).state
        for every in (1, 4, 7):
            stopped = Minimizer(precision=precision, tolerance=tolerance, check_every=every).relax(
                net, x, net.zero_state(4), cap, **kw)
            assert stopped.iterations < cap and stopped.iterations % every == 0
            assert stopped.residual < tolerance
            gap = max(float((a - b).abs().max()) for a, b in zip(stopped.state, fixed))
            assert gap < 10 * tolerance, (every, gap)
    first = Minimizer(precision="fp64", tolerance=1e-9).relax(net, x, net.zero_state(4), cap).iterations
    for every in (2, 5):
        later = Minimizer(precision="fp64", tolerance=1e-9, check_every=every).relax(net, x, net.zero_state(4), cap)
        assert first <= later.iterations <= first + every - 1


def test_eval_tolerance_stops_only_the_evaluation_relaxation(net, batch):
    from analoglearn.energy.methods import EnergyMethod, EnergyOptions

    x, _ = batch
    method = EnergyMethod("CEP", net, EnergyOptions(eval_iterations=300, eval_tolerance=1e-9, check_every=3))
    assert method.minimizer.tolerance is None and method.eval_minimizer.tolerance == 1e-9
    fixed = Minimizer(precision="fp32").relax(net, x, net.zero_state(4), 300).state[-1]
    torch.testing.assert_close(method.predict(x), fixed, rtol=0, atol=1e-8)
    for bad in ({"tolerance": 0.0}, {"tolerance": float("inf")}, {"eval_tolerance": float("nan")},
                {"check_every": 0}, {"check_every": 2.5}):
        with pytest.raises(ConfigError, match="tolerance|check_every"):
            EnergyOptions(**bad)


def test_bad_settings_raise_config_error():
    for bad in ({"tolerance": -1.0}, {"tolerance": float("inf")}, {"check_every": 0}):
        with pytest.raises(ConfigError, match="tolerance|check_every"):
            Minimizer(**bad)
    with pytest.raises(ConfigError, match="asynchronous"):
        Minimizer(schedule="gauss-seidel")
    with pytest.raises(ConfigError, match="bf16"):
        Minimizer(precision="int8")
    with pytest.raises(ConfigError, match="exact"):
        Minimizer(output_update="newton")
    with pytest.raises(ConfigError, match="valid precisions"):
        check_precision("fp8", "cpu")


def test_groups_follow_layer_parity():
    from analoglearn.energy.network import HopfieldNetwork

    def chain(layers):  # a dense chain of `layers` layers (the output included)
        return HopfieldNetwork((1, 2, 2), (), 2, dense_units=[3] * (layers - 1), gains=[0.5] * layers,
                               generator=torch.Generator().manual_seed(0))

    asynchronous, synchronous = Minimizer(), Minimizer(schedule="synchronous")
    assert asynchronous.groups(chain(5), clamped=False) == [[0, 2, 4], [1, 3]]  # {s1, s3, o}, {s2, s4}
    assert asynchronous.groups(chain(5), clamped=True) == [[0, 2], [1, 3]]
    assert asynchronous.groups(chain(2), clamped=True) == [[0]]
    assert synchronous.groups(chain(5), clamped=False) == [[0, 1, 2, 3, 4]]


def test_one_hidden_layer_network_with_clamped_output():
    from analoglearn.energy.network import HopfieldNetwork

    net = HopfieldNetwork((1, 4, 4), (2,), 3, gains=[0.5, 0.5], generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 1, 4, 4)
    clamp = torch.zeros(2, 3)
    result = Minimizer(tolerance=1e-6).relax(net, x, net.zero_state(2), 50, clamp_output=clamp)
    assert result.iterations <= 2 and torch.equal(result.state[-1], clamp)


def test_a_compiled_sweep_relaxes_like_the_eager_one(batch):
    from analoglearn.energy.network import HopfieldNetwork

    net = HopfieldNetwork((1, 8, 8), (4, 8), 3, skips=[(1, 3)], gains=[0.5] * 4,
                          generator=torch.Generator().manual_seed(0))
    x, y = batch
    x, target = x.float(), torch.nn.functional.one_hot(y, 3).float()
    for kwargs in ({}, {"beta": 0.3, "target": target}):
        eager = Minimizer().relax(net, x, net.zero_state(4), 12, **kwargs).state
        compiled = Minimizer(compile=True).relax(net, x, net.zero_state(4), 12, **kwargs).state
        for a, b in zip(eager, compiled):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="compile must be true or false"):
        Minimizer(compile="yes")


def test_compile_without_a_compiler_is_refused(monkeypatch):
    import shutil

    from analoglearn.energy.minimize import check_compile

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler"):
        check_compile("cpu")


def test_a_relaxation_vmaps_over_weight_draws_without_per_draw_fallbacks(net, batch):
    """Every op of an update has a vmap batching rule (the in-place clamp is hardtanh_: clamp_ has none),
    and the vmapped relaxation of two weight sets equals the two relaxations run one by one."""
    import warnings

    x, _ = batch
    names = [name for name, _ in net.named_parameters()]
    draws = [{n: p.detach() * scale for n, p in net.named_parameters()} for scale in (1.0, 0.8)]

    def relax(params):
        return torch.func.functional_call(_Relaxing(net), {f"net.{n}": params[n] for n in names}, (x,))

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")
        batched = torch.func.vmap(relax)({n: torch.stack([d[n] for d in draws]) for n in names})
    for scores, params in zip(batched, draws):
        torch.testing.assert_close(scores, relax(params), rtol=0, atol=1e-12)


class _Relaxing(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return Minimizer(precision="fp64").relax(self.net, x, self.net.zero_state(x.shape[0]), 20).state[-1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_max_unpool_is_max_unpool2d_bit_for_bit_with_autograd_and_vmap(dtype, size):
    import torch.nn.functional as F

    from analoglearn.energy.interactions import max_unpool

    g = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 3, (6, 5, *size), generator=g).to(dtype)  # many ties in each window
    pooled, indices = F.max_pool2d(maps, 2, return_indices=True)
    want = F.max_unpool2d(pooled, indices, 2, output_size=size)
    assert torch.equal(max_unpool(pooled, indices, size), want)
    leaf = pooled.clone().requires_grad_(True)
    (max_unpool(leaf, indices, size) * want).sum().backward()
    assert torch.equal(leaf.grad, pooled)  # the adjoint of placement reads the values back
    stacked = torch.func.vmap(lambda p, i: max_unpool(p, i, size))(torch.stack([pooled, 2 * pooled]),
                                                                    torch.stack([indices, indices]))
    assert torch.equal(stacked[0], want) and torch.equal(stacked[1], 2 * want)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("factor, size", [(2, (8, 8)), (2, (7, 9)), (3, (9, 10))])
def test_max_pool_values_are_max_pool2d_bit_for_bit(dtype, factor, size):
    import torch.nn.functional as F

    from analoglearn.energy.interactions import max_pool_values

    g = torch.Generator().manual_seed(1)
    maps = torch.randn((3, 4, *size), generator=g).to(dtype)
    maps[0, 0, 0, 0] = float("nan")
    got, want = max_pool_values(maps, factor), F.max_pool2d(maps, factor)
    assert got.is_contiguous() and torch.equal(got.nan_to_num(), want.nan_to_num())
    assert torch.equal(got.isnan(), want.isnan())


@pytest.mark.parametrize("every", [None, 3])
def test_an_evaluation_relaxation_without_input_indices_is_bit_equal(every):
    from analoglearn.energy.methods import EnergyMethod, EnergyOptions

    net = make_net(dtype=torch.float32)
    x, _ = make_batch(6, dtype=torch.float32)
    options = EnergyOptions(eval_iterations=40, eval_tolerance=1e-6 if every else None, check_every=every or 1)
    method = EnergyMethod("CEP", net, options)
    with_indices = method.eval_minimizer.relax(net, x, net.zero_state(6), 40)
    without = method.eval_minimizer.relax(net, x, net.zero_state(6), 40, input_indices=False)
    assert with_indices.input_drive is not None and without.input_drive is None
    for a, b in zip(with_indices.state, without.state):
        assert torch.equal(a, b)
    assert torch.equal(method.predict(x), with_indices.state[-1])
