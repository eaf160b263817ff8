"""One-command GPU check: what only a GPU can show, in at most about 4 minutes, JSON after each part.

    PYTHONPATH=src python benchmarks/gpu_check.py --json gpu_check.json          # on the GPU machine
    PYTHONPATH=src python benchmarks/gpu_check.py --device cpu --smoke           # a 20-second dry run

Runs with the GPU machine's own torch (no install). Parts, in order (each timed in this one run;
ratios compare, absolute times are this machine's):

1. ``ebl_step``: one CEP training step of ``dchn32`` at batch 128 in Laborieux et al.'s setting
   (synchronous, 250 + 2×30 iterations, strict fp32) and the paper's (asynchronous, 60 + 2×15) in
   fp32, bf16 and fp16, with the speed-up over Laborieux's (paper A: 13.5× on an A100).
2. ``tolerance``: the paper's step with ``tolerance`` 1e-6 and ``check_every`` 5 against the fixed
   schedule, fp32 and bf16: seconds, free-phase iterations, cosine of the gradients.
3. ``epoch``: seconds per epoch of ``dchn32`` with CEP (paper mode, bf16) on 50,000 synthetic
   3×32×32 images at batch 128, from the mean of ``--epoch-steps`` steps, and the 100-epoch
   extrapolation beside the paper's "100 CIFAR-100 epochs in about 3 h on an A100".
4. ``noisy_eval``: T = 10 Monte-Carlo trials of additive Gaussian weight noise on LeNet and VGG-11
   (10,000 synthetic images), sequential against batched (``noisy_accuracy(batch_trials=True)``):
   seconds, ratio, identical accuracies.
5. ``memory``: peak memory (``torch.cuda.max_memory_allocated``; peak RSS on CPU) of a CEP step at
   batch 64/128/256 and of batched evaluation at T = 1/5/10.

A part that fails records its error and the check goes on; the parts left when ``--budget-s`` is
spent are skipped and say so, so a cut run still reports what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
from common import machine

import analoglearn.nets  # noqa: F401  (registers the feed-forward models)
from analoglearn.energy.estimators import estimate, onehot
from analoglearn.energy.methods import EnergyOptions
from analoglearn.evaluate import noisy_accuracy
from analoglearn.noise import build
from analoglearn.registry import METHODS, MODELS
from analoglearn.train import take_step

PAPER = dict(schedule="asynchronous", free_iterations=60, nudged_iterations=15)
LABORIEUX = dict(schedule="synchronous", free_iterations=250, nudged_iterations=30)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> float:
    """Peak memory in MiB since the last reset (CUDA allocator), or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def dchn32(device: torch.device, batch: int, smoke: bool):
    generator = torch.Generator().manual_seed(0)
    if smoke:  # dchn32's layout at 1/32 of its width, for the dry run
        from analoglearn.energy.network import HopfieldNetwork
        net = HopfieldNetwork((3, 32, 32), (4, 8, 16, 16), 10, gains=[0.5] * 5, generator=generator)
    else:
        net = MODELS.create("dchn32", None, in_shape=(3, 32, 32), num_classes=10, generator=generator)
    x = torch.randn((batch, 3, 32, 32), generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    return net.to(device), x.to(device), y.to(device)


def strict_fp32(enabled: bool) -> Callable[[], None]:
    """Turn TF32 off (Laborieux's strict fp32); returns the function that restores the settings."""
    if not (enabled and torch.cuda.is_available()):
        return lambda: None
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def restore() -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    return restore


def cep_step_seconds(net, x, y, options: EnergyOptions, steps: int, strict: bool = False) -> float:
    """Mean seconds of a CEP training step (after one short warm-up step)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    restore = strict_fp32(strict)
    try:
        warm = dataclasses.replace(options, free_iterations=2, nudged_iterations=1)
        take_step(optimizer, METHODS.create("CEP", net, warm, generator=None).closure(x, y))
        method = METHODS.create("CEP", net, options, generator=None)
        sync(x.device)
        start = time.perf_counter()
        for _ in range(steps):
            take_step(optimizer, method.closure(x, y))
        sync(x.device)
    finally:
        restore()
    return (time.perf_counter() - start) / steps


def part_ebl_step(args, device) -> dict[str, Any]:
    net, x, y = dchn32(device, args.batch, args.smoke)
    rows = {"laborieux/fp32": cep_step_seconds(net, x, y, EnergyOptions(**LABORIEUX), args.steps, strict=True)}
    for precision in ("fp32", "bf16", "fp16"):
        try:
            rows[f"paper/{precision}"] = cep_step_seconds(net, x, y, EnergyOptions(precision=precision, **PAPER),
                                                          args.steps)
        except Exception as err:  # a precision this device cannot run
            rows[f"paper/{precision}"] = f"error: {str(err).splitlines()[0]}"
    base = rows["laborieux/fp32"]
    return {"seconds_per_step": rows,
            "speedup_vs_laborieux": {k: base / v for k, v in rows.items() if isinstance(v, float)}}


def part_tolerance(args, device) -> dict[str, Any]:
    net, x, y = dchn32(device, args.batch, args.smoke)
    target = onehot(y, 10, torch.float32)
    out = {}
    for precision in ("fp32", "bf16"):
        fixed = EnergyOptions(precision=precision, **PAPER)
        stopped = dataclasses.replace(fixed, tolerance=1e-6, check_every=5)
        row = {}
        grads = {}
        for name, options in (("fixed", fixed), ("tolerance", stopped)):
            row[f"{name}_seconds"] = cep_step_seconds(net, x, y, options, args.steps)
            method = METHODS.create("CEP", net, options, generator=None)
            with torch.no_grad():
                free = method.free_phase(x, warm=False)
            row[f"{name}_free_iterations"] = free.iterations
            g = estimate("CEP", net, x, target, free.state, method.settings, free.input_drive)
            grads[name] = torch.cat([t.flatten() for pair in g for t in pair]).float()
        row["speedup"] = row["fixed_seconds"] / row["tolerance_seconds"]
        row["cosine"] = float(torch.nn.functional.cosine_similarity(grads["fixed"], grads["tolerance"], dim=0))
        out[precision] = row
    return out


def part_epoch(args, device) -> dict[str, Any]:
    batch = 4 if args.smoke else 128
    net, x, y = dchn32(device, batch, args.smoke)
    seconds = cep_step_seconds(net, x, y, EnergyOptions(precision="bf16", **PAPER), args.epoch_steps)
    per_epoch = seconds * -(-50_000 // batch)
    return {"seconds_per_step": seconds, "seconds_per_epoch": per_epoch, "hours_per_100_epochs": per_epoch * 100 / 3600,
            "paper_a100_hours_per_100_epochs": 3.0, "note": "training steps only (no evaluation), synthetic data"}


def synthetic_loader(device, images: int, batch: int):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((images, 3, 32, 32), generator=generator).to(device)
    y = torch.randint(0, 10, (images,), generator=generator).to(device)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, images, batch)]


def part_noisy_eval(args, device) -> dict[str, Any]:
    out = {}
    loader = synthetic_loader(device, 64 if args.smoke else 10_000, 500)
    noise = build("additive_gaussian", 0.05)
    for name in ("lenet", "vgg11"):
        model = MODELS.create(name, MODELS.build_options(name, {}), in_shape=(3, 32, 32), num_classes=10,
                              generator=torch.Generator().manual_seed(0)).to(device).eval()
        row = {}
        results = {}
        for mode, batched in (("sequential", False), ("batched", True)):
            sync(device)
            start = time.perf_counter()
            with torch.no_grad():
                results[mode] = noisy_accuracy(model, model, loader, noise, trials=10, seed=0, batch_trials=batched)
            sync(device)
            row[f"{mode}_seconds"] = time.perf_counter() - start
        row["speedup"] = row["sequential_seconds"] / row["batched_seconds"]
        per_trial = [r.to_dict()["per_trial"] for r in results.values()]
        row["identical"] = per_trial[0] == per_trial[1]
        out[name] = row
    return out


def part_memory(args, device) -> dict[str, Any]:
    out: dict[str, Any] = {"unit": "MiB", "kind": "max_memory_allocated" if device.type == "cuda" else "peak RSS"}
    for batch in (2, 4) if args.smoke else (64, 128, 256):
        net, x, y = dchn32(device, batch, args.smoke)
        reset_peak(device)
        cep_step_seconds(net, x, y, EnergyOptions(precision="bf16", **PAPER), 1)
        out[f"cep_step_batch{batch}"] = peak_memory(device)
    loader = synthetic_loader(device, 64 if args.smoke else 5_000, 500)
    model = MODELS.create("vgg11", MODELS.build_options("vgg11", {}), in_shape=(3, 32, 32), num_classes=10,
                          generator=torch.Generator().manual_seed(0)).to(device).eval()
    for trials in (1, 5, 10):
        reset_peak(device)
        with torch.no_grad():
            noisy_accuracy(model, model, loader, build("additive_gaussian", 0.05), trials=trials, seed=0,
                           batch_trials=True)
        out[f"vgg11_batched_eval_T{trials}"] = peak_memory(device)
    return out


PARTS = {"ebl_step": part_ebl_step, "tolerance": part_tolerance, "epoch": part_epoch,
         "noisy_eval": part_noisy_eval, "memory": part_memory}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default="gpu_check.json")
    parser.add_argument("--budget-s", type=float, default=210.0, help="skip the parts left after this many seconds")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode")
    parser.add_argument("--epoch-steps", type=int, default=10)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a dry run of the script, any device)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.steps, args.epoch_steps = 4, 1, 1
    device = torch.device(args.device)
    result: dict[str, Any] = {"benchmark": "gpu_check", "machine": machine(device), "torch": torch.__version__,
                              "settings": vars(args), "parts": {}}
    start = time.perf_counter()
    for name in args.parts.split(","):
        if name not in PARTS:
            raise SystemExit(f"unknown part {name!r}; parts: {', '.join(PARTS)}")
        if time.perf_counter() - start > args.budget_s:
            result["parts"][name] = {"skipped": f"budget of {args.budget_s:g} s spent"}
        else:
            part_start = time.perf_counter()
            try:
                result["parts"][name] = PARTS[name](args, device)
            except Exception as err:
                result["parts"][name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            result["parts"][name]["seconds"] = time.perf_counter() - part_start
        print(f"{name}: {json.dumps(result['parts'][name], default=str)[:800]}", flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(result, handle, indent=2, default=str)
    result["seconds"] = time.perf_counter() - start
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
        print(f"written: {args.json} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
