"""The perturbations sam, asam and rwp of the ``perturb`` section around the ``sgd`` method: steps,
diagnostics, options, resumable state, and the old ``method: {name: rwp|sam, ...}`` form."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from analoglearn import schedule
from analoglearn.config import build_config
from analoglearn.errors import ConfigError
from analoglearn.method import Outcome
from analoglearn.registry import METHODS, PERTURBATIONS
from analoglearn.robust.methods import ASAMOptions, Clock, RWPOptions, SAMOptions
from analoglearn.robust.perturbation import Perturbation
from analoglearn.train import take_step

CLOCK = Clock(total_steps=8, steps_per_epoch=4)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)]
    return nn.Sequential(*layers)


def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)


def run(name: str, options, steps: range, model=None, opt_state=None, method_state=None):
    """``perturb: {name, **options}`` around ``method: sgd``, stepped on ``batch(t)`` for t in ``steps``;
    per step its outcome and the strength it was taken at."""
    model = model or tiny_net()
    generator = torch.Generator().manual_seed(1)  # one generator for method and perturbation, as build_parts
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    optimizer = PERTURBATIONS.create(name, base, model, options, generator=generator, clock=CLOCK)
    method = METHODS.create("sgd", model, None, generator=generator)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
        method.load_state_dict(method_state)
    metrics = []
    for t in steps:
        strength = optimizer.current_strength() if isinstance(optimizer, Perturbation) else None
        metrics.append((take_step(optimizer, method.closure(*batch(t))), strength))
    return model, optimizer, method, metrics


@pytest.mark.parametrize(
    ("name", "options", "strength"),
    [("sam", SAMOptions(rho=0.1, schedule="quadratic"), schedule.ramp(0.0, 0.1, 8, shape="quadratic")),
     ("asam", ASAMOptions(), schedule.constant(0.5)),
     ("rwp", RWPOptions(sigma=0.05, mix=0.5, samples=2, diagnostics=True), schedule.constant(0.05)),
     ("rwp", RWPOptions(sigma=0.05, schedule="feedback", noise={"name": "multiplicative_gaussian"}), None)],
)
def test_perturbations_train_and_resume_identically(name: str, options, strength) -> None:
    straight, optimizer, _, metrics = run(name, options, range(8))
    for t, (outcome, at) in enumerate(metrics):
        assert isinstance(outcome, Outcome) and outcome.loss.dim() == 0 and 0 <= outcome.correct <= 8
        if strength is not None:
            assert at == strength(t)
    if strength is None:  # feedback: the clock advanced on every step the perturbed gradient kept its size
        assert 0 < optimizer.strength.clock <= 8 and metrics[-1][1] <= 0.05
    model, optimizer, method, _ = run(name, options, range(4))
    states = copy.deepcopy((model.state_dict(), optimizer.state_dict(), method.state_dict()))
    fresh = tiny_net()
    fresh.load_state_dict(states[0])
    resumed, *_ = run(name, options, range(4, 8), fresh, states[1], states[2])
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_epoch_diagnostics() -> None:
    *_, optimizer, _, _ = run("sam", SAMOptions(rho=0.05), range(3))
    metrics = optimizer.epoch.summary()
    assert set(metrics) == {"clean_loss", "perturbed_loss", "grad_norm", "perturbed_grad_norm", "grad_cosine",
                            "grad_ratio", "sharpness", "strength"}
    assert metrics["strength"] == pytest.approx(0.05)
    assert optimizer.epoch.summary() == {}  # reset after reading
    *_, quiet, _, _ = run("rwp", RWPOptions(), range(2))
    assert quiet.epoch.summary() == {}


def test_sgd_without_a_perturbation() -> None:
    _, optimizer, _, metrics = run("none", None, range(2))
    assert type(optimizer) is torch.optim.SGD  # perturb: none is the base optimiser itself
    outcome, _ = metrics[0]
    assert isinstance(outcome, Outcome) and outcome.loss.dim() == 0 and float(outcome) > 0
    assert isinstance(outcome.correct, int) and 0 <= outcome.correct <= 8


def test_invalid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="≥ 0"):
        SAMOptions(rho=-0.1)
    with pytest.raises(ConfigError, match="Valid schedules"):
        SAMOptions(schedule="exponential")
    with pytest.raises(ConfigError, match="Valid noise models"):
        RWPOptions(noise={"name": "salt"})
    with pytest.raises(ConfigError, match=r"valid: .*scale"):
        RWPOptions(noise={"name": "additive_gaussian", "scael": "rms"})
    with pytest.raises(ConfigError, match="mix"):
        RWPOptions(mix=2.0)


def test_options_build_from_config_sections() -> None:
    options = PERTURBATIONS.build_options(
        "rwp", {"sigma": 0.05, "schedule": "quadratic", "schedule_options": {"per": "epoch"},
                "noise": {"name": "additive_gaussian", "scale": "tensor-max"}, "samples": 2}
    )
    assert isinstance(options, RWPOptions) and options.samples == 2
    assert options.noise == {"name": "additive_gaussian", "scale": "tensor-max"}


ENERGY = {"free_iterations": 6, "nudged_iterations": 3, "eval_iterations": 6}
OLD_AND_NEW = {
    "sgd+rwp": (
        {"name": "rwp", "sigma": 0.05, "mix": 0.5, "noise": "multiplicative_gaussian", "noise_options": {"bias": True},
         "label_smoothing": 0.1},
        {"name": "sgd", "label_smoothing": 0.1},
        {"name": "rwp", "sigma": 0.05, "mix": 0.5, "noise": {"name": "multiplicative_gaussian", "bias": True}},
    ),
    "sgd+sam": (
        {"name": "sam", "rho": 0.1, "schedule": "quadratic", "schedule_options": {"per": "epoch"}},
        {"name": "sgd"},
        {"name": "sam", "rho": 0.1, "schedule": "quadratic", "schedule_options": {"per": "epoch"}},
    ),
    "CEP+rwp": (
        {"name": "rwp", "estimator": "CEP", "estimator_options": ENERGY, "sigma": 0.05, "schedule": "feedback"},
        {"name": "CEP", **ENERGY},
        {"name": "rwp", "sigma": 0.05, "schedule": "feedback"},
    ),
    "CEP+sam": (
        {"name": "sam", "estimator": "CEP", "estimator_options": ENERGY, "rho": 0.05},
        {"name": "CEP", **ENERGY},
        {"name": "sam", "rho": 0.05},
    ),
}


@pytest.mark.parametrize("case", sorted(OLD_AND_NEW))
def test_the_old_method_form_resolves_to_the_perturb_section(case: str) -> None:
    old, method, perturb = OLD_AND_NEW[case]
    model = {"name": "tiny"} if method["name"] == "CEP" else {"name": "mlp"}
    translated = build_config({"model": model, "method": old}).to_dict()
    assert translated == build_config({"model": model, "method": method, "perturb": perturb}).to_dict()
    assert translated["perturb"]["name"] == perturb["name"] and translated["method"]["name"] == method["name"]


def test_a_perturbation_named_as_the_method_beside_a_perturb_section_is_refused() -> None:
    with pytest.raises(ConfigError, match="is a perturbation"):
        build_config({"method": {"name": "sam"}, "perturb": {"name": "rwp"}})
