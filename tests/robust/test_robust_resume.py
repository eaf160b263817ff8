"""Through the training loop: an interrupted sam/rwp run resumes to the same metrics, diagnostics included."""

from __future__ import annotations

import pytest

from analoglearn.config import build_config
from analoglearn.robust.methods import Backprop

PERTURB = {
    "rwp": {"name": "rwp", "sigma": 0.05, "schedule": "feedback", "mix": 0.5, "diagnostics": True},
    "sam": {"name": "sam", "rho": 0.05, "schedule": "quadratic", "schedule_options": {"per": "epoch"}},
}


@pytest.mark.parametrize("perturb", sorted(PERTURB))
def test_interrupted_perturbed_run_resumes_exactly(tiny, interrupted_and_resumed, perturb):
    train = {"epochs": 2, "checkpoint_every": 7}
    cfg = build_config(tiny(method={"name": "sgd"}, perturb=PERTURB[perturb], train=train))
    assert cfg.perturb.name == perturb and cfg.method.name == "sgd"
    full, cut = interrupted_and_resumed(cfg, Backprop, 24)
    assert cut == full and "sharpness" in full[-1]
    assert ("rho" if perturb == "sam" else "sigma") in full[-1]
