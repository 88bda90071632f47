"""Autostop on fakes: a running cluster idle for `autostop.idle_minutes` (no pending demand, no busy node, no running
Ray job) has every instance removed, head included, and is `stopped`; `start` brings its head back; `down: true`
deletes it instead. The config field changes no hash of configs without it; the agent's `jobs_running` is lenient."""

from __future__ import annotations

from datetime import timedelta

import pytest

from autoscaler.agent_contract import parse_jobs_running, parse_state
from autoscaler.config import ClusterConfig, ConfigError, parse_cluster_config
from autoscaler.model import ClusterStatus, InstanceStatus, RayState, ShapeDemand
from autoscaler.service import Conflict
from autoscaler.views import ReconcileMessage
from tests.support.fakes import FakeCloudProvider
from tests.unit.test_service import App

CONFIG = """
cluster_name: idle
max_workers: 2
autostop: {idle_minutes: 10}
provider: {type: local}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
  cpu: {resources: {CPU: 1}, min_workers: 1, max_workers: 2, node_config: {}}
head_node_type: head
"""


def tick(app: App) -> None:
    app.service.tick(ReconcileMessage(cluster_name="idle"))


def status(app: App) -> ClusterStatus:
    record = app.store.get_cluster("idle")
    assert record is not None
    return record.status


def bring_up(app: App, config: str = CONFIG) -> None:
    """Create (or start) the cluster and tick until the head and min_workers run Ray, every node idle, no job."""
    if app.store.get_cluster("idle") is None:
        app.service.create_cluster(config.encode(), "application/yaml")
    app.ray.state = RayState()
    app.ray.set_jobs_running(0)
    for _ in range(6):
        tick(app)
        for record in app.store.list_instances("idle"):
            if record.status.is_live:
                app.ray.register(record.instance_id, record.node_type, idle_s=60.0, head=record.is_head)
    assert status(app) == ClusterStatus.RUNNING
    assert [r.status for r in app.store.list_instances("idle") if r.status.is_live] == [InstanceStatus.RAY_RUNNING] * 2


def live(app: App) -> list[str]:
    return [r.instance_id for r in app.store.list_instances("idle") if r.status.is_live]


def test_idle_for_idle_minutes_stops_every_instance_head_included():
    cloud = FakeCloudProvider()
    app = App(provider_for=cloud)
    bring_up(app)
    record = app.store.get_cluster("idle")
    assert record is not None and record.idle_since is not None  # noqa: PT018
    app.now += timedelta(minutes=9)
    tick(app)
    assert status(app) == ClusterStatus.RUNNING
    app.now += timedelta(minutes=2)
    tick(app)
    assert status(app) in (ClusterStatus.STOPPING, ClusterStatus.STOPPED)
    tick(app)
    assert status(app) == ClusterStatus.STOPPED
    assert live(app) == []
    assert not [key for key in cloud.instances if key[0] == "idle"]
    assert cloud.destroyed == []  # the network stays
    messages = [e.message for e in app.store.list_events("idle", limit=100)]
    assert any(m.startswith("autostop: idle since") and "stopping every instance" in m for m in messages)
    assert any(m.startswith("cluster stopped") for m in messages)
    view = app.service.get_cluster("idle")
    assert view.head.ray_address == ""
    assert "autostop" in view.status_reason
    app.queue.drain()
    assert app.service.enqueue_active() == 0  # a stopped cluster is not reconciled


@pytest.mark.parametrize(
    "busy",
    ["job", "pending", "busy-node", "jobs-unknown"],
)
def test_a_running_job_pending_demand_or_a_busy_node_keeps_the_cluster(busy: str):
    app = App()
    bring_up(app)
    if busy == "job":
        app.ray.set_jobs_running(1)
    elif busy == "pending":
        app.ray.state = RayState(nodes=app.ray.state.nodes, pending=(ShapeDemand((("GPU", 1.0),), 1),), jobs_running=0)
    elif busy == "busy-node":
        worker = next(r for r in app.store.list_instances("idle") if not r.is_head)
        app.ray.register(worker.instance_id, worker.node_type, idle_s=0.0)
    else:
        app.ray.set_jobs_running(None)
    for _ in range(4):
        app.now += timedelta(minutes=10)
        tick(app)
    assert status(app) == ClusterStatus.RUNNING
    record = app.store.get_cluster("idle")
    assert record is not None
    assert record.idle_since is None


def test_the_idle_period_starts_over_when_work_arrives():
    app = App()
    bring_up(app)
    app.now += timedelta(minutes=8)
    app.ray.set_jobs_running(1)
    tick(app)
    app.ray.set_jobs_running(0)
    tick(app)
    app.now += timedelta(minutes=8)
    tick(app)
    assert status(app) == ClusterStatus.RUNNING


def test_start_brings_the_head_back_and_then_min_workers():
    app = App()
    bring_up(app)
    app.now += timedelta(minutes=11)
    tick(app)
    tick(app)
    assert status(app) == ClusterStatus.STOPPED
    stopped_nodes = set(live(app))
    app.queue.drain()
    answer = app.service.start_cluster("idle")
    assert answer.status == ClusterStatus.CREATING
    assert [m.reason for m in app.queue.drain()] == ["create"]
    bring_up(app)
    assert set(live(app)).isdisjoint(stopped_nodes)
    assert app.service.get_cluster("idle").head.ray_address
    assert app.service.start_cluster("idle").detail.startswith("nothing to do")


def test_start_refuses_a_cluster_still_stopping_or_deleted():
    app = App()
    bring_up(app)
    app.now += timedelta(minutes=11)
    app.ray.reachable = True
    tick(app)  # stopping: terminations issued
    if status(app) == ClusterStatus.STOPPING:
        with pytest.raises(Conflict):
            app.service.start_cluster("idle")
    tick(app)
    app.service.destroy_cluster("idle")
    with pytest.raises(Conflict):
        app.service.start_cluster("idle")


def test_down_true_deletes_the_cluster_instead():
    cloud = FakeCloudProvider()
    app = App(provider_for=cloud)
    bring_up(app, CONFIG.replace("{idle_minutes: 10}", "{idle_minutes: 10, down: true}"))
    app.now += timedelta(minutes=11)
    tick(app)
    tick(app)
    assert status(app) == ClusterStatus.DELETED
    assert cloud.destroyed == ["idle"]
    assert any("down: true" in e.message for e in app.store.list_events("idle", limit=100))


def test_a_cluster_without_autostop_never_stops():
    app = App()
    bring_up(app, CONFIG.replace("autostop: {idle_minutes: 10}\n", ""))
    for _ in range(5):
        app.now += timedelta(hours=1)
        tick(app)
    assert status(app) == ClusterStatus.RUNNING


# -- the config field and the agent's field ----------------------------------------------------------------------------


def test_autostop_is_strict_at_the_api_lenient_in_storage_and_hashes_only_when_set():
    without = parse_cluster_config(CONFIG.replace("autostop: {idle_minutes: 10}\n", "")).config
    assert without.autostop is None
    assert "autostop" not in without.model_dump(exclude_defaults=True)
    with_it = parse_cluster_config(CONFIG).config
    assert with_it.autostop is not None
    assert (with_it.autostop.idle_minutes, with_it.autostop.down) == (10, False)
    assert with_it.config_hash() != without.config_hash()
    # Autostop shapes no VM: no node is replaced when it is set or changed.
    assert with_it.worker_node_hashes() == without.worker_node_hashes()
    assert with_it.node_hash("head", is_head=True) == without.node_hash("head", is_head=True)
    with pytest.raises(ConfigError) as refused:
        parse_cluster_config(CONFIG.replace("{idle_minutes: 10}", "{idle_minutes: 0, dwon: true}"))
    assert {e.path for e in refused.value.errors} == {"autostop.idle_minutes", "autostop.dwon"}
    stored = with_it.to_json().replace('"down":false', '"down":false,"later_field":1')
    assert ClusterConfig.from_json(stored).autostop == with_it.autostop


@pytest.mark.parametrize(
    ("value", "parsed"), [(3, 3), (0, 0), (None, None), (-1, None), ("2", None), (True, None), (2.5, None)]
)
def test_the_agents_jobs_running_is_read_leniently(value: object, parsed: int | None):
    payload = {"nodes": [], "jobs_running": value}
    assert parse_jobs_running(payload) == parsed
    assert parse_state(payload).jobs_running == parsed
    assert parse_state({"nodes": []}).jobs_running is None


def test_the_idle_period_is_kept_in_table_storage_entities():
    from autoscaler.state import EntityStateStore, InMemoryEntityTables

    app = App(store=EntityStateStore(InMemoryEntityTables()))
    bring_up(app)
    record = app.store.get_cluster("idle")
    assert record is not None
    assert record.idle_since == app.now
    app.now += timedelta(minutes=11)
    tick(app)
    tick(app)
    assert status(app) == ClusterStatus.STOPPED
