"""Statistics of the isotropic noise models: per-filter std for every scale reference."""

from __future__ import annotations

import math

import pytest
import torch

from analoglearn.errors import ConfigError
from analoglearn.noise import (
    AdditiveGaussian,
    AdditiveUniform,
    MultiplicativeGaussian,
    MultiplicativeUniform,
    build,
)
from analoglearn.noise.gaussian import reference_scale


def weights() -> torch.Tensor:
    """(8, 4000) rows with very different magnitudes, so per-filter and per-tensor references differ."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4000, generator=g) * torch.logspace(-1, 1, 8)[:, None]


def noise_of(model, w: torch.Tensor, seed: int = 0) -> torch.Tensor:
    noisy = w.clone()
    model.perturb_(noisy, torch.Generator().manual_seed(seed))
    return noisy - w


def expected_ref(w: torch.Tensor, scale: str) -> torch.Tensor:
    a = w.abs()
    return {
        "filter-max": a.amax(1),
        "tensor-max": a.max().expand(8),
        "filter-l2": w.norm(dim=1),
        "rms": w.pow(2).mean().sqrt().expand(8),
        "absolute": torch.ones(8),
    }[scale]


@pytest.mark.parametrize("scale", ["filter-max", "tensor-max", "filter-l2", "rms", "absolute"])
@pytest.mark.parametrize("sqrt", [False, True])
def test_additive_gaussian_per_filter_std(scale: str, sqrt: bool) -> None:
    w = weights()
    eps = noise_of(AdditiveGaussian(0.05, scale=scale, sqrt=sqrt), w)
    ref = expected_ref(w, scale)
    ref = ref.sqrt() if sqrt else ref
    ratio = eps.std(dim=1) / (0.05 * ref)
    assert torch.allclose(ratio, torch.ones(8), atol=0.04), ratio
    assert eps.mean(dim=1).abs().max() < 4 * 0.05 * ref.max() / math.sqrt(4000)


def test_conv_filter_is_output_channel() -> None:
    w = torch.randn(4, 3, 3, 3) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None, None]
    r = reference_scale(w, "filter-max")
    assert r.shape == (4, 1, 1, 1)
    assert torch.equal(r.flatten(), w.abs().flatten(1).amax(1))


def test_additive_uniform_bounds_and_std() -> None:
    w = weights()
    eps = noise_of(AdditiveUniform(0.1), w)
    half = 0.1 * w.abs().amax(1)
    assert (eps.abs() <= half[:, None] * (1 + 1e-6)).all()
    assert torch.allclose(eps.std(dim=1) / (half / math.sqrt(3)), torch.ones(8), atol=0.04)


def test_multiplicative_gaussian_relative_std() -> None:
    w = weights()
    rel = noise_of(MultiplicativeGaussian(0.1), w) / w
    assert abs(rel.std().item() - 0.1) < 0.002
    assert abs(rel.mean().item()) < 0.002


def test_multiplicative_uniform_relative_spread() -> None:
    w = weights()
    rel = noise_of(MultiplicativeUniform(0.2), w) / w
    assert rel.abs().max() <= 0.2 + 1e-5
    assert abs(rel.std().item() - 0.2 / math.sqrt(3)) < 0.002


def test_zero_strength_is_identity() -> None:
    w = weights()
    assert torch.equal(noise_of(AdditiveGaussian(0.0), w), torch.zeros_like(w))


def test_negative_sigma_and_unknown_scale_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="≥ 0"):
        AdditiveGaussian(-0.1)
    with pytest.raises(ConfigError, match="filter-max, tensor-max, filter-l2, rms, absolute"):
        AdditiveGaussian(0.1, scale="filter-mean")


def test_build_sets_strength_and_checks_options() -> None:
    model = build("gaussian", 0.07, scale="tensor-max")
    assert isinstance(model, AdditiveGaussian) and model.sigma == 0.07 and model.strength == 0.07
    assert model.with_strength(0.02).sigma == 0.02 and model.with_strength(0.02).scale == "tensor-max"
    with pytest.raises(ConfigError, match=r"valid: .*scale"):
        build("additive_gaussian", 0.05, scael="rms")
    with pytest.raises(ConfigError, match="Valid noise models"):
        build("gaussain_noise", 0.05)
