"""Throughput of Monte-Carlo noisy evaluation, and the cost of drawing noise next to forward passes.

Compares, for T trials over a synthetic test set of N images on a small CNN:

* ``analoglearn``: :func:`analoglearn.evaluate.noisy_accuracy` (one in-place draw per trial,
  restored from a saved copy of the corrupted tensors only);
* ``naive``: a deep copy of the whole model per trial, corrupted parameter by parameter in a
  Python loop (``p.data += σ·max|W_f|·randn``), the common hand-written evaluation loop;

and times one draw + restore of each noise model against one forward pass over the test set
(Paper B, Jacobson et al., arXiv 2602.07320, §B.1: the noise must cost little next to the forwards).

Then compares, at T = 10 for LeNet and VGG-11, the sequential path (one pass over the test set per
trial) with the batched one (``noisy_accuracy(batch_trials=True)``: the T draws stacked, one vmapped
forward per test batch): seconds, their ratio, whether the per-trial accuracies are identical, and the
peak resident memory of each path. Each path runs in a fresh process (``spawn``) so that its
``ru_maxrss`` is its own; the labels are the clean network's predictions, so every flip counts.

    PYTHONPATH=src python benchmarks/noise_eval_speed.py --quick --json noise_eval_speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import platform
import resource
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import torch
from torch import nn

import analoglearn.nets  # noqa: F401  (registers the models)
from analoglearn.evaluate import BatchedTrialsWarning, accuracy, noisy_accuracy
from analoglearn.noise import build, perturbed
from analoglearn.registry import MODELS

NOISES = {
    "additive_gaussian": {},
    "multiplicative_gaussian": {},
    "pcm": {"t_inference": 86400.0},
    "quantize": {"levels": 16},
    "stuck_at": {"p": 0.01},
}


def naive_trials(model: nn.Module, loader, trials: int, sigma: float, seed: int) -> list[float]:
    """The hand-written loop: deep copy, corrupt every conv/linear weight, evaluate."""
    out = []
    for t in range(trials):
        torch.manual_seed(seed + t)
        noisy = copy.deepcopy(model)
        for m in noisy.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight.data
                ref = w.abs().flatten(1).amax(1).view(-1, *([1] * (w.dim() - 1)))
                w += sigma * ref * torch.randn_like(w)
        noisy.eval()
        with torch.no_grad():
            out.append(accuracy(noisy, loader).top1)
    return out


def seconds(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_path(name: str, width: float, images: int, batch: int, trials: int, batched: bool, threads: int,
             device: str, repeat: int) -> dict:
    """In a fresh process: the median seconds of ``noisy_accuracy`` (sequential or batched) over
    ``repeat`` runs after a warm-up, its per-trial accuracies, and the resident memory (KiB) before
    the first evaluation and at its peak (``ru_maxrss``)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    opts = MODELS.build_options(name, {"width": width})
    model = MODELS.create(name, opts, in_shape=(3, 32, 32), num_classes=10, generator=gen).to(device).eval()
    x = torch.randn(images, 3, 32, 32, generator=gen).to(device)
    with torch.no_grad():
        y = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, images, batch)])
    loader = [(x[i : i + batch], y[i : i + batch]) for i in range(0, images, batch)]
    predict = torch.no_grad()(model)
    noise = build("additive_gaussian", 0.05)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = {}

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("error", BatchedTrialsWarning)  # a fallback would time the wrong path
            out["result"] = noisy_accuracy(predict, model, loader, noise, trials=trials, batch_trials=batched)
        sync()

    total = seconds(run, repeat)
    return {"seconds": total, "per_trial": out["result"].per_trial, "rss_before_kib": before,
            "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "parameters": sum(p.numel() for p in model.parameters())}


def compare_batched(args, device: torch.device, images: int) -> list[dict]:
    """Sequential vs batched trials for each model of ``--compare``: one fresh process per path."""
    threads = args.threads or torch.get_num_threads()
    repeat = 1 if args.quick else 3
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for name in args.compare.split(","):
        width = args.width if name.startswith("vgg") else 1.0
        runs = {}
        for batched in (False, True):
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                runs[batched] = pool.submit(one_path, name, width, images, args.batch, args.compare_trials,
                                            batched, threads, str(device), repeat).result()
        seq, bat = runs[False], runs[True]
        rows.append({"model": name, "width": width, "parameters": seq["parameters"], "images": images,
                     "trials": args.compare_trials, "sequential_s": seq["seconds"], "batched_s": bat["seconds"],
                     "sequential_over_batched": seq["seconds"] / bat["seconds"],
                     "identical": seq["per_trial"] == bat["per_trial"],
                     "max_abs_diff_pct": max(abs(a - b) for a, b in zip(seq["per_trial"], bat["per_trial"])),
                     "sequential_peak_rss_mib": seq["peak_rss_kib"] / 1024,
                     "batched_peak_rss_mib": bat["peak_rss_kib"] / 1024,
                     "sequential_rss_before_mib": seq["rss_before_kib"] / 1024,
                     "batched_rss_before_mib": bat["rss_before_kib"] / 1024})
    return rows


def print_comparison(rows: list[dict]) -> None:
    """The batched-vs-sequential table."""
    print(f"{'model (T trials, N images)':<30} {'sequential s':>12} {'batched s':>10} {'seq/batched':>11} "
          f"{'identical':>9} {'peak RSS seq MiB':>16} {'batched MiB':>11} {'start seq/bat MiB':>17}")
    for r in rows:
        label = f"{r['model']} w{r['width']:g} (T={r['trials']}, N={r['images']})"
        start = f"{r['sequential_rss_before_mib']:.0f}/{r['batched_rss_before_mib']:.0f}"
        print(f"{label:<30} {r['sequential_s']:12.3f} {r['batched_s']:10.3f} {r['sequential_over_batched']:11.2f} "
              f"{r['identical']!s:>9} {r['sequential_peak_rss_mib']:16.0f} {r['batched_peak_rss_mib']:11.0f} "
              f"{start:>17}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small test set, few trials (CPU smoke run)")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--model", default="vgg11")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--images", type=int, default=None, help="test-set size N (default 2000, quick 256)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--trials", type=int, default=None, help="trials T (default 10, quick 3)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compare", default="lenet,vgg11",
                        help="models of the batched-vs-sequential comparison (comma-separated; '' skips it)")
    parser.add_argument("--compare-trials", type=int, default=10, help="trials T of the comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = args.images or (256 if args.quick else 2000)
    trials = args.trials or (3 if args.quick else 10)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    opts = MODELS.build_options(args.model, {"width": args.width})
    model = MODELS.create(args.model, opts, in_shape=(3, 32, 32), num_classes=10, generator=gen)
    model = model.to(device).eval()
    x = torch.randn(images, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (images,), generator=gen).to(device)
    loader = [(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, images, args.batch)]
    predict = torch.no_grad()(model)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn):
        def run():
            fn()
            sync()
        return run

    repeat = 3 if args.quick else 5
    forward = seconds(timed(lambda: accuracy(predict, loader)), repeat)
    noise = build("additive_gaussian", 0.05)
    ours = seconds(timed(lambda: noisy_accuracy(predict, model, loader, noise, trials=trials)), repeat)
    naive = seconds(timed(lambda: naive_trials(model, loader, trials, 0.05, 0)), repeat)
    draws = {}
    for name, options in NOISES.items():
        model_noise = build(name, **options)
        g = torch.Generator().manual_seed(1)

        def one_draw(model_noise=model_noise, g=g):
            with perturbed(model, model_noise, g):
                pass

        draws[name] = seconds(timed(one_draw), max(repeat, 5))
    comparison = compare_batched(args, device, images) if args.compare else []
    report(args, device, images, trials, forward, ours, naive, draws, model, comparison)


def report(args, device, images, trials, forward, ours, naive, draws, model, comparison) -> None:
    """Print the tables and write the JSON."""
    params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model} width {args.width} ({params} parameters), N = {images} images, T = {trials}")
    print(f"{'evaluation':<34} {'s/trial':>9} {'images/s':>10} {'× forward':>10}")
    rows = (("forward pass over the test set", forward * trials), ("analoglearn noisy_accuracy", ours),
            ("naive deep-copy loop", naive))
    for label, total in rows:
        per = total / trials
        print(f"{label:<34} {per:9.4f} {images / per:10.0f} {per / forward:10.3f}")
    print(f"naive / analoglearn: {naive / ours:.2f}×")
    print(f"{'noise model: one draw + restore':<34} {'ms':>9} {'% of forward':>13}")
    for name, t in draws.items():
        print(f"{name:<34} {1e3 * t:9.2f} {100 * t / forward:13.2f}")
    if comparison:
        print_comparison(comparison)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
    result = {
        "benchmark": "noise_eval_speed",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "device": str(device),
                    "gpu": gpu, "threads": torch.get_num_threads()},
        "torch": torch.__version__,
        "settings": {"model": args.model, "width": args.width, "parameters": params, "images": images,
                     "batch": args.batch, "trials": trials, "quick": args.quick},
        "forward_s": forward,
        "analoglearn_s_per_trial": ours / trials,
        "naive_s_per_trial": naive / trials,
        "naive_over_analoglearn": naive / ours,
        "draw_restore_ms": {k: 1e3 * v for k, v in draws.items()},
        "draw_over_forward": {k: v / forward for k, v in draws.items()},
        "batched_vs_sequential": comparison,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
