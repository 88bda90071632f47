"""PUT /api/clusters/{name} on fakes: limits apply on the next tick, changed workers are replaced once idle, head
changes are refused (409), unknown clusters 404, invalid configs 400 with field paths."""

from __future__ import annotations

import pytest

from autoscaler.model import ClusterStatus, InstanceStatus
from autoscaler.service import ClusterNotFound, Conflict, InvalidRequest
from autoscaler.views import ReconcileMessage
from tests.unit.test_service import App

CONFIG = """
cluster_name: upd
max_workers: 3
provider: {type: local}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
  cpu: {resources: {CPU: 1}, min_workers: 2, max_workers: 3, node_config: {}}
head_node_type: head
"""


def running(app: App) -> None:
    """Create the cluster and tick until its head and min_workers run Ray."""
    app.service.create_cluster(CONFIG.encode(), "application/yaml")
    for _ in range(6):
        app.service.tick(ReconcileMessage(cluster_name="upd"))
        for record in app.store.list_instances("upd"):
            if record.status.is_live:
                app.ray.register(record.instance_id, record.node_type, idle_s=0.0, head=record.is_head)
    assert app.store.get_cluster("upd").status == ClusterStatus.RUNNING  # type: ignore[union-attr]


def live_workers(app: App) -> list[str]:
    return sorted(
        r.node_type
        for r in app.store.list_instances("upd")
        if not r.is_head and r.status in (InstanceStatus.RAY_RUNNING, InstanceStatus.REQUESTED, InstanceStatus.QUEUED)
    )


def test_the_same_config_changes_nothing():
    app = App()
    running(app)
    before = app.store.get_cluster("upd")
    answer = app.service.update_cluster("upd", CONFIG.encode(), "application/yaml")
    assert answer.detail.startswith("nothing to do")
    assert app.store.get_cluster("upd") == before


def test_lower_limits_apply_on_the_next_tick_without_touching_the_head():
    app = App()
    running(app)
    assert live_workers(app) == ["cpu", "cpu"]
    head_before = next(r for r in app.store.list_instances("upd") if r.is_head)
    lowered = CONFIG.replace("min_workers: 2, max_workers: 3", "min_workers: 0, max_workers: 1").replace(
        "max_workers: 3\nprovider", "max_workers: 1\nprovider"
    )
    answer = app.service.update_cluster("upd", lowered.encode(), "application/yaml")
    assert answer.status == ClusterStatus.RUNNING
    assert "max_workers" in answer.detail
    stored = app.store.get_cluster("upd")
    assert stored is not None
    assert '"max_workers":1' in stored.config_json
    assert any(e.kind == "config" for e in app.store.list_events("upd"))
    for record in app.store.list_instances("upd"):
        if not record.is_head:
            app.ray.register(record.instance_id, record.node_type, idle_s=3600.0)
    app.service.tick(ReconcileMessage(cluster_name="upd"))
    assert len(live_workers(app)) <= 1 or any(
        r.status in (InstanceStatus.DRAINING, InstanceStatus.TERMINATING) for r in app.store.list_instances("upd")
    )
    head_after = next(r for r in app.store.list_instances("upd") if r.is_head)
    assert head_after.instance_id == head_before.instance_id
    assert head_after.status == InstanceStatus.RAY_RUNNING


def test_workers_of_a_changed_node_type_are_replaced_once_idle():
    app = App()
    running(app)
    changed = CONFIG.replace("cpu: {resources: {CPU: 1}", "cpu: {resources: {CPU: 2}")
    answer = app.service.update_cluster("upd", changed.encode(), "application/yaml")
    assert "replaced once idle" in answer.detail
    app.service.tick(ReconcileMessage(cluster_name="upd"))  # busy: kept
    assert all(r.status == InstanceStatus.RAY_RUNNING for r in app.store.list_instances("upd"))
    for record in app.store.list_instances("upd"):
        if not record.is_head:
            app.ray.register(record.instance_id, record.node_type, idle_s=5.0)
    app.service.tick(ReconcileMessage(cluster_name="upd"))
    statuses = [r.status for r in app.store.list_instances("upd") if not r.is_head]
    assert InstanceStatus.DRAINING in statuses or InstanceStatus.TERMINATING in statuses


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("head: {resources: {CPU: 0}", "head: {resources: {CPU: 4}", "available_node_types.head.resources"),
        ("head_node_type: head", "head_node_type: cpu", "head_node_type"),
        ("auth: {ssh_user: ray}", "auth: {ssh_user: rayuser}", "auth"),
    ],
)
def test_a_head_change_is_refused_with_an_explanation(old: str, new: str, field: str):
    app = App()
    running(app)
    before = app.store.get_cluster("upd")
    with pytest.raises(Conflict) as refused:
        app.service.update_cluster("upd", CONFIG.replace(old, new).encode(), "application/yaml")
    assert "head" in refused.value.detail
    assert [e.path for e in refused.value.errors] == [field]
    assert app.store.get_cluster("upd") == before


def test_an_unknown_cluster_is_not_found_and_an_invalid_config_names_its_fields():
    app = App()
    with pytest.raises(ClusterNotFound):
        app.service.update_cluster("upd", CONFIG.encode(), "application/yaml")
    running(app)
    with pytest.raises(InvalidRequest) as invalid:
        app.service.update_cluster("upd", CONFIG.replace("max_workers: 3\n", "max_workers: -1\n").encode(), None)
    assert "max_workers" in [e.path for e in invalid.value.errors]
    with pytest.raises(InvalidRequest) as other:
        app.service.update_cluster("upd", CONFIG.replace("cluster_name: upd", "cluster_name: other").encode(), None)
    assert [e.path for e in other.value.errors] == ["cluster_name"]


def test_a_cluster_being_deleted_is_not_updated():
    app = App()
    running(app)
    app.service.destroy_cluster("upd")
    with pytest.raises(Conflict):
        app.service.update_cluster("upd", CONFIG.replace("max_workers: 3\n", "max_workers: 2\n").encode(), None)
