"""Small feed-forward baselines: a multilayer perceptron and LeNet-5.

Both take normalised images ``(B, C, H, W)`` and return class scores ``(B, K)``. Weights are
initialised by PyTorch's default rule, drawn from the explicit ``generator`` so that the run seed
fixes them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS


def init_from(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every parameter of ``module`` with PyTorch's default scheme, from ``generator``.

    Weights and biases ~ U(±1/√fan_in): the distribution of ``reset_parameters`` of
    ``nn.Linear``/``nn.Conv2d`` (Kaiming-uniform with a = √5 has bound √(1/3)·√(3/fan_in)).
    """
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d)):
            fan_in = sub.weight[0].numel()
            bound = (1.0 / fan_in) ** 0.5
            with torch.no_grad():
                sub.weight.uniform_(-bound, bound, generator=generator)
                if sub.bias is not None:
                    sub.bias.uniform_(-bound, bound, generator=generator)
    return module


@dataclass
class MLPOptions:
    """Options of ``mlp``."""

    hidden: list[int] = field(default_factory=lambda: [512, 256])
    """Widths of the hidden layers (ReLU after each)."""

    def __post_init__(self) -> None:
        if not self.hidden or any(int(h) <= 0 for h in self.hidden):
            raise ConfigError(f"model.hidden must be a non-empty list of positive widths, got {self.hidden}")


@MODELS.register("mlp", options=MLPOptions)
def mlp(
    options: MLPOptions, *, in_shape: tuple[int, int, int], num_classes: int, generator: torch.Generator
) -> nn.Module:
    """Multilayer perceptron: flatten → [Linear → ReLU]×L → Linear."""
    widths = [int(in_shape[0] * in_shape[1] * in_shape[2]), *options.hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return init_from(nn.Sequential(*layers), generator)


@dataclass
class LeNetOptions:
    """Options of ``lenet``."""

    width: float = 1.0
    """Multiplier of the channel and unit counts (6-16-120-84 at width 1)."""

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ConfigError(f"model.width must be > 0, got {self.width}")


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling: conv5(6) → pool → conv5(16) → pool → 120 → 84 → K.

    Inputs of any size ≥ 12×12; 28×28 inputs are padded by 2 in the first convolution so the
    feature maps follow the classic 32×32 layout (6×28×28 → 16×10×10 → 16×5×5).
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, f1, f2 = (max(1, round(n * width)) for n in (6, 16, 120, 84))
        channels, height, wide = in_shape
        pad = 2 if height < 32 else 0
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, channels, height, wide)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, f1), nn.ReLU(), nn.Linear(f1, f2), nn.ReLU(), nn.Linear(f2, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, K)`` of images ``(B, C, H, W)``."""
        return self.classifier(self.features(x))


@MODELS.register("lenet", aliases=("lenet5",), options=LeNetOptions)
def lenet(
    options: LeNetOptions, *, in_shape: tuple[int, int, int], num_classes: int, generator: torch.Generator
) -> nn.Module:
    """LeNet-5 (ReLU, max-pooling)."""
    if min(in_shape[1:]) < 12:
        raise ConfigError(f"lenet needs inputs of at least 12×12 pixels, got {in_shape[1]}×{in_shape[2]}")
    return init_from(LeNet5(in_shape, num_classes, options.width), generator)
