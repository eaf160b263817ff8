"""Hostile but realistic input: every refusal is one line, exit 2, no traceback, and leaves the disk as it was.

Each case runs against a workspace holding a finished run, a folder of the user's own files, a
data root and config files; the whole tree is hashed before and after the command.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from analoglearn.cli import main
from analoglearn.config import build_config
from analoglearn.runs import RunDir
from analoglearn.train import fit
from tinyconfig import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``root``: content hash (folders: '') and permission bits."""
    out = {}
    for path in sorted(root.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest()
                                            if path.is_file() else "", mode)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run and a second, differently shaped one (for foreign checkpoints), trained once."""
    base = tmp_path_factory.mktemp("trained")
    fit(build_config(tiny_config(train={"epochs": 1})), base / "run", log=lambda s: None)
    fit(build_config(tiny_config(train={"epochs": 1}, model={"name": "mlp", "hidden": [8]})), base / "other",
        log=lambda s: None)
    return base


@pytest.fixture
def ws(tmp_path, trained, monkeypatch):
    """A workspace: ``run`` (finished), ``other`` (another width), ``user`` (the user's own files),
    ``data`` (a data root), ``good.yaml``; the current folder is the workspace."""
    for name in ("run", "other"):
        shutil.copytree(trained / name, tmp_path / name)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "summary.json").write_text('{"my": "own results"}\n')
    (tmp_path / "user" / "notes.txt").write_text("notes\n")
    (tmp_path / "data" / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "MNIST" / "raw" / "README").write_text("mine\n")
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(tiny_config(train={"epochs": 1})))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refuse(capsys, ws: Path, argv: list[str], *expected: str) -> str:
    """Run ``argv``; assert exit 2, one line naming ``expected``, no traceback, the disk unchanged."""
    before = snapshot(ws)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, (text, err)
    assert snapshot(ws) == before, f"{argv} changed the disk"
    return err


TRAIN = ["train", "--config", "good.yaml"]


# ---------------------------------------------------------------- 1. data loss


@pytest.mark.parametrize("target, expected", [
    ("user", "is not empty and holds no run (notes.txt, summary.json)"),
    ("run", "already holds a run"),
    ("good.yaml", "is a file, not a folder"),
])
def test_a_run_directory_must_be_new_or_empty(capsys, ws, target, expected):
    refuse(capsys, ws, [*TRAIN, "--run-dir", target], repr(target), expected)


def test_a_folder_holding_only_a_failed_attempt_is_reused(capsys, ws):
    (ws / "retry").mkdir()
    (ws / "retry" / "summary.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    (ws / "retry" / "env.json").write_text("{}")
    assert main([*TRAIN, "--run-dir", "retry"]) == 0
    assert RunDir(ws / "retry").finished()


# ---------------------------------------------------------------- 3. half-made state


@pytest.mark.parametrize("overrides, expected", [
    (["data.pad_to=10"], ["data.pad_to=10", "≥ 28"]),
    (["model={name: lenet}", "method.name=CEP"], ["method.name=CEP", "energy-based networks only"]),
    (["data.name=MNIST", "data.root=good.yaml"], ["data root", "is a file, not a folder"]),
    (["data.name=CIFAR10", "data.root=data"], ["CIFAR10", "not found"]),
    (["eval.noise=[{name: additive_gaussian, strengths: [.nan]}]"], ["eval.noise[0].strengths[0]", "finite"]),
    (["eval.noise=[{name: stuck_at, strengths: [2.0]}]"], ["eval.noise[0]", "probability"]),
    (["data.train_subset=5000"], ["data.train_subset=5000", "at most 2000"]),
    (["eval.subset=999999"], ["eval.subset", "at most"]),
    (["optim.lr=[0.1,0.1,0.1]"], ["optim.lr lists 3 rates"]),
    (["model={name: hopfield, conv_channels: [4, 8], skips: [[1, 2]]}", "method.name=CEP"],
     ["skip [1, 2]", "0 <= source < target - 1"]),
    (["model={name: hopfield, conv_channels: [4, 8], skips: [[1, 3, 1]]}", "method.name=CEP"],
     ["a skip is [source, target]"]),
    (["model={name: tiny, activation_range: [1, 0]}", "method.name=CEP"], ["activation range", "lo < hi"]),
    (["model={name: tiny, activation_range: [0, .inf]}", "method.name=CEP"], ["finite"]),
    (["model={name: tiny, activation_range: [-1, 1]}", "method.name=CEP"], ["max-pools into layer s1",
                                                                            "admits negative values"]),
    (["model={name: tiny, readout: cross_entropy}", "method.name=CL"], ["clamps the output", "EP (PEP, NEP, CEP)"]),
    (["model={name: hopfield_resnet14}", "method.name=CEP"],
     ["unknown model 'hopfield_resnet14'", "hopfield_resnet13"]),
])
def test_invalid_runs_are_refused_before_anything_is_written(capsys, ws, overrides, expected):
    refuse(capsys, ws, [*TRAIN, "--out", "runs", *overrides], *expected)
    assert not (ws / "runs").exists()


def test_resume_of_a_missing_path_creates_nothing(capsys, ws):
    refuse(capsys, ws, ["train", "--resume", "a/b/c"], "'a/b/c' is not a run directory")
    assert not (ws / "a").exists()


def test_a_sweep_validates_every_grid_point_before_running_any(capsys, ws):
    grid = {"base": tiny_config(train={"epochs": 1}), "grid": {"model": [{"name": "mlp"}, {"name": "lenet"}],
                                                                "method": [{"name": "sgd"}, {"name": "CEP"}]}}
    (ws / "grid.yaml").write_text(yaml.safe_dump(grid))
    refuse(capsys, ws, ["sweep", "grid.yaml", "--out", "sweep"], "grid point", "method.name=CEP")
    assert not (ws / "sweep").exists()


# ---------------------------------------------------------------- 4. messages instead of tracebacks


@pytest.mark.parametrize("overrides, expected", [
    (["seed=-1"], "seed must be an integer in [0, 2^63 - 1]"),
    (["seed=18446744073709551616"], "seed must be an integer in [0, 2^63 - 1]"),
    (["eval.seed=-5"], "eval.seed must be an integer in [0, 2^63 - 1]"),
    (["train.device=meta"], "train.device 'meta'"),
    (["train.device=hpu"], "train.device 'hpu'"),
    (["train.device=xpu"], "train.device is 'xpu' but this machine has no xpu device"),
    (["train.device=cuda:7"] if not torch.cuda.is_available() else ["train.device=cuda:99"], "train.device"),
    (["train.device=gpu0"], "train.device 'gpu0' is not a device"),
    (["train.threads=100000"], "train.threads must be at most 1024"),
    (["data.root=''"], "data.root must be a folder path"),
])
def test_out_of_range_values_name_the_valid_range(capsys, ws, overrides, expected):
    refuse(capsys, ws, [*TRAIN, "--out", "runs", *overrides], expected)


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe\x00\x01binary", "is not UTF-8 text (byte 0xff at offset 0)"),
    (b"seed: 0\x00\n", "holds NUL bytes"),
    (b"data: {name: Synthetic}\ndata: {batch_size: 4}\n",
     "line 2 column 1: duplicate key 'data' (first given on line 1)"),
    (b"optim: {lr: 0.1, lr: 0.2}\n", "duplicate key 'lr'"),
    (b"seed: [1, 2\n", "is not valid YAML"),
    (b"- just\n- a list\n", "must be a mapping"),
])
def test_bad_config_files_are_named(capsys, ws, content, expected):
    (ws / "bad.yaml").write_bytes(content)
    refuse(capsys, ws, ["train", "--config", "bad.yaml", "--out", "runs"], "'bad.yaml'", expected)


def test_a_grid_file_that_is_not_utf8_is_named(capsys, ws):
    (ws / "grid.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    refuse(capsys, ws, ["sweep", "grid.yaml", "--out", "sweep"], "'grid.yaml' is not UTF-8")


def _unfinished(ws: Path) -> Path:
    """``run`` as an interrupted run (no summary), which ``--resume`` and ``evaluate`` load."""
    (ws / "run" / "summary.json").unlink()
    return ws / "run"


def test_a_checkpoint_of_another_width_is_refused(capsys, ws):
    _unfinished(ws)
    shutil.copy(ws / "other" / "last.pt", ws / "run" / "last.pt")
    for argv in (["train", "--resume", "run"], ["evaluate", "run", "--strengths", "0.1", "--trials", "1"]):
        refuse(capsys, ws, argv, "run/last.pt", "another config", "model.hidden")


def test_a_checkpoint_missing_entries_is_refused(capsys, ws):
    _unfinished(ws)
    state = torch.load(ws / "run" / "last.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, ws / "run" / "last.pt")
    for argv in (["train", "--resume", "run"], ["evaluate", "run", "--strengths", "0.1", "--trials", "1"]):
        refuse(capsys, ws, argv, "lacks the entries ['optimizer']")


def test_a_checkpoint_with_a_wrong_shape_under_the_same_config_is_refused(capsys, ws):
    _unfinished(ws)
    state = torch.load(ws / "run" / "last.pt", weights_only=True)
    state["model"] = torch.load(ws / "other" / "last.pt", weights_only=True)["model"]
    torch.save(state, ws / "run" / "last.pt")
    refuse(capsys, ws, ["train", "--resume", "run"], "does not fit this run's model", "size mismatch")


def flip_tensor_bytes(path: Path, count: int = 64) -> None:
    """Invert ``count`` bytes inside the first tensor's data of a torch zip archive (it still opens)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > count + 16)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[member.header_offset + 26: member.header_offset + 30])
    start = member.header_offset + 30 + name_len + extra_len + 8
    raw[start: start + count] = bytes(b ^ 0xFF for b in raw[start: start + count])
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive:  # the archive still opens; only the CRC tells
        assert archive.testzip() == member.filename


def test_flipped_bytes_in_a_checkpoint_are_refused_on_every_load(capsys, ws):
    _unfinished(ws)
    flip_tensor_bytes(ws / "run" / "last.pt")
    for argv in (["train", "--resume", "run"], ["evaluate", "run", "--strengths", "0.1", "--trials", "1"]):
        refuse(capsys, ws, argv, "checkpoint 'run/last.pt' is damaged", "CRC-32", "other checkpoint")
    flip_tensor_bytes(ws / "run" / "best.pt")
    refuse(capsys, ws, ["evaluate", "run", "--checkpoint", "best", "--strengths", "0.1"], "'run/best.pt' is damaged")


def test_a_damaged_best_checkpoint_stops_the_end_of_run_evaluation(ws, monkeypatch):
    from analoglearn.errors import CheckpointError
    from analoglearn.runs import RunDir as Dir

    original = Dir.save_checkpoint

    def damaged(self, state, name="last.pt"):
        path = original(self, state, name)
        if name == "best.pt":
            flip_tensor_bytes(path)
        return path

    monkeypatch.setattr(Dir, "save_checkpoint", damaged)
    raw = tiny_config(train={"epochs": 1}, eval={"noise": [{"name": "additive_gaussian", "strengths": [0.1]}],
                                                 "checkpoint": "best", "trials": 1})
    with pytest.raises(CheckpointError, match="best.pt' is damaged"):
        fit(build_config(raw), ws / "b", log=lambda s: None)


def test_a_damaged_summary_in_a_sweep_folder_is_named(capsys, ws):
    (ws / "sweep").mkdir()
    shutil.move(ws / "run", ws / "sweep" / "run")
    (ws / "sweep" / "run" / "summary.json").write_text('{"status": "fini')
    refuse(capsys, ws, ["report", "sweep", "--out", "rep"], "summary.json", "not valid JSON")
    refuse(capsys, ws, ["evaluate", "sweep", "--strengths", "0.1"], "summary.json", "not valid JSON")
    grid = {"base": tiny_config(train={"epochs": 1}), "grid": {"seed": [0]}}
    (ws / "grid.yaml").write_text(yaml.safe_dump(grid))
    shutil.move(ws / "sweep" / "run", ws / "sweep" / build_config(grid["base"]).digest())
    refuse(capsys, ws, ["sweep", "grid.yaml", "--out", "sweep"], "summary.json", "not valid JSON")


@pytest.mark.parametrize("argv, expected", [
    (["evaluate", "run", "--strengths", "0.1", "--json", "user"], "--json 'user' is a folder"),
    (["evaluate", "run", "--strengths", "0.1", "--json", "good.yaml/out.json"], "is a file, not a folder"),
    (["report", "run", "--out", "good.yaml"], "--out 'good.yaml' is a file"),
    (["diagnose", "gradients", "--json", "user"], "--json 'user' is a folder"),
    ([*TRAIN, "--run-dir", "x" * 250], "bytes long"),
    ([*TRAIN, "--out", "y" * 300], "bytes long"),
    (["sweep", str(ROOT / "recipes" / "smoke" / "sweep.yaml"), "--out", "good.yaml"], "is a file"),
])
def test_output_paths_that_cannot_be_written_are_refused_first(capsys, ws, argv, expected):
    refuse(capsys, ws, argv, expected)


# ---------------------------------------------------------------- 5. non-finite numbers


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.weight_decay=.inf", "optim.lr_min=.nan",
                                      "optim.momentum=-.inf", "optim.lr=[.nan]", "data.batch_size=.nan"])
def test_non_finite_numbers_are_refused_naming_the_key(capsys, ws, override):
    key = override.split("=")[0]
    refuse(capsys, ws, [*TRAIN, "--out", "runs", override], key)


def test_non_finite_options_of_methods_and_noise_models_are_refused(capsys, ws):
    refuse(capsys, ws, [*TRAIN, "--out", "runs", "model={name: tiny}", "method.name=CEP", "method.beta=.nan"],
           "method.beta", "finite")
    refuse(capsys, ws, [*TRAIN, "--out", "runs", "eval.noise=[{name: pcm, g_max: .inf, strengths: [1]}]"],
           "eval.noise[0].g_max", "finite")


# ---------------------------------------------------------------- 6. nothing accepted silently


def test_resuming_a_finished_run_changes_nothing(capsys, ws):
    before = snapshot(ws)
    assert main(["train", "--resume", "run"]) == 0
    out, _ = capsys.readouterr()
    assert "is finished (1 epochs); nothing to do" in out and "at epoch" not in out
    assert snapshot(ws) == before


def test_equivalent_grid_points_are_counted(ws):
    from analoglearn.sweep import sweep

    grid = {"base": tiny_config(train={"epochs": 1}), "grid": {"seed": [0, 0], "method": [{"name": "sgd"},
                                                                                          {"name": "SGD"}]}}
    (ws / "grid.yaml").write_text(yaml.safe_dump(grid))
    lines: list[str] = []
    results = sweep(ws / "grid.yaml", ws / "sweep", log=lines.append, verbose=False)
    assert len(results) == 1
    assert any("4 grid points resolve to 1 distinct runs (3 collapsed" in line for line in lines)


def test_cpus_per_run_must_be_positive(capsys, ws):
    refuse(capsys, ws, ["sweep", str(ROOT / "recipes" / "smoke" / "sweep.yaml"), "--out", "s", "--cpus-per-run",
                        "0"], "--cpus-per-run must be a whole number ≥ 1")


# ---------------------------------------------------------------- 8. permissions


def test_run_files_follow_the_umask(ws):
    old = os.umask(0o027)
    try:
        fit(build_config(tiny_config(train={"epochs": 1})), ws / "shared", log=lambda s: None)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (ws / "shared").iterdir()}
    assert modes and all(mode == 0o640 for mode in modes.values()), modes


# ---------------------------------------------------------------- through a real process


def test_refusals_through_the_installed_command(ws):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    before = snapshot(ws)
    for argv in ([*TRAIN, "--run-dir", "user"], [*TRAIN, "seed=-1"], ["train", "--resume", "a/b/c"]):
        proc = subprocess.run([sys.executable, "-m", "analoglearn.cli", *argv], capture_output=True, text=True,
                              env=env, cwd=ws, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("analoglearn: error: ") and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(ws) == before
