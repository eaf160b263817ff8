"""Registries: case-insensitive names, suggestions, option dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from analoglearn.errors import ConfigError
from analoglearn.registry import Registry


@dataclass
class Opts:
    size: int = 3


def make():
    reg = Registry("widget")

    @reg.register("Square", aliases=("box",), options=Opts)
    def square(opts):
        """A square widget."""
        return opts.size**2

    return reg


def test_lookup_is_case_insensitive_with_aliases():
    reg = make()
    assert reg.canonical("square") == "Square" == reg.canonical("BOX")
    assert reg.create("square", Opts(4)) == 16
    assert reg.describe() == [("Square", "A square widget.")]


def test_unknown_name_lists_valid_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown widget 'sqare'. Did you mean 'Square'\? Valid widgets: Square"):
        make().canonical("sqare")


def test_options_are_checked():
    reg = make()
    assert reg.build_options("square", {"size": 5}) == Opts(5)
    with pytest.raises(ConfigError, match="valid keys in .*: size"):
        reg.build_options("square", {"colour": "red"})


def test_duplicate_registration_is_refused():
    reg = make()
    with pytest.raises(ValueError):
        reg.register("box")(lambda: None)
