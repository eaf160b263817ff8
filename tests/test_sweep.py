"""Sweeps: expansion, skipping finished runs, resuming after a kill, failures recorded, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from analoglearn.errors import AnalogLearnError, ConfigError
from analoglearn.report import report
from analoglearn.runs import RunDir
from analoglearn.sweep import expand, load_grid, sweep

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke" / "sweep.yaml"


def quiet(line):
    pass


def test_smoke_grid_expands_to_distinct_validated_runs(tmp_path):
    base, axes = load_grid(SMOKE)
    jobs = expand(base, axes, tmp_path)
    assert len(jobs) == 4 and len({j.run_dir for j in jobs}) == 4


def test_rerun_skips_finished_runs_and_report_is_written(tmp_path):
    first = sweep(SMOKE, tmp_path / "s", log=quiet, verbose=False)
    assert [r["status"] for r in first] == ["finished"] * 4
    lines = []
    second = sweep(SMOKE, tmp_path / "s", log=lines.append, verbose=False)
    assert [r["status"] for r in second] == ["skipped"] * 4
    assert "4 already finished, skipped" in lines[0]
    written = report([tmp_path / "s"], tmp_path / "r")
    assert (tmp_path / "r" / "report.md").read_text().count("|") > 10
    assert written["curves.png"].stat().st_size > 1000


def grid_file(tmp_path, grid, base=None):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": base or yaml.safe_load(SMOKE.read_text())["base"], "grid": grid}))
    return path


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"train.epochz": [1]}, "unknown key"),
        ({"seed": []}, "non-empty list"),
        ({}, "non-empty 'grid'"),
        ({"method.name": ["sgd", "magic"]}, "grid point .*magic.*Valid methods"),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(tmp_path, grid, message):
    with pytest.raises(ConfigError, match=message):
        sweep(grid_file(tmp_path, grid), tmp_path / "out", log=quiet, verbose=False)
    assert not (tmp_path / "out").exists()


def test_a_failed_run_is_recorded_and_the_rest_goes_on(tmp_path):
    base = yaml.safe_load(SMOKE.read_text())["base"]
    grid = grid_file(tmp_path, {"optim.lr": [0.05, 1.0e6], "optim.momentum": [0.0]}, base)
    results = sweep(grid, tmp_path / "out", log=quiet, verbose=False)
    assert sorted(r["status"] for r in results) == ["failed", "finished"]
    failed = next(r for r in results if r["status"] == "failed")
    assert "diverged" in failed["error"]

    # a rerun retries it by default; with skip_failed it reports the recorded error without running
    summary = Path(failed["run_dir"]) / "summary.json"
    before = summary.stat().st_mtime_ns
    lines = []
    again = sweep(grid, tmp_path / "out", skip_failed=True, log=lines.append, verbose=False)
    assert "1 already finished, skipped; 1 failed before, skipped" in lines[0]
    assert sorted(r["status"] for r in again) == ["failed", "skipped"]
    assert "not retried" in next(r for r in again if r["status"] == "failed")["error"]
    assert summary.stat().st_mtime_ns == before
    lines.clear()
    retried = sweep(grid, tmp_path / "out", log=lines.append, verbose=False)
    assert "1 failed before, retried" in lines[0]
    assert sorted(r["status"] for r in retried) == ["failed", "skipped"]
    assert summary.stat().st_mtime_ns != before


def test_unknown_executor_and_stray_address(tmp_path):
    with pytest.raises(ConfigError, match="valid executors: inprocess, ray"):
        sweep(SMOKE, tmp_path, executor="dask", log=quiet, verbose=False)
    with pytest.raises(ConfigError, match="--executor ray"):
        sweep(SMOKE, tmp_path, address="127.0.0.1:6379", log=quiet, verbose=False)


def test_report_without_runs_says_so(tmp_path):
    with pytest.raises(AnalogLearnError, match="no finished runs"):
        report([tmp_path], tmp_path / "r")


def cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.abspath("src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "analoglearn.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_sweep_finishes_only_the_missing_runs(tmp_path):
    killed, full = tmp_path / "killed", tmp_path / "full"
    proc = cli("sweep", str(SMOKE), "--out", str(killed))
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if sum(RunDir(p).finished() for p in killed.glob("*") if p.is_dir()) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in killed.glob("*") if p.is_dir() and RunDir(p).finished()}
    assert 2 <= len(done_before) < 4

    rerun = cli("sweep", str(SMOKE), "--out", str(killed))
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"{len(done_before)} already finished, skipped" in out
    assert f"{4 - len(done_before)} run, {len(done_before)} skipped" in out

    whole = cli("sweep", str(SMOKE), "--out", str(full))
    assert whole.wait(timeout=300) == 0
    report([killed], tmp_path / "rk")
    report([full], tmp_path / "rf")
    assert (tmp_path / "rk" / "results.csv").read_text() == (tmp_path / "rf" / "results.csv").read_text()


def ray_or_skip():
    if os.environ.get("CI"):  # CI installs the ray extra: the executor must be tested there
        import ray  # noqa: F401
    else:
        pytest.importorskip("ray")


def test_unreachable_ray_address_fails_fast_with_a_message(tmp_path):
    ray_or_skip()
    with pytest.raises(AnalogLearnError, match="cannot reach the Ray cluster at '127.0.0.1:9'"):
        sweep(SMOKE, tmp_path / "out", executor="ray", address="127.0.0.1:9", log=quiet, verbose=False)
    assert not any((tmp_path / "out").glob("*/summary.json"))


def test_ray_executor_runs_the_smoke_grid_on_a_local_cluster(tmp_path):
    ray_or_skip()
    results = sweep(SMOKE, tmp_path / "ray", executor="ray", log=quiet, verbose=False)
    assert [r["status"] for r in results] == ["finished"] * 4
    local = sweep(SMOKE, tmp_path / "local", log=quiet, verbose=False)
    assert [r["summary"]["test_error"] for r in results] == [r["summary"]["test_error"] for r in local]


def test_variants_combine_several_keys_per_run(tmp_path):
    base = yaml.safe_load(SMOKE.read_text())["base"]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "base": base,
        "variants": [{"model": {"name": "mlp", "hidden": [16]}, "optim.lr": 0.1}, {"model": {"name": "lenet"}}],
        "grid": {"seed": [0, 1]},
    }))
    jobs = expand(*load_grid(path), tmp_path / "out")
    assert len(jobs) == 4
    assert [j.config["model"]["name"] for j in jobs] == ["mlp", "mlp", "lenet", "lenet"]
    assert jobs[0].config["optim"]["lr"] == 0.1 and jobs[2].config["optim"]["lr"] == 0.05


def test_each_grid_keeps_its_own_listing(tmp_path):
    import json

    sweep(SMOKE, tmp_path / "s", log=quiet, verbose=False)
    listing = json.loads((tmp_path / "s" / "sweep-sweep.json").read_text())
    assert [r["status"] for r in listing["runs"]] == ["finished"] * 4
    assert listing["axes"]["seed"] == [0, 1]


def test_runs_written_before_a_new_option_existed_are_still_found(tmp_path):
    """A finished run whose saved config lacks an option added later (so its digest differs) is skipped."""
    sweep(SMOKE, tmp_path / "s", log=quiet, verbose=False)
    for config in (tmp_path / "s").glob("*/config.yaml"):
        raw = yaml.safe_load(config.read_text())
        del raw["eval"]["bn"], raw["eval"]["calibration_images"]  # as if written by an older version
        config.write_text(yaml.safe_dump(raw))
        config.parent.rename(config.parent.with_name("old-" + config.parent.name))
    results = sweep(SMOKE, tmp_path / "s", log=quiet, verbose=False)
    assert [r["status"] for r in results] == ["skipped"] * 4
    assert all(Path(r["run_dir"]).name.startswith("old-") for r in results)


def test_a_run_being_trained_elsewhere_is_left_alone(tmp_path, capsys):
    """A run whose lock another holder has is neither trained twice nor recorded as failed."""
    from analoglearn.cli import main
    from analoglearn.errors import RunBusy
    from analoglearn.train import fit

    base, axes = load_grid(SMOKE)
    jobs = expand(base, axes, tmp_path / "out")
    busy_run = RunDir(jobs[0].run_dir)
    with busy_run.lock():  # as another process training it would
        results = sweep(SMOKE, tmp_path / "out", log=quiet, verbose=False)
        with pytest.raises(RunBusy, match="is being trained by pid"):
            fit(None, busy_run.path, resume=True, log=quiet)
    assert [r["status"] for r in results] == ["busy", "finished", "finished", "finished"]
    assert not busy_run.exists()  # untouched: no config, no failed summary
    assert main(["sweep", str(SMOKE), "--out", str(tmp_path / "out")]) == 0
    assert "1 run, 3 skipped (already finished), 0 failed" in capsys.readouterr().out
    assert busy_run.finished()


def test_two_sweeps_over_one_grid_divide_its_runs(tmp_path):
    """Two processes sweep the same grid into one folder: each run is trained once, none fails."""
    procs = [cli("sweep", str(SMOKE), "--out", str(tmp_path / "out")) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    trained = [int(out.split("sweep done: ")[1].split(" run,")[0]) for out, _ in outputs]
    assert sum(trained) == 4  # not 5 or more: no run was trained by both
    assert all(RunDir(job.run_dir).finished() for job in expand(*load_grid(SMOKE), tmp_path / "out"))
    for job in expand(*load_grid(SMOKE), tmp_path / "out"):
        epochs = [json.loads(line)["epoch"] for line in (job.run_dir / "metrics.jsonl").read_text().splitlines()]
        assert epochs == sorted(set(epochs))  # one history per run, not two interleaved


def test_dry_run_lists_the_state_of_every_run(tmp_path, capsys):
    from analoglearn.cli import main
    from analoglearn.sweep import plan

    out = tmp_path / "out"
    jobs = expand(*load_grid(SMOKE), out)
    assert [state for _, state in plan(SMOKE, out)] == ["new"] * 4
    sweep(SMOKE, out, log=quiet, verbose=False)
    RunDir(jobs[1].run_dir).write_summary({"status": "failed", "error": "boom"})
    (jobs[2].run_dir / "summary.json").unlink()  # as if killed before the end: resumes from last.pt
    assert [state for _, state in plan(SMOKE, out)] == ["finished", "failed", "partial", "finished"]
    with RunDir(jobs[2].run_dir).lock():  # as another process resuming it would
        assert [state for _, state in plan(SMOKE, out)] == ["finished", "failed", "running", "finished"]
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["sweep", str(SMOKE), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "4 runs: 1 failed, 2 finished, 1 partial" in printed and str(jobs[1].run_dir) in printed
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing ran, nothing was written
