"""Through the training loop: an interrupted sam/rwp run resumes to the same metrics, diagnostics included."""

from __future__ import annotations

import pytest

from analoglearn.config import build_config
from analoglearn.robust.methods import Perturbed
from analoglearn.runs import RunDir
from analoglearn.train import fit

TIMINGS = ("epoch_seconds", "eval_seconds")
METHODS = {
    "rwp": {"name": "rwp", "sigma": 0.05, "schedule": "feedback", "mix": 0.5, "diagnostics": True},
    "sam": {"name": "sam", "rho": 0.05, "schedule": "quadratic", "schedule_options": {"per": "epoch"}},
}


def strip(history):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in history]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_interrupted_perturbed_run_resumes_exactly(tiny, tmp_path, monkeypatch, method):
    cfg = build_config(tiny(method=METHODS[method], train={"epochs": 2, "checkpoint_every": 7}))
    fit(cfg, tmp_path / "full", log=lambda s: None)
    original, calls = Perturbed.train_step, []

    def interrupted(self, x, y, progress):
        calls.append(1)
        if len(calls) > 24:
            raise KeyboardInterrupt
        return original(self, x, y, progress)

    monkeypatch.setattr(Perturbed, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "cut", log=lambda s: None)
    monkeypatch.setattr(Perturbed, "train_step", original)
    fit(None, tmp_path / "cut", resume=True, log=lambda s: None)
    full, cut = strip(RunDir(tmp_path / "full").metrics()), strip(RunDir(tmp_path / "cut").metrics())
    assert cut == full and "sharpness" in full[-1]
