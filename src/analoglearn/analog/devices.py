"""Device update models: how a desired weight change becomes conductance pulses on the chip.

A weight w (the ``nn.Parameter``, in weight units; the device's conductance is an affine image of
it) is changed by programming pulses. The chip's periphery turns a desired update Δw* = −lr·d
(d: the gradient, after momentum) into a whole number of pulses counted in *nominal* steps,

    p = round(Δw*/Δw_min)                      (``rounding="deterministic"``, half to even)
    p = ⌊Δw*/Δw_min + u⌋, u ~ U[0, 1)           (``"stochastic"``: E[p] = Δw*/Δw_min),
    p ← clip(p, −P_max, P_max)                 (P_max = ``max_pulses``, aihwkit's pulse-train length 31),

and each pulse moves the device by its own step. The models follow IBM aihwkit's pulsed devices
(Gokmen & Vlasov 2016; aihwkit ``PulsedDevice``, ``ConstantStepDevice``, ``SoftBoundsDevice``,
https://aihwkit.readthedocs.io), written here from their published formulas:

- *device-to-device variation*, drawn once per device from the optimiser's generator:
  s_ij = Δw_min·max(1 + σ_d2d·ξ, 0), a_ij = clip(a + σ_a·ξ', −1, 1), and bounds
  b⁺_ij = w_max·max(1 + σ_b·ξ'', 0.01), b⁻_ij = w_min·max(1 + σ_b·ξ''', 0.01);
- *up/down asymmetry* a ∈ (−1, 1): Δw⁺_ij = s_ij·(1 + a_ij) up, Δw⁻_ij = s_ij·(1 − a_ij) down
  (aihwkit's ``up_down`` β with d·β in the step);
- *cycle-to-cycle noise* σ_c2c: each pulse's step is multiplied by (1 + σ_c2c·ξ_k), ξ_k fresh;
- :class:`ConstantStep`: w ← clip(w ± Δw^±·(1 + σ_c2c ξ_k), b⁻, b⁺) per pulse. A train of |p|
  pulses is applied at once as w ± Δw^±·(|p| + σ_c2c·√|p|·ξ), then clipped: the same distribution
  (a sum of |p| Gaussians), neglecting clipping in the middle of one train;
- :class:`SoftBounds`: the step shrinks linearly towards the bound it moves to,
  Δw_up = Δw⁺·(1 − w/b⁺),  Δw_down = Δw⁻·(1 − w/b⁻)  (b⁻ < 0 < b⁺),
  so p up pulses give b⁺ − w_p = (b⁺ − w_0)·(1 − Δw⁺/b⁺)^p exactly (closed form, used when
  σ_c2c = 0; pulse by pulse otherwise). Under equal numbers of ± pulses the weight settles at the
  *symmetry point* w* = (Δw⁺ − Δw⁻)/(Δw⁺/b⁺ − Δw⁻/b⁻) (= a·b for symmetric bounds ±b).

The number of states between the bounds is (w_max − w_min)/Δw_min. :class:`IdealDevice` applies the
update exactly (infinitely many states): with it :class:`~analoglearn.analog.optim.AnalogSGD` is
``torch.optim.SGD``. Device parameters live in the optimiser's state (plain tensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError
from ..noise.base import rand_like, randn_like
from ..schema import build_dataclass

ROUNDINGS = ("deterministic", "stochastic")
"""How a desired update becomes a whole number of pulses."""


class Device:
    """Base of the device update models: per-device draws and the in-place update."""

    name: ClassVar[str] = ""

    @property
    def stochastic(self) -> bool:
        """Whether the model draws random numbers (then the optimiser needs a generator)."""
        return False

    def draw(self, w: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The device-to-device parameters of the devices holding ``w`` (tensors shaped like ``w``, or 0-dim)."""
        return {}

    def update_(self, w: torch.Tensor, d: torch.Tensor, lr: float, state: dict[str, torch.Tensor],
                generator: torch.Generator | None) -> None:
        """Apply the desired update Δw* = −lr·d to ``w`` in place (under ``torch.no_grad``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class IdealDevice(Device):
    """Exact updates, w ← clip(w − lr·d, w_min, w_max): infinitely many states, no noise, no asymmetry."""

    name: ClassVar[str] = "ideal"
    w_min: float = -math.inf
    """Lower bound (weight units); −inf: none."""
    w_max: float = math.inf
    """Upper bound (weight units); +inf: none."""

    def __post_init__(self) -> None:
        if not (isinstance(self.w_min, (int, float)) and isinstance(self.w_max, (int, float))
                and self.w_min < self.w_max):
            raise ConfigError(f"device.w_min must be < device.w_max; got w_min={self.w_min!r}, w_max={self.w_max!r}.")

    def update_(self, w: torch.Tensor, d: torch.Tensor, lr: float, state: dict[str, torch.Tensor],
                generator: torch.Generator | None) -> None:
        w.add_(d, alpha=-lr)  # the very operation of torch.optim.SGD, so the two are bit-equal
        if math.isfinite(self.w_min) or math.isfinite(self.w_max):
            w.clamp_(self.w_min, self.w_max)


@dataclass(frozen=True)
class PulsedDevice(Device):
    """Base of the pulsed devices (module doc: formulas). Use :class:`ConstantStep` or :class:`SoftBounds`."""

    soft: ClassVar[bool] = False

    dw_min: float = 0.001
    """Nominal step Δw_min of one pulse, weight units, > 0 (states = (w_max − w_min)/Δw_min)."""
    w_min: float = -1.0
    """Lower bound b⁻ (weight units), < w_max (< 0 for soft bounds)."""
    w_max: float = 1.0
    """Upper bound b⁺ (weight units), > w_min (> 0 for soft bounds)."""
    asymmetry: float = 0.0
    """Up/down asymmetry a in (−1, 1): steps Δw_min·(1 + a) up and Δw_min·(1 − a) down."""
    c2c: float = 0.0
    """Cycle-to-cycle noise σ_c2c ≥ 0: each pulse's step × (1 + σ_c2c·ξ), relative to the step."""
    dw_min_d2d: float = 0.0
    """Device-to-device spread σ_d2d ≥ 0 of the step, relative to Δw_min."""
    asymmetry_d2d: float = 0.0
    """Device-to-device spread σ_a ≥ 0 of the asymmetry (absolute)."""
    bounds_d2d: float = 0.0
    """Device-to-device spread σ_b ≥ 0 of each bound, relative to it."""
    rounding: str = "deterministic"
    """Pulse count from the desired update: deterministic (nearest) or stochastic (unbiased)."""
    max_pulses: int = 31
    """Most pulses P_max ≥ 1 of one update per device (larger updates are clipped)."""

    def __post_init__(self) -> None:
        for name in ("dw_min", "w_min", "w_max", "asymmetry", "c2c", "dw_min_d2d", "asymmetry_d2d", "bounds_d2d"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"device.{name} must be a finite number; got {value!r}.")
        if not self.dw_min > 0:
            raise ConfigError(f"device.dw_min must be > 0 (weight units per pulse); got {self.dw_min!r}.")
        if not self.w_min < self.w_max:
            raise ConfigError(f"device bounds reversed: device.w_min ({self.w_min!r}) must be < device.w_max "
                              f"({self.w_max!r}).")
        if self.soft and not self.w_min < 0 < self.w_max:
            raise ConfigError(f"soft-bounds devices need device.w_min < 0 < device.w_max; got [{self.w_min}, "
                              f"{self.w_max}].")
        if not -1 < self.asymmetry < 1:
            raise ConfigError(f"device.asymmetry must be in (−1, 1); got {self.asymmetry!r}.")
        for name in ("c2c", "dw_min_d2d", "asymmetry_d2d", "bounds_d2d"):
            if getattr(self, name) < 0:
                raise ConfigError(f"device.{name} must be ≥ 0; got {getattr(self, name)!r}.")
        if self.rounding not in ROUNDINGS:
            raise ConfigError(f"device.rounding must be one of {', '.join(ROUNDINGS)}; got {self.rounding!r}.")
        if isinstance(self.max_pulses, bool) or not isinstance(self.max_pulses, int) or self.max_pulses < 1:
            raise ConfigError(f"device.max_pulses must be an integer ≥ 1; got {self.max_pulses!r}.")

    @classmethod
    def with_states(cls, states: float, **fields: float | str | int) -> PulsedDevice:
        """A device whose range [w_min, w_max] (default [−1, 1]) holds ``states`` nominal steps."""
        w_min, w_max = float(fields.get("w_min", -1.0)), float(fields.get("w_max", 1.0))
        if not (isinstance(states, (int, float)) and math.isfinite(states) and states > 0):
            raise ConfigError(f"device states must be a finite number > 0; got {states!r}.")
        return cls(dw_min=(w_max - w_min) / states, **fields)

    @property
    def states(self) -> float:
        """Number of nominal steps between the bounds, (w_max − w_min)/Δw_min."""
        return (self.w_max - self.w_min) / self.dw_min

    @property
    def stochastic(self) -> bool:
        return (self.c2c > 0 or self.dw_min_d2d > 0 or self.asymmetry_d2d > 0 or self.bounds_d2d > 0
                or self.rounding == "stochastic")

    def draw(self, w: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """``dw_up``, ``dw_down``, ``w_lo``, ``w_hi``: per device (shaped like ``w``) where they vary, else 0-dim."""

        def const(v: float) -> torch.Tensor:
            return torch.tensor(v, dtype=w.dtype, device=w.device)

        scale = const(self.dw_min)
        if self.dw_min_d2d > 0:
            scale = self.dw_min * (1 + self.dw_min_d2d * randn_like(w, generator)).clamp_min(0)
        a = const(self.asymmetry)
        if self.asymmetry_d2d > 0:
            a = (self.asymmetry + self.asymmetry_d2d * randn_like(w, generator)).clamp(-1, 1)
        lo, hi = const(self.w_min), const(self.w_max)
        if self.bounds_d2d > 0:
            hi = self.w_max * (1 + self.bounds_d2d * randn_like(w, generator)).clamp_min(0.01)
            lo = self.w_min * (1 + self.bounds_d2d * randn_like(w, generator)).clamp_min(0.01)
        return {"dw_up": scale * (1 + a), "dw_down": scale * (1 - a), "w_lo": lo, "w_hi": hi}

    def pulses(self, dw: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Signed pulse counts p of desired updates ``dw`` (module doc), as floats."""
        n = dw / self.dw_min
        n = n.add_(rand_like(n, generator)).floor_() if self.rounding == "stochastic" else n.round_()
        return n.clamp_(-self.max_pulses, self.max_pulses)

    def update_(self, w: torch.Tensor, d: torch.Tensor, lr: float, state: dict[str, torch.Tensor],
                generator: torch.Generator | None) -> None:
        p = self.pulses(d * (-lr), generator)
        new = self.apply_pulses(w, p, state, generator)
        w.copy_(torch.where(p != 0, new, w))

    def apply_pulses(self, w: torch.Tensor, p: torch.Tensor, state: dict[str, torch.Tensor],
                     generator: torch.Generator | None) -> torch.Tensor:
        """The weights after |p| pulses in the direction of sign(p). Implemented by subclasses."""
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantStep(PulsedDevice):
    """Constant step, hard bounds: w ← clip(w ± Δw^±(1 + σ_c2c ξ), b⁻, b⁺) per pulse (aihwkit ConstantStepDevice)."""

    name: ClassVar[str] = "constant_step"

    def apply_pulses(self, w: torch.Tensor, p: torch.Tensor, state: dict[str, torch.Tensor],
                     generator: torch.Generator | None) -> torch.Tensor:
        count = p.abs()
        step = torch.where(p > 0, state["dw_up"], -state["dw_down"])
        if self.c2c > 0:
            count = count + self.c2c * count.sqrt() * randn_like(w, generator)
        return torch.minimum(torch.maximum(w + step * count, state["w_lo"]), state["w_hi"])


@dataclass(frozen=True)
class SoftBounds(PulsedDevice):
    """Soft bounds: Δw_up = Δw⁺(1 − w/b⁺), Δw_down = Δw⁻(1 − w/b⁻) per pulse (aihwkit SoftBoundsDevice)."""

    name: ClassVar[str] = "soft_bounds"
    soft: ClassVar[bool] = True

    def apply_pulses(self, w: torch.Tensor, p: torch.Tensor, state: dict[str, torch.Tensor],
                     generator: torch.Generator | None) -> torch.Tensor:
        lo, hi, up = state["w_lo"], state["w_hi"], p > 0
        if self.c2c == 0:  # geometric approach to the bound: gap ← gap·(1 − Δw/|b|) per pulse
            bound = torch.where(up, hi, lo)
            ratio = (1 - torch.where(up, state["dw_up"] / hi, -state["dw_down"] / lo)).clamp(0, 1)
            return bound - (bound - w) * ratio.pow(p.abs())
        count, new = p.abs(), w.clone()
        for k in range(int(count.max().item())):
            step = torch.where(up, state["dw_up"] * (1 - new / hi), -state["dw_down"] * (1 - new / lo))
            step = step * (1 + self.c2c * randn_like(w, generator))
            new = torch.where(count > k, torch.minimum(torch.maximum(new + step, lo), hi), new)
        return new


__all__ = ["ROUNDINGS", "ConstantStep", "Device", "IdealDevice", "PulsedDevice", "SoftBounds"]


DEVICES: dict[str, type[Device]] = {cls.name: cls for cls in (IdealDevice, ConstantStep, SoftBounds)}
"""The device update models by config name."""


def device_from_config(raw: dict[str, object], where: str = "optim.device") -> Device:
    """A device model from ``{name: ideal | constant_step | soft_bounds, **fields}``; ``states: N`` sets
    Δw_min = (w_max − w_min)/N. Fields are checked as every config section is (key path in the error)."""
    values = dict(raw)
    name = values.pop("name", "soft_bounds")
    if name not in DEVICES:
        raise ConfigError(f"{where}.name must be one of {', '.join(DEVICES)}; got {name!r}.")
    states = values.pop("states", None)
    if states is not None:
        if name == "ideal":
            raise ConfigError(f"{where}.states: an ideal device has infinitely many states; give no 'states'.")
        if "dw_min" in values:
            raise ConfigError(f"{where}: give 'states' or 'dw_min', not both (states = (w_max − w_min)/dw_min).")
        if isinstance(states, bool) or not isinstance(states, (int, float)) or not math.isfinite(states) \
                or states <= 0:
            raise ConfigError(f"{where}.states must be a finite number > 0; got {states!r}.")
        span = float(values.get("w_max", 1.0)) - float(values.get("w_min", -1.0))  # type: ignore[arg-type]
        values["dw_min"] = span / float(states) if span > 0 else 1.0
    return build_dataclass(DEVICES[str(name)], values, where=where)
