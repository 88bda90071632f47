"""End-to-end tests: the HTTP API, real Azurite, the local Functions host and real Ray nodes on 127.0.0.1.

Each module shares one control plane and one cluster between its tests (a Ray node costs seconds to start on a
small machine); each test first waits for the cluster to be back at its module's baseline. Helpers live in
support.py, the Ray driver in driver.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.chaos import private_work_dir

# Ray must not try to reach anything beyond loopback (usage stats are sent to an outside server otherwise).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not sys.platform.startswith("linux"):
        skip = pytest.mark.skip(reason="the local provider reads /proc: Linux only")
        for item in items:
            if "tests/e2e/" in str(item.path):
                item.add_marker(skip)


@pytest.fixture
def work_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder of this test only (see `private_work_dir`); a module with a wider-scoped `work_dir` overrides it."""
    with private_work_dir(request) as folder:
        yield folder
