"""azray against the real app: Azurite, the local Functions host and real Ray nodes on 127.0.0.1.

One cluster for the module (a Ray node costs seconds to start): `up` creates it and waits for its min_workers, the
tests in between read it and run a job on it, and the last one takes it `down` (the fixture makes sure nothing of it
survives whatever happens).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.stack import LocalStack
from provisioning.local import cluster_processes
from tests.support.cli_stack import Azray, azray_runner, running_stack

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NAME = "cli-local"
CONFIG = f"""
cluster_name: {NAME}
max_workers: 1
provider: {{type: local, launch_delay_s: 0}}
available_node_types:
  head: {{resources: {{CPU: 0}}, min_workers: 0, max_workers: 0, node_config: {{}}}}
  cpu: {{resources: {{CPU: 1}}, min_workers: 1, max_workers: 1, node_config: {{}}}}
head_node_type: head
"""
EVERY_5_S = "*/5 * * * * *"
UP_TIMEOUT_S = 150
COMMAND_TIMEOUT_S = UP_TIMEOUT_S + 30


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-local")


@pytest.fixture(scope="module")
def stack(work_dir: Path) -> Iterator[LocalStack]:
    yield from running_stack(work_dir, NAME, EVERY_5_S)


@pytest.fixture(scope="module")
def azray(stack: LocalStack, work_dir: Path) -> Azray:
    return azray_runner(stack, work_dir, timeout_s=COMMAND_TIMEOUT_S)


@pytest.fixture(scope="module")
def config_file(work_dir: Path) -> Path:
    path = work_dir / f"{NAME}.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def cluster_up(azray: Azray, config_file: Path) -> subprocess.CompletedProcess[str]:
    return azray("up", str(config_file), "--timeout", str(UP_TIMEOUT_S))


def test_up_follows_the_cluster_until_its_min_worker_runs_ray(cluster_up):
    assert cluster_up.returncode == 0, cluster_up.stdout + cluster_up.stderr
    assert f"cluster {NAME} accepted" in cluster_up.stdout
    assert "✓ min_workers running (1): 1/1 workers run Ray" in cluster_up.stdout
    assert f"cluster {NAME} is usable" in cluster_up.stdout
    assert "ray address   127.0.0.1:" in cluster_up.stdout


def test_up_again_with_the_same_config_says_nothing_to_do(cluster_up, azray, config_file):
    again = azray("up", str(config_file), "--timeout", "30")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"nothing to do: cluster {NAME} already runs this config (running)" in again.stdout


def test_status_shows_the_head_and_the_worker_running_ray(cluster_up, azray):
    status = azray("status", NAME)
    assert status.returncode == 0, status.stderr
    rows = {line.replace("│", " ").split()[0]: line for line in status.stdout.splitlines() if "│" in line}
    assert "ray_running" in status.stdout
    assert "head" in rows
    assert "cpu" in rows
    assert "Last decision" in status.stdout


def test_submit_streams_the_jobs_output_and_exits_with_its_code(cluster_up, azray):
    job = azray("submit", NAME, "--", sys.executable, "-c", "print('hello from the job'); raise SystemExit(3)")
    assert "hello from the job" in job.stdout, job.stderr
    assert job.returncode == 3
    assert "submitted raysubmit_" in job.stderr


def test_down_deletes_the_cluster_lists_what_was_removed_and_leaves_no_ray_process(cluster_up, azray, stack):
    down = azray("down", NAME, "--yes", "--timeout", "90")
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"cluster {NAME} is deleted" in down.stdout
    assert "terminated" in down.stdout
    assert not cluster_processes(stack.data_dir / "provider", NAME)
    listed = azray("list")
    assert "deleted" in listed.stdout
