"""The shipped configs of configs/ebl/ load and name registered energy-based pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from analoglearn import config
from analoglearn.plugins import load_builtins

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "ebl").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    load_builtins()
    cfg = config.load_config(path)
    assert cfg.model.name in ("dchn32", "dchn_cpu")
    assert cfg.method.name == "CEP"
    if cfg.model.name == "dchn32" and cfg.data.name in ("MNIST", "FashionMNIST"):
        assert cfg.data.pad_to == 32


def test_all_configs_present():
    names = {p.stem for p in CONFIGS}
    expected = {"mnist", "fashionmnist", "svhn", "cifar10", "cifar100", "cifar10-sota", "cifar100-sota"}
    assert names >= expected | {"mnist-cpu"}
