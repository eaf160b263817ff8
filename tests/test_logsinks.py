"""Logging sinks (``train.log``): validation, TensorBoard event files read back, resume, skipped values."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import analoglearn
from analoglearn import logsinks
from analoglearn.errors import ConfigError
from analoglearn.logsinks import Sinks, check, tag


def events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard shows them."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_check_names() -> None:
    assert check(["jsonl"]) == ["jsonl"]
    assert check(["JSONL", "tensorboard"]) == ["jsonl", "tensorboard"]
    with pytest.raises(ConfigError, match=r"train\.log: unknown sink 'tensorbord'\. Did you mean 'tensorboard'\?"
                                          r".*jsonl, tensorboard"):
        check(["jsonl", "tensorbord"])
    with pytest.raises(ConfigError, match=r"train\.log: sink 'jsonl' listed twice; valid: jsonl, tensorboard"):
        check(["jsonl", "JSONL"])
    for bad in ([], "jsonl", None):
        with pytest.raises(ConfigError, match=r"train\.log: expected a non-empty list.*valid: jsonl, tensorboard"):
            check(bad)
    assert [name for name, _ in logsinks.SINKS.describe()] == ["jsonl", "tensorboard"]


def test_tags() -> None:
    assert [tag(k) for k in ("train_loss", "test_top5_error", "lr", "epoch", "eval_seconds", "saturation_low/s1")] \
        == ["train/loss", "test/top5_error", "lr", "epoch", "time/eval", "diagnostics/saturation_low/s1"]
    assert tag("test_error", prefix="noise/") == "noise/test_error"


def record(step: int) -> dict[str, Any]:
    return {"epoch": step // 10, "step": step, "lr": 0.1, "train_loss": step / 100, "test_error": 50.0 - step,
            "energy": torch.tensor(-1.5 * step), "free_iterations": 20}


def test_tensorboard_three_steps(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    with Sinks(["jsonl", "tensorboard"], tmp_path) as sinks:
        for step in (10, 20, 30):
            sinks.scalars(step, record(step))
    got = events(tmp_path)
    assert set(got) == {"epoch", "lr", "train/loss", "test/error", "diagnostics/energy", "diagnostics/free_iterations"}
    assert got["test/error"] == [(10, 40.0), (20, 30.0), (30, 20.0)]
    assert got["diagnostics/energy"] == [(10, -15.0), (20, -30.0), (30, -45.0)]
    assert [s for s, _ in got["lr"]] == [10, 20, 30] and got["lr"][0][1] == pytest.approx(0.1)


def test_resume_purges_points_after_the_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    with Sinks(["tensorboard"], tmp_path) as sinks:  # epochs at 10, 20, 30; killed before the checkpoint at 30
        for step in (10, 20, 30):
            sinks.scalars(step, {"test_error": float(step)})
    with Sinks(["tensorboard"], tmp_path, resume_step=20) as sinks:  # resumed from step 20: epoch 30 again
        for step in (30, 40):
            sinks.scalars(step, {"test_error": step + 0.5})
    assert events(tmp_path)["test/error"] == [(10, 10.0), (20, 20.0), (30, 30.5), (40, 40.5)]


def test_skipped_values(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    values = {"a": float("nan"), "b": float("inf"), "c": -float("inf"), "d": None, "e": "x", "f": [1.0],
              "g": True, "h": {"x": 1.0}, "i": torch.ones(2), "ok": 1}
    with Sinks(["tensorboard"], tmp_path) as sinks:
        sinks.scalars(1, values)
    assert events(tmp_path) == {"diagnostics/ok": [(1, 1.0)]}


def test_jsonl_only_writes_nothing(tmp_path: Path) -> None:
    with Sinks(["jsonl"], tmp_path) as sinks:
        sinks.scalars(1, {"test_error": 1.0})
    sinks.close()  # idempotent
    assert list(tmp_path.iterdir()) == []


def test_without_tensorboard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [m for m in sys.modules if m.startswith(("tensorboard", "torch.utils.tensorboard"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.delitem(sys.modules, "analoglearn.logsinks")
    monkeypatch.setattr(analoglearn, "logsinks", logsinks)  # the re-import rebinds it; restored after
    fresh = importlib.import_module("analoglearn.logsinks")
    assert fresh.check(["jsonl"]) == ["jsonl"]
    fresh.Sinks(["jsonl"], tmp_path).close()
    with pytest.raises(ConfigError, match=r"train\.log: the 'tensorboard' sink needs the tensorboard package .*"
                                          r"install it with: pip install 'analoglearn\[tensorboard\]'"):
        fresh.check(["jsonl", "tensorboard"])
