"""Data-parallel training: two ``torchrun`` workers (gloo, CPU) equal one process with the same global batch.

One torchrun launch trains LeNet with SGD, SAM and RWP and a small Hopfield network with CEP; the
per-epoch losses, test errors and final weights must match the one-process runs within fp32
tolerance, and only rank 0 writes checkpoints. A second pair of launches through ``python -m
analoglearn`` kills a two-worker run inside a checkpoint write and resumes it exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analoglearn.config import build_config
from analoglearn.runs import RunDir
from analoglearn.train import fit

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun")
                                .exists(), reason="torchrun is not installed beside this Python")

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
BASE = {
    "seed": 3,
    "data": {"name": "Synthetic", "batch_size": 50, "train_subset": 230, "test_subset": 100, "augment": True},
    "model": {"name": "lenet"},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    "train": {"epochs": 2, "threads": 1, "progress": False},
}
HOPFIELD = {"model": {"name": "tiny"},
            "method": {"name": "CEP", "free_iterations": 8, "nudged_iterations": 4, "eval_iterations": 8},
            "optim": {"name": "sgd", "lr": [0.2, 0.1, 0.05], "momentum": 0.9, "weight_decay": 0.0}}
LOCAL_ASCENT = {"perturb": {"name": "sam", "rho": 0.05, "local_ascent": True},
                "data": {**BASE["data"], "train_subset": 50}, "train": {"epochs": 1}}  # one step
RUNS = {
    "sgd": {},
    "sam": {"perturb": {"name": "sam", "rho": 0.05}},
    "rwp": {"perturb": {"name": "rwp", "sigma": 0.1, "samples": 2, "schedule": "quadratic"}},
    "cep": HOPFIELD,
    "sam-local": LOCAL_ASCENT,
}


def config(overrides: dict) -> dict:
    return {**BASE, **overrides, "train": {**BASE["train"], **overrides.get("train", {})}}


def torchrun(*args: str, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return RunDir(run).load_checkpoint()["model"]


def assert_same_run(one: Path, two: Path, tolerance: float) -> None:
    a, b = RunDir(one).metrics(), RunDir(two).metrics()
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=2e-5, abs=1e-6)
        assert rb["train_error"] == pytest.approx(ra["train_error"], abs=1e-9)
        assert rb["test_error"] == pytest.approx(ra["test_error"], abs=1.01)  # at most one of 100 flips
    # SGD's weights agree to rounding (≈1e-8); under SAM and RWP the forward pass runs at w + ε with ε
    # rounded differently, so a ReLU with a pre-activation within rounding of 0 can flip: ≈1e-5 after 10 steps
    wa, wb = weights(one), weights(two)
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=tolerance, msg=key)


def test_two_workers_equal_one_process_and_only_rank_zero_writes(tmp_path):
    spec = [{"name": name, "config": config(overrides)} for name, overrides in RUNS.items()]
    (tmp_path / "runs.json").write_text(json.dumps(spec))
    worker = Path(__file__).with_name("distributed_worker.py")
    done = torchrun(str(worker), str(tmp_path / "runs.json"), str(tmp_path / "two"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for item in spec:
        if item["name"] == "sam-local":
            continue  # no one-process run equals it: test_sam_local_ascent_equals_its_one_process_emulation
        # CEP's estimate is a difference of two ∂E/∂θ some 10⁴ times larger, so any change in summation order
        # moves it by ≈1% of itself in fp32 and the runs drift apart: its one-process reference splits the batch
        # in the same two halves (train.accumulate: 2), which two workers reproduce bit for bit
        reference = item["config"] if item["name"] != "cep" else config({**HOPFIELD, "train": {"accumulate": 2}})
        fit(build_config(reference), tmp_path / "one" / item["name"], log=lambda line: None)
        tolerance = {"sgd": 1e-6, "cep": 0.0}.get(item["name"], 3e-4)
        assert_same_run(tmp_path / "one" / item["name"], tmp_path / "two" / item["name"], tolerance)
        state = RunDir(tmp_path / "two" / item["name"]).load_checkpoint()
        assert len(state["workers"]) == 2  # every worker's method state and generator
    rank0 = json.loads((tmp_path / "two" / "writes-0.json").read_text())
    rank1 = json.loads((tmp_path / "two" / "writes-1.json").read_text())
    assert rank1 == {} and set(rank0) == set(RUNS)
    assert all(names.count("last.pt") == (1 if run == "sam-local" else BASE["train"]["epochs"])
               for run, names in rank0.items())
    # the Hopfield warm starts differ between the workers: each holds the free state of its own shard
    warm = [w["method"]["warm"][0] for w in RunDir(tmp_path / "two" / "cep").load_checkpoint()["workers"]]
    last_batch = BASE["data"]["train_subset"] % BASE["data"]["batch_size"]  # 230 = 4·50 + 30: shards of 15
    assert warm[0].shape[0] == warm[1].shape[0] == last_batch // 2 and not torch.equal(warm[0], warm[1])
    check_local_ascent(tmp_path / "two" / "sam-local", config(LOCAL_ASCENT), tmp_path / "emulated")


def check_local_ascent(run: Path, raw: dict, scratch: Path) -> None:
    """``perturb.local_ascent``: each worker ascends along its own shard's gradient, ε_r = ρ·g_r/‖g_r‖, and
    the step uses Σ_r (b_r/B)·∇L_r(w + ε_r); emulated here in one process for the run's single step."""
    from analoglearn.robust.diagnostics import global_norm
    from analoglearn.train import Trainer

    trainer = Trainer(build_config(raw), RunDir(scratch), log=lambda line: None)
    x, y = next(iter(trainer.train_loader.epoch(0)))
    params, rho = trainer.params, raw["perturb"]["rho"]
    total = [torch.zeros_like(p) for p in params]
    for xr, yr in zip(x.tensor_split(2), y.tensor_split(2)):
        trainer.optimizer.zero_grad()
        trainer.method.closure(xr, yr)()
        factor = rho / (global_norm([p.grad for p in params]) + 1e-12)
        eps = [p.grad * factor for p in params]
        with torch.no_grad():
            for p, e in zip(params, eps):
                p.add_(e)
        trainer.optimizer.zero_grad()
        trainer.method.closure(xr, yr)()
        with torch.no_grad():
            for p, e, t in zip(params, eps, total):
                p.sub_(e)
                t.add_(p.grad, alpha=len(yr) / len(y))
    for p, t in zip(params, total):
        p.grad = t
    trainer.optimizer.base_optimizer.step()
    got = weights(run)
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)


def test_a_killed_two_worker_run_resumes_exactly(tmp_path):
    cfg = config({**HOPFIELD, "perturb": {"name": "rwp", "sigma": 0.05, "per_worker_noise": True},
                  "train": {"epochs": 3, "checkpoint_every": 3}})
    (tmp_path / "run.yaml").write_text(json.dumps(cfg))
    command = ["-m", "analoglearn", "train", "--config", "run.yaml", "--run-dir"]
    full = torchrun(*command, "full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert full.stdout.count("results:") == 1  # rank 0 reports
    # rank 0 kills itself inside its 7th atomic write (env.json, config.yaml; epoch 1: last.pt at step 3, best.pt,
    # last.pt, metrics.jsonl; the 7th is epoch 2's last.pt at step 6), so the resume starts from epoch 1's end
    cut = torchrun(*command, "cut", env={"ANALOGLEARN_TEST_KILL_IN_WRITE": "7"}, cwd=tmp_path)
    assert cut.returncode != 0 and not (tmp_path / "cut" / "summary.json").exists()
    # a resume with another number of workers is refused with one line, the run left as it was
    before = (tmp_path / "cut" / "last.pt").read_bytes()
    one = subprocess.run([sys.executable, "-m", "analoglearn", "train", "--resume", "cut"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 2 and "written by 2 worker(s)" in one.stderr and "Traceback" not in one.stderr
    assert len(one.stderr.strip().splitlines()) == 1 and (tmp_path / "cut" / "last.pt").read_bytes() == before
    resumed = torchrun("-m", "analoglearn", "train", "--resume", "cut", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    strip = ("epoch_seconds", "eval_seconds")
    a = [{k: v for k, v in r.items() if k not in strip} for r in RunDir(tmp_path / "full").metrics()]
    b = [{k: v for k, v in r.items() if k not in strip} for r in RunDir(tmp_path / "cut").metrics()]
    assert a == b
    for key, value in weights(tmp_path / "full").items():
        assert torch.equal(weights(tmp_path / "cut")[key], value), key
