"""Evaluating a trained run under weight noise: at the end of training, or later from its directory.

``assess_noise(trainer, specs, ...)`` evaluates the trainer's model (clean, then under every noise
model at every strength, ``trials`` fixed draws each, see :mod:`analoglearn.evaluate`) and returns
plain data: ``{"clean": {...}, "curves": [...], "points": [...]}``. The trial seeds depend only on
the evaluation seed, the noise model, the strength and the trial index, so every run evaluated
with the same ``eval.seed`` sees the same draws (paired comparisons). A run's model and method are
rebuilt from its directory and checkpoint by :func:`analoglearn.train.load_trainer`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import AnalogSpec, EvalConfig, NoiseSpec
from .evaluate import accuracy, evaluate_noise, robustness_curve
from .storage import write_json

Trainer = Any
"""A :class:`analoglearn.train.Trainer` (not imported: train imports this module); what is used of it:
``cfg``, ``model``, ``method.predict``, ``train_set``, ``test_set``, ``eval_loader(dataset)``, ``run_dir``."""


def assess_noise(
    trainer: Trainer,
    specs: list[NoiseSpec],
    *,
    trials: int,
    seed: int = 0,
    subset: int | None = None,
    bn: str = "keep",
    calibration_images: int = 2000,
    batch_trials: bool | int = False,
    memory_budget: int | None = None,
) -> dict[str, Any]:
    """Clean accuracy and robustness curves of ``trainer``'s model on (a fixed subset of) the test set;
    ``batch_trials`` and ``memory_budget`` as in :func:`analoglearn.evaluate.noisy_accuracy` (the same
    numbers, see :mod:`analoglearn.trials`)."""
    test = trainer.test_set
    if subset is not None and subset < len(test):
        test = test.subset(subset, seed=seed)
    loader = trainer.eval_loader(test)
    calibration = trainer.eval_loader(trainer.train_set) if bn == "recalibrate" else None
    clean = accuracy(trainer.method.predict, loader)
    curves = evaluate_noise(
        trainer.method.predict, trainer.model, loader,
        [{"name": s.name, "strengths": s.strengths, **s.options} for s in specs],
        trials=trials, seed=seed, bn=bn, calibration=calibration, calibration_images=calibration_images,
        batch_trials=batch_trials, memory_budget=memory_budget,
    )
    plain = [c.to_dict() for c in curves]
    return {
        "clean": clean.to_dict(),
        "test_examples": len(test),
        "curves": [{k: v for k, v in c.items() if k != "points"} for c in plain],
        "points": [p for c in plain for p in c["points"]],
    }


def assess_analog(
    trainer: Trainer, specs: list[AnalogSpec], *, trials: int, seed: int = 0, subset: int | None = None,
    calibration_images: int = 2000,
) -> dict[str, Any]:
    """Clean accuracy and tile-model curves (one per entry, over its swept values) of ``trainer``'s model,
    in the format of :func:`assess_noise`; calibrated ranges come from the first training images, read by
    ``trainer.method.predict`` (a Hopfield network's ranges: over all reads of its digital relaxations)."""
    from .analog.corruption import calibration_batches, from_spec

    test = trainer.test_set
    if subset is not None and subset < len(test):
        test = test.subset(subset, seed=seed)
    loader = trainer.eval_loader(test)
    clean = accuracy(trainer.method.predict, loader)
    batches = None
    curves = []
    for spec in specs:
        corruption = from_spec(spec)  # checked against the model in every trial (AnalogCorruption.applied)
        if corruption.tile.in_range == "calibrated" and batches is None:
            batches = calibration_batches(trainer.eval_loader(trainer.train_set), calibration_images)
        corruption = corruption.calibrated(trainer.model, batches, run=trainer.method.predict)
        curves.append(robustness_curve(trainer.method.predict, trainer.model, loader,
                                       corruption, spec.values, trials=trials,
                                       seed=seed).to_dict())
    return {
        "clean": clean.to_dict(),
        "test_examples": len(test),
        "curves": [{k: v for k, v in c.items() if k != "points"} for c in curves],
        "points": [p for c in curves for p in c["points"]],
    }


def table(result: dict[str, Any]) -> str:
    """A plain-text table: one row per noise model and strength (no interval for a single trial)."""
    clean = result["clean"]["top1"]
    width = max([24, *(len(p["noise"]) for p in result["points"])])
    lines = [f"clean accuracy {clean:.2f}% on {result['test_examples']} test images",
             f"{'noise':<{width}} {'strength':>9} {'mean %':>8} {'std':>6} {'min':>7} {'95% CI':>17} {'trials':>6}"]
    for p in result["points"]:
        ci = f"[{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]" if p["ci95"] else "-"
        lines.append(f"{p['noise']:<{width}} {p['strength']:>9g} {p['mean']:>8.2f} {p['std']:>6.2f} "
                     f"{p['min']:>7.2f} {ci:>17} {p['trials']:>6}")
    return "\n".join(lines)


def write_results(result: dict[str, Any], json_path: Path, csv_path: Path) -> None:
    """``json_path``: the full result; ``csv_path``: one row per trial-averaged point."""
    from .report import write_csv

    write_json(json_path, result)
    header = ["noise", "strength", "trials", "mean", "std", "min", "max", "ci95_low", "ci95_high"]
    rows = [[p["noise"], p["strength"], p["trials"], p["mean"], p["std"], p["min"], p["max"], *(p["ci95"] or ["", ""])]
            for p in result["points"]]
    write_csv(csv_path, ("noise evaluation", header, rows))


def evaluate_and_write(trainer: Trainer, evaluation: EvalConfig, json_path: Path, csv_path: Path,
                       kind: str = "noise", relaxation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the noise (``kind="noise"``) or tile-model (``"analog"``) evaluation an ``eval`` section
    describes on the trainer's current weights; write it (with ``relaxation``, the evaluation
    relaxation's settings when they differ from the run's, under the key ``"relaxation"``)."""
    if kind == "analog":
        result = assess_analog(trainer, evaluation.analog, trials=evaluation.trials, seed=evaluation.seed,
                               subset=evaluation.subset, calibration_images=evaluation.calibration_images)
    else:
        result = assess_noise(trainer, evaluation.noise, trials=evaluation.trials, seed=evaluation.seed,
                              subset=evaluation.subset, bn=evaluation.bn,
                              calibration_images=evaluation.calibration_images,
                              batch_trials=evaluation.batch_trials, memory_budget=evaluation.memory_budget)
    result["checkpoint"] = evaluation.checkpoint
    if relaxation:
        result["relaxation"] = relaxation
    write_results(result, json_path, csv_path)
    return result


def assess_after_training(
    trainer: Trainer, evaluated: Trainer, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """The ``eval`` section of a finished run, on ``evaluated`` (the trainer itself, or another holding the
    weights of ``eval.checkpoint``): noise evaluation written to ``noise.json`` / ``noise.csv`` and the
    tile-model evaluation to ``analog.json`` / ``analog.csv`` in ``trainer``'s run; ``{kind: result}``."""
    cfg = trainer.cfg.eval
    results = {}
    for kind in (kind for kind, specs in (("noise", cfg.noise), ("analog", cfg.analog)) if specs):
        path = trainer.run_dir.path / kind
        results[kind] = evaluate_and_write(evaluated, cfg, path.with_suffix(".json"), path.with_suffix(".csv"),
                                           kind)
        log(table(results[kind]))
    return results
