"""benchmarks/gpu_check.py runs on any device in its dry-run sizes and writes its JSON after each part."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_gpu_check_runs_its_parts_and_skips_what_the_budget_leaves(tmp_path, monkeypatch, one_thread):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("gpu_check", None)
    import gpu_check

    out = tmp_path / "check.json"
    result = gpu_check.main(["--device", "cpu", "--smoke", "--parts", "epoch", "--json", str(out)])
    epoch = json.loads(out.read_text())["parts"]["epoch"]
    assert epoch == json.loads(json.dumps(result["parts"]["epoch"]))
    assert epoch["seconds_per_epoch"] > 0 and epoch["hours_per_100_epochs"] == epoch["seconds_per_epoch"] / 36
    assert result["torch"] and result["machine"]["device"] == "cpu"
    cut = gpu_check.main(["--device", "cpu", "--smoke", "--parts", "epoch,memory", "--budget-s", "0",
                          "--json", str(out)])
    assert all("budget" in cut["parts"][name]["skipped"] for name in ("epoch", "memory"))
