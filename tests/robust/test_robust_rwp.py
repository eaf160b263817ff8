"""RWP: the gradient at the perturbed point updates the clean weights; λ blends; K averages."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from analoglearn import schedule
from analoglearn.errors import ConfigError
from analoglearn.noise import AdditiveGaussian, perturbed
from analoglearn.robust.rwp import RWP


def draws(model: nn.Module, noise, seed: int, k: int) -> list[torch.Tensor]:
    """The K perturbations ε_k RWP will draw from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        clean = model.layer.weight.detach().clone()
        with perturbed(model, noise, g):
            out.append(model.layer.weight.detach() - clean)
    return out


@pytest.mark.parametrize(("mix", "samples"), [(1.0, 1), (0.5, 1), (1.0, 3), (0.25, 2)])
def test_rwp_gradient_is_taken_at_the_perturbed_points(quadratic, mix: float, samples: int) -> None:
    noise = AdditiveGaussian(0.3)
    w0 = quadratic.layer.weight.detach().clone()
    eps = draws(quadratic, noise, seed=7, k=samples)
    rwp = RWP(torch.optim.SGD(quadratic.parameters(), lr=0.1), noise, model=quadratic, samples=samples,
              mix=mix, generator=torch.Generator().manual_seed(7))
    closure = quadratic.closure()
    returned = rwp.step(closure)
    perturbed_grad = sum(quadratic.grad_at(w0 + e) for e in eps) / samples
    expected = mix * perturbed_grad + (1 - mix) * quadratic.grad_at(w0)
    assert torch.allclose(quadratic.layer.weight.detach(), w0 - 0.1 * expected, atol=1e-12)
    mean_loss = sum(quadratic.loss_at(w0 + e) for e in eps) / samples
    clean_loss = quadratic.loss_at(w0)
    assert rwp.last_objective == pytest.approx(mix * mean_loss + (1 - mix) * clean_loss if mix < 1 else mean_loss)
    # step returns the first call's loss: the clean pass when λ < 1, else the first draw
    assert returned == pytest.approx(clean_loss if mix < 1 else quadratic.loss_at(w0 + eps[0]))
    assert len(closure.calls) == samples + (mix < 1)


def test_one_pass_rwp_calls_the_closure_once(quadratic) -> None:
    rwp = RWP(torch.optim.SGD(quadratic.parameters(), lr=0.1), AdditiveGaussian(0.1), model=quadratic)
    closure = quadratic.closure()
    rwp.step(closure)
    assert len(closure.calls) == 1 and rwp.last is None


def test_sigma_overrides_the_noise_strength(quadratic) -> None:
    w0 = quadratic.layer.weight.detach().clone()
    rwp = RWP(torch.optim.SGD(quadratic.parameters(), lr=0.1), AdditiveGaussian(5.0), sigma=0.0,
              model=quadratic, generator=torch.Generator().manual_seed(0))
    rwp.step(quadratic.closure())
    assert torch.allclose(quadratic.layer.weight.detach(), w0 - 0.1 * quadratic.grad_at(w0), atol=1e-12)


def test_feedback_schedule_and_state_round_trip(quadratic) -> None:
    def make(model):
        return RWP(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), AdditiveGaussian(0.1),
                   sigma=schedule.feedback(schedule.ramp(0.0, 0.3, 8, shape="quadratic"), 0.5), model=model,
                   generator=torch.Generator().manual_seed(3), diagnostics=True)

    a = make(quadratic)
    for _ in range(4):
        a.step(quadratic.closure())
    assert a.strength.clock == 4  # a smooth quadratic never loses half its gradient here
    state, w = copy.deepcopy(a.state_dict()), quadratic.layer.weight.detach().clone()
    for _ in range(4):
        a.step(quadratic.closure())
    other = type(quadratic)()
    with torch.no_grad():
        other.layer.weight.copy_(w)
    b = make(other)
    b.load_state_dict(state)
    for _ in range(4):
        b.step(other.closure())
    assert torch.equal(other.layer.weight, quadratic.layer.weight)
    summary = a.epoch.summary()
    assert set(summary) >= {"clean_loss", "perturbed_loss", "grad_ratio", "grad_cosine", "sharpness"}


def test_batchnorm_statistics_updated_once_per_rwp_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    reference = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))

    def closure() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    rwp = RWP(torch.optim.SGD(model.parameters(), lr=0.1), AdditiveGaussian(0.1), model=model, samples=3,
              mix=0.5)
    rwp.step(closure)
    reference(x)
    assert torch.equal(model[1].running_mean, reference[1].running_mean)
    assert int(model[1].num_batches_tracked) == 1


def test_rwp_validates_options(quadratic) -> None:
    base = torch.optim.SGD(quadratic.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        RWP(base, AdditiveGaussian(0.1), model=quadratic, mix=1.5)
    with pytest.raises(ConfigError, match="samples"):
        RWP(base, AdditiveGaussian(0.1), model=quadratic, samples=0)
    with pytest.raises(ConfigError, match="≥ 0"):
        RWP(base, AdditiveGaussian(0.1), sigma=-0.1, model=quadratic)
    with pytest.raises(ConfigError, match="selects no parameter"):
        RWP(base, AdditiveGaussian(0.1), model=nn.ReLU())


def test_open_loop_schedule_keeps_rwp_one_pass(quadratic) -> None:
    rwp = RWP(torch.optim.SGD(quadratic.parameters(), lr=0.1), AdditiveGaussian(0.1),
              sigma=schedule.ramp(0.0, 0.1, 10, shape="quadratic"), model=quadratic)
    closure = quadratic.closure()
    rwp.step(closure)
    assert len(closure.calls) == 1
