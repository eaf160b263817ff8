"""Registries: name → factory, with listings and errors that name the valid choices.

Every pluggable piece (datasets, models, training methods, noise models, schedules) is looked
up by name in a :class:`Registry`. A factory may declare an *options* dataclass: the fields a
config section may set for it. Unknown names and unknown options raise
:class:`~analoglearn.errors.ConfigError` listing what is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import ConfigError
from .schema import build_dataclass

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[F]):
    """One registered factory.

    Attributes:
        name: canonical name.
        factory: the callable that builds the object.
        options: dataclass of the options a config section may set, or ``None``.
        summary: one line shown by listings (first line of the factory's docstring by default).
    """

    name: str
    factory: F
    options: type | None
    summary: str


class Registry(Generic[F]):
    """A case-insensitive map from names to factories.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("mlp")
    ... def mlp(width: int = 100): ...
    >>> MODELS.names()
    ['mlp']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[F]] = {}
        self._keys: dict[str, str] = {}

    def register(
        self,
        name: str,
        *,
        aliases: tuple[str, ...] = (),
        options: type | None = None,
        summary: str | None = None,
    ) -> Callable[[F], F]:
        """Decorator registering ``factory`` under ``name`` (and ``aliases``)."""

        def decorate(factory: F) -> F:
            if options is not None and not dataclasses.is_dataclass(options):
                raise TypeError(f"options of {self.kind} {name!r} must be a dataclass")
            doc = summary or (factory.__doc__ or "").strip().splitlines()[0:1]
            line = doc if isinstance(doc, str) else (doc[0] if doc else "")
            entry = Entry(name=name, factory=factory, options=options, summary=line)
            for key in (name, *aliases):
                folded = key.lower()
                if folded in self._keys and self._keys[folded] != name:
                    raise ValueError(f"{self.kind} name {key!r} registered twice")
                self._keys[folded] = name
            self._entries[name] = entry
            return factory

        return decorate

    def names(self) -> list[str]:
        """Canonical names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._keys

    def canonical(self, name: str) -> str:
        """The canonical spelling of ``name``; :class:`ConfigError` listing valid names if unknown."""
        if not isinstance(name, str) or name.lower() not in self._keys:
            valid = ", ".join(self.names())
            hint = difflib.get_close_matches(str(name).lower(), list(self._keys), n=1)
            guess = f" Did you mean {self._keys[hint[0]]!r}?" if hint else ""
            raise ConfigError(f"unknown {self.kind} {name!r}.{guess} Valid {self.kind}s: {valid}.")
        return self._keys[name.lower()]

    def get(self, name: str) -> Entry[F]:
        """The entry registered as ``name`` (case-insensitive)."""
        return self._entries[self.canonical(name)]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered as ``name``."""
        return self.get(name).factory(*args, **kwargs)

    def build_options(self, name: str, values: dict[str, Any], where: str | None = None) -> Any:
        """Validate ``values`` against the options dataclass of ``name`` and return an instance.

        Unknown keys raise :class:`ConfigError` listing the valid option names; ``where`` is the
        config path of the section (e.g. ``method``), named in every error.
        """
        entry = self.get(name)
        if entry.options is None:
            if values:
                keys = sorted(values, key=str)
                at = f"{where}.{keys[0]}" if where else self.kind
                raise ConfigError(f"{at}: {self.kind} {entry.name!r} takes no options; got {keys}.")
            return None
        return build_dataclass(entry.options, values, where=where or f"{self.kind} {entry.name!r}")

    def describe(self) -> list[tuple[str, str]]:
        """``(name, summary)`` rows for listings."""
        return [(e.name, e.summary) for e in self._entries.values()]


DATASETS: Registry[Any] = Registry("dataset")
MODELS: Registry[Any] = Registry("model")
METHODS: Registry[Any] = Registry("method")
PERTURBATIONS: Registry[Any] = Registry("perturbation")
NOISE_MODELS: Registry[Any] = Registry("noise model")
