"""Cost of the analog tile model over a plain forward pass: LeNet-5 and VGG-11 ×0.25, batch 256.

Every conv/linear forward goes through :func:`analoglearn.analog.read` inside ``analog(...)``. The
cases, all timed in one run and interleaved round by round (so that load on a shared machine hits
them alike), are: the plain network; the tile model with everything off (the overhead of routing);
8-bit DAC and ADC without noise; with output noise (σ_out = 0.04, β = 10, static input range 3),
untiled and split over tiles of 256 rows; and the tiling alone. The ratio to the plain pass uses the fastest round of
each case (the least disturbed); medians are reported too. Inference: ``torch.no_grad``, eval mode.

The same run times one relaxation iteration of the Hopfield preset ``dchn_cpu`` (MNIST shape, batch
256 also with ``--quick``, fp32, asynchronous schedule; its clamped input's drive is computed before
the clock starts and reused, so only iterations are timed) digitally ("plain") and with every drive
and feedback read through the tile (:mod:`analoglearn.analog.relaxation`): all off, and 8-bit DAC/ADC
with output noise untiled and over 256-row tiles; the row reads ``ms/pass`` as ms per iteration.

    PYTHONPATH=src python benchmarks/analog_speed.py --json analog_speed.json [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

import torch
from common import write_result

import analoglearn.nets  # noqa: F401  (registers the models)
from analoglearn.analog import TileConfig, analog
from analoglearn.registry import MODELS

CONVERTERS = {"in_range": "static", "r_in": 3.0, "dac_bits": 8, "adc_bits": 8, "out_bound": 10.0, "out_noise": 0.04}
CASES = {
    "plain": None,
    "tile, all off": TileConfig(),
    "8-bit DAC/ADC, no noise": TileConfig(**{**CONVERTERS, "out_noise": 0.0}),
    "8-bit DAC/ADC + noise": TileConfig(**CONVERTERS),
    "8-bit DAC/ADC + noise, 256-row tiles": TileConfig(**CONVERTERS, tile_rows=256),
    "256-row tiles only": TileConfig(tile_rows=256),
}
NETS = {"lenet": ((1, 28, 28), 1.0), "vgg11": ((3, 32, 32), 0.25)}
RELAX_CASES = {
    "plain": None,
    "tile, all off": TileConfig(),
    "8-bit DAC/ADC + noise": TileConfig(**CONVERTERS),
    "8-bit DAC/ADC + noise, 256-row tiles": TileConfig(**CONVERTERS, tile_rows=256),
}
"""The cases of the ``dchn_cpu`` relaxation rows (``plain``: the digital relaxation)."""
RELAX_ITERATIONS = 5
"""Iterations per timed relaxation (the time is divided by it)."""


def build(name: str, batch: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The network in eval mode and one batch of inputs."""
    shape, width = NETS[name]
    gen = torch.Generator().manual_seed(0)
    model = MODELS.create(name, MODELS.build_options(name, {"width": width}), in_shape=shape, num_classes=10,
                          generator=gen)
    return model.eval(), torch.randn(batch, *shape, generator=gen)


def time_forward(model: torch.nn.Module, x: torch.Tensor, tile: TileConfig | None, steps: int) -> float:
    """Seconds per forward pass over ``steps`` passes."""
    ctx = contextlib.nullcontext() if tile is None else analog(model, tile, torch.Generator().manual_seed(1))
    with ctx, torch.no_grad():
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        return (time.perf_counter() - start) / steps


def build_relaxation(batch: int) -> tuple[Any, torch.Tensor, list[torch.Tensor], dict]:
    """``dchn_cpu`` on 1×28×28, a batch, a relaxed start state and the input's held drive."""
    import analoglearn.energy  # noqa: F401  (registers the presets)
    from analoglearn.energy.minimize import Minimizer

    gen = torch.Generator().manual_seed(0)
    net = MODELS.create("dchn_cpu", None, in_shape=(1, 28, 28), num_classes=10, generator=gen)
    x = torch.rand(batch, 1, 28, 28, generator=gen)
    start = Minimizer().relax(net, x, net.zero_state(batch), 10)
    return net, x, start.state, start.input_drive or {}


def time_iteration(net: Any, x: torch.Tensor, state: list[torch.Tensor], drive: dict, tile: TileConfig | None,
                   steps: int) -> float:
    """Seconds per asynchronous relaxation iteration over ``steps`` relaxations of RELAX_ITERATIONS each."""
    from analoglearn.energy.minimize import Minimizer

    minimizer = Minimizer()
    ctx = contextlib.nullcontext() if tile is None else analog(net, tile, torch.Generator().manual_seed(1))
    with ctx, torch.no_grad():
        start = time.perf_counter()
        for _ in range(steps):
            minimizer.relax(net, x, state, RELAX_ITERATIONS, input_drive=drive)
        return (time.perf_counter() - start) / (steps * RELAX_ITERATIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds and a small batch (a smoke run)")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="passes per round (default 5, quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--relax-batch", type=int, default=256, help="batch of the dchn_cpu rows (default 256)")
    parser.add_argument("--profile", action="store_true", help="print the op profile of the converters case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.batch = min(args.batch, 32)
    steps = args.steps or (2 if args.quick else 5)
    rounds = args.rounds or (2 if args.quick else 7)
    samples: dict[tuple[str, str], list[float]] = {}
    for net in NETS:
        model, x = build(net, args.batch)
        for tile in CASES.values():
            time_forward(model, x, tile, 1)  # warm-up
        for _ in range(rounds):
            for case, tile in CASES.items():
                samples.setdefault((net, case), []).append(time_forward(model, x, tile, steps))
        if args.profile:
            profile(model, x, CASES["8-bit DAC/ADC + noise"], net)
    net, x, state, drive = build_relaxation(args.relax_batch)
    for tile in RELAX_CASES.values():
        time_iteration(net, x, state, drive, tile, 1)  # warm-up
    for _ in range(rounds):
        for case, tile in RELAX_CASES.items():
            samples.setdefault(("dchn_cpu", case), []).append(time_iteration(net, x, state, drive, tile, steps))
    report(args, steps, rounds, samples)


def profile(model: torch.nn.Module, x: torch.Tensor, tile: TileConfig, net: str) -> None:
    """Print where the time of one converters pass goes (torch.profiler, CPU ops)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        time_forward(model, x, tile, 2)
    print(f"\nprofile of {net}, 8-bit DAC/ADC + noise (2 passes):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def report(args: argparse.Namespace, steps: int, rounds: int, samples: dict[tuple[str, str], list[float]]) -> None:
    """Print the table and write the JSON."""
    rows = []
    print(f"{'net':<7} {'case':<38} {'ms/pass':>9} {'× plain':>8} {'median ms':>10} {'× plain':>8}")
    for (net, case), times in samples.items():
        base = samples[(net, "plain")]
        best, med = min(times), statistics.median(times)
        rows.append({"net": net, "case": case, "ms_per_pass": 1e3 * best, "ratio_to_plain": best / min(base),
                     "median_ms_per_pass": 1e3 * med, "median_ratio_to_plain": med / statistics.median(base),
                     "samples_ms": [1e3 * t for t in times]})
        print(f"{net:<7} {case:<38} {1e3 * best:9.2f} {best / min(base):8.2f} {1e3 * med:10.2f} "
              f"{med / statistics.median(base):8.2f}")
    write_result(args.json, "analog_speed", {
        "batch": args.batch, "steps_per_round": steps, "rounds": rounds, "quick": args.quick,
        "nets": {n: {"in_shape": s, "width": w} for n, (s, w) in NETS.items()},
        "converters": CONVERTERS, "tile_rows": 256, "mode": "eval, torch.no_grad",
        "relaxation": {"net": "dchn_cpu", "in_shape": [1, 28, 28], "batch": args.relax_batch, "precision": "fp32",
                       "schedule": "asynchronous", "iterations_per_timing": RELAX_ITERATIONS,
                       "unit": "ms per iteration"}}, rows)

if __name__ == "__main__":
    main()
