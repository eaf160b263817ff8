"""Mixed precision: SAM/ASAM/RWP with fp16 autocast and a GradScaler, and with bf16 autocast (CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analoglearn.noise import AdditiveGaussian
from analoglearn.registry import METHODS
from analoglearn.robust.perturbation import Perturbation
from analoglearn.robust.rwp import RWP
from analoglearn.robust.sam import ASAM, SAM
from analoglearn.train import take_step

WRAPPERS = {
    "sam": lambda base, model: SAM(base, rho=0.05, model=model, diagnostics=True),
    "asam": lambda base, model: ASAM(base, rho=0.5, model=model, diagnostics=True),
    "rwp": lambda base, model: RWP(base, AdditiveGaussian(0.02), model=model, mix=0.5,
                                   generator=torch.Generator().manual_seed(0), diagnostics=True),
}


def problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 3-class problem a 8 → 16 → 3 net learns in a few dozen full-batch steps."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), x, y


def counting(scaler: torch.amp.GradScaler) -> list[object]:
    """Record every ``scaler.unscale_`` call (the scaler's own call inside ``step`` included)."""
    calls: list[object] = []
    unscale = scaler.unscale_

    def spy(optimizer: torch.optim.Optimizer) -> None:
        calls.append(optimizer)
        unscale(optimizer)

    scaler.unscale_ = spy  # type: ignore[method-assign]
    return calls


def train(
    wrapper: str, dtype: torch.dtype | None, scaler: torch.amp.GradScaler | None, steps: int = 30
) -> tuple[list[float], Perturbation]:
    """``steps`` full-batch steps of the ``sgd`` method's closure under autocast to ``dtype`` (None: fp32);
    the losses and the optimiser."""
    model, x, y = problem()
    base = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    opt = WRAPPERS[wrapper](base, model)
    method = METHODS.create("sgd", model, None, generator=None)
    method.autocast = dtype  # the closure backpropagates scaler.scale(loss) under a scaler

    calls = counting(scaler) if scaler is not None else []
    losses = [float(take_step(opt, method.closure(x, y, scaler), scaler)) for _ in range(steps)]
    if scaler is not None:
        assert calls == [base] * steps  # one unscale per step, all through the scaler
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return losses, opt


@pytest.mark.parametrize("wrapper", ["sam", "asam", "rwp"])
def test_fp16_with_grad_scaler_trains(wrapper: str) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=10)
    losses, _ = train(wrapper, torch.float16, scaler)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0]
    assert scaler.get_scale() > 2.0**12  # grew: no step was skipped


@pytest.mark.parametrize("wrapper", ["sam", "rwp"])
def test_bf16_autocast_trains(wrapper: str) -> None:
    losses, _ = train(wrapper, torch.bfloat16, None)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("wrapper", ["sam", "asam", "rwp"])
def test_a_power_of_two_scale_changes_nothing_in_fp32(wrapper: str) -> None:
    """S·∇L is exact for S = 2^k, so the scaled step (own division, then the scaler's) is today's,
    diagnostics (which read the unscaled gradients) included."""
    _, plain = train(wrapper, None, None, steps=3)
    _, scaled = train(wrapper, None, torch.amp.GradScaler("cpu", init_scale=2.0**10), steps=3)
    assert all(torch.equal(a, b) for a, b in zip(plain.params(), scaled.params()))
    assert plain.epoch.summary() == scaled.epoch.summary()


def hand_closure(layer: nn.Linear, scaler: torch.amp.GradScaler, bad_calls: set[int]) -> tuple[object, list]:
    """Writes S·∇(½‖w‖²) = S·w into ``.grad`` by hand, or inf at the calls numbered in ``bad_calls``."""
    calls: list[int] = []

    def closure() -> float:
        calls.append(len(calls))
        w = layer.weight.detach()
        scale = scaler.scale(torch.ones(()))  # S, as backpropagating scaler.scale(loss) would apply
        layer.weight.grad = torch.full_like(w, float("inf")) if calls[-1] in bad_calls else scale * w
        return 0.5 * float(w.pow(2).sum())

    return closure, calls


def plain_scale_after_inf() -> dict:
    """What torch's scaler does to a plain optimiser whose gradient is inf: its state afterwards."""
    layer = nn.Linear(3, 2, bias=False)
    opt, scaler = torch.optim.SGD(layer.parameters(), lr=0.1), torch.amp.GradScaler("cpu", init_scale=2.0**8)
    scaler.scale(torch.ones(()))
    layer.weight.grad = torch.full_like(layer.weight, float("inf"))
    scaler.step(opt)
    scaler.update()
    return scaler.state_dict()


@pytest.mark.parametrize(("wrapper", "bad", "passes"), [("sam", 0, 1), ("sam", 1, 2), ("rwp", 0, 1), ("rwp", 1, 2)])
def test_an_inf_gradient_skips_the_step_and_lowers_the_scale(wrapper: str, bad: int, passes: int) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    w0 = layer.weight.detach().clone()
    base = torch.optim.SGD(layer.parameters(), lr=0.1)
    opt = (SAM(base, rho=0.1) if wrapper == "sam"
           else RWP(base, AdditiveGaussian(0.1), model=layer, mix=0.5, generator=torch.Generator().manual_seed(0)))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    unscales = counting(scaler)
    closure, calls = hand_closure(layer, scaler, {bad})
    opt.step(closure, scaler=scaler)
    assert torch.equal(layer.weight, w0) and len(calls) == passes and len(unscales) == 1
    assert scaler.state_dict() == plain_scale_after_inf() and scaler.get_scale() == 2.0**7
    assert opt.steps == 0 and opt.skipped == 1 and opt.last is None
    closure, calls = hand_closure(layer, scaler, set())
    opt.step(closure, scaler=scaler)  # the next, finite step is taken at the lowered scale
    assert not torch.equal(layer.weight, w0) and opt.steps == 1 and scaler.get_scale() == 2.0**7
    assert len(unscales) == 2


def test_explicit_first_and_second_step_under_a_scaler() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    w0 = layer.weight.detach().clone()
    sam = SAM(torch.optim.SGD(layer.parameters(), lr=0.1), rho=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    closure, _ = hand_closure(layer, scaler, {0})
    closure()
    sam.first_step(scaler=scaler)  # inf: the step is skipped here
    closure()
    sam.second_step(scaler=scaler)  # and this pass discarded
    assert torch.equal(layer.weight, w0) and sam.skipped == 1 and scaler.get_scale() == 2.0**7
    closure, _ = hand_closure(layer, scaler, set())
    sam.zero_grad()
    closure()
    sam.first_step(scaler=scaler)
    closure()
    sam.second_step(scaler=scaler)
    assert sam.steps == 1 and not torch.equal(layer.weight, w0)
