"""How records become Table Storage entities: text splitting, sizes, keys, datetimes and defaults."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from autoscaler.model import ClusterRecord, ClusterStatus, Event, HeadInfo, InstanceRecord, InstanceStatus
from autoscaler.state import (
    FENCE_ROW_KEY,
    MAX_PROPERTY_UTF16_UNITS,
    MAX_TRANSACTION_OPERATIONS,
    Entity,
    EntityValue,
    EntityWrite,
    InMemoryEntityTables,
    StateError,
    StorageUnavailableError,
    TableKind,
    TableStateStore,
    WriteKind,
    decode_cluster,
    decode_instance,
    encode_cluster,
    encode_event,
    encode_instance,
    entity_size_bytes,
    event_row_key,
    get_text,
    group_for_transactions,
    put_text,
    split_text,
    storage_errors,
    transaction_payload_bytes,
    utf16_units,
)

T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
TEST_CREDENTIAL = AzureNamedKeyCredential("account", "a2V5")


def cluster(**changes: object) -> ClusterRecord:
    values: dict[str, object] = {
        "name": "demo",
        "status": ClusterStatus.RUNNING,
        "config_json": "{}",
        "config_hash": "h",
        "generation": 1,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(changes)
    return ClusterRecord(**values)  # type: ignore[arg-type]


def instance(**changes: object) -> InstanceRecord:
    values: dict[str, object] = {
        "cluster_name": "demo",
        "instance_id": "i-1",
        "node_type": "worker",
        "status": InstanceStatus.QUEUED,
        "request_id": "r-1",
        "status_since": T0,
        "created_at": T0,
    }
    values.update(changes)
    return InstanceRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "max_units", "expected_pieces"),
    [
        ("", 4, []),
        ("abcd", 4, ["abcd"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
        ("ab😀cd", 3, ["ab", "😀c", "d"]),  # the emoji takes two units and is never cut in half
        ("😀😀😀", 3, ["😀", "😀", "😀"]),
        ("😀😀", 4, ["😀😀"]),
        ("ééé", 2, ["éé", "é"]),  # BMP accents take one unit
    ],
)
def test_split_text_cuts_at_the_utf16_limit_between_characters(
    text: str, max_units: int, expected_pieces: list[str]
) -> None:
    assert split_text(text, max_units) == expected_pieces


@pytest.mark.parametrize(
    ("text", "expected_property_names"),
    [
        ("", ["note"]),
        ("a" * MAX_PROPERTY_UTF16_UNITS, ["note"]),
        ("a" * (MAX_PROPERTY_UTF16_UNITS + 1), ["note_parts", "note_0", "note_1"]),
        ("😀" * MAX_PROPERTY_UTF16_UNITS, ["note_parts", "note_0", "note_1"]),
        ("b" * (3 * MAX_PROPERTY_UTF16_UNITS), ["note_parts", "note_0", "note_1", "note_2"]),
    ],
)
def test_text_longer_than_one_property_is_split_and_joins_back(text: str, expected_property_names: list[str]) -> None:
    entity: Entity = {}

    put_text(entity, "note", text)

    assert list(entity) == expected_property_names
    assert all(utf16_units(str(value)) <= MAX_PROPERTY_UTF16_UNITS for value in entity.values())
    assert get_text(entity, "note") == text


def test_text_with_a_missing_piece_is_reported_not_shortened() -> None:
    with pytest.raises(StateError, match="note_1"):
        get_text({"note_parts": 2, "note_0": "first half"}, "note")


@pytest.mark.parametrize(
    ("entity", "expected_bytes"),
    [
        ({"PartitionKey": "p", "RowKey": "r"}, 4 + 2 + 2),
        ({"PartitionKey": "p", "RowKey": "r", "n": 5}, 8 + (8 + 2 + 4)),
        ({"PartitionKey": "p", "RowKey": "r", "b": True}, 8 + (8 + 2 + 1)),
        ({"PartitionKey": "p", "RowKey": "r", "at": T0}, 8 + (8 + 4 + 8)),
        ({"PartitionKey": "p", "RowKey": "r", "s": "ab"}, 8 + (8 + 2 + 4 + 4)),
        ({"PartitionKey": "p", "RowKey": "r", "s": "😀"}, 8 + (8 + 2 + 4 + 4)),
    ],
)
def test_entity_size_follows_the_service_formula(entity: dict[str, EntityValue], expected_bytes: int) -> None:
    assert entity_size_bytes(entity) == expected_bytes


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (T0, T0 + timedelta(microseconds=1)),
        (T0, T0 + timedelta(days=3650)),
        (datetime(1969, 12, 31, tzinfo=UTC), datetime(1970, 1, 2, tzinfo=UTC)),
        (datetime(2025, 1, 1, 12, tzinfo=UTC), datetime(2025, 1, 1, 12, 0, 1, tzinfo=UTC)),
    ],
)
def test_event_row_keys_sort_newer_events_first(earlier: datetime, later: datetime) -> None:
    later_key, earlier_key = event_row_key(later, "s"), event_row_key(earlier, "s")

    assert later_key < earlier_key
    assert len(later_key) == len(earlier_key)


@pytest.mark.parametrize(
    "encode",
    [
        lambda: encode_cluster(cluster(created_at=datetime(2025, 1, 1))),
        lambda: encode_instance(instance(status_since=datetime(2025, 1, 1))),
        lambda: encode_event(Event("demo", datetime(2025, 1, 1), "launch", "m"), "s"),
    ],
    ids=["cluster", "instance", "event"],
)
def test_naive_datetimes_are_refused(encode: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode()


@pytest.mark.parametrize("bad_name", ["", "a/b", "a\\b", "a#b", "a?b", "a\nb", "a\u007fb", "x" * 513])
def test_names_that_cannot_be_table_keys_are_refused(bad_name: str) -> None:
    with pytest.raises(ValueError, match="table key"):
        encode_cluster(cluster(name=bad_name))
    with pytest.raises(ValueError, match="table key"):
        encode_instance(instance(instance_id=bad_name))


def test_a_cluster_row_without_optional_fields_loads_with_their_defaults() -> None:
    minimal = {
        "PartitionKey": "cluster",
        "RowKey": "old",
        "status": "creating",
        "created_at": T0,
        "updated_at": T0,
    }

    assert decode_cluster(minimal, etag="e1") == ClusterRecord(
        name="old",
        status=ClusterStatus.CREATING,
        config_json="",
        config_hash="",
        generation=0,
        created_at=T0,
        updated_at=T0,
        cloud_touched=True,
        etag="e1",
    )


def test_a_cluster_row_written_before_cloud_touched_existed_counts_as_touched() -> None:
    # Such a row may have launched anything: deleting it must go through its provider.
    entity = encode_cluster(cluster(cloud_touched=False))
    del entity["cloud_touched"]

    assert decode_cluster(entity, etag="e1").cloud_touched is True


def test_failures_backoff_and_the_cloud_touched_flag_round_trip() -> None:
    record = cluster(
        consecutive_failures=3,
        last_error="InvalidRequestError: no subscription",
        last_error_at=T0,
        backoff_until=T0 + timedelta(seconds=60),
        cloud_touched=False,
        head_auth_error="403",
        head_unreachable_since=T0 - timedelta(seconds=30),
        etag="e1",
    )

    assert decode_cluster(encode_cluster(record), etag="e1") == record


def test_an_instance_row_without_optional_fields_loads_with_their_defaults() -> None:
    minimal = {"PartitionKey": "demo", "RowKey": "i-1", "status": "queued", "status_since": T0, "created_at": T0}

    assert decode_instance(minimal, etag="e1") == instance(node_type="", request_id="", etag="e1")


def test_the_launch_time_survives_a_round_trip_and_is_absent_until_launched() -> None:
    launched = instance(launched_at=T0 + timedelta(seconds=42))

    assert decode_instance(encode_instance(launched), etag="") == launched
    assert "launched_at" not in encode_instance(instance())


def test_head_fields_unknown_to_this_version_are_ignored() -> None:
    entity = encode_cluster(cluster())
    entity["head"] = '{"ray_address": "10.0.0.4:6379", "added_later": "x"}'

    assert decode_cluster(entity, etag="e1").head == HeadInfo(ray_address="10.0.0.4:6379")


def test_encoded_cluster_has_one_property_per_record_field() -> None:
    entity = encode_cluster(cluster(head=HeadInfo(instance_id="h-1")))

    assert set(entity) == {
        "PartitionKey",
        "RowKey",
        "status",
        "generation",
        "created_at",
        "updated_at",
        "config_json",
        "config_hash",
        "head",
        "last_decision",
        "last_observation",
        "unavailable",
        "ignored_fields",
        "status_reason",
        "consecutive_failures",
        "last_error",
        "cloud_touched",
        "head_auth_error",
    }


def test_from_account_uses_the_accounts_table_endpoint() -> None:
    store = TableStateStore.from_account("myaccount", TEST_CREDENTIAL, table_prefix="dev")

    assert store.table_service.url.startswith("https://myaccount.table.core.windows.net")
    assert store.table_names == ["devclusters", "devinstances", "devevents"]


@pytest.mark.parametrize("bad_prefix", ["1ab", "a-b", "a_b", "x" * 60])
def test_table_prefixes_that_make_invalid_table_names_are_refused(bad_prefix: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        TableStateStore.from_account("myaccount", TEST_CREDENTIAL, table_prefix=bad_prefix)


# --------------------------------------------------------------------------------------------
# The fence row and commit transactions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_id", ["0000000000000000", "ffffffffffffffff", "f" * 32, "i-0001", "zzzz"])
def test_the_fence_sorts_after_instance_ids(instance_id: str) -> None:
    assert instance_id < FENCE_ROW_KEY


def test_an_instance_cannot_take_the_fence_row_key() -> None:
    with pytest.raises(ValueError, match="reserved"):
        encode_instance(instance(instance_id=FENCE_ROW_KEY))


@pytest.mark.parametrize(
    ("payload_sizes_bytes", "max_records", "budget_bytes", "expected_groups"),
    [
        ([], 99, 1000, [range(0, 0)]),  # an empty commit still moves the fence
        ([1] * 99, 99, 1000, [range(0, 99)]),
        ([1] * 100, 99, 1000, [range(0, 99), range(99, 100)]),
        ([1] * 250, 99, 1000, [range(0, 99), range(99, 198), range(198, 250)]),
        ([40, 40, 40], 99, 100, [range(0, 2), range(2, 3)]),
        ([50, 50, 50], 99, 100, [range(0, 2), range(2, 3)]),  # exactly the budget fits
        ([150, 10, 10], 99, 100, [range(0, 1), range(1, 3)]),  # too large alone: its own transaction
        ([10, 150, 10], 99, 100, [range(0, 1), range(1, 2), range(2, 3)]),
    ],
)
def test_commits_split_into_transactions_by_count_and_payload(
    payload_sizes_bytes: list[int], max_records: int, budget_bytes: int, expected_groups: list[range]
) -> None:
    assert group_for_transactions(payload_sizes_bytes, max_records, budget_bytes) == expected_groups


@pytest.mark.parametrize(
    ("character", "escaped_bytes"),
    [("a", 1), ("é", 6), ("日", 6), ("😀", 12)],  # the SDK's JSON escapes non-ASCII as \uXXXX (twice when astral)
)
def test_transaction_payload_estimate_counts_escaped_json(character: str, escaped_bytes: int) -> None:
    def estimate(text: str) -> int:
        return transaction_payload_bytes({"PartitionKey": "p", "RowKey": "r", "note": text})

    assert estimate(character * 1000) - estimate("") == escaped_bytes * 1000


def write(row_key: str, partition_key: str = "demo", etag: str = "") -> EntityWrite:
    return EntityWrite.insert_or_replace({"PartitionKey": partition_key, "RowKey": row_key}, etag)


@pytest.mark.parametrize(
    ("writes", "message"),
    [
        ([], "1 to 100 writes"),
        ([write(f"{index:04d}") for index in range(MAX_TRANSACTION_OPERATIONS + 1)], "1 to 100 writes"),
        ([write("a"), write("b", partition_key="other")], "one partition"),
        ([write("a"), write("a", etag="e1")], "at most once"),
        ([EntityWrite(WriteKind.REPLACE, {"PartitionKey": "demo", "RowKey": "a"})], "needs its etag"),
    ],
    ids=["empty", "too-many", "two-partitions", "same-row-twice", "replace-without-etag"],
)
def test_transactions_the_service_would_refuse_are_refused_and_write_nothing(
    writes: list[EntityWrite], message: str
) -> None:
    tables = InMemoryEntityTables()

    with pytest.raises(ValueError, match=message):
        tables.transact(TableKind.INSTANCES, writes)
    assert list(tables.query(TableKind.INSTANCES, "demo")) == []


def _http_error(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"the service answered {status}")
    error.status_code = status
    return error


@pytest.mark.parametrize(
    "error",
    [
        ServiceRequestError("connection refused"),
        ServiceResponseError("read timed out"),
        _http_error(503),
        _http_error(500),
        _http_error(429),
    ],
    ids=["connect", "read", "503", "500", "429"],
)
def test_storage_that_does_not_answer_is_storage_unavailable(error: Exception) -> None:
    with pytest.raises(StorageUnavailableError), storage_errors():
        raise error


@pytest.mark.parametrize("status", [400, 404, 409, 412])
def test_a_storage_answer_about_the_request_passes_unchanged(status: int) -> None:
    with pytest.raises(HttpResponseError) as raised, storage_errors():
        raise _http_error(status)
    assert not isinstance(raised.value, StorageUnavailableError)


def test_the_table_client_has_bounded_timeouts_and_retries() -> None:
    store = TableStateStore.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:1/a;"
    )
    pipeline: Any = store.table_service._client._client._pipeline
    transport = pipeline._transport
    assert (transport.connection_config.timeout, transport.connection_config.read_timeout) == (3.0, 3.0)
    [retry] = [policy for policy in pipeline._impl_policies if type(policy).__name__ == "TablesRetryPolicy"]
    assert retry.total_retries == 1
