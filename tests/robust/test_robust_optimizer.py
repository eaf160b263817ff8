"""SAM, ASAM and RWP are torch optimisers: shared parameter groups, LR schedulers, state dicts, clipping."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from analoglearn import schedule
from analoglearn.errors import ConfigError
from analoglearn.noise import AdditiveGaussian
from analoglearn.robust.rwp import RWP
from analoglearn.robust.sam import ASAM, SAM

STEPS = 8
WRAPPERS = {
    "sam": lambda base, model: SAM(base, rho=0.1, model=model),
    "asam": lambda base, model: ASAM(base, rho=0.3, model=model),
    "rwp": lambda base, model: RWP(base, AdditiveGaussian(0.05), model=model,
                                   generator=torch.Generator().manual_seed(0)),
}
SCHEDULERS = {
    "step": lambda opt: lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
    "cosine": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS, eta_min=0.01),
    "onecycle": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=STEPS),
    "lambda": lambda opt: lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k)),
}
BASES = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.1),
}


def hyper(group: dict) -> list[float]:
    """The learning rate and momentum (β₁ for Adam) of a parameter group."""
    return [group["lr"], group["betas"][0] if "betas" in group else group["momentum"]]


def expected_schedule(scheduler: str, base: str) -> list[float]:
    """(lr, momentum) at each step of a plain base optimiser driven by the same scheduler."""
    opt = BASES[base]([nn.Parameter(torch.zeros(1))])
    sched, out = SCHEDULERS[scheduler](opt), []
    for _ in range(STEPS):
        out.extend(hyper(opt.param_groups[0]))
        opt.step()
        sched.step()
    return out


CASES = [(w, s, "sgd") for w in sorted(WRAPPERS) for s in sorted(SCHEDULERS)]
CASES += [(w, "onecycle", "adam") for w in sorted(WRAPPERS)]  # OneCycleLR cycles Adam's β₁


@pytest.mark.parametrize(("wrapper", "scheduler", "base"), CASES)
def test_lr_schedulers_drive_the_base_optimizer(quadratic, wrapper: str, scheduler: str, base: str) -> None:
    opt = BASES[base](quadratic.parameters())
    wrapped = WRAPPERS[wrapper](opt, quadratic)
    sched, seen = SCHEDULERS[scheduler](wrapped), []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.extend(hyper(o.param_groups[0])))
    for _ in range(STEPS):
        wrapped.step(quadratic.closure())
        sched.step()
    assert seen == pytest.approx(expected_schedule(scheduler, base))  # what the base stepped with


def test_a_perturbation_is_an_optimizer_sharing_the_base_groups(quadratic) -> None:
    base = torch.optim.SGD(quadratic.parameters(), lr=0.1, momentum=0.9)
    sam = SAM(base, rho=0.1)
    assert isinstance(sam, torch.optim.Optimizer)
    assert sam.param_groups is base.param_groups and sam.state is base.state and sam.defaults is base.defaults
    base.load_state_dict(base.state_dict())  # rebinds the base's lists: the wrapper follows
    assert sam.param_groups is base.param_groups and sam.state is base.state
    extra = nn.Parameter(torch.ones(2))
    sam.add_param_group({"params": [extra], "lr": 0.01})
    assert len(base.param_groups) == 2 and base.param_groups[1]["momentum"] == 0.9
    extra.grad = torch.ones(2)
    sam.zero_grad()
    assert extra.grad is None
    clone = copy.deepcopy(sam)
    assert clone.param_groups is clone.base_optimizer.param_groups and clone.param_groups is not base.param_groups


def test_wrapping_a_perturbation_or_a_non_optimizer_is_refused(quadratic) -> None:
    sam = SAM(torch.optim.SGD(quadratic.parameters(), lr=0.1), rho=0.1)
    with pytest.raises(ConfigError, match="plain torch.optim.Optimizer"):
        SAM(sam, rho=0.1)
    with pytest.raises(ConfigError, match="plain torch.optim.Optimizer"):
        SAM(object(), rho=0.1)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        SAM(torch.optim.SGD(quadratic.parameters(), lr=0.1), max_grad_norm=0.0)


def reloaded(state: dict) -> dict:
    """``state`` through ``torch.save`` and ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


MAKE_RESUMABLE = {
    "sam": lambda base, model: SAM(base, rho=schedule.ramp(0.0, 0.3, STEPS, shape="quadratic"), model=model,
                                   diagnostics=True),
    "asam": lambda base, model: ASAM(base, rho=0.3, model=model),
    "rwp": lambda base, model: RWP(base, AdditiveGaussian(0.1),
                                   sigma=schedule.feedback(schedule.ramp(0.0, 0.2, STEPS, shape="quadratic")),
                                   model=model, mix=0.5, generator=torch.Generator().manual_seed(4),
                                   diagnostics=True),
}


@pytest.mark.parametrize("wrapper", sorted(MAKE_RESUMABLE))
def test_state_dict_round_trip_equals_an_uninterrupted_run(quadratic, wrapper: str) -> None:
    def make(model):
        opt = MAKE_RESUMABLE[wrapper](torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), model)
        return opt, lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)

    straight, sched = make(quadratic)
    for k in range(STEPS):
        if k == STEPS // 2:
            saved = reloaded({"opt": straight.state_dict(), "sched": sched.state_dict(),
                              "w": quadratic.layer.weight.detach().clone()})
        straight.step(quadratic.closure())
        sched.step()
    other = type(quadratic)()
    resumed, resumed_sched = make(other)
    with torch.no_grad():
        other.layer.weight.copy_(saved["w"])
    resumed.load_state_dict(saved["opt"])
    resumed_sched.load_state_dict(saved["sched"])
    assert resumed.steps == STEPS // 2
    for _ in range(STEPS - STEPS // 2):
        resumed.step(other.closure())
        resumed_sched.step()
    assert torch.equal(other.layer.weight, quadratic.layer.weight)
    assert resumed.param_groups[0]["lr"] == straight.param_groups[0]["lr"]
    assert resumed.epoch.summary() == straight.epoch.summary()


def test_own_state_of_older_checkpoints_still_loads(quadratic) -> None:
    sam = SAM(torch.optim.SGD(quadratic.parameters(), lr=0.1), rho=schedule.ramp(0.0, 0.2, 4, shape="quadratic"))
    sam.load_state_dict({"steps": 3, "schedule": {}})  # no skipped/diagnostics keys
    assert sam.steps == 3 and sam.skipped == 0 and sam.current_strength() == pytest.approx(0.2 * (3 / 4) ** 2)
    fed = SAM(torch.optim.SGD(quadratic.parameters(), lr=0.1),
              rho=schedule.feedback(schedule.ramp(0.0, 0.2, 4, shape="quadratic")))
    fed.load_state_dict({"steps": 3, "schedule": {"clock": 2}})
    assert fed.steps == 3 and fed.skipped == 0 and fed.strength.clock == 2
    assert fed.current_strength() == pytest.approx(0.2 * (2 / 4) ** 2)


@pytest.mark.parametrize("wrapper", ["sam", "rwp"])
def test_max_grad_norm_clips_the_final_gradient(quadratic, wrapper: str) -> None:
    w0 = quadratic.layer.weight.detach().clone()
    base = torch.optim.SGD(quadratic.parameters(), lr=0.1)
    if wrapper == "sam":
        opt = SAM(base, rho=0.3, max_grad_norm=0.5)
        g0 = quadratic.grad_at(w0)
        g = quadratic.grad_at(w0 + 0.3 * g0 / g0.norm())
    else:
        opt = RWP(base, AdditiveGaussian(0.0), model=quadratic, max_grad_norm=0.5)
        g = quadratic.grad_at(w0)
    assert g.norm() > 0.5
    opt.step(quadratic.closure())
    assert torch.allclose(quadratic.layer.weight.detach(), w0 - 0.1 * g * 0.5 / g.norm(), atol=1e-6)
