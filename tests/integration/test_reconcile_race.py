"""Two reconcile ticks racing on one cluster, on the real Table store (Azurite): one wins, the other ends on an ETag
conflict, and nothing is lost or doubled."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from autoscaler.config import parse_cluster_config
from autoscaler.model import ClusterRecord, ClusterStatus
from autoscaler.reconcile import ReconcileDeps, TickResult, reconcile
from autoscaler.state import TableStateStore
from tests.support.azurite import Azurite
from tests.support.fakes import FakeCloudProvider, FakeRayReader

pytestmark = pytest.mark.azurite

CONFIG = """
cluster_name: race
provider: {type: local}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
  cpu: {resources: {CPU: 2}, min_workers: 2, max_workers: 3, node_config: {}}
head_node_type: head
"""


def test_two_ticks_that_read_the_same_state_one_wins_and_one_head_is_launched(azurite: Azurite):
    store = TableStateStore.from_connection_string(azurite.connection_string, f"race{uuid.uuid4().hex[:8]}")
    config = parse_cluster_config(CONFIG).config
    now = datetime(2026, 11, 28, tzinfo=UTC)
    store.insert_cluster(
        ClusterRecord(
            name="race",
            status=ClusterStatus.CREATING,
            config_json=config.to_json(),
            config_hash=config.config_hash(),
            generation=1,
            created_at=now,
            updated_at=now,
        )
    )
    # Both ticks have read the state (step 1) before either observes the cloud, so both decide to launch a head.
    both_have_read = threading.Barrier(2)

    def hold_until_both_have_read() -> None:
        both_have_read.wait(timeout=20)

    cloud = FakeCloudProvider(before_list=hold_until_both_have_read)
    deps = ReconcileDeps(
        store=store,
        provider_for=lambda _: cloud,
        ray_reader=FakeRayReader(),
        token_for=lambda name, generation: "token",
        clock=lambda: now,
    )
    outcomes: list[TickResult] = []
    threads = [threading.Thread(target=lambda: outcomes.append(reconcile("race", deps))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(r.outcome for r in outcomes) == ["conflict", "reconciled"]
    heads = [r for r in store.list_instances("race") if r.is_head]
    assert len(heads) == 1, heads
    assert sum(1 for call in cloud.calls if call.startswith("launch")) == 1
    # Nothing was lost: the winner's decision and its event are stored.
    assert any(e.kind == "launch" for e in store.list_events("race"))
