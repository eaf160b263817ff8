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


DEEP = sorted((Path(__file__).resolve().parents[2] / "configs" / "deep-ebl").glob("*.yaml"))


@pytest.mark.parametrize("path", DEEP, ids=[p.stem for p in DEEP])
def test_deep_configs_load_and_build_their_networks_and_methods(path):
    import torch

    from analoglearn.data.specs import get_spec
    from analoglearn.registry import METHODS, MODELS

    load_builtins()
    cfg = config.load_config(path)
    spec = get_spec(cfg.data.name)
    net = MODELS.create(cfg.model.name, cfg.model.options, in_shape=spec.shape, num_classes=spec.num_classes,
                        generator=torch.Generator().manual_seed(0))
    METHODS.create(cfg.method.name, net, cfg.method.options)
    assert cfg.optim.nesterov and cfg.optim.clip_grad_norm == 1.0
    if cfg.model.name == "hopfield_resnet13":
        assert net.ranges[0] == (0.0, 6.0) and len(net.interactions) == 13


def test_deep_recipes_expand(tmp_path):
    from analoglearn.sweep import expand, load_grid

    load_builtins()
    root = Path(__file__).resolve().parents[2] / "recipes" / "deep-ebl"
    counts = {name: len(expand(*load_grid(root / f"{name}.yaml"), tmp_path)) for name in
              ("resnet13-cifar", "vgg-cifar10", "imagenet32", "cpu-fashionmnist", "output-update", "cpu-iterations")}
    assert counts == {"resnet13-cifar": 6, "vgg-cifar10": 3, "imagenet32": 1, "cpu-fashionmnist": 12,
                      "output-update": 4, "cpu-iterations": 1}
