"""Writing files safely: atomic replacement, durability, the umask, and checks before anything is written.

Every file analoglearn writes goes through :func:`atomic_write`: a temporary file
``.<name>.<8 random characters>.tmp`` in the same folder, made with the permissions the umask gives,
flushed to disk, renamed into place with ``os.replace``, and the folder flushed after the rename,
so a kill or a power loss never leaves a half-written file and a full disk leaves the previous
version intact. :func:`check_writable` and its relatives refuse, before anything is written, paths
that could not be written (a file where a folder must be, names too long for the file system, a
read-only or foreign folder); :func:`storage_message` turns a failed write into one line.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

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


def read_json(path: Path) -> Any:
    """A JSON file's content; an unreadable or malformed file raises :class:`CheckpointError`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CheckpointError(f"{str(path)!r} cannot be read: {err.strerror or err}") from None
    except ValueError as err:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({err}); it is damaged: delete it, and "
                              "'analoglearn train --resume <its run>' writes it again") from None


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
