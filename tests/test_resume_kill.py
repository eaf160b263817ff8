"""A real kill: SIGKILL a training subprocess mid-epoch, resume it, compare with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import yaml

from analoglearn.runs import RunDir


def run_cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.abspath("src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "analoglearn.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_killed_run_resumes_to_the_same_metrics(tiny, tmp_path, strip_timings):
    raw = tiny(data={"batch_size": 16, "train_subset": 1600}, train={"epochs": 3, "checkpoint_every": 20})
    raw["model"] = {"name": "lenet"}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))

    killed = tmp_path / "killed"
    proc = run_cli("train", "--config", str(config), "--run-dir", str(killed))
    deadline = time.time() + 120
    while not (killed / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    run = RunDir(killed)
    assert not run.finished()
    assert run.load_checkpoint()["batch"] > 0  # the kill came mid-epoch
    lock = tmp_path / ".killed.lock"
    assert lock.is_file()  # the killed trainer could not remove its lock; the kernel released it

    resumed = run_cli("train", "--resume", str(killed))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming" in out
    assert not lock.exists()  # the resumed trainer took the lock and removed it at the end

    full = tmp_path / "full"
    whole = run_cli("train", "--config", str(config), "--run-dir", str(full))
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err

    def strip(path):
        return strip_timings(RunDir(path).metrics())

    assert len(strip(killed)) == 3
    assert strip(killed) == strip(full)
    assert RunDir(killed).summary()["test_error"] == RunDir(full).summary()["test_error"]
