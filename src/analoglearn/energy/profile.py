"""Relaxation profiles: residual and energy against iterations, for both schedules.

``relaxation_profile(net, x, iterations)`` relaxes the free network from zero one iteration at a
time and records, after each iteration n, the residual r_n = max|s_n − s_{n−1}| and the batch-mean
energy Ē_n = mean_b E(s_n)_b (PAPERS.md A.1–A.2). Asynchronous relaxation (block-coordinate descent)
gives a non-increasing Ē_n and a fast-falling r_n; synchronous updating may oscillate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .minimize import RELAXATION_SCHEDULES, Minimizer
from .network import HopfieldNetwork


@torch.no_grad()
def relaxation_profile(
    net: HopfieldNetwork, x: Tensor, iterations: int, *, precision: str = "fp32"
) -> dict[str, dict[str, list[float]]]:
    """``{schedule: {"residual": [r_1..r_n], "energy": [Ē_1..Ē_n]}}`` for every schedule.

    Args:
        net: the network (weights as they are).
        x: clamped input batch ``(B, C, H, W)``.
        iterations: n ≥ 1 iterations from the zero state.
        precision: relaxation precision (fp32, bf16, fp16).
    """
    profile = {}
    for schedule in RELAXATION_SCHEDULES:
        minimizer = Minimizer(schedule, precision)
        state = net.zero_state(x.shape[0], device=x.device)
        residual, energy = [], []
        for _ in range(iterations):
            relaxation = minimizer.relax(net, x, state, 1, trace=True)
            state = relaxation.state
            residual.append(float(relaxation.residual))
            energy.append(float(net.energy(x, state).mean()))
        profile[schedule] = {"residual": residual, "energy": energy}
    return profile
