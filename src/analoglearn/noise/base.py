"""The noise-model contract, parameter selection and the :func:`perturbed` context manager.

A *noise model* is a distribution of weight corruptions with one *strength* (σ for Gaussian
models; each model documents its own). It perturbs the selected parameters of a module in place;
:func:`perturbed` applies one draw and restores the clean weights bit-for-bit on exit (DESIGN.md,
rules of the house). Paper B (Jacobson et al., arXiv 2602.07320), §B.1: noise on conv and linear
weights by default; biases and normalisation parameters only on request.

Random draws are made on the generator's device (CPU for a default ``torch.Generator()``) and then
moved to the parameter's device, so one seed gives the same corruption on every device.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import NOISE_MODELS

M = TypeVar("M", bound=type)

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
"""Normalisation layers whose affine parameters ``norm=True`` selects."""

WEIGHT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Layers whose ``.weight`` is corrupted by default (crossbar arrays in hardware)."""


@dataclass(frozen=True)
class NoiseModel:
    """Base class of noise models: which parameters to corrupt, and how (in subclasses).

    Subclasses are frozen dataclasses whose fields are the model's options; ``strength_field``
    names the field that :attr:`strength` reads and :meth:`with_strength` replaces.
    """

    strength_field: ClassVar[str] = ""
    name: ClassVar[str] = ""

    modules: list[str] | tuple[str, ...] = field(default=(), kw_only=True)
    """Extra modules whose ``.weight`` is corrupted too: class names (e.g. ``"Embedding"``) or
    qualified submodule names (e.g. ``"features.0"``). Conv and linear layers are always included."""
    bias: bool = field(default=False, kw_only=True)
    """Also corrupt the biases of the selected layers."""
    norm: bool = field(default=False, kw_only=True)
    """Also corrupt the affine parameters (weight, bias) of normalisation layers."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", tuple(self.modules))

    @property
    def label(self) -> str:
        """How results name this model: its registered name, with the options that differ from their
        defaults in brackets (``pcm[drift_compensation=True]``); a composition names its parts."""
        changed = []
        for f in dataclasses.fields(self):
            if f.name == self.strength_field or not f.init:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            value = getattr(self, f.name)
            if default is dataclasses.MISSING or value != (tuple(default) if isinstance(value, tuple) else default):
                changed.append(f"{f.name}={','.join(map(str, value)) if isinstance(value, tuple) else value}")
        return f"{self.name}[{';'.join(changed)}]" if changed else self.name

    @property
    def deterministic(self) -> bool:
        """Whether the corruption ignores the random draw (e.g. quantisation, or σ = 0): then every
        Monte-Carlo trial would give the same network, and one evaluation stands for all of them."""
        return False

    @property
    def strength(self) -> float:
        """The model's strength (see the subclass docstring for its meaning and unit)."""
        return float(getattr(self, self.strength_field))

    def with_strength(self, strength: float) -> NoiseModel:
        """A copy of this model with its strength replaced (validated again)."""
        return dataclasses.replace(self, **{self.strength_field: strength})

    def describe(self) -> dict[str, Any]:
        """The model's options but its strength, as plain data (what results record beside the label)."""
        return _plain({k: v for k, v in dataclasses.asdict(self).items() if k != self.strength_field})

    def applied(self, module: nn.Module, generator: torch.Generator | None) -> contextlib.AbstractContextManager:
        """One trial's corruption of ``module`` (:func:`perturbed`): what Monte-Carlo evaluation enters."""
        return perturbed(module, self, generator)

    def select(self, module: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The ``(qualified name, parameter)`` pairs this model corrupts, in module order."""
        chosen: list[tuple[str, nn.Parameter]] = []
        seen: set[int] = set()
        for mod_name, sub in module.named_modules():
            names = self._names_in(mod_name, sub)
            for pname in names:
                param = getattr(sub, pname, None)
                if isinstance(param, nn.Parameter) and id(param) not in seen:
                    seen.add(id(param))
                    chosen.append((f"{mod_name}.{pname}" if mod_name else pname, param))
        return chosen

    def _names_in(self, mod_name: str, sub: nn.Module) -> tuple[str, ...]:
        if isinstance(sub, NORM_TYPES):
            return ("weight", "bias") if self.norm else ()
        named = type(sub).__name__ in self.modules or (mod_name != "" and mod_name in self.modules)
        if isinstance(sub, WEIGHT_TYPES) or named:
            return ("weight", "bias") if self.bias else ("weight",)
        return ()

    def perturb_(self, weight: torch.Tensor, generator: torch.Generator | None) -> None:
        """Corrupt one tensor in place (under ``torch.no_grad``). Implemented by subclasses."""
        raise NotImplementedError

    def apply_(self, module: nn.Module, generator: torch.Generator | None = None) -> list[nn.Parameter]:
        """Corrupt the selected parameters of ``module`` in place, without saving them.

        Raises:
            ConfigError: if ``module`` has no parameter this model selects.
        """
        params = [p for _, p in self.select(module)]
        if not params:
            raise ConfigError(
                f"noise model {self.name!r} matches no parameter of {type(module).__name__}: it corrupts "
                f"the weights of {', '.join(t.__name__ for t in WEIGHT_TYPES)} and of "
                f"modules={list(self.modules)} "
                f"(bias={self.bias}, norm={self.norm}). Name the layers to corrupt with `modules`."
            )
        with torch.no_grad():
            for p in params:
                self.perturb_(p, generator)
        return params


@dataclass(frozen=True)
class Compose(NoiseModel):
    """Several noise models applied in order to each selected tensor, e.g. quantise then add read noise.

    Its strength is that of part ``swept`` (the one a strength sweep varies; the others keep
    theirs); parameter selection is the union of the parts'.
    """

    name: ClassVar[str] = "compose"
    parts: tuple[NoiseModel, ...] = ()
    """The models, applied first to last."""
    swept: int = 0
    """Index of the part whose strength :attr:`strength` reads and :meth:`with_strength` sets."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "parts", tuple(self.parts))
        if not self.parts:
            raise ConfigError("noise model 'compose' needs at least one part.")
        if not 0 <= self.swept < len(self.parts):
            raise ConfigError(f"compose.swept must index one of its {len(self.parts)} parts (0 to "
                              f"{len(self.parts) - 1}); got {self.swept!r}.")

    @property
    def strength(self) -> float:
        return self.parts[self.swept].strength

    @property
    def label(self) -> str:
        """The parts joined by ``+`` in order, fixed ones with their strength: ``quantize(16)+additive_gaussian``."""
        return "+".join(p.label if i == self.swept else f"{p.label}({p.strength:g})" for i, p in enumerate(self.parts))

    @property
    def deterministic(self) -> bool:
        return all(p.deterministic for p in self.parts)

    def with_strength(self, strength: float) -> NoiseModel:
        """A copy whose part ``swept`` has strength ``strength``."""
        parts = list(self.parts)
        parts[self.swept] = parts[self.swept].with_strength(strength)
        return dataclasses.replace(self, parts=tuple(parts))

    def select(self, module: nn.Module) -> list[tuple[str, nn.Parameter]]:
        picked: dict[int, tuple[str, nn.Parameter]] = {}
        for part in self.parts:
            for name, p in part.select(module):
                picked.setdefault(id(p), (name, p))
        return list(picked.values())

    def apply_(self, module: nn.Module, generator: torch.Generator | None = None) -> list[nn.Parameter]:
        for part in self.parts:
            part.apply_(module, generator)
        return [p for _, p in self.select(module)]


@contextlib.contextmanager
def perturbed(
    module: nn.Module, noise_model: NoiseModel, generator: torch.Generator | None = None
) -> Iterator[list[nn.Parameter]]:
    """Apply one draw of ``noise_model`` to ``module`` in place; restore the clean weights on exit.

    The restore is bit-for-bit (a saved copy is written back), also when the body raises. The
    body receives the list of corrupted parameters.

    Args:
        module: any ``nn.Module`` (a feed-forward net or an energy-based network).
        noise_model: the corruption to draw.
        generator: source of randomness; ``None`` uses torch's global generator (then the draw
            depends on everything else that consumed it: pass a generator for reproducible trials).

    >>> with perturbed(model, AdditiveGaussian(0.05), torch.Generator().manual_seed(0)):
    ...     scores = model(x)
    """
    params = [p for _, p in noise_model.select(module)]
    saved = [p.detach().clone() for p in params]
    try:
        noise_model.apply_(module, generator)
        yield params
    finally:
        with torch.no_grad():
            for p, clean in zip(params, saved):
                p.copy_(clean)


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively (JSON-able)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def randn_like(w: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal draws shaped like ``w``, on the generator's device, returned on ``w``'s."""
    device = generator.device if generator is not None else w.device
    return torch.randn(w.shape, generator=generator, device=device, dtype=torch.float32).to(w.device, w.dtype)


def rand_like(w: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) draws shaped like ``w``, on the generator's device, returned on ``w``'s."""
    device = generator.device if generator is not None else w.device
    return torch.rand(w.shape, generator=generator, device=device, dtype=torch.float32).to(w.device, w.dtype)


def check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"{what} must be one of {', '.join(valid)}; got {value!r}.")


def check_nonnegative(what: str, value: float) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number ≥ 0."""
    if not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ConfigError(f"{what} must be a finite number ≥ 0; got {value!r}.")


def register(name: str, aliases: tuple[str, ...] = ()) -> Callable[[M], M]:
    """Class decorator: register a noise-model dataclass in ``NOISE_MODELS`` under ``name``.

    The class is its own options dataclass; the registered factory takes an instance of it
    (``factory(options)``) or its fields as keywords (``factory(sigma=0.05)``) and returns the model.
    """

    def decorate(cls: M) -> M:
        def factory(options: Any = None, **fields: Any) -> NoiseModel:
            return options if options is not None else cls(**fields)

        summary = (cls.__doc__ or name).strip().splitlines()[0]
        NOISE_MODELS.register(name, aliases=aliases, options=cls, summary=summary)(factory)
        return cls

    return decorate
