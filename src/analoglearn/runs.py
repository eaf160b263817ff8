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

Every file is written atomically (a temporary file ``.<name>.<random>.tmp`` in the same folder,
flushed to disk, renamed into place with ``os.replace``, then the folder itself flushed), so a kill
or a power loss never leaves a half-written file, and a full disk leaves the previous version
intact. Files get the permissions the umask gives (as any other tool's). A process that holds a
run's lock removes the temporary files a killed predecessor left (:meth:`RunDir.remove_stale`).

Checkpoints are plain dicts of tensors and primitives that load with
``torch.load(weights_only=True)``; every load first tests the CRC-32 that each member of torch's
zip archive carries, so flipped bits are refused instead of evaluated.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import platform
import re
import signal
import socket
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .config import Config, dump_yaml, read_yaml
from .errors import CheckpointError, RunBusy

CONFIG, ENV, METRICS, SUMMARY, LAST, BEST = (
    "config.yaml", "env.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"
)
TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
"""Names of the temporary files of :func:`atomic_write` (``.<name>.<8 random characters>.tmp``)."""

KILL_IN_WRITE = "ANALOGLEARN_TEST_KILL_IN_WRITE"
"""Test hook: with this variable set to K, the process SIGKILLs itself inside its K-th atomic write,
after the temporary file is written and before it is renamed (the kill tests use it)."""
_writes = 0


def umask() -> int:
    """The process's file-creation mask (read without changing it, from /proc where there is one)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries to disk, so that a rename in it survives a power loss."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every platform opens folders (nothing to flush there)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not flush folders
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place.

    The temporary file gets mode 0666 less the umask (``mkstemp`` alone would make it 0600), is
    flushed to disk before the rename, and the folder is flushed after it. On any error, the
    temporary file is removed and ``path`` is left as it was.
    """
    global _writes
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        _writes += 1
        if os.environ.get(KILL_IN_WRITE) == str(_writes):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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


def read_json(path: Path) -> Any:
    """A JSON file's content; an unreadable or malformed file raises :class:`CheckpointError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CheckpointError(f"{str(path)!r} cannot be read: {err.strerror or err}") from None
    except ValueError as err:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({err}); it is damaged: delete it, and "
                              "'analoglearn train --resume <its run>' writes it again") from None


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


def save_bytes(state: dict[str, Any]) -> bytes:
    """``torch.save(state)`` into memory (so that a full disk fails as an ``OSError`` on write)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def name_max(path: Path) -> int:
    """Longest file name the file system holding ``path`` (or its nearest existing parent) allows."""
    probe = existing_parent(path)
    try:
        return os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def existing_parent(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (a name too long counts as absent)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_names(path: Path, *, extra_names: tuple[str, ...] = ()) -> None:
    """Refuse a path with a name still to be created (or one of ``extra_names``, files to create beside
    it) longer than the file system allows, less room for the temporary names of atomic writes."""
    absolute = Path(os.path.abspath(path))
    limit = name_max(absolute) - 16  # room for the temporary '.<name>.XXXXXXXX.tmp'
    prefixes = [Path(*absolute.parts[: i + 1]) for i in range(1, len(absolute.parts))]
    names = [(p.name, not os.path.lexists(p)) for p in prefixes] + [(n, True) for n in extra_names]
    for name, created in names:
        size = len(os.fsencode(name))
        if created and size > limit:
            raise CheckpointError(f"the name {name[:40]!r}... in {str(path)[:60]!r} is {size} bytes long; this "
                                  f"file system allows {limit + 16} bytes, less 16 for temporary files: choose a "
                                  "shorter path")


def check_writable(path: Path, *, extra_names: tuple[str, ...] = ()) -> None:
    """Refuse, before anything is written, a ``path`` (a folder or a file to create) that cannot be written.

    Checks: no existing file stands where a folder must be; no name still to be created (nor any of
    ``extra_names``, e.g. a lock file beside it) is longer than the file system allows, less room for
    the temporary names of atomic writes; the nearest existing folder is writable.
    """
    path = Path(path)
    check_names(path, extra_names=extra_names)
    absolute = Path(os.path.abspath(path))
    parent = existing_parent(absolute)
    if parent != absolute and not parent.is_dir():
        raise CheckpointError(f"cannot create {str(path)!r}: {str(parent)!r} is a file, not a folder")
    folder = parent if parent.is_dir() else parent.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(folder) else "is not writable by this user"
        raise CheckpointError(f"cannot write {str(path)!r}: the folder {str(folder)!r} {why}; "
                              "choose another location")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_output_file(path: str | Path, what: str) -> Path:
    """Refuse an output file path that is a folder or cannot be written (see :func:`check_writable`)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} {str(path)!r} is a folder; give a file path")
    check_writable(path)
    return path


def check_output_dir(path: str | Path, what: str) -> Path:
    """Refuse an output folder path that is a file or cannot be written (see :func:`check_writable`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{what} {str(path)!r} is a file; give a folder (new or existing)")
    check_writable(path)
    return path


def storage_message(err: OSError, run: Path | None = None) -> str:
    """One line for a failed write (a full disk, a read-only file system, a permission)."""
    where = f" {err.filename!r}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"no space left on device writing{where}"
    elif err.errno == errno.EROFS:
        what = f"read-only file system writing{where}"
    elif err.errno in (errno.EACCES, errno.EPERM):
        what = f"permission denied writing{where}"
    elif err.errno == errno.ENAMETOOLONG:
        what = f"file name too long{where}"
    else:
        what = f"{err.strerror or err}{where}"
    if run is None:
        return f"{what}; nothing half-written was left behind (every file is replaced whole or not at all)"
    return (f"{what}; every file already in {str(run)!r} is intact (a file is replaced whole or not at all; "
            f"last.pt is the last checkpoint written): free space or fix the folder, then continue with "
            f"'analoglearn train --resume {run}'")
