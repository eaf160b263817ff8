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
