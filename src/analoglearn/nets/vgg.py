"""VGG-11 and VGG-16 with BatchNorm, CIFAR-style (Simonyan & Zisserman 2015; Ioffe & Szegedy 2015).

Each stage is [3×3 conv (no bias) → BatchNorm → ReLU]×n then 2×2 max-pooling (ceil mode, so 28×28
inputs reach 1×1 too); a global average pool and one linear layer give the class scores ``(B, K)``
from images ``(B, C, H, W)``. At width 1 the channels are 64-128-256-512-512 (VGG-16: 14.7 M
parameters for 10 classes). Used as a baseline architecture for noise-robust training
(Paper B, Jacobson et al., arXiv 2602.07320).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS
from .init import init_weights

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


@dataclass
class VGGOptions:
    """Options of ``vgg11`` and ``vgg16``."""

    width: float = 1.0
    """Multiplier of every layer's channel count."""

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ConfigError(f"model.width must be > 0, got {self.width}")


class VGG(nn.Module):
    """VGG with BatchNorm: ``features`` (conv stages), global average pool, ``classifier`` (linear)."""

    def __init__(self, plan: list[int | str], in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            out = max(1, round(int(item) * width))
            conv = nn.Conv2d(channels, out, 3, padding=1, bias=False)
            layers += [conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, K)`` of images ``(B, C, H, W)``."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _vgg(name: str, options: VGGOptions | None, in_shape: tuple[int, int, int], num_classes: int,
         generator: torch.Generator) -> nn.Module:
    options = options or VGGOptions()
    return init_weights(VGG(CONFIGS[name], in_shape[0], num_classes, options.width), generator)


@MODELS.register("vgg11", aliases=("vgg11_bn", "vgg-11"), options=VGGOptions)
def vgg11(options: VGGOptions, *, in_shape: tuple[int, int, int], num_classes: int,
          generator: torch.Generator) -> nn.Module:
    """VGG-11 with BatchNorm (CIFAR-style: global average pool, one linear layer)."""
    return _vgg("vgg11", options, in_shape, num_classes, generator)


@MODELS.register("vgg16", aliases=("vgg16_bn", "vgg-16"), options=VGGOptions)
def vgg16(options: VGGOptions, *, in_shape: tuple[int, int, int], num_classes: int,
          generator: torch.Generator) -> nn.Module:
    """VGG-16 with BatchNorm (CIFAR-style: global average pool, one linear layer)."""
    return _vgg("vgg16", options, in_shape, num_classes, generator)
