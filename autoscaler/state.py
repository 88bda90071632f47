"""Compatibility: cluster state moved to the layer it belongs to (docs/decisions/layout.md).

- the port (`StateStore`, `InstanceSnapshot`) and its errors: autoscaler/ports.py;
- the row encoding, its limits and the in-memory store (tests, local runs without Azurite):
  autoscaler/adapters/entity_store.py;
- Azure Table Storage (`TableStateStore`) and the bounded storage clients: autoscaler/adapters/table_store.py and
  autoscaler/adapters/azure_storage.py (whose `storage_errors` is the one re-exported here);
- `GuardedStore`, the store as the service sees it: autoscaler/service.py.

Old import paths keep working through these re-exports, so files not yet moved need no edit. The core imports the
new modules; import-linter keeps it from importing this one (it sits with the adapters).
"""

from __future__ import annotations

from autoscaler.adapters.azure_storage import (
    STORAGE_CLIENT_OPTIONS,
    STORAGE_CONNECT_TIMEOUT_S,
    STORAGE_READ_TIMEOUT_S,
    STORAGE_RETRIES,
    STORAGE_RETRY_BACKOFF_S,
    storage_errors,
)
from autoscaler.adapters.entity_store import (
    CLUSTERS_PARTITION,
    FENCE_ROW_KEY,
    MAX_ENTITY_BYTES,
    MAX_PROPERTY_UTF16_UNITS,
    MAX_RECORDS_PER_TRANSACTION,
    MAX_TRANSACTION_OPERATIONS,
    MAX_TRANSACTION_PAYLOAD_BYTES,
    Entity,
    EntityStateStore,
    EntityTables,
    EntityValue,
    EntityWrite,
    InMemoryEntityTables,
    InMemoryStateStore,
    StoredEntity,
    TableKind,
    WriteKind,
    decode_cluster,
    decode_event,
    decode_instance,
    encode_cluster,
    encode_event,
    encode_fence,
    encode_instance,
    entity_size_bytes,
    event_row_key,
    get_text,
    group_for_transactions,
    put_text,
    split_text,
    transaction_payload_bytes,
    utf16_units,
)
from autoscaler.adapters.table_store import (
    AzureEntityTables,
    TableCredential,
    TableStateStore,
)
from autoscaler.ports import (
    ConfigTooLargeError,
    ConflictError,
    InstanceSnapshot,
    StateError,
    StateStore,
    StorageUnavailableError,
)
from autoscaler.service import GuardedStore

__all__ = [
    "CLUSTERS_PARTITION",
    "FENCE_ROW_KEY",
    "MAX_ENTITY_BYTES",
    "MAX_PROPERTY_UTF16_UNITS",
    "MAX_RECORDS_PER_TRANSACTION",
    "MAX_TRANSACTION_OPERATIONS",
    "MAX_TRANSACTION_PAYLOAD_BYTES",
    "STORAGE_CLIENT_OPTIONS",
    "STORAGE_CONNECT_TIMEOUT_S",
    "STORAGE_READ_TIMEOUT_S",
    "STORAGE_RETRIES",
    "STORAGE_RETRY_BACKOFF_S",
    "AzureEntityTables",
    "ConfigTooLargeError",
    "ConflictError",
    "Entity",
    "EntityStateStore",
    "EntityTables",
    "EntityValue",
    "EntityWrite",
    "GuardedStore",
    "InMemoryEntityTables",
    "InMemoryStateStore",
    "InstanceSnapshot",
    "StateError",
    "StateStore",
    "StorageUnavailableError",
    "StoredEntity",
    "TableCredential",
    "TableKind",
    "TableStateStore",
    "WriteKind",
    "decode_cluster",
    "decode_event",
    "decode_instance",
    "encode_cluster",
    "encode_event",
    "encode_fence",
    "encode_instance",
    "entity_size_bytes",
    "event_row_key",
    "get_text",
    "group_for_transactions",
    "put_text",
    "split_text",
    "storage_errors",
    "transaction_payload_bytes",
    "utf16_units",
]
