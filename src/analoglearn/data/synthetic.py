"""The ``Synthetic`` dataset: deterministic, generated, learnable, no files.

Each of the 10 classes has a smooth random prototype ``P_c`` in ``[0, 1]^(28×28)`` (a 7×7 Gaussian
field upsampled bilinearly and squashed by a sigmoid). An example of class ``c`` is

    x = clamp(a · shift_(dy,dx)(P_c) + ε, 0, 1),   a ~ U(0.7, 1.3),  (dy, dx) ~ U{-3..3}²,  ε ~ N(0, 0.45²)

quantised to uint8 (``round(255 · x)``). Classes are balanced (``label = i mod 10``, then shuffled).
Everything comes from fixed seeds on the CPU generator, so every machine gets the same bytes.
A linear classifier reaches high but not perfect accuracy within an epoch or two; it is meant for
tests and smoke runs, not for claims.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

PROTOTYPE_SEED = 1_000_003
SPLIT_SEEDS = {"train": 1_000_033, "test": 1_000_037}
SIZES = {"train": 2_000, "test": 500}
NUM_CLASSES = 10
SIDE = 28
MAX_SHIFT = 3
NOISE_STD = 0.45


def prototypes() -> torch.Tensor:
    """The class prototypes, float32 ``(10, 1, 28, 28)`` in ``[0, 1]``."""
    gen = torch.Generator().manual_seed(PROTOTYPE_SEED)
    coarse = torch.randn(NUM_CLASSES, 1, 7, 7, generator=gen)
    fine = F.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    return torch.sigmoid(2.0 * fine)


@functools.lru_cache(maxsize=2)
def _generate(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(SPLIT_SEEDS[split])
    n = SIZES[split]
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=gen)]
    shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (n, 2), generator=gen)
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    noise = NOISE_STD * torch.randn(n, 1, SIDE, SIDE, generator=gen)
    # Shift by cropping the zero-padded prototype at offset (MAX_SHIFT - dy, MAX_SHIFT - dx).
    padded = F.pad(prototypes(), (MAX_SHIFT,) * 4)[labels, 0]  # (n, 32, 32)
    rows = (MAX_SHIFT - shifts[:, 0, None]) + torch.arange(SIDE)  # (n, 28)
    cols = (MAX_SHIFT - shifts[:, 1, None]) + torch.arange(SIDE)
    shifted = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].unsqueeze(1)
    x = (contrast * shifted + noise).clamp(0.0, 1.0)
    return (x * 255.0).round().to(torch.uint8), labels.to(torch.int64)


def generate(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``(N, 1, 28, 28)`` and labels int64 ``(N,)`` of ``split`` ('train': 2000, 'test': 500).

    Returns fresh copies: callers may modify them.
    """
    images, labels = _generate(split)
    return images.clone(), labels.clone()
