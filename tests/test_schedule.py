"""analoglearn.schedule reproduces the former strength schedules and learning-rate schedule bit for bit
(tests/reference_schedules.py)."""

from __future__ import annotations

import itertools
import pickle
import random

import pytest

import reference_schedules as old
from analoglearn import schedule
from analoglearn.errors import ConfigError
from reference_schedules import Progress, schedule_factor


def progress(step: int, steps_per_epoch: int, total_steps: int) -> Progress:
    return Progress(step, step // steps_per_epoch, steps_per_epoch, total_steps)


def settings():
    for name, per, (begin, end), total, start, final in itertools.product(
        ("constant", "linear", "quadratic", "power", "cosine", "cosine-increase"), ("step", "epoch"),
        ((0.0, 1.0), (0.2, 0.7), (0.5, 1.0)), (None, 7), (0.0, 0.01), (0.05, 0.3),
    ):
        for power in (3.0, 0.5) if name == "power" else (2.0,):
            yield name, final, {"start": start, "per": per, "begin": begin, "end": end, "total": total, "power": power}


@pytest.mark.parametrize(("total_steps", "steps_per_epoch"), [(10, 1), (37, 4), (40, 10)])
def test_ramps_match_robust_schedules_bit_for_bit(total_steps: int, steps_per_epoch: int) -> None:
    for name, final, options in settings():
        a = old.build(name, final, **options)
        b = schedule.from_config(name, final, total_steps, steps_per_epoch, **options)
        for t in range(total_steps + 12):
            want, got = a(progress(t, steps_per_epoch, total_steps)), b(t)
            assert type(got) is float and got.hex() == want.hex(), (name, options, t, want, got)


def test_ramp_constructor_matches_at_of_fraction() -> None:
    a = old.Power(final=0.2, start=0.05, begin=0.1, end=0.9, power=1.7, per="epoch")
    b = schedule.ramp(0.05, 0.2, 50, shape="power", begin=0.1, end=0.9, power=1.7, steps_per_epoch=6)
    assert all(b(t) == a.at(a.fraction(progress(t, 6, 50))) for t in range(60))
    assert schedule.constant(3)(10**9) == 3.0 and type(schedule.constant(3)(0)) is float


@pytest.mark.parametrize("ramp", ["linear", "quadratic", "power", "cosine"])
def test_feedback_matches_robust_feedback(ramp: str) -> None:
    a = old.Feedback(final=0.3, start=0.01, ramp=ramp, fraction_kept=0.6, power=1.5, begin=0.1)
    b = schedule.from_config("feedback", 0.3, 40, 5, start=0.01, ramp=ramp, fraction_kept=0.6, power=1.5, begin=0.1)
    assert b.needs_feedback and a.needs_feedback
    rng = random.Random(0)
    for t in range(60):
        assert b(t).hex() == a(progress(t, 5, 40)).hex()
        perturbed, clean = rng.uniform(0, 2), rng.uniform(0.5, 1.5)
        a.observe(perturbed, clean)
        b.observe(perturbed, clean)
    assert b.state_dict() == a.state_dict() and type(b.state_dict()["clock"]) is int
    c = schedule.feedback(b.ramp, 0.6)
    c.load_state_dict(b.state_dict())
    assert c(0) == b(123) and c.clock == a.clock
    assert schedule.feedback(schedule.constant(1.0))(5) == 1.0


def test_learning_rate_matches_schedule_factor_bit_for_bit() -> None:
    for kind, base, lr_min, epochs, spe in itertools.product(
        ("constant", "linear", "cosine"), (0.1, 0.05, 1e-3, 0.3), (0.0, 1e-4, 0.01), (1, 3, 7, 90, 200), (1, 3)
    ):
        lr = schedule.learning_rate(kind, base, lr_min, epochs, spe)
        for epoch in range(epochs + 1):
            want = schedule_factor(kind, lr_min, epoch, epochs, base)
            for step in (epoch * spe, epoch * spe + spe - 1):
                assert lr(step).hex() == float(want).hex(), (kind, base, lr_min, epochs, epoch, step)


BAD = [
    ("linear", 0.1, {"per": "batch"}),
    ("linear", -0.1, {}),
    ("quadratic", 0.1, {"start": -1}),
    ("linear", 0.1, {"begin": 0.8, "end": 0.2}),
    ("linear", 0.1, {"end": 1.5}),
    ("power", 0.1, {"total": 0}),
    ("power", 0.1, {"power": 0}),
    ("linear", 0.1, {"rmp": "x", "fraction_kept": 0.5}),
    ("cosine-increase", 0.1, {"wat": 1}),
    ("feedback", 0.1, {"ramp": "constant"}),
    ("feedback", 0.1, {"per": "epoch"}),
    ("feedback", 0.1, {"fraction_kept": 0}),
    ("feedback", 0.1, {"fraction_kept": 1.5}),
    ("feedback", 0.1, {"bogus": 1}),
    ("cosin", 0.1, {}),
    ("nothing-like-it", 0.1, {}),
]


@pytest.mark.parametrize(("name", "final", "options"), BAD)
def test_validation_messages_match_robust(name: str, final: float, options: dict) -> None:
    with pytest.raises(ConfigError) as want:
        old.build(name, final, **options)
    with pytest.raises(ConfigError) as got:
        schedule.from_config(name, final, 100, 10, **options)
    assert str(got.value) == str(want.value)


def test_names_and_options_list_the_vocabulary() -> None:
    assert list(schedule.NAMES) == old.SCHEDULES.names()
    assert schedule.OPTIONS["feedback"][-2:] == ("ramp", "fraction_kept")
    with pytest.raises(ConfigError, match="one of constant, cosine, linear"):
        schedule.learning_rate("step", 0.1, 0.0, 10, 5)
    with pytest.raises(ConfigError, match="ramp shape must be one of"):
        schedule.ramp(0.0, 1.0, 10, shape="exp")


def test_schedules_pickle_and_have_readable_reprs() -> None:
    fb = schedule.from_config("feedback", 0.2, 30, 3)
    fb.observe(1.0, 1.0)
    for s in (schedule.constant(0.1), schedule.from_config("cosine", 0.2, 30, 3, per="epoch"),
              schedule.learning_rate("cosine", 0.1, 0.0, 10, 3), fb):
        copy = pickle.loads(pickle.dumps(s))
        assert copy == s and [copy(t) for t in range(40)] == [s(t) for t in range(40)]
        assert repr(s).startswith(type(s).__name__ + "(")
    assert "shape='cosine'" in repr(schedule.from_config("cosine_increase", 0.2, 30, 3))
