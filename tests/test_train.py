"""The training loop: learning, schedules, checkpoints, resume, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from analoglearn import schedule
from analoglearn.config import build_config
from analoglearn.errors import CheckpointError, TrainingDiverged
from analoglearn.runs import RunDir
from analoglearn.train import Seeds, fit


def test_training_learns_and_writes_the_run(tiny, tmp_path):
    cfg = build_config(tiny(train={"epochs": 3}))
    summary = fit(cfg, tmp_path / "run", log=lambda s: None)
    run = RunDir(tmp_path / "run")
    history = run.metrics()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert summary["status"] == "finished" and summary["test_error"] < 30.0
    for name in ("config.yaml", "env.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (run.path / name).is_file(), name
    state = torch.load(run.path / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["config"] == cfg.to_dict()
    assert build_config(run.raw_config()).to_dict() == cfg.to_dict()


def test_same_seed_same_run_different_seed_different_run(tiny, tmp_path, strip_timings):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        fit(build_config(tiny(seed=seed)), tmp_path / name, log=lambda s: None)
        runs[name] = strip_timings(RunDir(tmp_path / name).metrics())
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_checkpointing_every_n_steps_does_not_change_the_run(tiny, tmp_path, strip_timings):
    fit(build_config(tiny(train={"epochs": 3})), tmp_path / "full", log=lambda s: None)
    fit(build_config(tiny(train={"epochs": 3, "checkpoint_every": 7})), tmp_path / "steps", log=lambda s: None)
    assert strip_timings(RunDir(tmp_path / "steps").metrics()) == strip_timings(RunDir(tmp_path / "full").metrics())


@pytest.mark.parametrize("every, stop_at", [("epoch", 30), (7, 30), (7, 21)])
def test_interrupted_run_resumes_exactly(tiny, tmp_path, interrupted_and_resumed, every, stop_at):
    from analoglearn.robust.methods import Backprop

    cfg = build_config(tiny(train={"epochs": 3, "checkpoint_every": every}))
    full, resumed = interrupted_and_resumed(cfg, Backprop, stop_at)
    assert resumed == full and len(full) == 3
    assert RunDir(tmp_path / "cut").summary()["test_error"] == RunDir(tmp_path / "full").summary()["test_error"]


def test_refuses_to_overwrite_an_existing_run(tiny, tmp_path):
    cfg = build_config(tiny(train={"epochs": 1}))
    fit(cfg, tmp_path / "run", log=lambda s: None)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a run.*--resume"):
        fit(cfg, tmp_path / "run", log=lambda s: None)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_divergence_stops_with_a_message_and_keeps_the_checkpoint(tiny, tmp_path):
    cfg = build_config(tiny(optim={"lr": 1e6, "momentum": 0.0}, train={"epochs": 3}))
    with pytest.raises(TrainingDiverged, match="lower optim.lr"):
        fit(cfg, tmp_path / "run", log=lambda s: None)
    assert RunDir(tmp_path / "run").summary()["status"] == "diverged"


def test_corrupt_checkpoint_is_reported(tiny, tmp_path):
    cfg = build_config(tiny(train={"epochs": 1}))
    fit(cfg, tmp_path / "run", log=lambda s: None)
    (tmp_path / "run" / "summary.json").unlink()  # an interrupted run, which a resume loads
    (tmp_path / "run" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged or not a torch checkpoint"):
        fit(None, tmp_path / "run", resume=True, log=lambda s: None)


def test_pickled_objects_are_refused(tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": object()}))
    with pytest.raises(CheckpointError):
        RunDir(tmp_path).load_checkpoint("evil.pt")


def test_per_layer_learning_rates_need_layer_groups(tiny, tmp_path):
    from analoglearn.errors import ConfigError

    cfg = build_config(tiny(optim={"lr": [0.1, 0.2]}))
    with pytest.raises(ConfigError, match="layer groups"):
        fit(cfg, tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run").exists()  # nothing written for an invalid run


def test_cosine_schedule_values():
    lr = schedule.learning_rate("cosine", 0.1, 0.01, 10, 1)
    assert lr(0) == pytest.approx(0.1)
    assert lr(5) == pytest.approx(0.055)
    assert lr(10) == pytest.approx(0.01)
    assert math.isclose(lr(3), 0.01 + 0.09 * (1 + math.cos(math.pi * 0.3)) / 2)


def test_seeds_are_distinct_and_stable():
    a, b = Seeds.derive(0), Seeds.derive(0)
    assert a == b and len({a.init, a.data, a.train_noise}) == 3
    assert Seeds.derive(1) != a


def test_evaluating_the_best_checkpoint_leaves_the_summary_of_the_whole_run(tiny, tmp_path, monkeypatch):
    """eval.checkpoint best evaluates best.pt in its own model: the summary still counts every epoch."""
    original = RunDir.save_checkpoint

    def best_is_epoch_one(self, state, name="last.pt"):  # best.pt stays the first epoch's
        if name == "best.pt" and state["epoch"] > 1:
            return self.path / name
        return original(self, state, name)

    monkeypatch.setattr(RunDir, "save_checkpoint", best_is_epoch_one)
    raw = tiny(train={"epochs": 3}, eval={"noise": [{"name": "additive_gaussian", "strengths": [0.1]}],
                                          "checkpoint": "best", "trials": 1})
    summary = fit(build_config(raw), tmp_path / "run", log=lambda s: None)
    history = RunDir(tmp_path / "run").metrics()
    assert summary["epochs"] == 3 and summary["steps"] == history[-1]["step"]
    assert summary["test_error"] == history[-1]["test_error"]
    assert RunDir(tmp_path / "run").summary() == summary
    assert RunDir(tmp_path / "run").load_checkpoint("best.pt")["epoch"] == 1
