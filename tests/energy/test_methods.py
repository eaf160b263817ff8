"""Methods: registration, options validation, steps through the closure, state_dict round trip."""

from __future__ import annotations

import pytest
import torch
from ebl_helpers import make_batch, make_net

from analoglearn.energy.estimators import ALGORITHMS, cost, onehot
from analoglearn.energy.methods import EnergyMethod, EnergyOptions
from analoglearn.errors import ConfigError
from analoglearn.method import Outcome
from analoglearn.registry import METHODS
from analoglearn.robust.sam import SAM
from analoglearn.train import take_step


def _parts(name="CEP", **options):
    """The method and its optimiser (per-layer groups), on a float32 tiny network."""
    net = make_net(dtype=torch.float32)
    optimizer = torch.optim.SGD([{"params": g, "lr": 0.05} for g in net.param_groups()], momentum=0.9)
    opts = EnergyOptions(free_iterations=10, nudged_iterations=4, eval_iterations=10, **options)
    return METHODS.create(name, net, opts, generator=torch.Generator().manual_seed(0)), optimizer


def _method(name="CEP", **options):
    return _parts(name, **options)[0]


def _step(method, optimizer, x, y) -> Outcome:
    """One optimiser step on the method's closure (as the training loop does)."""
    return take_step(optimizer, method.closure(x, y))


def test_nine_algorithms_are_registered():
    assert [n for n in METHODS.names() if n in ALGORITHMS] == list(ALGORITHMS)
    for name in ALGORITHMS:
        assert METHODS.get(name).options is EnergyOptions
    assert isinstance(
        METHODS.create("cep", make_net(), None, generator=None),
        EnergyMethod,
    )


@pytest.mark.parametrize(
    "bad",
    [
        dict(beta=0.0),
        dict(beta=-0.1),
        dict(free_iterations=0),
        dict(nudged_iterations=-3),
        dict(schedule="jacobi"),
        dict(precision="fp8"),
        dict(output_update="newton"),
        dict(rbp_steps=0),
        dict(tolerance=0.0),
        dict(eval_iterations=2.5),
    ],
)
def test_bad_options_raise_config_error(bad):
    with pytest.raises(ConfigError):
        EnergyOptions(**bad)


def test_non_energy_model_is_rejected():
    model = torch.nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="energy-based"):
        METHODS.create("CEP", model, EnergyOptions(), generator=None)


def test_cl_defaults_to_full_clamping():
    assert _method("CL").settings.beta == 1.0
    assert _method("CEP").settings.beta == 0.25
    assert _method("CEP", beta=0.1).settings.beta == 0.1


def test_step_outcome_and_warm_start():
    method, optimizer = _parts()
    x, y = make_batch(batch=6, dtype=torch.float32)
    before = [p.detach().clone() for p in method.model.parameters()]
    out = _step(method, optimizer, x, y)
    assert isinstance(out, Outcome) and isinstance(out.correct, int) and 0 <= out.correct <= 6 and float(out) > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, method.model.parameters()))
    assert method.warm is not None and method.warm[0].shape[0] == 6
    assert method._initial_state(x) is method.warm
    assert all(torch.count_nonzero(s) == 0 for s in method._initial_state(x[:4]))
    metrics = method.epoch_metrics()
    assert "energy" in metrics and "saturation_low/s1" in metrics and "saturation_high/s2" in metrics
    assert method.epoch_metrics() == {}
    assert method.predict(x).shape == (6, 3)


def test_closure_fills_grad_and_returns_cost():
    method = _method("NEP")
    x, y = make_batch(batch=5, dtype=torch.float32)
    closure = method.closure(x, y)
    assert method.warm is None  # nothing relaxes before the closure is called
    outcome = closure()
    assert isinstance(outcome, Outcome) and outcome.loss.dim() == 0 and float(outcome) > 0
    assert float(outcome) == float(outcome.loss) and 0 <= outcome.correct <= 5
    assert method.warm is not None and method.warm[0].shape[0] == 5  # the free state of the call
    assert float(outcome) == pytest.approx(float(cost(method.warm[-1], onehot(y, 3, torch.float32)).mean()))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.model.parameters())


def test_state_dict_round_trip_reproduces_training(tmp_path):
    (first, first_opt), (second, second_opt) = _parts(), _parts()
    x, y = make_batch(batch=6, dtype=torch.float32)
    _step(first, first_opt, x, y)
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "method": first.state_dict(),
            "model": first.model.state_dict(),
            "optim": first_opt.state_dict(),
        },
        path,
    )
    loaded = torch.load(path, weights_only=True)
    second.load_state_dict(loaded["method"])
    second.model.load_state_dict(loaded["model"])
    second_opt.load_state_dict(loaded["optim"])
    a = _step(first, first_opt, x, y)
    b = _step(second, second_opt, x, y)
    assert torch.equal(a.loss, b.loss) and a.correct == b.correct
    for p, q in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(p, q)
    empty = _method()
    empty.load_state_dict(_method().state_dict())
    assert empty.warm is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_keeps_fp32_master_weights(precision):
    method, optimizer = _parts(precision=precision)
    x, y = make_batch(batch=6, dtype=torch.float32)
    out = _step(method, optimizer, x, y)
    assert float(out) > 0
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in method.model.parameters())
    assert all(s.dtype == torch.float32 for s in method.warm)


def test_closure_can_be_called_twice_like_a_perturbation_wrapper():
    method, optimizer = _parts("CEP")
    x, y = make_batch(batch=5, dtype=torch.float32)
    closure = method.closure(x, y)
    first = closure()
    grads = [p.grad.clone() for p in method.model.parameters()]
    optimizer.zero_grad(set_to_none=True)
    second = closure()
    assert torch.equal(first.loss, second.loss) and first.correct == second.correct
    for g, p in zip(grads, method.model.parameters()):
        assert torch.equal(g, p.grad)


def test_perturbed_step_with_sam():
    method, optimizer = _parts("CEP")
    x, y = make_batch(batch=5, dtype=torch.float32)
    before = [p.detach().clone() for p in method.model.parameters()]
    sam = SAM(optimizer, 0.05, model=method.model)
    out = _step(method, sam, x, y)
    assert float(out) > 0 and 0 <= out.correct <= 5 and sam.steps == 1
    assert method.warm is not None
    assert any(not torch.equal(b, p) for b, p in zip(before, method.model.parameters()))


def test_state_dict_keeps_the_partial_epoch_statistics():
    (first, optimizer), second = _parts(), _method()
    x, y = make_batch(batch=6, dtype=torch.float32)
    _step(first, optimizer, x, y)
    second.load_state_dict(first.state_dict())
    assert second.epoch_metrics() == first.epoch_metrics()
