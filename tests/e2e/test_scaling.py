"""Scaling a real Ray cluster through the control plane, on the timer, wake-ups and follow-ups as in Azure.

One cluster serves the whole module: a head without CPUs, a `cpu` type (1 CPU per node) that scales with demand,
and a `standby` type (a custom resource only, so no task lands on it) that min_workers keeps at one node. Each test
starts from the baseline: no live `cpu` worker, the standby node running Ray.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.support import (
    EVERY_5_S,
    ClusterUnderTest,
    View,
    cluster_under_test,
    events,
    instance_ids,
    pause_process,
    workers,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NAME = "e2e-scaling"
IDLE_TIMEOUT_S = 5
CONFIG = f"""
cluster_name: {NAME}
max_workers: 5
idle_timeout_minutes: 1
provider: {{type: local, launch_delay_s: 0}}
auth: {{ssh_user: ray}}
available_node_types:
  head: {{resources: {{CPU: 0}}, min_workers: 0, max_workers: 0, node_config: {{}}}}
  cpu: {{resources: {{CPU: 1}}, min_workers: 0, max_workers: 3, idle_timeout_s: {IDLE_TIMEOUT_S}, node_config: {{}}}}
  standby: {{resources: {{standby: 1}}, min_workers: 1, max_workers: 1, idle_timeout_s: {IDLE_TIMEOUT_S},
             node_config: {{}}}}
head_node_type: head
"""
SCALE_UP_TIMEOUT_S = 60.0
SCALE_DOWN_TIMEOUT_S = 60.0
TIMER_PERIOD_S = 5.0


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUnderTest]:
    with cluster_under_test(tmp_path_factory.mktemp("e2e-scaling"), CONFIG, name=NAME, schedule=EVERY_5_S) as cluster:
        yield cluster


def at_baseline(view: View) -> bool:
    return not workers(view, "cpu") and [n["status"] for n in workers(view, "standby")] == ["ray_running"]


@pytest.fixture
def cluster(module_cluster: ClusterUnderTest) -> ClusterUnderTest:
    """The module's cluster, back at the baseline (what an earlier test launched has been scaled down)."""
    module_cluster.wait_for(at_baseline, what="the baseline (no cpu worker, one standby)", timeout_s=90.0)
    return module_cluster


def running(view: View, node_type: str) -> list[View]:
    return workers(view, node_type, statuses=("ray_running",))


def test_pending_tasks_scale_up_from_zero_workers(cluster: ClusterUnderTest):
    with cluster.driver("tasks", "--count", "3") as driver:
        view = cluster.wait_for(
            lambda v: len(running(v, "cpu")) == 3 and len(driver.started_tasks()) == 3,
            what="3 cpu workers running the 3 tasks",
            timeout_s=SCALE_UP_TIMEOUT_S,
            also_check=driver.check_alive,
        )
        assert len(workers(view, "cpu")) == 3
        assert not view["infeasible"]
        launches = [e for e in events(view, "launch") if "cpu" in e["message"]]
        assert any("pending" in e["message"] for e in launches), launches
        driver.finish()


def test_evicted_worker_is_replaced_while_demand_remains(cluster: ClusterUnderTest):
    with cluster.driver("tasks", "--count", "2") as driver:
        view = cluster.wait_for(
            lambda v: len(running(v, "cpu")) == 2 and len(driver.started_tasks()) == 2,
            what="2 cpu workers running the 2 tasks",
            timeout_s=SCALE_UP_TIMEOUT_S,
            also_check=driver.check_alive,
        )
        before = instance_ids(running(view, "cpu"))
        evicted = sorted(before)[0]
        cluster.evict(evicted)

        def replaced(v: View) -> bool:
            gone = [n for n in v["nodes"] if n["instance_id"] == evicted and n["status"] == "terminated"]
            return bool(gone) and len(running(v, "cpu")) == 2 and instance_ids(running(v, "cpu")) != before

        view = cluster.wait_for(
            replaced, what="the evicted worker replaced", timeout_s=SCALE_UP_TIMEOUT_S, also_check=driver.check_alive
        )
        assert evicted not in instance_ids(running(view, "cpu"))
        # Ray retried the task that ran on the evicted node, and it started again on the replacement.
        cluster.wait_for(
            lambda _: len(driver.started_tasks()) == 3,
            what="the evicted task to start again",
            timeout_s=30.0,
            also_check=driver.check_alive,
        )
        driver.finish()


def test_min_workers_is_restored_after_eviction(cluster: ClusterUnderTest):
    [standby] = running(cluster.status(), "standby")
    cluster.evict(standby["instance_id"])
    view = cluster.wait_for(
        lambda v: len(running(v, "standby")) == 1 and running(v, "standby")[0]["instance_id"] != standby["instance_id"],
        what="a new standby node running Ray",
        timeout_s=SCALE_UP_TIMEOUT_S,
    )
    [old] = [n for n in view["nodes"] if n["instance_id"] == standby["instance_id"]]
    assert old["status"] == "terminated"
    assert any("min_workers" in e["message"] for e in events(view, "launch")), view["events"]


def test_strict_spread_placement_group_of_three_bundles_launches_three_nodes(cluster: ClusterUnderTest):
    # Half a CPU per bundle: packed, the 3 bundles would fit on 2 nodes of 1 CPU; spread, they need 3.
    with cluster.driver(
        "placement-group", "--bundles", "3", "--bundle-cpus", "0.5", "--strategy", "STRICT_SPREAD"
    ) as driver:
        view = cluster.wait_for(
            lambda v: driver.has_written("ready") and len(running(v, "cpu")) == 3,
            what="the STRICT_SPREAD placement group placed on 3 cpu workers",
            timeout_s=SCALE_UP_TIMEOUT_S,
            also_check=driver.check_alive,
        )
        assert len(workers(view, "cpu")) == 3
        assert any("STRICT_SPREAD" in e["message"] for e in events(view, "launch")), view["events"]


def test_request_resources_scales_up_with_no_task_pending(cluster: ClusterUnderTest):
    with cluster.driver("request-resources", "--cpus", "2") as driver:
        view = cluster.wait_for(
            lambda v: len(running(v, "cpu")) == 2,
            what="2 cpu workers for request_resources(num_cpus=2)",
            timeout_s=SCALE_UP_TIMEOUT_S,
            also_check=driver.check_alive,
        )
        assert driver.has_written("requested")
        assert not view["pending_demand"]
        assert any("request_resources" in e["message"] for e in events(view, "launch")), view["events"]
        # The request, not an accident of timing, holds them: well past their idle timeout they are still there.
        cluster.hold_for(
            lambda v: len(running(v, "cpu")) == 2,
            what="2 cpu workers held by the resource request",
            duration_s=IDLE_TIMEOUT_S + TIMER_PERIOD_S + 2,
            also_check=driver.check_alive,
        )


def test_gpu_demand_without_a_gpu_type_is_infeasible_and_launches_nothing(cluster: ClusterUnderTest):
    before = instance_ids(cluster.status()["nodes"])
    with cluster.driver("tasks", "--count", "1", "--cpus", "0", "--gpus", "1") as driver:
        view = cluster.wait_for(
            lambda v: any("GPU" in str(item) for item in v["infeasible"]),
            what="the GPU demand reported infeasible",
            timeout_s=SCALE_UP_TIMEOUT_S,
            also_check=driver.check_alive,
        )
        assert any("GPU" in reason for reason in view["last_decision"]["reasons"]), view["last_decision"]
        # Two more timer ticks see the same demand: still nothing launched.
        cluster.hold_for(
            lambda v: instance_ids(v["nodes"]) == before,
            what="no launch for the infeasible demand",
            duration_s=2 * TIMER_PERIOD_S,
            also_check=driver.check_alive,
        )
        assert not driver.started_tasks()
        driver.kill()


def test_head_agent_down_causes_no_scale_down(cluster: ClusterUnderTest):
    # The launcher stops the whole head when its agent exits (as a crashed VM would go), so the agent is paused
    # instead: it keeps its port, connections to it time out, and every tick reads "head unreachable".
    with cluster.driver("tasks", "--count", "2") as driver:
        cluster.wait_for(
            lambda v: len(running(v, "cpu")) == 2 and len(driver.started_tasks()) == 2,
            what="2 cpu workers running the 2 tasks",
            timeout_s=SCALE_UP_TIMEOUT_S,
            also_check=driver.check_alive,
        )
        resume_agent = pause_process(cluster.head_agent_pid())
        try:
            driver.finish()
            cluster.hold_for(
                lambda v: len(running(v, "cpu")) == 2,
                what="idle workers kept while the head agent is down",
                duration_s=IDLE_TIMEOUT_S + 2 * TIMER_PERIOD_S,
            )
        finally:
            resume_agent()
    # With the agent back the same idle workers go: they were scale-down candidates all along.
    cluster.wait_for(
        lambda v: not workers(v, "cpu"), what="scale-down once the agent answers", timeout_s=SCALE_DOWN_TIMEOUT_S
    )
