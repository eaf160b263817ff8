"""Device update models: pulse counts, soft-bounds fixed points, asymmetric drift, noise statistics, validation."""

from __future__ import annotations

import math

import pytest
import torch

from analoglearn.analog import ConstantStep, IdealDevice, SoftBounds
from analoglearn.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pulse(device, w, signs, state, g=None):
    """Apply one desired update of ±Δw_min per device (one pulse each), ``signs`` (+1/−1)."""
    device.update_(w, -signs * device.dw_min, 1.0, state, g)  # Δw* = −lr·d = signs·Δw_min


def test_up_pulses_on_soft_bounds_follow_the_closed_form():
    dev = SoftBounds(dw_min=0.01, w_min=-1.0, w_max=0.8, asymmetry=0.1)
    w = torch.zeros(3, dtype=torch.float64)
    state = dev.draw(w, None)
    for _ in range(200):
        pulse(dev, w, torch.ones(3, dtype=torch.float64), state)
    expected = 0.8 - (0.8 - 0.0) * (1 - 0.01 * 1.1 / 0.8) ** 200
    assert torch.allclose(w, torch.full_like(w, expected), rtol=1e-12)
    # the pulse-by-pulse path (used with cycle-to-cycle noise) agrees as the noise vanishes
    noisy = SoftBounds(dw_min=0.01, w_min=-1.0, w_max=0.8, asymmetry=0.1, c2c=1e-9, max_pulses=200)
    v = torch.zeros(3, dtype=torch.float64)
    noisy.update_(v, torch.full_like(v, -2.0), 1.0, state, gen())
    assert torch.allclose(v, w, rtol=1e-7)


@pytest.mark.parametrize(("asymmetry", "w_min", "w_max"), [(0.2, -1.0, 1.0), (-0.3, -0.5, 1.0)])
def test_small_alternating_updates_settle_at_the_symmetry_point(asymmetry, w_min, w_max):
    """Equal numbers of ± pulses: Δw⁺(1 − w/b⁺) = Δw⁻(1 − w/b⁻) at w* (module doc of devices)."""
    dev = SoftBounds(dw_min=0.002, w_min=w_min, w_max=w_max, asymmetry=asymmetry)
    w = torch.tensor([w_min * 0.9, 0.0, w_max * 0.9], dtype=torch.float64)
    state = dev.draw(w, None)
    for k in range(6000):
        pulse(dev, w, torch.full_like(w, 1.0 if k % 2 == 0 else -1.0), state)
    up, down = 0.002 * (1 + asymmetry), 0.002 * (1 - asymmetry)
    w_star = (up - down) / (up / w_max - down / w_min)
    assert torch.allclose(w, torch.full_like(w, w_star), atol=2 * 0.002)


def test_random_updates_with_stochastic_rounding_settle_at_the_symmetry_point_on_average():
    dev = SoftBounds(dw_min=0.01, asymmetry=0.25, rounding="stochastic")
    g = gen(1)
    w = torch.zeros(20_000, dtype=torch.float64)
    state = dev.draw(w, g)
    for _ in range(1500):  # desired updates ±0.6·Δw_min, zero mean
        sign = torch.randint(0, 2, w.shape, generator=g, dtype=torch.float64) * 2 - 1
        dev.update_(w, -0.6 * dev.dw_min * sign, 1.0, state, g)
    assert w.mean().item() == pytest.approx(0.25, abs=0.01)  # w* = a·b for bounds ±1


@pytest.mark.parametrize("asymmetry", [0.1, -0.1])
def test_asymmetric_constant_step_devices_drift_in_the_predicted_direction(asymmetry):
    dev = ConstantStep(dw_min=0.001, asymmetry=asymmetry)
    w = torch.zeros(4, dtype=torch.float64)
    state = dev.draw(w, None)
    for k in range(400):
        pulse(dev, w, torch.full_like(w, 1.0 if k % 2 == 0 else -1.0), state)
    # each ± pair moves w by Δw⁺ − Δw⁻ = 2·a·Δw_min
    assert torch.allclose(w, torch.full_like(w, 200 * 2 * asymmetry * 0.001), rtol=1e-9)


def test_constant_step_clips_at_its_bounds_and_caps_the_pulse_train():
    dev = ConstantStep(dw_min=0.1, w_min=-0.5, w_max=0.5, max_pulses=3)
    w = torch.tensor([0.0, 0.0, 0.45])
    state = dev.draw(w, None)
    dev.update_(w, torch.tensor([-0.26, 10.0, -1.0]), 1.0, state, None)  # Δw* = 0.26, −10, 1
    assert torch.allclose(w, torch.tensor([0.3, -0.3, 0.5]))  # 3 pulses, −3 (capped), clipped at b⁺


def test_cycle_to_cycle_noise_has_the_stated_spread():
    """n pulses of step Δ(1 + σξ_k) sum to Δ(n ± σ√n): over 10⁵ devices the std's standard error is
    ≈ 0.2 %; a 2 % tolerance is 10 standard errors."""
    dev = ConstantStep(dw_min=0.001, c2c=0.5, w_min=-10.0, w_max=10.0)
    w = torch.zeros(100_000, dtype=torch.float64)
    dev.update_(w, torch.full_like(w, -0.016), 1.0, dev.draw(w, None), gen(2))  # 16 pulses up
    assert w.mean().item() == pytest.approx(0.016, rel=0.01)
    assert w.std().item() == pytest.approx(0.001 * 0.5 * 4, rel=0.02)


def test_device_to_device_draws_have_the_stated_spread():
    dev = SoftBounds(dw_min=0.01, asymmetry=0.2, dw_min_d2d=0.1, asymmetry_d2d=0.05, bounds_d2d=0.1)
    state = dev.draw(torch.zeros(200_000), gen(3))
    scale = (state["dw_up"] + state["dw_down"]) / 2
    assert scale.mean().item() == pytest.approx(0.01, rel=0.01)
    assert (scale.std() / scale.mean()).item() == pytest.approx(0.1, rel=0.03)
    a = (state["dw_up"] - state["dw_down"]) / (state["dw_up"] + state["dw_down"])
    assert a.mean().item() == pytest.approx(0.2, abs=0.002) and a.std().item() == pytest.approx(0.05, rel=0.03)
    assert state["w_hi"].std().item() == pytest.approx(0.1, rel=0.03) and torch.all(state["w_lo"] < 0)
    again = dev.draw(torch.zeros(200_000), gen(3))
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_stochastic_rounding_is_unbiased():
    dev = ConstantStep(dw_min=0.01, rounding="stochastic")
    p = dev.pulses(torch.full((100_000,), 0.003), gen(4))
    assert set(p.unique().tolist()) == {0.0, 1.0}
    assert p.mean().item() == pytest.approx(0.3, abs=0.005)  # 0.3 ± 0.0015 (std of a Bernoulli mean)


def test_states_and_ideal_device():
    dev = SoftBounds.with_states(100, asymmetry=0.1)
    assert dev.states == pytest.approx(100) and dev.dw_min == pytest.approx(0.02)
    w = torch.tensor([0.5, -0.5])
    IdealDevice(w_min=-0.6, w_max=0.6).update_(w, torch.tensor([-1.0, 0.2]), 0.2, {}, None)
    assert torch.allclose(w, torch.tensor([0.6, -0.54]))


@pytest.mark.parametrize(("cls", "fields", "match"), [
    (ConstantStep, {"dw_min": 0.0}, "dw_min"),
    (ConstantStep, {"dw_min": -0.1}, "dw_min"),
    (ConstantStep, {"dw_min": math.nan}, "dw_min"),
    (ConstantStep, {"asymmetry": 1.0}, "asymmetry"),
    (ConstantStep, {"asymmetry": -1.5}, "asymmetry"),
    (ConstantStep, {"w_min": 1.0, "w_max": -1.0}, "reversed"),
    (SoftBounds, {"w_min": 0.1, "w_max": 1.0}, "w_min < 0 < device.w_max"),
    (ConstantStep, {"c2c": -0.1}, "c2c"),
    (ConstantStep, {"rounding": "up"}, "rounding"),
    (ConstantStep, {"max_pulses": 0}, "max_pulses"),
    (IdealDevice, {"w_min": 1.0, "w_max": 0.0}, "w_min"),
])
def test_bad_device_parameters_name_the_key(cls, fields, match):
    with pytest.raises(ConfigError, match=match) as info:
        cls(**fields)
    assert "\n" not in str(info.value)
