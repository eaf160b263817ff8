"""Step time of the perturbation wrappers (SAM, ASAM, RWP) against plain SGD on a small CNN.

Theory (Paper B, Jacobson et al., arXiv 2602.07320, §B.2): SAM and ASAM cost two forward-backward
passes per step (≈ 2× SGD); RWP with K = 1 and λ = 1 costs one (≈ 1×, plus drawing the noise);
λ < 1 or diagnostics add the clean pass (≈ 2×); K samples cost K passes. All methods are timed in the
same run, interleaved round by round so that load on a shared machine hits them alike; the ratio
to SGD uses the fastest round of each (the least disturbed by other load); medians are reported too.

    PYTHONPATH=src python benchmarks/robust_speed.py --quick --json robust_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_result

import analoglearn.nets  # registers the models
import analoglearn.robust  # noqa: F401  (registers the methods)
from analoglearn.registry import METHODS, MODELS, PERTURBATIONS
from analoglearn.robust.methods import Clock
from analoglearn.train import take_step

CASES = {
    "sgd": ("none", None, "1 pass"),
    "sam": ("sam", {"rho": 0.05, "diagnostics": False}, "2 passes"),
    "asam": ("asam", {"rho": 0.5, "diagnostics": False}, "2 passes"),
    "rwp K=1 λ=1": ("rwp", {"sigma": 0.05}, "1 pass + draw"),
    "rwp K=1 λ=0.5": ("rwp", {"sigma": 0.05, "mix": 0.5}, "2 passes + draw"),
    "rwp K=2 λ=1": ("rwp", {"sigma": 0.05, "samples": 2}, "2 passes + 2 draws"),
    "sam + diagnostics": ("sam", {"rho": 0.05, "diagnostics": True}, "2 passes"),
}


def build(case: str, args: argparse.Namespace, device: torch.device):
    """(method, optimiser) and one batch for ``case``."""
    name, options, _ = CASES[case]
    gen = torch.Generator().manual_seed(0)
    model_opts = MODELS.build_options(args.model, {"width": args.width})
    model = MODELS.create(args.model, model_opts, in_shape=(3, 32, 32), num_classes=10, generator=gen)
    model = model.to(device)
    noise = torch.Generator(device=device).manual_seed(1)
    method = METHODS.create("sgd", model, METHODS.build_options("sgd", {}), generator=noise)
    base = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    optimizer = PERTURBATIONS.create(name, base, model, PERTURBATIONS.build_options(name, options or {}),
                                     generator=noise, clock=Clock())
    x = torch.randn(args.batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    return (method, optimizer), x, y


def time_steps(setup, x, y, steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps (``optimizer.step(method.closure(x, y))``, as in training)."""
    method, optimizer = setup
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        take_step(optimizer, method.closure(x, y))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (a CPU smoke run)")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="vgg11", help="registered model name (default vgg11)")
    parser.add_argument("--width", type=float, default=0.25, help="model width multiplier (default 0.25)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="steps per round (default 5, quick 3)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batch = min(args.batch, 32)
    steps = args.steps or (3 if args.quick else 5)
    rounds = args.rounds or (3 if args.quick else 7)
    device = torch.device(args.device)
    setups = {case: build(case, args, device) for case in CASES}
    for method, x, y in setups.values():
        time_steps(method, x, y, 1, device)  # warm-up
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(rounds):
        for case, (method, x, y) in setups.items():
            samples[case].append(time_steps(method, x, y, steps, device))
    report(args, device, steps, rounds, samples)


def report(args, device, steps: int, rounds: int, samples: dict[str, list[float]]) -> None:
    """Print the table and write the JSON."""
    base, base_med = min(samples["sgd"]), statistics.median(samples["sgd"])
    rows = []
    print(f"{'method':<20} {'ms/step':>9} {'× sgd':>7} {'median ms':>10} {'× sgd':>7}  theory")
    for case, times in samples.items():
        best, med = min(times), statistics.median(times)
        rows.append({"method": case, "ms_per_step": 1e3 * best, "ratio_to_sgd": best / base,
                     "median_ms_per_step": 1e3 * med, "median_ratio_to_sgd": med / base_med,
                     "theory": CASES[case][2], "samples_ms": [1e3 * t for t in times]})
        print(f"{case:<20} {1e3 * best:9.2f} {best / base:7.2f} {1e3 * med:10.2f} {med / base_med:7.2f}  "
              f"{CASES[case][2]}")
    write_result(args.json, "robust_speed", {"model": args.model, "width": args.width, "batch": args.batch,
                                              "steps_per_round": steps, "rounds": rounds, "quick": args.quick},
                 rows, device)

if __name__ == "__main__":
    main()
