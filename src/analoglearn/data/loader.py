"""A tensor-resident loader: the whole split on the device as uint8, normalised and augmented per batch.

The randomness is a pure function of ``(seed, epoch, batch)``, so a run stopped in the middle of an
epoch resumes exactly: ``loader.epoch(e, start_batch=k)`` yields the same batches as ``loader.epoch(e)``
from batch ``k`` on.

- the order of epoch ``e`` is ``randperm(N)`` drawn from a CPU generator seeded by ``(seed, e)``;
- the augmentation of batch ``b`` of epoch ``e`` comes from a CPU generator seeded by ``(seed, e, b)``.

The draws are made on the CPU and moved to the device, so CPU and GPU runs see the same batches.
Augmentation follows torchvision's ``RandomCrop(size, padding=p, padding_mode=...)`` followed by
``RandomHorizontalFlip(0.5)``, vectorised over the batch: pad the batch once, then gather every crop
(flipped or not) with one index computation. Normalisation is ``x = (pixel / 255 - mean) / std``
per channel, after augmentation, so zero padding means black pixels as in torchvision.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..errors import DataError
from .dataset import ImageDataset


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from ``parts``: 8 bytes of SHA-256 of ``'analoglearn.data:' + ':'.join(parts)``."""
    text = "analoglearn.data:" + ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def pad_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad uint8 images ``(N, C, H, W)`` centrally to ``(N, C, size, size)`` (torchvision's ``Pad``).

    The extra ``size - H`` rows go ``(size - H) // 2`` on top and the rest at the bottom; columns alike.
    """
    _, _, height, width = images.shape
    if size < max(height, width):
        raise DataError(f"pad_to={size} is smaller than the images ({height}x{width}); use None or more.")
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(images, (left, size - width - left, top, size - height - top), value=0)


def augment_batch(
    x: torch.Tensor, padding: int, padding_mode: str, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop (same size, ``padding`` on each side) and optional horizontal flip (p = 1/2) of a batch.

    ``x`` is float ``(B, C, H, W)`` with values in [0, 1]. Offsets ``(i, j)`` are uniform in
    ``{0..2·padding}²``; output pixel ``(h, w)`` of example ``n`` is padded pixel ``(i + h, j + w)``, or
    ``(i + h, j + W - 1 - w)`` when ``n`` is flipped. Draws come from ``generator`` (CPU) in a fixed
    order: offsets ``(B, 2)``, then flip coins ``(B,)``.
    """
    batch, channels, height, width = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator).to(x.device)
    flipped = (torch.rand(batch, generator=generator) < 0.5).to(x.device) & flip
    if padding:
        mode = "replicate" if padding_mode == "edge" else "constant"
        x = F.pad(x, (padding,) * 4, mode=mode, value=None if mode == "replicate" else 0.0)
    ar_h = torch.arange(height, device=x.device)
    ar_w = torch.arange(width, device=x.device)
    rows = offsets[:, :1] + ar_h  # (B, H)
    cols = offsets[:, 1:] + torch.where(flipped[:, None], ar_w.flip(0), ar_w)  # (B, W)
    n = torch.arange(batch, device=x.device)[:, None, None, None]
    c = torch.arange(channels, device=x.device)[None, :, None, None]
    return x[n, c, rows[:, None, :, None], cols[:, None, None, :]]


class Loader:
    """Batches of a split resident on ``device``, normalised and (optionally) augmented there.

    Args:
        dataset: the split to serve.
        batch_size: examples per batch; the last batch keeps the remainder (it may be smaller).
        shuffle: a fresh permutation per epoch (seeded by ``(seed, epoch)``) rather than dataset order.
        augment: random crop with the spec's padding and mode, plus a horizontal flip if the spec says so.
        seed: the seed of all the loader's randomness (derive it from the run seed).
        device: where the uint8 images live and batches are built.
        pad_to: zero-pad the raw images centrally to ``pad_to × pad_to`` first (28→32 for the Hopfield
            networks); padded pixels become ``-mean/std`` after normalisation.

    Yields ``(x, y)``: ``x`` float32 ``(B, C, H', W')`` normalised, ``y`` int64 ``(B,)``, both on ``device``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        seed: int,
        device: str | torch.device = "cpu",
        pad_to: int | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.spec = dataset.spec
        self.split = dataset.split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.device = torch.device(device)
        self.pad_to = pad_to
        images = pad_images(dataset.images, pad_to) if pad_to is not None else dataset.images
        self.images = images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        channels = self.spec.shape[0]
        self.mean = torch.tensor(self.spec.mean, device=self.device).view(1, channels, 1, 1)
        self.std = torch.tensor(self.spec.std, device=self.device).view(1, channels, 1, 1)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one example as served (after ``pad_to``)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_examples(self) -> int:
        """Number of examples per epoch."""
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        return math.ceil(self.num_examples / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The example order of ``epoch``: int64 ``(N,)`` on the CPU (``arange`` when not shuffling)."""
        if not self.shuffle:
            return torch.arange(self.num_examples)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        return torch.randperm(self.num_examples, generator=generator)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel for ``x`` float ``(B, C, H, W)`` in [0, 1]."""
        return (x - self.mean) / self.std

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start_batch, start_batch + 1, ..`` of ``epoch``: exactly those of ``epoch(epoch)``."""
        if not 0 <= start_batch <= len(self):
            raise DataError(f"start_batch must be in 0..{len(self)} (batches per epoch), got {start_batch}.")
        return self._batches(epoch, start_batch)

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch).to(self.device)
        spec = self.spec
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[index].float().div_(255.0)
            if self.augment and (spec.crop_padding or spec.hflip):
                generator = torch.Generator().manual_seed(derive_seed(self.seed, "augment", epoch, b))
                x = augment_batch(x, spec.crop_padding, spec.padding_mode, spec.hflip, generator)
            yield self.normalise(x), self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
