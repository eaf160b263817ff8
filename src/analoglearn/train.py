"""The one training loop, shared by every method of both pillars.

``fit(config, run_dir)`` builds the data loaders, the model, the optimiser (with per-layer
learning-rate groups), the method, then for each epoch: sets the learning rate of the schedule,
runs ``method.train_step`` on every batch, evaluates on the test set, appends a line to
``metrics.jsonl`` and saves ``last.pt`` (and ``best.pt``). ``fit(..., resume=True)`` continues
from ``last.pt``; because data order and augmentation are functions of (seed, epoch, batch) and
every generator's state is checkpointed, a resumed run reproduces the uninterrupted one exactly
on CPU (wall-clock timings aside).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import data as datasets
from .config import Config, DataConfig, OptimConfig, build_config
from .errors import CheckpointError, ConfigError, TrainingDiverged
from .evaluate import accuracy
from .method import Method, Progress
from .registry import METHODS, MODELS
from .runs import BEST, LAST, RunDir, write_json

CHECKPOINT_FORMAT = "analoglearn-checkpoint-1"


@dataclass(frozen=True)
class Seeds:
    """Independent seeds derived from the run seed (numpy SeedSequence), one per source of randomness."""

    init: int
    data: int
    train_noise: int

    @classmethod
    def derive(cls, seed: int) -> Seeds:
        """Three 63-bit seeds from one run seed (evaluation noise has its own, ``eval.seed``)."""
        words = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
        return cls(*(int(w >> np.uint64(1)) for w in words))


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda if available, else cpu; check that the named device exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is available here; use cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is mps but MPS is not available here; use cpu or auto")
    return device


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------- building blocks


def load_splits(cfg: DataConfig, seed: int) -> tuple[Any, Any]:
    """Train and test splits of the configured dataset (fixed random subsets when asked)."""
    train = datasets.load(cfg.name, "train", root=cfg.root)
    test = datasets.load(cfg.name, "test", root=cfg.root)
    if cfg.train_subset is not None and cfg.train_subset < len(train):
        train = train.subset(cfg.train_subset, seed=seed)
    if cfg.test_subset is not None and cfg.test_subset < len(test):
        test = test.subset(cfg.test_subset, seed=seed)
    return train, test


def eval_loader(dataset: Any, cfg: DataConfig, device: torch.device, seed: int = 0) -> Any:
    """An evaluation loader over ``dataset``: in order, no augmentation."""
    return datasets.Loader(dataset, cfg.eval_batch_size, shuffle=False, augment=False, seed=seed,
                           device=device, pad_to=cfg.pad_to)


def input_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """(C, H, W) of the tensors the loader yields."""
    channels, height, width = datasets.get_spec(cfg.name).shape
    if cfg.pad_to is not None:
        if cfg.pad_to < max(height, width):
            raise ConfigError(f"data.pad_to={cfg.pad_to} is smaller than the {height}×{width} images of {cfg.name}")
        height = width = cfg.pad_to
    return channels, height, width


def build_model(cfg: Config, seeds: Seeds) -> nn.Module:
    """The configured network, initialised from the init generator."""
    spec = datasets.get_spec(cfg.data.name)
    return MODELS.create(cfg.model.name, cfg.model.options, in_shape=input_shape(cfg.data),
                         num_classes=spec.num_classes, generator=generator(seeds.init))


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The torch optimiser; a list of learning rates maps onto ``model.param_groups()``."""
    if isinstance(cfg.lr, list):
        groups = model.param_groups() if hasattr(model, "param_groups") else None
        if groups is None or len(groups) != len(cfg.lr):
            have = "has no layer groups" if groups is None else f"has {len(groups)} layer groups"
            raise ConfigError(f"optim.lr lists {len(cfg.lr)} rates but the model {have}; give one number")
        params: list[dict[str, Any]] = [{"params": g, "lr": lr} for g, lr in zip(groups, cfg.lr)]
    else:
        params = [{"params": list(model.parameters()), "lr": cfg.lr}]
    for group in params:
        group["initial_lr"] = group["lr"]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=params[0]["lr"], momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
    kind = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return kind(params, lr=params[0]["lr"], betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


def schedule_factor(cfg: OptimConfig, epoch: int, epochs: int, base: float) -> float:
    """Learning rate of a group with initial rate ``base`` at ``epoch`` (stepped per epoch).

    cosine: lr_min + (base − lr_min)·(1 + cos(π·e/E))/2 (CosineAnnealingLR's closed form);
    linear: base + (lr_min − base)·e/E; constant: base.
    """
    t = epoch / max(epochs, 1)
    if cfg.schedule == "cosine":
        return cfg.lr_min + (base - cfg.lr_min) * (1 + math.cos(math.pi * t)) / 2
    if cfg.schedule == "linear":
        return base + (cfg.lr_min - base) * t
    return base


def set_learning_rate(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Set every group's rate for ``epoch``; return the first group's."""
    for group in optimizer.param_groups:
        group["lr"] = schedule_factor(cfg, epoch, epochs, group["initial_lr"])
    return optimizer.param_groups[0]["lr"]


def test_metrics(predict: Callable[[torch.Tensor], torch.Tensor], loader: Any) -> dict[str, float]:
    """Test error and top-5 error (when there are at least 5 classes), in %."""
    result = accuracy(predict, loader)
    out = {"test_error": 100.0 - result.top1}
    if result.top5 is not None:
        out["test_top5_error"] = 100.0 - result.top5
    return out


# ---------------------------------------------------------------- the loop


class Trainer:
    """Holds everything a run needs; ``run()`` trains, checkpoints and evaluates."""

    def __init__(self, cfg: Config, run: RunDir, log: Callable[[str], None] = print) -> None:
        self.cfg, self.run_dir, self.log = cfg, run, log
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device)
        self.seeds = Seeds.derive(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.train_set, self.test_set = load_splits(cfg.data, self.seeds.data)
        self.train_loader = datasets.Loader(self.train_set, cfg.data.batch_size, shuffle=True,
                                            augment=cfg.data.augment, seed=self.seeds.data, device=self.device,
                                            pad_to=cfg.data.pad_to)
        self.test_loader = eval_loader(self.test_set, cfg.data, self.device)
        self.model = build_model(cfg, self.seeds).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.method: Method = METHODS.create(
            cfg.method.name, self.model, self.optimizer, cfg.method.options,
            generator=generator(self.seeds.train_noise, self.device),
        )
        self.epoch, self.batch, self.step = 0, 0, 0
        self.partial = {"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}
        self.history: list[dict[str, Any]] = []
        self.best_error: float | None = None

    # ------------------------------------------------------------------ checkpoint state
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (plain tensors and primitives)."""
        gen = self.method.generator
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "generators": {"torch": torch.get_rng_state(), "method": gen.get_state() if gen is not None else None},
            "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "partial": dict(self.partial), "history": list(self.history), "best_test_error": self.best_error,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (inverse)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["generators"]["torch"])
        if self.method.generator is not None and state["generators"]["method"] is not None:
            self.method.generator.set_state(state["generators"]["method"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.partial, self.history = dict(state["partial"]), list(state["history"])
        self.best_error = state["best_test_error"]

    # ------------------------------------------------------------------ training
    def run(self) -> dict[str, Any]:
        """Train the remaining epochs, then write the summary."""
        epochs = self.cfg.train.epochs
        while self.epoch < epochs:
            self.train_epoch()
        return self.finish()

    def train_epoch(self) -> None:
        """One epoch (from ``self.batch`` on, when resuming mid-epoch), evaluation and checkpoint."""
        cfg, epochs = self.cfg, self.cfg.train.epochs
        lr = set_learning_rate(self.optimizer, cfg.optim, self.epoch, epochs)
        steps = len(self.train_loader)
        every = cfg.train.checkpoint_every if isinstance(cfg.train.checkpoint_every, int) else 0
        bar = self.progress_bar(steps)
        start = time.perf_counter()
        for x, y in self.train_loader.epoch(self.epoch, start_batch=self.batch):
            progress = Progress(self.step, self.epoch, steps, steps * epochs)
            record = self.method.train_step(x, y, progress)
            self.check_finite(record.get("loss", 0.0))
            self.partial["loss_sum"] += record["loss"] * len(y)
            self.partial["correct"] += record.get("correct", 0.0)
            self.partial["count"] += len(y)
            self.batch, self.step = self.batch + 1, self.step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            if every and self.step % every == 0 and self.batch < steps:
                self.partial["seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                self.run_dir.save_checkpoint(self.state())
        if bar is not None:
            bar.close()
        self.partial["seconds"] += time.perf_counter() - start
        self.end_epoch(lr)

    def end_epoch(self, lr: float) -> None:
        """Evaluate, log, append metrics, checkpoint."""
        epochs, p = self.cfg.train.epochs, self.partial
        record: dict[str, Any] = {
            "epoch": self.epoch + 1, "step": self.step, "lr": lr,
            "train_loss": p["loss_sum"] / max(p["count"], 1),
            "train_error": 100.0 * (1 - p["correct"] / max(p["count"], 1)),
        }
        record.update(self.method.epoch_metrics())
        last = self.epoch + 1 == epochs
        if last or (self.epoch + 1) % self.cfg.train.eval_every == 0:
            start = time.perf_counter()
            record.update(test_metrics(self.method.predict, self.test_loader))
            record["eval_seconds"] = time.perf_counter() - start
        record["epoch_seconds"] = p["seconds"]
        self.check_weights()
        self.history.append(record)
        self.epoch, self.batch = self.epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}
        improved = "test_error" in record and (self.best_error is None or record["test_error"] < self.best_error)
        if improved:
            self.best_error = record["test_error"]
        state = self.state()
        self.run_dir.save_checkpoint(state)
        if improved:
            self.run_dir.save_checkpoint(state, BEST)
        self.run_dir.write_metrics(self.history)
        self.log(format_record(record, epochs))

    def check_finite(self, loss: float) -> None:
        """Stop with a clear message when the loss is NaN or infinite."""
        if not math.isfinite(loss):
            raise self.diverged(f"the training loss became {loss}")

    def check_weights(self) -> None:
        """Stop when a parameter is NaN or infinite."""
        for name, param in self.model.named_parameters():
            if not torch.isfinite(param).all():
                raise self.diverged(f"parameter {name!r} became NaN or infinite")

    def diverged(self, what: str) -> TrainingDiverged:
        kept = f"last good checkpoint: epoch {self.epoch}" if (self.run_dir.path / LAST).is_file() else \
            "no checkpoint had been written yet"
        self.run_dir.write_summary({"status": "diverged", "epoch": self.epoch + 1, "step": self.step, "reason": what})
        return TrainingDiverged(
            f"training diverged at epoch {self.epoch + 1}, step {self.step}: {what}. "
            f"{kept} ({self.run_dir.path / LAST}). Try a lower optim.lr."
        )

    def progress_bar(self, total: int) -> Any:
        show = self.cfg.train.progress
        if show is None:
            show = sys.stderr.isatty()
        if not show:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.batch, desc=f"epoch {self.epoch + 1}", leave=False)

    def write_artifacts(self, examples: int = 64) -> None:
        """The method's end-of-training files (e.g. a relaxation profile), on the first test images."""
        x, _ = next(iter(self.test_loader))
        for name, content in self.method.final_artifacts(x[:examples]).items():
            write_json(self.run_dir.path / name, content)

    def finish(self) -> dict[str, Any]:
        """Evaluate under noise (``eval`` section), write ``summary.json`` and return it."""
        from .assess import assess_after_training

        final = self.history[-1] if self.history else {}
        self.write_artifacts()
        noise = assess_after_training(self, self.log)
        summary: dict[str, Any] = {
            "status": "finished",
            "epochs": len(self.history),
            "steps": self.step,
            "test_error": final.get("test_error"),
            "test_accuracy": None if final.get("test_error") is None else 100.0 - final["test_error"],
            "best_test_error": self.best_error,
            "train_seconds": sum(r["epoch_seconds"] for r in self.history),
            "dataset": self.cfg.data.name, "model": self.cfg.model.name, "method": self.cfg.method.name,
            "seed": self.cfg.seed,
        }
        if noise is not None:
            summary["noise"] = [{k: p[k] for k in ("noise", "strength", "trials", "mean", "std", "min", "ci95",
                                                   "per_trial")} for p in noise["points"]]
            summary["noise_clean_accuracy"] = noise["clean"]["top1"]
            summary["noise_area"] = {c["noise"]: c["normalized_area"] for c in noise["curves"]}
        self.run_dir.write_summary(summary)
        return summary


def format_record(record: dict[str, Any], epochs: int) -> str:
    """One log line per epoch."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['train_loss']:.4f}",
             f"train err {record['train_error']:.2f}%"]
    if "test_error" in record:
        parts.append(f"test err {record['test_error']:.2f}%")
    parts += [f"lr {record['lr']:.3g}", f"{record['epoch_seconds']:.1f}s"]
    return "  ".join(parts)


def fit(
    cfg: Config | None, run_dir: str | Path, *, resume: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (new, or continued from ``last.pt`` with ``resume=True``).

    Holds the run's lock while it trains (:meth:`RunDir.lock`: a second process training the same
    run raises :class:`RunBusy`). Returns the run's summary (also written to ``summary.json``).
    """
    with RunDir(run_dir).lock():
        return fit_locked(cfg, run_dir, resume=resume, log=log)


def fit_locked(
    cfg: Config | None, run_dir: str | Path, *, resume: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """:func:`fit` for a caller that already holds the run's lock."""
    if resume:
        run = RunDir(run_dir).require()
        cfg = build_config(run.raw_config())
        trainer = Trainer(cfg, run, log)
        if (run.path / LAST).is_file():
            trainer.load_state(run.load_checkpoint(LAST, map_location=trainer.device))
            run.write_metrics(trainer.history)
            log(f"resuming {run.path} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
        else:
            log(f"no checkpoint in {run.path} yet: starting from the beginning")
    else:
        if cfg is None:
            raise ConfigError("a new run needs a config")
        run = RunDir(run_dir).ensure_new()
        trainer = Trainer(cfg, run, log)  # validates data and model before anything is written
        RunDir.create(run_dir, cfg, trainer.device)
    return trainer.run()
