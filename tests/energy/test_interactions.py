"""Interactions: energy terms, drive/feedback/weight gradient against autograd, the read hook."""

from __future__ import annotations

import collections

import pytest
import torch
from ebl_helpers import make_batch
from torch.overrides import TorchFunctionMode

from analoglearn.energy import interactions
from analoglearn.energy.interactions import ConvPoolInteraction, DenseInteraction, reading
from analoglearn.energy.minimize import Minimizer
from analoglearn.energy.network import HopfieldNetwork


def random_state(net: HopfieldNetwork, batch: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    state = [torch.rand((batch, *shape), generator=g, dtype=torch.float64) for shape in net.layer_shapes]
    state[-1] = 2 * state[-1] - 1
    return state


def _interaction(kind: str) -> tuple:
    """An interaction of ``kind`` with float64 weights, a random pre and post."""
    g = torch.Generator().manual_seed(7)
    if kind == "conv":
        interaction = ConvPoolInteraction(3, 5, source=0, target=1).double()
        pre, post = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64), (5, 4, 4)
    else:
        interaction = DenseInteraction(24, 5, source=1, target=2).double()
        pre, post = torch.randn(4, 2, 3, 4, generator=g, dtype=torch.float64), (5,)
    with torch.no_grad():
        interaction.weight.copy_(torch.randn(interaction.weight.shape, generator=g, dtype=torch.float64))
    return interaction, pre, torch.randn((4, *post), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_drive_feedback_and_weight_gradient_are_derivatives_of_the_energy_term(kind):
    interaction, pre, post = _interaction(kind)
    pre, post = pre.requires_grad_(True), post.requires_grad_(True)
    weight = interaction.weight
    energy = interaction.energy(pre, post, weight)
    assert energy.shape == (pre.shape[0],)
    d_pre, d_post, d_weight = torch.autograd.grad(energy.sum(), (pre, post, weight))
    drive, aux = interaction.drive(pre.detach(), weight.detach())
    torch.testing.assert_close(-d_post, drive, rtol=1e-12, atol=1e-12)
    feedback = interaction.feedback(post.detach(), aux, weight.detach(), pre.shape)
    torch.testing.assert_close(-d_pre, feedback, rtol=1e-12, atol=1e-12)
    gradient = interaction.weight_gradient(pre.detach(), post.detach(), aux, weight.detach())
    torch.testing.assert_close(d_weight / pre.shape[0], gradient, rtol=1e-12, atol=1e-12)


def test_network_energy_is_its_interactions_terms_plus_self_and_bias_terms(net, batch):
    x, _ = batch
    state = random_state(net, x.shape[0])
    layers = [x, *state]
    expected = sum(
        m.energy(layers[m.source], layers[m.target], m.weight) for m in net.interactions
    ) + sum(
        (0.5 * s * s - net.bias_view(k, b) * s).flatten(1).sum(1) for k, (s, b) in enumerate(zip(state, net.biases))
    )
    torch.testing.assert_close(net.energy(x, state), expected, rtol=1e-13, atol=1e-13)


def test_state_gradient_is_self_minus_preactivation_and_autograd_of_the_energy(net, batch):
    x, _ = batch
    state = [s.requires_grad_(True) for s in random_state(net, x.shape[0])]
    auto = torch.autograd.grad(net.energy(x, state).sum(), state)
    weights = net.weights(torch.float64)
    for k, (s, analytic, reference) in enumerate(zip(state, net.state_gradients(x, state), auto), start=1):
        torch.testing.assert_close(analytic, reference, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(analytic, s - net.preactivation(k, x, state, weights), rtol=0, atol=0)


PRODUCTS = {"conv2d", "conv_transpose2d", "linear", "matmul", "__matmul__", "mm", "bmm", "addmm"}


class _Products(TorchFunctionMode):
    """Records every matrix product and whether it ran inside a reader."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.calls = False, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in PRODUCTS:
            self.calls.append((name, self.inside))
        return func(*args, **(kwargs or {}))


def _op_name(op) -> str:
    return getattr(op, "func", op).__name__


@pytest.mark.parametrize("cache", [True, False])
def test_a_reader_sees_every_drive_and_feedback_product_of_a_relaxation(net, batch, cache):
    x, y = batch
    target = torch.nn.functional.one_hot(y, 3).double()
    counts: collections.Counter = collections.Counter()
    sites: collections.Counter = collections.Counter()
    products = _Products()
    index = {id(m): i for i, m in enumerate(net.interactions)}
    ops: set = set()

    def reader(op, inp, weight, site):
        counts[_op_name(op)] += 1
        transposed = _op_name(op) in ("conv_transpose2d", "linear_transposed")
        sites[(index[id(site)], "feedback" if transposed else "drive")] += 1
        ops.add((index[id(site)], _op_name(op)))
        products.inside = True
        try:
            return op(inp, weight)
        finally:
            products.inside = False

    minimizer = Minimizer(precision="fp64", cache=cache)
    plain = minimizer.relax(net, x, net.zero_state(4), 5, beta=0.2, target=target).state
    with products, reading(reader):
        seen = minimizer.relax(net, x, net.zero_state(4), 5, beta=0.2, target=target).state
    assert all(torch.equal(a, b) for a, b in zip(plain, seen))  # an identity reader changes nothing
    assert products.calls and all(inside for _, inside in products.calls)
    # tiny: conv x→s1, conv s1→s2, dense s2→o; 5 asynchronous iterations ({s1, o} then {s2})
    if cache:  # conv(x) once, conv(s1) once per iteration plus the first arg-max
        assert counts == {"conv2d": 7, "conv_transpose2d": 5, "linear": 5, "linear_transposed": 5}
        assert sites == {(0, "drive"): 1, (1, "drive"): 6, (1, "feedback"): 5, (2, "drive"): 5, (2, "feedback"): 5}
    else:  # recomputed: conv(x) and conv(s1) (its arg-max) at s1's update, conv(s1) at s2's
        assert counts == {"conv2d": 15, "conv_transpose2d": 5, "linear": 5, "linear_transposed": 5}
    # the reader is told the interaction: conv products belong to the conv-pool ones, dense to the last
    assert all((i == 2) == name.startswith("linear") for i, name in ops) and {i for i, _ in ops} == {0, 1, 2}


def test_a_scaling_reader_moves_the_fixed_point_and_is_restored_on_error(net):
    x, _ = make_batch(batch=4)
    minimizer = Minimizer(precision="fp64", tolerance=1e-12)
    clean = minimizer.relax(net, x, net.zero_state(4), 500).state
    with reading(lambda op, inp, weight, site: 1.5 * op(inp, weight)):
        scaled = minimizer.relax(net, x, net.zero_state(4), 500).state
        with pytest.raises(RuntimeError, match="boom"), reading(lambda op, inp, weight, site: 1 / 0 or inp):
            raise RuntimeError("boom")
        again = minimizer.relax(net, x, net.zero_state(4), 500).state  # the outer reader is back
    assert all(torch.equal(a, b) for a, b in zip(scaled, again))
    assert max(float((a - b).abs().max()) for a, b in zip(clean, scaled)) > 1e-3
    w = torch.ones(2, 3, dtype=torch.float64)
    assert torch.equal(interactions.read(torch.nn.functional.linear, torch.ones(1, 3, dtype=torch.float64), w,
                                       net.interactions[2]),
                       torch.full((1, 2), 3.0, dtype=torch.float64))
    after = minimizer.relax(net, x, net.zero_state(4), 500).state
    assert all(torch.equal(a, b) for a, b in zip(clean, after))
