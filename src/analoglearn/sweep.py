"""Grids of runs: expand, skip what is finished, resume what was interrupted, record failures.

A grid file::

    base: ../../configs/lenet-mnist.yaml # a config file (relative to the grid file) or an inline mapping
    overrides: [train.epochs=1]          # optional dotted overrides applied to the base
    variants:                            # optional: a list of runs that differ in several keys at once
      - {data.name: MNIST, model: {name: lenet}}
      - {data.name: FashionMNIST, model: {name: mlp}}
    grid:                                # axes: dotted key → values; the runs are their product (× variants)
      seed: [0, 1, 2]
      method: [{name: sgd}, {name: rwp, sigma: 0.05}]   # a mapping value replaces the whole section

Each run gets the directory ``OUT/<config digest>`` (the digest of its resolved config), so a
rerun finds its runs again: finished ones are skipped (and said so), interrupted ones resume
from their last checkpoint, failed ones are retried (or, with ``skip_failed``, left as they are:
a run that diverged will diverge again). ``OUT/sweep-<grid name>.json`` lists the runs and
their axis values. Executors: ``inprocess`` (default, one run after another) and ``ray`` (one
run per GPU, or per ``cpus_per_run`` CPUs, on a local or existing Ray cluster).

A run being trained by another process (it holds the run's lock, see :meth:`RunDir.lock`) is
left to it and reported ``busy``: several sweeps of one grid into one folder (e.g. the tasks of a
batch-scheduler array on a shared file system) divide its runs between them.
"""

from __future__ import annotations

import itertools
import json
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import apply_overrides, build_config, read_yaml, set_path
from .errors import AnalogLearnError, ConfigError, RunBusy, StorageError
from .runs import CONFIG, RunDir
from .storage import check_output_dir, write_json

EXECUTORS = ("inprocess", "ray")


@dataclass(frozen=True)
class Job:
    """One run of a grid: its axis values, resolved config (plain data) and directory."""

    axes: dict[str, Any]
    config: dict[str, Any]
    run_dir: Path


GRID_KEYS = ("base", "overrides", "variants", "grid")


def load_grid(path: str | Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Read a grid file: ``(base config as plain data, axes)``; malformed grids raise ConfigError.

    ``variants`` become one more axis, named ``variant``, whose values are mappings of dotted keys.
    """
    path = Path(path)
    spec = read_yaml(path)
    unknown = sorted(set(spec) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in grid {str(path)!r}; valid keys: {', '.join(GRID_KEYS)}")
    base = spec.get("base", {})
    if isinstance(base, str):
        base = read_yaml((path.parent / base).resolve())
    if not isinstance(base, dict):
        raise ConfigError(f"'base' of grid {str(path)!r} must be a config file path or a mapping")
    overrides = spec.get("overrides", [])
    if not isinstance(overrides, list):
        raise ConfigError(f"'overrides' of grid {str(path)!r} must be a list of key=value strings")
    axes = spec.get("grid", {})
    if not isinstance(axes, dict):
        raise ConfigError(f"'grid' of grid {str(path)!r} must be a mapping of key → list of values")
    variants = spec.get("variants")
    if variants is not None:
        if not isinstance(variants, list) or not variants or not all(isinstance(v, dict) for v in variants):
            raise ConfigError(f"'variants' of grid {str(path)!r} must be a non-empty list of mappings")
        axes = {"variant": variants, **axes}
    if not axes:
        raise ConfigError(f"grid {str(path)!r} needs a non-empty 'grid' mapping of key → list of values"
                          " (or a 'variants' list)")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"axis {key!r} of grid {str(path)!r} must be a non-empty list of values")
    return apply_overrides(base, [str(o) for o in overrides]), axes


def existing_runs(out: Path) -> dict[str, Path]:
    """Run directories already under ``out``, keyed by their config resolved with today's defaults.

    A run written before a new option was added has a config without it, hence another digest; resolving
    its saved config again fills the new default in, so the grid point still finds it (and skips or
    resumes it) instead of training it again.
    """
    found: dict[str, Path] = {}
    for config in sorted(out.glob(f"*/{CONFIG}")) if out.is_dir() else []:
        try:
            resolved = build_config(read_yaml(config)).to_dict()
        except AnalogLearnError:
            continue  # a config this version cannot read is not a match for anything
        found.setdefault(json.dumps(resolved, sort_keys=True), config.parent)
    return found


def expand(base: dict[str, Any], axes: dict[str, list[Any]], out: str | Path) -> list[Job]:
    """All runs of the grid, each validated (an invalid combination raises before anything runs).

    A grid point whose resolved config equals that of a run already under ``out`` reuses its directory.
    """
    known = existing_runs(Path(out))
    jobs, seen = [], set()
    for values in itertools.product(*axes.values()):
        combo = dict(zip(axes, values))
        raw = json.loads(json.dumps(base))
        for key, value in combo.items():
            for dotted, item in (value.items() if key == "variant" else [(key, value)]):
                set_path(raw, dotted.split("."), item)
        try:
            cfg = build_config(raw)
        except ConfigError as err:
            raise ConfigError(f"grid point {combo}: {err}") from None
        run_dir = known.get(json.dumps(cfg.to_dict(), sort_keys=True), Path(out) / cfg.digest())
        if run_dir not in seen:
            seen.add(run_dir)
            jobs.append(Job(combo, cfg.to_dict(), run_dir))
    return jobs


def run_job(config: dict[str, Any], run_dir: str, threads: int | None = None, verbose: bool = False) -> dict[str, Any]:
    """Run (or skip, or resume) one grid point; never raises for a failed run, records it instead.

    ``verbose`` prints the run's per-epoch lines, prefixed with its directory name.

    A run another process is training (it holds the run's lock) is left to it: ``busy``.

    Returns ``{"status": "finished" | "skipped" | "busy" | "failed", "run_dir", "summary" | "error"}``.
    """
    run = RunDir(run_dir)
    if run.finished():
        return {"status": "skipped", "run_dir": str(run_dir), "summary": run.summary()}
    try:
        with run.lock():
            return _run_locked(run, config, threads, verbose)
    except RunBusy as err:
        return {"status": "busy", "run_dir": str(run_dir), "error": str(err)}


def _run_locked(run: RunDir, config: dict[str, Any], threads: int | None, verbose: bool) -> dict[str, Any]:
    from .train import fit_locked

    run_dir = run.path
    if run.finished():  # finished by another process since the sweep looked
        return {"status": "skipped", "run_dir": str(run_dir), "summary": run.summary()}
    try:
        if threads:
            config = {**config, "train": {**config.get("train", {}), "threads": threads}}
        name = Path(run_dir).name

        def log(line: str) -> None:
            if verbose:
                print("\n".join(f"    [{name}] {part}" for part in line.splitlines()), flush=True)

        if run.exists():
            summary = fit_locked(None, run_dir, resume=True, log=log)
        else:
            summary = fit_locked(build_config(config), run_dir, log=log)
    except StorageError:
        raise  # a full disk or a read-only folder fails every later run too: stop the sweep, say so once
    except Exception as err:
        message = str(err) if isinstance(err, AnalogLearnError) else traceback.format_exc()
        try:  # the record a later sweep reads (and retries, or skips with --skip-failed)
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_summary({"status": "failed", "error": message.strip()})
        except OSError as write_error:
            message += f" (its failure could not be recorded: {write_error.strerror or write_error})"
        return {"status": "failed", "run_dir": str(run_dir), "error": message.strip().splitlines()[-1]}
    return {"status": "finished", "run_dir": str(run_dir), "summary": summary}


def run_inprocess(jobs: list[Job], report: Callable[[Job, dict[str, Any]], None], verbose: bool = True) -> None:
    """Run the jobs one after another in this process, printing their epochs when ``verbose``."""
    for job in jobs:
        report(job, run_job(job.config, str(job.run_dir), verbose=verbose))


def run_ray(
    jobs: list[Job],
    report: Callable[[Job, dict[str, Any]], None],
    *,
    address: str | None = None,
    cpus_per_run: int = 1,
    gpus_per_run: float | None = None,
) -> None:
    """Run the jobs as Ray tasks: one per GPU when the cluster has GPUs, else one per ``cpus_per_run`` CPUs."""
    ray = import_ray()
    if address:
        check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    except Exception as err:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AnalogLearnError(f"cannot start or reach {where}: {first}") from None
    try:
        if gpus_per_run is None:
            gpus_per_run = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(run_job)
        pending = {task.remote(job.config, str(job.run_dir), cpus_per_run): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                report(pending.pop(ref), ray.get(ref))
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (within ``timeout`` s) when a ``host:port`` or ``ray://host:port`` address does not answer.

    ``ray.init`` itself retries an unreachable cluster for minutes. ``auto`` and other forms are
    left to Ray.
    """
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as err:
        raise AnalogLearnError(
            f"cannot reach the Ray cluster at {address!r} ({err.strerror or err}); start one with "
            "'ray start --head' and pass the address it prints, or omit --address to start a local cluster"
        ) from None


def import_ray() -> Any:
    """Import Ray lazily, with an install hint when it is missing."""
    try:
        import ray
    except ImportError:
        raise AnalogLearnError("the ray executor needs Ray: pip install 'analoglearn[ray]'") from None
    return ray


def sweep(
    grid: str | Path,
    out: str | Path,
    *,
    executor: str = "inprocess",
    address: str | None = None,
    cpus_per_run: int = 1,
    skip_failed: bool = False,
    log: Callable[[str], None] = print,
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Expand ``grid``, run what is not finished, write ``OUT/sweep-<grid name>.json``; return one result per run.

    Runs that failed in an earlier sweep are retried, unless ``skip_failed`` (then they are reported
    as failed again, with their recorded error, without running). Several grids may share ``out``
    (a run common to them is trained once); each keeps its own listing."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        raise ConfigError("--address is for the ray executor; add --executor ray")
    base, axes = load_grid(grid)
    out = check_output_dir(out, "the sweep's output folder")
    jobs = expand(base, axes, out)
    validate_jobs(jobs)
    points = math.prod(len(values) for values in axes.values())
    if points > len(jobs):
        log(f"sweep: {points} grid points resolve to {len(jobs)} distinct runs ({points - len(jobs)} collapsed: "
            "equal after defaults and name spelling are resolved)")
    finished = sum(RunDir(job.run_dir).finished() for job in jobs)
    failed_before = {job.run_dir: error for job in jobs if (error := recorded_failure(job.run_dir)) is not None}
    again = "skipped" if skip_failed else "retried"
    note = f"; {len(failed_before)} failed before, {again}" if failed_before else ""
    log(f"sweep: {len(jobs)} runs in {out} ({finished} already finished, skipped{note})")
    results: dict[Path, dict[str, Any]] = {}

    def report(job: Job, result: dict[str, Any]) -> None:
        results[job.run_dir] = {**result, "axes": job.axes}
        if result["status"] != "skipped":
            error = (result.get("summary") or {}).get("test_error")
            detail = f"test error {error:.2f}%" if error is not None else result.get("error", "")
            log(f"  {result['status']:<8} {job.run_dir.name}  {format_axes(job.axes)}  {detail}")

    out.mkdir(parents=True, exist_ok=True)
    if skip_failed:
        for job in jobs:
            if job.run_dir in failed_before:
                results[job.run_dir] = {"status": "failed", "run_dir": str(job.run_dir), "axes": job.axes,
                                        "error": failed_before[job.run_dir] + " (failed before; not retried)"}
        jobs_to_run = [job for job in jobs if job.run_dir not in failed_before]
    else:
        jobs_to_run = jobs
    if executor == "ray":
        run_ray(jobs_to_run, report, address=address, cpus_per_run=cpus_per_run)
    else:
        run_inprocess(jobs_to_run, report, verbose=verbose)
    ordered = [results[job.run_dir] for job in jobs]
    write_json(out / f"sweep-{Path(grid).stem}.json", {"grid": str(grid), "axes": axes,
                                    "runs": [{k: r[k] for k in ("run_dir", "axes", "status")} for r in ordered]})
    return ordered


def validate_jobs(jobs: list[Job]) -> None:
    """Check every run of a grid as ``train`` would (:func:`analoglearn.build.validate`) before any runs.

    Configs that differ only in their seeds are checked once. A run's folder must be new, empty, a
    run, or analoglearn's own record of a failed attempt. Raises naming the grid point.
    """
    from .build import validate

    checked: set[str] = set()
    for job in jobs:
        run = RunDir(job.run_dir)
        try:
            if not run.exists():
                run.ensure_new()
            elif job.run_dir.is_dir():
                run.summary()  # a damaged summary is named now, not after other runs trained
            key = json.dumps({k: v for k, v in job.config.items() if k != "seed"}, sort_keys=True)
            if key not in checked:
                validate(build_config(job.config))
                checked.add(key)
        except AnalogLearnError as err:
            raise type(err)(f"grid point {format_axes(job.axes)} ({job.run_dir}): {err}") from None


def run_state(run_dir: str | Path) -> str:
    """``finished``, ``failed``, ``partial`` (interrupted: resumes), ``running`` (another process holds
    its lock) or ``new``."""
    run = RunDir(run_dir)
    if run.finished():
        return "finished"
    if run.locked():
        return "running"
    if recorded_failure(run_dir) is not None:
        return "failed"
    return "partial" if run.exists() else "new"


def plan(grid: str | Path, out: str | Path) -> list[tuple[Job, str]]:
    """The grid's runs and the state of each under ``out``, without running anything."""
    base, axes = load_grid(grid)
    return [(job, run_state(job.run_dir)) for job in expand(base, axes, Path(out))]


def recorded_failure(run_dir: str | Path) -> str | None:
    """The last line of the error a failed run recorded in its summary, or ``None`` if it did not fail."""
    summary = RunDir(run_dir).summary() or {}
    if summary.get("status") != "failed":
        return None
    lines = str(summary.get("error", "")).strip().splitlines()
    return lines[-1] if lines else "failed"


def format_axes(axes: dict[str, Any]) -> str:
    """``seed=0 method=rwp(sigma=0.05)``."""

    def show(value: Any) -> str:
        if not isinstance(value, dict):
            text = str(value)
        else:
            rest = ",".join(f"{k}={v}" for k, v in value.items() if k != "name")
            text = f"{value.get('name', '')}({rest})" if rest else str(value.get("name", value))
        return text if len(text) <= 48 else text[:45] + "..."

    flat = {}
    for key, value in axes.items():
        flat.update(value if key == "variant" else {key: value})
    return " ".join(f"{k}={show(v)}" for k, v in flat.items())
