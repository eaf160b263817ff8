"""The command line: exit codes and messages for users, never a traceback."""

from __future__ import annotations

import json

import pytest
import yaml

from analoglearn.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_a_run_and_says_where(tiny, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny()))
    code, out, err = run(capsys, "train", "--config", str(config), "--out", str(tmp_path / "runs"),
                         "train.epochs=1")
    assert code == 0, err
    assert "results:" in out and "test accuracy" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("synthetic-mlp-sgd-s0-")
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "data.name=NOT_A_DATASET"], "Valid datasets"),
        (["train", "train.epochs=-1"], "epochs must be > 0"),
        (["train", "--config", "/nonexistent.yaml"], "not found"),
        (["train", "--resume", "/nonexistent-run"], "not a run directory"),
        (["data", "fetch", "NOT_A_DATASET"], "Valid datasets: MNIST, FashionMNIST"),
        (["train", "data.name=Synthetic", "model.name=tiny", "method.name=sgd"], "needs a feed-forward model"),
        (["train", "data.name=Synthetic", "model.name=tiny", "method.name=rwp"], "and add a perturb section"),
            (["train", "data.name=Synthetic", "perturb.name=rwp", "perturb.sigma=-1"], "perturb.sigma must be ≥ 0"),
        (["train", "data.name=Synthetic", "model.name=lenet", "method.name=CEP"], "energy-based networks only"),
        (["train", "data.name=Synthetic", "model.name=dchn32", "method.name=CEP"], "data.pad_to: 32"),
        (["train", "data.name=Synthetic", "model.name=tiny", "method.name=CEP", "method.beta=-1"], "beta must be > 0"),
        (["train", "data.root=/nonexistent/analoglearn"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code != 0


def test_list_shows_registered_names(capsys):
    code, out, _ = run(capsys, "list", "models")
    assert code == 0 and "lenet" in out and "mlp" in out
    code, out, _ = run(capsys, "list", "methods")
    assert code == 0 and "sgd" in out


def test_evaluate_under_noise_writes_json_and_csv(tiny, tmp_path, capsys):
    from analoglearn.config import build_config
    from analoglearn.train import fit

    fit(build_config(tiny()), tmp_path / "run", log=lambda s: None)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    code, out, err = run(capsys, "evaluate", str(tmp_path / "run"), "--strengths", "0,0.05,0.5", "--trials", "4",
                         "--subset", "100")
    assert code == 0, err
    assert "additive_gaussian" in out and "95% CI" in out
    result = json.loads((tmp_path / "run" / "eval-additive_gaussian-last-t4.json").read_text())
    points = result["points"]
    assert [p["strength"] for p in points] == [0.0, 0.05, 0.5]
    assert points[0]["std"] == 0.0 and points[0]["mean"] == result["clean"]["top1"]  # σ = 0 is the clean model
    assert points[2]["mean"] < points[0]["mean"]  # strong noise hurts
    assert len(points[1]["per_trial"]) == 4
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name in before}
    assert after == before  # evaluation leaves the run (and its checkpoints) untouched

    # a composition (quantise, then sweep Gaussian noise) and a single trial (no interval)
    code, out, err = run(capsys, "evaluate", str(tmp_path / "run"), "--noise", "compose", "--option",
                         "parts=[{name: quantize, levels: 16}, {name: additive_gaussian}]", "--option", "swept=1",
                         "--strengths", "0,0.1", "--trials", "1", "--subset", "100")
    assert code == 0, err
    assert "quantize(16)+additive_gaussian" in out
    stem = tmp_path / "run" / "eval-quantize_16_+additive_gaussian-last-t1"
    composed = json.loads(stem.with_suffix(".json").read_text())
    assert composed["points"][0]["ci95"] is None and stem.with_suffix(".csv").is_file()
    code, out, err = run(capsys, "evaluate", str(tmp_path / "run"), "--noise", "compose", "--option", "swept=1")
    assert code == 2 and "non-empty 'parts'" in err


def test_noise_evaluation_at_the_end_of_training_is_paired_across_runs(tiny, tmp_path):
    from analoglearn.config import build_config
    from analoglearn.runs import RunDir
    from analoglearn.train import fit

    noise = {"noise": [{"name": "additive_gaussian", "strengths": [0.1]}], "trials": 3}
    for name, seed in (("a", 0), ("b", 1)):
        fit(build_config(tiny(seed=seed, eval=noise)), tmp_path / name, log=lambda s: None)
    a = RunDir(tmp_path / "a").summary()
    assert a["noise"][0]["trials"] == 3 and (tmp_path / "a" / "noise.csv").is_file()
    seeds = [json.loads((tmp_path / n / "noise.json").read_text())["points"][0]["seeds"] for n in ("a", "b")]
    assert seeds[0] == seeds[1]  # the same trial draws for every run: paired comparisons


def test_diagnose_gradients_cep_beats_pep_and_writes_json(tmp_path, capsys):
    path = tmp_path / "grads.json"
    code, out, err = run(capsys, "diagnose", "gradients", "--preset", "tiny", "--beta", "0.05",
                         "--algorithms", "CEP,PEP", "--json", str(path))
    assert code == 0, err
    result = json.loads(path.read_text())
    assert set(result) == {"CEP", "PEP"}
    assert result["CEP"]["cosine"] > 0.99
    assert result["CEP"]["relative_error"] < result["PEP"]["relative_error"]
    assert "CEP" in out


@pytest.mark.parametrize("argv", [["--preset", "nope"], ["--beta", "0"], ["--algorithms", "CEP,XX"]])
def test_diagnose_bad_input(capsys, argv):
    code, _, err = run(capsys, "diagnose", "gradients", *argv)
    assert code == 2 and "Traceback" not in err


def test_evaluate_a_sweep_directory_and_report_the_later_evaluations(tiny, tmp_path, capsys):
    """``evaluate SWEEP_DIR`` evaluates every finished run; ``report`` then tables those results
    beside the end-of-training ones, and a later evaluation of the same point replaces the earlier."""
    import csv

    from analoglearn.config import build_config
    from analoglearn.train import fit

    noise = {"noise": [{"name": "additive_gaussian", "strengths": [0.1]}], "trials": 2}
    for method, perturb in (("sgd", "none"), ("rwp", "rwp")):
        fit(build_config(tiny(perturb={"name": perturb}, eval=noise)), tmp_path / "sweep" / method, log=lambda s: None)
    code, out, err = run(capsys, "evaluate", str(tmp_path / "sweep"), "--noise", "quantize", "--strengths", "4,16",
                         "--trials", "3", "--subset", "100")
    assert code == 0, err
    assert out.count("== ") == 2 and (tmp_path / "sweep" / "rwp" / "eval-quantize-last-t3.json").is_file()
    code, out, err = run(capsys, "evaluate", str(tmp_path / "sweep"), "--strengths", "0.1", "--json", "x.json")
    assert code == 2 and "--json and --csv name the output of one run" in err
    code, out, err = run(capsys, "evaluate", str(tmp_path / "nothing-here"), "--strengths", "0.1")
    assert code == 2 and "traceback" not in err.lower()

    def table(name):
        rows = list(csv.reader((tmp_path / "r" / f"noise_{name}.csv").open()))
        return {r[0]: r[1:] for r in rows[1:]}, rows[0]

    assert run(capsys, "report", str(tmp_path / "sweep"), "--out", str(tmp_path / "r"))[0] == 0
    quantized, header = table("quantize")
    assert header == ["perturb.name", "clean", "4", "16"] and set(quantized) == {"none", "rwp"}
    assert all(cell.endswith("± 0.00") for row in quantized.values() for cell in row[1:])  # quantisation draws nothing
    end_of_training, _ = table("additive_gaussian")
    # re-evaluating σ = 0.1 with 5 trials replaces the end-of-training 2-trial result in the table
    code, _, err = run(capsys, "evaluate", str(tmp_path / "sweep" / "sgd"), "--strengths", "0.1", "--trials", "5",
                       "--subset", "100")
    assert code == 0, err
    later = json.loads((tmp_path / "sweep" / "sgd" / "eval-additive_gaussian-last-t5.json").read_text())
    assert run(capsys, "report", str(tmp_path / "sweep"), "--out", str(tmp_path / "r"))[0] == 0
    updated, _ = table("additive_gaussian")
    assert updated["rwp"] == end_of_training["rwp"]
    assert updated["none"][1].startswith(f"{later['points'][0]['mean']:.2f}")
    assert updated["none"][0] == f"{later['clean']['top1']:.2f}"
