"""Shared fixtures: one real Azurite per test session (loopback, temporary data folder)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.azurite import Azurite, start_azurite

# Tests never reach the network beyond loopback; make sure Ray started by tests agrees.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Nor does the Azure plugin's price hook: tests that read retail prices serve a recording on loopback and say so.
os.environ.setdefault("RETAIL_PRICES_URL", "off")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    instance = start_azurite()
    try:
        yield instance
    finally:
        instance.stop()
