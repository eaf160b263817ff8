"""Fixtures of the energy tests (helpers live in ebl_helpers.py)."""

from __future__ import annotations

import pytest
import torch
from ebl_helpers import make_batch, make_net

from analoglearn.energy.network import HopfieldNetwork


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def net() -> HopfieldNetwork:
    return make_net()


@pytest.fixture
def batch():
    return make_batch()
