"""The registered methods sam, asam and rwp: steps, metrics, options and resumable state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from analoglearn.errors import ConfigError
from analoglearn.method import Progress
from analoglearn.registry import METHODS
from analoglearn.robust.methods import ASAMOptions, RWPOptions, SAMOptions


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)]
    return nn.Sequential(*layers)


def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)


def run(name: str, options, steps: range, model=None, opt_state=None, method_state=None):
    model = model or tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = METHODS.create(name, model, optimizer, options, generator=torch.Generator().manual_seed(1))
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
        method.load_state_dict(method_state)
    metrics = [method.train_step(*batch(t), Progress(t, t // 4, 4, 8)) for t in steps]
    return model, optimizer, method, metrics


@pytest.mark.parametrize(
    ("name", "options", "key"),
    [("sam", SAMOptions(rho=0.1, schedule="quadratic"), "rho"), ("asam", ASAMOptions(), "rho"),
     ("rwp", RWPOptions(sigma=0.05, mix=0.5, samples=2, diagnostics=True), "sigma"),
     ("rwp", RWPOptions(sigma=0.05, schedule="feedback", noise="multiplicative_gaussian"), "sigma")],
)
def test_methods_train_and_resume_identically(name: str, options, key: str) -> None:
    straight, *_ , metrics = run(name, options, range(8))
    assert set(metrics[0]) >= {"loss", "correct", key}
    model, optimizer, method, _ = run(name, options, range(4))
    states = copy.deepcopy((model.state_dict(), optimizer.state_dict(), method.state_dict()))
    fresh = tiny_net()
    fresh.load_state_dict(states[0])
    resumed, *_ = run(name, options, range(4, 8), fresh, states[1], states[2])
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_epoch_metrics_are_the_diagnostics() -> None:
    *_, method, _ = run("sam", SAMOptions(rho=0.05), range(3))
    metrics = method.epoch_metrics()
    assert set(metrics) == {"clean_loss", "perturbed_loss", "grad_norm", "perturbed_grad_norm", "grad_cosine",
                            "grad_ratio", "sharpness", "strength"}
    assert method.epoch_metrics() == {}  # reset after reading
    *_, quiet, _ = run("rwp", RWPOptions(), range(2))
    assert quiet.epoch_metrics() == {}


def test_sgd_still_works() -> None:
    _, _, _, metrics = run("sgd", None, range(2))
    assert set(metrics[0]) == {"loss", "correct"}


def test_invalid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="≥ 0"):
        SAMOptions(rho=-0.1)
    with pytest.raises(ConfigError, match="Valid schedules"):
        SAMOptions(schedule="exponential")
    with pytest.raises(ConfigError, match="Valid noise models"):
        RWPOptions(noise="salt")
    with pytest.raises(ConfigError, match=r"valid: .*scale"):
        RWPOptions(noise_options={"scael": "rms"})
    with pytest.raises(ConfigError, match="mix"):
        RWPOptions(mix=2.0)


def test_options_build_from_config_sections() -> None:
    options = METHODS.build_options(
        "rwp", {"sigma": 0.05, "schedule": "quadratic", "schedule_options": {"per": "epoch"},
                "noise_options": {"scale": "tensor-max"}, "samples": 2}
    )
    assert isinstance(options, RWPOptions) and options.samples == 2
