"""What the azray tests against the real local stack share: the stack (Azurite, the local Functions host, real Ray on
127.0.0.1) and a runner for `python -m azray` pointed at it, with its own config folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from local.stack import LocalStack
from provisioning.local import LocalCloudProvider, cluster_processes

Azray = Callable[..., subprocess.CompletedProcess[str]]


def running_stack(work_dir: Path, cluster_name: str, reconcile_schedule: str) -> Iterator[LocalStack]:
    """A started stack for a module's fixture; afterwards nothing of `cluster_name` survives, whatever happened."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the local provider reads /proc: Linux only")
    local_stack = LocalStack(data_dir=work_dir / "stack", port=0, settings={"RECONCILE_SCHEDULE": reconcile_schedule})
    local_stack.start()
    try:
        yield local_stack
    finally:
        local_stack.stop()
        provider_dir = work_dir / "stack" / "provider"
        if cluster_processes(provider_dir, cluster_name):
            LocalCloudProvider(provider_dir).destroy_cluster(cluster_name)


def azray_runner(stack: LocalStack, work_dir: Path, *, timeout_s: float, cwd: Path | None = None) -> Azray:
    """`azray ARGS...` against the stack, without the user's config or key; never waits for input."""
    base_url = stack.api_url.removesuffix("/api")
    environment = {**os.environ, "XDG_CONFIG_HOME": str(work_dir / "config"), "COLUMNS": "200"}
    environment.pop("AZRAY_KEY", None)

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "azray", "--url", base_url, *arguments],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=environment,
            stdin=subprocess.DEVNULL,
            check=False,
            cwd=cwd,
        )

    return run
