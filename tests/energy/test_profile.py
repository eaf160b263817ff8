"""Relaxation profiles written at the end of an energy-based run."""

from __future__ import annotations

import itertools
import json

import torch

from analoglearn.config import build_config
from analoglearn.energy.profile import relaxation_profile
from analoglearn.registry import MODELS
from analoglearn.train import fit


def test_asynchronous_energy_never_increases_in_the_profile():
    net = MODELS.create("tiny", None, in_shape=(1, 8, 8), num_classes=4, generator=torch.Generator().manual_seed(0))
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    profile = relaxation_profile(net, x, 25)
    energy = profile["asynchronous"]["energy"]
    assert len(energy) == 25 and len(profile["synchronous"]["residual"]) == 25
    assert all(b <= a + 1e-5 for a, b in itertools.pairwise(energy))
    assert profile["asynchronous"]["residual"][-1] < profile["synchronous"]["residual"][-1]


def test_energy_runs_write_relaxation_json(tmp_path):
    cfg = build_config({
        "data": {"name": "Synthetic", "batch_size": 50, "train_subset": 100, "test_subset": 50, "augment": False},
        "model": {"name": "tiny"},
        "method": {"name": "CEP", "free_iterations": 4, "nudged_iterations": 2, "eval_iterations": 8},
        "train": {"epochs": 1, "threads": 1},
    })
    fit(cfg, tmp_path / "run", log=lambda s: None)
    profile = json.loads((tmp_path / "run" / "relaxation.json").read_text())
    assert set(profile) == {"asynchronous", "synchronous"} and len(profile["asynchronous"]["energy"]) == 8
