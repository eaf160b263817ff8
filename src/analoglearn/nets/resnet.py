"""ResNet-18 with the CIFAR stem, and wide ResNets (WRN-d-k).

ResNet-18 (He et al., CVPR 2016) as trained on CIFAR by Paper B (Jacobson et al., arXiv 2602.07320,
§B.3): a 3×3 stride-1 conv stem with no max-pool, four stages of two basic blocks
(64-128-256-512 channels, stride 2 from the second stage), global average pool, linear. 11.17 M
parameters for 10 classes.

WRN-d-k (Zagoruyko & Komodakis, BMVC 2016): pre-activation basic blocks, n = (d − 4)/6 per stage,
widths 16-16k-32k-64k; WRN-16-8 has 11.0 M parameters for 10 classes. Images ``(B, C, H, W)`` →
scores ``(B, K)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from ..registry import MODELS
from .init import init_weights


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias."""
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            projection = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            self.shortcut = nn.Sequential(projection, nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with the CIFAR stem: conv3×3 → BN → ReLU, four stages, average pool, linear."""

    def __init__(self, blocks: list[int], in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages, c_in = [], widths[0]
        for i, (n, c) in enumerate(zip(blocks, widths)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            stage = []
            for s in strides:
                stage.append(BasicBlock(c_in, c, s))
                c_in = c
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, K)`` of images ``(B, C, H, W)``."""
        return self.fc(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1))


@dataclass
class ResNetOptions:
    """Options of ``resnet18``."""

    width: float = 1.0
    """Multiplier of the channel counts (64-128-256-512 at width 1)."""

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ConfigError(f"model.width must be > 0, got {self.width}")


@MODELS.register("resnet18", aliases=("resnet-18",), options=ResNetOptions)
def resnet18(options: ResNetOptions, *, in_shape: tuple[int, int, int], num_classes: int,
             generator: torch.Generator) -> nn.Module:
    """ResNet-18 with the CIFAR stem (3×3 conv, no max-pool)."""
    options = options or ResNetOptions()
    return init_weights(ResNet([2, 2, 2, 2], in_shape[0], num_classes, options.width), generator)


class WideBlock(nn.Module):
    """Pre-activation wide block: conv(relu(bn(dropout(conv(relu(bn(x))))))) + shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), conv3x3(c_out, c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.dropout(self.conv1(pre)))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-d-k: conv3×3(16), three stages of (d − 4)/6 wide blocks, BN-ReLU, average pool, linear."""

    def __init__(
        self, depth: int, widen: int, in_channels: int, num_classes: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.stem = conv3x3(in_channels, 16)
        blocks, c_in = [], 16
        for i, c in enumerate(widths):
            for j in range(n):
                blocks.append(WideBlock(c_in, c, 2 if (i > 0 and j == 0) else 1, dropout))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, K)`` of images ``(B, C, H, W)``."""
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@dataclass
class WRNOptions:
    """Options of ``wrn`` (defaults: WRN-16-8, the architecture of Paper B)."""

    depth: int = 16
    """Total depth d; (d − 4) must be divisible by 6."""
    widen: int = 8
    """Widening factor k."""
    dropout: float = 0.0
    """Dropout probability between the two convolutions of each block."""

    def __post_init__(self) -> None:
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ConfigError(f"model.depth must be 6n + 4, n ≥ 1 (10, 16, 22, 28, ...), got {self.depth}")
        if self.widen < 1:
            raise ConfigError(f"model.widen must be ≥ 1, got {self.widen}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


@MODELS.register("wrn", aliases=("wrn16_8", "wrn-16-8", "wide_resnet"), options=WRNOptions)
def wrn(options: WRNOptions, *, in_shape: tuple[int, int, int], num_classes: int,
        generator: torch.Generator) -> nn.Module:
    """Wide ResNet WRN-d-k (default WRN-16-8), pre-activation blocks."""
    options = options or WRNOptions()
    net = WideResNet(options.depth, options.widen, in_shape[0], num_classes, options.dropout)
    return init_weights(net, generator)
