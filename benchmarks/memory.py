"""Peak memory of a training step and of a batched noisy evaluation, by batch size and by trials.

    PYTHONPATH=src python benchmarks/memory.py --quick --json memory.json     # a few configurations, < 1 min
    PYTHONPATH=src python benchmarks/memory.py --json memory.json             # the full table, ~6 min on 2 cores
    PYTHONPATH=src python benchmarks/memory.py --device cuda --json memory_cuda.json

Two parts, on synthetic seeded data:

* ``train_step``: one step of the project's training step (``METHODS.create(name, model, options)``,
  ``take_step(optimizer, method.closure(x, y))``, SGD with momentum under it) at several batch sizes:
  the Hopfield presets ``dchn_cpu`` (1×28×28, CEP, 12 + 2×6 iterations, the MNIST config) and
  ``dchn32`` (3×32×32, CEP, 60 + 2×15; a shortened 6 + 2×3 schedule for the larger batches, since CEP
  relaxes without a graph and the peak does not depend on the iteration count, which the row at equal
  batch shows), and LeNet trained by backprop (``sgd``) with and without RWP (``perturb: rwp``).
* ``noisy_eval``: ``noisy_accuracy`` of LeNet, VGG-11 (width 0.25) and ``dchn_cpu`` (``method.predict``)
  at eval batch 256 with T = 10 trials sequential and T = 1, 5, 10 batched (``batch_trials=True``),
  and ``vmap``: the T draws through ``trials.batched_forward`` directly, one vmapped pass of all T
  trials per test batch (the batched path on CUDA; on CPU ``noisy_accuracy`` may instead fold the
  trials into the batch dimension a few examples at a time, which the ``passes`` field of a row
  shows), each next to the estimate n·M of :func:`analoglearn.trials.trial_memory` (M per trial,
  n trials per pass) that sizes the batched passes against the memory budget.

Measurement. On CPU every configuration runs in a fresh ``spawn`` process. After imports and the
construction of the model, data and optimiser the process's resident set is the *baseline*; a short
warm-up (a 2 + 2×1-iteration step, or the same evaluation on the first test batch) loads the lazily
initialised kernels; then free heap is handed back (``malloc_trim``), the resident set is *warm*, the
peak-RSS mark is reset (``/proc/self/clear_refs``, Linux) and the measured step or evaluation runs.
*Peak* is ``ru_maxrss`` after it; *increment* = peak − baseline (what the warm-up left loaded included,
and for a training step the gradients and momentum buffers, ``parameter_mib`` each) and *step
increment* = peak − warm (what the measured step or pass adds; the per-example, per-trial and
measured/estimate figures use it). Where the mark cannot be reset the peak includes the warm-up
(``peak_reset: false``). On CUDA the same quantities come from the caching allocator
(``memory_allocated`` baseline, ``reset_peak_memory_stats`` / ``max_memory_allocated``), in one process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import hashlib
import os
import resource
import sys
import time
import traceback
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import torch
from common import write_result

import analoglearn.energy  # (registers the Hopfield presets and the energy-based methods)
import analoglearn.nets  # (registers the feed-forward models)
import analoglearn.robust  # noqa: F401  (registers sgd and the perturbations)
from analoglearn import fold as fold_module
from analoglearn import trials as trials_module
from analoglearn.evaluate import BatchedTrialsWarning, noisy_accuracy
from analoglearn.noise import build
from analoglearn.registry import METHODS, MODELS, PERTURBATIONS
from analoglearn.robust.methods import Clock
from analoglearn.train import take_step
from analoglearn.trials import default_memory_budget, trial_memory

MIB = 2**20
MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
MNIST_CEP = {"beta": 0.25, "free_iterations": 12, "nudged_iterations": 6}  # configs/ebl/mnist-cpu.yaml
PAPER_CEP = {"beta": 0.25, "free_iterations": 60, "nudged_iterations": 15}  # dchn32, paper A
SHORT_CEP = {"beta": 0.25, "free_iterations": 6, "nudged_iterations": 3}  # dchn32's larger batches on a CPU
RWP = {"sigma": 0.1}
EVAL_SIGMA = 0.05  # additive Gaussian weight noise of the evaluation
SOURCES = ("analoglearn.trials", "analoglearn.fold", "analoglearn.evaluate", "analoglearn.energy.minimize",
           "analoglearn.energy.methods", "analoglearn.robust.rwp")


def step(model: str, shape: tuple[int, ...], batch: int, method: str = "sgd", method_options: dict | None = None,
         perturb: str = "none", perturb_options: dict | None = None, model_options: dict | None = None) -> dict:
    """A training-step configuration."""
    return {"kind": "train_step", "model": model, "input": list(shape), "batch": batch, "method": method,
            "method_options": method_options or {}, "perturb": perturb, "perturb_options": perturb_options or {},
            "model_options": model_options or {}}


PATHS = ("sequential", "batched", "vmap")
"""Evaluation paths: ``noisy_accuracy`` with ``batch_trials`` false or true, and ``vmap``: the T draws
stacked (``trials.draw_trials``) and every test batch through ``trials.batched_forward`` (one vmapped
pass of all T trials: what ``noisy_accuracy(batch_trials=True)`` runs on CUDA, and on CPU where it
cannot fold the trials into the batch dimension)."""


def evaluation(model: str, shape: tuple[int, ...], trials: int, path: str, batch: int = 256, images: int = 512,
               model_options: dict | None = None, eval_iterations: int = 60) -> dict:
    """A noisy-evaluation configuration (``path`` one of :data:`PATHS`; ``eval_iterations``: a Hopfield
    network's relaxation)."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return {"kind": "noisy_eval", "model": model, "input": list(shape), "batch": batch, "images": images,
            "trials": trials, "path": path, "model_options": model_options or {}, "eval_iterations": eval_iterations}


def evaluations(model: str, shape: tuple[int, ...], batched: tuple[int, ...] = (1, 5, 10),
                vmap: tuple[int, ...] = (1, 10), sequential: int = 10, **kw: Any) -> list[dict]:
    """Sequential at T = ``sequential``, batched at each T of ``batched``, vmapped at each T of ``vmap``."""
    return [evaluation(model, shape, sequential, "sequential", **kw),
            *(evaluation(model, shape, t, "batched", **kw) for t in batched),
            *(evaluation(model, shape, t, "vmap", **kw) for t in vmap)]


def configurations(quick: bool) -> list[dict]:
    """The configurations of the quick or the full run."""
    if quick:
        return [step("dchn_cpu", MNIST, b, "CEP", MNIST_CEP) for b in (32, 512)] + evaluations(
            "lenet", CIFAR, batched=(5,), vmap=(5,), sequential=5)
    lenet_batches = (32, 64, 128, 256, 512, 1024)
    return [
        *(step("dchn_cpu", MNIST, b, "CEP", MNIST_CEP) for b in (32, 64, 128, 256, 512)),
        step("dchn32", CIFAR, 16, "CEP", PAPER_CEP),
        *(step("dchn32", CIFAR, b, "CEP", SHORT_CEP) for b in (16, 32, 64)),
        *(step("lenet", MNIST, b) for b in lenet_batches),
        *(step("lenet", MNIST, b, perturb="rwp", perturb_options=RWP) for b in lenet_batches),
        *evaluations("lenet", CIFAR),
        *evaluations("vgg11", CIFAR, model_options={"width": 0.25}),
        *evaluations("dchn_cpu", MNIST),
    ]


# ---------------------------------------------------------------- meters


def rss_now() -> int | None:
    """The process's resident set in bytes (``/proc/self/statm``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def rss_peak() -> int:
    """The process's peak resident set in bytes (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_rss_peak() -> bool:
    """Reset the peak-RSS mark to the current resident set (Linux ≥ 4.0); whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap back to the system, so that memory freed after the
    baseline (the warm-up's) cannot hide the measured peak."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Meter:
    """Baseline, reset and peak of the resident set (CPU) or of the CUDA caching allocator, in bytes."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.kind = "cuda max_memory_allocated" if self.cuda else "peak RSS"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def now(self) -> int:
        if self.cuda:
            self.sync()
            return torch.cuda.memory_allocated(self.device)
        current = rss_now()
        return rss_peak() if current is None else current

    def reset(self) -> bool:
        release_free_memory()
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            return True
        return reset_rss_peak()

    def peak(self) -> int:
        if self.cuda:
            self.sync()
            return torch.cuda.max_memory_allocated(self.device)
        return rss_peak()


# ---------------------------------------------------------------- one measurement


def _model(cfg: dict, device: torch.device) -> torch.nn.Module:
    name = cfg["model"]
    options = MODELS.build_options(name, cfg["model_options"])
    model = MODELS.create(name, options, in_shape=tuple(cfg["input"]), num_classes=10,
                          generator=torch.Generator().manual_seed(0))
    return model.to(device)


def _data(cfg: dict, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((count, *cfg["input"]), generator=generator)
    y = torch.randint(0, 10, (count,), generator=generator)
    return x.to(device), y.to(device)


def _mib(n: float | None) -> float | None:
    return None if n is None else n / MIB


def _parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def measure_step(cfg: dict, device: torch.device) -> dict:
    """Peak memory of one training step of ``cfg`` (a :func:`step` configuration), in this process."""
    meter = Meter(device)
    model = _model(cfg, device)
    x, y = _data(cfg, cfg["batch"], device)
    name = cfg["method"]
    options = METHODS.build_options(name, cfg["method_options"])
    generator = torch.Generator(device=device).manual_seed(2)
    base = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    perturb_options = PERTURBATIONS.build_options(cfg["perturb"], cfg["perturb_options"])
    optimizer = PERTURBATIONS.create(cfg["perturb"], base, model, perturb_options, generator=generator, clock=Clock())
    method = METHODS.create(name, model, options, generator=generator)
    if hasattr(options, "free_iterations"):  # a short step of its own warms the kernels up
        short = dataclasses.replace(options, free_iterations=2, nudged_iterations=1)
        warm_method = METHODS.create(name, model, short, generator=generator)
    else:
        warm_method = method
    release_free_memory()
    baseline = meter.now()
    take_step(optimizer, warm_method.closure(x, y))
    del warm_method
    reset, warm = meter.reset(), meter.now()
    start = time.perf_counter()
    take_step(optimizer, method.closure(x, y))
    meter.sync()
    seconds = time.perf_counter() - start
    peak = meter.peak()
    return {**_common(cfg, meter, reset, baseline, warm, peak), "batch": cfg["batch"], "method": name,
            "perturb": cfg["perturb"], "iterations": _iterations(cfg), "parameter_mib": _mib(_parameter_bytes(model)),
            "step_increment_per_example_kib": (peak - warm) / cfg["batch"] / 1024, "seconds": seconds}


def _iterations(cfg: dict) -> str | None:
    opts = cfg["method_options"]
    if "free_iterations" not in opts:
        return None
    return f"{opts['free_iterations']}+2×{opts['nudged_iterations']}"


def _common(cfg: dict, meter: Meter, reset: bool, baseline: int, warm: int, peak: int) -> dict:
    """The fields every row has: the configuration and the three memory figures, in MiB."""
    return {"kind": cfg["kind"], "model": cfg["model"], "model_options": cfg["model_options"],
            "input": "×".join(map(str, cfg["input"])), "measure": meter.kind, "peak_reset": reset,
            "threads": torch.get_num_threads(), "baseline_mib": _mib(baseline), "warm_mib": _mib(warm),
            "peak_mib": _mib(peak), "increment_mib": _mib(peak - baseline), "step_increment_mib": _mib(peak - warm)}


def measure_eval(cfg: dict, device: torch.device) -> dict:
    """Peak memory of ``noisy_accuracy`` of ``cfg`` (a :func:`evaluation` configuration), in this process,
    with the estimate n·M of :func:`trial_memory` for a batched pass."""
    meter = Meter(device)
    model = _model(cfg, device).eval()
    x, y = _data(cfg, cfg["images"], device)
    b = cfg["batch"]
    loader = [(x[i : i + b], y[i : i + b]) for i in range(0, cfg["images"], b)]
    if getattr(model, "layer_shapes", None) is not None:  # a Hopfield network: its relaxation predicts
        options = METHODS.build_options("CEP", {"eval_iterations": cfg["eval_iterations"]})
        predict: Callable[[torch.Tensor], torch.Tensor] = METHODS.create("CEP", model, options, generator=None).predict
    else:
        predict = torch.no_grad()(model)
    noise = build("additive_gaussian", EVAL_SIGMA)
    per_trial = trial_memory(model, loader[0][0], noise)
    budget = default_memory_budget(device)
    path, trials = cfg["path"], cfg["trials"]
    per_pass = {"sequential": 1, "batched": min(trials, budget // per_trial), "vmap": trials}[path]
    hopfield = getattr(model, "layer_shapes", None) is not None

    def run(batches: list) -> None:
        if path == "vmap":  # as trials._batched_trials scores a pass, without the fold and the checks
            with torch.no_grad():
                stacked = trials_module.draw_trials(model, noise, list(range(trials)))
                for xb, _ in batches:
                    trials_module.batched_forward(model, stacked, xb, predict if hopfield else None)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("error", BatchedTrialsWarning)  # a fallback would measure the sequential path
            noisy_accuracy(predict, model, batches, noise, trials=trials, seed=0, batch_trials=path == "batched")

    release_free_memory()
    baseline = meter.now()
    run(loader[:1])  # the warm-up: the same evaluation on the first test batch
    reset, warm = meter.reset(), meter.now()
    start = time.perf_counter()
    with counting_passes() as passes:
        run(loader)
    meter.sync()
    seconds = time.perf_counter() - start
    peak = meter.peak()
    estimate = None if path == "sequential" else per_pass * per_trial
    return {**_common(cfg, meter, reset, baseline, warm, peak), "path": path, "trials": trials,
            "trials_per_pass": per_pass, "passes": passes, "eval_batch": b, "images": cfg["images"],
            "parameter_mib": _mib(_parameter_bytes(model)), "estimate_per_trial_mib": _mib(per_trial),
            "estimate_mib": _mib(estimate), "budget_mib": _mib(budget),
            "measured_over_estimate": None if estimate is None else (peak - warm) / estimate, "seconds": seconds}


@contextlib.contextmanager
def counting_passes() -> Iterator[dict[str, int]]:
    """Inside the block, count the calls of ``analoglearn.trials``' pass functions (``batched_forward``:
    vmapped; ``folded_forward``, where the installed version has it: the trials folded into the batch
    dimension), so that a row says which way the batched trials ran."""
    counts: dict[str, int] = {}
    saved = {name: getattr(trials_module, name) for name in ("batched_forward", "folded_forward")
             if hasattr(trials_module, name)}

    def counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] = counts.get(name, 0) + 1
            return fn(*args, **kwargs)
        return wrapper

    try:
        for name, fn in saved.items():
            setattr(trials_module, name, counted(name, fn))
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(trials_module, name, fn)


def measure(cfg: dict, device: str = "cpu", threads: int = 1) -> dict:
    """One configuration's row, measured in this process (an ``error`` row if it fails)."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    try:
        row = (measure_step if cfg["kind"] == "train_step" else measure_eval)(cfg, dev)
        return {**row, "sources": sources()}
    except Exception as err:
        return {"kind": cfg["kind"], "config": cfg, "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()}


def measure_fresh(cfg: dict, device: str = "cpu", threads: int = 1) -> dict:
    """:func:`measure` in a fresh ``spawn`` process, so that its peak is its own."""
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            return pool.submit(measure, cfg, device, threads).result()
    except Exception as err:  # the process died (out of memory, killed)
        return {"kind": cfg["kind"], "config": cfg, "error": f"{type(err).__name__}: {err}"}


# ---------------------------------------------------------------- report


def _slope(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares slope and intercept of ``points`` (None under two distinct abscissae)."""
    if len({p[0] for p in points}) < 2:
        return None
    n = len(points)
    mx, my = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    slope = sum((px - mx) * (py - my) for px, py in points) / sum((px - mx) ** 2 for px, _ in points)
    return slope, my - slope * mx


def scaling(rows: list[dict]) -> list[dict]:
    """Rows of the fitted step increments (kinds ``fit_train_step``, ``fit_noisy_eval``): per example
    (training steps, by model, method, perturbation and schedule) and per trial (batched evaluation,
    next to the estimate M per trial)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if "error" in r:
            continue
        if r["kind"] == "train_step":
            groups[("train_step", r["model"], r["input"], r["method"], r["perturb"], r["iterations"])].append(r)
        elif r["path"] != "sequential":
            groups[("noisy_eval", r["model"], r["input"], r["path"], r["eval_batch"])].append(r)
    out = []
    for key, members in groups.items():
        if key[0] == "train_step":
            fit = _slope([(r["batch"], r["step_increment_mib"]) for r in members])
            if fit:
                out.append({"kind": "fit_train_step", "model": key[1], "input": key[2], "method": key[3],
                            "perturb": key[4], "iterations": key[5], "batches": [r["batch"] for r in members],
                            "kib_per_example": fit[0] * 1024, "intercept_mib": fit[1]})
        else:
            fit = _slope([(r["trials_per_pass"], r["step_increment_mib"]) for r in members])
            if fit:
                estimate = members[0]["estimate_per_trial_mib"]
                out.append({"kind": "fit_noisy_eval", "model": key[1], "input": key[2], "path": key[3],
                            "eval_batch": key[4],
                            "trials": [r["trials"] for r in members], "mib_per_trial": fit[0],
                            "intercept_mib": fit[1], "estimate_per_trial_mib": estimate,
                            "measured_over_estimate_per_trial": fit[0] / estimate})
    return out


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict], fits: list[dict]) -> str:
    """The markdown tables of ``rows`` and of their fitted scaling."""
    lines = []
    steps = [r for r in rows if r["kind"] == "train_step" and "error" not in r]
    if steps:
        lines += ["| model | input | method | perturb | iterations | batch | baseline MiB | peak MiB "
                  "| peak − baseline MiB | step increment MiB | KiB / example | step s |",
                  "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['input']} | {r['method']} | {r['perturb']} | {r['iterations'] or '—'} "
                  f"| {r['batch']} | {r['baseline_mib']:.0f} | {r['peak_mib']:.0f} | {r['increment_mib']:.1f} "
                  f"| {r['step_increment_mib']:.1f} | {r['step_increment_per_example_kib']:.0f} "
                  f"| {r['seconds']:.2f} |" for r in steps]
        lines.append("")
    evals = [r for r in rows if r["kind"] == "noisy_eval" and "error" not in r]
    if evals:
        lines += ["| model | input | path | T | trials / pass | baseline MiB | peak MiB | peak − baseline MiB "
                  "| step increment MiB | estimate n·M MiB | measured / estimate | eval s |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in evals:
            label = r["model"] + (f" w{r['model_options']['width']:g}" if "width" in r["model_options"] else "")
            lines.append(f"| {label} | {r['input']} | {r['path']} | {r['trials']} | {r['trials_per_pass']} "
                         f"| {r['baseline_mib']:.0f} | {r['peak_mib']:.0f} | {r['increment_mib']:.1f} "
                         f"| {r['step_increment_mib']:.1f} | {_f(r['estimate_mib'])} "
                         f"| {_f(r['measured_over_estimate'], 2)} | {r['seconds']:.2f} |")
        lines.append("")
    if fits:
        lines += ["| fit of the step increment (least squares) | per unit | estimate | intercept MiB |",
                  "|---|---:|---:|---:|"]
        for f in fits:
            if f["kind"] == "fit_train_step":
                what = f"{f['model']} {f['method']}" + (f" {f['iterations']}" if f["iterations"] else "") + \
                       ("" if f["perturb"] == "none" else f" + {f['perturb']}") + f", batch {f['batches']}"
                lines.append(f"| {what} | {f['kib_per_example']:.0f} KiB / example | — | {f['intercept_mib']:.1f} |")
            else:
                what = f"{f['model']} {f['path']} eval (batch {f['eval_batch']}), T {f['trials']}"
                lines.append(f"| {what} | {f['mib_per_trial']:.1f} MiB / trial | {f['estimate_per_trial_mib']:.1f} "
                             f"MiB / trial | {f['intercept_mib']:.1f} |")
        lines.append("")
    failed = [r for r in rows if "error" in r]
    lines += [f"failed: {r['config']}: {r['error']}" for r in failed]
    return "\n".join(lines)


def sources() -> dict[str, str | None]:
    """The first 12 hex digits of the SHA-256 of each measured module's source file (which code a row
    measured, where it is being edited), None where it cannot be read."""
    out: dict[str, str | None] = {}
    for name in SOURCES:
        try:
            with open(sys.modules[name].__file__ or "", "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()[:12]
        except (KeyError, OSError):
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few configurations (< 1 minute on a CPU)")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--device", default="cpu", help="cpu (peak RSS) or cuda (max_memory_allocated)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each measurement")
    parser.add_argument("--parts", default="train_step,noisy_eval", help="comma-separated subset of the parts")
    parser.add_argument("--in-process", action="store_true",
                        help="measure every configuration in this process (the default on CUDA; on CPU each "
                             "configuration gets a fresh process)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    fresh = device.type == "cpu" and not args.in_process
    parts = args.parts.split(",")
    if unknown := set(parts) - {"train_step", "noisy_eval"}:
        raise SystemExit(f"unknown part(s) {sorted(unknown)}; parts: train_step, noisy_eval")
    configs = [c for c in configurations(args.quick) if c["kind"] in parts]
    source = sources()
    rows = []
    start = time.perf_counter()
    for cfg in configs:
        row = measure_fresh(cfg, str(device), args.threads) if fresh else measure(cfg, str(device), args.threads)
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
        rows.append(row)
        brief = {k: v for k, v in row.items() if k not in ("traceback", "model_options", "sources")}
        print(f"[{time.perf_counter() - start:5.0f} s] {brief}", file=sys.stderr, flush=True)
    fits = scaling(rows)
    print(table(rows, fits))
    settings = {"quick": args.quick, "device": str(device), "threads": args.threads, "fresh_process": fresh,
                "measure": Meter(device).kind, "configurations": configs, "optimizer": "SGD lr 0.01 momentum 0.9",
                "eval_noise": f"additive_gaussian {EVAL_SIGMA}", "fold_rows": getattr(fold_module, "FOLD_ROWS", None),
                "sources": source, "sources_changed_during_run": any(r.get("sources", source) != source for r in rows),
                "seconds": time.perf_counter() - start}
    return write_result(args.json, "memory", settings, rows + fits, device)


if __name__ == "__main__":
    main()
