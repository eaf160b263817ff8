"""Reports: grouping over seeds, the papers' table layouts, and plots, on hand-made run directories."""

from __future__ import annotations

import csv

import pytest
import yaml

from analoglearn.config import build_config
from analoglearn.errors import AnalogLearnError
from analoglearn.report import find_runs, report, varying_keys
from analoglearn.runs import RunDir


def fake_run(root, name, overrides, test_error, noise=None, clean=None):
    raw = {"data": {"name": "Synthetic"}, "model": {"name": "mlp"}, "method": {"name": "sgd"}}
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section] = {"name": value} if key == "name" and section in ("model", "method", "perturb") else \
            {**raw.get(section, {}), key: value}
    cfg = build_config(raw)
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    (run.path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    run.write_metrics([{"epoch": 1, "test_error": test_error + 5}, {"epoch": 2, "test_error": test_error}])
    run.write_summary({"status": "finished", "test_error": test_error, "best_test_error": test_error,
                       "test_accuracy": 100 - test_error, "train_seconds": 1.0, "noise": noise or [],
                       **({"noise_clean_accuracy": clean} if clean is not None else {})})


def point(strength, trials):
    return {"noise": "additive_gaussian", "strength": strength, "per_trial": trials}


def read(path):
    return list(csv.reader(path.open()))


def test_tables_average_over_seeds_and_pivot_datasets(tmp_path):
    # two perturbations × two datasets × two seeds
    values = {("none", "Synthetic"): (10.0, 12.0), ("sam", "Synthetic"): (8.0, 9.0),
              ("none", "MNIST"): (1.0, 1.5), ("sam", "MNIST"): (0.8, 1.0)}
    for (method, dataset), errors in values.items():
        for seed, error in enumerate(errors):
            raw = {"perturb.name": method, "data.name": dataset}
            fake_run(tmp_path, f"{method}-{dataset}-{seed}", raw, error)
            cfg_path = tmp_path / f"{method}-{dataset}-{seed}" / "config.yaml"
            data = yaml.safe_load(cfg_path.read_text())
            data["seed"] = seed
            cfg_path.write_text(yaml.safe_dump(data))
    runs = find_runs([tmp_path])
    assert len(runs) == 8
    assert varying_keys(runs) == ["data.name", "perturb.name"]  # sam's options ride along with its name
    report([tmp_path], tmp_path / "out")
    by_dataset = read(tmp_path / "out" / "error_by_dataset.csv")
    assert by_dataset[0] == ["perturb.name", "MNIST", "Synthetic"]
    rows = {r[0]: r[1:] for r in by_dataset[1:]}
    assert rows["none"] == ["1.25 ± 0.35", "11.00 ± 1.41"]
    assert rows["sam"] == ["0.90 ± 0.14", "8.50 ± 0.71"]
    # the per-seed breakdown: one row per run, the same numbers the means are made of
    per_run = read(tmp_path / "out" / "runs.csv")
    assert per_run[0] == ["run", "data.name", "perturb.name", "seed", "test error", "best test error"]
    assert [r[1:] for r in per_run[1:] if r[1:3] == ["MNIST", "none"]] == [["MNIST", "none", "0", "1.00", "1.00"],
                                                                          ["MNIST", "none", "1", "1.50", "1.50"]]
    assert len(per_run) == 9 and "runs.csv" in (tmp_path / "out" / "report.md").read_text()


def test_noise_table_has_sigma_columns_and_plots_are_written(tmp_path):
    fake_run(tmp_path, "a", {"perturb.name": "none"}, 5.0, [point(0.05, [90.0, 92.0]), point(0.1, [70.0, 74.0])],
             clean=95.5)
    fake_run(tmp_path, "b", {"perturb.name": "sam"}, 6.0, [point(0.05, [91.0, 91.0]), point(0.1, [80.0, 82.0])])
    written = report([tmp_path], tmp_path / "out")
    table = read(tmp_path / "out" / "noise_additive_gaussian.csv")
    assert table[0] == ["perturb.name", "clean", "0.05", "0.1"]
    rows = {r[0]: r[1:] for r in table[1:]}
    assert rows["none"] == ["95.50", "91.00 ± 1.41", "72.00 ± 2.83"]
    assert rows["sam"] == ["", "91.00 ± 0.00", "81.00 ± 1.41"]  # no clean figure on the noise subset
    by_run = read(tmp_path / "out" / "noise_additive_gaussian_by_run.csv")
    assert by_run[0] == ["run", "perturb.name", "seed", "0.05", "0.1"]
    assert {r[0]: r[3:] for r in by_run[1:]} == {"a": ["91.00", "72.00"], "b": ["91.00", "81.00"]}
    assert written["noise_additive_gaussian.png"].stat().st_size > 1000
    assert "noise_additive_gaussian.png" in (tmp_path / "out" / "report.md").read_text()


def test_unfinished_runs_are_left_out_and_nothing_found_is_an_error(tmp_path):
    fake_run(tmp_path, "a", {}, 5.0)
    RunDir(tmp_path / "a").write_summary({"status": "failed", "error": "boom"})
    with pytest.raises(AnalogLearnError, match="no finished runs"):
        report([tmp_path], tmp_path / "out")
    with pytest.raises(AnalogLearnError, match="does not exist"):
        report([tmp_path / "missing"], tmp_path / "out")


def test_noise_spanning_decades_is_plotted_on_a_log_axis(tmp_path, monkeypatch):
    """PCM inference times from 1 hour to 1 year: the strength axis becomes logarithmic."""
    import analoglearn.report as rep

    def pcm(strength, trials):
        return {"noise": "pcm", "strength": strength, "per_trial": trials}

    fake_run(tmp_path, "a", {"method.name": "sgd"}, 5.0, [pcm(3600, [90.0]), pcm(3.15e7, [60.0])], clean=95.0)
    scales = []
    real = rep._pyplot

    def spy():
        plt = real()
        original = plt.subplots

        def subplots(*args, **kwargs):
            fig, ax = original(*args, **kwargs)
            monkeypatch.setattr(ax, "set_xscale", lambda *a, **k: scales.append((a, k)), raising=False)
            return fig, ax

        monkeypatch.setattr(plt, "subplots", subplots)
        return plt

    monkeypatch.setattr(rep, "_pyplot", spy)
    report([tmp_path], tmp_path / "out")
    assert scales == [(("symlog",), {"linthresh": 3600})]
    assert read(tmp_path / "out" / "noise_pcm.csv")[1] == ["95.00", "90.00 ± 0.00", "60.00 ± 0.00"]
