"""``eval.batch_trials`` / ``eval.memory_budget`` and ``analoglearn evaluate --batch-trials [N]``: validated
with the key named, passed through to the batched trials, and the same accuracies as one pass per trial."""

from __future__ import annotations

import json
import warnings

import pytest

from analoglearn import trials
from analoglearn.cli import main
from analoglearn.config import build_config, build_eval
from analoglearn.errors import ConfigError
from analoglearn.train import fit


@pytest.mark.parametrize("value, expected", [(False, False), (True, True), (3, 3), (2.0, 2)])
def test_batch_trials_takes_a_bool_or_a_positive_count(tiny, value, expected) -> None:
    cfg = build_config(tiny(eval={"batch_trials": value, "memory_budget": 2**30}))
    assert cfg.eval.batch_trials == expected and cfg.eval.memory_budget == 2**30
    defaults = build_config(tiny()).to_dict()["eval"]  # one pass per trial; the budget from the device
    assert defaults["batch_trials"] is False and defaults["memory_budget"] is None


@pytest.mark.parametrize("key, value, valid", [
    ("batch_trials", 0, "true, false or a number of trials per pass ≥ 1"),
    ("batch_trials", -2, "true, false or a number of trials per pass ≥ 1"),
    ("batch_trials", 2.5, "true, false or a number of trials per pass ≥ 1"),
    ("batch_trials", "yes", "true, false or a number of trials per pass ≥ 1"),
    ("batch_trials", None, "true, false or a number of trials per pass ≥ 1"),
    ("memory_budget", 0, "> 0 or null"),
    ("memory_budget", "1GB", "an integer or null"),
])
def test_a_bad_value_is_refused_with_its_key_and_the_valid_values(tiny, key, value, valid) -> None:
    with pytest.raises(ConfigError, match=rf"eval\.{key} must be") as caught:
        build_config(tiny(eval={key: value}))
    assert valid in str(caught.value)
    with pytest.raises(ConfigError, match=rf"eval\.{key}"):
        build_eval({key: value})


def evaluate(capsys, run_dir, path, *extra) -> list[dict]:
    code = main(["evaluate", str(run_dir), "--strengths", "0,0.1,0.3", "--trials", "4", "--json", str(path), *extra])
    _, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(path.read_text())["points"]


def test_cli_batch_trials_give_the_accuracies_of_one_pass_per_trial(tiny, tmp_path, capsys, monkeypatch) -> None:
    passes: list[int] = []
    draw = trials.draw_trials
    monkeypatch.setattr(trials, "draw_trials", lambda m, n, seeds: passes.append(len(seeds)) or draw(m, n, seeds))
    noise = {"noise": [{"name": "additive_gaussian", "strengths": [0.0, 0.1, 0.3]}], "trials": 4, "batch_trials": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error", trials.BatchedTrialsWarning)  # no fallback: the batched path ran
        fit(build_config(tiny(eval=noise)), tmp_path / "run", log=lambda s: None)
        assert passes == [4, 4]  # the end-of-training evaluation (σ = 0 draws nothing: one pass anyway)
        sequential = evaluate(capsys, tmp_path / "run", tmp_path / "seq.json")
        assert passes == [4, 4]
        batched = evaluate(capsys, tmp_path / "run", tmp_path / "bat.json", "--batch-trials")
        capped = evaluate(capsys, tmp_path / "run", tmp_path / "cap.json", "--batch-trials", "3")
    assert passes == [4, 4, 4, 4, 3, 1, 3, 1]
    at_end = json.loads((tmp_path / "run" / "noise.json").read_text())["points"]
    keys = ("strength", "seeds", "per_trial", "per_trial_top5", "mean", "std", "ci95")
    for points in (batched, capped, at_end):
        assert [{k: p[k] for k in keys} for p in points] == [{k: p[k] for k in keys} for p in sequential]
    assert len(set(sequential[2]["per_trial"])) > 1  # the trials really differ


def test_batch_trials_with_the_tile_model_is_refused(tiny, tmp_path, capsys) -> None:
    fit(build_config(tiny(train={"epochs": 1})), tmp_path / "run", log=lambda s: None)
    code = main(["evaluate", str(tmp_path / "run"), "--analog", "{tile: {}, sweep: out_noise, values: [0]}",
                 "--batch-trials"])
    _, err = capsys.readouterr()
    assert code == 2 and "--batch-trials" in err and "one pass per trial" in err
    with pytest.raises(SystemExit):
        main(["evaluate", "--batch-trials", str(tmp_path / "run")])
    assert "give RUN_DIR before --batch-trials" in capsys.readouterr().err


def test_cli_eval_tolerance_stops_the_relaxation_and_is_recorded(tiny, tmp_path, capsys) -> None:
    ebl = tiny(model={"name": "tiny"}, method={"name": "CEP", "free_iterations": 8, "nudged_iterations": 4,
                                                 "eval_iterations": 100}, train={"epochs": 1},
               data={"train_subset": 128, "test_subset": 100})
    ebl["model"].pop("hidden")
    fit(build_config(ebl), tmp_path / "run", log=lambda s: None)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    for bad, says in ((["--eval-tolerance", "0"], "finite number > 0"),
                      (["--eval-tolerance", "1e-6", "--check-every", "0"], "positive integer"),
                      (["--check-every", "3"], "give --eval-tolerance")):
        assert main(["evaluate", str(tmp_path / "run"), *bad]) == 2
        assert says in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # refused: nothing written
    fixed = evaluate(capsys, tmp_path / "run", tmp_path / "fixed.json")
    path = tmp_path / "stopped.json"
    stopped = evaluate(capsys, tmp_path / "run", path, "--eval-tolerance", "1e-7", "--check-every", "2")
    assert json.loads(path.read_text())["relaxation"] == {"eval_tolerance": 1e-7, "check_every": 2, "stop": "example",
                                                          "eval_iterations": 100}
    assert [p["per_trial"] for p in stopped] == [p["per_trial"] for p in fixed]
    code = main(["evaluate", str(tmp_path / "run"), "--eval-tolerance", "1e-6", "--trials", "1", "--strengths", "0"])
    assert code == 0 and (tmp_path / "run" / "eval-additive_gaussian-tol1e-06-last-t1.json").exists()
    fit(build_config(tiny(train={"epochs": 1})), tmp_path / "mlp", log=lambda s: None)
    assert main(["evaluate", str(tmp_path / "mlp"), "--eval-tolerance", "1e-6"]) == 2
    assert "trained with 'sgd'" in capsys.readouterr().err
