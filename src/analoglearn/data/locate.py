"""Where dataset files live, which files each split needs, and checking that they are intact.

The data root is the ``root`` argument, else ``$ANALOGLEARN_DATA``, else ``~/.cache/analoglearn``.
Under it analoglearn uses torchvision's folder layout, so a folder prepared for torchvision works:

============  ==============================================  =====================================
dataset       folders searched (in order)                     files checked
============  ==============================================  =====================================
MNIST         ``<root>/MNIST/raw/``                           SHA-256 of the decompressed IDX files
FashionMNIST  ``<root>/FashionMNIST/raw/``,                   SHA-256 of the decompressed IDX files
              ``/usr/share/datasets/fashion-mnist/`` (Debian)
CIFAR10       ``<root>/cifar-10-batches-py/``                 torchvision's MD5 of each batch file
CIFAR100      ``<root>/cifar-100-python/``                    torchvision's MD5 of ``train``, ``test``
SVHN          ``<root>/``, ``<root>/SVHN/``                   torchvision's MD5 of ``*_32x32.mat``
ImageNet32    ``<root>/ImageNet32/`` and more (see below)     none published (see below)
============  ==============================================  =====================================

ImageNet32 (downsampled ImageNet 32×32) follows the official distribution: most code that reads it
expects ``Imagenet32_train.zip`` unpacked as ``Imagenet32_train/train_data_batch_1..10`` and
``Imagenet32_val.zip`` as ``Imagenet32_val/val_data``, while the authors' own code reads all eleven files
from one folder. So the files are looked for in ``<root>/ImageNet32/`` (or ``<root>/imagenet32/``), directly or in its
``Imagenet32_train/``, ``Imagenet32_val/``, ``train/`` and ``val/`` subfolders, then in
``<root>/Imagenet32_train/`` and ``<root>/Imagenet32_val/``; each split comes from the first folder that
holds all of its files. No checksums of these files are published, so they are not hashed: the reader
checks their structure, types, label range and the number of images instead. ImageNet32 cannot be
fetched (the download needs a login), so :func:`missing_message` says where to put the files.

IDX files may be stored raw or gzipped (``name.gz``); the checksum is of the decompressed bytes, so
both verify alike. A file is hashed once: the result is kept in ``<root>/.verified.json``, keyed by
the file's absolute path, size and modification time, so later loads skip the hashing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

ENV_VAR = "ANALOGLEARN_DATA"
DEFAULT_ROOT = "~/.cache/analoglearn"
CACHE_NAME = ".verified.json"


@dataclass(frozen=True)
class DataFile:
    """One file a dataset split needs.

    Attributes:
        name: file name inside the dataset folder.
        digest: expected hex digest; ``''`` when none is published (the file is then not hashed, and the
            reader's checks of shapes, types and sizes are all the verification it gets).
        algorithm: ``'sha256'`` (of the decompressed content) or ``'md5'`` (of the file as stored).
        gzip_ok: whether the file may be stored gzipped as ``name + '.gz'``.
    """

    name: str
    digest: str
    algorithm: str = "sha256"
    gzip_ok: bool = False


@dataclass(frozen=True)
class Layout:
    """Where a dataset's files are looked for and which files each split needs.

    ``manual`` is set for datasets that ``analoglearn data fetch`` cannot download (ImageNet32: the
    official download needs a login): how to put the files from ``origin`` in place by hand, with
    ``{folder}`` standing for the first candidate folder. Their missing-files message says so.
    """

    folders: tuple[str, ...]
    system_folders: tuple[str, ...]
    splits: dict[str, tuple[DataFile, ...]]
    origin: str = ""
    manual: str = ""

    @property
    def fetchable(self) -> bool:
        """Whether ``analoglearn data fetch`` can download the dataset."""
        return not self.manual


# SHA-256 of the decompressed IDX files (identical whichever source they came from).
IDX_SHA256 = {
    "MNIST": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


def _idx_splits(name: str) -> dict[str, tuple[DataFile, ...]]:
    sha = IDX_SHA256[name]
    prefixes = {"train": "train", "test": "t10k"}
    return {
        split: tuple(DataFile(f"{p}-{kind}", sha[f"{p}-{kind}"], gzip_ok=True)
                     for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
        for split, p in prefixes.items()
    }


def _md5(name: str, md5: str) -> DataFile:
    return DataFile(name, md5, "md5")


# ImageNet32: no checksums of the individual files are published.
IMAGENET32_TRAIN_FILES = tuple(f"train_data_batch_{k}" for k in range(1, 11))
IMAGENET32_TEST_FILES = ("val_data",)
IMAGENET32_FOLDERS = (
    *(f"{top}{sub}" for top in ("ImageNet32", "imagenet32")
      for sub in ("", "/Imagenet32_train", "/Imagenet32_val", "/train", "/val")),
    "Imagenet32_train",
    "Imagenet32_val",
)
IMAGENET32_ORIGIN = (
    "https://image-net.org/download-images (Downsampled ImageNet, 32x32: Imagenet32_train.zip and "
    "Imagenet32_val.zip, the pickle version, not the _npz one; a free account and login are required)"
)
IMAGENET32_MANUAL = (
    "Unzip both archives into {folder}/ (whether they unpack into Imagenet32_train/ and Imagenet32_val/ or "
    "put the files directly in {folder}/, both work)"
)


LAYOUTS: dict[str, Layout] = {
    "MNIST": Layout(("MNIST/raw",), (), _idx_splits("MNIST"), "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    # The Debian package dataset-fashion-mnist installs gzipped IDX files in /usr/share/datasets.
    "FashionMNIST": Layout(
        ("FashionMNIST/raw",), ("/usr/share/datasets/fashion-mnist",), _idx_splits("FashionMNIST"),
        "https://github.com/zalandoresearch/fashion-mnist, or `apt-get install dataset-fashion-mnist`",
    ),
    # MD5 sums as published in torchvision/datasets/cifar.py and svhn.py.
    "CIFAR10": Layout(("cifar-10-batches-py",), (), {
        "train": (
            _md5("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            _md5("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            _md5("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            _md5("data_batch_4", "634d18415352ddfa80567beed471001a"),
            _md5("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        "test": (_md5("test_batch", "40351d587109b95175f43aff81a1287e"),),
    }, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked"),
    "CIFAR100": Layout(("cifar-100-python",), (), {
        "train": (_md5("train", "16019d7e3df5f24257cddd939b257f8d"),),
        "test": (_md5("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    }, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, unpacked"),
    "SVHN": Layout((".", "SVHN"), (), {
        "train": (_md5("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),),
        "test": (_md5("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),),
    }, "http://ufldl.stanford.edu/housenumbers/"),
    "ImageNet32": Layout(IMAGENET32_FOLDERS, (), {
        "train": tuple(DataFile(name, "") for name in IMAGENET32_TRAIN_FILES),
        "test": tuple(DataFile(name, "") for name in IMAGENET32_TEST_FILES),
    }, IMAGENET32_ORIGIN, IMAGENET32_MANUAL),
}


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$ANALOGLEARN_DATA``, else ``~/.cache/analoglearn``."""
    chosen = root if root is not None else os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(chosen).expanduser()


def layout(name: str) -> Layout:
    """The layout of the canonical dataset ``name`` (DataError for datasets that have no files)."""
    if name not in LAYOUTS:
        raise DataError(f"{name} is generated, not read from files; there is nothing to locate or fetch.")
    return LAYOUTS[name]


def candidate_folders(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order: under the data root, then system folders."""
    lay, base = layout(name), data_root(root)
    return [(base / f) if f != "." else base for f in lay.folders] + [Path(f) for f in lay.system_folders]


def stored_path(folder: Path, file: DataFile) -> Path | None:
    """The path of ``file`` in ``folder`` (raw preferred, then ``.gz`` when allowed), or None."""
    for path in (folder / file.name, folder / (file.name + ".gz")) if file.gzip_ok else (folder / file.name,):
        if path.is_file():
            return path
    return None


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of ``path``: SHA-256 of the decompressed content for ``.gz`` files, else of the bytes."""
    hasher = hashlib.new(algorithm)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
    except PermissionError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror}); make it readable by this user (e.g. chmod a+r), "
                        "or point the data root at a readable copy.") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path} is damaged: cannot read it ({exc}). Replace it with an intact copy."
        ) from exc
    return hasher.hexdigest()


def _cache_path(root: str | os.PathLike[str] | None) -> Path:
    return data_root(root) / CACHE_NAME


def _read_cache(root: str | os.PathLike[str] | None) -> dict[str, list]:
    try:
        cache = json.loads(_cache_path(root).read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(root: str | os.PathLike[str] | None, cache: dict[str, list]) -> None:
    target = _cache_path(root)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=CACHE_NAME, suffix=".tmp")
    except OSError:
        return  # an unwritable root only costs hashing again next time
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError:
        os.unlink(tmp)


def _stamp(path: Path, file: DataFile) -> list:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, file.algorithm, file.digest]


def verify(path: Path, file: DataFile, dataset: str, root: str | os.PathLike[str] | None = None) -> None:
    """Check ``path`` against ``file``'s digest, hashing only if size or mtime changed since the last check.

    Raises DataError naming the file, both digests and the fix when the content does not match. A file
    with no published digest (``file.digest == ''``) is accepted as it is.
    """
    if not file.digest:
        return
    key = str(path.resolve())
    cache = _read_cache(root)
    if cache.get(key) == _stamp(path, file):
        return
    actual = file_digest(path, file.algorithm)
    if actual != file.digest:
        what = "of the decompressed content" if file.algorithm == "sha256" else "of the file"
        raise DataError(
            f"checksum mismatch for {path}: {file.algorithm} {what} is {actual}, expected {file.digest}. "
            f"The file is damaged or not the official release: delete it and run "
            f"`analoglearn data fetch {dataset}`, or replace it with an intact copy."
        )
    mark_verified(path, file, root)


def mark_verified(path: Path, file: DataFile, root: str | os.PathLike[str] | None = None) -> None:
    """Record in the cache that ``path`` (as it is now) matches ``file``'s digest."""
    cache = _read_cache(root)  # read afresh: another process may have added entries meanwhile
    cache[str(path.resolve())] = _stamp(path, file)
    _write_cache(root, cache)


def find_split(name: str, split: str, root: str | os.PathLike[str] | None = None) -> dict[str, Path] | None:
    """Paths of the files of ``split`` in the first folder holding them all (unverified), else None."""
    for folder in candidate_folders(name, root):
        paths = {f.name: stored_path(folder, f) for f in layout(name).splits[split]}
        if all(p is not None for p in paths.values()):
            return paths  # type: ignore[return-value]
    return None


def locate(name: str, split: str, root: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Verified paths of the files of ``split`` of dataset ``name``, keyed by file name.

    Raises DataError saying where it looked and how to get the data when they are missing, or naming the
    damaged file when a checksum does not match.
    """
    check_root(root)
    paths = find_split(name, split, root)
    if paths is None:
        raise DataError(missing_message(name, split, root))
    files = {f.name: f for f in layout(name).splits[split]}
    for fname, path in paths.items():
        verify(path, files[fname], name, root)
    return paths


def check_root(root: str | os.PathLike[str] | None = None) -> None:
    """Refuse a data root that exists but is not a folder."""
    base = data_root(root)
    if base.exists() and not base.is_dir():
        raise DataError(f"the data root {base} is a file, not a folder; point data.root (or ${ENV_VAR}) at the "
                        "folder that holds the datasets")


def check_readable(name: str, split: str, root: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """:func:`locate` the files of ``split``, then check that this process can read each of them."""
    paths = locate(name, split, root)
    for path in paths.values():
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as err:
            raise DataError(f"{path} cannot be read ({err.strerror or err}); make it readable by this user "
                            f"(e.g. chmod a+r), or point data.root at a readable copy of {name}") from None
    return paths


def missing_message(name: str, split: str, root: str | os.PathLike[str] | None = None) -> str:
    """What is missing where, and the exact command or folder that would fix it."""
    if not layout(name).fetchable:
        return _manual_message(name, split, root)
    base = data_root(root)
    needed = layout(name).splits[split]
    looked = []
    for folder in candidate_folders(name, root):
        found = [f.name for f in needed if stored_path(folder, f) is not None]
        state = f"has {', '.join(found)} but not the rest" if found else "nothing there"
        looked.append(f"{folder} ({state})")
    names = ", ".join(f"`{f.name}`" for f in needed)
    origin = ("raw or .gz; " if needed[0].gzip_ok else "") + f"from {layout(name).origin}"
    where = candidate_folders(name, root)[0]
    root_note = "" if base.is_dir() else f" The data root {base} does not exist."
    return (
        f"{name} ({split} split) not found.{root_note} Looked in: {'; '.join(looked)}. "
        f"Get it with `{fetch_command(name, root)}`, or put {names} ({origin}) into {where}/. "
        f"The data root is --root (the `root` argument), else ${ENV_VAR}, else {DEFAULT_ROOT}."
    )


def fetch_command(name: str, root: str | os.PathLike[str] | None = None) -> str:
    """The command that downloads dataset ``name`` into the data root chosen by ``root``."""
    return f"analoglearn data fetch {name}" + (f" --root {data_root(root)}" if root is not None else "")


def _manual_message(name: str, split: str, root: str | os.PathLike[str] | None = None) -> str:
    """The missing-files message of a dataset that has to be downloaded by hand (``layout(name).manual``).

    Only the candidate folders that exist are listed, with what they hold: ImageNet32 has twelve.
    """
    lay, base = layout(name), data_root(root)
    needed, folders = lay.splits[split], candidate_folders(name, root)
    looked = []
    for folder in folders:
        found = [f.name for f in needed if stored_path(folder, f) is not None]
        if found:
            looked.append(f"{folder} (has {', '.join(found)} but not the rest)")
        elif folder.is_dir():
            looked.append(f"{folder} (none of them)")
    where = "; ".join(looked) if looked else f"none of the {len(folders)} folders it may be in exists"
    root_note = "" if base.is_dir() else f" The data root {base} does not exist."
    every = ", ".join(f"`{f.name}`" for files in lay.splits.values() for f in files)
    how = lay.manual.format(folder=folders[0])
    return (
        f"{name} ({split} split) not found.{root_note} Looked under {base}: {where}. "
        f"analoglearn cannot download {name}: get it on a machine with internet access from {lay.origin}. "
        f"{how}. The files expected: {every}. "
        f"The data root is --root (the `root` argument), else ${ENV_VAR}, else {DEFAULT_ROOT}."
    )
