"""Fixtures of the energy tests (helpers live in ebl_helpers.py)."""

from __future__ import annotations

import pytest
from ebl_helpers import make_batch, make_net

from analoglearn.energy.network import HopfieldNetwork


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every energy test on one torch thread (``one_thread`` of tests/conftest.py)."""


@pytest.fixture
def net() -> HopfieldNetwork:
    return make_net()


@pytest.fixture
def batch():
    return make_batch()
