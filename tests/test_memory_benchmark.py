"""benchmarks/memory.py measures peak memory per configuration and writes the common benchmark JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _memory(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("memory", None)
    import memory

    return memory


def test_the_memory_benchmark_writes_its_rows_and_the_step_peak_grows_with_the_batch(tmp_path, monkeypatch,
                                                                                       one_thread):
    memory = _memory(monkeypatch)
    configs = [memory.step("dchn_cpu", memory.MNIST, batch, "CEP", memory.MNIST_CEP) for batch in (32, 512)]
    configs.append(memory.evaluation("lenet", memory.CIFAR, 2, "batched", batch=64, images=128))
    monkeypatch.setattr(memory, "configurations", lambda quick: configs)
    out = tmp_path / "memory.json"
    result = memory.main(["--quick", "--in-process", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    assert written["benchmark"] == "memory" and written["torch"] and written["machine"]["device"] == "cpu"
    assert written["settings"]["configurations"] == configs and written["settings"]["fresh_process"] is False
    rows = written["results"]
    assert not [r for r in rows if "error" in r]
    small, large, evaluation, fit = rows
    for row in (small, large, evaluation):
        assert row["peak_mib"] >= row["warm_mib"] > 0 and row["baseline_mib"] > 0
        assert row["peak_mib"] - row["baseline_mib"] == row["increment_mib"]
    assert (small["batch"], large["batch"]) == (32, 512) and small["iterations"] == "12+2×6"
    if large["peak_reset"]:  # Linux: the peak of each step is its own; 512 examples take ~200 MiB more than 32
        assert large["step_increment_mib"] > small["step_increment_mib"] + 20
    assert evaluation["path"] == "batched" and evaluation["trials_per_pass"] == 2
    assert evaluation["estimate_mib"] == 2 * evaluation["estimate_per_trial_mib"] > 0
    assert evaluation["measured_over_estimate"] > 0
    assert fit["kind"] == "fit_train_step" and fit["batches"] == [32, 512] and fit["kib_per_example"] > 0


def test_a_configuration_is_measured_in_a_fresh_process(monkeypatch):
    memory = _memory(monkeypatch)
    row = memory.measure_fresh(memory.step("dchn_cpu", memory.MNIST, 32, "CEP", memory.MNIST_CEP))
    assert "error" not in row, row
    assert row["kind"] == "train_step" and row["threads"] == 1
    assert row["peak_mib"] >= row["warm_mib"] > 0 and row["step_increment_per_example_kib"] > 0
