"""Weight-noise models (corruptions of stored weights) and the context manager that applies them.

Paper B (Jacobson et al., arXiv 2602.07320): §B.1 test-time corruption, §B.4 hardware-grounded
models. Every model is registered in :data:`analoglearn.registry.NOISE_MODELS`; build one from a
config with :func:`build`::

    model = build("additive_gaussian", 0.05, scale="filter-max")
    with perturbed(net, model, torch.Generator().manual_seed(0)):
        scores = net(x)

Registered names (strength in brackets): ``additive_gaussian`` (σ), ``additive_uniform`` (σ),
``multiplicative_gaussian`` (σ), ``multiplicative_uniform`` (σ), ``device`` (σ), ``quantize``
(levels), ``stuck_at`` (p), ``pcm`` (t_inference, s).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError
from ..registry import NOISE_MODELS
from .base import Compose, NoiseModel, perturbed
from .device import ConductanceNoise, DeviceNoise, Quantize, StuckAt
from .gaussian import AdditiveGaussian, AdditiveUniform, MultiplicativeGaussian, MultiplicativeUniform
from .pcm import PCM


def build(name: str, strength: float | None = None, **options: Any) -> NoiseModel:
    """The noise model registered as ``name``, at ``strength``, with ``options`` (its dataclass fields).

    ``strength`` sets the model's strength field (σ, levels, p or t_inference); ``None`` keeps the
    default. Unknown option names raise :class:`ConfigError` listing the valid ones.

    >>> build("additive_gaussian", 0.05, scale="tensor-max").sigma
    0.05
    """
    entry = NOISE_MODELS.get(name)
    cls = entry.options
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} of noise model {entry.name!r}; valid: {', '.join(valid)}."
        )
    if strength is not None:
        options = {**options, cls.strength_field: strength}
    return cls(**options)


def from_config(spec: dict[str, Any], strength: float | None = None) -> NoiseModel:
    """Build from a config mapping ``{name: ..., <options>...}``; a ``parts`` list builds a :class:`Compose`.

    Keys ``strengths`` (a sweep, handled by the caller) and ``strength`` are not options.
    """
    spec = {k: v for k, v in spec.items() if k != "strengths"}
    if "name" not in spec:
        valid = ", ".join(NOISE_MODELS.names())
        raise ConfigError(f"a noise entry needs a 'name' (one of {valid}); got {spec}.")
    name = spec.pop("name")
    if strength is None:
        strength = spec.pop("strength", None)
    else:
        spec.pop("strength", None)
    if str(name).lower() == "compose":
        parts = [from_config(p) for p in spec.pop("parts", [])]
        if not parts:
            raise ConfigError("noise model 'compose' needs a non-empty 'parts' list.")
        composed = Compose(tuple(parts), **spec)
        return composed if strength is None else composed.with_strength(strength)
    return build(name, strength, **spec)


__all__ = [
    "PCM",
    "AdditiveGaussian",
    "AdditiveUniform",
    "Compose",
    "ConductanceNoise",
    "DeviceNoise",
    "MultiplicativeGaussian",
    "MultiplicativeUniform",
    "NoiseModel",
    "Quantize",
    "StuckAt",
    "build",
    "from_config",
    "perturbed",
]
