"""On-chip learning from the config: ``optim: {name: analog_sgd, device: {...}}`` for every method."""

from __future__ import annotations

import pytest
import torch

from analoglearn.config import build_config
from analoglearn.errors import ConfigError
from analoglearn.runs import RunDir
from analoglearn.train import fit


def cep_config(tiny, **optim) -> dict:
    raw = tiny(data={"batch_size": 32, "train_subset": 192, "test_subset": 64},
               train={"epochs": 2, "checkpoint_every": 2}, optim=optim)
    raw["model"], raw["method"] = {"name": "tiny"}, {"name": "CEP", "free_iterations": 6, "nudged_iterations": 3}
    return raw


def test_an_ideal_device_trains_equal_to_sgd_bit_for_bit(tiny, tmp_path):
    fit(build_config(cep_config(tiny, name="sgd")), tmp_path / "sgd", log=lambda s: None)
    fit(build_config(cep_config(tiny, name="analog_sgd")), tmp_path / "chip", log=lambda s: None)
    a, b = (RunDir(tmp_path / n).load_checkpoint()["model"] for n in ("sgd", "chip"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_noisy_device_run_resumes_exactly(tiny, interrupted_and_resumed):
    from analoglearn.energy.methods import EnergyMethod

    device = {"name": "soft_bounds", "states": 20, "w_min": -0.5, "w_max": 0.5, "asymmetry": 0.2, "c2c": 0.3,
              "dw_min_d2d": 0.1, "rounding": "stochastic"}
    cfg = build_config(cep_config(tiny, name="analog_sgd", device=device))
    full, resumed = interrupted_and_resumed(cfg, EnergyMethod, stop_after=7)
    assert full == resumed and len(full) == 2


def test_coarse_devices_move_weights_only_in_whole_pulses(tiny, tmp_path):
    device = {"name": "constant_step", "states": 10, "w_min": -0.5, "w_max": 0.5}
    fit(build_config(cep_config(tiny, name="analog_sgd", device=device, momentum=0.0, weight_decay=0.0)),
        tmp_path / "chip", log=lambda s: None)
    from analoglearn.config import load_config  # the initial weights, from the same seed
    from analoglearn.train import Seeds, build_model

    cfg = load_config(tmp_path / "chip" / "config.yaml")
    start = build_model(cfg, Seeds.derive(cfg.seed)).state_dict()
    end = RunDir(tmp_path / "chip").load_checkpoint()["model"]
    for key, w in end.items():
        steps = (w - start[key]) / 0.1
        inside = (w.abs() < 0.5 - 1e-6) & (start[key].abs() < 0.5)
        assert torch.allclose(steps[inside], steps[inside].round(), atol=1e-4), key


@pytest.mark.parametrize("device, expected", [
    ({"name": "soft_bounds", "asymmetry": 1.5}, "optim.device.asymmetry"),
    ({"name": "constant_step", "dw_min": 0.0}, "dw_min must be > 0"),
    ({"name": "constant_step", "w_min": 1.0, "w_max": -1.0}, "bounds reversed"),
    ({"name": "soft_bounds", "states": 0}, "optim.device.states must be a finite number > 0"),
    ({"name": "memristor"}, "optim.device.name must be one of ideal, constant_step, soft_bounds"),
    ({"name": "soft_bounds", "c2c": float("nan")}, "optim.device.c2c must be a finite number"),
    ({"name": "ideal", "states": 10}, "infinitely many states"),
])
def test_bad_devices_name_the_key_and_the_domain(tiny, device, expected):
    with pytest.raises(ConfigError, match=expected):
        build_config(cep_config(tiny, name="analog_sgd", device=device))


def test_a_device_needs_analog_sgd(tiny):
    with pytest.raises(ConfigError, match="optim.device and optim.weight_scale belong to analog_sgd"):
        build_config(cep_config(tiny, name="sgd", device={"name": "ideal"}))


def test_per_tensor_scale_gives_every_layer_the_same_resolution(tiny, tmp_path):
    """With weight_scale per_tensor, a layer moves in steps of Δw_min·max|w₀| of its own weights."""
    device = {"name": "constant_step", "states": 10, "w_min": -1.0, "w_max": 1.0}
    raw = cep_config(tiny, name="analog_sgd", device=device, momentum=0.0, weight_decay=0.0,
                     weight_scale="per_tensor")
    fit(build_config(raw), tmp_path / "chip", log=lambda s: None)
    from analoglearn.config import load_config
    from analoglearn.train import Seeds, build_model

    cfg = load_config(tmp_path / "chip" / "config.yaml")
    start = build_model(cfg, Seeds.derive(cfg.seed)).state_dict()
    end = RunDir(tmp_path / "chip").load_checkpoint()["model"]
    moved = 0
    for key, w in end.items():
        if "weight" not in key:
            continue
        scale = start[key].abs().max()
        steps = (w - start[key]) / (0.2 * scale)
        inside = (w.abs() < scale - 1e-6) & (start[key].abs() < scale - 1e-6)
        assert torch.allclose(steps[inside], steps[inside].round(), atol=1e-3), key
        moved += int((steps[inside].round() != 0).sum())
    assert moved > 0
