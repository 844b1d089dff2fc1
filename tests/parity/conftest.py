"""Fixtures for parity tests against the official ``sam2`` 1.1.0 package (the oracle)."""

from __future__ import annotations

from typing import Dict

import pytest

from oracle_support import ModelPair, scipy_connected_components

_PAIRS: Dict[str, ModelPair] = {}


@pytest.fixture(scope="session")
def model_pair():
    """``model_pair(name)`` -> a cached :class:`ModelPair`."""

    def get(name: str) -> ModelPair:
        if name not in _PAIRS:
            _PAIRS[name] = ModelPair(name)
        return _PAIRS[name]

    return get


@pytest.fixture
def scipy_cc():
    """:func:`scipy_connected_components`, for monkeypatching the oracle."""
    return scipy_connected_components
