"""Schedules hit their exact values; bad schedules are config errors."""

from __future__ import annotations

import pytest

from analoglearn.errors import ConfigError
from analoglearn.method import Progress
from analoglearn.robust import schedules
from analoglearn.robust.schedules import Constant, CosineIncrease, Feedback, Linear, Power, Quadratic


def at_step(t: int, total: int = 100) -> Progress:
    return Progress(step=t, epoch=0, steps_per_epoch=total, total_steps=total)


@pytest.mark.parametrize(
    ("schedule", "mid"),
    [(Linear(final=0.08), 0.04), (Quadratic(final=0.08), 0.02), (Power(final=0.08, power=3), 0.01),
     (CosineIncrease(final=0.08), 0.04), (Constant(final=0.08), 0.08)],
)
def test_start_midpoint_end(schedule, mid: float) -> None:
    start = 0.08 if isinstance(schedule, Constant) else 0.0
    assert schedule(at_step(0)) == pytest.approx(start, abs=1e-15)
    assert schedule(at_step(50)) == pytest.approx(mid, rel=1e-12)
    assert schedule.at(1.0) == pytest.approx(0.08, rel=1e-12)


def test_quadratic_is_x_final_t_over_t_squared() -> None:
    q = Quadratic(final=0.05)
    assert [q(at_step(t, 10)) for t in (0, 5, 10)] == pytest.approx([0.0, 0.0125, 0.05])


def test_start_value_window_and_per_epoch() -> None:
    s = Linear(final=1.0, start=0.2, begin=0.5, end=0.75)
    assert s.at(0.25) == pytest.approx(0.2) and s.at(0.625) == pytest.approx(0.6) and s.at(0.9) == 1.0
    per_epoch = Quadratic(final=0.4, per="epoch")
    progress = Progress(step=57, epoch=5, steps_per_epoch=10, total_steps=100)
    assert per_epoch(progress) == pytest.approx(0.1)
    assert Quadratic(final=0.4, total=200)(progress) == pytest.approx(0.4 * (57 / 200) ** 2)
    assert Quadratic(final=0.4, total=20)(progress) == pytest.approx(0.4)  # τ = 57/20 > 1: ramp over


def test_feedback_advances_only_while_gradient_survives() -> None:
    f = Feedback(final=1.0, ramp="linear", fraction_kept=0.5, total=10)
    f.observe(0.6, 1.0)
    f.observe(0.4, 1.0)  # gradient collapsed: hold
    f.observe(0.5, 1.0)
    assert f.clock == 2 and f(at_step(99)) == pytest.approx(0.2)
    g = Feedback(final=1.0, ramp="linear", total=10)
    g.load_state_dict(f.state_dict())
    assert g.clock == 2


def test_invalid_schedules_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="start before it ends"):
        Linear(final=0.1, begin=0.8, end=0.2)
    with pytest.raises(ConfigError, match="≥ 0"):
        Quadratic(final=-0.1)
    with pytest.raises(ConfigError, match="step, epoch"):
        Linear(final=0.1, per="batch")
    with pytest.raises(ConfigError, match="Valid schedules: constant, linear, quadratic"):
        schedules.build("quadratik", 0.1)
    with pytest.raises(ConfigError, match="valid: start, per"):
        schedules.build("linear", 0.1, slope=2)
    assert isinstance(schedules.build("cosine-increase", 0.1), CosineIncrease)
