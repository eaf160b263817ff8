"""Logging sinks: where the per-epoch records go (config ``train.log``, e.g. ``[jsonl, tensorboard]``).

``jsonl`` is ``metrics.jsonl``, which :meth:`RunDir.write_metrics <analoglearn.runs.RunDir.write_metrics>`
always writes; as a sink it does nothing. ``tensorboard`` writes event files to ``<run>/tensorboard``
through ``torch.utils.tensorboard``, imported only when asked for: this module imports without it.

Only finite real numbers are logged (ints, floats, numpy scalars, 0-d tensors). Bools, ``None``,
strings, lists and dicts are skipped, and so are NaN and ±inf: a diverging run stops with
:class:`~analoglearn.errors.TrainingDiverged` anyway, and ``metrics.jsonl`` keeps every value as recorded.

Resuming: a run killed after logging an epoch but before its checkpoint logs that epoch again. The
writer is reopened with ``purge_step = resume_step + 1``, so TensorBoard hides the points written after
the checkpoint and shows one value per step. Call :meth:`Sinks.scalars` *before* saving the epoch's
checkpoint, so that a point at the checkpoint's own step is always kept.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import ConfigError
from .registry import Registry

SINKS: Registry[Any] = Registry("sink")  # factory: run directory → where the sink writes
SINKS.register("jsonl", summary="metrics.jsonl in the run directory (always written; one JSON record per epoch)")(
    lambda run_dir: Path(run_dir) / "metrics.jsonl")
SINKS.register("tensorboard", summary="TensorBoard event files in <run>/tensorboard "
                                      "(pip install 'analoglearn[tensorboard]')")(
    lambda run_dir: Path(run_dir) / "tensorboard")
INSTALL = "pip install 'analoglearn[tensorboard]'"
GROUPS = {"lr": "lr", "epoch": "epoch"}  # record keys logged under their own name; the rest, see tag()


def check(names: Any, where: str = "train.log") -> list[str]:
    """The canonical sink names of ``names``; :class:`ConfigError` for an unknown name, a duplicate,
    an empty list, or ``tensorboard`` when the ``tensorboard`` package cannot be imported."""
    valid = ", ".join(SINKS.names())
    if isinstance(names, str) or not isinstance(names, list | tuple) or not names:
        raise ConfigError(f"{where}: expected a non-empty list of sinks, got {names!r}; valid: {valid}")
    out: list[str] = []
    for name in names:
        try:
            canonical = SINKS.canonical(name)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        if canonical in out:
            raise ConfigError(f"{where}: sink {canonical!r} listed twice; valid: {valid}")
        out.append(canonical)
    if "tensorboard" in out:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"{where}: the 'tensorboard' sink needs the tensorboard package ({err}); "
                              f"install it with: {INSTALL}") from None
    return out


def tag(key: str, prefix: str = "") -> str:
    """TensorBoard tag of a record key: ``train_loss`` → ``train/loss``, ``test_error`` → ``test/error``,
    ``*_seconds`` → ``time/*``, ``lr`` and ``epoch`` as they are, anything else → ``diagnostics/<key>``.
    With a ``prefix`` the tag is ``<prefix>/<key>``."""
    if prefix:
        return f"{prefix.rstrip('/')}/{key}"
    if key in GROUPS:
        return GROUPS[key]
    for start in ("train", "test"):
        if key.startswith(start + "_"):
            return f"{start}/{key[len(start) + 1:]}"
    if key.endswith("_seconds"):
        return f"time/{key.removesuffix('_seconds')}"
    return f"diagnostics/{key}"


def scalar(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else ``None``."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # 0-d tensors and arrays
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Sinks:
    """The sinks of ``names`` for the run directory ``run_dir``; ``resume_step``: the step of the
    checkpoint a resumed run continues from (``None`` for a new run)."""

    def __init__(self, names: list[str], run_dir: str | Path, *, resume_step: int | None = None) -> None:
        self.names = check(names)
        self.writer: Any = None
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self.writer = SummaryWriter(log_dir=str(SINKS.create("tensorboard", run_dir)), purge_step=purge)

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "") -> None:
        """Log every finite number of ``values`` at ``step`` (``step`` itself is the x axis, not a value)."""
        if self.writer is None:
            return
        for key, value in values.items():
            number = scalar(value)
            if number is not None and key != "step":
                self.writer.add_scalar(tag(key, prefix), number, global_step=step)
        self.writer.flush()  # on disk as soon as metrics.jsonl is

    def close(self) -> None:
        """Flush and close the writers (idempotent)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> Sinks:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
