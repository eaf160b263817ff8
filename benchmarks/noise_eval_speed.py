"""Throughput of Monte-Carlo noisy evaluation, and the cost of drawing noise next to forward passes.

Compares, for T trials over a synthetic test set of N images on a small CNN:

* ``analoglearn``: :func:`analoglearn.evaluate.noisy_accuracy` (one in-place draw per trial,
  restored from a saved copy of the corrupted tensors only);
* ``naive``: a deep copy of the whole model per trial, corrupted parameter by parameter in a
  Python loop (``p.data += σ·max|W_f|·randn``), the common hand-written evaluation loop;

and times one draw + restore of each noise model against one forward pass over the test set
(Paper B, Jacobson et al., arXiv 2602.07320, §B.1: the noise must cost little next to the forwards).

    PYTHONPATH=src python benchmarks/noise_eval_speed.py --quick --json noise_eval_speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch
from torch import nn

import analoglearn.nets  # noqa: F401  (registers the models)
from analoglearn.evaluate import accuracy, noisy_accuracy
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
    report(args, device, images, trials, forward, ours, naive, draws, model)


def report(args, device, images, trials, forward, ours, naive, draws, model) -> None:
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
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
