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

Every file is written atomically (:mod:`analoglearn.storage`), so a kill or a power loss never
leaves a half-written file and a full disk leaves the previous version intact. A process that holds
a run's lock removes the temporary files a killed predecessor left (:meth:`RunDir.remove_stale`).

Checkpoints are plain dicts of tensors and primitives that load with
``torch.load(weights_only=True)``; every load first tests the CRC-32 that each member of torch's
zip archive carries, so flipped bits are refused instead of evaluated.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .config import Config, dump_yaml, read_yaml
from .errors import CheckpointError, RunBusy
from .storage import (
    KILL_IN_WRITE,
    TEMP,
    atomic_write,
    check_names,
    check_output_dir,
    check_output_file,
    check_writable,
    read_json,
    save_bytes,
    storage_message,
    write_json,
    write_text,
)

__all__ = ["KILL_IN_WRITE", "RunDir", "atomic_write", "check_output_dir", "check_output_file", "environment",
           "load_checkpoint", "storage_message", "write_json", "write_text"]

CONFIG, ENV, METRICS, SUMMARY, LAST, BEST = (
    "config.yaml", "env.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"
)


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
        """Make a new run directory; refuse one that already holds a run (nothing is overwritten).

        ``env.json`` is written before ``config.yaml`` (whose presence makes the folder a run), so a
        run never lacks its environment record; a folder holding only ``env.json`` is a start that
        was killed, and :meth:`ensure_new` lets a new attempt use it.
        """
        run = cls(path).ensure_new()
        run.path.mkdir(parents=True, exist_ok=True)
        write_json(run.path / ENV, environment(device))
        write_text(run.path / CONFIG, dump_yaml(config.to_dict()))
        return run

    def ensure_new(self) -> RunDir:
        """Raise :class:`CheckpointError` unless a new run may be created here, writing nothing.

        Valid: a path that does not exist yet (its parents are created), an empty folder, or a
        folder holding only analoglearn's own record of an attempt that failed before it started
        (a failed ``summary.json``, ``env.json``, temporary files of a killed write). A file, a run,
        or a folder with any other file (the user's own) is refused, and so is a path that could not
        be created (a file among its parents, no write permission, a name too long).
        """
        text = repr(str(self.path))
        check_names(self.path, extra_names=(self.lock_path.name,))
        if self.exists():
            raise CheckpointError(
                f"run directory {text} already holds a run; continue it with "
                f"'analoglearn train --resume {self.path}', or choose another with --run-dir"
            )
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"run directory {text} is a file, not a folder; give a new or empty folder")
        if self.path.is_dir():
            foreign = sorted(name for name in os.listdir(self.path) if not self.leftover(name))
            if foreign:
                shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise CheckpointError(
                    f"run directory {text} is not empty and holds no run ({shown}); analoglearn writes "
                    "only into a new or empty folder: give another --run-dir (nothing was written)"
                )
        check_writable(self.path, extra_names=(self.lock_path.name,))
        return self

    def leftover(self, name: str) -> bool:
        """Whether file ``name`` in this (run-less) folder is analoglearn's record of an attempt
        that never started training: ``env.json``, a temporary file, a failed ``summary.json``."""
        if name == ENV or TEMP.match(name):
            return True
        if name != SUMMARY:
            return False
        try:
            status = json.loads((self.path / SUMMARY).read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            return False
        return status in ("failed", "diverged")

    def remove_stale(self) -> list[Path]:
        """Remove temporary files that killed writes left in this folder (call only with the lock held)."""
        removed = []
        if self.path.is_dir():
            for entry in self.path.iterdir():
                if TEMP.match(entry.name) and entry.is_file():
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
        return removed

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
        """``summary.json`` if the run has one; a damaged one raises :class:`CheckpointError`."""
        path = self.path / SUMMARY
        if not path.is_file():
            return None
        data = read_json(path)
        if not isinstance(data, dict):
            raise CheckpointError(f"{str(path)!r} is not a run summary (a JSON object); delete it, and "
                                  f"'analoglearn train --resume {self.path}' writes it again")
        return data

    def finished(self) -> bool:
        """Whether the run completed."""
        return (self.summary() or {}).get("status") == "finished"

    # ------------------------------------------------------------------ metrics and results
    def metrics(self) -> list[dict[str, Any]]:
        """Per-epoch records from ``metrics.jsonl``."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        try:
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (ValueError, OSError) as err:
            raise CheckpointError(f"{str(path)!r} is damaged ({err}); 'analoglearn train --resume {self.path}' "
                                  "rewrites it from the last checkpoint") from None

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
        data = save_bytes(state)
        atomic_write(path, lambda f: f.write(data), binary=True)
        return path

    def load_checkpoint(self, name: str = LAST, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load a checkpoint with ``weights_only=True``; a foreign or damaged file raises CheckpointError."""
        return load_checkpoint(self.path / name, map_location)


def verify_archive(path: Path) -> None:
    """Test the CRC-32 of every member of the zip archive ``torch.save`` wrote; :class:`CheckpointError`
    naming the file and the fix when one does not match (the file was damaged after it was written)."""
    fix = ("resume from the other checkpoint (copy best.pt over last.pt, or the reverse), or retrain; "
           "do not use this file")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a torch checkpoint (not a zip "
                              f"archive): {fix}") from None
    except (OSError, EOFError, zipfile.LargeZipFile) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({err}): {fix}") from None
    except Exception as err:  # zipfile raises plain errors on some damage (bad headers, bad lengths)
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged ({type(err).__name__}: {err}): {fix}") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: the CRC-32 of its member {bad!r} does not "
                              f"match its content: {fix}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` after an integrity check, with errors a user can act on."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found")
    verify_archive(path)
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


