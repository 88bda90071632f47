"""A drain refused by a busy Ray node, and destroy, on a cluster whose timer never fires.

Every tick here comes from a queue message (create, the head agent's wake-ups, follow-ups) or from the test, so
the test decides when an idle node is looked at.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from autoscaler.model import RayNodeStatus, RayState
from autoscaler.ray_state import DrainResult, HttpRayStateReader, RayStateReader
from autoscaler.reconcile import reconcile
from tests.e2e.support import (
    FINAL_STATUSES,
    NEVER,
    ClusterUnderTest,
    View,
    cluster_under_test,
    describe,
    events,
    workers,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NAME = "e2e-lifecycle"
IDLE_TIMEOUT_S = 3
CONFIG = f"""
cluster_name: {NAME}
max_workers: 2
idle_timeout_minutes: 1
provider: {{type: local, launch_delay_s: 0}}
auth: {{ssh_user: ray}}
available_node_types:
  head: {{resources: {{CPU: 0}}, min_workers: 0, max_workers: 0, node_config: {{}}}}
  cpu: {{resources: {{CPU: 1}}, min_workers: 0, max_workers: 2, idle_timeout_s: {IDLE_TIMEOUT_S}, node_config: {{}}}}
head_node_type: head
"""
SCALE_UP_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUnderTest]:
    with cluster_under_test(tmp_path_factory.mktemp("e2e-lifecycle"), CONFIG, name=NAME, schedule=NEVER) as cluster:
        yield cluster


def running(view: View) -> list[View]:
    return workers(view, "cpu", statuses=("ray_running",))


class StartsWorkAfterReading:
    """The real head agent client, plus one hook: right after the tick reads Ray's state, work starts on the node.

    The race "idle when observed, busy when drained" lasts milliseconds in production; this puts it inside the
    tick on purpose, between step 3 (observe Ray) and step 6 (drain), so that real Ray has to refuse the drain.
    """

    def __init__(self, reader: RayStateReader, start_work: Callable[[], None]) -> None:
        self.reader = reader
        self.start_work = start_work
        self.observed: RayState | None = None

    def read_state(self, agent_url: str, token: str) -> RayState:
        state = self.reader.read_state(agent_url, token)
        if self.observed is None:
            self.observed = state
            self.start_work()
        return state

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        return self.reader.drain(agent_url, token, ray_node_id, reason, message)


def idle_seconds(cluster: ClusterUnderTest, ray_node_id: str) -> float:
    state = HttpRayStateReader().read_state(cluster.head_agent_url(), cluster.cluster_token())
    node = next((n for n in state.nodes if n.ray_node_id == ray_node_id), None)
    return node.idle_duration_s if node is not None and node.status == RayNodeStatus.IDLE else 0.0


def test_a_node_busy_when_its_idle_drain_is_attempted_is_not_terminated(cluster: ClusterUnderTest):
    import function_app

    with cluster.driver("pin-after-go") as driver:
        # The driver's first task brings up a worker (wake-up, then follow-ups); then the worker goes idle.
        view = cluster.wait_for(
            lambda v: len(running(v)) == 1 and driver.has_written("first-task-node"),
            what="a cpu worker that ran the driver's first task",
            timeout_s=SCALE_UP_TIMEOUT_S,
            also_check=driver.check_alive,
        )
        [worker] = running(view)
        ray_node_id = driver.read("first-task-node")
        assert worker["ray_node_id"] == ray_node_id
        deadline = time.monotonic() + 30.0
        while idle_seconds(cluster, ray_node_id) <= IDLE_TIMEOUT_S + 1:
            assert time.monotonic() < deadline, f"Ray never saw the worker idle past its timeout\n{describe(view)}"
            time.sleep(0.5)
        cluster.wait_for_empty_queue(timeout_s=15.0)  # no tick of the control plane is on its way

        def start_pinned_task() -> None:
            driver.signal("go")
            start_deadline = time.monotonic() + 30.0
            while not driver.started_tasks():
                driver.check_alive()
                assert time.monotonic() < start_deadline, (
                    f"the pinned task never started\n{driver.log_tail()}\n{describe(cluster.status())}"
                )
                time.sleep(0.05)

        deps = function_app._service().deps
        hooked = StartsWorkAfterReading(deps.ray_reader, start_pinned_task)
        result = reconcile(NAME, replace(deps, ray_reader=hooked))

        assert result.outcome == "reconciled", result
        assert hooked.observed is not None
        # The tick decided on Ray's word that the node was idle past its timeout...
        assert result.plan is not None
        assert [t.instance_id for t in result.plan.terminations] == [worker["instance_id"]], result.plan
        # ...and Ray, seeing the task, refused the drain: the node stays.
        view = cluster.status()
        assert events(view, "drain-refused", worker["instance_id"]), view["events"]
        assert [n["instance_id"] for n in running(view)] == [worker["instance_id"]]
        assert worker["instance_id"] in {i.instance_id for i in cluster.provider.list_instances(NAME)}
        driver.finish()  # the pinned task completed on its node


def test_destroy_leaves_no_process_no_live_row_and_no_queue_backlog(cluster: ClusterUnderTest):
    import function_app

    with cluster.driver("tasks", "--count", "1") as driver:
        cluster.wait_for(
            lambda v: len(running(v)) == 1 and driver.started_tasks(),
            what="a cpu worker running a task",
            timeout_s=SCALE_UP_TIMEOUT_S,
            also_check=driver.check_alive,
        )
        assert cluster.processes()
        cluster.delete()  # while a task runs and its driver is connected
        view = cluster.wait_for(lambda v: v["status"] == "deleted", what="deletion", timeout_s=60.0)
        driver.kill()  # its cluster is gone: its task can never finish

    assert cluster.processes() == []
    assert {n["status"] for n in view["nodes"]} <= FINAL_STATUSES, view["nodes"]
    stored = function_app._service().store.list_instances(NAME)
    assert stored
    assert all(record.status.is_final for record in stored), stored
    # Follow-ups of the last ticks may still be on their way; each finds the cluster deleted and starts no other.
    cluster.wait_for_empty_queue(timeout_s=20.0)
