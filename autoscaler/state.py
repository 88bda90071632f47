"""Cluster state: the `StateStore` protocol, its Table Storage implementation and an in-memory one.

Contract (tests/integration/test_state_contract.py runs it against both):
- Every update carries the ETag it read; a mismatch raises `ConflictError` and changes nothing.
- Inserting what exists raises `ConflictError`.
- Records come back with a fresh `etag`.
"""

from __future__ import annotations

from typing import Protocol

from autoscaler.model import ClusterRecord, Event, InstanceRecord


class StateError(Exception):
    """Base of the store's errors."""


class ConflictError(StateError):
    """Someone else wrote first (ETag mismatch) or the row already exists. Ends the tick cleanly."""


class ConfigTooLargeError(StateError):
    """The config does not fit in one entity even when split (HTTP 413)."""


class StateStore(Protocol):
    def get_cluster(self, name: str) -> ClusterRecord | None: ...

    def list_clusters(self) -> list[ClusterRecord]: ...

    def insert_cluster(self, record: ClusterRecord) -> ClusterRecord: ...

    def update_cluster(self, record: ClusterRecord) -> ClusterRecord: ...

    def list_instances(self, cluster_name: str) -> list[InstanceRecord]: ...

    def insert_instance(self, record: InstanceRecord) -> InstanceRecord: ...

    def update_instance(self, record: InstanceRecord) -> InstanceRecord: ...

    def delete_instance(self, record: InstanceRecord) -> None: ...

    def append_event(self, event: Event) -> None: ...

    def list_events(self, cluster_name: str, limit: int = 50) -> list[Event]:
        """Newest first."""
        ...
