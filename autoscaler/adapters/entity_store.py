"""Cluster state as Table Storage rows, without the SDK: the encoding, its limits, and a store over any backend.

`EntityStateStore` implements the `StateStore` port (autoscaler/ports.py) once, over the six primitives of
`EntityTables`; `InMemoryEntityTables` is one backend (for tests and local runs without Azurite) and
autoscaler/adapters/table_store.py's `AzureEntityTables` the other. Both therefore hold exactly the same rows, with the
same size limits, and pass the same contract (tests/integration/test_state_contract.py).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from autoscaler.model import (
    ClusterRecord,
    ClusterStatus,
    Event,
    HeadInfo,
    InstanceRecord,
    InstanceStatus,
    Unavailability,
)
from autoscaler.ports import ConfigTooLargeError, ConflictError, InstanceSnapshot, StateError

# --------------------------------------------------------------------------------------------
# Limits of Azure Table Storage, which the in-memory store enforces too so both behave alike
# --------------------------------------------------------------------------------------------

MAX_PROPERTY_UTF16_UNITS = 32_000
"""Text per property. The service allows 64 KiB of UTF-16 (32,768 code units); the margin costs nothing."""

MAX_ENTITY_BYTES = 1024 * 1024
"""One entity, counted with the service's documented size formula (see `entity_size_bytes`)."""

CLUSTERS_PARTITION = "cluster"
"""Every cluster row lives in one partition, so `list_clusters` is a single-partition query."""

FENCE_ROW_KEY = "~fence"
"""The fence's RowKey in its cluster's instances partition. "~" sorts after every hex instance id, so the fence comes
last in a partition read, and no instance may take this id."""

MAX_TRANSACTION_OPERATIONS = 100
"""Operations in one entity group transaction (all in one partition)."""

MAX_RECORDS_PER_TRANSACTION = MAX_TRANSACTION_OPERATIONS - 1
"""Instance rows per commit transaction: every transaction also carries the fence."""

MAX_TRANSACTION_PAYLOAD_BYTES = 4 * 1024 * 1024
"""The request body of one transaction."""

_TRANSACTION_PAYLOAD_BUDGET_BYTES = MAX_TRANSACTION_PAYLOAD_BYTES - 512 * 1024
# The estimate of `transaction_payload_bytes` is generous per operation; the margin covers the batch's own envelope.
_OPERATION_ENVELOPE_BYTES = 1024  # MIME part headers, request line with the keys, changeset boundaries
_ANNOTATION_BYTES = 64  # per property: the "@odata.type" annotation the SDK adds to datetimes and 64-bit integers

# Characters Table Storage refuses in PartitionKey and RowKey.
_FORBIDDEN_KEY_CHARACTERS = re.compile(r"[/\\#?\u0000-\u001f\u007f-\u009f]")
_MAX_KEY_UTF16_UNITS = 512  # 1 KiB of UTF-16
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EVENT_TICKS_CEILING = 10**19

EntityValue = str | int | bool | datetime
Entity = dict[str, EntityValue]


class TableKind(enum.StrEnum):
    """The three tables; the store's table names are `<prefix><kind>`."""

    CLUSTERS = "clusters"
    INSTANCES = "instances"
    EVENTS = "events"


# --------------------------------------------------------------------------------------------
# Text that may outgrow one property: stored as `<name>` when it fits, otherwise as
# `<name>_parts` = N and `<name>_0` .. `<name>_<N-1>`. Never truncated.
# --------------------------------------------------------------------------------------------


def utf16_units(text: str) -> int:
    """Length as the service counts it: characters outside the BMP take two UTF-16 code units."""
    return len(text.encode("utf-16-le", errors="surrogatepass")) // 2


def split_text(text: str, max_units: int = MAX_PROPERTY_UTF16_UNITS) -> list[str]:
    """Cut `text` into pieces of at most `max_units` UTF-16 code units, never inside a character."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + max_units)
        while (excess := utf16_units(text[start:end]) - max_units) > 0:
            # Each character dropped frees one or two units, so this converges in a step or two.
            end -= (excess + 1) // 2
        pieces.append(text[start:end])
        start = end
    return pieces


def put_text(entity: Entity, name: str, text: str) -> None:
    if utf16_units(text) <= MAX_PROPERTY_UTF16_UNITS:
        entity[name] = text
        return
    pieces = split_text(text)
    entity[f"{name}_parts"] = len(pieces)
    for index, piece in enumerate(pieces):
        entity[f"{name}_{index}"] = piece


def get_text(entity: Mapping[str, object], name: str) -> str:
    """The text stored by `put_text`; "" when absent (a field added after the row was written)."""
    part_count = entity.get(f"{name}_parts")
    if part_count is None:
        return _as_str(entity.get(name, ""), name)
    if not isinstance(part_count, int):
        raise StateError(f"stored property {name}_parts is not a count: {part_count!r}")
    pieces = []
    for index in range(part_count):
        piece_name = f"{name}_{index}"
        if piece_name not in entity:
            raise StateError(f"stored text {name} is missing its piece {piece_name}")
        pieces.append(_as_str(entity[piece_name], piece_name))
    return "".join(pieces)


def entity_size_bytes(entity: Mapping[str, EntityValue]) -> int:
    """Size by the service's formula: 4 + keys x 2 + per property (8 + name x 2 + value size)."""
    size = 4
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            size += utf16_units(str(value)) * 2
        else:
            size += 8 + utf16_units(name) * 2 + _value_size_bytes(value)
    return size


def _value_size_bytes(value: EntityValue) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 4
    if isinstance(value, datetime):
        return 8
    return 4 + utf16_units(value) * 2


# --------------------------------------------------------------------------------------------
# Records <-> entities. Every field is written explicitly; reading tolerates absent optional fields
# so rows written by an older version still load.
# --------------------------------------------------------------------------------------------


def encode_cluster(record: ClusterRecord) -> Entity:
    _check_key(record.name, "cluster name")
    entity: Entity = {
        "PartitionKey": CLUSTERS_PARTITION,
        "RowKey": record.name,
        "status": record.status.value,
        "generation": record.generation,
        "created_at": _to_utc(record.created_at, "created_at"),
        "updated_at": _to_utc(record.updated_at, "updated_at"),
    }
    put_text(entity, "config_json", record.config_json)
    put_text(entity, "config_hash", record.config_hash)
    put_text(entity, "head", _json(dataclasses.asdict(record.head)))
    put_text(entity, "last_decision", record.last_decision)
    put_text(entity, "last_observation", record.last_observation)
    put_text(entity, "unavailable", _json([_encode_unavailability(item) for item in record.unavailable]))
    put_text(entity, "ignored_fields", _json(list(record.ignored_fields)))
    put_text(entity, "status_reason", record.status_reason)
    if record.launches_paused_until is not None:
        entity["launches_paused_until"] = _to_utc(record.launches_paused_until, "launches_paused_until")
    entity["consecutive_failures"] = record.consecutive_failures
    put_text(entity, "last_error", record.last_error)
    if record.last_error_at is not None:
        entity["last_error_at"] = _to_utc(record.last_error_at, "last_error_at")
    if record.backoff_until is not None:
        entity["backoff_until"] = _to_utc(record.backoff_until, "backoff_until")
    entity["cloud_touched"] = record.cloud_touched
    put_text(entity, "head_auth_error", record.head_auth_error)
    if record.purged_at is not None:
        entity["purged_at"] = _to_utc(record.purged_at, "purged_at")
    if record.idle_since is not None:
        entity["idle_since"] = _to_utc(record.idle_since, "idle_since")
    if record.head_unreachable_since is not None:
        entity["head_unreachable_since"] = _to_utc(record.head_unreachable_since, "head_unreachable_since")
    size_bytes = entity_size_bytes(entity)
    if size_bytes > MAX_ENTITY_BYTES:
        config_bytes = utf16_units(record.config_json) * 2
        raise ConfigTooLargeError(
            f"cluster {record.name!r} needs {size_bytes} bytes of storage ({config_bytes} of them config, "
            f"as UTF-16); one entity holds at most {MAX_ENTITY_BYTES}"
        )
    return entity


def decode_cluster(entity: Mapping[str, object], etag: str) -> ClusterRecord:
    return ClusterRecord(
        name=_as_str(entity["RowKey"], "RowKey"),
        status=ClusterStatus(_as_str(entity["status"], "status")),
        config_json=get_text(entity, "config_json"),
        config_hash=get_text(entity, "config_hash"),
        generation=_as_int(entity.get("generation", 0), "generation"),
        created_at=_from_utc(entity["created_at"], "created_at"),
        updated_at=_from_utc(entity["updated_at"], "updated_at"),
        head=_decode_head(get_text(entity, "head")),
        last_decision=get_text(entity, "last_decision"),
        last_observation=get_text(entity, "last_observation"),
        unavailable=tuple(_decode_unavailability(item) for item in _json_list(get_text(entity, "unavailable"))),
        ignored_fields=tuple(str(item) for item in _json_list(get_text(entity, "ignored_fields"))),
        status_reason=get_text(entity, "status_reason"),
        launches_paused_until=(
            _from_utc(entity["launches_paused_until"], "launches_paused_until")
            if entity.get("launches_paused_until") is not None
            else None
        ),
        consecutive_failures=_as_int(entity.get("consecutive_failures", 0), "consecutive_failures"),
        last_error=get_text(entity, "last_error"),
        last_error_at=_optional_datetime(entity, "last_error_at"),
        backoff_until=_optional_datetime(entity, "backoff_until"),
        # A row written before the flag existed may have created anything: it is deleted through its provider.
        cloud_touched=_as_bool(entity.get("cloud_touched", True), "cloud_touched"),
        head_auth_error=get_text(entity, "head_auth_error"),
        purged_at=_optional_datetime(entity, "purged_at"),
        idle_since=_optional_datetime(entity, "idle_since"),
        head_unreachable_since=_optional_datetime(entity, "head_unreachable_since"),
        etag=etag,
    )


def _optional_datetime(entity: Mapping[str, object], name: str) -> datetime | None:
    value = entity.get(name)
    return None if value is None else _from_utc(value, name)


def encode_instance(record: InstanceRecord) -> Entity:
    _check_key(record.cluster_name, "cluster name")
    _check_key(record.instance_id, "instance id")
    if record.instance_id == FENCE_ROW_KEY:
        raise ValueError(f"instance id {FENCE_ROW_KEY!r} is reserved for the cluster's fence row")
    entity: Entity = {
        "PartitionKey": record.cluster_name,
        "RowKey": record.instance_id,
        "status": record.status.value,
        "status_since": _to_utc(record.status_since, "status_since"),
        "created_at": _to_utc(record.created_at, "created_at"),
        "is_head": record.is_head,
        "attempts": record.attempts,
    }
    if record.launched_at is not None:
        entity["launched_at"] = _to_utc(record.launched_at, "launched_at")
    put_text(entity, "node_type", record.node_type)
    put_text(entity, "request_id", record.request_id)
    put_text(entity, "cloud_instance_id", record.cloud_instance_id)
    put_text(entity, "ray_node_id", record.ray_node_id)
    put_text(entity, "config_hash", record.config_hash)
    put_text(entity, "availability_zone", record.availability_zone)
    put_text(entity, "last_error", record.last_error)
    put_text(entity, "priority", record.priority)
    if record.preempt_deadline is not None:
        entity["preempt_deadline"] = _to_utc(record.preempt_deadline, "preempt_deadline")
    _check_size(entity, f"instance {record.instance_id!r} of cluster {record.cluster_name!r}")
    return entity


def decode_instance(entity: Mapping[str, object], etag: str) -> InstanceRecord:
    return InstanceRecord(
        cluster_name=_as_str(entity["PartitionKey"], "PartitionKey"),
        instance_id=_as_str(entity["RowKey"], "RowKey"),
        node_type=get_text(entity, "node_type"),
        status=InstanceStatus(_as_str(entity["status"], "status")),
        request_id=get_text(entity, "request_id"),
        status_since=_from_utc(entity["status_since"], "status_since"),
        created_at=_from_utc(entity["created_at"], "created_at"),
        launched_at=_from_utc(entity["launched_at"], "launched_at") if entity.get("launched_at") else None,
        is_head=_as_bool(entity.get("is_head", False), "is_head"),
        cloud_instance_id=get_text(entity, "cloud_instance_id"),
        ray_node_id=get_text(entity, "ray_node_id"),
        config_hash=get_text(entity, "config_hash"),
        availability_zone=get_text(entity, "availability_zone"),
        last_error=get_text(entity, "last_error"),
        attempts=_as_int(entity.get("attempts", 0), "attempts"),
        priority=get_text(entity, "priority"),
        preempt_deadline=_optional_datetime(entity, "preempt_deadline"),
        etag=etag,
    )


def encode_fence(cluster_name: str, commit_id: str) -> Entity:
    """The fence row. Its `commit_id` is new on every commit, so every commit really rewrites the row."""
    _check_key(cluster_name, "cluster name")
    return {"PartitionKey": cluster_name, "RowKey": FENCE_ROW_KEY, "commit_id": commit_id}


def transaction_payload_bytes(entity: Mapping[str, EntityValue]) -> int:
    """An upper estimate of one operation's share of a transaction's request body.

    The SDK sends JSON with non-ASCII escaped (up to 12 bytes for a character outside the BMP), which can be three
    times the entity's stored size, so the storage formula cannot stand in for it.
    """
    body = json.dumps({name: _json_scalar(value) for name, value in entity.items()})
    return len(body) + _ANNOTATION_BYTES * len(entity) + _OPERATION_ENVELOPE_BYTES


def _json_scalar(value: EntityValue) -> str | int | bool:
    return value.isoformat() if isinstance(value, datetime) else value


def group_for_transactions(
    payload_sizes_bytes: Sequence[int],
    max_records: int = MAX_RECORDS_PER_TRANSACTION,
    budget_bytes: int = _TRANSACTION_PAYLOAD_BUDGET_BYTES,
) -> list[range]:
    """Split operations, in order, into runs that each fit one transaction beside the fence.

    Always at least one run (an empty commit still moves the fence). An operation larger than the budget on its own
    gets a run of its own, and the service has the last word on it.
    """
    groups: list[range] = []
    start = 0
    used_bytes = 0
    for index, size_bytes in enumerate(payload_sizes_bytes):
        if index > start and (index - start >= max_records or used_bytes + size_bytes > budget_bytes):
            groups.append(range(start, index))
            start, used_bytes = index, 0
        used_bytes += size_bytes
    groups.append(range(start, len(payload_sizes_bytes)))
    return groups


def event_row_key(at: datetime, unique_suffix: str) -> str:
    """Inverted microseconds since the epoch, so the service's ascending RowKey order is newest first."""
    ticks = (_to_utc(at, "at") - _EPOCH) // timedelta(microseconds=1)
    return f"{_EVENT_TICKS_CEILING - ticks:020d}-{unique_suffix}"


def encode_event(event: Event, unique_suffix: str) -> Entity:
    _check_key(event.cluster_name, "cluster name")
    entity: Entity = {
        "PartitionKey": event.cluster_name,
        "RowKey": event_row_key(event.at, unique_suffix),
        "at": _to_utc(event.at, "at"),
    }
    put_text(entity, "kind", event.kind)
    put_text(entity, "message", event.message)
    put_text(entity, "instance_id", event.instance_id)
    _check_size(entity, f"event {event.kind!r} of cluster {event.cluster_name!r}")
    return entity


def decode_event(entity: Mapping[str, object]) -> Event:
    return Event(
        cluster_name=_as_str(entity["PartitionKey"], "PartitionKey"),
        at=_from_utc(entity["at"], "at"),
        kind=get_text(entity, "kind"),
        message=get_text(entity, "message"),
        instance_id=get_text(entity, "instance_id"),
    )


def _encode_unavailability(item: Unavailability) -> dict[str, str]:
    encoded = {"node_type": item.node_type, "until": _to_utc(item.until, "until").isoformat(), "reason": item.reason}
    offering = {"size": item.size, "zone": item.zone, "priority": item.priority, "kind": item.kind}
    return encoded | {key: value for key, value in offering.items() if value}


def _decode_unavailability(item: object) -> Unavailability:
    if not isinstance(item, dict):
        raise StateError(f"stored unavailability is not an object: {item!r}")
    return Unavailability(
        node_type=str(item["node_type"]),
        until=_from_utc(datetime.fromisoformat(str(item["until"])), "until"),
        reason=str(item.get("reason", "")),
        size=str(item.get("size", "")),
        zone=str(item.get("zone", "")),
        priority=str(item.get("priority", "")),
        kind=str(item.get("kind", "")),
    )


_HEAD_FIELDS = frozenset(head_field.name for head_field in dataclasses.fields(HeadInfo))


def _decode_head(text: str) -> HeadInfo:
    if not text:
        return HeadInfo()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise StateError(f"stored head is not an object: {text!r}")
    # Fields a newer version may add are ignored rather than breaking the read.
    return HeadInfo(**{key: str(value) for key, value in data.items() if key in _HEAD_FIELDS})


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _json_list(text: str) -> list[object]:
    if not text:
        return []
    data = json.loads(text)
    if not isinstance(data, list):
        raise StateError(f"stored value is not a list: {text!r}")
    return data


def _check_key(key: str, what: str) -> None:
    if not key or _FORBIDDEN_KEY_CHARACTERS.search(key) or utf16_units(key) > _MAX_KEY_UTF16_UNITS:
        raise ValueError(f"{what} {key!r} cannot be a table key (empty, too long, or has / \\ # ? or controls)")


def _check_size(entity: Entity, what: str) -> None:
    size_bytes = entity_size_bytes(entity)
    if size_bytes > MAX_ENTITY_BYTES:
        raise StateError(f"{what} needs {size_bytes} bytes of storage; one entity holds at most {MAX_ENTITY_BYTES}")


def _to_utc(value: datetime, name: str) -> datetime:
    # A naive datetime is ambiguous; guessing its zone would silently shift timers by hours.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _from_utc(value: object, name: str) -> datetime:
    """A plain aware UTC datetime (the SDK hands back its own datetime subclass)."""
    if not isinstance(value, datetime):
        raise StateError(f"stored property {name} is not a datetime: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc = value.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)


def _as_str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise StateError(f"stored property {name} is not text: {value!r}")
    return value


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateError(f"stored property {name} is not an integer: {value!r}")
    return value


def _as_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise StateError(f"stored property {name} is not a boolean: {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# The record store, written once over six entity primitives that each backend provides
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEntity:
    properties: Mapping[str, object]
    etag: str


class WriteKind(enum.Enum):
    INSERT = "insert"  # fails when the row exists
    REPLACE = "replace"  # fails unless the row exists with the given etag


@dataclass(frozen=True)
class EntityWrite:
    """One operation of a transaction."""

    kind: WriteKind
    entity: Entity
    etag: str = ""  # the etag a REPLACE requires

    @classmethod
    def insert_or_replace(cls, entity: Entity, etag: str) -> EntityWrite:
        """An insert when `etag` is "" (the row must not exist yet), otherwise a replace guarded by it."""
        return cls(WriteKind.REPLACE, entity, etag) if etag else cls(WriteKind.INSERT, entity)


class EntityTables(Protocol):
    """What a backend must do. Query results are in RowKey order, as Table Storage returns them."""

    def get(self, table: TableKind, partition_key: str, row_key: str) -> StoredEntity | None: ...

    def query(
        self,
        table: TableKind,
        partition_key: str,
        limit: int | None = None,
        *,
        row_key_below: str | None = None,
        where: Mapping[str, str] | None = None,
        select: Sequence[str] | None = None,
    ) -> Iterator[StoredEntity]:
        """The partition's rows in RowKey order; only RowKeys below `row_key_below`, only rows whose text properties
        equal `where`, only the `select`ed properties (besides the keys) when given."""
        ...

    def insert(self, table: TableKind, entity: Entity) -> str:
        """The new etag. Raises ConflictError when the row exists."""
        ...

    def delete_rows(self, table: TableKind, partition_key: str, row_keys: Sequence[str]) -> None:
        """Delete these rows whatever their etag; rows already gone are fine."""
        ...

    def replace(self, table: TableKind, entity: Entity, etag: str) -> str:
        """The new etag. Raises ConflictError when the row changed since `etag` or is gone."""
        ...

    def delete(self, table: TableKind, partition_key: str, row_key: str, etag: str) -> None:
        """Raises ConflictError when the row changed since `etag`; a missing row is fine."""
        ...

    def transact(self, table: TableKind, writes: Sequence[EntityWrite]) -> list[str]:
        """All writes or none: the new etags, in order. One partition, at most 100 writes, each row once.

        Raises ConflictError, having written nothing, when any write would fail alone as `insert` or `replace` would.
        """
        ...


class EntityStateStore:
    """`StateStore` over any `EntityTables`: one encoding, so every backend stores exactly the same rows."""

    def __init__(self, tables: EntityTables) -> None:
        self._tables = tables

    def get_cluster(self, name: str) -> ClusterRecord | None:
        _check_key(name, "cluster name")
        stored = self._tables.get(TableKind.CLUSTERS, CLUSTERS_PARTITION, name)
        return None if stored is None else decode_cluster(stored.properties, stored.etag)

    def list_clusters(self) -> list[ClusterRecord]:
        return [
            decode_cluster(stored.properties, stored.etag)
            for stored in self._tables.query(TableKind.CLUSTERS, CLUSTERS_PARTITION)
        ]

    def insert_cluster(self, record: ClusterRecord) -> ClusterRecord:
        etag = self._tables.insert(TableKind.CLUSTERS, encode_cluster(record))
        return dataclasses.replace(record, etag=etag)

    def update_cluster(self, record: ClusterRecord) -> ClusterRecord:
        _require_etag(record.etag, f"cluster {record.name!r}")
        etag = self._tables.replace(TableKind.CLUSTERS, encode_cluster(record), record.etag)
        return dataclasses.replace(record, etag=etag)

    def list_instances(self, cluster_name: str) -> list[InstanceRecord]:
        return list(self.read_instances(cluster_name).records)

    def insert_instance(self, record: InstanceRecord) -> InstanceRecord:
        etag = self._tables.insert(TableKind.INSTANCES, encode_instance(record))
        return dataclasses.replace(record, etag=etag)

    def update_instance(self, record: InstanceRecord) -> InstanceRecord:
        _require_etag(record.etag, f"instance {record.instance_id!r}")
        etag = self._tables.replace(TableKind.INSTANCES, encode_instance(record), record.etag)
        return dataclasses.replace(record, etag=etag)

    def delete_instance(self, record: InstanceRecord) -> None:
        _require_etag(record.etag, f"instance {record.instance_id!r}")
        _check_key(record.cluster_name, "cluster name")
        _check_key(record.instance_id, "instance id")
        self._tables.delete(TableKind.INSTANCES, record.cluster_name, record.instance_id, record.etag)

    def read_instances(self, cluster_name: str) -> InstanceSnapshot:
        _check_key(cluster_name, "cluster name")
        records: list[InstanceRecord] = []
        fence_etag = ""
        for stored in self._tables.query(TableKind.INSTANCES, cluster_name):
            if stored.properties["RowKey"] == FENCE_ROW_KEY:
                fence_etag = stored.etag
            else:
                records.append(decode_instance(stored.properties, stored.etag))
        return InstanceSnapshot(tuple(records), fence_etag)

    def commit_instances(
        self, cluster_name: str, fence_etag: str, records: Sequence[InstanceRecord]
    ) -> InstanceSnapshot:
        """See `StateStore.commit_instances`.

        More than one transaction's worth is chained rather than refused: a tick that must change hundreds of rows
        (deleting a large cluster) has to make progress, and each link still requires the fence etag the previous
        link returned, so a racer that read before the first link can write none of its own.
        """
        entities = [_encode_for_commit(cluster_name, record) for record in records]
        _refuse_duplicate_instances(records)
        committed: list[InstanceRecord] = []
        for group in group_for_transactions([transaction_payload_bytes(entity) for entity in entities]):
            writes = [
                EntityWrite.insert_or_replace(encode_fence(cluster_name, uuid.uuid4().hex), fence_etag),
                *(EntityWrite.insert_or_replace(entities[index], records[index].etag) for index in group),
            ]
            try:
                fence_etag, *record_etags = self._tables.transact(TableKind.INSTANCES, writes)
            except ConflictError as conflict:
                if committed:
                    raise ConflictError(
                        f"{conflict} (after {len(committed)} of {len(records)} instance rows were committed)"
                    ) from conflict
                raise
            committed.extend(
                dataclasses.replace(records[index], etag=etag) for index, etag in zip(group, record_etags, strict=True)
            )
        return InstanceSnapshot(tuple(committed), fence_etag)

    def append_event(self, event: Event) -> None:
        self._tables.insert(TableKind.EVENTS, encode_event(event, uuid.uuid4().hex[:12]))

    def list_events(self, cluster_name: str, limit: int = 50) -> list[Event]:
        """Newest first."""
        _check_key(cluster_name, "cluster name")
        if limit <= 0:
            return []
        return [decode_event(stored.properties) for stored in self._tables.query(TableKind.EVENTS, cluster_name, limit)]

    def has_event_since(self, cluster_name: str, kind: str, since: datetime) -> bool:
        _check_key(cluster_name, "cluster name")
        # Newer events have smaller RowKeys: this reads the window only, filtered by kind on the service's side.
        newer = self._tables.query(
            TableKind.EVENTS,
            cluster_name,
            1,
            row_key_below=_event_key_bound(since),
            where={"kind": kind},
            select=("kind",),
        )
        return next(newer, None) is not None

    def prune_events(self, cluster_name: str, *, older_than: datetime, keep_newest: int) -> int:
        _check_key(cluster_name, "cluster name")
        too_old = _event_key_bound(older_than)  # RowKeys from here on are events from before `older_than`
        keys = [str(stored.properties["RowKey"]) for stored in self._row_keys(TableKind.EVENTS, cluster_name)]
        doomed = [key for index, key in enumerate(keys) if index >= keep_newest or key > too_old]
        self._tables.delete_rows(TableKind.EVENTS, cluster_name, doomed)
        return len(doomed)

    def purge_cluster_rows(self, cluster_name: str, *, before: datetime) -> int:
        _check_key(cluster_name, "cluster name")
        instances = [
            str(stored.properties["RowKey"])
            for stored in self._tables.query(TableKind.INSTANCES, cluster_name, select=("created_at",))
            if stored.properties["RowKey"] == FENCE_ROW_KEY
            or _from_utc(stored.properties.get("created_at"), "created_at") < before
        ]
        too_old = _event_key_bound(before)
        events = [
            str(stored.properties["RowKey"])
            for stored in self._row_keys(TableKind.EVENTS, cluster_name)
            if str(stored.properties["RowKey"]) > too_old
        ]
        self._tables.delete_rows(TableKind.INSTANCES, cluster_name, instances)
        self._tables.delete_rows(TableKind.EVENTS, cluster_name, events)
        return len(instances) + len(events)

    def _row_keys(self, table: TableKind, partition_key: str) -> Iterator[StoredEntity]:
        # Projected to one small property: a thousand keys per round trip, whatever the rows hold.
        return self._tables.query(table, partition_key, select=())


def _event_key_bound(at: datetime) -> str:
    """Below this RowKey: events after `at`; above it: events at or before `at` (RowKeys invert time)."""
    return event_row_key(at, "")


def _encode_for_commit(cluster_name: str, record: InstanceRecord) -> Entity:
    if record.cluster_name != cluster_name:
        raise ValueError(
            f"instance {record.instance_id!r} belongs to cluster {record.cluster_name!r}, not {cluster_name!r}: "
            "a commit writes one cluster's partition"
        )
    return encode_instance(record)


def _refuse_duplicate_instances(records: Sequence[InstanceRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.instance_id in seen:
            raise ValueError(f"instance {record.instance_id!r} appears twice in one commit")
        seen.add(record.instance_id)


def _require_etag(etag: str, what: str) -> None:
    if not etag:
        raise ValueError(f"{what} has no etag: write back a record read from the store (or returned by insert)")


def describe_row(table: TableKind, entity: Entity) -> str:
    return f"{table.value} row {entity['PartitionKey']}/{entity['RowKey']}"


# --------------------------------------------------------------------------------------------
# In memory: the same encoding and limits, rows in dicts behind one lock
# --------------------------------------------------------------------------------------------


class InMemoryEntityTables:
    """`EntityTables` in process memory. Thread-safe; etags are a counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[TableKind, dict[tuple[str, str], StoredEntity]] = {kind: {} for kind in TableKind}
        self._etag_counter = itertools.count(1)

    def get(self, table: TableKind, partition_key: str, row_key: str) -> StoredEntity | None:
        with self._lock:
            return self._rows[table].get((partition_key, row_key))

    def query(
        self,
        table: TableKind,
        partition_key: str,
        limit: int | None = None,
        *,
        row_key_below: str | None = None,
        where: Mapping[str, str] | None = None,
        select: Sequence[str] | None = None,
    ) -> Iterator[StoredEntity]:
        with self._lock:
            matching = sorted(
                (key, stored)
                for key, stored in self._rows[table].items()
                if key[0] == partition_key
                and (row_key_below is None or key[1] < row_key_below)
                and all(stored.properties.get(name) == value for name, value in (where or {}).items())
            )
        rows = [stored for _, stored in matching][:limit]
        if select is not None:
            kept = {*select, "PartitionKey", "RowKey"}
            rows = [StoredEntity({k: v for k, v in row.properties.items() if k in kept}, row.etag) for row in rows]
        return iter(rows)

    def delete_rows(self, table: TableKind, partition_key: str, row_keys: Sequence[str]) -> None:
        with self._lock:
            for key in row_keys:
                self._rows[table].pop((partition_key, key), None)

    def insert(self, table: TableKind, entity: Entity) -> str:
        key = _row_key_of(entity)
        with self._lock:
            self._check_insert(table, entity)
            return self._store(table, key, entity)

    def replace(self, table: TableKind, entity: Entity, etag: str) -> str:
        key = _row_key_of(entity)
        with self._lock:
            self._check_replace(table, entity, etag)
            return self._store(table, key, entity)

    def delete(self, table: TableKind, partition_key: str, row_key: str, etag: str) -> None:
        with self._lock:
            current = self._rows[table].get((partition_key, row_key))
            if current is None:
                return
            if current.etag != etag:
                raise ConflictError(f"{table.value} row {partition_key}/{row_key} changed since it was read")
            del self._rows[table][(partition_key, row_key)]

    def transact(self, table: TableKind, writes: Sequence[EntityWrite]) -> list[str]:
        check_transaction(table, writes)
        with self._lock:
            # Every row appears once, so checking all writes before the first one is applied is exact.
            for write in writes:
                if write.kind is WriteKind.INSERT:
                    self._check_insert(table, write.entity)
                else:
                    self._check_replace(table, write.entity, write.etag)
            return [self._store(table, _row_key_of(write.entity), write.entity) for write in writes]

    def _check_insert(self, table: TableKind, entity: Entity) -> None:
        if _row_key_of(entity) in self._rows[table]:
            raise ConflictError(f"{describe_row(table, entity)} already exists")

    def _check_replace(self, table: TableKind, entity: Entity, etag: str) -> None:
        current = self._rows[table].get(_row_key_of(entity))
        if current is None:
            raise ConflictError(f"{describe_row(table, entity)} was deleted since it was read")
        if current.etag != etag:
            raise ConflictError(f"{describe_row(table, entity)} changed since it was read")

    def _store(self, table: TableKind, key: tuple[str, str], entity: Entity) -> str:
        etag = f'W/"{next(self._etag_counter)}"'
        # A copy, so a caller mutating its dict afterwards cannot change what is stored.
        self._rows[table][key] = StoredEntity(dict(entity), etag)
        return etag


def _row_key_of(entity: Entity) -> tuple[str, str]:
    return str(entity["PartitionKey"]), str(entity["RowKey"])


def check_transaction(table: TableKind, writes: Sequence[EntityWrite]) -> None:
    """What the service refuses outright (HTTP 400), refused here by both backends alike."""
    if not 1 <= len(writes) <= MAX_TRANSACTION_OPERATIONS:
        raise ValueError(f"a transaction holds 1 to {MAX_TRANSACTION_OPERATIONS} writes, not {len(writes)}")
    keys = [_row_key_of(write.entity) for write in writes]
    partitions = {partition_key for partition_key, _ in keys}
    if len(partitions) != 1:
        raise ValueError(f"a transaction writes one partition of {table.value}, not {sorted(partitions)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"a transaction writes each {table.value} row at most once")
    for write in writes:
        if write.kind is WriteKind.REPLACE and not write.etag:
            raise ValueError(f"replacing {describe_row(table, write.entity)} in a transaction needs its etag")


class InMemoryStateStore(EntityStateStore):
    """For unit tests and local runs without Azurite; passes the same contract tests as `TableStateStore`."""

    def __init__(self) -> None:
        super().__init__(InMemoryEntityTables())
