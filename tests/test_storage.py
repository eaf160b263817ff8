"""Storage that fails under a run: a full disk, a read-only file system, files and folders this user
may not read or write, and preemption by SIGTERM. Each gives one clear line, keeps the last good
checkpoint, and the run continues with ``--resume`` once the cause is gone.

The disk cases mount a small tmpfs (CI runs as root); the permission cases run the command as the
unprivileged user 65534 with ``setpriv``, since root ignores file permissions. Where either is not
allowed, the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from analoglearn.cli import main
from analoglearn.runs import RunDir, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def tmpfs(tmp_path):
    """A 3 MiB tmpfs mounted at ``tmp_path/disk`` (unmounted afterwards)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the storage cases run in CI, which runs as root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {proc.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def write_config(path: Path, tiny, **sections) -> Path:
    raw = tiny(**{"data": {"batch_size": 32, "train_subset": 320, "test_subset": 100}, "train": {"epochs": 2},
                  **sections})
    raw["model"] = {"name": "lenet"}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_full_disk_keeps_the_last_checkpoint_and_the_run_resumes(tmpfs, tiny, tmp_path, capsys, monkeypatch,
                                                                   strip_timings):
    config = write_config(tmp_path / "run.yaml", tiny, train={"epochs": 2, "checkpoint_every": 3})
    run = tmpfs / "run"
    filler = tmpfs / "filler"
    original = RunDir.save_checkpoint

    def fill_after_first(self, state, name="last.pt"):
        path = original(self, state, name)
        if not filler.exists():  # the first checkpoint is on disk: now the disk fills up
            with open(filler, "wb") as handle:
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                        handle.flush()
                except OSError:
                    pass
        return path

    monkeypatch.setattr(RunDir, "save_checkpoint", fill_after_first)
    assert main(["train", "--config", str(config), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "--resume" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    state = load_checkpoint(run / "last.pt")  # intact: the CRC check passes
    assert state["step"] == 3
    assert not list(run.glob(".*.tmp"))

    monkeypatch.setattr(RunDir, "save_checkpoint", original)
    filler.unlink()  # space is back
    assert main(["train", "--resume", str(run)]) == 0
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "full")]) == 0
    assert strip_timings(RunDir(run).metrics()) == strip_timings(RunDir(tmp_path / "full").metrics())


def test_a_read_only_file_system_is_named_before_anything_runs(tmpfs, tiny, tmp_path, capsys):
    config = write_config(tmp_path / "run.yaml", tiny, train={"epochs": 1})
    assert main(["train", "--config", str(config), "--run-dir", str(tmpfs / "run")]) == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        for argv in (["train", "--config", str(config), "--run-dir", str(tmpfs / "new")],
                     ["evaluate", str(tmpfs / "run"), "--strengths", "0.05", "--trials", "1"],
                     ["report", str(tmpfs / "run")]):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert "read-only file system" in err and "Traceback" not in err, err
            assert len(err.strip().splitlines()) == 1
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert sorted(p.name for p in tmpfs.iterdir()) == ["run"]


@pytest.fixture
def shared_dir():
    """A folder the unprivileged user can reach (pytest's own temporary folders are private to root)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("the permission cases run a command as user 65534, which needs root and setpriv(1)")
    folder = Path(tempfile.mkdtemp(prefix="analoglearn-perm-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_nobody(argv: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HOME": str(cwd), "PYTHONDONTWRITEBYTECODE": "1",
           **(env_extra or {})}
    return subprocess.run([*NOBODY, sys.executable, "-m", "analoglearn.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_unreadable_and_unwritable_paths_as_an_unprivileged_user(shared_dir, tiny):
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import torch"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user 65534 cannot run this Python: {probe.stderr.strip()[-200:]}")
    config = write_config(shared_dir / "run.yaml", tiny, train={"epochs": 1})
    config.chmod(0o644)
    secret = shared_dir / "secret.yaml"
    shutil.copy(config, secret)
    secret.chmod(0o600)
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o755)
    cases = [
        (["train", "--config", "secret.yaml"], "cannot be read: Permission denied"),
        (["train", "--config", "run.yaml", "--run-dir", "locked/run"], "is not writable by this user"),
        (["train", "--config", "run.yaml", "--out", "locked"], "is not writable by this user"),
    ]
    mnist = Path(os.environ.get("ANALOGLEARN_DATA", Path.home() / ".cache" / "analoglearn")) / "MNIST" / "raw"
    if (mnist / "t10k-labels-idx1-ubyte").is_file() or (mnist / "t10k-labels-idx1-ubyte.gz").is_file():
        data = shared_dir / "data" / "MNIST" / "raw"
        shutil.copytree(mnist, data)
        for path in [shared_dir / "data", *shared_dir.joinpath("data").rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        next(data.glob("train-labels*")).chmod(0o600)
        (shared_dir / "runs").mkdir(mode=0o777)
        (shared_dir / "runs").chmod(0o777)
        cases.append((["train", "--config", "run.yaml", "data.name=MNIST", "data.root=data", "--out", "runs"],
                      "cannot be read"))
    for argv, expected in cases:
        proc = as_nobody(argv, shared_dir)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert expected in proc.stderr and "Traceback" not in proc.stderr, (argv, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in locked.iterdir()) == []
    assert not list(shared_dir.joinpath("runs").glob("*")) if (shared_dir / "runs").exists() else True


def test_sigterm_writes_a_checkpoint_and_the_run_resumes_exactly(tiny, tmp_path, strip_timings):
    config = write_config(tmp_path / "run.yaml", tiny, data={"batch_size": 16, "train_subset": 1600,
                                                             "test_subset": 100},
                          train={"epochs": 2, "checkpoint_every": 4})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "analoglearn.cli", "train", "--config", str(config),
                             "--run-dir", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)  # the first checkpoint (step 4): training is under way
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 0 and state["batch"] > 0  # the checkpoint of the batch it stopped at
    assert not (tmp_path / ".run.lock").exists()

    assert main(["train", "--resume", str(run)]) == 0
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "full")]) == 0
    assert strip_timings(RunDir(run).metrics()) == strip_timings(RunDir(tmp_path / "full").metrics())
