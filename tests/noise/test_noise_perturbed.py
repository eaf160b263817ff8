"""Parameter selection and the perturbed() context manager: exact restore, seeds, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analoglearn.errors import ConfigError
from analoglearn.noise import AdditiveGaussian, Compose, Quantize, from_config, perturbed


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_default_selection_is_conv_and_linear_weights() -> None:
    names = [n for n, _ in AdditiveGaussian(0.1).select(net())]
    assert names == ["0.weight", "4.weight"]
    with_bias = [n for n, _ in AdditiveGaussian(0.1, bias=True).select(net())]
    assert with_bias == ["0.weight", "0.bias", "4.weight", "4.bias"]
    assert [n for n, _ in AdditiveGaussian(0.1, norm=True).select(net())] == [
        "0.weight", "1.weight", "1.bias", "4.weight"
    ]


def test_user_named_modules() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, 3))

    model = nn.Sequential(Custom(), nn.Embedding(4, 2))
    with pytest.raises(ConfigError, match="matches no parameter"):
        AdditiveGaussian(0.1).apply_(model)
    assert [n for n, _ in AdditiveGaussian(0.1, modules=["Custom"]).select(model)] == ["0.weight"]
    assert [n for n, _ in AdditiveGaussian(0.1, modules=["1"]).select(model)] == ["1.weight"]


def test_restore_is_bit_exact_and_noise_is_applied_inside() -> None:
    model = net()
    before = snapshot(model)
    with perturbed(model, AdditiveGaussian(0.3), torch.Generator().manual_seed(0)) as params:
        assert len(params) == 2
        assert not torch.equal(model[0].weight, before[0])
        assert torch.equal(model[1].weight, before[2])  # BatchNorm untouched by default
    assert same(snapshot(model), before)


def test_restore_after_exception() -> None:
    model = net()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), perturbed(model, AdditiveGaussian(0.3)):
        raise RuntimeError("boom")
    assert same(snapshot(model), before)


def test_same_seed_same_draw_and_global_generator() -> None:
    model = net()
    draws = []
    for seed in (5, 5, 6):
        with perturbed(model, AdditiveGaussian(0.1), torch.Generator().manual_seed(seed)):
            draws.append(model[0].weight.detach().clone())
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    globals_ = []
    for _ in range(2):
        torch.manual_seed(11)
        with perturbed(model, AdditiveGaussian(0.1)):
            globals_.append(model[0].weight.detach().clone())
    assert torch.equal(*globals_)


def test_no_matching_parameter_is_config_error() -> None:
    relu = nn.ReLU()
    with pytest.raises(ConfigError, match="matches no parameter"), perturbed(relu, AdditiveGaussian(0.1)):
        pass


def test_compose_applies_parts_in_order() -> None:
    model = net()
    composed = Compose((Quantize(4), AdditiveGaussian(0.0)))
    with perturbed(model, composed):
        w = model[4].weight.detach().clone()
    steps = w.abs() / w.abs().max() * 3
    assert torch.allclose(steps, steps.round(), atol=1e-5)
    spec = {"name": "compose", "parts": [{"name": "quantize", "levels": 8}, {"name": "gaussian"}]}
    built = from_config(spec, strength=4)
    assert isinstance(built, Compose) and built.parts[0].levels == 4 and built.strength == 4
