"""The ``analoglearn`` command: train, evaluate, diagnose, data, list.

Every user mistake ends in one line on stderr saying what is wrong and what would be valid, and
exit status 2; no traceback; and, since everything is validated before anything is written,
nothing on disk changed. A write that fails on the way (a full disk, a read-only file system)
says which, keeps every file already written intact, and exits 2. A training run stopped by
SIGTERM or SIGINT writes a checkpoint first and exits with 128 + the signal number (143, 130).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .errors import AnalogLearnError, ConfigError, Preempted

# ---------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import fit

    if args.resume:
        if args.config or args.overrides:
            raise AnalogLearnError("--resume continues a run with its saved config: give no --config or overrides")
        run_dir = Path(args.resume)
        summary = fit(None, run_dir, resume=True)
    else:
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else Path(args.out) / default_run_name(cfg)
        summary = fit(cfg, run_dir)
    from .distributed import world

    if not world().writer:  # data-parallel: rank 0 reports
        return 0
    print(f"results: {run_dir}  (config.yaml, metrics.jsonl, summary.json, last.pt, best.pt)")
    if summary.get("test_accuracy") is not None:
        print(f"test accuracy: {summary['test_accuracy']:.2f}%")
    return 0


def default_run_name(cfg: Any) -> str:
    """``<dataset>-<model>-<method>[+<perturbation>]-s<seed>-<config digest>``."""
    method = cfg.method.name if cfg.perturb.name == "none" else f"{cfg.method.name}+{cfg.perturb.name}"
    return f"{cfg.data.name}-{cfg.model.name}-{method}-s{cfg.seed}-{cfg.digest()}".lower()


# ---------------------------------------------------------------- evaluate


def parse_strengths(text: str) -> list[float]:
    """``"0,0.02,0.05"`` → ``[0.0, 0.02, 0.05]``."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AnalogLearnError(f"--strengths must be comma-separated numbers like 0,0.02,0.05; got {text!r}") from None
    if not values:
        raise AnalogLearnError("--strengths needs at least one number, e.g. 0,0.02,0.05")
    return values


def trials_per_pass(text: str) -> int:
    """The N of ``--batch-trials N`` (its range is checked as ``eval.batch_trials``)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of trials per pass, got {text!r} (give RUN_DIR "
                                         "before --batch-trials, or write --batch-trials=N)") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .assess import evaluate_and_write, table
    from .build import check_eval
    from .config import build_eval, parse_override
    from .storage import check_output_file
    from .train import load_trainer

    common = {"trials": args.trials, "subset": args.subset, "bn": args.bn, "seed": args.seed,
              "checkpoint": args.checkpoint, "batch_trials": args.batch_trials, "memory_budget": args.memory_budget}
    if args.analog is not None:
        batched = args.batch_trials is not False or args.memory_budget is not None
        if args.noise is not None or args.strengths is not None or args.option or batched:
            raise AnalogLearnError("--analog takes the swept values and any weight noise in its mapping ({tile: "
                                   "{...}, sweep: out_noise, values: [...], noise: {name: ..., strength: ...}}); give "
                                   "no --noise, --strengths, --option, --batch-trials or --memory-budget with "
                                   "it (the tile model runs one pass per trial)")
        _, entry = parse_override(f"analog={args.analog}")
        if not isinstance(entry, dict):
            raise AnalogLearnError("--analog must be a YAML mapping like '{tile: {in_range: calibrated, dac_bits: "
                                   f"8}}, sweep: out_noise, values: [0, 0.04]}}'; got {args.analog!r}")
        evaluation = build_eval({"analog": [entry], **common})
        kind = "analog"
    else:
        options = {}
        for text in args.option:
            path, value = parse_override(text)
            options[".".join(path)] = value
        spec = {"name": args.noise or "additive_gaussian",
                "strengths": parse_strengths(args.strengths or "0,0.02,0.03,0.05,0.07"), **options}
        evaluation = build_eval({"noise": [spec], **common})
        kind = "noise"
    run_dirs = expand_run_dirs(args.run_dirs)
    if len(run_dirs) > 1 and (args.json or args.csv):
        raise AnalogLearnError(f"--json and --csv name the output of one run; {len(run_dirs)} runs were given "
                               "(without them, each run gets its eval-*.json and .csv)")
    if args.check_every is not None and args.eval_tolerance is None:
        raise AnalogLearnError("--check-every sets how often --eval-tolerance's residual is checked; give "
                               "--eval-tolerance TAU with it")
    jobs = []
    for run_dir in run_dirs:  # every run and output checked before the first evaluation
        trainer = load_trainer(run_dir, f"{evaluation.checkpoint}.pt", log=lambda line: None)
        relaxation = _eval_relaxation(trainer, run_dir, args.eval_tolerance, args.check_every)
        label = file_label(evaluation.noise[0]) if kind == "noise" else analog_file_label(evaluation.analog[0])
        label += f"-tol{args.eval_tolerance:g}" if relaxation else ""
        json_path = Path(args.json) if args.json else Path(run_dir) / (
            f"eval-{label}-{evaluation.checkpoint}-t{evaluation.trials}.json")
        csv_path = Path(args.csv) if args.csv else json_path.with_suffix(".csv")
        for path, what in ((json_path, "--json"), (csv_path, "--csv")):
            check_output_file(path, what if getattr(args, what[2:]) else "the evaluation's output")
        check_eval(evaluation, trainer.model)
        jobs.append((run_dir, trainer, json_path, csv_path, relaxation))
    for run_dir, trainer, json_path, csv_path, relaxation in jobs:
        result = evaluate_and_write(trainer, evaluation, json_path, csv_path, kind, relaxation)
        if len(run_dirs) > 1:
            print(f"== {run_dir}")
        print(table(result))
        print(f"written: {json_path}, {csv_path}")
    return 0


def _eval_relaxation(trainer: Any, run_dir: Path, tolerance: float | None,
                     check_every: int | None) -> dict[str, Any] | None:
    """Set ``--eval-tolerance`` / ``--check-every`` on an energy-based run's evaluation relaxation (the
    training's own settings stay in its config); the settings to record in the output, or None."""
    if tolerance is None:
        return None
    import dataclasses

    method = trainer.method
    if not hasattr(method, "eval_minimizer"):
        raise AnalogLearnError(f"--eval-tolerance stops a Hopfield network's evaluation relaxation; {run_dir} "
                               f"is trained with {trainer.cfg.method.name!r}, which has none")
    every = method.eval_minimizer.check_every if check_every is None else check_every
    try:
        method.eval_minimizer = dataclasses.replace(method.eval_minimizer, tolerance=tolerance, check_every=every)
    except ConfigError as err:
        raise AnalogLearnError(f"--eval-tolerance {tolerance:g} --check-every {every}: {err}") from None
    minimizer = method.eval_minimizer
    return {"eval_tolerance": minimizer.tolerance, "check_every": minimizer.check_every,
            "stop": "example" if minimizer.per_example else "batch",
            "eval_iterations": method.options.eval_iterations}


def expand_run_dirs(paths: list[str]) -> list[Path]:
    """Run directories as given, or the finished runs under a sweep directory (sorted)."""
    from .runs import CONFIG, RunDir

    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if (path / CONFIG).is_file() or not path.is_dir():
            found.append(path)  # a run directory (or a mistake, which load_trainer names)
            continue
        runs = sorted(c.parent for c in path.rglob(CONFIG) if RunDir(c.parent).finished())
        if not runs:
            raise AnalogLearnError(f"{str(path)!r} holds no finished run; give run directories or a sweep directory")
        found += [r for r in runs if r not in found]
    return found


def file_label(spec: Any) -> str:
    """A file-name-safe label of a noise entry: its name, or its parts for a composition."""
    from .noise import from_config
    from .report import file_safe

    return file_safe(from_config({"name": spec.name, **spec.options}).label)


def analog_file_label(spec: Any) -> str:
    """A file-name-safe label of an ``eval.analog`` entry (its corruption's label, shortened with a
    digest when long, since the fields of a tile make long names)."""
    import hashlib

    from .analog.corruption import from_spec
    from .report import file_safe

    label = file_safe(from_spec(spec).label)
    return label if len(label) <= 80 else f"{label[:60]}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------- diagnose


def cmd_diagnose_gradients(args: argparse.Namespace) -> int:
    from .energy.diagnose import format_table, gradient_fidelity
    from .storage import check_output_file, write_json

    if not args.beta > 0:
        raise AnalogLearnError(f"--beta must be > 0, got {args.beta}")
    if args.batch_size < 1:
        raise AnalogLearnError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if not 0 <= args.seed < 2**63:
        raise AnalogLearnError(f"--seed must be an integer in [0, 2^63 - 1], got {args.seed}")
    if args.json:
        check_output_file(args.json, "--json")
    from .energy.presets import HopfieldOptions

    options = HopfieldOptions(readout=args.readout, output_gain=args.output_gain)
    results = gradient_fidelity(args.preset, args.beta, batch_size=args.batch_size, seed=args.seed,
                                algorithms=args.algorithms.split(",") if args.algorithms else None, options=options)
    print(format_table(results))
    if args.json:
        write_json(Path(args.json), results)
        print(f"written: {args.json}")
    return 0


# ---------------------------------------------------------------- data and listings


def cmd_data_list(args: argparse.Namespace) -> int:
    from . import data
    from .registry import DATASETS

    for name in DATASETS.names():
        print(f"{name:<13} {data.status(name, root=args.root).detail}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from . import data
    from .registry import DATASETS

    names = [DATASETS.canonical(name) for name in args.names]  # fail fast on a bad name, before any download
    for name in names:
        path = data.fetch(name, root=args.root)
        print(f"{name}: {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .plugins import load_builtins
    from .registry import DATASETS, METHODS, MODELS, NOISE_MODELS, PERTURBATIONS

    load_builtins()
    if args.what == "analog":
        from .analog.tile import describe

        rows = describe()
    elif args.what == "schedules":
        from .schedule import NAMES

        rows = list(NAMES.items())
    else:
        registries = {"models": MODELS, "methods": METHODS, "perturbations": PERTURBATIONS, "datasets": DATASETS,
                      "noise": NOISE_MODELS}
        rows = registries[args.what].describe()
    for name, summary in rows:
        print(f"{name:<20} {summary}")
    return 0


# ---------------------------------------------------------------- sweeps and reports


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import sweep

    if args.cpus_per_run < 1:
        raise AnalogLearnError(f"--cpus-per-run must be a whole number ≥ 1, got {args.cpus_per_run}")
    out = args.out or str(Path("runs") / Path(args.grid).stem)
    if args.dry_run:
        from collections import Counter

        from .sweep import format_axes, plan

        states = plan(args.grid, out)
        for job, state in states:
            print(f"{state:<9} {job.run_dir}  {format_axes(job.axes)}")
        counts = Counter(state for _, state in states)
        print(f"{len(states)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return 0
    results = sweep(args.grid, out, executor=args.executor, address=args.address, cpus_per_run=args.cpus_per_run,
                    skip_failed=args.skip_failed)
    failed = [r for r in results if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in results) for s in ("finished", "skipped", "busy", "failed")}
    busy = f"{counts['busy']} left to another process training them, " if counts["busy"] else ""
    print(f"sweep done: {counts['finished']} run, {counts['skipped']} skipped (already finished), "
          f"{busy}{counts['failed']} failed; runs in {out}")
    for result in failed:
        print(f"failed: {result['run_dir']}: {result['error']} (details in its summary.json)", file=sys.stderr)
    if not failed:
        print(f"next: analoglearn report {out} --out {out}/report")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report
    from .storage import check_output_dir

    out = args.out or str(Path(args.dirs[0]) / "report")
    check_output_dir(out, "--out")
    written = report(args.dirs, out)
    print(f"report: {written['report.md']}  ({len(written) - 1} tables and plots in {out})")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analoglearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model; writes a run directory")
    train.add_argument("--config", help="YAML config file (defaults are used for what it leaves out)")
    train.add_argument("--run-dir", help="run directory to create (default: OUT/<dataset>-<model>-...)")
    train.add_argument("--out", default="runs", help="folder for new run directories (default: runs)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 data.name=FashionMNIST")
    train.set_defaults(handler=cmd_train)

    ev = sub.add_parser("evaluate", help="accuracy of a trained run under weight noise (Monte Carlo)")
    ev.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="run directories written by 'analoglearn train', or sweep directories (their finished runs)")
    ev.add_argument("--noise", help="noise model ('analoglearn list noise'; default additive_gaussian)")
    ev.add_argument("--strengths", help="comma-separated strengths (σ, drift time, fault probability, levels: "
                    "see the model; default 0,0.02,0.03,0.05,0.07)")
    ev.add_argument("--analog", metavar="YAML",
                    help="evaluate through the analog tile model instead: '{tile: {in_range: calibrated, dac_bits: 8, "
                    "adc_bits: 8, out_bound: 10}, sweep: out_noise, values: [0, 0.02, 0.04], noise: {name: "
                    "additive_gaussian, strength: 0.05}}' ('analoglearn list analog')")
    ev.add_argument("--trials", type=int, default=10, help="noise draws per strength, each fixed for the test set")
    ev.add_argument("--checkpoint", default="last", help="last or best")
    ev.add_argument("--subset", type=int, help="evaluate on a fixed subset of this many test images")
    ev.add_argument("--bn", default="keep", help="BatchNorm statistics under noise: keep or recalibrate")
    ev.add_argument("--seed", type=int, default=0, help="seed of the noise draws (same seed: paired comparisons)")
    ev.add_argument("--batch-trials", nargs="?", const=True, default=False, type=trials_per_pass, metavar="N",
                    help="run the trials together, all (or at most N) per pass as memory allows: the same "
                    "numbers (vmapped on a GPU; folded into the batch on a CPU, about as fast as one pass per "
                    "trial). Give it after RUN_DIR or as --batch-trials=N")
    ev.add_argument("--memory-budget", type=int, metavar="BYTES",
                    help="bytes one batched pass may take (default: half the memory free on the device)")
    ev.add_argument("--eval-tolerance", type=float, metavar="TAU",
                    help="energy-based runs: stop each example's relaxation when an iteration moves its state by "
                    "less than TAU (eval_iterations stays the cap; recorded in the output, whose default name "
                    "gets -tolTAU)")
    ev.add_argument("--check-every", type=int, metavar="K",
                    help="with --eval-tolerance: check the residual every K iterations (default: the run's)")
    ev.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="noise-model option, e.g. --option scale=tensor-max (repeatable)")
    ev.add_argument("--json", help="JSON output (default RUN_DIR/eval-<noise>-<checkpoint>-t<trials>.json)")
    ev.add_argument("--csv", help="CSV output (default beside the JSON)")
    ev.set_defaults(handler=cmd_evaluate)

    diag = sub.add_parser("diagnose", help="diagnostics of the energy-based estimators")
    diag_sub = diag.add_subparsers(dest="diagnose_command", required=True)
    grads = diag_sub.add_parser("gradients", help="every estimator's gradient against the true gradient (float64)")
    grads.add_argument("--preset", default="tiny", help="energy-based network: tiny, dchn_cpu, dchn_deep_cpu, "
                       "dchn32, dchn_vgg or hopfield_resnet13")
    grads.add_argument("--readout", default="energy", help="energy (squared error, paper A) or cross_entropy")
    grads.add_argument("--output-gain", type=float, default=1.0, help="output gain γ of the cost (> 0)")
    grads.add_argument("--beta", type=float, default=0.05, help="nudging strength β > 0")
    grads.add_argument("--batch-size", type=int, default=8, help="examples in the random batch")
    grads.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    grads.add_argument("--algorithms", help="comma-separated subset, e.g. CEP,PEP,NEP (default: all nine)")
    grads.add_argument("--json", help="write the results as JSON (keys: algorithm names)")
    grads.set_defaults(handler=cmd_diagnose_gradients)

    data = sub.add_parser("data", help="list or fetch datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    listing = data_sub.add_parser("list", help="where each dataset was found, or how to get it")
    listing.add_argument("--root", help="data root (default $ANALOGLEARN_DATA or ~/.cache/analoglearn)")
    listing.set_defaults(handler=cmd_data_list)
    fetch = data_sub.add_parser("fetch", help="download and verify datasets")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR100")
    fetch.add_argument("--root", help="data root (default $ANALOGLEARN_DATA or ~/.cache/analoglearn)")
    fetch.set_defaults(handler=cmd_data_fetch)

    grid = sub.add_parser("sweep", help="run a grid of runs (skips finished ones, resumes interrupted ones)")
    grid.add_argument("grid", help="grid YAML file (see recipes/*/ for examples)")
    grid.add_argument("--out", help="folder of the grid's run directories (default: runs/<grid name>)")
    grid.add_argument("--executor", default="inprocess", help="inprocess (default) or ray")
    grid.add_argument("--address", help="address of an existing Ray cluster (default: start a local one)")
    grid.add_argument("--cpus-per-run", type=int, default=1, help="CPUs per run on a cluster without GPUs")
    grid.add_argument("--dry-run", action="store_true",
                      help="list the runs and their state (new, partial, running, failed, finished); run nothing")
    grid.add_argument("--skip-failed", action="store_true",
                      help="do not retry runs that failed in an earlier sweep (default: retry them)")
    grid.set_defaults(handler=cmd_sweep)

    rep = sub.add_parser("report", help="tables (Markdown, CSV) and plots (PNG) from run directories")
    rep.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    rep.add_argument("--out", help="output folder (default: DIR/report)")
    rep.set_defaults(handler=cmd_report)

    lister = sub.add_parser("list", help="list registered models, methods, datasets, noise models, or the analog "
                                         "tile settings and device models")
    lister.add_argument("what", choices=["models", "methods", "perturbations", "schedules", "datasets", "noise",
                                         "analog"])
    lister.set_defaults(handler=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``analoglearn`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except AnalogLearnError as err:
        print(f"analoglearn: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except Preempted as stop:
        print(f"analoglearn: {stop}", file=sys.stderr)
        return stop.exit_code
    except BrokenPipeError:  # the reader of our output went away (``analoglearn list models | head``)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush is silent
        return 141
    except (MemoryError, RuntimeError) as err:
        text = str(err)
        if not isinstance(err, MemoryError) and "out of memory" not in text and "can't allocate memory" not in text:
            raise
        print("analoglearn: error: out of memory: use a smaller batch (data.batch_size, data.eval_batch_size, "
              "--batch-size) or a smaller model; a training run keeps its last checkpoint (resume with "
              "'analoglearn train --resume RUN_DIR')", file=sys.stderr)
        return 2
    except OSError as err:
        from .storage import storage_message

        print(f"analoglearn: error: {storage_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("analoglearn: interrupted; continue a training run with 'analoglearn train --resume RUN_DIR'",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
