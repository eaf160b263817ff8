"""Real kills: 20 SIGKILLs chained on one run per method (backprop, CEP, RWP), half of them inside an
atomic write (between the temporary file and its rename), each resumed; every resumed run ends with
exactly the files of an uninterrupted run, bit-equal but for wall-clock fields."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from analoglearn.config import build_config
from analoglearn.runs import KILL_IN_WRITE, RunDir
from analoglearn.train import fit

ROOT = Path(__file__).resolve().parents[1]
WALL_CLOCK = {"epoch_seconds", "eval_seconds", "seconds", "train_seconds"}
KILLS = {"sgd": 7, "CEP": 6, "rwp": 7}


def method_config(tiny, method: str) -> dict:
    """A run of a few seconds with a checkpoint every 2 steps and a noise evaluation at the end."""
    sections = {"sgd": ({"name": "lenet"}, {"name": "sgd"}, 960),
                "CEP": ({"name": "tiny"}, {"name": "CEP"}, 480),
                "rwp": ({"name": "lenet"}, {"name": "rwp", "sigma": 0.05}, 1600)}[method]
    raw = tiny(data={"batch_size": 32, "train_subset": sections[2], "test_subset": 100},
               train={"epochs": 3 if method != "CEP" else 2, "checkpoint_every": 2},
               eval={"noise": [{"name": "additive_gaussian", "strengths": [0.05]}], "trials": 2})
    raw["model"], raw["method"] = sections[0], sections[1]
    return raw


def start(argv: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "analoglearn.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def kill_once(argv: list[str], run: Path, rng: random.Random, in_write: bool) -> bool:
    """Start ``argv``; kill it inside its K-th write (``in_write``) or at a random moment of its
    training; True if it was killed (False: it finished first)."""
    lock = run.parent / f".{run.name}.lock"
    if in_write:
        proc = start(argv, {KILL_IN_WRITE: str(rng.randint(1, 4))})
    else:
        proc = start(argv)
        deadline = time.time() + 120
        while not lock.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, -signal.SIGKILL), err
    return proc.returncode == -signal.SIGKILL


def plain(value, key: str = ""):
    """Checkpoint or JSON content with wall-clock fields removed; tensors as (dtype, shape, bytes)."""
    if key in WALL_CLOCK:
        return None
    if isinstance(value, torch.Tensor):
        return (str(value.dtype), tuple(value.shape), value.cpu().contiguous().view(-1).view(torch.uint8)
                .numpy().tobytes() if value.numel() else b"")
    if isinstance(value, dict):
        return {k: plain(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def first_difference(a, b, path: str = "") -> str | None:
    """The first key path where ``a`` and ``b`` differ (None if equal), for a readable failure."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{path}[{i}]"))), None)
    return None if a == b else f"{path}: {str(a)[:80]} != {str(b)[:80]}"


def content(run: Path, name: str):
    path = run / name
    if name.endswith(".pt"):
        return plain(torch.load(path, weights_only=True))
    if name.endswith(".json"):
        return plain(json.loads(path.read_text()))
    if name.endswith(".jsonl"):
        return [plain(json.loads(line)) for line in path.read_text().splitlines()]
    return path.read_text()


def test_twenty_kills_chained_on_three_methods_resume_bit_equal(tiny, tmp_path):
    rng = random.Random(0)
    kills = 0
    for method, count in KILLS.items():
        raw = method_config(tiny, method)
        config = tmp_path / f"{method}.yaml"
        config.write_text(yaml.safe_dump(raw))
        reference = tmp_path / f"{method}-full"
        fit(build_config(raw), reference, log=lambda s: None)

        run = tmp_path / f"{method}-killed"
        argv = ["train", "--config", str(config), "--run-dir", str(run)]
        done, log = 0, []
        while done < count:
            in_write = done % 2 == 0
            log.append("write" if in_write else "moment")
            if kill_once(argv if not RunDir(run).exists() else ["train", "--resume", str(run)], run, rng, in_write):
                done += 1
            assert not RunDir(run).finished(), f"{method}: the run finished after {done} kills; make it longer"
        kills += done
        assert list(run.glob(".*.tmp")) or True  # a write may have been cut: the resume must clean it up
        final = start(["train", "--resume", str(run)])
        _, err = final.communicate(timeout=300)
        assert final.returncode == 0, err
        assert not (tmp_path / f".{run.name}.lock").exists()

        names = sorted(p.name for p in run.iterdir())
        assert names == sorted(p.name for p in reference.iterdir()), method
        assert "env.json" in names and not any(n.endswith(".tmp") for n in names)
        for name in names:
            if name != "env.json":
                got, want = content(run, name), content(reference, name)
                assert got == want, f"{method}: {name} differs at {first_difference(got, want, name)} (kills: {log})"
    assert kills == 20
