"""Tables (Markdown, CSV) and plots (PNG) from run directories.

``analoglearn report DIR... --out R`` finds every finished run under the given directories and
groups runs that differ only in their seed. The config keys that vary between groups become the
table's columns, so one report serves every grid:

- ``results``: test error (%) mean ± std over seeds, per configuration; ``runs.csv`` gives every
  run (seed) on its own row, and ``noise_<model>_by_run.csv`` every run's accuracy under noise;
- ``error_by_dataset``: test error with datasets as columns (the layout of paper A's tables,
  algorithm × dataset) when several datasets are present;
- ``noise_<model>``: accuracy (%) under a weight-noise model with σ_test as columns (paper B's
  layouts: method × σ_test, σ_train × σ_test), mean over seeds of the trial means, ± the std over
  all trials of all seeds. The noise results of a run are those of its end-of-training evaluation
  (``summary.json``) and of every later ``analoglearn evaluate`` written into it (``eval-*.json``);
  for the same noise model and strength, the most recent evaluation counts;
- plots: ``curves.png`` (test error per epoch), ``noise_<model>.png`` (accuracy against strength
  with ±std bands) and ``relaxation.png`` (residual and energy against relaxation iterations, for
  runs that recorded them in ``relaxation.json``).

Timings are kept out of the result tables (they go to ``timings.csv``), so a rerun gives
identical tables.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AnalogLearnError
from .runs import CONFIG, RunDir
from .storage import write_text


@dataclass
class Run:
    """A finished run as the report sees it."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    flat: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, NoiseResults] = field(default_factory=dict)
    """Noise evaluations by noise label (see :func:`noise_results`)."""


@dataclass
class NoiseResults:
    """A run's results under one noise model: ``points`` by strength (each with ``per_trial``) and the
    clean accuracy on the same test images (``None`` if unknown)."""

    points: dict[float, dict[str, Any]] = field(default_factory=dict)
    clean: float | None = None


def noise_results(run: RunDir, summary: dict[str, Any]) -> dict[str, NoiseResults]:
    """The noise evaluations of a run: ``summary["noise"]`` and ``summary["analog"]`` (end of training: weight
    noise and the tile model, tabled alike), then the ``eval-*.json``
    files of ``analoglearn evaluate`` in the order they were written (a later one replaces the result
    of an earlier one for the same noise label and strength)."""
    results: dict[str, NoiseResults] = defaultdict(NoiseResults)
    sources = [(summary.get("noise_clean_accuracy"), summary.get("noise", [])),
               (summary.get("analog_clean_accuracy"), summary.get("analog", []))]
    for path in sorted(run.path.glob("eval-*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        try:
            data = json.loads(path.read_text())
            sources.append((data["clean"]["top1"], data["points"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not an evaluation written by analoglearn: not ours to read
    for clean, points in sources:
        for item in points:
            entry = results[item["noise"]]
            entry.points[float(item["strength"])] = item
            entry.clean = clean if clean is not None else entry.clean
    return dict(results)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists become JSON text so they can be compared."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def find_runs(dirs: list[str | Path]) -> list[Run]:
    """Every finished run at or under ``dirs``; none found raises AnalogLearnError."""
    runs = []
    for root in dirs:
        root = Path(root)
        if not root.exists():
            raise AnalogLearnError(f"{str(root)!r} does not exist; give run or sweep directories")
        for config in sorted([root / CONFIG] if (root / CONFIG).is_file() else root.rglob(CONFIG)):
            run = RunDir(config.parent)
            if run.finished():
                cfg = run.raw_config()
                summary = run.summary() or {}
                runs.append(Run(run.path, cfg, summary, run.metrics(), flatten(cfg), noise_results(run, summary)))
    if not runs:
        raise AnalogLearnError(f"no finished runs under {', '.join(map(str, dirs))}; train or sweep first")
    return runs


IGNORED = ("seed", "train.progress", "train.threads", "train.device", "train.log", "data.root", "data.eval_batch_size")


MAIN_KEYS = ("data.name", "model.name", "method.name", "perturb.name")


def varying_keys(runs: list[Run]) -> list[str]:
    """The fewest config keys that tell the configurations apart (seed and machine settings excluded).

    The dataset, model and method names are always shown when they vary; the other varying keys are
    added in config order, skipping any key that separates no further group (e.g. a method option
    that changes only together with the method's name).
    """
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.flat if k not in keys]
    varying = [k for k in keys if k not in IGNORED and len({json.dumps(r.flat.get(k)) for r in runs}) > 1]
    chosen = [k for k in MAIN_KEYS if k in varying]
    for key in (k for k in varying if k not in MAIN_KEYS):
        if len(group(runs, [*chosen, key])) > len(group(runs, chosen)):
            chosen.append(key)
    return chosen


def group(runs: list[Run], keys: list[str]) -> dict[tuple[Any, ...], list[Run]]:
    """Runs grouped by their values of ``keys``, groups sorted by those values."""
    groups: dict[tuple[Any, ...], list[Run]] = defaultdict(list)
    for run in runs:
        groups[tuple(run.flat.get(k) for k in keys)].append(run)
    return dict(sorted(groups.items(), key=lambda item: [sort_key(v) for v in item[0]]))


def sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers in numeric order, then everything else as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0


def pm(values: list[float]) -> str:
    """``mean ± std`` with two decimals (just the value for a single run)."""
    mean, std = mean_std(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {std:.2f}"


def label(keys: list[str], values: tuple[Any, ...]) -> str:
    """``method.name=CEP, data.name=MNIST`` (or ``all runs`` when nothing varies)."""
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all runs"


# ---------------------------------------------------------------- tables


Table = tuple[str, list[str], list[list[str]]]


def results_table(runs: list[Run], keys: list[str]) -> Table:
    """Test error mean ± std over seeds, one row per configuration."""
    rows = []
    for values, members in group(runs, keys).items():
        errors = [r.summary["test_error"] for r in members]
        best = [r.summary["best_test_error"] for r in members]
        rows.append([*map(str, values), str(len(members)), pm(errors), pm(best)])
    return "Test error (%) by configuration", [*keys, "seeds", "test error", "best test error"], rows


def by_seed(members: list[Run]) -> list[Run]:
    """The runs of one configuration in seed order (then by directory name)."""
    return sorted(members, key=lambda r: (sort_key(r.config.get("seed")), r.path.name))


def runs_table(runs: list[Run], keys: list[str]) -> Table:
    """One row per run (the per-seed breakdown of ``results``): directory, configuration, seed, errors."""
    rows = []
    for values, members in group(runs, keys).items():
        for r in by_seed(members):
            rows.append([r.path.name, *map(str, values), str(r.config.get("seed")),
                         f"{r.summary['test_error']:.2f}", f"{r.summary['best_test_error']:.2f}"])
    return "Test error (%) of every run", ["run", *keys, "seed", "test error", "best test error"], rows


def noise_runs_tables(runs: list[Run], keys: list[str]) -> dict[str, Table]:
    """Per noise model, one row per run: the mean over its trials at each strength (paired across runs)."""
    tables = {}
    for noise in sorted({n for r in runs for n in r.noise}):
        strengths = sorted({s for r in runs if noise in r.noise for s in r.noise[noise].points})
        rows = []
        for values, members in group(runs, keys).items():
            for r in by_seed(members):
                if noise not in r.noise:
                    continue
                points = r.noise[noise].points
                cells = [f"{mean_std(points[s]['per_trial'])[0]:.2f}" if s in points else "" for s in strengths]
                rows.append([r.path.name, *map(str, values), str(r.config.get("seed")), *cells])
        title = f"Accuracy (%) under {noise} noise of every run (mean over its trials)"
        tables[noise] = (title, ["run", *keys, "seed", *[f"{s:g}" for s in strengths]], rows)
    return tables


def dataset_table(runs: list[Run], keys: list[str]) -> Table | None:
    """Test error with datasets as columns (algorithm × dataset), when several datasets are present."""
    if "data.name" not in keys:
        return None
    rest = [k for k in keys if k != "data.name"]
    datasets = list(dict.fromkeys(r.flat["data.name"] for r in runs))
    rows = []
    for values, members in group(runs, rest).items():
        cells = []
        for name in datasets:
            errors = [r.summary["test_error"] for r in members if r.flat["data.name"] == name]
            cells.append(pm(errors) if errors else "")
        rows.append([*map(str, values), *cells])
    return "Test error (%) by configuration × dataset", [*rest, *datasets], rows


def noise_tables(runs: list[Run], keys: list[str]) -> dict[str, Table]:
    """Accuracy under each noise model, σ_test as columns, after a ``clean`` column: the accuracy
    without noise on the same test images (mean over seeds)."""
    by_noise: dict[str, dict[tuple[Any, ...], dict[float, list[list[float]]]]] = defaultdict(dict)
    clean: dict[str, dict[tuple[Any, ...], list[float]]] = defaultdict(lambda: defaultdict(list))
    for values, members in group(runs, keys).items():
        for run in members:
            for noise, result in run.noise.items():
                cells = by_noise[noise].setdefault(values, defaultdict(list))
                for strength, item in result.points.items():
                    cells[strength].append(item["per_trial"])
                if result.clean is not None:
                    clean[noise][values].append(result.clean)
    tables = {}
    for noise, rows_by_group in by_noise.items():
        strengths = sorted({s for cells in rows_by_group.values() for s in cells})
        rows = []
        for values, cells in rows_by_group.items():
            base = clean[noise].get(values)
            row = [*map(str, values), f"{mean_std(base)[0]:.2f}" if base else ""]
            for s in strengths:
                trials = cells.get(s, [])
                if not trials:
                    row.append("")
                    continue
                mean = sum(sum(t) / len(t) for t in trials) / len(trials)
                _, std = mean_std([v for t in trials for v in t])
                row.append(f"{mean:.2f} ± {std:.2f}")
            rows.append(row)
        title = (f"Accuracy (%) under {noise} noise by configuration × strength (mean over seeds ± std over "
                 "trials; clean: the same test images without noise)")
        tables[noise] = (title, [*keys, "clean", *[f"{s:g}" for s in strengths]], rows)
    return tables


def file_safe(label: str) -> str:
    """A noise label as part of a file name: ``quantize(16)+pcm`` → ``quantize_16_+pcm``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_")


def markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its title."""
    title, header, rows = table
    header = header or ["configuration"]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, table: Table) -> None:
    """The table as CSV (header row first), written atomically."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table[1])
    writer.writerows(table[2])
    write_text(path, buffer.getvalue())


# ---------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: list[Run], keys: list[str], path: Path) -> None:
    """Test error per epoch, mean over seeds, one line per configuration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for values, members in group(runs, keys).items():
        epochs = sorted({m["epoch"] for r in members for m in r.metrics if "test_error" in m})
        means = [mean_std([m["test_error"] for r in members for m in r.metrics
                           if m["epoch"] == e and "test_error" in m])[0] for e in epochs]
        ax.plot(epochs, means, marker="o", label=label(keys, values))
    ax.set(xlabel="epoch", ylabel="test error (%)", yscale="log", title="Training curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_noise(runs: list[Run], keys: list[str], noise: str, path: Path) -> bool:
    """Accuracy against noise strength (strength 0 = clean), mean ± std band, one line per configuration;
    False (nothing written) when no configuration has two points to join."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = group(runs, keys)
    if len(groups) > 10:  # more lines than the default cycle has colours
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    plotted: set[float] = set()
    for values, members in groups.items():
        points: dict[float, list[float]] = defaultdict(list)
        for run in members:
            result = run.noise.get(noise)
            if result is None:
                continue
            if result.clean is not None and 0.0 not in result.points:  # clean, on the same test images
                points[0.0].append(result.clean)
            for strength, item in result.points.items():
                points[strength] += item["per_trial"]
        if len(points) < 2:
            continue
        xs = sorted(points)
        plotted.update(xs)
        stats = [mean_std(points[x]) for x in xs]
        mean = [m for m, _ in stats]
        ax.plot(xs, mean, marker="o", label=label(keys, values))
        ax.fill_between(xs, [m - s for m, s in stats], [m + s for m, s in stats], alpha=0.2)
    if not plotted:
        plt.close(fig)
        return False
    what = noise if noise.startswith("analog") else f"{noise} weight noise"
    ax.set(xlabel=f"{noise} strength", ylabel="test accuracy (%)", title=f"Accuracy under {what}")
    positive = sorted(x for x in plotted if x > 0)
    if len(positive) >= 2 and positive[-1] / positive[0] > 100:  # e.g. PCM times from 1 h to 1 year
        ax.set_xscale("symlog", linthresh=positive[0])
        ax.set_xlabel(f"{noise} strength (logarithmic above {positive[0]:g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_relaxation(runs: list[Run], keys: list[str], path: Path) -> bool:
    """Residual and energy against relaxation iterations, from runs that wrote ``relaxation.json``."""
    traces = [(r, json.loads((r.path / "relaxation.json").read_text())) for r in runs
              if (r.path / "relaxation.json").is_file()]
    if not traces:
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for run, trace in traces:
        name = label(keys, tuple(run.flat.get(k) for k in keys)) + f" (seed {run.flat.get('seed')})"
        floor = min(min(curve["energy"]) for curve in trace.values())
        for schedule, curve in trace.items():
            its = range(1, len(curve["residual"]) + 1)
            left.semilogy(its, [max(r, 1e-12) for r in curve["residual"]], label=f"{name}: {schedule}")
            right.semilogy(its, [max(e - floor, 1e-12) for e in curve["energy"]], label=f"{name}: {schedule}")
    left.set(xlabel="iteration", ylabel="residual max|Δs|", title="Relaxation: residual")
    right.set(xlabel="iteration", ylabel="Ē − lowest Ē reached", title="Relaxation: mean energy above its floor")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- entry point


def report(dirs: list[str | Path], out: str | Path) -> dict[str, Path]:
    """Write ``report.md``, CSV tables and PNG plots to ``out``; return the written files by name."""
    runs = find_runs(dirs)
    keys = varying_keys(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Table] = {"results": results_table(runs, keys)}
    by_dataset = dataset_table(runs, keys)
    if by_dataset is not None:
        tables["error_by_dataset"] = by_dataset
    by_noise = noise_tables(runs, keys)
    for noise, table in by_noise.items():
        tables[f"noise_{file_safe(noise)}"] = table
    written: dict[str, Path] = {}
    per_run = {"runs": runs_table(runs, keys)}
    per_run.update({f"noise_{file_safe(n)}_by_run": t for n, t in noise_runs_tables(runs, keys).items()})
    for name, table in [*tables.items(), *per_run.items()]:
        write_csv(out / f"{name}.csv", table)
        written[f"{name}.csv"] = out / f"{name}.csv"
    timing = ("Training time (s)", ["run", "train seconds"],
              [[r.path.name, f"{r.summary.get('train_seconds', float('nan')):.1f}"] for r in runs])
    write_csv(out / "timings.csv", timing)
    plot_curves(runs, keys, out / "curves.png")
    plots = ["curves.png"]
    for noise in by_noise:
        if plot_noise(runs, keys, noise, out / f"noise_{file_safe(noise)}.png"):
            plots.append(f"noise_{file_safe(noise)}.png")
    if plot_relaxation(runs, keys, out / "relaxation.png"):
        plots.append("relaxation.png")
    text = [f"# analoglearn report\n\n{len(runs)} finished runs from {', '.join(map(str, dirs))}.\n"]
    text += [markdown(t) for t in tables.values()]
    text += ["Per-run breakdowns (every seed): " + ", ".join(f"[{n}.csv]({n}.csv)" for n in per_run) + ".\n"]
    text += [f"![{p}]({p})\n" for p in plots]
    write_text(out / "report.md", "\n".join(text))
    written.update({p: out / p for p in plots})
    written["report.md"] = out / "report.md"
    return written
