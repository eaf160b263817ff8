"""Run directories: resolved config, per-epoch metrics, summary, checkpoints, environment.

A run directory holds::

    config.yaml      the resolved config (every default filled in)
    env.json         analoglearn and torch versions, device, git revision, host
    metrics.jsonl    one JSON object per finished epoch
    summary.json     final results (written at the end; ``status`` says finished or failed)
    last.pt          checkpoint after the last finished epoch (or step)
    best.pt          checkpoint of the epoch with the lowest test error

While a process trains a run it holds the run's lock, ``.<run name>.lock`` beside the directory
(an advisory ``flock``, released by the kernel when the process ends, even on SIGKILL): a second
process asked to train or resume the same run refuses (:class:`RunBusy`), so several sweeps over
one grid may share a folder and divide its runs between them.

Every file is written atomically (temporary file in the same folder, then ``os.replace``), so a
kill never leaves a half-written file. Checkpoints are plain dicts of tensors and primitives that
load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .config import Config, dump_yaml, read_yaml
from .errors import CheckpointError, RunBusy

CONFIG, ENV, METRICS, SUMMARY, LAST, BEST = (
    "config.yaml", "env.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"
)


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    atomic_write(path, lambda f: f.write(text))


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What produced a run: versions, device, git revision of the source tree, host."""
    from . import __version__

    device = torch.device(device)
    info: dict[str, Any] = {
        "analoglearn": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "git_revision": git_revision(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def git_revision() -> str | None:
    """``git describe --always --dirty`` of the tree holding this package, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunDir:
    """One run's directory (see the module docstring for its files)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------ creation and state
    @classmethod
    def create(cls, path: str | Path, config: Config, device: torch.device | str = "cpu") -> RunDir:
        """Make a new run directory; refuse one that already holds a run (nothing is overwritten)."""
        run = cls(path).ensure_new()
        run.path.mkdir(parents=True, exist_ok=True)
        write_text(run.path / CONFIG, dump_yaml(config.to_dict()))
        write_json(run.path / ENV, environment(device))
        return run

    def ensure_new(self) -> RunDir:
        """Raise :class:`CheckpointError` if this directory already holds a run."""
        if self.exists():
            raise CheckpointError(
                f"run directory {str(self.path)!r} already holds a run; continue it with "
                f"'analoglearn train --resume {self.path}', or choose another with --run-dir"
            )
        return self

    @property
    def lock_path(self) -> Path:
        """The run's lock file, ``.<name>.lock`` beside the directory."""
        return self.path.parent / f".{self.path.name}.lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock for the block; :class:`RunBusy` at once if another process holds it.

        The lock file ``.<name>.lock`` lies beside the directory (so taking it creates nothing inside
        a run that may turn out invalid), names its owner (pid, host) and is removed on release. A
        holder checks after locking that the path still names the file it locked (another may have
        just removed it), the usual flock-and-unlink protocol. Without ``fcntl`` (not POSIX) the
        block runs unlocked.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        path = self.lock_path
        while True:
            handle = open(path, "a+")  # noqa: SIM115 - held open (and locked) across the yield
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                handle.close()
                raise RunBusy(f"run {str(self.path)!r} is being trained by {owner} (lock {path}); "
                              "wait for it to end, or stop it and resume the run") from None
            try:
                same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()  # locked a file its holder has just removed: take the new one
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            handle.close()  # closing releases the flock

    def locked(self) -> bool:
        """Whether another holder has the run's lock now (a probe: it writes nothing, and touches
        no lock when no lock file exists, as a holder keeps its file until release)."""
        path = self.lock_path
        try:
            import fcntl

            handle = open(path)  # noqa: SIM115 - closed below, after the probe
        except (ImportError, FileNotFoundError):
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def exists(self) -> bool:
        """Whether this directory holds a run (a config or a checkpoint)."""
        return (self.path / CONFIG).is_file() or (self.path / LAST).is_file()

    def require(self) -> RunDir:
        """Raise :class:`CheckpointError` unless this is a run directory."""
        if not (self.path / CONFIG).is_file():
            raise CheckpointError(
                f"{str(self.path)!r} is not a run directory (no {CONFIG}); "
                "give a directory written by 'analoglearn train'"
            )
        return self

    def raw_config(self) -> dict[str, Any]:
        """The resolved config saved with the run, as plain data."""
        return read_yaml(self.require().path / CONFIG)

    def summary(self) -> dict[str, Any] | None:
        """``summary.json`` if the run has one."""
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.is_file() else None

    def finished(self) -> bool:
        """Whether the run completed."""
        return (self.summary() or {}).get("status") == "finished"

    # ------------------------------------------------------------------ metrics and results
    def metrics(self) -> list[dict[str, Any]]:
        """Per-epoch records from ``metrics.jsonl``."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` atomically from the full history."""
        write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in history))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Atomically write ``summary.json``."""
        write_json(self.path / SUMMARY, summary)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, state: dict[str, Any], name: str = LAST) -> Path:
        """Atomically save ``state`` (plain tensors and primitives) as ``name``."""
        path = self.path / name
        atomic_write(path, lambda f: torch.save(state, f), binary=True)
        return path

    def load_checkpoint(self, name: str = LAST, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load a checkpoint with ``weights_only=True``; a foreign or damaged file raises CheckpointError."""
        return load_checkpoint(self.path / name, map_location)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors a user can act on."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded as plain tensors and primitives "
            f"(torch.load weights_only=True): {first}"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an analoglearn checkpoint (no 'model' entry)")
    return state
