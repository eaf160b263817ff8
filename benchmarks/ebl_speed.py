"""Speed of energy-based training: the fast minimiser of Scellier et al. 2023 vs Laborieux et al. 2021.

Times one CEP training step (free phase, two nudged phases, gradient, SGD step) of ``dchn32`` in

* paper mode: asynchronous, 60 + 2×15 iterations (and the CIFAR-10 SOTA setting 60 + 2×20),
  for each requested precision;
* Laborieux mode: synchronous, 250 + 2×30 iterations, strict fp32 (TF32 off);
* naive mode: paper mode recomputing convolutions and max-pool indices (as the reference code does),

then the time per relaxation iteration with and without the cache, and the residual ``max|Δs|``
against iterations for both schedules. Prints a table and writes JSON with ``--json``.

    PYTHONPATH=src python benchmarks/ebl_speed.py --quick --json ebl_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time

import torch

from analoglearn.energy.methods import EnergyOptions
from analoglearn.energy.minimize import Minimizer
from analoglearn.registry import METHODS, MODELS
from analoglearn.train import take_step

MODES = {
    "paper": dict(schedule="asynchronous", free_iterations=60, nudged_iterations=15),
    "sota": dict(schedule="asynchronous", free_iterations=60, nudged_iterations=20),
    "laborieux": dict(schedule="synchronous", free_iterations=250, nudged_iterations=30),
    "naive": dict(schedule="asynchronous", free_iterations=60, nudged_iterations=15, cache_pooling=False),
}
TRACE_AT = (1, 2, 5, 10, 15, 20, 30, 45, 60)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def _strict_fp32(enabled: bool):
    """Disable TF32 (Laborieux's strict fp32) for the duration, restoring the previous settings."""
    if not enabled or not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _setup(args, device):
    generator = torch.Generator().manual_seed(0)
    net = MODELS.create("dchn32", None, in_shape=(3, 32, 32), num_classes=10, generator=generator).to(device)
    x = torch.randn((args.batch_size, 3, 32, 32), generator=generator).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)
    return net, x, y


def time_step(net, x, y, mode: str, precision: str, steps: int) -> float:
    """Mean seconds per CEP training step (after one warm-up step) in ``mode`` at ``precision``."""
    options = EnergyOptions(precision=precision, **MODES[mode])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    method = METHODS.create("CEP", net, options, generator=None)
    with _strict_fp32(mode == "laborieux"):
        warm = EnergyOptions(
            precision=precision, **{**MODES[mode], "free_iterations": 2, "nudged_iterations": 1}
        )
        take_step(optimizer, METHODS.create("CEP", net, warm, generator=None).closure(x, y))
        _sync(x.device)
        start = time.perf_counter()
        for _ in range(steps):
            take_step(optimizer, method.closure(x, y))
        _sync(x.device)
    return (time.perf_counter() - start) / steps


def time_iteration(net, x, precision: str, cache: bool, iterations: int) -> float:
    """Seconds per asynchronous free-phase iteration, with or without the drive/index cache."""
    minimizer = Minimizer(precision=precision, cache=cache)
    state = net.zero_state(x.shape[0])
    minimizer.relax(net, x, state, 1)
    _sync(x.device)
    start = time.perf_counter()
    minimizer.relax(net, x, state, iterations)
    _sync(x.device)
    return (time.perf_counter() - start) / iterations


def residuals(net, x) -> dict[str, dict[int, float]]:
    """``max|Δs|`` after each of 60 iterations from zero, for both schedules (fp32)."""
    out = {}
    for schedule in ("asynchronous", "synchronous"):
        trace = Minimizer(schedule=schedule).relax(net, x, net.zero_state(x.shape[0]), 60, trace=True).trace
        out[schedule] = {n: trace[n - 1] for n in TRACE_AT}
    return out


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="batch 4, one step per mode (under a minute on CPU)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision", default=None, help="comma-separated: fp32,bf16,fp16 (default fp32,bf16)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps = 4, 1
    args.precision = (args.precision or "fp32,bf16").split(",")
    return args


def run(args: argparse.Namespace) -> dict:
    """Measure everything; returns the JSON document."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net, x, y = _setup(args, device)
    steps: dict[str, float] = {"laborieux/fp32": time_step(net, x, y, "laborieux", "fp32", args.steps)}
    for precision in args.precision:
        for mode in ("paper", "sota", "naive"):
            steps[f"{mode}/{precision}"] = time_step(net, x, y, mode, precision, args.steps)
    per_iteration = {
        f"{'cached' if cache else 'naive'}/{p}": time_iteration(net, x, p, cache, 10 if args.quick else 30)
        for p in args.precision
        for cache in (True, False)
    }
    base = steps["laborieux/fp32"]
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": sys.version.split()[0],
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "torch": torch.__version__,
        "device": str(device),
        "settings": {
            "model": "dchn32",
            "algorithm": "CEP",
            "batch_size": args.batch_size,
            "steps": args.steps,
            "precisions": args.precision,
            "modes": MODES,
        },
        "seconds_per_step": steps,
        "speedup_vs_laborieux": {
            key: base / value for key, value in steps.items() if key != "laborieux/fp32"
        },
        "seconds_per_iteration": per_iteration,
        "cache_saving": {
            p: 1 - per_iteration[f"cached/{p}"] / per_iteration[f"naive/{p}"] for p in args.precision
        },
        "residual": residuals(net, x),
    }


def table(result: dict) -> str:
    """Plain-text summary."""
    lines = [
        f"dchn32 CEP, batch {result['settings']['batch_size']}, {result['device']}, torch {result['torch']}",
        f"{'mode/precision':<18}{'s/step':>10}{'speedup':>10}",
    ]
    for key, value in result["seconds_per_step"].items():
        lines.append(f"{key:<18}{value:>10.3f}{result['speedup_vs_laborieux'].get(key, 1.0):>9.2f}x")
    for p, saving in result["cache_saving"].items():
        cached, naive = (
            result["seconds_per_iteration"][f"cached/{p}"],
            result["seconds_per_iteration"][f"naive/{p}"],
        )
        lines.append(
            f"iteration {p}: cached {cached * 1e3:.1f} ms, naive {naive * 1e3:.1f} ms, saving {saving:.0%}"
        )
    lines.append(f"{'iterations':<12}{'asynchronous':>14}{'synchronous':>14}")
    for n in TRACE_AT:
        lines.append(
            f"{n:<12}{result['residual']['asynchronous'][n]:>14.2e}{result['residual']['synchronous'][n]:>14.2e}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse(argv)
    result = run(args)
    print(table(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
