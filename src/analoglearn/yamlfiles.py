"""YAML config files and dotted command-line overrides, read strictly.

``read_yaml(path)`` reads a UTF-8 YAML mapping (a missing, unreadable, binary or malformed file, or
a key given twice in one mapping, raises :class:`~analoglearn.errors.ConfigError` naming the file
and the line); ``parse_override("optim.lr=0.1")`` parses one ``section.key=value`` (the value as
YAML) and ``apply_overrides`` applies a list of them to plain data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .schema import _mapping


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML says keys are unique;
    PyYAML would let the last one win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {lines[key]}); give each key once",
                        key_node.start_mark)
                lines[key] = key_node.start_mark.line + 1
            except TypeError:
                continue  # an unhashable key: the mapping's own constructor says so
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML ``text`` (``where`` names its source in errors); duplicate keys are refused."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        line = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{line}: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be a config") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` → ``(["optim", "lr"], 0.1)``; the value is parsed as YAML.

    A value that is not valid YAML is taken as a string (``data.root=/my data``) unless it holds a
    mapping with a key given twice, which is refused.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.epochs=3")
    try:
        parsed = yaml.load(value, Loader=_UniqueKeyLoader) if value.strip() else None
    except yaml.constructor.ConstructorError as err:
        raise ConfigError(f"override {text!r}: {err.problem}") from None
    except (yaml.YAMLError, RecursionError):
        parsed = value
    return key.strip().split("."), parsed


def set_path(raw: dict[str, Any], path: list[str], value: Any, text: str | None = None) -> None:
    """Set ``raw[path[0]][path[1]]... = value`` in place, creating sections as needed."""
    node = raw
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {text or '.'.join(path)!r}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to plain config data (a new dict is returned)."""
    out = json.loads(json.dumps(raw))
    for text in overrides:
        path, value = parse_override(text)
        set_path(out, path, value, text)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable, non-UTF-8 or malformed file raises :class:`ConfigError`."""
    path = Path(path)
    name = repr(str(path))
    if path.is_dir():
        raise ConfigError(f"config file {name} is a directory; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {name} not found")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {name} cannot be read: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {name} is not UTF-8 text (byte {raw[err.start]:#04x} at offset "
                          f"{err.start}); give a YAML file saved as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"config file {name} holds NUL bytes (offset {text.index(chr(0))}): it is a binary "
                          "file, not YAML")
    data = parse_yaml(text, f"config file {name}")
    if data is None:
        return {}
    return _mapping(data, f"config file {name}")


def dump_yaml(data: Any) -> str:
    """YAML text of plain data, keys in schema order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
