"""Readers (and a writer for IDX) of the real dataset file formats.

Every reader validates what it reads and raises :class:`~analoglearn.errors.DataError` naming the
file and the fix when a file is truncated, corrupt or not what it claims to be. Images come back as
uint8 tensors ``(N, C, H, W)``, labels as int64 tensors ``(N,)``.

- IDX (MNIST, Fashion-MNIST), raw or gzipped: 2 zero bytes, a type code, the number of dimensions
  ``d``, ``d`` big-endian uint32 sizes, then the values in big-endian, row-major order.
- CIFAR-10/100 python batches: pickled dicts with ``b'data'`` (uint8 ``(N, 3072)``: the red, green
  and blue 32×32 planes of each image, row-major) and ``b'labels'`` (CIFAR-10) or ``b'fine_labels'``
  (CIFAR-100). Unpickling is restricted to numpy arrays and builtins, so a file that tries to run
  code is refused.
- SVHN ``*_32x32.mat`` (MATLAB v5): ``X`` uint8 ``(32, 32, 3, N)`` and ``y`` ``(N, 1)`` with digit 0
  stored as label 10.
- ImageNet32 (downsampled ImageNet 32×32, Chrabaszcz, Loshchilov & Hutter 2017, arXiv:1707.08819):
  ``train_data_batch_1`` … ``train_data_batch_10`` and ``val_data``, each a pickled dict with ``'data'``
  (uint8 ``(N, 3072)``, the red, green and blue 32×32 planes row-major, as in CIFAR) and ``'labels'``
  (a list of classes stored as 1..1000); train files also hold ``'mean'``, the float mean image
  ``(3072,)``, which analoglearn does not use. Keys may be str (pickled by Python 3) or bytes (Python 2).
  Read with the same restricted unpickler; the reader shifts labels to 0..999.
"""

from __future__ import annotations

import gzip
import importlib
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

# IDX type code -> big-endian numpy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}



def _damaged(path: Path, what: str) -> DataError:
    return DataError(f"{path} is damaged: {what}. Replace it with an intact copy.")


def read_bytes(path: str | Path) -> bytes:
    """The content of ``path``, decompressed when the name ends in ``.gz``."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise _damaged(path, f"cannot read it ({exc})") from exc


def parse_idx(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian numpy array of the stored shape and type."""
    path = Path(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise _damaged(path, "not an IDX file (it must start with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise _damaged(path, f"unknown IDX type code 0x{code:02X} (valid: 0x08 0x09 0x0B 0x0C 0x0D 0x0E)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _damaged(path, f"IDX header truncated ({len(data)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise _damaged(path, f"{len(data)} bytes where dimensions {dims} need {expected} (truncated?)")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw, or gzipped when the name ends in ``.gz``) into a numpy array."""
    return parse_idx(read_bytes(path), path)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzipped when the name ends in ``.gz`` (the inverse of read_idx)."""
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">")
    code = next((c for c, dt in IDX_TYPES.items() if dt == big), None)
    if code is None:
        raise DataError(f"IDX cannot store {array.dtype}; use uint8, int8, int16, int32, float32 or float64.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)


def read_idx_images(path: str | Path) -> torch.Tensor:
    """MNIST-style images: a uint8 IDX of shape ``(N, H, W)`` → uint8 tensor ``(N, 1, H, W)``."""
    array = read_idx(path)
    if array.ndim != 3 or array.dtype != np.uint8:
        raise _damaged(Path(path), f"expected uint8 images (N, H, W), found {array.dtype} {array.shape}")
    return torch.from_numpy(array.copy()).unsqueeze(1)


def read_idx_labels(path: str | Path, num_classes: int = 10) -> torch.Tensor:
    """MNIST-style labels: a uint8 IDX of shape ``(N,)`` with values < num_classes → int64 ``(N,)``."""
    array = read_idx(path)
    if array.ndim != 1 or array.dtype != np.uint8:
        raise _damaged(Path(path), f"expected uint8 labels (N,), found {array.dtype} {array.shape}")
    _check_labels(Path(path), array, num_classes)
    return torch.from_numpy(array.astype(np.int64))


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _damaged(path, f"labels outside 0..{num_classes - 1} (found {labels.min()}..{labels.max()})")


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allowed numpy constructors; loading would import and call it."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and builtins and refuses every other global."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise _RefusedGlobal(f"refusing to load global {module}.{name}")
        if module in ("numpy", "_codecs"):
            return getattr(importlib.import_module(module), name)
        try:  # numpy >= 2 moved numpy.core to numpy._core
            core = importlib.import_module(module.replace("numpy.core", "numpy._core"))
        except ImportError:
            core = importlib.import_module(module.replace("numpy._core", "numpy.core"))
        return getattr(core, name)


def unpickle(path: str | Path, what: str = "CIFAR python batch") -> Any:
    """Unpickle a CIFAR-style batch with ``encoding='bytes'``, allowing only numpy arrays and builtins.

    A pickle that names any other global (``os.system``, ``builtins.eval``, a class of some package...)
    is refused before that global is looked up, so nothing in it runs. ``what`` names the expected
    content in error messages.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise _damaged(path, f"cannot read it ({exc})") from exc
    except _RefusedGlobal as exc:
        raise DataError(
            f"{path} is not a plain {what}: {exc}, which unpickling would import and call (a pickle that "
            "runs code). Only numpy arrays and builtins are allowed, so the file was refused before anything "
            "in it ran. Replace it with the official file."
        ) from None
    except Exception as exc:  # truncated or corrupt pickles raise many types
        raise _damaged(path, f"not a readable {what} ({type(exc).__name__}: {exc})") from exc


def read_cifar_batch(
    path: str | Path, label_key: bytes = b"labels", num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR python batch → images uint8 ``(N, 3, 32, 32)`` and labels int64 ``(N,)``.

    ``label_key`` is ``b'labels'`` for CIFAR-10 and ``b'fine_labels'`` for CIFAR-100.
    Row ``i`` of ``b'data'`` holds 1024 red, then 1024 green, then 1024 blue values, each plane
    row-major, so ``reshape(N, 3, 32, 32)`` gives channels-first images.
    """
    path = Path(path)
    entry = unpickle(path)
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise _damaged(path, f"expected a dict with b'data' and {label_key!r}, found {keys}")
    data, labels = np.asarray(entry[b"data"]), np.asarray(entry[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _damaged(path, f"b'data' must be uint8 (N, 3072), found {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise _damaged(path, f"{data.shape[0]} images but labels of shape {labels.shape} ({labels.dtype})")
    _check_labels(path, labels, num_classes)
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def read_cifar(
    paths: list[Path], label_key: bytes = b"labels", num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the CIFAR batches ``paths`` (e.g. ``data_batch_1..5``) in order."""
    parts = [read_cifar_batch(p, label_key, num_classes) for p in paths]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def read_svhn_mat(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """An SVHN ``*_32x32.mat`` file → images uint8 ``(N, 3, 32, 32)`` and labels int64 ``(N,)``.

    ``X`` is stored ``(H, W, C, N)``, so images are ``X.transpose(3, 2, 0, 1)``; label 10 means digit 0.
    """
    path = Path(path)
    try:
        import scipy.io  # lazy: only SVHN needs scipy

        mat = scipy.io.loadmat(path)
    except OSError as exc:
        raise _damaged(path, f"cannot read it ({exc})") from exc
    except Exception as exc:  # scipy raises ValueError, MatReadError, TypeError... on damaged files
        raise _damaged(path, f"not a readable SVHN .mat file ({type(exc).__name__}: {exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise _damaged(path, f"expected variables 'X' and 'y', found {sorted(k for k in mat if k[0] != '_')}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise _damaged(path, f"X must be uint8 (32, 32, 3, N), found {x.dtype} {x.shape}")
    if y.shape != (x.shape[3],) or (y.size and (y.min() < 1 or y.max() > 10)):
        raise _damaged(path, f"y must hold {x.shape[3]} labels in 1..10, found shape {y.shape}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    labels = torch.from_numpy(y.astype(np.int64) % 10)
    return images, labels


IMAGENET32_CLASSES = 1000
_IMAGENET32 = "ImageNet32 pickle"


def _imagenet32_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One ImageNet32 file → its ``'data'`` (uint8 ``(N, 3072)``, as stored) and labels int64 ``(N,)``, 1..1000."""
    entry = unpickle(path, _IMAGENET32)
    if isinstance(entry, dict):  # Python 3 pickles have str keys, Python 2 ones bytes (with encoding='bytes')
        entry = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        keys = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
        raise _damaged(path, f"expected an ImageNet32 dict with 'data' and 'labels', found {keys}")
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _damaged(path, f"'data' must be a uint8 array (N, 3072), found {found}")
    labels = np.asarray(entry["labels"])
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise _damaged(path, f"{data.shape[0]} images but 'labels' of shape {labels.shape} ({labels.dtype})")
    if labels.size and (labels.min() < 1 or labels.max() > IMAGENET32_CLASSES):
        hint = " (0-based labels: not the official files, which store 1..1000)" if labels.min() == 0 else ""
        raise _damaged(path, f"labels outside 1..{IMAGENET32_CLASSES} (found {labels.min()}..{labels.max()}){hint}")
    return data, labels.astype(np.int64, copy=False)


def read_imagenet32_batch(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One ImageNet32 file → images uint8 ``(N, 3, 32, 32)`` and labels int64 ``(N,)`` in 0..999.

    Row ``i`` of ``'data'`` holds 1024 red, 1024 green, then 1024 blue values, each plane row-major, so
    ``reshape(N, 3, 32, 32)`` gives channels-first images; the stored label ``c`` (1..1000) becomes ``c - 1``.
    """
    data, labels = _imagenet32_arrays(Path(path))
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels - 1)


def read_imagenet32(paths: list[Path], size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the ImageNet32 files ``paths`` (e.g. ``train_data_batch_1..10``) in order.

    With ``size`` (the total number of images, e.g. 1,281,167 for the training set) the output is
    allocated once, ``(size, 3, 32, 32)`` uint8 (3.9 GB for the training set), and each file is unpickled,
    checked, copied into its slice and released before the next, so at most one file (~400 MB) is held
    besides the result. DataError if the files hold a different number of images. Without ``size`` the
    files are read first and then concatenated, which briefly needs twice the memory: fine for a few files.
    """
    if size is None:
        parts = [read_imagenet32_batch(p) for p in paths]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    images = np.empty((size, 3, 32, 32), dtype=np.uint8)
    labels = np.empty(size, dtype=np.int64)
    filled = 0
    for path in paths:
        data, stored = _imagenet32_arrays(Path(path))
        n = data.shape[0]
        if filled + n > size:
            raise DataError(f"{path} brings the ImageNet32 split to more than the {size} images expected: "
                            "these files are not the official release. Replace them with the official files.")
        images[filled : filled + n] = data.reshape(n, 3, 32, 32)
        np.subtract(stored, 1, out=labels[filled : filled + n])
        filled += n
        del data, stored
    if filled != size:
        raise DataError(f"the ImageNet32 files {', '.join(Path(p).name for p in paths)} in {Path(paths[0]).parent} "
                        f"hold {filled} images, expected {size}: they are not the official release (truncated or "
                        "a subset?). Replace them with the official files.")
    return torch.from_numpy(images), torch.from_numpy(labels)


def imagenet32_stats(paths: list[Path]) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of the pixels (scaled to [0, 1]) of the ImageNet32 files ``paths``.

    Streams the files one at a time, in chunks of 4096 images, accumulating per channel the count,
    ``Σp`` and ``Σp²`` of the raw values ``p`` in float64. Every partial sum is an integer below 2⁵³
    (``Σp²`` over the whole training set is at most 1.3·10⁹ · 255² ≈ 8.5·10¹³), so the sums are exact.
    Returns ``mean = Σp / (255 n)`` and the population std ``sqrt(Σp² / n - (Σp / n)²) / 255``, per
    channel R, G, B: the ``mean`` and ``std`` of a :class:`~analoglearn.data.specs.DatasetSpec`.
    """
    if not paths:
        raise DataError("imagenet32_stats needs at least one file")
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for path in paths:
        data, _ = _imagenet32_arrays(Path(path))
        planes = data.reshape(-1, 3, 1024)
        for start in range(0, planes.shape[0], 4096):
            chunk = planes[start : start + 4096].astype(np.float64)
            total += chunk.sum(axis=(0, 2))
            squares += np.square(chunk).sum(axis=(0, 2))
            count += chunk.shape[0] * 1024
        del data, planes
    if count == 0:
        raise DataError(f"the ImageNet32 files {', '.join(str(p) for p in paths)} hold no images")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())  # type: ignore[return-value]
