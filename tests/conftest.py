"""Shared fixtures: small, fast configs on the generated ``Synthetic`` dataset."""

from __future__ import annotations

import pytest
import torch

from tinyconfig import tiny_config

torch.set_num_threads(1)  # results independent of the machine's core count; fast on 2 cores


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test, the previous count restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny():
    return tiny_config


TIMINGS = ("epoch_seconds", "eval_seconds")


def without_timings(history: list[dict]) -> list[dict]:
    """Per-epoch records without wall-clock fields (the only ones a resumed run may change)."""
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in history]


@pytest.fixture
def strip_timings():
    """The function :func:`without_timings`, as a fixture."""
    return without_timings


@pytest.fixture
def interrupted_and_resumed(tmp_path, monkeypatch):
    """``run(cfg, method_class, stop_after)``: train ``cfg`` uninterrupted, then again with
    ``method_class.closure`` raising KeyboardInterrupt at batch ``stop_after + 1``, resume that run
    from its checkpoint, and return both histories (timings stripped): ``(full, resumed)``."""
    from analoglearn.runs import RunDir
    from analoglearn.train import fit

    def run(cfg, method_class, stop_after: int):
        fit(cfg, tmp_path / "full", log=lambda s: None)
        original, calls = method_class.closure, []

        def interrupted(self, x, y, scaler=None):
            calls.append(1)
            if len(calls) > stop_after:
                raise KeyboardInterrupt
            return original(self, x, y, scaler)

        monkeypatch.setattr(method_class, "closure", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, tmp_path / "cut", log=lambda s: None)
        monkeypatch.setattr(method_class, "closure", original)
        fit(None, tmp_path / "cut", resume=True, log=lambda s: None)
        return tuple(without_timings(RunDir(tmp_path / name).metrics()) for name in ("full", "cut"))

    return run
