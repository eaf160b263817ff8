"""Bit-identical steps: SAM, ASAM and RWP give exactly the weights of the reference implementation.

``data/reference_steps.pt`` was written by :func:`run_cases` with the wrappers as they were before
they became ``torch.optim.Optimizer`` subclasses (no scheduler, no scaler, the schedules of the former
``analoglearn.robust.schedules``). It holds the initial weights, the batch and, per case, the weights
after every step and the returned losses, all as plain tensors; the test replays the same cases with
today's classes and :mod:`analoglearn.schedule` and compares them bit for bit, so the published result
tables stay reproducible. Do not regenerate it.

Schedules: the former ``Quadratic(final=0.2, total=STEPS)`` is ``schedule.ramp(0.0, 0.2, STEPS,
shape="quadratic")``, the former ``Feedback(final=0.1, total=STEPS)`` is ``schedule.feedback`` of the
quadratic ramp to 0.1. Losses: ``step`` returned, and still returns, the clean loss for SAM/ASAM and the
perturbed loss for one-pass RWP; the reference stored RWP's mixed objective J where a clean pass runs,
which ``step`` now leaves in ``last_objective`` (it returns the clean loss).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from analoglearn import schedule
from analoglearn.noise import AdditiveGaussian
from analoglearn.robust.rwp import RWP
from analoglearn.robust.sam import ASAM, SAM

REFERENCE = Path(__file__).parent / "data" / "reference_steps.pt"
STEPS = 4
MIXED = {"rwp_mix_k2_feedback"}
"""Cases whose stored loss is RWP's mixed objective J (``last_objective``), not what ``step`` returns."""


def small_net() -> nn.Module:
    """A 4 → 8 → 3 net with BatchNorm (so the frozen-statistics path is covered too)."""
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def wrappers(model: nn.Module) -> dict[str, object]:
    """The cases: each a freshly built wrapper around a fresh base optimiser of ``model``."""

    def sgd() -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)

    return {
        "sam": lambda: SAM(sgd(), rho=0.05, model=model),
        "sam_schedule_diag": lambda: SAM(sgd(), rho=schedule.ramp(0.0, 0.2, STEPS, shape="quadratic"), model=model,
                                         diagnostics=True),
        "asam_adam": lambda: ASAM(torch.optim.Adam(model.parameters(), lr=0.01), rho=0.5, model=model),
        "rwp": lambda: RWP(sgd(), AdditiveGaussian(0.05), model=model, generator=torch.Generator().manual_seed(1)),
        "rwp_mix_k2_feedback": lambda: RWP(
            sgd(), AdditiveGaussian(0.05), sigma=schedule.feedback(schedule.ramp(0.0, 0.1, STEPS, shape="quadratic")),
            model=model, samples=2, mix=0.5, generator=torch.Generator().manual_seed(2), diagnostics=True,
        ),
    }


def run_cases(init: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per case: the model's state after each of ``STEPS`` steps (flattened, stacked) and the losses
    (for :data:`MIXED`, ``last_objective``; ``step``'s clean loss is checked against the diagnostics)."""
    out: dict[str, torch.Tensor] = {}
    model = small_net()
    for name, make in wrappers(model).items():
        model.load_state_dict(init)
        wrapper = make()

        def closure() -> torch.Tensor:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss.detach()

        states, losses = [], []
        for _ in range(STEPS):
            returned = float(wrapper.step(closure))
            if name in MIXED:
                assert returned == wrapper.last.clean_loss  # the first (clean) call's loss
                losses.append(wrapper.last_objective)
            else:
                losses.append(returned)
            states.append(torch.cat([t.detach().flatten().double() for t in model.state_dict().values()]))
        out[f"{name}/states"] = torch.stack(states)
        out[f"{name}/losses"] = torch.tensor(losses, dtype=torch.float64)
    return out


def test_steps_are_bit_identical_to_the_reference() -> None:
    ref = torch.load(REFERENCE, weights_only=True)
    got = run_cases(ref["init"], ref["x"], ref["y"])
    assert set(got) == set(ref["results"])
    for key, expected in ref["results"].items():
        assert torch.equal(got[key], expected), key
