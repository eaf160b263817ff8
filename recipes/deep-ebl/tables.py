"""The deep-ebl recipe's README tables, from the run directories the CPU grids wrote.

    .venv/bin/python recipes/deep-ebl/tables.py runs/deep-ebl-cpu

Two tables: (1) test accuracy (%) after the last epoch of every (model, algorithm) of
``cpu-fashionmnist.yaml``, per seed and as the mean, with the training time (``train_seconds``:
training steps only, not the final evaluation) and the free-phase iterations per batch; (2) the
``dchn_cpu`` runs of ``output-update.yaml``: CEP and PEP under ``method.output_update`` exact and
reference; (3) the runs of ``cpu-iterations.yaml`` (another iteration budget). Unfinished runs are
listed as such.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml


def runs(folder: Path) -> list[tuple[dict, dict]]:
    """``(config, summary)`` of every run under ``folder`` (summary ``{}`` while unfinished)."""
    out = []
    for config_path in sorted(folder.glob("*/config.yaml")):
        summary_path = config_path.parent / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        out.append((yaml.safe_load(config_path.read_text()), summary))
    return out


def cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "—"
    return f"{statistics.fmean(values):.{digits}f}"


def main(folder: Path) -> None:
    study: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    update: dict[tuple[str, str], dict] = {}
    budgets: list[tuple[dict, dict]] = []
    for config, summary in runs(folder):
        model, method = config["model"]["name"], config["method"]["name"]
        if summary.get("status") != "finished":
            print(f"unfinished: {model} {method} seed {config['seed']} ({config['method']['output_update']})")
            continue
        if config["method"]["free_iterations"] != 12:  # cpu-iterations.yaml
            budgets.append((config, summary))
            continue
        if method in ("CEP", "NEP", "TBP") and config["method"]["output_update"] == "exact":
            study[(model, method)][config["seed"]] = summary
        if model == "dchn_cpu" and method in ("CEP", "PEP") and config["seed"] == 0:
            update[(method, config["method"]["output_update"])] = summary
    print("| model | algorithm | seed 0 (%) | seed 1 (%) | mean (%) | training time (s), seed 0 / 1 |")
    print("|---|---|---:|---:|---:|---:|")
    for (model, method), seeds in sorted(study.items(), key=lambda kv: (kv[0][0], "CEP NEP TBP".index(kv[0][1]))):
        acc = [seeds[s]["test_accuracy"] for s in sorted(seeds)]
        per_seed = [f"{seeds[s]['test_accuracy']:.2f}" if s in seeds else "—" for s in (0, 1)]
        times = " / ".join(f"{seeds[s]['train_seconds']:.0f}" if s in seeds else "—" for s in (0, 1))
        print(f"| {model} | {method} | {per_seed[0]} | {per_seed[1]} | {cell(acc)} | {times} |")
    if budgets:
        print()
        print("| model | algorithm | iterations (free + 2×nudged) | seed | accuracy (%) | training time (s) |")
        print("|---|---|---|---:|---:|---:|")
        for config, summary in budgets:
            m = config["method"]
            print(f"| {config['model']['name']} | {m['name']} | {m['free_iterations']} + 2×{m['nudged_iterations']} | "
                  f"{config['seed']} | {summary['test_accuracy']:.2f} | {summary['train_seconds']:.0f} |")
    if update:
        print()
        print("| algorithm | output_update exact (%) | reference (%) |")
        print("|---|---:|---:|")
        for method in ("CEP", "PEP"):
            row = [update.get((method, u), {}).get("test_accuracy") for u in ("exact", "reference")]
            print(f"| {method} | " + " | ".join(f"{v:.2f}" if v is not None else "—" for v in row) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/deep-ebl-cpu"))
