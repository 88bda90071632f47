"""An upgrade changes nothing: Table rows written by the previous release (tests/data/upgrade, real rows from
Azurite) are ticked by this release's reconcile on the real Table store, and no node counts as outdated.

The cloud still holds every live instance and Ray reports each one, idle (an idle outdated node is the one that
would be drained and replaced), so the only thing that could make a tick act is how this release judges the config
hashes the previous one stored (unversioned sha256 digests). Another test plays a later release that adds config
fields with defaults (what made every node outdated with the unversioned hash), and another posts the same config
again after the upgrade (the same cluster, not a 409).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import EdmType, EntityProperty, TableServiceClient

from autoscaler.config import LEGACY_HASH_VERSION, ClusterConfig, hash_version
from autoscaler.model import CloudInstance, CloudState, ClusterStatus, InstanceRecord, InstanceStatus
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import ReconcileDeps, TickResult, reconcile
from autoscaler.service import Service
from autoscaler.state import TableStateStore
from provisioning.azure.plugin import AzureProviderConfig
from tests.support.azurite import Azurite
from tests.support.fakes import FakeCloudProvider, FakeRayReader

pytestmark = pytest.mark.azurite

ROWS = Path(__file__).resolve().parents[1] / "data" / "upgrade" / "previous-release-rows.json"
TICKS = 6
CPUS = {"ray.head.default": 2.0, "ray.worker.cpu": 4.0, "ray.worker.gpu": 6.0}


@dataclass
class Upgraded:
    store: TableStateStore
    cloud: FakeCloudProvider
    ray: FakeRayReader
    cluster_name: str
    now: datetime
    before: dict[str, InstanceRecord]
    started_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.started_at = self.now

    def deps(self) -> ReconcileDeps:
        return ReconcileDeps(
            store=self.store,
            provider_for=lambda config: self.cloud,
            ray_reader=self.ray,
            token_for=lambda name, generation: f"token-{name}-{generation}",
            clock=lambda: self.now,
        )

    def tick(self) -> TickResult:
        self.now += timedelta(seconds=5)
        return reconcile(self.cluster_name, self.deps())


def load_rows() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ROWS.read_text())
    return document


def untyped(prop: dict[str, Any]) -> object:
    """A property of the fixture as the Table SDK writes it, with the type the previous release's row had."""
    kind, value = prop["type"], prop["value"]
    if kind == EdmType.DATETIME.value:
        return datetime.fromisoformat(value)
    if kind == EdmType.INT64.value:
        return EntityProperty(value, EdmType.INT64)
    if kind in (EdmType.STRING.value, EdmType.INT32.value, EdmType.BOOLEAN.value, EdmType.DOUBLE.value):
        return value
    raise AssertionError(f"the fixture holds a property of type {kind}, which this test does not write")


@pytest.fixture
def upgraded(azurite: Azurite) -> Iterator[Upgraded]:
    """The previous release's rows in fresh tables, with a cloud and a Ray that hold what those rows describe."""
    document = load_rows()
    prefix = f"upg{uuid.uuid4().hex[:8]}"
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    for table, rows in document["tables"].items():
        client = service.create_table(f"{prefix}{table}")
        for row in rows:
            client.create_entity({name: untyped(prop) for name, prop in row.items()})
    store = TableStateStore.from_connection_string(azurite.connection_string, prefix)
    name = document["cluster_name"]
    cluster = store.get_cluster(name)
    assert cluster is not None

    cloud, ray = FakeCloudProvider(), FakeRayReader()
    records = {r.instance_id: r for r in store.list_instances(name)}
    for record in records.values():
        assert record.status == InstanceStatus.RAY_RUNNING, record
        cloud.instances[(name, record.instance_id)] = CloudInstance(
            instance_id=record.instance_id,
            cluster_name=name,
            node_type=record.node_type,
            request_id=record.request_id,
            state=CloudState.RUNNING,
            cloud_instance_id=record.cloud_instance_id,
            is_head=record.is_head,
            ray_address=cluster.head.ray_address if record.is_head else "",
            dashboard_url=cluster.head.dashboard_url if record.is_head else "",
            agent_url=cluster.head.agent_url if record.is_head else "",
        )
        # Idle, but not for long enough to be scaled down: only an outdated hash would remove it.
        ray.register(
            record.instance_id, record.node_type, idle_s=30.0, cpus=CPUS[record.node_type], head=record.is_head
        )
    yield Upgraded(store, cloud, ray, name, cluster.updated_at + timedelta(seconds=30), records)
    for table in document["tables"]:
        service.delete_table(f"{prefix}{table}")


def assert_upgrade_changes_nothing(upgraded: Upgraded) -> None:
    results = [upgraded.tick() for _ in range(TICKS)]

    assert [r.outcome for r in results] == ["reconciled"] * TICKS, [(r.outcome, r.detail) for r in results]
    reasons = [reason for r in results if r.plan is not None for reason in r.plan.reasons()]
    assert not [reason for reason in reasons if "outdated" in reason], reasons
    assert not [r.actions for r in results if r.actions], "a tick acted on a cluster that needs nothing"
    assert not [call for call in upgraded.cloud.calls if not call.startswith("list ")], upgraded.cloud.calls
    assert upgraded.ray.drains == []
    after = {r.instance_id: r for r in upgraded.store.list_instances(upgraded.cluster_name)}
    assert sorted(after) == sorted(upgraded.before)
    assert all(r.status == InstanceStatus.RAY_RUNNING for r in after.values()), after
    cluster = upgraded.store.get_cluster(upgraded.cluster_name)
    assert cluster is not None
    assert cluster.status == ClusterStatus.RUNNING
    events = upgraded.store.list_events(upgraded.cluster_name, limit=200)
    new_events = [f"{e.kind}: {e.message}" for e in events if e.at > upgraded.started_at]
    assert new_events == [], "nothing happened, so nothing is recorded"


def test_rows_of_the_previous_release_are_ticked_without_replacing_any_node(upgraded: Upgraded):
    assert {r.node_type for r in upgraded.before.values()} == set(CPUS), "the fixture has a head and two worker types"
    assert {hash_version(r.config_hash) for r in upgraded.before.values()} == {LEGACY_HASH_VERSION}
    assert_upgrade_changes_nothing(upgraded)


class ProviderConfigOfALaterRelease(AzureProviderConfig):
    spot_restore: bool = False  # a field a later release adds, with its default


class ClusterConfigOfALaterRelease(ClusterConfig):
    provider: ProviderConfigOfALaterRelease
    preemption_notice_s: float = 30.0  # another one, at the top level


def test_a_later_release_that_adds_defaulted_fields_still_replaces_no_node(
    upgraded: Upgraded, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("autoscaler.reconcile.ClusterConfig", ClusterConfigOfALaterRelease)
    stored = upgraded.store.get_cluster(upgraded.cluster_name)
    assert stored is not None
    later = ClusterConfigOfALaterRelease.from_json(stored.config_json)
    assert isinstance(later.provider, ProviderConfigOfALaterRelease)
    assert "preemption_notice_s" in later.to_json()  # the later release's dump differs from the stored one
    assert_upgrade_changes_nothing(upgraded)


def test_the_same_config_posted_again_after_the_upgrade_is_the_same_cluster(upgraded: Upgraded):
    stored = upgraded.store.get_cluster(upgraded.cluster_name)
    assert stored is not None
    assert hash_version(stored.config_hash) == LEGACY_HASH_VERSION
    # What was posted: the stored config without the key pair the previous release generated for it.
    posted = json.loads(stored.config_json)
    posted["auth"]["ssh_public_key"] = None
    service = Service(deps=upgraded.deps(), queue=InMemoryReconcileQueue(), allow_local_provider=False)

    answer = service.create_cluster(json.dumps(posted).encode(), "application/json")

    assert (answer.name, answer.created) == (upgraded.cluster_name, False)
    assert answer.ssh_private_key is None
