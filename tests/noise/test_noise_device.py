"""Hardware-grounded models: PCM against its formulas, device noise, quantisation, stuck-at faults."""

from __future__ import annotations

import math

import pytest
import torch

from analoglearn.errors import ConfigError
from analoglearn.noise import PCM, DeviceNoise, Quantize, StuckAt
from analoglearn.noise.device import from_pair, to_pair
from analoglearn.noise.pcm import drift_parameters

N = 200_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def const(g: float) -> torch.Tensor:
    return torch.full((N,), g)


def test_pair_mapping_round_trip() -> None:
    w = torch.randn(5, 7)
    g, w_max = to_pair(w, 25.0)
    assert g.shape == (2, 5, 7) and g.min() >= 0 and g.max().item() == pytest.approx(25.0)
    assert ((g[0] == 0) | (g[1] == 0)).all()
    assert torch.allclose(from_pair(g, w_max, 25.0), w, atol=1e-6)


@pytest.mark.parametrize(("g_hat", "g_max"), [(0.5, 25.0), (1.0, 25.0), (0.8, 50.0)])
def test_pcm_programming_std_matches_polynomial(g_hat: float, g_max: float) -> None:
    pcm = PCM(g_max=g_max)
    g = const(g_hat * g_max)
    sigma = (0.26348 + 1.9650 * g_hat - 1.1731 * g_hat**2) * g_max / 25.0
    prog = pcm.program(g, gen())
    assert abs(prog.std().item() / sigma - 1) < 0.01
    assert abs(prog.mean().item() - g_hat * g_max) < 4 * sigma / math.sqrt(N)


def test_pcm_programming_is_clipped_at_zero() -> None:
    prog = PCM().program(const(0.0), gen())
    assert prog.min() == 0 and (prog > 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("g_hat", [1.0, 0.1])
def test_pcm_drift_exponent_statistics(g_hat: float) -> None:
    pcm = PCM(t_inference=86400.0, prog_noise_scale=0.0, read_noise_scale=0.0)
    g = const(g_hat * 25.0)
    mu = min(max(-0.0155 * math.log(g_hat) + 0.0244, 0.049), 0.1)
    sd = min(max(-0.0125 * math.log(g_hat) - 0.0059, 0.008), 0.045)
    drifted = pcm.drift_and_read(g, pcm.drift_exponent(g, gen()), gen(1))
    nu = -torch.log(drifted / g) / math.log((86400.0 + 20.0) / 20.0)
    phi = math.exp(-0.5 * (mu / sd) ** 2) / math.sqrt(2 * math.pi)
    folded_mean = mu * math.erf(mu / (sd * math.sqrt(2))) + 2 * sd * phi  # E|N(μ, σ²)|
    assert nu.mean().item() == pytest.approx(folded_mean, abs=3e-4)
    mu_t, sd_t = drift_parameters(torch.tensor([g_hat * 25.0]), 25.0)
    assert mu_t.item() == pytest.approx(mu) and sd_t.item() == pytest.approx(sd)


@pytest.mark.parametrize("g_hat", [0.5, 0.05])
def test_pcm_read_noise_std(g_hat: float) -> None:
    pcm = PCM(prog_noise_scale=0.0)  # t_inf = 0: no drift, first read only
    g = const(g_hat * 25.0)
    read = pcm.drift_and_read(g, torch.zeros(N), gen())
    q = min(0.0088 / max(g_hat**0.65, 1e-3), 0.2)
    expected = g_hat * 25.0 * q * math.sqrt(math.log((20.0 + 250e-9) / (2 * 250e-9)))
    assert read.std().item() / expected == pytest.approx(1.0, abs=0.01)


def test_pcm_drift_shrinks_weights_and_compensation_restores_scale() -> None:
    w = torch.randn(64, 256, generator=gen(3))
    day = 86400.0
    plain, comp = w.clone(), w.clone()
    PCM(t_inference=day).perturb_(plain, gen())
    PCM(t_inference=day, drift_compensation=True).perturb_(comp, gen())
    shrink = (plain * w).sum() / (w * w).sum()
    assert 0.5 < shrink < 0.75
    assert (comp * w).sum() / (w * w).sum() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("dependence", ["independent", "proportional", "inverse"])
def test_device_noise_std(dependence: str) -> None:
    model = DeviceNoise(0.02, dependence=dependence)
    g_value = 0.5 * 25.0
    noisy = model.perturb_conductance(const(g_value), gen())
    expected = {"independent": 0.02 * 25.0, "proportional": 0.02 * g_value, "inverse": 0.02 * 25.0 / 0.5}
    assert noisy.std().item() / expected[dependence] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("levels", [2, 5, 16])
def test_quantize_levels(levels: int) -> None:
    w = torch.randn(100, 100, generator=gen())
    q = w.clone()
    Quantize(levels).perturb_(q, None)
    steps = q.abs() / w.abs().max() * (levels - 1)
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert len(torch.unique(steps.round())) == levels
    assert (q - w).abs().max() <= w.abs().max() / (levels - 1) / 2 + 1e-5
    with pytest.raises(ConfigError, match="integer ≥ 2"):
        Quantize(1)


@pytest.mark.parametrize("mode", ["zero", "max", "both"])
def test_stuck_at_fraction(mode: str) -> None:
    g = const(10.0)
    out = StuckAt(0.05, mode=mode).perturb_conductance(g, gen())
    zero, full = (out == 0).float().mean().item(), (out == 25.0).float().mean().item()
    expected = {"zero": (0.05, 0.0), "max": (0.0, 0.05), "both": (0.025, 0.025)}[mode]
    assert zero == pytest.approx(expected[0], abs=0.002) and full == pytest.approx(expected[1], abs=0.002)
    with pytest.raises(ConfigError, match="probability"):
        StuckAt(1.5)


def test_device_models_validate() -> None:
    with pytest.raises(ConfigError, match="independent, proportional, inverse"):
        DeviceNoise(0.1, dependence="quadratic")
    with pytest.raises(ConfigError, match="g_max"):
        PCM(g_max=0.0)
    with pytest.raises(ConfigError, match="t_inference"):
        PCM(t_inference=-1.0)
