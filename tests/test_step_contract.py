"""The step contract: every method meets every perturbation through ``optimizer.step(method.closure(x, y))``.

- each method × perturbation pair trains a step, and a checkpoint of that step resumes exactly;
- ``train.accumulate`` gives the full batch's gradient (backprop without BatchNorm; the energy-based
  estimators with each micro-batch warm-started from its slice of the previous free state);
- the TensorBoard sink receives every scalar of ``metrics.jsonl``.
"""

from __future__ import annotations

import io

import pytest
import torch

from analoglearn.config import build_config
from analoglearn.runs import RunDir
from analoglearn.train import Trainer, fit, take_step
from tinyconfig import tiny_config

METHODS = ("sgd", "CL", "PEP", "NEP", "CEP", "PCpL", "NCpL", "CCpL", "TBP", "RBP")
PERTURBATIONS = ({"name": "none"}, {"name": "sam", "rho": 0.05}, {"name": "asam"},
                 {"name": "rwp", "sigma": 0.05, "mix": 0.5, "schedule": "linear"})


def raw(method: str, perturb: dict, **train) -> dict:
    """Two batches of 8 Synthetic images; an MLP for sgd, the tiny Hopfield network for the others."""
    cfg = tiny_config(method={"name": method}, perturb=perturb, train={"epochs": 2, **train},
                      data={"batch_size": 8, "train_subset": 16, "test_subset": 16})
    if method != "sgd":
        cfg["model"] = {"name": "tiny"}
        cfg["method"].update(free_iterations=4, nudged_iterations=2, eval_iterations=4, rbp_steps=3)
    return cfg


def steps(trainer: Trainer, count: int) -> list[float]:
    """``count`` optimiser steps on the first batches of epoch 0, as the training loop takes them."""
    losses = []
    for i, (x, y) in enumerate(trainer.train_loader.epoch(0)):
        if i == count:
            break
        losses.append(float(take_step(trainer.optimizer, trainer.method.closure(x, y))))
        trainer.batch, trainer.step = trainer.batch + 1, trainer.step + 1
    return losses


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("perturb", PERTURBATIONS, ids=lambda p: p["name"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_meets_every_perturbation_and_resumes_exactly(tmp_path, method, perturb):
    cfg = build_config(raw(method, perturb))
    straight = Trainer(cfg, RunDir(tmp_path / "a"), log=lambda line: None)
    losses = steps(straight, 2)
    assert all(torch.isfinite(torch.tensor(losses))) and straight.optimizer.state  # the base optimiser stepped
    first = Trainer(cfg, RunDir(tmp_path / "b"), log=lambda line: None)
    steps(first, 1)
    resumed = Trainer(cfg, RunDir(tmp_path / "c"), log=lambda line: None)
    resumed.load_state(round_trip(first.state()))
    for x, y in resumed.train_loader.epoch(0, start_batch=1):
        assert float(take_step(resumed.optimizer, resumed.method.closure(x, y))) == losses[1]
        break
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    a, b = round_trip(straight.state()), round_trip(resumed.state())
    assert repr(a["optimizer"]) == repr(b["optimizer"]) and repr(a["method"]) == repr(b["method"])


def gradients(trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.method.closure(x, y)()
    return [p.grad.clone() for p in trainer.params]


def test_accumulated_backprop_equals_the_full_batch(tmp_path):
    """Three micro-batches of 11, 11 and 10 examples: Σ (b_i/B)·∇L_i = ∇L of the 32."""
    full = Trainer(build_config(tiny_config()), RunDir(tmp_path / "a"), log=lambda line: None)
    parts = Trainer(build_config(tiny_config(train={"accumulate": 3})), RunDir(tmp_path / "b"), log=lambda line: None)
    x, y = next(iter(full.train_loader.epoch(0)))
    for g, h in zip(gradients(full, x, y), gradients(parts, x, y)):
        torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-7)
    assert float(parts.method.closure(x, y)()) == pytest.approx(float(full.method.closure(x, y)()), rel=1e-6)


@pytest.mark.parametrize("method", ["CEP", "PCpL", "TBP", "RBP"])
def test_accumulated_estimators_equal_the_full_batch_from_sliced_warm_starts(tmp_path, method):
    """In float64 (an EP estimate is a difference of two ∂E/∂θ about 10⁴ times larger, so fp32 rounding moves it
    by ~1%): after a first step, the second batch's gradient from two warm-started halves equals the whole's."""
    trainers = []
    for accumulate in (1, 2):
        cfg = raw(method, {"name": "none"}, accumulate=accumulate)
        cfg["method"]["precision"] = "fp64"
        trainer = Trainer(build_config(cfg), RunDir(tmp_path / str(accumulate)), log=lambda line: None)
        trainer.model.double()
        trainers.append(trainer)
    batches = [(x.double(), y) for x, y in trainers[0].train_loader.epoch(0)]
    for trainer in trainers:
        take_step(trainer.optimizer, trainer.method.closure(*batches[0]))
    whole, halves = trainers
    assert [s.shape[0] for s in halves.method.warm] == [8] * len(halves.method.warm)  # the halves' states, joined
    for g, h in zip(gradients(whole, *batches[1]), gradients(halves, *batches[1])):
        torch.testing.assert_close(h, g, rtol=1e-9, atol=1e-12)


def test_tensorboard_receives_every_logged_scalar(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = build_config(tiny_config(train={"log": ["jsonl", "tensorboard"]}, perturb={"name": "sam"}))
    fit(cfg, tmp_path / "run", log=lambda line: None)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/error", "test/error", "lr", "diagnostics/rho", "diagnostics/sharpness"} <= tags
    history = RunDir(tmp_path / "run").metrics()
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["train_loss"] for r in history])
    assert [e.step for e in events.Scalars("lr")] == [r["step"] for r in history]
