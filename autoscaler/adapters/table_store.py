"""The `StateStore` port on Azure Table Storage (azure-data-tables): the same rows as the in-memory store.

Three tables (`<prefix>clusters`, `<prefix>instances`, `<prefix>events`); the encoding and the store logic are
autoscaler/adapters/entity_store.py's, this module is only the six entity primitives over the SDK, with bounded
timeouts and retries (autoscaler/adapters/azure_storage.py). Works the same against Azurite and Azure.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from http import HTTPStatus

from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    TableClient,
    TableErrorCode,
    TableServiceClient,
    TableTransactionError,
    TransactionOperation,
    UpdateMode,
)

from autoscaler.adapters.azure_storage import STORAGE_CLIENT_OPTIONS, storage_errors
from autoscaler.adapters.entity_store import (
    MAX_TRANSACTION_OPERATIONS,
    Entity,
    EntityStateStore,
    EntityWrite,
    StoredEntity,
    TableKind,
    WriteKind,
    check_transaction,
    describe_row,
)
from autoscaler.ports import ConflictError, StateError

TableCredential = TokenCredential | AzureNamedKeyCredential | AzureSasCredential

_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class AzureEntityTables:
    """`EntityTables` on azure-data-tables. Works the same against Azurite and Azure."""

    def __init__(self, table_service: TableServiceClient, table_prefix: str) -> None:
        self.table_names = {kind: f"{table_prefix}{kind.value}" for kind in TableKind}
        for name in self.table_names.values():
            if not _TABLE_NAME.match(name):
                raise ValueError(
                    f"table name {name!r} is invalid: the prefix must be alphanumeric and start with a letter"
                )
        self._service = table_service
        self._clients = {kind: table_service.get_table_client(name) for kind, name in self.table_names.items()}
        self._tables_exist = False
        self._tables_lock = threading.Lock()

    def ensure_tables(self) -> None:
        """Create the missing tables. One query when they all exist; safe to race with other processes."""
        wanted = set(self.table_names.values())
        name_filter = " or ".join(f"TableName eq @name{index}" for index in range(len(wanted)))
        parameters = {f"name{index}": name for index, name in enumerate(sorted(wanted))}
        with storage_errors():
            existing = {table.name for table in self._service.query_tables(name_filter, parameters=parameters)}
            for name in sorted(wanted - existing):
                with contextlib.suppress(ResourceExistsError):
                    self._service.create_table(name)
        self._tables_exist = True

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._service.close()

    def get(self, table: TableKind, partition_key: str, row_key: str) -> StoredEntity | None:
        client = self._client(table)
        try:
            with storage_errors():
                entity = client.get_entity(partition_key, row_key)
        except ResourceNotFoundError:
            return None
        return StoredEntity(entity, _etag_of(entity.metadata))

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
        client = self._client(table)
        conditions = ["PartitionKey eq @partition_key"]
        parameters: dict[str, str] = {"partition_key": partition_key}
        if row_key_below is not None:
            conditions.append("RowKey lt @row_key_below")
            parameters["row_key_below"] = row_key_below
        for index, (name, value) in enumerate(sorted((where or {}).items())):
            if not _PROPERTY_NAME.match(name):
                raise ValueError(f"{name!r} is not a property name")
            conditions.append(f"{name} eq @where{index}")
            parameters[f"where{index}"] = value
        # The page size bounds the first request, so a limited read costs one round trip.
        pages = client.query_entities(
            " and ".join(conditions),
            parameters=parameters,
            results_per_page=min(limit, 1000) if limit is not None else None,
            select=[*select, "PartitionKey", "RowKey"] if select is not None else None,
        )
        with storage_errors():  # pages are fetched while the caller iterates
            for entity in itertools.islice(pages, limit):
                yield StoredEntity(entity, _etag_of(entity.metadata))

    def insert(self, table: TableKind, entity: Entity) -> str:
        client = self._client(table)
        try:
            with storage_errors():
                metadata = client.create_entity(entity)
        except ResourceExistsError as error:
            raise ConflictError(f"{describe_row(table, entity)} already exists") from error
        return _etag_of(metadata)

    def replace(self, table: TableKind, entity: Entity, etag: str) -> str:
        client = self._client(table)
        with storage_errors():
            return self._replace(client, table, entity, etag)

    def _replace(self, client: TableClient, table: TableKind, entity: Entity, etag: str) -> str:
        try:
            metadata = client.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError as error:
            raise ConflictError(f"{describe_row(table, entity)} changed since it was read") from error
        except ResourceNotFoundError as error:
            raise ConflictError(f"{describe_row(table, entity)} was deleted since it was read") from error
        except HttpResponseError as error:
            if error.status_code == HTTPStatus.PRECONDITION_FAILED:
                raise ConflictError(f"{describe_row(table, entity)} changed since it was read") from error
            raise
        return _etag_of(metadata)

    def delete(self, table: TableKind, partition_key: str, row_key: str, etag: str) -> None:
        client = self._client(table)
        try:
            # The SDK already treats 404 as success.
            with storage_errors():
                client.delete_entity(partition_key, row_key, etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as error:
            raise ConflictError(f"{table.value} row {partition_key}/{row_key} changed since it was read") from error
        except HttpResponseError as error:
            if error.status_code == HTTPStatus.PRECONDITION_FAILED:
                raise ConflictError(f"{table.value} row {partition_key}/{row_key} changed since it was read") from error
            raise

    def delete_rows(self, table: TableKind, partition_key: str, row_keys: Sequence[str]) -> None:
        client = self._client(table)
        for start in range(0, len(row_keys), MAX_TRANSACTION_OPERATIONS):
            chunk = row_keys[start : start + MAX_TRANSACTION_OPERATIONS]
            operations: list[_TransactionOperation] = [
                (TransactionOperation.DELETE, _keys_entity(partition_key, key)) for key in chunk
            ]
            with storage_errors():
                try:
                    client.submit_transaction(operations)  # unconditional deletes: If-Match *
                except TableTransactionError as error:
                    if error.status_code != HTTPStatus.NOT_FOUND:
                        raise
                    # A row of the chunk is gone already (a racing pruner): the rest one by one, 404 being success.
                    for key in chunk:
                        client.delete_entity(partition_key, key)

    def transact(self, table: TableKind, writes: Sequence[EntityWrite]) -> list[str]:
        check_transaction(table, writes)
        client = self._client(table)
        try:
            with storage_errors():
                results = client.submit_transaction([_transaction_operation(write) for write in writes])
        except TableTransactionError as error:
            # The service rolls the whole transaction back and names the first write that failed.
            conflict = _WRITE_CONFLICT_STATUSES.get(error.status_code or 0)
            if conflict is not None and getattr(error, "error_code", None) not in _TABLE_ERROR_CODES:
                failed = writes[error.index] if 0 <= error.index < len(writes) else writes[0]
                raise ConflictError(
                    f"transaction of {len(writes)} writes rolled back: {describe_row(table, failed.entity)} {conflict}"
                ) from error
            raise
        return [_etag_of(metadata) for metadata in results]

    def _client(self, table: TableKind) -> TableClient:
        # Checked once per process, not per request: a warm function instance never re-creates tables.
        if not self._tables_exist:
            with self._tables_lock:
                if not self._tables_exist:
                    self.ensure_tables()
        return self._clients[table]


_WRITE_CONFLICT_STATUSES: dict[int, str] = {
    HTTPStatus.CONFLICT: "already exists",
    HTTPStatus.PRECONDITION_FAILED: "changed since it was read",
    HTTPStatus.NOT_FOUND: "was deleted since it was read",
}
# Errors about the table itself share those statuses but are no write conflict.
_TABLE_ERROR_CODES = {TableErrorCode.TABLE_NOT_FOUND, TableErrorCode.TABLE_BEING_DELETED}


_TransactionOperation = tuple[TransactionOperation, Entity] | tuple[TransactionOperation, Entity, Mapping[str, object]]


def _transaction_operation(write: EntityWrite) -> _TransactionOperation:
    if write.kind is WriteKind.INSERT:
        return (TransactionOperation.CREATE, write.entity)
    return (
        TransactionOperation.UPDATE,
        write.entity,
        {"mode": UpdateMode.REPLACE, "etag": write.etag, "match_condition": MatchConditions.IfNotModified},
    )


def _keys_entity(partition_key: str, row_key: str) -> Entity:
    return {"PartitionKey": partition_key, "RowKey": row_key}


def _etag_of(metadata: Mapping[str, object]) -> str:
    etag = metadata.get("etag")
    if not isinstance(etag, str) or not etag:
        raise StateError(f"the table service returned no etag: {metadata!r}")
    return etag


class TableStateStore(EntityStateStore):
    """Cluster state in three tables (`<prefix>clusters`, `<prefix>instances`, `<prefix>events`).

    Clusters: PartitionKey "cluster", RowKey = name. Instances: PartitionKey = cluster name, RowKey = instance id,
    plus the cluster's fence row (RowKey "~fence") that every `commit_instances` transaction rewrites.
    Events: PartitionKey = cluster name, RowKey = inverted time + random suffix (newest first).
    Tables are created on first use, once per store; call `ensure_tables()` to do it up front.
    """

    def __init__(self, table_service: TableServiceClient, *, table_prefix: str = "") -> None:
        self._azure_tables = AzureEntityTables(table_service, table_prefix)
        super().__init__(self._azure_tables)
        self.table_service = table_service

    @classmethod
    def from_connection_string(cls, conn_str: str, table_prefix: str = "") -> TableStateStore:
        """With bounded timeouts and retries (`STORAGE_CLIENT_OPTIONS`)."""
        return cls(
            TableServiceClient.from_connection_string(conn_str, **STORAGE_CLIENT_OPTIONS), table_prefix=table_prefix
        )

    @classmethod
    def from_account(cls, account_name: str, credential: TableCredential, table_prefix: str = "") -> TableStateStore:
        """Identity-based access (the function's managed identity needs Storage Table Data Contributor)."""
        endpoint = f"https://{account_name}.table.core.windows.net"
        client = TableServiceClient(endpoint=endpoint, credential=credential, **STORAGE_CLIENT_OPTIONS)
        return cls(client, table_prefix=table_prefix)

    @property
    def table_names(self) -> list[str]:
        return [self._azure_tables.table_names[kind] for kind in TableKind]

    def ensure_tables(self) -> None:
        self._azure_tables.ensure_tables()

    def close(self) -> None:
        self._azure_tables.close()
