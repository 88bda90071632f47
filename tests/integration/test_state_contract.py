"""The `StateStore` contract, run against the in-memory store and the Table Storage one on a real Azurite.

Each Table test gets its own random table prefix on the shared Azurite, so tests never see each other's rows.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import pytest
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.data.tables import TableServiceClient

from autoscaler.model import (
    ClusterRecord,
    ClusterStatus,
    Event,
    HeadInfo,
    InstanceRecord,
    InstanceStatus,
    Unavailability,
)
from autoscaler.state import (
    MAX_RECORDS_PER_TRANSACTION,
    ConfigTooLargeError,
    ConflictError,
    InMemoryStateStore,
    InstanceSnapshot,
    StateStore,
    TableKind,
    TableStateStore,
)
from tests.support.azurite import Azurite

T0 = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
NON_ASCII = "Grüße, 日本語, emoji 😀🚀, RTL שלום"


def cluster_record(name: str = "demo", **changes: object) -> ClusterRecord:
    record = ClusterRecord(
        name=name,
        status=ClusterStatus.RUNNING,
        config_json=json.dumps({"cluster_name": name, "max_workers": 4}),
        config_hash="sha256:abc123",
        generation=3,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=90),
        head=HeadInfo(
            instance_id="head-1",
            ray_address="10.0.0.4:6379",
            dashboard_url="http://10.0.0.4:8265",
            agent_url="http://10.0.0.4:8900",
            auth_token_path="/var/lib/autoscaler/demo.token",
        ),
        last_decision='{"launches":[{"node_type":"gpu","count":2}]}',
        last_observation='{"pending":[[{"GPU":1},3]]}',
        unavailable=(
            Unavailability("gpu", T0 + timedelta(hours=1), "SkuNotAvailable in eastus-1"),
            Unavailability("spot", T0 + timedelta(minutes=15), "LowPriorityQuota"),
        ),
        ignored_fields=("setup_commands", "auth.ssh_private_key"),
        status_reason="head agent answered",
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def instance_record(cluster_name: str = "demo", instance_id: str = "i-0001", **changes: object) -> InstanceRecord:
    record = InstanceRecord(
        cluster_name=cluster_name,
        instance_id=instance_id,
        node_type="ray.worker.gpu",
        status=InstanceStatus.REQUESTED,
        request_id="req-42",
        status_since=T0 + timedelta(seconds=5),
        created_at=T0,
        is_head=False,
        cloud_instance_id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        ray_node_id="a" * 56,
        config_hash="sha256:abc123",
        availability_zone="2",
        last_error="ZonalAllocationFailed",
        attempts=2,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


RecordT = TypeVar("RecordT", ClusterRecord, InstanceRecord)


def without_etag(record: RecordT) -> RecordT:
    return dataclasses.replace(record, etag="")


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.azurite)])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield InMemoryStateStore()
        return
    azurite: Azurite = request.getfixturevalue("azurite")
    table_store = TableStateStore.from_connection_string(
        azurite.connection_string, table_prefix=f"t{uuid.uuid4().hex[:12]}"
    )
    try:
        yield table_store
    finally:
        for table_name in table_store.table_names:
            table_store.table_service.delete_table(table_name)
        table_store.close()


# --------------------------------------------------------------------------------------------
# Clusters
# --------------------------------------------------------------------------------------------


def test_inserted_cluster_reads_back_with_every_field(store: StateStore) -> None:
    inserted = store.insert_cluster(cluster_record())

    assert inserted.etag
    assert store.get_cluster("demo") == inserted
    assert without_etag(inserted) == cluster_record()


def test_get_of_a_missing_cluster_is_none(store: StateStore) -> None:
    store.insert_cluster(cluster_record("present"))

    assert store.get_cluster("absent") is None


def test_list_clusters_returns_every_cluster(store: StateStore) -> None:
    inserted = [store.insert_cluster(cluster_record(name)) for name in ("gamma", "alpha", "beta")]

    assert sorted(store.list_clusters(), key=lambda record: record.name) == sorted(
        inserted, key=lambda record: record.name
    )


def test_inserting_an_existing_cluster_conflicts(store: StateStore) -> None:
    store.insert_cluster(cluster_record())

    with pytest.raises(ConflictError):
        store.insert_cluster(cluster_record(status=ClusterStatus.CREATING))
    stored = store.get_cluster("demo")
    assert stored is not None
    assert stored.status == ClusterStatus.RUNNING


def test_update_returns_an_etag_that_the_next_update_accepts(store: StateStore) -> None:
    first = store.insert_cluster(cluster_record(status=ClusterStatus.CREATING))

    second = store.update_cluster(dataclasses.replace(first, status=ClusterStatus.RUNNING))
    third = store.update_cluster(dataclasses.replace(second, status=ClusterStatus.DELETING))

    assert len({first.etag, second.etag, third.etag}) == 3
    assert store.get_cluster("demo") == third


def test_update_with_a_stale_etag_conflicts_and_leaves_the_row_unchanged(store: StateStore) -> None:
    original = store.insert_cluster(cluster_record())
    winner = store.update_cluster(dataclasses.replace(original, status_reason="first writer"))

    with pytest.raises(ConflictError):
        store.update_cluster(dataclasses.replace(original, status_reason="stale writer"))
    assert store.get_cluster("demo") == winner


def test_only_one_of_two_concurrent_writers_from_the_same_read_wins(store: StateStore) -> None:
    store.insert_cluster(cluster_record())
    read = store.get_cluster("demo")
    assert read is not None
    start_together = threading.Barrier(2)
    outcomes: dict[str, ClusterRecord | ConflictError] = {}

    def write(writer: str) -> None:
        start_together.wait()
        try:
            outcomes[writer] = store.update_cluster(dataclasses.replace(read, status_reason=writer))
        except ConflictError as conflict:
            outcomes[writer] = conflict

    threads = [threading.Thread(target=write, args=(writer,)) for writer in ("writer-a", "writer-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    winners = [outcome for outcome in outcomes.values() if isinstance(outcome, ClusterRecord)]
    losers = [outcome for outcome in outcomes.values() if isinstance(outcome, ConflictError)]
    assert (len(winners), len(losers)) == (1, 1)
    assert store.get_cluster("demo") == winners[0]


def test_update_of_a_cluster_without_an_etag_is_refused(store: StateStore) -> None:
    store.insert_cluster(cluster_record())

    with pytest.raises(ValueError, match="etag"):
        store.update_cluster(cluster_record(status_reason="blind write"))


def test_a_300_kib_config_round_trips_byte_identical(store: StateStore) -> None:
    # Mixed widths so the split also meets two-unit UTF-16 characters at piece boundaries.
    filler = ("abcdefgh" * 7 + "é😀") * 6000
    config_json = json.dumps({"cluster_name": "big", "filler": filler}, ensure_ascii=False)[: 300 * 1024]
    assert len(config_json.encode()) > 300 * 1024

    store.insert_cluster(cluster_record("big", config_json=config_json))

    stored = store.get_cluster("big")
    assert stored is not None
    assert stored.config_json.encode() == config_json.encode()


def test_a_config_larger_than_one_entity_is_refused_not_truncated(store: StateStore) -> None:
    config_json = json.dumps({"filler": "x" * 600_000})

    with pytest.raises(ConfigTooLargeError):
        store.insert_cluster(cluster_record("huge", config_json=config_json))
    assert store.get_cluster("huge") is None


def test_an_update_that_grows_the_config_past_the_limit_is_refused(store: StateStore) -> None:
    inserted = store.insert_cluster(cluster_record())

    with pytest.raises(ConfigTooLargeError):
        store.update_cluster(dataclasses.replace(inserted, config_json="y" * 600_000))
    assert store.get_cluster("demo") == inserted


def test_non_ascii_text_round_trips(store: StateStore) -> None:
    cluster = store.insert_cluster(
        cluster_record(
            config_json=json.dumps({"comment": NON_ASCII}, ensure_ascii=False),
            status_reason=NON_ASCII,
            unavailable=(Unavailability("gpu", T0, NON_ASCII),),
        )
    )
    instance = store.insert_instance(instance_record(last_error=NON_ASCII))
    store.append_event(Event("demo", T0, "status", NON_ASCII))

    assert store.get_cluster("demo") == cluster
    assert store.list_instances("demo") == [instance]
    assert store.list_events("demo") == [Event("demo", T0, "status", NON_ASCII)]


def test_datetimes_in_other_zones_come_back_as_the_same_instant_in_utc(store: StateStore) -> None:
    in_paris = T0.astimezone(timezone(timedelta(hours=1)))
    store.insert_cluster(cluster_record(created_at=in_paris))

    stored = store.get_cluster("demo")
    assert stored is not None
    assert stored.created_at == T0
    assert stored.created_at.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------------------------


def test_instances_round_trip_every_field_and_list_by_cluster(store: StateStore) -> None:
    worker = store.insert_instance(instance_record("demo", "i-0002"))
    head = store.insert_instance(instance_record("demo", "i-0001", is_head=True, status=InstanceStatus.RAY_RUNNING))
    store.insert_instance(instance_record("other", "i-0003"))

    assert store.list_instances("demo") == [head, worker]
    assert without_etag(head) == instance_record("demo", "i-0001", is_head=True, status=InstanceStatus.RAY_RUNNING)
    assert store.list_instances("nobody") == []


def test_inserting_an_existing_instance_conflicts(store: StateStore) -> None:
    store.insert_instance(instance_record())

    with pytest.raises(ConflictError):
        store.insert_instance(instance_record(request_id="req-other"))


def test_instance_update_with_its_etag_succeeds_and_with_a_stale_one_conflicts(store: StateStore) -> None:
    inserted = store.insert_instance(instance_record())
    allocated = store.update_instance(
        dataclasses.replace(inserted, status=InstanceStatus.ALLOCATED, status_since=T0 + timedelta(minutes=1))
    )

    with pytest.raises(ConflictError):
        store.update_instance(dataclasses.replace(inserted, status=InstanceStatus.ALLOCATION_FAILED))
    assert store.list_instances("demo") == [allocated]


def test_delete_with_a_stale_etag_conflicts_and_keeps_the_row(store: StateStore) -> None:
    inserted = store.insert_instance(instance_record())
    updated = store.update_instance(dataclasses.replace(inserted, attempts=3))

    with pytest.raises(ConflictError):
        store.delete_instance(inserted)
    assert store.list_instances("demo") == [updated]


def test_delete_with_the_current_etag_removes_the_row(store: StateStore) -> None:
    inserted = store.insert_instance(instance_record())

    store.delete_instance(inserted)

    assert store.list_instances("demo") == []


def test_deleting_a_missing_instance_succeeds(store: StateStore) -> None:
    inserted = store.insert_instance(instance_record())
    store.delete_instance(inserted)

    store.delete_instance(inserted)

    assert store.list_instances("demo") == []


def test_updating_a_deleted_instance_conflicts(store: StateStore) -> None:
    inserted = store.insert_instance(instance_record())
    store.delete_instance(inserted)

    with pytest.raises(ConflictError):
        store.update_instance(dataclasses.replace(inserted, attempts=1))
    assert store.list_instances("demo") == []


# --------------------------------------------------------------------------------------------
# Instances: fenced commits (one transaction with the cluster's fence row)
# --------------------------------------------------------------------------------------------


def launch(instance_number: int, cluster_name: str = "demo") -> InstanceRecord:
    """A new launch intent, keyed like the reconciler's: hex, so the fence row sorts after it."""
    return instance_record(cluster_name, f"{instance_number:016x}", status=InstanceStatus.QUEUED, etag="")


def commit_outcomes(
    store: StateStore, fence_etag: str, commits: dict[str, list[InstanceRecord]]
) -> dict[str, InstanceSnapshot | ConflictError]:
    """Run the commits in threads released together, as two overlapping reconcile ticks would."""
    start_together = threading.Barrier(len(commits))
    outcomes: dict[str, InstanceSnapshot | ConflictError] = {}

    def commit(writer: str) -> None:
        start_together.wait()
        try:
            outcomes[writer] = store.commit_instances("demo", fence_etag, commits[writer])
        except ConflictError as conflict:
            outcomes[writer] = conflict

    threads = [threading.Thread(target=commit, args=(writer,)) for writer in commits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return outcomes


def test_a_cluster_never_committed_reads_with_no_fence(store: StateStore) -> None:
    unfenced = store.insert_instance(launch(1))

    assert store.read_instances("demo") == InstanceSnapshot((unfenced,), fence_etag="")
    assert store.read_instances("nobody") == InstanceSnapshot((), fence_etag="")


def test_commit_inserts_and_updates_together_and_returns_fresh_etags(store: StateStore) -> None:
    first = store.commit_instances("demo", "", [launch(1), launch(2)])
    kept, requested = first.records
    allocated = dataclasses.replace(requested, status=InstanceStatus.ALLOCATED, status_since=T0 + timedelta(minutes=1))

    second = store.commit_instances("demo", first.fence_etag, [allocated, launch(3)])

    assert [without_etag(record) for record in second.records] == [without_etag(allocated), launch(3)]
    assert all(record.etag for record in (*first.records, *second.records))
    assert second.records[0].etag != requested.etag
    assert second.fence_etag not in ("", first.fence_etag)
    assert store.read_instances("demo") == InstanceSnapshot((kept, *second.records), second.fence_etag)


def test_read_instances_returns_the_fence_etag_the_last_commit_returned(store: StateStore) -> None:
    committed = store.commit_instances("demo", "", [launch(1)])
    for instance_number in range(2, 5):
        committed = store.commit_instances("demo", store.read_instances("demo").fence_etag, [launch(instance_number)])

    assert store.read_instances("demo").fence_etag == committed.fence_etag


def test_the_fence_row_is_never_listed_as_an_instance(store: StateStore) -> None:
    committed = store.commit_instances("demo", "", [launch(1), launch(2)])

    assert store.list_instances("demo") == list(committed.records)
    assert store.read_instances("demo").records == committed.records


@pytest.mark.parametrize("fence_exists", [True, False], ids=["fenced-cluster", "first-commit"])
def test_of_two_commits_from_the_same_snapshot_exactly_one_writes(store: StateStore, fence_exists: bool) -> None:
    if fence_exists:
        store.commit_instances("demo", "", [launch(1)])
    snapshot = store.read_instances("demo")
    # Each tick queues its own launches (fresh ids): per-row etags alone would let both through.
    commits = {"tick-a": [launch(0xA1), launch(0xA2)], "tick-b": [launch(0xB1)]}

    outcomes = commit_outcomes(store, snapshot.fence_etag, commits)

    winners = [writer for writer, outcome in outcomes.items() if isinstance(outcome, InstanceSnapshot)]
    losers = [writer for writer, outcome in outcomes.items() if isinstance(outcome, ConflictError)]
    assert (len(winners), len(losers)) == (1, 1)
    won = outcomes[winners[0]]
    assert isinstance(won, InstanceSnapshot)
    assert [without_etag(record) for record in won.records] == commits[winners[0]]
    after = store.read_instances("demo")
    assert after == InstanceSnapshot((*snapshot.records, *won.records), won.fence_etag)
    assert not {record.instance_id for record in commits[losers[0]]} & {record.instance_id for record in after.records}


def test_a_commit_from_a_snapshot_older_than_the_last_commit_conflicts_and_writes_nothing(store: StateStore) -> None:
    old = store.commit_instances("demo", "", [launch(1)])
    newer = store.commit_instances("demo", old.fence_etag, [launch(2)])

    with pytest.raises(ConflictError):
        store.commit_instances("demo", old.fence_etag, [launch(3)])
    assert store.read_instances("demo") == InstanceSnapshot((*old.records, *newer.records), newer.fence_etag)


def test_a_stale_instance_etag_fails_the_whole_commit(store: StateStore) -> None:
    first = store.commit_instances("demo", "", [launch(1)])
    stale = first.records[0]
    second = store.commit_instances("demo", first.fence_etag, [dataclasses.replace(stale, attempts=5)])

    with pytest.raises(ConflictError):
        # The fence etag is current; only the row's etag is old.
        store.commit_instances("demo", second.fence_etag, [launch(2), dataclasses.replace(stale, attempts=9)])
    assert store.read_instances("demo") == InstanceSnapshot(second.records, second.fence_etag)


def test_updating_a_row_deleted_since_the_snapshot_fails_the_whole_commit(store: StateStore) -> None:
    committed = store.commit_instances("demo", "", [launch(1)])
    store.delete_instance(committed.records[0])

    with pytest.raises(ConflictError):
        store.commit_instances(
            "demo", committed.fence_etag, [launch(2), dataclasses.replace(committed.records[0], attempts=4)]
        )
    assert store.read_instances("demo") == InstanceSnapshot((), committed.fence_etag)


def test_inserting_an_existing_row_fails_the_whole_commit_and_creates_no_fence(store: StateStore) -> None:
    existing = store.insert_instance(launch(1))

    with pytest.raises(ConflictError):
        store.commit_instances("demo", "", [launch(2), launch(1)])
    assert store.read_instances("demo") == InstanceSnapshot((existing,), fence_etag="")


def test_a_commit_larger_than_one_transaction_writes_every_row_and_chains_the_fence(store: StateStore) -> None:
    launches = [launch(instance_number) for instance_number in range(MAX_RECORDS_PER_TRANSACTION + 51)]

    committed = store.commit_instances("demo", "", launches)

    assert [without_etag(record) for record in committed.records] == launches
    assert store.read_instances("demo") == InstanceSnapshot(committed.records, committed.fence_etag)
    assert store.commit_instances("demo", committed.fence_etag, []).fence_etag != committed.fence_etag


def test_a_commit_of_another_clusters_instance_is_refused_before_writing(store: StateStore) -> None:
    with pytest.raises(ValueError, match="belongs to cluster 'other'"):
        store.commit_instances("demo", "", [launch(1), launch(2, cluster_name="other")])
    assert store.read_instances("demo") == InstanceSnapshot((), fence_etag="")
    assert store.read_instances("other") == InstanceSnapshot((), fence_etag="")


def test_a_committed_row_deletes_with_the_etag_the_commit_returned(store: StateStore) -> None:
    committed = store.commit_instances("demo", "", [launch(1), launch(2)])

    store.delete_instance(committed.records[0])

    assert store.read_instances("demo") == InstanceSnapshot(committed.records[1:], committed.fence_etag)


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


def test_events_list_newest_first_and_stop_at_the_limit(store: StateStore) -> None:
    events = [Event("demo", T0 + timedelta(seconds=offset), "launch", f"event {offset}") for offset in range(6)]
    for event in (events[3], events[0], events[5], events[1], events[4], events[2]):
        store.append_event(event)
    store.append_event(Event("other", T0 + timedelta(hours=1), "launch", "another cluster's event"))

    assert store.list_events("demo", limit=3) == [events[5], events[4], events[3]]
    assert store.list_events("demo") == list(reversed(events))


def test_events_at_the_same_instant_are_all_kept(store: StateStore) -> None:
    for index in range(3):
        store.append_event(Event("demo", T0, "terminate", f"node {index}", instance_id=f"i-{index}"))

    assert sorted(event.instance_id for event in store.list_events("demo")) == ["i-0", "i-1", "i-2"]


# --------------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------------


def append_minutely(store: StateStore, count: int, cluster: str = "demo", kind: str = "launch") -> list[Event]:
    events = [Event(cluster, T0 + timedelta(minutes=minute), kind, f"event {minute}") for minute in range(count)]
    for event in events:
        store.append_event(event)
    return events


def test_pruning_keeps_only_the_newest_events_of_the_cluster(store: StateStore) -> None:
    events = append_minutely(store, 12)
    others = append_minutely(store, 3, cluster="other")

    pruned = store.prune_events("demo", older_than=T0 - timedelta(days=1), keep_newest=5)

    assert pruned == 7
    assert store.list_events("demo", limit=100) == list(reversed(events[-5:]))
    assert store.list_events("other") == list(reversed(others))


def test_pruning_removes_events_older_than_the_cutoff(store: StateStore) -> None:
    events = append_minutely(store, 10)

    pruned = store.prune_events("demo", older_than=T0 + timedelta(minutes=4), keep_newest=500)

    assert pruned == 5  # minutes 0..4: the one at the cutoff too
    assert store.list_events("demo", limit=100) == list(reversed(events[5:]))


def test_pruning_a_cluster_without_old_events_deletes_nothing(store: StateStore) -> None:
    events = append_minutely(store, 3)

    assert store.prune_events("demo", older_than=T0 - timedelta(minutes=1), keep_newest=500) == 0
    assert store.list_events("demo") == list(reversed(events))


def test_more_than_one_transaction_of_events_is_pruned(store: StateStore) -> None:
    append_minutely(store, 230)

    assert store.prune_events("demo", older_than=T0 - timedelta(days=1), keep_newest=10) == 220
    assert len(store.list_events("demo", limit=1000)) == 10


def test_has_event_since_finds_only_that_kind_in_the_window(store: StateStore) -> None:
    store.append_event(Event("demo", T0, "poison", "old poison"))
    store.append_event(Event("demo", T0 + timedelta(minutes=30), "launch", "recent, other kind"))
    store.append_event(Event("other", T0 + timedelta(minutes=30), "poison", "another cluster's"))

    assert store.has_event_since("demo", "poison", T0 - timedelta(minutes=1))
    assert not store.has_event_since("demo", "poison", T0 + timedelta(minutes=1))
    assert store.has_event_since("demo", "launch", T0 + timedelta(minutes=1))
    assert not store.has_event_since("nobody", "poison", T0)


def test_purging_removes_the_rows_written_before_the_cutoff_and_keeps_later_ones(store: StateStore) -> None:
    old = [instance_record(instance_id=f"old-{index}", created_at=T0) for index in range(3)]
    later = instance_record(instance_id="later", created_at=T0 + timedelta(hours=2))
    store.commit_instances("demo", "", [*old, later])
    store.append_event(Event("demo", T0, "status", "cluster deleted"))
    kept_event = Event("demo", T0 + timedelta(hours=2), "status", "cluster accepted (generation 2)")
    store.append_event(kept_event)
    store.insert_instance(instance_record(cluster_name="other", instance_id="other-1"))

    removed = store.purge_cluster_rows("demo", before=T0 + timedelta(hours=1))

    assert removed == 5  # three instance rows, the fence, one event
    assert [record.instance_id for record in store.list_instances("demo")] == ["later"]
    assert store.read_instances("demo").fence_etag == ""
    assert store.list_events("demo") == [kept_event]
    assert [record.instance_id for record in store.list_instances("other")] == ["other-1"]


def test_a_tombstone_round_trips_with_its_purge_time(store: StateStore) -> None:
    inserted = store.insert_cluster(cluster_record(status=ClusterStatus.DELETED, purged_at=T0 + timedelta(days=1)))

    assert store.get_cluster("demo") == inserted


# --------------------------------------------------------------------------------------------
# Table Storage only: the cost of the hot path
# --------------------------------------------------------------------------------------------


def recording_requests(sink: list[HttpRequest]) -> Callable[[PipelineRequest[HttpRequest]], None]:
    def record(request: PipelineRequest[HttpRequest]) -> None:
        sink.append(request.http_request)

    return record


@pytest.mark.azurite
def test_table_store_checks_its_tables_once_and_not_on_every_request(azurite: Azurite) -> None:
    requests: list[HttpRequest] = []
    service = TableServiceClient.from_connection_string(
        azurite.connection_string, raw_request_hook=recording_requests(requests)
    )
    table_store = TableStateStore(service, table_prefix=f"t{uuid.uuid4().hex[:12]}")
    try:
        table_store.insert_cluster(cluster_record())
        setup_requests = len(requests)
        requests.clear()

        read = table_store.get_cluster("demo")
        assert read is not None
        table_store.update_cluster(dataclasses.replace(read, status_reason="tick"))
        table_store.list_instances("demo")
        table_store.list_events("demo", limit=5)

        # Setup: one query of the table list, three creates, then the insert.
        assert setup_requests == 5
        assert [request.method for request in requests] == ["GET", "PUT", "GET", "GET"]
        assert not any(request.url.split("?")[0].endswith("/Tables") for request in requests)
    finally:
        for table_name in table_store.table_names:
            service.delete_table(table_name)
        table_store.close()


@pytest.mark.azurite
def test_table_store_reads_and_commits_a_clusters_instances_in_one_request_each(azurite: Azurite) -> None:
    requests: list[HttpRequest] = []
    service = TableServiceClient.from_connection_string(
        azurite.connection_string, raw_request_hook=recording_requests(requests)
    )
    table_store = TableStateStore(service, table_prefix=f"t{uuid.uuid4().hex[:12]}")
    try:
        table_store.ensure_tables()
        first = table_store.commit_instances("demo", "", [launch(1), launch(2)])
        requests.clear()

        snapshot = table_store.read_instances("demo")
        table_store.commit_instances(
            "demo", snapshot.fence_etag, [dataclasses.replace(first.records[0], attempts=3), launch(3)]
        )

        assert [request.method for request in requests] == ["GET", "POST"]
        assert requests[1].url.split("?")[0].endswith("/$batch")
    finally:
        for table_name in table_store.table_names:
            service.delete_table(table_name)
        table_store.close()


@pytest.mark.azurite
def test_a_second_store_on_existing_tables_creates_nothing(azurite: Azurite) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    first_store = TableStateStore.from_connection_string(azurite.connection_string, table_prefix=prefix)
    first_store.ensure_tables()
    requests: list[HttpRequest] = []
    service = TableServiceClient.from_connection_string(
        azurite.connection_string, raw_request_hook=recording_requests(requests)
    )
    second_store = TableStateStore(service, table_prefix=prefix)
    try:
        second_store.ensure_tables()

        assert [request.method for request in requests] == ["GET"]
    finally:
        for table_name in first_store.table_names:
            service.delete_table(table_name)
        first_store.close()
        second_store.close()


@pytest.mark.azurite
def test_pruning_and_the_poison_check_cost_one_read_and_one_batch_per_hundred_deletes(azurite: Azurite) -> None:
    requests: list[HttpRequest] = []
    service = TableServiceClient.from_connection_string(
        azurite.connection_string, raw_request_hook=recording_requests(requests)
    )
    table_store = TableStateStore(service, table_prefix=f"t{uuid.uuid4().hex[:12]}")
    try:
        table_store.ensure_tables()
        append_minutely(table_store, 150)
        requests.clear()

        table_store.prune_events("demo", older_than=T0 - timedelta(days=1), keep_newest=500)
        assert [request.method for request in requests] == ["GET"], "nothing to prune: one read"
        requests.clear()

        table_store.prune_events("demo", older_than=T0 - timedelta(days=1), keep_newest=20)
        assert [request.method for request in requests] == ["GET", "POST", "POST"]  # 130 deletes in two batches
        requests.clear()

        assert not table_store.has_event_since("demo", "poison", T0)
        assert [request.method for request in requests] == ["GET"]
    finally:
        for table_name in table_store.table_names:
            service.delete_table(table_name)
        table_store.close()


@pytest.mark.azurite
def test_deleting_rows_of_which_one_is_already_gone_deletes_the_others(azurite: Azurite) -> None:
    table_store = TableStateStore.from_connection_string(azurite.connection_string, f"t{uuid.uuid4().hex[:12]}")
    try:
        events = append_minutely(table_store, 3)
        newest_two = [
            str(stored.properties["RowKey"])
            for stored in table_store._azure_tables.query(TableKind.EVENTS, "demo", limit=2, select=())
        ]

        # The missing row fails the batch as a whole; the rows that exist are deleted all the same.
        table_store._azure_tables.delete_rows(TableKind.EVENTS, "demo", ["0-already-gone", *newest_two])

        assert table_store.list_events("demo") == [events[0]]
    finally:
        for table_name in table_store.table_names:
            table_store.table_service.delete_table(table_name)
        table_store.close()
