"""Helpers of the energy tests: a tiny float64 Hopfield network and a random batch."""

from __future__ import annotations

import torch

from analoglearn.energy import presets
from analoglearn.energy.network import HopfieldNetwork

IN_SHAPE = (1, 8, 8)
CLASSES = 3


def make_net(seed: int = 0, dtype: torch.dtype = torch.float64, gains=None) -> HopfieldNetwork:
    """The ``tiny`` preset (conv 4, conv 8, dense 3) on 1×8×8 inputs."""
    options = presets.HopfieldOptions(gains=gains)
    net = presets.tiny(
        options, in_shape=IN_SHAPE, num_classes=CLASSES, generator=torch.Generator().manual_seed(seed)
    )
    return net.to(dtype)


def make_batch(batch: int = 4, seed: int = 1, dtype: torch.dtype = torch.float64):
    """Random inputs ``(B, 1, 8, 8)`` and labels ``(B,)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *IN_SHAPE), generator=g, dtype=dtype), torch.randint(
        0, CLASSES, (batch,), generator=g
    )
