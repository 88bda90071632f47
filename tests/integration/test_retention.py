"""Retention through the service's timer fan-out and poison path, on the in-memory store and on Table Storage (Azurite):
events pruned by age and count, a deleted cluster's rows removed after the retention period, poison events capped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autoscaler.config import ClusterConfig
from autoscaler.model import ClusterStatus, Event
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import ClusterNotFound, Retention, Service
from autoscaler.state import InMemoryStateStore, StateStore, TableStateStore
from autoscaler.views import ReconcileMessage
from provisioning.cloud import CloudProvider
from tests.support.azurite import Azurite
from tests.support.fakes import FakeCloudProvider, FakeRayReader

T0 = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
TIMER_PERIOD = timedelta(seconds=15)
CONFIG = """
cluster_name: {name}
provider: {{type: local}}
auth: {{ssh_user: ray}}
available_node_types:
  head: {{resources: {{CPU: 0}}, max_workers: 0, node_config: {{}}}}
head_node_type: head
"""


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.azurite)])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield InMemoryStateStore()
        return
    azurite: Azurite = request.getfixturevalue("azurite")
    table_store = TableStateStore.from_connection_string(azurite.connection_string, f"ret{uuid.uuid4().hex[:10]}")
    try:
        yield table_store
    finally:
        for name in table_store.table_names:
            table_store.table_service.delete_table(name)
        table_store.close()


@dataclass
class CountingStore:
    """Counts the retention calls of the store it wraps (everything else passes through)."""

    inner: StateStore
    prunes: list[str] = field(default_factory=list)

    def prune_events(self, cluster_name: str, *, older_than: datetime, keep_newest: int) -> int:
        self.prunes.append(cluster_name)
        return self.inner.prune_events(cluster_name, older_than=older_than, keep_newest=keep_newest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class App:
    store: StateStore
    retention: Retention
    now: datetime = T0
    cloud: FakeCloudProvider = field(default_factory=FakeCloudProvider)
    queue: InMemoryReconcileQueue = field(default_factory=InMemoryReconcileQueue)

    def __post_init__(self) -> None:
        def provider_for(config: ClusterConfig) -> CloudProvider:
            return self.cloud

        deps = ReconcileDeps(
            store=self.store,
            provider_for=provider_for,
            ray_reader=FakeRayReader(),
            token_for=lambda name, generation: f"{name}-{generation}",
            clock=lambda: self.now,
        )
        self.service = Service(deps=deps, queue=self.queue, allow_local_provider=True, retention=self.retention)

    def create(self, name: str) -> None:
        assert self.service.create_cluster(CONFIG.format(name=name).encode(), "application/yaml").created
        self.queue.drain()

    def timer(self, after: timedelta = TIMER_PERIOD) -> int:
        self.now += after
        count = self.service.enqueue_active()
        self.queue.drain()
        return count

    def events(self, name: str) -> list[Event]:
        return self.store.list_events(name, limit=1000)


def app_on(store: StateStore, **retention: Any) -> App:
    return App(store, Retention(**retention))


def test_the_timer_prunes_a_clusters_events_to_its_newest(store: StateStore):
    app = app_on(store, events_per_cluster=10)
    app.create("keep")
    for minute in range(30):
        store.append_event(Event("keep", T0 + timedelta(seconds=minute), "launch", f"event {minute}"))
    app.timer()
    events = app.events("keep")
    assert len(events) == 10
    assert events[0].message == "event 29"


def test_the_timer_prunes_events_older_than_the_maximum_age(store: StateStore):
    app = app_on(store, event_max_age=timedelta(days=7))
    app.create("aged")
    store.append_event(Event("aged", T0 - timedelta(days=8), "launch", "too old"))
    store.append_event(Event("aged", T0 - timedelta(days=6), "launch", "young enough"))
    app.timer()
    messages = [event.message for event in app.events("aged")]
    assert "too old" not in messages
    assert "young enough" in messages


def test_a_cluster_is_pruned_at_most_once_per_interval(store: StateStore):
    counting = CountingStore(store)
    app = App(counting, Retention(prune_interval=timedelta(hours=1)))
    app.create("once")
    for _ in range(10):
        app.timer()
    assert counting.prunes == ["once"]
    app.timer(after=timedelta(hours=1))
    assert counting.prunes == ["once", "once"]


def test_a_timer_run_prunes_a_bounded_number_of_clusters_least_recently_pruned_first(store: StateStore):
    counting = CountingStore(store)
    app = App(counting, Retention(clusters_per_timer_run=2))
    names = [f"c{index}" for index in range(5)]
    for name in names:
        app.create(name)
    app.timer()
    app.timer()
    app.timer()
    assert counting.prunes[:2] == names[:2]
    assert sorted(counting.prunes) == names  # two, two, then the last one
    assert len(counting.prunes) == 5


def test_a_deleted_clusters_rows_go_after_the_retention_period_and_it_leaves_the_api(store: StateStore):
    app = app_on(store, deleted_cluster_rows=timedelta(hours=24))
    app.create("gone")
    app.service.tick(ReconcileMessage(cluster_name="gone", reason="create"))  # launches the head
    app.service.destroy_cluster("gone")
    for _ in range(3):
        app.now += timedelta(seconds=15)
        app.service.tick(ReconcileMessage(cluster_name="gone", reason="destroy"))
    assert app.service.get_cluster("gone").status == ClusterStatus.DELETED
    app.timer(after=timedelta(hours=23))
    assert app.service.get_cluster("gone").nodes, "still shown within the retention period"

    app.timer(after=timedelta(hours=1, seconds=15))

    with pytest.raises(ClusterNotFound):
        app.service.get_cluster("gone")
    assert "gone" not in [cluster.name for cluster in app.service.list_clusters().clusters]
    assert store.list_instances("gone") == []
    assert store.read_instances("gone").fence_etag == ""
    assert app.events("gone") == []
    tombstone = store.get_cluster("gone")
    assert tombstone is not None
    assert (tombstone.generation, tombstone.config_json, tombstone.purged_at is not None) == (1, "", True)


def test_a_name_reused_after_its_rows_were_removed_gets_the_next_generation(store: StateStore):
    app = app_on(store, deleted_cluster_rows=timedelta(hours=1))
    app.create("again")
    app.service.destroy_cluster("again")  # nothing was launched: deleted at once
    app.timer(after=timedelta(hours=2))
    app.create("again")
    record = store.get_cluster("again")
    assert record is not None
    assert (record.generation, record.status, record.purged_at) == (2, ClusterStatus.CREATING, None)
    assert app.service.get_cluster("again").status == ClusterStatus.CREATING


def test_a_cluster_deleted_within_the_retention_period_keeps_its_rows(store: StateStore):
    app = app_on(store, deleted_cluster_rows=timedelta(hours=24))
    app.create("recent")
    app.service.destroy_cluster("recent")
    app.timer(after=timedelta(hours=1))
    assert app.service.get_cluster("recent").status == ClusterStatus.DELETED
    assert any(
        event.message == "cluster deleted without calling the cloud: nothing was ever created there"
        for event in app.events("recent")
    )


def test_poisoned_messages_of_a_cluster_make_one_event_per_window(store: StateStore):
    app = app_on(store, poison_event_window=timedelta(hours=1))
    app.create("storm")
    for _ in range(20):
        app.service.record_poison('{"cluster_name": "storm", "reason": "not-a-reason"}')
        app.now += timedelta(seconds=5)
    poison = [event for event in app.events("storm") if event.kind == "poison"]
    assert len(poison) == 1
    assert "not-a-reason" in poison[0].message
    app.now += timedelta(hours=1)
    app.service.record_poison('{"cluster_name": "storm"}')
    assert sum(1 for event in app.events("storm") if event.kind == "poison") == 2


def test_a_poisoned_message_without_a_known_cluster_is_only_logged(store: StateStore):
    app = app_on(store)
    app.service.record_poison("not json at all")
    app.service.record_poison('{"cluster_name": "nobody"}')
    assert store.list_clusters() == []
    assert app.events("nobody") == []
