"""Noise-robust energy-based learning: SAM and RWP wrap an EP estimator's closure (DESIGN.md closure)."""

from __future__ import annotations

import math

import pytest
import torch

from analoglearn.config import build_config
from analoglearn.energy.methods import EnergyMethod
from analoglearn.errors import ConfigError
from analoglearn.method import Outcome
from analoglearn.noise import AdditiveGaussian, perturbed
from analoglearn.registry import METHODS, MODELS
from analoglearn.robust import RWP, SAM
from analoglearn.runs import RunDir
from analoglearn.train import take_step


def cep():
    g = torch.Generator().manual_seed(0)
    tiny = MODELS.build_options("tiny", {})
    net = MODELS.create("tiny", tiny, in_shape=(1, 8, 8), num_classes=3, generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    iterations = {"free_iterations": 5, "nudged_iterations": 3, "eval_iterations": 5}
    options = METHODS.build_options("CEP", iterations)
    method = METHODS.create("CEP", net, options, generator=g)
    assert isinstance(method, EnergyMethod)
    return net, opt, method


def test_noise_selects_the_hopfield_weights() -> None:
    net, _, method = cep()
    names = [n for n, _ in AdditiveGaussian(0.1).select(net)]
    assert names and all(n.endswith(".weight") for n in names)
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(4, 1, 8, 8)
    with perturbed(net, AdditiveGaussian(0.5), torch.Generator().manual_seed(0)):
        method.predict(x)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("kind", ["sam", "rwp"])
def test_wrappers_around_an_ep_step(kind: str) -> None:
    net, opt, method = cep()
    if kind == "sam":
        wrapper = SAM(opt, 0.05, model=net, diagnostics=True)
    else:
        gen = torch.Generator().manual_seed(1)
        wrapper = RWP(opt, AdditiveGaussian(0.05), model=net, mix=0.5, generator=gen)
    before = [p.detach().clone() for p in net.parameters()]
    x, y = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 0])
    outcome = take_step(wrapper, method.closure(x, y))
    assert isinstance(outcome, Outcome) and math.isfinite(float(outcome)) and 0 <= outcome.correct <= 4
    assert wrapper.steps == 1 and wrapper.last is not None and wrapper.last.grad_norm > 0
    assert float(outcome) == pytest.approx(wrapper.last.clean_loss)  # the first call, at the clean weights
    assert method.warm is not None  # the clean call's free state is the next warm start
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("name, strength", [("rwp", {"sigma": 0.05}), ("sam", {"rho": 0.05})])
def test_noise_robust_ep_trains_through_the_loop_and_resumes_exactly(tmp_path, interrupted_and_resumed, name,
                                                                      strength):
    """method: {name: CEP} with perturb: {name: rwp|sam}: the perturbation wraps the EP estimator's closure."""
    raw = {
        "data": {"name": "Synthetic", "batch_size": 50, "train_subset": 300, "test_subset": 100, "augment": False},
        "model": {"name": "tiny"},
        "method": {"name": "CEP", "free_iterations": 6, "nudged_iterations": 3, "eval_iterations": 6},
        "perturb": {"name": name, **strength},
        "optim": {"lr": 0.05},
        "train": {"epochs": 2, "threads": 1, "checkpoint_every": 4},
    }
    cfg = build_config(raw)
    full, cut = interrupted_and_resumed(cfg, EnergyMethod, 9)
    assert cut == full
    checkpoint = RunDir(tmp_path / "full").load_checkpoint()
    assert checkpoint["method"]["warm"]  # the warm-start state is checkpointed
    assert checkpoint["optimizer"]["steps"] == 12  # the perturbation's own state, beside its base optimiser's
    assert "energy" in full[0]  # the estimator's epoch metrics come through
    assert ("rho" if name == "sam" else "sigma") in full[0]


def test_estimator_needs_an_energy_network_and_a_known_name():
    with pytest.raises(ConfigError, match="Valid methods"):
        build_config({"method": {"name": "XEP"}, "perturb": {"name": "rwp"}})
    with pytest.raises(ConfigError, match="is a perturbation"):
        build_config({"method": {"name": "sam"}, "perturb": {"name": "rwp"}})
    with pytest.raises(ConfigError, match="valid keys"):
        build_config({"method": {"name": "CEP", "bta": 1}, "perturb": {"name": "rwp"}})
    # the same mistakes in the old form (method: {name: rwp, estimator: ...})
    with pytest.raises(ConfigError, match="Valid methods"):
        build_config({"method": {"name": "rwp", "estimator": "XEP"}})
    with pytest.raises(ConfigError, match="unknown method 'sam'"):
        build_config({"method": {"name": "rwp", "estimator": "sam"}})
    with pytest.raises(ConfigError, match="valid keys"):
        build_config({"method": {"name": "rwp", "estimator": "CEP", "estimator_options": {"bta": 1}}})
