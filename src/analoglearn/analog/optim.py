"""On-chip SGD: the desired update of SGD (with momentum, weight decay, Nesterov) applied as device pulses.

    d_t = g_t + λ·w_t;   b_t = μ·b_{t−1} + (1 − τ)·d_t (b_1 = d_1);   d_t ← d_t + μ·b_t (Nesterov) or b_t;
    Δw* = −lr·d_t, programmed through the device model (:mod:`analoglearn.analog.devices`).

With :class:`~analoglearn.analog.devices.IdealDevice` this is ``torch.optim.SGD`` bit for bit (the
same operations in the same order).

**Weight scale.** ``weight_scale="absolute"``: the device's bounds and steps are in weight units.
``"per_tensor"``: each parameter is mapped onto its devices with its own scale s = max|w₀| (its
initial largest magnitude; for an all-zero tensor, the largest s of its parameter group), as a chip
maps each layer onto the full conductance range: the device holds u = w/s, its bounds and Δw_min are
in units of s, and the update is u ← device(u, Δw*/s), w = s·u. So ``states`` means the same
resolution for a conv layer of weights ~0.2 and a dense layer of weights ~0.006.

The momentum buffer is digital (kept by the periphery). The
device-to-device draws are made once, at construction, from ``generator``; they and the momentum
buffers are per-parameter optimiser state, and ``state_dict()`` adds the generator's state, so a
checkpoint is plain tensors (``torch.load(weights_only=True)``) and a resumed run replays the
pulses of an uninterrupted one exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..errors import ConfigError
from .devices import Device, IdealDevice

WEIGHT_SCALES = ("absolute", "per_tensor")
"""How weights map onto the devices (module doc)."""


class AnalogSGD(torch.optim.Optimizer):
    """SGD whose updates are conductance pulses through ``device`` (module doc: formulas).

    Args:
        params: parameters or parameter groups (a group may set its own ``lr``, ``momentum``,
            ``dampening``, ``weight_decay``, ``nesterov``); one device model serves them all.
        lr: learning rate ≥ 0.
        device: the device update model (default: ideal).
        momentum, dampening, weight_decay, nesterov: as in ``torch.optim.SGD``.
        generator: source of the device draws (device-to-device, cycle-to-cycle, stochastic
            rounding); required when the device model is stochastic.
        weight_scale: ``absolute`` (device units are weight units) or ``per_tensor`` (module doc).

    >>> opt = AnalogSGD(net.parameters(), lr=0.05, device=SoftBounds(dw_min=0.01, c2c=0.3),
    ...                 generator=torch.Generator().manual_seed(0))
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        device: Device | None = None,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        generator: torch.Generator | None = None,
        weight_scale: str = "absolute",
    ) -> None:
        if weight_scale not in WEIGHT_SCALES:
            raise ConfigError(f"optim.weight_scale must be one of {', '.join(WEIGHT_SCALES)}; got {weight_scale!r}.")
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and value >= 0 and value != float("inf")):
                raise ConfigError(f"optim.{name} must be a finite number ≥ 0; got {value!r}.")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError("optim.nesterov needs momentum > 0 and dampening = 0.")
        self.device_model = IdealDevice() if device is None else device
        if self.device_model.stochastic and generator is None:
            raise ConfigError(f"device {self.device_model.name!r} draws random numbers: pass generator=... "
                              "(a torch.Generator; its state is saved in the optimiser's state_dict).")
        self.generator = generator
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov}
        super().__init__(params, defaults)
        self.weight_scale = weight_scale
        for group in self.param_groups:
            scales = [p.detach().abs().amax() if p.numel() else torch.zeros(()) for p in group["params"]]
            fallback = max((float(x) for x in scales), default=0.0) or 1.0
            for p, scale in zip(group["params"], scales):
                if weight_scale == "per_tensor":
                    s = float(scale) if float(scale) > 0 else fallback
                    self.state[p]["scale"] = torch.tensor(s, dtype=p.dtype, device=p.device)
                    self.state[p].update(self.device_model.draw(p.detach() / s, generator))
                else:
                    self.state[p].update(self.device_model.draw(p.detach(), generator))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns the closure's loss (or None)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = self._direction(p, group)
                scale = self.state[p].get("scale")
                if scale is None:
                    self.device_model.update_(p, direction, group["lr"], self.state[p], self.generator)
                else:  # the device holds u = w/s (module doc)
                    p.div_(scale)
                    self.device_model.update_(p, direction / scale, group["lr"], self.state[p], self.generator)
                    p.mul_(scale)
        return loss

    def _direction(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """d_t of the module doc, in torch.optim.SGD's order of operations."""
        d = p.grad
        if group["weight_decay"] != 0:
            d = d.add(p, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = d.detach().clone()
                state["momentum_buffer"] = buf
            else:
                buf.mul_(momentum).add_(d, alpha=1 - group["dampening"])
            d = d.add(buf, alpha=momentum) if group["nesterov"] else buf
        return d

    def state_dict(self) -> dict[str, Any]:
        """torch's optimiser state (device draws and momentum buffers per parameter) plus ``generator``."""
        out = super().state_dict()
        if self.generator is not None:
            out["generator"] = self.generator.get_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s content, the generator's state included."""
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator", None)
        if generator_state is not None:
            if self.generator is None:
                raise ConfigError("this AnalogSGD state holds a generator state: construct the optimiser with "
                                  "generator=... to resume it.")
            self.generator.set_state(generator_state.to("cpu", torch.uint8))
        super().load_state_dict(state_dict)


__all__ = ["AnalogSGD"]
