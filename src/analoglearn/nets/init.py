"""Weight initialisation of the deep feed-forward nets, drawn from an explicit generator."""

from __future__ import annotations

import torch
from torch import nn


def init_weights(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialise ``module`` in place from ``generator`` and return it.

    Convolutions: Kaiming-normal, fan-out, ReLU gain (std √(2/(C_out·k²)), He et al. 2015, as
    torchvision's ResNets); linear layers: U(±1/√fan_in) for weights and biases (PyTorch's default);
    normalisation layers: weight 1, bias 0; conv biases 0.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                bound = m.weight.shape[1] ** -0.5
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
    return module
