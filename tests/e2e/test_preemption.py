"""A spot eviction with notice, end to end: notice -> drain -> replacement launched -> old node gone, and the task that
ran on the evicted node completes elsewhere without its driver seeing an error.

The local provider's `evict(notice_s=N)` serves the worker a `Preempt` Scheduled Event (provisioning/local_events.py)
that the same preempt watch Azure VMs run (provisioning/head/preempt_watch.py) reads: it asks the head agent to drain
the node for preemption, the agent drains it in Ray with the eviction time as deadline, reports `preempt_deadline` in
`/v1/state` and wakes the control plane naming the instance, which launches the replacement at once. The task keeps
the node busy, so the watch acknowledges the event near the deadline and the node is evicted then; Ray retries the
task (retries allowed, as Ray's defaults do) on the replacement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
import requests

from tests.e2e.support import EVERY_5_S, ClusterUnderTest, View, cluster_under_test, describe, workers

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NAME = "e2e-preempt"
CONFIG = f"""
cluster_name: {NAME}
max_workers: 2
provider: {{type: local, launch_delay_s: 0}}
auth: {{ssh_user: ray}}
available_node_types:
  head: {{resources: {{CPU: 0}}, min_workers: 0, max_workers: 0, node_config: {{}}}}
  cpu: {{resources: {{CPU: 1}}, min_workers: 1, max_workers: 2, node_config: {{}}}}
head_node_type: head
"""
NOTICE_S = 20.0  # Azure gives at least 30 s; the watch acknowledges 5 s before NotBefore (its default margin)
WORKER_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUnderTest]:
    with cluster_under_test(tmp_path_factory.mktemp(NAME), CONFIG, name=NAME, schedule=EVERY_5_S) as cluster:
        yield cluster


def running_workers(view: View) -> list[View]:
    return workers(view, "cpu", statuses=("ray_running",))


def agent_node(cluster: ClusterUnderTest, instance_id: str) -> dict[str, object] | None:
    """The instance's node as the head agent's /v1/state shows it (None when Ray lists no live node of it)."""
    response = requests.get(
        f"{cluster.head_agent_url()}/v1/state",
        headers={"Authorization": f"Bearer {cluster.cluster_token()}"},
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    nodes = [n for n in response.json()["nodes"] if n["instance_id"] == instance_id and n["status"] != "dead"]
    return nodes[0] if nodes else None


def listed(cluster: ClusterUnderTest, instance_id: str) -> bool:
    return instance_id in {instance.instance_id for instance in cluster.provider.list_instances(NAME)}


def wait_until(condition: Callable[[], object], what: str, timeout_s: float, cluster: ClusterUnderTest) -> float:
    """Poll `condition()` until truthy; the monotonic time it held. Fails with the cluster's status."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{describe(cluster.status())}")
        time.sleep(0.25)


def instance_log(cluster: ClusterUnderTest, instance_id: str) -> str:
    path = cluster.provider_dir.resolve() / "clusters" / NAME / "logs" / f"{instance_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_evicted_worker_is_drained_replaced_and_its_task_retried_without_error(cluster: ClusterUnderTest) -> None:
    view = cluster.wait_for(lambda v: len(running_workers(v)) == 1, what="the min worker", timeout_s=WORKER_TIMEOUT_S)
    [old] = running_workers(view)
    head_id = next(node["instance_id"] for node in view["nodes"] if node["is_head"])

    with cluster.driver("tasks", "--count", "1", "--cpus", "1") as driver:
        wait_until(driver.started_tasks, "the task to start on the worker", 60.0, cluster)
        [first_start] = driver.started_tasks()
        assert first_start.read_text() == old["ray_node_id"]

        noticed_at = time.monotonic()
        notice = cluster.provider.evict(NAME, old["instance_id"], notice_s=NOTICE_S)
        assert notice is not None

        # Drain: Ray drains the node with the eviction time as deadline, and the agent reports it.
        def drained_for_preemption() -> bool:
            node = agent_node(cluster, old["instance_id"])
            return node is not None and bool(node.get("preempt_deadline")) and node["status"] == "draining"

        drained_at = wait_until(drained_for_preemption, "the drain for preemption", 10.0, cluster)
        node = agent_node(cluster, old["instance_id"])
        assert node is not None
        deadline_gap_s = abs(datetime.fromisoformat(str(node["preempt_deadline"])) - notice.not_before).total_seconds()
        assert deadline_gap_s < 0.002, (node["preempt_deadline"], notice.not_before)  # NotBefore is whole seconds
        assert listed(cluster, old["instance_id"])

        # Replacement: launched while the old node is still there (its task still runs).
        def replacement() -> list[View]:
            return [w for w in workers(cluster.status(), "cpu") if w["instance_id"] != old["instance_id"]]

        replaced_at = wait_until(replacement, "a replacement worker to be launched", NOTICE_S + 30.0, cluster)
        old_listed_when_replaced = listed(cluster, old["instance_id"])
        retried_before_replaced = len(driver.started_tasks()) > 1
        preempted_events = [
            e for e in cluster.status()["events"] if e["kind"] == "preempted" and old["instance_id"] in e["message"]
        ]

        # Old node gone: the watch acknowledged near the deadline (the task kept it busy) and the node was evicted.
        gone_at = wait_until(lambda: not listed(cluster, old["instance_id"]), "the old node to go", NOTICE_S, cluster)
        assert gone_at - noticed_at < NOTICE_S + 2.0
        cluster.wait_for(
            lambda v: any(n["instance_id"] == old["instance_id"] and n["status"] == "terminated" for n in v["nodes"]),
            what="the old instance terminated",
            timeout_s=30.0,
        )

        # The task is retried on the replacement and completes: the driver sees no error (exit code 0).
        wait_until(lambda: len(driver.started_tasks()) == 2, "the task's retry", 60.0, cluster)
        retry = next(p for p in driver.started_tasks() if p.name != first_start.name)
        [new] = replacement()
        assert retry.read_text() == new["ray_node_id"]
        driver.finish()

    # The order the issue asks for: notice -> drain -> replacement launched -> old node gone.
    assert old_listed_when_replaced, "the old node went before its replacement was launched"
    assert not retried_before_replaced, "the task was retried before the replacement was launched"
    assert noticed_at < drained_at < replaced_at < gone_at
    # "At once": the wake-up's inline tick launches it, not the next timer tick or the node's death.
    assert replaced_at - drained_at < 10.0, (drained_at, replaced_at)
    assert preempted_events, "the control plane recorded no preemption notice for the old node"
    view = cluster.status()
    assert any(n["instance_id"] == new["instance_id"] for n in running_workers(view)), describe(view)
    # The watch told the agent, the agent woke the control plane naming the instance, the watch acknowledged.
    old_log = instance_log(cluster, old["instance_id"])
    assert "(the deadline is near)" in old_log  # its task kept it busy: acknowledged only then
    assert "evicted (event acknowledged)" in old_log
    head_log = instance_log(cluster, head_id)
    assert "nodes preempted" in head_log, head_log[-3000:]
    assert f"({old['instance_id']})" in head_log, head_log[-3000:]
