"""Import the built-in packages so that their registrations (datasets, models, methods, noise
models) are in place before any name is looked up."""

from __future__ import annotations

import importlib

BUILTINS = ("analoglearn.data", "analoglearn.nets", "analoglearn.robust", "analoglearn.noise", "analoglearn.energy")


def load_builtins() -> None:
    """Import every built-in package once (idempotent, cheap after the first call)."""
    for name in BUILTINS:
        importlib.import_module(name)
