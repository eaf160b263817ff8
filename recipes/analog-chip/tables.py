"""The analog-chip recipe's README tables, from the run directories the grids wrote.

    .venv/bin/python recipes/analog-chip/tables.py lenet runs/analog-lenet
    .venv/bin/python recipes/analog-chip/tables.py onchip runs/analog-onchip

``lenet``: accuracy (%) through 4-, 6- and 8-bit tiles at each output noise, without and with a
weight-noise draw under the tiles, per training method (mean ± std over seeds of the trial means).
``onchip``: test accuracy (%) of each algorithm for each device model (finished runs only).
``ebl``: accuracy (%) of each energy-based algorithm's network relaxed through 4-, 6- and 8-bit tiles at
each output noise (the ``evaluate --analog`` results in each run; mean ± std over seeds of trial means).

    .venv/bin/python recipes/analog-chip/tables.py ebl runs/ebl-cpu-mnist
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml


def finished(folder: Path) -> list[tuple[dict, dict, Path]]:
    """``(config, summary, run directory)`` of every finished run under ``folder``."""
    out = []
    for summary_path in sorted(folder.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        if summary.get("status") == "finished":
            out.append((yaml.safe_load((summary_path.parent / "config.yaml").read_text()), summary,
                        summary_path.parent))
    return out


def pm(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def training(config: dict) -> str:
    """How a LeNet run was trained: sgd, rwp(σ), or HAT with its tile's bits."""
    tile = (config.get("analog") or {}).get("tile")
    if tile:
        return f"HAT {tile.get('adc_bits')}-bit, σ_out {tile.get('out_noise')}"
    perturb = config.get("perturb") or config["method"]  # runs of before the perturb section: method: {name: rwp}
    return f"rwp σ={perturb['sigma']}" if perturb["name"] == "rwp" else config["method"]["name"]


def lenet(folder: Path) -> None:
    cells: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    clean: dict[str, list[float]] = defaultdict(list)
    for config, summary, _ in finished(folder):
        name = training(config)
        clean[name].append(summary["test_accuracy"])
        for point in summary.get("analog", []):
            cells[(name, point["noise"], point["strength"])].append(point["mean"])
    labels = sorted({label for _, label, _ in cells}, key=lambda s: ("+" in s, s))
    names = sorted(clean)
    for label in labels:
        strengths = sorted({s for _, lab, s in cells if lab == label})
        bits = label.split("dac_bits=")[1].split(";")[0]
        noise = " + weight noise σ=0.1" if "+" in label else ""
        print(f"\n{bits}-bit DAC/ADC{noise}\n")
        print("| training | digital | " + " | ".join(f"σ_out {s:g}" for s in strengths) + " |")
        print("|---|---:|" + "---:|" * len(strengths))
        for name in names:
            row = [pm(cells[(name, label, s)]) if cells[(name, label, s)] else "–" for s in strengths]
            print(f"| {name} | {pm(clean[name])} | " + " | ".join(row) + " |")


def device_name(device: dict) -> str:
    if device["name"] == "ideal":
        return "ideal (exact SGD)"
    states = round((device["w_max"] - device["w_min"]) / device["dw_min"])
    kind = "constant step" if device["name"] == "constant_step" else "soft bounds, asym + c2c + d2d"
    return f"{kind}, {states} states"


def onchip(folder: Path) -> None:
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for config, summary, _ in finished(folder):
        cells[(device_name(config["optim"]["device"]), config["method"]["name"])].append(summary["test_accuracy"])
    devices = sorted({d for d, _ in cells}, key=lambda d: (not d.startswith("ideal"), d.split(",")[0],
                                                           int(d.split(", ")[-1].split()[0]) if "states" in d else 0))
    methods = [m for m in ("CEP", "NEP", "PEP", "TBP") if any(k[1] == m for k in cells)]
    print("| device | " + " | ".join(methods) + " |")
    print("|---|" + "---:|" * len(methods))
    for device in devices:
        print(f"| {device} | " + " | ".join(pm(cells[(device, m)]) if cells[(device, m)] else "–"
                                           for m in methods) + " |")


def ebl(folder: Path) -> None:
    """Energy-based networks relaxed through the tiles: one table per converter resolution, rows the
    algorithms, columns σ_out (``evaluate --analog`` results, ``eval-analog*.json`` in each run); "digital" is
    the same test images relaxed without tiles."""
    cells: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    clean: dict[tuple[str, str], list[float]] = defaultdict(list)
    for config, _, run in finished(folder):
        name = config["method"]["name"]
        for path in sorted(run.glob("eval-analog*.json")):
            result = json.loads(path.read_text())
            bits = result["points"][0]["noise"].split("dac_bits=")[1].split(";")[0].split("]")[0]
            clean[(name, bits)].append(result["clean"]["top1"])
            for point in result["points"]:
                cells[(name, bits, point["strength"])].append(point["mean"])
    algorithms = ("CL", "PEP", "NEP", "CEP", "PCpL", "NCpL", "CCpL", "TBP", "RBP")
    order = [m for m in algorithms if any(k[0] == m for k in clean)]
    for bits in sorted({b for _, b, _ in cells}, key=int):
        strengths = sorted({s for _, b, s in cells if b == bits})
        print(f"\n{bits}-bit DAC/ADC\n")
        print("| algorithm | digital | " + " | ".join(f"σ_out {s:g}" for s in strengths) + " |")
        print("|---|---:|" + "---:|" * len(strengths))
        for name in order:
            row = [pm(cells[(name, bits, s)]) if cells[(name, bits, s)] else "–" for s in strengths]
            digital = pm(clean[(name, bits)]) if clean[(name, bits)] else "–"
            print(f"| {name} | {digital} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    {"lenet": lenet, "onchip": onchip, "ebl": ebl}[sys.argv[1]](Path(sys.argv[2]))
