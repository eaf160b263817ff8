"""Strength schedules inside the perturbations: the feedback schedule driven by SAM's and RWP's step
diagnostics, and the ``perturb`` section's schedules on the wrapper's step counter.

The schedules' own values, options and errors are tested against the former classes in
tests/test_schedule.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analoglearn import schedule
from analoglearn.noise import AdditiveGaussian
from analoglearn.registry import PERTURBATIONS
from analoglearn.robust.methods import Clock, RWPOptions, SAMOptions
from analoglearn.robust.rwp import RWP
from analoglearn.robust.sam import SAM

KEPT = [1.0, 0.6, 0.4, 0.5, 0.1, 0.9]
"""Per step, ‖∇L(w+ε)‖/‖∇L(w)‖ the closure below produces; the clock advances while ≥ 0.5."""


def shrinking_closure(layer: nn.Linear, kept: list[float]):
    """Writes ∇L = w₀ (the clean weights) at the first call of each step (the clean pass) and
    ``kept[step]``·w₀ at the second (the perturbed pass) by hand; with lr = 0 the weights never move."""
    calls: list[int] = []
    w0 = layer.weight.detach().clone()

    def closure() -> float:
        step, second = divmod(len(calls), 2)
        calls.append(1)
        layer.weight.grad = w0 * (kept[step] if second else 1.0)
        return 0.5 * float(layer.weight.detach().pow(2).sum())

    return closure, calls


@pytest.mark.parametrize("wrapper", ["sam", "rwp"])
@pytest.mark.parametrize("diagnostics", [False, True])
def test_feedback_advances_only_while_the_perturbed_gradient_survives(wrapper: str, diagnostics: bool) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    ramp = schedule.ramp(0.0, 1.0, 10, shape="linear")
    strength = schedule.feedback(ramp, fraction_kept=0.5)
    base = torch.optim.SGD(layer.parameters(), lr=0.0)
    if wrapper == "sam":
        opt = SAM(base, rho=strength, diagnostics=diagnostics)
    else:  # one noisy draw; the feedback schedule forces the clean pass
        opt = RWP(base, AdditiveGaussian(0.1), sigma=strength, model=layer, generator=torch.Generator().manual_seed(0),
                  diagnostics=diagnostics)
    closure, calls = shrinking_closure(layer, KEPT)
    clocks, strengths = [], []
    for _ in KEPT:
        opt.step(closure)
        clocks.append(strength.clock)
        strengths.append(opt.last.strength)
    assert len(calls) == 2 * len(KEPT)  # the diagnostics are measured with or without diagnostics=True
    assert clocks == [1, 2, 2, 3, 3, 4]  # held at 0.4 and 0.1 of the clean gradient norm
    assert strengths == [ramp(c) for c in [0, 1, 2, 2, 3, 3]]  # each step at the clock before it
    assert opt.steps == len(KEPT) and opt.current_strength() == ramp(4)
    assert opt.state_dict()["schedule"] == {"clock": 4}
    assert opt.epoch.summary() != {} if diagnostics else opt.epoch.summary() == {}


def test_section_schedules_count_the_clock_of_the_run() -> None:
    """``perturb: {schedule, schedule_options}``: τ from the wrapper's steps and the run's
    ``Clock`` (steps per epoch × epochs), per step or per epoch, ``total`` overriding T."""
    layer = nn.Linear(3, 2, bias=False)
    clock = Clock(total_steps=100, steps_per_epoch=10)

    def sam(**options):
        opt = PERTURBATIONS.create("sam", torch.optim.SGD(layer.parameters(), lr=0.1), layer,
                                   SAMOptions(rho=0.4, **options), generator=None, clock=clock)
        opt.steps = 57  # epoch 5 of 10
        return opt

    assert sam().strength == 0.4 and sam().current_strength() == 0.4  # constant: a plain number
    assert sam(schedule="quadratic").current_strength() == pytest.approx(0.4 * 0.57**2)
    assert sam(schedule="quadratic", schedule_options={"per": "epoch"}).current_strength() == pytest.approx(0.1)
    assert sam(schedule="quadratic", schedule_options={"total": 200}).current_strength() == pytest.approx(
        0.4 * (57 / 200) ** 2)
    assert sam(schedule="quadratic", schedule_options={"total": 20}).current_strength() == pytest.approx(0.4)
    linear = sam(schedule="linear", schedule_options={"start": 0.2, "begin": 0.5, "end": 0.75})
    assert linear.current_strength() == pytest.approx(0.2 + 0.2 * 0.07 / 0.25)
    rwp = PERTURBATIONS.create("rwp", torch.optim.SGD(layer.parameters(), lr=0.1), layer,
                               RWPOptions(sigma=0.3, schedule="feedback"), generator=None, clock=clock)
    assert rwp.strength.needs_feedback and rwp.clean_pass and rwp.current_strength() == 0.0
