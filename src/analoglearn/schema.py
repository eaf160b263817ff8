"""Checking plain data (from YAML) against typed dataclasses: the validation under every config section.

``build_dataclass(cls, mapping, where="data")`` checks every key against ``cls``'s fields and every
value against its type hint (``int``, ``float``, ``bool``, ``str``, ``list[...]``, ``X | None``,
nested dataclasses), then lets ``__post_init__`` check ranges; every refusal is a
:class:`~analoglearn.errors.ConfigError` whose message names the key path (``data.batch_size``).
Numbers must be finite and integers fit in int64. It depends on nothing else of analoglearn, so the
registry, the config and every options dataclass may use it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

from .errors import ConfigError

INT_LIMIT = 2**63
"""Integers in a config must lie in (−2⁶³, 2⁶³): torch stores them as int64."""


def build_dataclass(cls: type, values: Any, *, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, checking keys and types.

    Raises :class:`ConfigError` naming ``where`` and the valid fields for an unknown key, and the
    expected type for a value of the wrong type; ``__post_init__`` checks ranges, and its message is
    given the key path (``data.batch_size must be > 0``) when it does not name one already.
    """
    values = _mapping(values, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields, key=str)
    if unknown:
        named = ", ".join(f"{where}.{k}" for k in unknown)
        raise ConfigError(f"unknown key(s) {named}; valid keys in {where}: {', '.join(sorted(fields)) or 'none'}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(_with_path(str(err), where, list(kwargs), sorted(fields, key=len, reverse=True))) from None
    except (TypeError, ValueError, ArithmeticError) as err:
        raise ConfigError(_with_path(f"invalid value: {err}", where, list(kwargs), [])) from None


def _with_path(message: str, where: str, given: list[str], fields: list[str]) -> str:
    """``message`` of a range check inside section ``where``, made to name its key path.

    ``batch_size must be > 0`` → ``data.batch_size must be > 0``; a message that names one of the
    keys the user gave gets that key's path in front; a message naming ``where.key`` already is kept;
    otherwise the keys given are listed (one of them is at fault: the defaults are valid).
    """
    if f"{where}." in message:
        return message
    for name in sorted(fields, key=len, reverse=True):
        if message.startswith(f"{name} "):
            return f"{where}.{message}"
    for name in sorted(given, key=len, reverse=True):
        if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message):
            return f"{where}.{name}: {message}"
    if len(given) == 1:
        return f"{where}.{given[0]}: {message}"
    return f"{where} ({', '.join(f'{where}.{k}' for k in given) or 'defaults'}): {message}"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint`` (int, float, bool, str, list[...], X | None, ...).

    Numbers must be finite (NaN and ±inf are refused: no option of analoglearn means anything with
    them) and integers lie in (−2⁶³, 2⁶³); strings may not hold NUL characters.
    """
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append((option, err))
        for option, err in errors:  # the option of the value's own kind says best what is wrong with it
            if _same_kind(value, option):
                raise err from None
        raise ConfigError(f"{where} must be {_type_name(hint)}, got {_show(value)}")
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(_sequence(value, where))]
    if origin is dict:
        return dict(_mapping(value, where))
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where=where)
    if hint in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value, hint, where)
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        if isinstance(value, str) and "\x00" in value:
            raise ConfigError(f"{where} must not contain NUL characters, got {_show(value)}")
        return value
    raise ConfigError(f"{where} must be {_type_name(hint)}, got {_show(value)}")


def _same_kind(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the kind ``hint`` describes (a number for int/float, a list for list[...])."""
    origin = typing.get_origin(hint) or hint
    if origin in (int, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(origin, type) and isinstance(value, origin)


def _number(value: int | float, hint: type, where: str) -> int | float:
    """A finite int or float for ``hint``; an integral float is accepted for an int."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value} (NaN and ±inf are not valid here)")
    if hint is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where} must be an integer, got {value!r}")
            value = int(value)
        if not -INT_LIMIT < value < INT_LIMIT:
            raise ConfigError(f"{where} must be an integer between -2^63 and 2^63 (exclusive), got {value}")
        return value
    if abs(value) > 1.7e308:
        raise ConfigError(f"{where} must be a finite number, got {value}")
    return float(value)


def _show(value: Any) -> str:
    """``repr`` of a user's value, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, "null" if hint is type(None) else getattr(hint, "__name__", str(hint))
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {_show(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{where}: keys must be strings, got {_show(bad[0])}")
    return value


def _sequence(value: Any, where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a list, got {_show(value)}")
    return list(value)


def to_plain(obj: Any) -> Any:
    """Dataclasses → dicts (``options`` flattened beside ``name``), tuples → lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "options":
                out.update(to_plain(value) or {})
            else:
                out[f.name] = to_plain(value)
        return out
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
