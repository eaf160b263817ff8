"""Relaxations that stop when they have converged: the tolerance stop with a check interval.

Four parts (``--parts``), each timed in one run (ratios, not absolute times, are what compare):

* ``eval``: noisy evaluation of a **trained** Hopfield network (a ``dchn_cpu`` run of the CPU recipe,
  ``--run``), under additive Gaussian weight noise σ·max|W_f| on ``--images`` test images, ``--trials``
  draws: the fixed 60-iteration relaxation (today's default), then ``eval_tolerance`` τ with the
  residual checked every k iterations (k = 1: what ``tolerance`` did first), the whole batch stopping
  together (``stop: batch``) or each example on its own (``stop: example``, the default). With
  ``--baseline TREE`` the first row is the fixed evaluation of an earlier version of the package
  (``TREE/src``), run in a subprocess of the same run. Reported: seconds, mean iterations per example,
  accuracy per trial, images whose class changed vs the first row.
* ``batched``: the same noisy evaluation (fixed 60 iterations) with the T trials in one vmapped
  relaxation (``eval.batch_trials``) against one relaxation per trial: seconds, identical accuracies.
* ``dchn32`` (``--dchn32``): a CEP step of ``dchn32`` on random weights (batch ``--batch``, 60 + 2×15,
  from zero), fp32 and bf16: the fixed eager schedule, the tolerance stop (τ, k = 5), and the stop
  plus the compiled sweep (``method.compile``): seconds per step (after a compiling warm-up step) and
  the cosine of the gradient to the fixed schedule's.
* ``step``: a CEP training step of the same trained network at the paper's schedule (60 free,
  2×15 nudged iterations, warm start from the previous batch's free state) with and without the
  tolerance: seconds per step, iterations of the free phase, cosine and relative difference of the
  gradient to the fixed schedule's.

    .venv/bin/python benchmarks/relax_stop.py --run runs/ebl-cpu-mnist/<CEP run> --json relax_stop.json

The run comes from ``analoglearn sweep recipes/analog-chip/ebl-train.yaml --out runs/ebl-cpu-mnist``
(dchn_cpu trained on MNIST; no run is committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import write_result

from analoglearn.energy.estimators import estimate, onehot
from analoglearn.evaluate import noisy_accuracy, trial_seed
from analoglearn.noise import build
from analoglearn.train import load_trainer


def batches(trainer, images: int):
    """The first ``images`` test images as (x, y) batches of the run's evaluation batch size."""
    seen = 0
    for x, y in trainer.test_loader:
        if seen >= images:
            break
        x, y = x[: images - seen], y[: images - seen]
        seen += x.shape[0]
        yield x, y


def noisy_eval(trainer, minimizer, data, trials: int, sigma: float) -> dict:
    """Seconds, accuracy per trial, mean iterations per example, predictions of a noisy evaluation."""
    method, net = trainer.method, trainer.model
    noise = build("additive_gaussian", sigma)
    accuracies, iterations, predictions = [], [], []
    # as method.predict relaxes (no arg-max indices of the input's max-pool), where the package has it
    evaluating = {"input_indices": False} if "input_indices" in inspect.signature(method.free_phase).parameters else {}
    start = time.perf_counter()
    for trial in range(trials):
        generator = torch.Generator().manual_seed(trial_seed(0, noise.label, sigma, trial))
        correct = total = 0
        preds = []
        with torch.no_grad(), noise.applied(net, generator):
            for x, y in data:
                relaxation = method.free_phase(x, method.options.eval_iterations, warm=False, minimizer=minimizer,
                                               **evaluating)
                pred = relaxation.state[-1].argmax(1)
                correct += int((pred == y).sum())
                total += y.numel()
                used = getattr(relaxation, "example_iterations", None)
                iterations += used.tolist() if used is not None else [relaxation.iterations] * y.numel()
                preds.append(pred)
        accuracies.append(100.0 * correct / total)
        predictions.append(torch.cat(preds))
    return {"seconds": time.perf_counter() - start, "accuracy": accuracies,
            "iterations": sum(iterations) / len(iterations), "predictions": predictions}


def baseline_eval(tree: str, args) -> dict:
    """The fixed-schedule noisy evaluation with the package of an earlier source tree (``tree/src``), in a
    subprocess of this run: what the evaluation cost before (same data, draws and iteration count)."""
    settings = json.dumps({"run": args.run, "images": args.images, "trials": args.trials, "sigma": args.sigma,
                           "threads": args.threads})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tree) / "src"), str(Path(__file__).parent)])}
    code = "import relax_stop; relax_stop.baseline_child()"
    out = subprocess.run([sys.executable, "-c", code], input=settings, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_child() -> None:
    """Child of :func:`baseline_eval`: settings as JSON on stdin, the result as JSON on stdout's last line."""
    settings = json.loads(sys.stdin.read())
    torch.set_num_threads(settings["threads"])
    trainer = load_trainer(Path(settings["run"]), "best.pt", log=lambda line: None)
    trainer.model.eval()
    data = list(batches(trainer, settings["images"]))
    result = noisy_eval(trainer, trainer.method.minimizer, data, settings["trials"], settings["sigma"])
    result["predictions"] = [p.tolist() for p in result["predictions"]]
    print(json.dumps(result))


def cep_steps(trainer, minimizer, data, steps: int) -> dict:
    method, net = trainer.method, trainer.model
    settings = dataclasses.replace(method.settings, iterations=15, minimizer=minimizer)
    grads, seconds, used = [], 0.0, []
    warm = None
    for x, y in data[:steps]:
        target = onehot(y, 10, torch.float32)
        start = time.perf_counter()
        init = warm if warm is not None and warm[0].shape[0] == x.shape[0] else net.zero_state(x.shape[0])
        with torch.no_grad():
            free = minimizer.relax(net, x, init, 60)
        g = estimate("CEP", net, x, target, free.state, settings, free.input_drive)
        seconds += time.perf_counter() - start
        warm = free.state
        used.append(free.mean_iterations)
        grads.append(torch.cat([t.flatten() for pair in g for t in pair]))
    return {"seconds_per_step": seconds / len(grads), "free_iterations": sum(used) / len(used), "grads": grads}


def dchn32_part(args) -> list[dict]:
    from analoglearn.energy.methods import EnergyOptions
    from analoglearn.registry import METHODS, MODELS

    generator = torch.Generator().manual_seed(0)
    net = MODELS.create("dchn32", None, in_shape=(3, 32, 32), num_classes=10, generator=generator)
    x = torch.randn((args.batch, 3, 32, 32), generator=generator)
    y = torch.randint(0, 10, (args.batch,), generator=generator)
    target = onehot(y, 10, torch.float32)
    rows = []
    print(f"\ndchn32 CEP step, batch {args.batch}, 60 + 2×15 iterations from zero, random weights")
    print(f"{'precision / mode':<34}{'s/step':>9}{'speed-up':>10}{'free iters':>12}{'cosine':>12}")
    for precision in args.precisions.split(","):
        base = None
        stop = {"tolerance": args.tolerance, "check_every": 5}
        modes = {"fixed, eager": {}, f"τ={args.tolerance:g} k=5 batch, eager": {**stop, "stop": "batch"},
                 f"τ={args.tolerance:g} k=5 example, eager": stop,
                 f"τ={args.tolerance:g} k=5, compiled": {**stop, "compile": True}}
        for name, extra in modes.items():
            options = EnergyOptions(precision=precision, free_iterations=60, nudged_iterations=15, warm_start=False,
                                    **extra)
            method = METHODS.create("CEP", net, options, generator=None)
            with torch.no_grad():
                method.free_phase(x, warm=False)  # warm-up (compiles)
            times, grad, iterations = [], None, 0
            for _ in range(args.repeats):
                start = time.perf_counter()
                with torch.no_grad():
                    free = method.free_phase(x, warm=False)
                g = estimate("CEP", net, x, target, free.state, method.settings, free.input_drive)
                times.append(time.perf_counter() - start)
                grad, iterations = torch.cat([t.flatten() for pair in g for t in pair]), free.mean_iterations
            seconds = min(times)
            base = base or (seconds, grad)
            cosine = float(torch.nn.functional.cosine_similarity(grad.double(), base[1].double(), dim=0))
            print(f"{precision + ' / ' + name:<34}{seconds:>9.3f}{base[0] / seconds:>9.2f}×{iterations:>12.1f}"
                  f"{cosine:>12.6f}")
            rows.append({"part": "dchn32", "precision": precision, "mode": name, "seconds_per_step": seconds,
                         "speedup": base[0] / seconds, "free_iterations": iterations, "cosine": cosine})
    return rows


def eval_part(args, trainer, data, modes) -> list[dict]:
    rows = []
    print(f"noisy evaluation: {args.run}, σ = {args.sigma}, {args.images} images, {args.trials} trials, cap "
          f"{trainer.method.options.eval_iterations} iterations; speed-up against the first row")
    print(f"{'mode':<26}{'seconds':>9}{'speed-up':>10}{'iterations':>12}  accuracy per trial (%)   changed")
    base = None
    evals = [("fixed, " + args.baseline, None) if args.baseline else None] + [(name, m) for name, m in modes]
    evals = list(filter(None, evals))
    timed: dict[str, list[dict]] = {name: [] for name, _ in evals}
    for _ in range(args.rounds):  # round-robin, the fastest round of each mode counts: a shared machine's load
        for name, minimizer in evals:  # drifts over minutes
            timed[name].append(baseline_eval(args.baseline, args) if minimizer is None
                               else noisy_eval(trainer, minimizer, data, args.trials, args.sigma))
    for name, _ in evals:
        result = min(timed[name], key=lambda r: r["seconds"])
        result["predictions"] = [torch.as_tensor(p) for p in result["predictions"]]
        base = base or result
        changed = [int((a != b).sum()) for a, b in zip(result["predictions"], base["predictions"])]
        speed = base["seconds"] / result["seconds"]
        print(f"{name:<26}{result['seconds']:>9.2f}{speed:>9.2f}×{result['iterations']:>12.1f}  "
              f"{', '.join(f'{a:.2f}' for a in result['accuracy']):<24} {changed}")
        rows.append({"part": "eval", "mode": name, "seconds": result["seconds"], "speedup": speed,
                     "iterations": result["iterations"], "accuracy": result["accuracy"], "changed": changed})
    return rows


def batched_part(args, trainer, data) -> list[dict]:
    noise = build("additive_gaussian", args.sigma)
    print(f"\nbatched trials (fixed {trainer.method.options.eval_iterations} iterations, T = {args.trials})")
    timed = {}
    for batched in (False, True):
        start = time.perf_counter()
        with torch.no_grad():
            result = noisy_accuracy(trainer.method.predict, trainer.model, data, noise, trials=args.trials, seed=0,
                                    batch_trials=batched)
        timed[batched] = (time.perf_counter() - start, result.to_dict()["per_trial"])
    ratio = timed[False][0] / timed[True][0]
    print(f"sequential {timed[False][0]:.2f} s, batched {timed[True][0]:.2f} s: {ratio:.2f}×, identical "
          f"{timed[False][1] == timed[True][1]} ({timed[True][1]})")
    return [{"part": "batched", "sequential_seconds": timed[False][0], "batched_seconds": timed[True][0],
             "speedup": ratio, "identical": timed[False][1] == timed[True][1], "accuracy": timed[True][1]}]


def step_part(args, trainer, modes) -> list[dict]:
    rows, train_batches = [], []
    for x, y in trainer.train_loader.epoch(0):
        if len(train_batches) >= args.steps:
            break
        train_batches.append((x, y))
    size = len(train_batches[0][1])
    print(f"\nCEP step at 60 + 2×15 iterations, warm-started, {len(train_batches)} batches of {size}")
    print(f"{'mode':<26}{'s/step':>9}{'speed-up':>10}{'free iters':>12}{'cosine':>12}{'rel. diff':>11}")
    base = None
    for name, minimizer in modes:
        result = cep_steps(trainer, minimizer, train_batches, args.steps)
        base = base or result
        cosines = [float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0)) for a, b in
                   zip(result["grads"], base["grads"])]
        diffs = [float((a - b).norm() / b.norm()) for a, b in zip(result["grads"], base["grads"])]
        speed = base["seconds_per_step"] / result["seconds_per_step"]
        print(f"{name:<26}{result['seconds_per_step']:>9.3f}{speed:>9.2f}×{result['free_iterations']:>12.1f}"
              f"{min(cosines):>12.6f}{max(diffs):>11.2e}")
        rows.append({"part": "step", "mode": name, "seconds_per_step": result["seconds_per_step"], "speedup": speed,
                     "free_iterations": result["free_iterations"], "min_cosine": min(cosines),
                     "max_relative_difference": max(diffs)})
    return rows


PARTS = ("eval", "batched", "step", "dchn32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a trained dchn_cpu run directory")
    parser.add_argument("--parts", default="eval,batched,step", help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--every", default="1,5,10", help="check intervals k to time")
    parser.add_argument("--steps", type=int, default=6, help="training batches of the step part")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dchn32", action="store_true", help="also the dchn32 part (same as adding it to --parts)")
    parser.add_argument("--batch", type=int, default=16, help="batch of the dchn32 part")
    parser.add_argument("--precisions", default="fp32,bf16", help="relaxation precisions of the dchn32 part")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per dchn32 mode (the fastest counts)")
    parser.add_argument("--baseline", metavar="TREE",
                        help="also time the fixed evaluation with the package of an earlier source tree (TREE/src, "
                             "e.g. from `git archive`), in a subprocess: the eval speed-ups are then against it")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of the eval part (all modes in turn; the fastest round of each counts)")
    parser.add_argument("--json")
    args = parser.parse_args()
    parts = set(args.parts.split(",")) | ({"dchn32"} if args.dchn32 else set())
    if parts - set(PARTS):
        parser.error(f"unknown parts {sorted(parts - set(PARTS))}; valid: {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    trainer = load_trainer(Path(args.run), "best.pt", log=lambda line: None)
    trainer.model.eval()
    data = list(batches(trainer, args.images))
    fixed_minimizer = trainer.method.minimizer
    stop = functools.partial(dataclasses.replace, fixed_minimizer, tolerance=args.tolerance)
    every = list(map(int, args.every.split(",")))
    modes = [("fixed", fixed_minimizer)] + [
        (f"τ={args.tolerance:g}, k={k}, batch", stop(check_every=k, per_example=False)) for k in every
    ] + [(f"τ={args.tolerance:g}, k={k}, example", stop(check_every=k)) for k in every]
    rows = []
    if "eval" in parts:
        rows += eval_part(args, trainer, data, modes)
    if "batched" in parts:
        rows += batched_part(args, trainer, data)
    if "step" in parts:
        rows += step_part(args, trainer, modes)
    if "dchn32" in parts:
        rows += dchn32_part(args)
    write_result(args.json, "relax_stop", vars(args), rows)
    if args.json:
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()
