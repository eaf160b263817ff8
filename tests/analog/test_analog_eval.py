"""The tile model in the evaluation pipeline: ``eval.analog``, ``evaluate --analog``, reports."""

from __future__ import annotations

import json

import pytest

from analoglearn.cli import main
from analoglearn.config import build_config
from analoglearn.errors import ConfigError
from analoglearn.report import report
from analoglearn.runs import RunDir
from analoglearn.train import fit

CONVERTERS = {"in_range": "calibrated", "dac_bits": 8, "adc_bits": 8, "out_bound": 10}


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """A LeNet trained one epoch on Synthetic, evaluated at the end through two tile sweeps."""
    from tinyconfig import tiny_config

    raw = tiny_config(train={"epochs": 1}, eval={"trials": 3, "analog": [
        {"tile": CONVERTERS, "sweep": "out_noise", "values": [0.0, 0.1]},
        {"tile": {}, "sweep": "out_noise", "values": [0.0]},  # everything off: the digital network
    ]})
    raw["model"] = {"name": "lenet"}
    run = tmp_path_factory.mktemp("analog") / "run"
    fit(build_config(raw), run, log=lambda s: None)
    return run


def test_end_of_training_evaluation_writes_tables_and_the_summary(lenet_run):
    summary = RunDir(lenet_run).summary()
    result = json.loads((lenet_run / "analog.json").read_text())
    assert (lenet_run / "analog.csv").is_file()
    labels = {p["noise"] for p in summary["analog"]}
    assert labels == {"analog[in_range=calibrated;dac_bits=8;out_bound=10.0;adc_bits=8](out_noise)",
                      "analog(out_noise)"}
    ideal = next(p for p in result["points"] if p["noise"] == "analog(out_noise)")
    assert ideal["deterministic"] and ideal["per_trial"] == [result["clean"]["top1"]] * 3  # bit-equal to digital
    noisy = next(p for p in result["points"] if p["strength"] == 0.1)
    assert len(set(noisy["seeds"])) == 3 and not noisy["deterministic"]


def test_trials_replay_from_their_seeds_and_pair_across_calls(lenet_run, capsys, tmp_path):
    argv = ["evaluate", str(lenet_run), "--analog", "{tile: {in_range: static, r_in: 3, out_noise: 0.05}, "
            "sweep: out_noise, values: [0.05]}", "--trials", "3", "--subset", "100"]
    outputs = []
    for name in ("a.json", "b.json"):
        assert main([*argv, "--json", str(tmp_path / name)]) == 0
        outputs.append(json.loads((tmp_path / name).read_text())["points"][0])
    capsys.readouterr()
    assert outputs[0]["per_trial"] == outputs[1]["per_trial"] and outputs[0]["seeds"] == outputs[1]["seeds"]


def test_evaluate_analog_writes_beside_the_run_and_the_report_tables_it(lenet_run, tmp_path, capsys):
    weight_noise = ("{tile: {in_range: static, r_in: 3, out_bound: 10, out_noise: 0.02}, sweep: adc_bits, "
                    "values: [4, 8], noise: {name: additive_gaussian, strength: 0.05}}")
    assert main(["evaluate", str(lenet_run), "--analog", weight_noise, "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "(adc_bits)+additive_gaussian(0.05)" in out
    (written,) = lenet_run.glob("eval-analog*.json")
    assert json.loads(written.read_text())["points"][1]["strength"] == 8
    tables = report([lenet_run], tmp_path / "report")
    assert any("adc_bits" in name for name in tables)


@pytest.mark.parametrize("entry, expected", [
    ({"tile": {"dac_bits": 30, "in_range": "static"}}, "eval.analog[0].tile.dac_bits"),
    ({"tile": {"in_range": "learned"}}, "eval.analog[0].tile.in_range: learned ranges"),
    ({"sweep": "colour"}, "eval.analog[0].sweep must be one of"),
    ({"tile": {"out_noise": 0.1}}, "relative to y_ref"),
    ({"tile": {"in_range": "static"}, "sweep": "adc_bits", "values": [8]}, "eval.analog[0].values: 8 for adc_bits"),
    ({"tile": {"r_in": float("nan")}}, "eval.analog[0].tile.r_in must be a finite number"),
    ({"noise": {"name": "pcm", "strength": -1}}, "eval.analog[0].noise"),
    ({"noise": {"name": "nope"}}, "eval.analog[0].noise.name: unknown noise model"),
])
def test_bad_entries_name_the_key(entry, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        build_config({"eval": {"analog": [entry]}})


def test_hopfield_networks_pass_validation_with_eval_analog_and_an_analog_section():
    # Hopfield networks read through the tile inside their relaxation (test_analog_relaxation.py)
    from analoglearn.build import validate

    validate(build_config({"data": {"name": "Synthetic"}, "model": {"name": "tiny"}, "method": {"name": "CEP"},
                           "eval": {"analog": [{"tile": {"in_range": "static"}}]},
                           "analog": {"tile": {"in_range": "calibrated", "dac_bits": 8}}}))


def test_analog_with_noise_options_is_refused(lenet_run, capsys):
    assert main(["evaluate", str(lenet_run), "--analog", "{}", "--noise", "pcm"]) == 2
    assert "give no --noise" in capsys.readouterr().err


HAT_TILE = {"in_range": "calibrated", "dac_bits": 6, "adc_bits": 6, "out_bound": 10, "out_noise": 0.05,
            "tile_rows": 64}


def hat_config(tiny, perturb: dict | None = None) -> dict:
    raw = tiny(data={"batch_size": 32, "train_subset": 320, "test_subset": 100},
               train={"epochs": 2, "checkpoint_every": 3}, analog={"tile": HAT_TILE, "calibration_images": 64})
    raw["model"] = {"name": "lenet"}
    raw["perturb"] = perturb or {"name": "none"}
    return raw


@pytest.mark.parametrize("perturb", [{"name": "none"}, {"name": "rwp", "sigma": 0.05}])
def test_hardware_aware_training_resumes_exactly(tiny, interrupted_and_resumed, perturb):
    from analoglearn.robust.methods import Backprop

    full, resumed = interrupted_and_resumed(build_config(hat_config(tiny, perturb)), Backprop, stop_after=8)
    assert full == resumed and len(full) == 2


def test_hardware_aware_training_reads_through_the_tile(tiny, tmp_path):
    import torch

    digital = hat_config(tiny)
    digital["analog"] = {}
    fit(build_config(hat_config(tiny)), tmp_path / "hat", log=lambda s: None)
    fit(build_config(digital), tmp_path / "digital", log=lambda s: None)
    hat, plain = (RunDir(tmp_path / name).load_checkpoint() for name in ("hat", "digital"))
    assert "analog" not in plain
    assert any(not torch.equal(hat["model"][k], plain["model"][k]) for k in plain["model"])  # other gradients
    ranges = hat["analog"]["ranges"]
    assert len(ranges) == 5 and all(float(r) > 0 for r in ranges.values())  # one per conv/linear layer of LeNet


def test_hardware_aware_training_refuses_learned_ranges(capsys, tmp_path):
    for overrides, expected in ((["analog.tile={in_range: learned}"], "analog.tile.in_range: learned"),
                                (["model.name=tiny", "method.name=CEP", "analog.tile={in_range: learned}"],
                                 "analog.tile.in_range: learned")):
        assert main(["train", "--run-dir", str(tmp_path / "r"), "data.name=Synthetic", *overrides]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_weight_clip_bounds_every_layer_after_each_step(tiny, tmp_path):
    import torch

    raw = hat_config(tiny)
    raw["analog"]["weight_clip"] = 1.5
    fit(build_config(raw), tmp_path / "clipped", log=lambda s: None)
    model = RunDir(tmp_path / "clipped").load_checkpoint()["model"]
    weights = [key for key in model if key.endswith(".weight")]
    assert len(weights) == 5
    for key in weights:  # clipped to ±1.5·std before the clip; the clip itself lowers the std a little
        w = model[key]
        assert float(w.abs().max()) <= 1.5 * float(w.std()) * 1.1, key
    assert torch.isfinite(torch.cat([v.flatten() for v in model.values()])).all()
