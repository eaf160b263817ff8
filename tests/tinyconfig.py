"""The small, fast run config the tests share (importable from every test folder: pytest puts tests/ on
the path)."""

from __future__ import annotations


def tiny_config(**sections) -> dict:
    """A run that trains a small MLP on Synthetic in about a second."""
    raw = {
        "seed": 0,
        "data": {"name": "Synthetic", "batch_size": 32, "train_subset": 640, "test_subset": 200},
        "model": {"name": "mlp", "hidden": [32]},
        "method": {"name": "sgd"},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        "train": {"epochs": 2, "threads": 1, "progress": False},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw
