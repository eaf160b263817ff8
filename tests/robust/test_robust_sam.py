"""SAM and ASAM against hand computations, around a closure that fills .grad without autograd."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from analoglearn import schedule
from analoglearn.robust.sam import ASAM, SAM


def test_sam_step_matches_hand_computation(quadratic) -> None:
    w0 = quadratic.layer.weight.detach().clone()
    sam = SAM(torch.optim.SGD(quadratic.parameters(), lr=0.1), rho=0.3, diagnostics=True)
    closure = quadratic.closure()
    loss = sam.step(closure)
    g0 = quadratic.grad_at(w0)
    eps = 0.3 * g0 / g0.norm()
    g1 = quadratic.grad_at(w0 + eps)
    assert loss == pytest.approx(quadratic.loss_at(w0))
    assert torch.allclose(closure.calls[1], w0 + eps, atol=1e-12)
    assert torch.allclose(quadratic.layer.weight.detach(), w0 - 0.1 * g1, atol=1e-12)
    d = sam.last
    assert d.grad_norm == pytest.approx(g0.norm().item(), rel=1e-6)
    assert d.perturbed_grad_norm == pytest.approx(g1.norm().item(), rel=1e-6)
    assert d.grad_ratio == pytest.approx((g1.norm() / g0.norm()).item(), rel=1e-6)
    assert d.grad_cosine == pytest.approx(((g0 * g1).sum() / (g0.norm() * g1.norm())).item(), rel=1e-6)
    assert d.sharpness == pytest.approx(quadratic.loss_at(w0 + eps) - quadratic.loss_at(w0), rel=1e-6)


def test_asam_step_matches_hand_computation(quadratic) -> None:
    w0 = quadratic.layer.weight.detach().clone()
    asam = ASAM(torch.optim.SGD(quadratic.parameters(), lr=0.1), rho=0.5, eta=0.01)
    asam.step(quadratic.closure())
    g0 = quadratic.grad_at(w0)
    t = w0.abs() + 0.01
    eps = 0.5 * t * t * g0 / (t * g0).norm()
    assert torch.allclose(quadratic.layer.weight.detach(), w0 - 0.1 * quadratic.grad_at(w0 + eps), atol=1e-12)


def test_explicit_first_and_second_step_equal_step(quadratic) -> None:
    other = type(quadratic)()
    a = SAM(torch.optim.SGD(quadratic.parameters(), lr=0.1, momentum=0.9), rho=0.2)
    b = SAM(torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9), rho=0.2)
    for _ in range(3):
        a.step(quadratic.closure())
        b.zero_grad()
        other.closure()()
        b.first_step()
        assert other.layer.weight.grad is None  # zeroed for the second closure
        other.closure()()
        b.second_step()
    assert torch.equal(quadratic.layer.weight, other.layer.weight)


def test_weights_restored_bit_exact_before_base_step(quadratic) -> None:
    w0 = quadratic.layer.weight.detach().clone()
    SAM(torch.optim.SGD(quadratic.parameters(), lr=0.0), rho=0.3).step(quadratic.closure())
    assert torch.equal(quadratic.layer.weight, w0)


def test_batchnorm_statistics_updated_once_per_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    reference = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))

    def closure() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5, model=model).step(closure)
    reference(x)  # one training-mode forward pass at the clean weights
    bn, ref = model[1], reference[1]
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 1 and bn.momentum == 0.1


def test_state_dict_round_trip_resumes_identically(quadratic) -> None:
    def make(model):
        base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return SAM(base, rho=schedule.ramp(0.0, 0.4, 10, shape="quadratic"), diagnostics=True)

    straight = make(quadratic)
    for _ in range(5):
        straight.step(quadratic.closure())
    saved_w, saved_state = quadratic.layer.weight.detach().clone(), copy.deepcopy(straight.state_dict())
    for _ in range(5):
        straight.step(quadratic.closure())

    resumed_model = type(quadratic)()
    with torch.no_grad():
        resumed_model.layer.weight.copy_(saved_w)
    resumed = make(resumed_model)
    resumed.load_state_dict(saved_state)
    assert resumed.steps == 5 and resumed.current_strength() == pytest.approx(0.4 * 0.25)
    for _ in range(5):
        resumed.step(resumed_model.closure())
    assert torch.equal(resumed_model.layer.weight, quadratic.layer.weight)


def test_schedule_follows_the_step_counter(quadratic) -> None:
    """ρ is the schedule at the wrapper's own counter of steps taken (no clock passed in)."""
    rho = schedule.ramp(0.0, 0.2, 100, shape="quadratic")
    sam = SAM(torch.optim.SGD(quadratic.parameters(), lr=0.0), rho=rho, diagnostics=True)
    for t in range(51):
        assert sam.steps == t and sam.current_strength() == rho(t)
        sam.step(quadratic.closure())
        assert sam.last.strength == rho(t)
    assert sam.last.strength == pytest.approx(0.05)  # at t = 50 of 100: 0.2·(1/2)²


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixed_precision_restores_weights_exactly(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(6, 4, dtype=dtype), torch.randint(0, 3, (6,))

    def closure() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        return loss

    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.0), rho=0.5, model=model, diagnostics=True)
    sam.step(closure)
    assert all(torch.equal(a, b) and a.dtype == dtype for a, b in zip(model.parameters(), before))
    assert sam.last.perturbed_loss != sam.last.clean_loss


def test_asam_scales_weights_but_not_biases_when_given_the_model() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    x = torch.randn(5, 3)
    asam = ASAM(torch.optim.SGD(layer.parameters(), lr=0.0), rho=0.5, eta=0.01, model=layer)
    seen = []

    def closure() -> torch.Tensor:
        loss = layer(x).pow(2).sum()
        loss.backward()
        seen.append((layer.weight.detach().clone(), layer.bias.detach().clone(),
                     layer.weight.grad.clone(), layer.bias.grad.clone()))
        return loss

    asam.step(closure)
    _, _, gw, gb = seen[0]
    t = w0.abs() + 0.01
    norm = torch.cat([(t * gw).flatten(), gb]).norm()
    assert torch.allclose(seen[1][0], w0 + 0.5 * t * t * gw / norm, atol=1e-6)
    assert torch.allclose(seen[1][1], b0 + 0.5 * gb / norm, atol=1e-6)
