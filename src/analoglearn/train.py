"""The one training loop, shared by every method of both pillars.

``fit(config, run_dir)`` builds the data loaders, the model, the optimiser (with per-layer
learning-rate groups, wrapped by the ``perturb`` section's SAM/ASAM/RWP), the method, then for each
epoch: sets the learning rate of the schedule, takes ``optimizer.step(method.closure(x, y))`` on every
batch (:func:`take_step`; sharded over workers under ``torchrun``, :mod:`analoglearn.distributed`),
evaluates on the test set, appends a line to ``metrics.jsonl`` and saves ``last.pt`` (and
``best.pt``). ``fit(..., resume=True)`` continues
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
from pathlib import Path
from typing import Any

import torch

from . import data as datasets
from . import distributed, schedule
from .build import (
    Seeds,
    build_model,
    build_parts,
    check_subsets,
    eval_loader,
    input_shape,
    load_splits,
    resolve_device,
    validate,
)
from .config import Config, build_config
from .errors import AnalogLearnError, CheckpointError, ConfigError, Preempted, StorageError, TrainingDiverged
from .evaluate import accuracy
from .logsinks import Sinks
from .method import Closure, GradScaler, Outcome
from .robust.perturbation import Perturbation
from .runs import BEST, ENV, LAST, RunDir, environment
from .storage import storage_message, write_json

CHECKPOINT_FORMAT = "analoglearn-checkpoint-1"

__all__ = ["Seeds", "Trainer", "build_model", "fit", "fit_locked", "load_trainer", "prepare", "resolve_device",
           "start", "take_step", "validate"]


def take_step(optimizer: torch.optim.Optimizer, closure: Closure, scaler: GradScaler | None = None,
              clip: float | None = None) -> Outcome:
    """One optimiser step on a closure: a perturbation calls it itself (``step(closure, scaler)``); a
    plain optimiser gets ``.grad`` zeroed, one call, the optional clipping to ‖g‖₂ ≤ ``clip`` (of the
    unscaled gradient) and its step (through ``scaler`` when given). Returns the closure's outcome."""
    if isinstance(optimizer, Perturbation):
        return optimizer.step(closure, scaler=scaler)
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        outcome = closure()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if scaler is not None:
        if clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(optimizer)
        scaler.update()
        return outcome
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    return outcome


# ---------------------------------------------------------------- the loop


class Trainer:
    """Holds everything a run needs; ``run()`` trains, checkpoints and evaluates."""

    def __init__(self, cfg: Config, run: RunDir, log: Callable[[str], None] = print) -> None:
        self.world = distributed.world()
        self.cfg, self.run_dir = cfg, run
        self.log = log if self.world.writer else (lambda line: None)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device)
        if self.world.active and self.device.type == "cuda":  # one GPU per worker
            self.device = torch.device("cuda", self.world.local_rank)
            torch.cuda.set_device(self.device)
        self.seeds = Seeds.derive(cfg.seed)
        check_subsets(cfg)
        input_shape(cfg.data)
        torch.manual_seed(cfg.seed)
        self.train_set, self.test_set = load_splits(cfg.data, self.seeds.data)
        self.train_loader = datasets.Loader(self.train_set, cfg.data.batch_size, shuffle=True,
                                            augment=cfg.data.augment, seed=self.seeds.data, device=self.device,
                                            pad_to=cfg.data.pad_to)
        self.test_loader = eval_loader(self.test_set, cfg.data, self.device)
        self.model, self.optimizer, self.method, self.hardware = build_parts(cfg, self.seeds, self.device,
                                                                             len(self.train_loader), self.world.rank)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.train.autocast == "fp16" else None
        self.epoch, self.batch, self.step = 0, 0, 0
        self.stop_signal: int | None = None
        self.in_epoch = False  # where a stop signal waits for the end of the batch (stop_on_signals)
        self.partial = {"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}
        self.history: list[dict[str, Any]] = []
        self.best_error: float | None = None

    # ------------------------------------------------------------------ checkpoint state
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (plain tensors and primitives)."""
        mine = self.worker_state()
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": mine["method"],
            "generators": {"torch": mine["torch"], "method": mine["generator"]},
            "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "partial": dict(self.partial), "history": list(self.history), "best_test_error": self.best_error,
            **({"analog": self.hardware.state_dict()} if self.hardware is not None else {}),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            **({"workers": distributed.gather(mine, self.world)} if self.world.active else {}),
        }

    def worker_state(self) -> dict[str, Any]:
        """What differs between workers: the method's state (warm starts of its shard), its generator and
        torch's (random operations on shards of different sizes draw different amounts)."""
        gen = self.method.generator
        return {"method": self.method.state_dict(), "generator": gen.get_state() if gen is not None else None,
                "torch": torch.get_rng_state()}

    def save(self, *names: str) -> None:
        """Write the checkpoint ``names`` (default ``last.pt``) in order, on rank 0; every worker takes part
        in gathering the state."""
        distributed.broadcast_buffers(self.model, self.world)
        state = self.state()
        for name in names or (LAST,):
            if self.world.writer:
                self.run_dir.save_checkpoint(state, name)

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
        ours = self.cfg.to_dict()
        if saved != ours:
            raise CheckpointError(f"{source} was written by another config than this run's config.yaml "
                                  f"({_first_difference(saved, ours)}): it belongs to another "
                                  "run; give this run's own checkpoint")
        try:
            self._load_state(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
            first = " ".join(lines[:2])
            raise CheckpointError(f"{source} does not fit this run's model, optimiser or method ({first[:200]}): "
                                  "it was written for another network; give this run's own checkpoint") from None

    def restore(self, checkpoint: str = LAST) -> None:
        """Load this run's checkpoint ``checkpoint`` (verified) into the trainer (:meth:`load_state`)."""
        path = self.run_dir.path / checkpoint
        self.load_state(self.run_dir.load_checkpoint(checkpoint, map_location=self.device),
                        source=f"checkpoint {str(path)!r}")

    def _load_state(self, state: dict[str, Any]) -> None:
        workers = state.get("workers", [])
        if len(workers) != (self.world.size if self.world.active else 0):
            raise CheckpointError(f"the checkpoint was written by {max(len(workers), 1)} worker(s) and this run has "
                                  f"{self.world.size}: resume it with torchrun --nproc_per_node {max(len(workers), 1)}")
        optimizer, method = state["optimizer"], state["method"]
        if set(method) == {"perturbation", "inner"}:  # written when SAM/ASAM/RWP were methods
            optimizer, method = {"base": optimizer, **method["perturbation"]}, method["inner"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(optimizer)
        self.method.load_state_dict(method)
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["generators"]["torch"])
        if self.method.generator is not None and state["generators"]["method"] is not None:
            self.method.generator.set_state(state["generators"]["method"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.partial, self.history = dict(state["partial"]), list(state["history"])
        self.best_error = state["best_test_error"]
        if self.hardware is not None:
            self.hardware.load_state_dict(state["analog"])
        if workers:
            mine = workers[self.world.rank]
            self.method.load_state_dict(mine["method"])
            torch.set_rng_state(mine["torch"])
            if self.method.generator is not None and mine["generator"] is not None:
                self.method.generator.set_state(mine["generator"])

    # ------------------------------------------------------------------ training
    def run(self) -> dict[str, Any]:
        """Train the remaining epochs, then write the summary.

        SIGTERM (a scheduler preempting the job) and SIGINT stop the run cleanly: inside an epoch
        at the end of the current batch, after a checkpoint of that position; elsewhere at once (the
        last checkpoint holds the state). Either way :class:`Preempted` is raised and
        ``train --resume`` continues exactly.
        """
        epochs = self.cfg.train.epochs
        resumed = self.step if self.history or self.step else None
        names = self.cfg.train.log if self.world.writer else ["jsonl"]  # jsonl: a no-op sink
        with self.stop_on_signals(), Sinks(names, self.run_dir.path, resume_step=resumed) as sinks:
            self.sinks = sinks
            while self.epoch < epochs:
                self.train_epoch()
            return self.finish()

    @contextlib.contextmanager
    def stop_on_signals(self) -> Any:
        """Handle SIGTERM and SIGINT for the block (main thread only; elsewhere signals keep their handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        def handler(signum: int, frame: Any) -> None:
            self.stop_signal = signum
            if not self.in_epoch:
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
        for group in self.optimizer.param_groups:  # the schedule of each group's initial rate, stepped per epoch
            group["lr"] = schedule.learning_rate(cfg.optim.schedule, group["initial_lr"], cfg.optim.lr_min,
                                                 epochs, 1)(self.epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        steps = len(self.train_loader)
        every = cfg.train.checkpoint_every if isinstance(cfg.train.checkpoint_every, int) else 0
        bar = self.progress_bar(steps)
        start = time.perf_counter()
        self.in_epoch = True  # a stop signal from here on waits for the end of the next batch
        try:
            if self.hardware is not None:
                self.hardware.start_epoch(self.eval_loader(self.train_set), fresh=self.batch == 0)
            self._train_batches(bar, steps, every, start)
        finally:
            self.in_epoch = False
        if bar is not None:
            bar.close()
        self.end_epoch(lr)

    def _train_batches(self, bar: Any, steps: int, every: int, start: float) -> None:
        local = 1 if getattr(self.cfg.perturb.options, "local_ascent", False) else 0
        for x_all, y_all in self.train_loader.epoch(self.epoch, start_batch=self.batch):
            x, y = distributed.shard(x_all, y_all, self.world)
            with self.hardware.reads() if self.hardware is not None else contextlib.nullcontext():
                closure = self.method.closure(x, y, self.scaler)
                if self.world.active:
                    closure = distributed.synced(closure, self.params, len(y), len(y_all), self.world, local)
                outcome = take_step(self.optimizer, closure, self.scaler, self.cfg.optim.clip_grad_norm)
            if self.hardware is not None:
                self.hardware.clip_weights()
            loss = float(outcome)
            self.check_finite(loss)
            self.partial["loss_sum"] += loss * len(y_all)
            self.partial["correct"] += float(outcome.correct)
            self.partial["count"] += len(y_all)
            self.batch, self.step = self.batch + 1, self.step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            stop = distributed.agree(self.stop_signal is not None, self.world)  # all workers stop at one batch
            if (every and self.step % every == 0 and self.batch < steps) or stop:
                self.partial["seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                self.save()
            if stop:
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
        if isinstance(self.optimizer, Perturbation):
            record["rho" if self.cfg.perturb.name in ("sam", "asam") else "sigma"] = self.optimizer.current_strength()
            record.update(self.optimizer.epoch.summary())
        last = self.epoch + 1 == epochs
        distributed.broadcast_buffers(self.model, self.world)
        if last or (self.epoch + 1) % self.cfg.train.eval_every == 0:
            start = time.perf_counter()
            result = accuracy(self.method.predict, self.test_loader)  # errors in %; top-5 with ≥ 5 classes
            record["test_error"] = 100.0 - result.top1
            if result.top5 is not None:
                record["test_top5_error"] = 100.0 - result.top5
            record["eval_seconds"] = time.perf_counter() - start
        record["epoch_seconds"] = p["seconds"]
        self.check_weights()
        self.history.append(record)
        self.epoch, self.batch = self.epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "correct": 0.0, "count": 0, "seconds": 0.0}
        improved = "test_error" in record and (self.best_error is None or record["test_error"] < self.best_error)
        if improved:
            self.best_error = record["test_error"]
        self.sinks.scalars(self.step, record)  # before the checkpoint: a resume purges what follows it
        # best.pt first: a kill between the two redoes the epoch and writes both again
        self.save(*((BEST, LAST) if improved else (LAST,)))
        if self.world.writer:
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
        if self.world.writer:
            self.run_dir.write_summary({"status": "diverged", "epoch": self.epoch + 1, "step": self.step,
                                        "reason": what})
        return TrainingDiverged(f"training diverged at epoch {self.epoch + 1}, step {self.step}: {what}. "
                                f"{kept} ({self.run_dir.path / LAST}). Try a lower optim.lr.")

    def progress_bar(self, total: int) -> Any:
        """A tqdm bar when ``train.progress`` asks for one (default: when stderr is a terminal), else None."""
        if not (sys.stderr.isatty() if self.cfg.train.progress is None else self.cfg.train.progress):
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

        error = (self.history[-1] if self.history else {}).get("test_error")
        if not self.world.writer:  # rank 0 evaluates and writes alone; no collective follows
            return {"status": "finished", "epochs": len(self.history), "steps": self.step}
        self.write_artifacts()
        summary: dict[str, Any] = {
            "status": "finished", "epochs": len(self.history), "steps": self.step, "test_error": error,
            "test_accuracy": None if error is None else 100.0 - error,
            "best_test_error": self.best_error, "train_seconds": sum(r["epoch_seconds"] for r in self.history),
            "dataset": self.cfg.data.name, "model": self.cfg.model.name, "method": self.cfg.method.name,
            "perturb": self.cfg.perturb.name, "seed": self.cfg.seed,
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
    trainer.restore(checkpoint)
    return trainer


def format_record(record: dict[str, Any], epochs: int) -> str:
    """One log line per epoch."""
    test = f"  test err {record['test_error']:.2f}%" if "test_error" in record else ""
    return (f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  train err {record['train_error']:.2f}%"
            f"{test}  lr {record['lr']:.3g}  {record['epoch_seconds']:.1f}s")


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
        if distributed.world().writer:  # other workers: rank 0 checks (and then creates) the folder
            run.ensure_new()
    return Trainer(cfg, run, log)


def start(trainer: Trainer, *, resume: bool = False) -> dict[str, Any]:
    """Train a prepared run (the caller holds its lock); return its summary. With several workers
    (:mod:`analoglearn.distributed`) only rank 0 writes, and all of them start or fail together."""
    run, log, world = trainer.run_dir, trainer.log, trainer.world
    try:
        error: BaseException | None = None
        try:
            if world.writer:
                run.remove_stale()
            if resume:
                if run.finished():  # finished by another process since it was prepared
                    return run.summary() or {}
                if (run.path / LAST).is_file():
                    trainer.restore(LAST)
                    if world.writer:
                        run.write_metrics(trainer.history)
                    log(f"resuming {run.path} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
                else:
                    log(f"no checkpoint in {run.path} yet: starting from the beginning")
                if world.writer and not (run.path / ENV).is_file():  # a start killed before env.json
                    write_json(run.path / ENV, environment(trainer.device))
            elif world.writer:
                RunDir.create(run.path, trainer.cfg, trainer.device)
        except (AnalogLearnError, OSError) as err:
            error = err
        error = distributed.first_failure(error, world, lambda r: f"worker {r} could not start the run (see its "
                                                                  "message)")
        if error is not None:
            raise error
        return trainer.run()
    except OSError as err:
        raise StorageError(storage_message(err, run.path)) from None


def fit(cfg: Config | None, run_dir: str | Path, *, resume: bool = False, log: Callable[[str], None] = print,
        locked: bool = False) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (new, or continued from ``last.pt`` with ``resume=True``).

    Everything is validated before anything is written (:func:`prepare`), on every worker before any
    starts. Holds the run's lock while it trains (:meth:`RunDir.lock`: a second process training the
    same run raises :class:`RunBusy`), unless the caller holds it (``locked``, as a sweep does).
    Returns the run's summary (also written to ``summary.json``); resuming a finished run changes
    nothing and returns its summary.
    """
    world = distributed.world()
    if resume and world.writer and not locked and RunDir(run_dir).locked():
        with RunDir(run_dir).lock():  # raises RunBusy, naming the process that trains it
            pass
    error: BaseException | None = None
    try:
        prepared = prepare(cfg, run_dir, resume=resume, log=log)
    except AnalogLearnError as err:
        error = err
    error = distributed.first_failure(error, world, lambda r: f"worker {r} refused the run (see its message)")
    if error is not None:
        raise error
    if isinstance(prepared, dict):
        return prepared
    with RunDir(run_dir).lock() if world.writer and not locked else contextlib.nullcontext():
        return start(prepared, resume=resume)


def fit_locked(cfg: Config | None, run_dir: str | Path, **options: Any) -> dict[str, Any]:
    """:func:`fit` for a caller that already holds the run's lock."""
    return fit(cfg, run_dir, locked=True, **options)
