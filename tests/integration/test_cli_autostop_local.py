"""Config updates, autostop and start through azray against the real app and real Ray nodes on 127.0.0.1.

`up` creates a cluster with `autostop: {idle_minutes: 0.1}`; `submit` runs a job needing more CPUs than the cluster
has (it scales up, the output streams back, exit 0) and `status` shows it; `up` with a lowered max_workers applies
without touching
the head; the idle cluster (no demand, no busy node, no running Ray job as the head agent reads them) is stopped with
every Ray process gone; `up` starts it again; `timeline` writes the SVG; `down` leaves no Ray process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.stack import LocalStack
from provisioning.local import cluster_processes
from tests.support.cli_stack import Azray, azray_runner, running_stack

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NAME = "cli-autostop"
CONFIG = f"""
cluster_name: {NAME}
max_workers: 2
autostop: {{idle_minutes: 0.1}}
provider: {{type: local, launch_delay_s: 0}}
available_node_types:
  head: {{resources: {{CPU: 0}}, min_workers: 0, max_workers: 0, node_config: {{}}}}
  cpu: {{resources: {{CPU: 1}}, min_workers: 1, max_workers: 2, node_config: {{}}}}
head_node_type: head
"""
EVERY_2_S = "*/2 * * * * *"
# Two 1-CPU tasks at once, on a cluster of one 1-CPU worker: the second waits until a second worker joins.
SCALING_JOB = """
import time, ray
ray.init()
@ray.remote(num_cpus=1)
def work(seconds):
    time.sleep(seconds)
    return 1
print("both tasks done:", sum(ray.get([work.remote(5), work.remote(5)])), flush=True)
"""
UP_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-autostop")


@pytest.fixture(scope="module")
def stack(work_dir: Path) -> Iterator[LocalStack]:
    yield from running_stack(work_dir, NAME, EVERY_2_S)


@pytest.fixture(scope="module")
def azray(stack: LocalStack, work_dir: Path) -> Azray:
    return azray_runner(stack, work_dir, timeout_s=UP_TIMEOUT_S + 30, cwd=work_dir)


def view(stack: LocalStack) -> dict[str, object]:
    answer: dict[str, object] = requests.get(f"{stack.api_url}/clusters/{NAME}", timeout=10).json()
    return answer


def wait_for_status(stack: LocalStack, status: str, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        last = view(stack)
        if last.get("status") == status:
            return last
        time.sleep(1.0)
    raise AssertionError(f"cluster never became {status}: {last.get('status')} ({last.get('status_reason')})")


def test_up_submit_scale_up_update_autostop_start_timeline_and_down(
    stack: LocalStack, azray: Azray, work_dir: Path
) -> None:
    config = work_dir / f"{NAME}.yaml"
    # A long idle period first: the update must land on a running cluster.
    config.write_text(CONFIG.replace("idle_minutes: 0.1", "idle_minutes: 60"))
    up = azray("up", str(config), "--timeout", str(UP_TIMEOUT_S))
    assert up.returncode == 0, up.stdout + up.stderr
    head = next(n for n in view(stack)["nodes"] if n["is_head"])  # type: ignore[attr-defined]

    # A job needing more CPUs than the cluster has (the head has none, the one worker one): it scales up, its output
    # streams back, and azray exits with the job's status.
    job = azray("submit", NAME, "--", sys.executable, "-c", SCALING_JOB)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "both tasks done: 2" in job.stdout
    status = azray("status", NAME)
    assert status.returncode == 0, status.stdout + status.stderr
    cpu_nodes = {n["instance_id"] for n in view(stack)["nodes"] if n["node_type"] == "cpu"}  # type: ignore[attr-defined]
    assert len(cpu_nodes) == 2, status.stdout  # the scale-up: a second worker joined for the waiting task
    assert "cpu" in status.stdout

    config.write_text(CONFIG.replace("max_workers: 2\n", "max_workers: 1\n"))
    updated = azray("up", str(config), "--timeout", str(UP_TIMEOUT_S))
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "update accepted" in updated.stdout
    after = view(stack)
    assert next(n for n in after["nodes"] if n["is_head"])["instance_id"] == head["instance_id"]  # type: ignore[attr-defined]

    stopped = wait_for_status(stack, "stopped", 90)
    assert "autostop" in str(stopped["status_reason"])
    provider_dir = work_dir / "stack" / "provider"
    assert not cluster_processes(provider_dir, NAME)

    config.write_text(CONFIG.replace("max_workers: 2\n", "max_workers: 1\n").replace("0.1", "60"))
    restarted = azray("up", str(config), "--timeout", str(UP_TIMEOUT_S))
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "starting it again" in restarted.stdout or "update accepted" in restarted.stdout

    timeline = azray("timeline", NAME, "-o", str(work_dir / "timeline.svg"))
    assert timeline.returncode == 0, timeline.stdout + timeline.stderr
    assert "pending_demand" in (work_dir / "timeline.svg").read_text()

    down = azray("down", NAME, "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not cluster_processes(provider_dir, NAME)
