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

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import data as datasets
from .config import Config, DataConfig, EvalConfig, OptimConfig, build_config
from .errors import CheckpointError, ConfigError, Preempted, StorageError, TrainingDiverged
from .evaluate import accuracy
from .method import Method, Progress
from .registry import METHODS, MODELS
from .runs import BEST, ENV, LAST, RunDir, environment, storage_message, write_json

CHECKPOINT_FORMAT = "analoglearn-checkpoint-1"


@dataclass(frozen=True)
class Seeds:
    """Independent seeds derived from the run seed (numpy SeedSequence), one per source of randomness."""

    init: int
    data: int
    train_noise: int

    analog: int = 0
    device: int = 0

    @classmethod
    def derive(cls, seed: int) -> Seeds:
        """Five 63-bit seeds from one run seed (evaluation noise has its own, ``eval.seed``): init, data,
        training noise, the tile's output noise in hardware-aware training, the device draws of
        analog_sgd. The first three are those of earlier versions (``generate_state`` is prefix-stable)."""
        words = np.random.SeedSequence(seed).generate_state(5, dtype=np.uint64)
        return cls(*(int(w >> np.uint64(1)) for w in words))


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
"""Device types a run may train on (when this machine has them)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda if available, else cpu; check that the named device exists on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = "use cpu, auto, cuda, cuda:N, mps or xpu (those this machine has)"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"train.device {name!r} is not a device; {valid}") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"train.device {name!r}: analoglearn cannot train on {device.type!r} devices; {valid}")
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type) if device.type != "mps" else torch.backends.mps
    if not backend.is_available():
        raise ConfigError(f"train.device is {name!r} but this machine has no {device.type} device; {valid}")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise ConfigError(f"train.device {name!r}: this machine has {count} {device.type} device(s), "
                          f"{device.type}:0 to {device.type}:{count - 1}")
    return device


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------- building blocks


def check_subsets(cfg: Config) -> None:
    """Refuse subsets larger than the dataset's splits (``data.train_subset``, ``data.test_subset``,
    ``eval.subset``), which would otherwise silently mean "all"."""
    spec = datasets.get_spec(cfg.data.name)
    test_size = spec.size("test") if cfg.data.test_subset is None else min(cfg.data.test_subset, spec.size("test"))
    for key, value, size, split in (("data.train_subset", cfg.data.train_subset, spec.size("train"), "train"),
                                    ("data.test_subset", cfg.data.test_subset, spec.size("test"), "test"),
                                    ("eval.subset", cfg.eval.subset, test_size, "(evaluated) test")):
        if value is not None and value > size:
            raise ConfigError(f"{key}={value} is larger than the {size} examples of {spec.name}'s {split} split; "
                              f"give at most {size}, or null for all of them")


def load_splits(cfg: DataConfig, seed: int) -> tuple[Any, Any]:
    """Train and test splits of the configured dataset (fixed random subsets when asked)."""
    train = datasets.load(cfg.name, "train", root=cfg.root)
    test = datasets.load(cfg.name, "test", root=cfg.root)
    if cfg.train_subset is not None and cfg.train_subset < len(train):
        train = train.subset(cfg.train_subset, seed=seed)
    if cfg.test_subset is not None and cfg.test_subset < len(test):
        test = test.subset(cfg.test_subset, seed=seed)
    return train, test


def check_eval(evaluation: EvalConfig, model: nn.Module) -> None:
    """Build every noise model of ``eval.noise`` at every strength, and check that it selects
    parameters of ``model``: a mistake here would otherwise surface only after training."""
    from .noise import from_config

    for i, spec in enumerate(evaluation.noise):
        for strength in spec.strengths:
            try:
                noise = from_config({"name": spec.name, **spec.options}, strength)
            except ConfigError as err:
                raise ConfigError(f"eval.noise[{i}] at strength {strength}: {err}") from None
            if not noise.select(model):
                raise ConfigError(f"eval.noise[{i}] ({spec.name}) selects no parameter of "
                                  f"{type(model).__name__}; see its 'modules', 'bias' and 'norm' options")
    from .analog.corruption import from_spec

    for i, analog_spec in enumerate(evaluation.analog):
        try:
            from_spec(analog_spec).check(model)
        except ConfigError as err:
            raise ConfigError(f"eval.analog[{i}]: {err}") from None


def validate(cfg: Config) -> None:
    """Check everything about ``cfg`` that can be checked without training, writing nothing.

    The device exists; the dataset's files are present, readable and intact; the subsets fit the
    splits; the model can be built for the data's shape, the method accepts it, the optimiser's
    layer groups match it; every ``eval.noise`` entry can be built and corrupts some of its
    weights. Models are built on the ``meta`` device (no memory) where they allow it. Raises an
    :class:`~analoglearn.errors.AnalogLearnError` (ConfigError or DataError) naming what is wrong.
    """
    resolve_device(cfg.train.device)
    check_subsets(cfg)
    input_shape(cfg.data)
    if datasets.get_spec(cfg.data.name).name != "Synthetic":
        for split in ("train", "test"):
            datasets.check_readable(cfg.data.name, split, root=cfg.data.root)
    seeds = Seeds.derive(cfg.seed)
    try:
        with torch.device("meta"):
            build_parts(cfg, seeds, torch.device("meta"))
    except NotImplementedError:  # an initialisation that needs real memory (Hopfield presets: small)
        build_parts(cfg, seeds, torch.device("cpu"))


def build_parts(cfg: Config, seeds: Seeds, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer, Method]:
    """The model (on ``device``), its optimiser and the method; errors that come from combining
    sections name the keys involved (``model.name=lenet with method.name=CEP: ...``)."""
    shape = "×".join(map(str, input_shape(cfg.data)))
    try:
        model = build_model(cfg, seeds).to(device)
    except ConfigError as err:
        raise ConfigError(_with_keys(str(err), f"model.name={cfg.model.name} on {cfg.data.name} ({shape})")) from None
    optimizer = build_optimizer(model, cfg.optim, seeds.device)
    try:
        method = METHODS.create(cfg.method.name, model, optimizer, cfg.method.options,
                                generator=generator(seeds.train_noise, "cpu" if device.type == "meta" else device))
    except ConfigError as err:
        raise ConfigError(_with_keys(str(err), f"method.name={cfg.method.name} with model.name={cfg.model.name}")) \
            from None
    check_eval(cfg.eval, model)
    build_hardware(cfg, model, seeds)
    return model, optimizer, method


def build_hardware(cfg: Config, model: nn.Module, seeds: Seeds) -> Any:
    """The :class:`~analoglearn.analog.training.HardwareAware` state of an ``analog`` section, or None."""
    if cfg.analog.tile is None:
        return None
    from .analog.tile import TileConfig
    from .analog.training import HardwareAware

    try:
        return HardwareAware(TileConfig(**cfg.analog.tile), model, seeds.analog, cfg.analog.calibration_images,
                             cfg.analog.weight_clip)
    except ConfigError as err:
        raise ConfigError(_with_keys(str(err), f"analog.tile with model.name={cfg.model.name}")) from None


def _with_keys(message: str, keys: str) -> str:
    """``message`` prefixed with the config keys it is about, unless it names a key path already."""
    return message if any(f"{s}." in message for s in ("model", "method", "data", "optim")) else f"{keys}: {message}"


def eval_loader(dataset: Any, cfg: DataConfig, device: torch.device, seed: int = 0) -> Any:
    """An evaluation loader over ``dataset``: in order, no augmentation."""
    return datasets.Loader(dataset, cfg.eval_batch_size, shuffle=False, augment=False, seed=seed,
                           device=device, pad_to=cfg.pad_to)


def input_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """(C, H, W) of the tensors the loader yields."""
    channels, height, width = datasets.get_spec(cfg.name).shape
    if cfg.pad_to is not None:
        if cfg.pad_to < max(height, width):
            raise ConfigError(f"data.pad_to={cfg.pad_to} is smaller than the {height}×{width} images of {cfg.name}; "
                              f"give null (no padding) or a size ≥ {max(height, width)}")
        height = width = cfg.pad_to
    return channels, height, width


def build_model(cfg: Config, seeds: Seeds) -> nn.Module:
    """The configured network, initialised from the init generator."""
    spec = datasets.get_spec(cfg.data.name)
    return MODELS.create(cfg.model.name, cfg.model.options, in_shape=input_shape(cfg.data),
                         num_classes=spec.num_classes, generator=generator(seeds.init))


def build_optimizer(model: nn.Module, cfg: OptimConfig, seed: int = 0) -> torch.optim.Optimizer:
    """The torch optimiser; a list of learning rates maps onto ``model.param_groups()``.

    ``analog_sgd`` (:class:`~analoglearn.analog.optim.AnalogSGD`) programs every update as device
    pulses; its device draws come from a generator seeded with ``seed``, saved in its state_dict."""
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
    if cfg.name == "analog_sgd":
        from .analog.devices import device_from_config
        from .analog.optim import AnalogSGD

        return AnalogSGD(params, lr=params[0]["lr"], device=device_from_config(cfg.device or {"name": "ideal"}),
                         momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                         nesterov=cfg.nesterov and cfg.momentum > 0, generator=generator(seed),
                         weight_scale=cfg.weight_scale)
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
        check_subsets(cfg)
        input_shape(cfg.data)
        torch.manual_seed(cfg.seed)
        self.train_set, self.test_set = load_splits(cfg.data, self.seeds.data)
        self.train_loader = datasets.Loader(self.train_set, cfg.data.batch_size, shuffle=True,
                                            augment=cfg.data.augment, seed=self.seeds.data, device=self.device,
                                            pad_to=cfg.data.pad_to)
        self.test_loader = eval_loader(self.test_set, cfg.data, self.device)
        self.model, self.optimizer, self.method = build_parts(cfg, self.seeds, self.device)
        self.hardware = build_hardware(cfg, self.model, self.seeds)
        self.epoch, self.batch, self.step = 0, 0, 0
        self.stop_signal: int | None = None
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
            **({"analog": self.hardware.state_dict()} if self.hardware is not None else {}),
        }

    def load_state(self, state: dict[str, Any], source: str = "the checkpoint") -> None:
        """Restore :meth:`state` (inverse); a checkpoint of another run, model or width raises
        :class:`CheckpointError` naming ``source`` and leaves nothing half-loaded on disk."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source}: checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT!r}")
        missing = [k for k in ("config", "model", "optimizer", "method", "generators", "epoch", "batch", "step",
                               "partial", "history", "best_test_error") if k not in state]
        if missing:
            raise CheckpointError(f"{source} lacks the entries {missing}: it is not a complete analoglearn "
                                  "checkpoint; use the run's other checkpoint, or retrain")
        try:
            saved = build_config(state["config"]).to_dict()
        except ConfigError:
            saved = state["config"]
        if saved != self.cfg.to_dict():
            raise CheckpointError(f"{source} was written by another config than this run's config.yaml "
                                  f"({_first_difference(saved, self.cfg.to_dict())}): it belongs to another "
                                  "run; give this run's own checkpoint")
        try:
            self._load_state(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
            first = " ".join(lines[:2])
            raise CheckpointError(f"{source} does not fit this run's model, optimiser or method ({first[:200]}): "
                                  "it was written for another network; give this run's own checkpoint") from None

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["generators"]["torch"])
        if self.method.generator is not None and state["generators"]["method"] is not None:
            self.method.generator.set_state(state["generators"]["method"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.partial, self.history = dict(state["partial"]), list(state["history"])
        self.best_error = state["best_test_error"]
        if self.hardware is not None:
            self.hardware.load_state_dict(state["analog"])

    # ------------------------------------------------------------------ training
    def run(self) -> dict[str, Any]:
        """Train the remaining epochs, then write the summary.

        SIGTERM (a scheduler preempting the job) and SIGINT stop the run cleanly: inside an epoch
        at the end of the current batch, after a checkpoint of that position; elsewhere at once (the
        last checkpoint holds the state). Either way :class:`Preempted` is raised and
        ``train --resume`` continues exactly.
        """
        epochs = self.cfg.train.epochs
        with self.stop_on_signals():
            while self.epoch < epochs:
                self.train_epoch()
            return self.finish()

    @contextlib.contextmanager
    def stop_on_signals(self) -> Any:
        """Handle SIGTERM and SIGINT for the block (main thread only; elsewhere signals keep their handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        in_epoch = {"value": False}
        self._in_epoch = in_epoch

        def handler(signum: int, frame: Any) -> None:
            self.stop_signal = signum
            if not in_epoch["value"]:
                raise self.preempted()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def preempted(self) -> Preempted:
        signum = self.stop_signal or signal.SIGTERM
        name = signal.Signals(signum).name
        last = self.run_dir.path / LAST
        kept = (f"the last checkpoint ({last}) holds the run" if last.is_file()
                else "no checkpoint had been written yet, so it starts from the beginning")
        return Preempted(signum, f"stopped by {name} at epoch {self.epoch + 1}, batch {self.batch}; {kept}: "
                                 f"continue it with 'analoglearn train --resume {self.run_dir.path}'")

    def train_epoch(self) -> None:
        """One epoch (from ``self.batch`` on, when resuming mid-epoch), evaluation and checkpoint."""
        cfg, epochs = self.cfg, self.cfg.train.epochs
        lr = set_learning_rate(self.optimizer, cfg.optim, self.epoch, epochs)
        steps = len(self.train_loader)
        every = cfg.train.checkpoint_every if isinstance(cfg.train.checkpoint_every, int) else 0
        bar = self.progress_bar(steps)
        start = time.perf_counter()
        flag = getattr(self, "_in_epoch", {"value": False})
        flag["value"] = True  # a stop signal from here on waits for the end of the next batch
        try:
            if self.hardware is not None:
                self.hardware.start_epoch(eval_loader(self.train_set, cfg.data, self.device), fresh=self.batch == 0)
            self._train_batches(bar, steps, every, start)
        finally:
            flag["value"] = False
        if bar is not None:
            bar.close()
        self.end_epoch(lr)

    def _train_batches(self, bar: Any, steps: int, every: int, start: float) -> None:
        for x, y in self.train_loader.epoch(self.epoch, start_batch=self.batch):
            progress = Progress(self.step, self.epoch, steps, steps * self.cfg.train.epochs)
            with self.hardware.reads() if self.hardware is not None else contextlib.nullcontext():
                record = self.method.train_step(x, y, progress)
            if self.hardware is not None:
                self.hardware.clip_weights()
            self.check_finite(record.get("loss", 0.0))
            self.partial["loss_sum"] += record["loss"] * len(y)
            self.partial["correct"] += record.get("correct", 0.0)
            self.partial["count"] += len(y)
            self.batch, self.step = self.batch + 1, self.step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            if (every and self.step % every == 0 and self.batch < steps) or self.stop_signal is not None:
                self.partial["seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                self.run_dir.save_checkpoint(self.state())
            if self.stop_signal is not None:
                raise self.preempted()
        self.partial["seconds"] += time.perf_counter() - start

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
        if improved:  # best.pt first: a kill between the two redoes the epoch and writes both again
            self.run_dir.save_checkpoint(state, BEST)
        self.run_dir.save_checkpoint(state)
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

    def eval_loader(self, dataset: Any) -> Any:
        """An evaluation loader over ``dataset`` (in order, no augmentation) on this run's device."""
        return eval_loader(dataset, self.cfg.data, self.device)

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
        cfg = self.cfg.eval
        evaluated = self  # eval.checkpoint best: evaluated in a model of its own, the live trainer left as it is
        if (cfg.noise or cfg.analog) and cfg.checkpoint == "best" and (self.run_dir.path / BEST).is_file():
            evaluated = load_trainer(self.run_dir.path, BEST, log=lambda line: None)
        results = assess_after_training(self, evaluated, self.log)
        for kind, result in results.items():  # noise: weight noise; analog: the tile model
            summary[kind] = [{k: p[k] for k in ("noise", "strength", "trials", "mean", "std", "min", "ci95",
                                                "per_trial")} for p in result["points"]]
            summary[f"{kind}_clean_accuracy"] = result["clean"]["top1"]
            summary[f"{kind}_area"] = {c["noise"]: c["normalized_area"] for c in result["curves"]}
        self.run_dir.write_summary(summary)
        return summary


def load_trainer(run_dir: str | Path, checkpoint: str = LAST, log: Callable[[str], None] = print) -> Trainer:
    """The run's model and method with the weights of ``checkpoint`` (``last.pt`` or ``best.pt``)."""
    run = RunDir(run_dir).require()
    trainer = Trainer(build_config(run.raw_config()), run, log)
    trainer.load_state(run.load_checkpoint(checkpoint, map_location=trainer.device),
                       source=f"checkpoint {str(run.path / checkpoint)!r}")
    return trainer


def format_record(record: dict[str, Any], epochs: int) -> str:
    """One log line per epoch."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['train_loss']:.4f}",
             f"train err {record['train_error']:.2f}%"]
    if "test_error" in record:
        parts.append(f"test err {record['test_error']:.2f}%")
    parts += [f"lr {record['lr']:.3g}", f"{record['epoch_seconds']:.1f}s"]
    return "  ".join(parts)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """The first key path where plain data ``a`` and ``b`` differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    return f"{path or 'config'}: {a!r} there, {b!r} here"


def prepare(cfg: Config | None, run_dir: str | Path, *, resume: bool = False,
            log: Callable[[str], None] = print) -> Trainer | dict[str, Any]:
    """Validate a run and build its trainer, writing nothing.

    New run: ``run_dir`` must be new or empty (:meth:`RunDir.ensure_new`). Resume: ``run_dir`` must
    be a run; a finished one returns its summary instead of a trainer (there is nothing to do).
    Data, model, method, optimiser, device and the ``eval`` section are all checked here, so a
    refused run leaves the disk exactly as it was.
    """
    run = RunDir(run_dir)
    if resume:
        run.require()
        summary = run.summary()
        if summary is not None and summary.get("status") == "finished":
            log(f"run {run.path} is finished ({summary.get('epochs')} epochs); nothing to do")
            return summary
        cfg = build_config(run.raw_config())
    else:
        if cfg is None:
            raise ConfigError("a new run needs a config")
        run.ensure_new()
    return Trainer(cfg, run, log)


def start(trainer: Trainer, *, resume: bool = False) -> dict[str, Any]:
    """Train a prepared run (the caller holds its lock); return its summary."""
    run, log = trainer.run_dir, trainer.log
    try:
        run.remove_stale()
        if resume:
            if run.finished():  # finished by another process since it was prepared
                return run.summary() or {}
            if (run.path / LAST).is_file():
                trainer.load_state(run.load_checkpoint(LAST, map_location=trainer.device),
                                   source=f"checkpoint {str(run.path / LAST)!r}")
                run.write_metrics(trainer.history)
                log(f"resuming {run.path} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
            else:
                log(f"no checkpoint in {run.path} yet: starting from the beginning")
            if not (run.path / ENV).is_file():  # a start killed before env.json (older versions)
                write_json(run.path / ENV, environment(trainer.device))
        else:
            RunDir.create(run.path, trainer.cfg, trainer.device)
        return trainer.run()
    except OSError as err:
        raise StorageError(storage_message(err, run.path)) from None


def fit(
    cfg: Config | None, run_dir: str | Path, *, resume: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (new, or continued from ``last.pt`` with ``resume=True``).

    Everything is validated before anything is written (:func:`prepare`). Holds the run's lock
    while it trains (:meth:`RunDir.lock`: a second process training the same run raises
    :class:`RunBusy`). Returns the run's summary (also written to ``summary.json``); resuming a
    finished run changes nothing and returns its summary.
    """
    if resume and RunDir(run_dir).locked():
        with RunDir(run_dir).lock():  # raises RunBusy, naming the process that trains it
            pass
    prepared = prepare(cfg, run_dir, resume=resume, log=log)
    if isinstance(prepared, dict):
        return prepared
    with RunDir(run_dir).lock():
        return start(prepared, resume=resume)


def fit_locked(
    cfg: Config | None, run_dir: str | Path, *, resume: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """:func:`fit` for a caller that already holds the run's lock."""
    prepared = prepare(cfg, run_dir, resume=resume, log=log)
    return prepared if isinstance(prepared, dict) else start(prepared, resume=resume)
