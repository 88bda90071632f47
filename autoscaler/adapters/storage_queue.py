"""The `ReconcileQueue` port (autoscaler/ports.py): the Storage Queue adapter the app uses, and an in-memory one for
unit tests. The storage SDKs are imported on first use, so importing this module stays cheap."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from autoscaler.views import ReconcileMessage


class StorageReconcileQueue:
    """Sends JSON messages (host.json sets `messageEncoding: none`, so the trigger reads them as they are)."""

    def __init__(self, queue_client: Any) -> None:
        self._client = queue_client
        self._created = False
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, connection_string: str, queue_name: str) -> StorageReconcileQueue:
        from azure.storage.queue import QueueClient

        return cls(QueueClient.from_connection_string(connection_string, queue_name, **_bounded_client_options()))

    @classmethod
    def from_account(cls, account_name: str, credential: Any, queue_name: str) -> StorageReconcileQueue:
        from azure.storage.queue import QueueClient

        url = f"https://{account_name}.queue.core.windows.net"
        return cls(QueueClient(url, queue_name, credential=credential, **_bounded_client_options()))

    def send(self, message: ReconcileMessage, *, delay_s: int = 0) -> None:
        """Raises `StorageUnavailableError` when the queue service does not answer in time (or answers 5xx)."""
        from azure.core.exceptions import ResourceNotFoundError

        from autoscaler.adapters.azure_storage import storage_errors

        body = message.model_dump_json()
        visibility = delay_s or None
        with storage_errors():
            try:
                self._client.send_message(body, visibility_timeout=visibility)
            except ResourceNotFoundError:
                # First use on a fresh storage account (Azure creates it in Bicep; Azurite starts empty).
                self._ensure_queue()
                self._client.send_message(body, visibility_timeout=visibility)

    def _ensure_queue(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with self._lock:
            if self._created:
                return
            with contextlib.suppress(ResourceExistsError):
                self._client.create_queue()
            self._created = True


def _bounded_client_options() -> dict[str, Any]:
    """The Table store's bounds (autoscaler/adapters/azure_storage.py), in the storage-queue SDK's terms: its default
    retry waits 15 s and more between attempts, so a send during an outage would hold an HTTP request for minutes."""
    from azure.storage.queue import LinearRetry

    from autoscaler.adapters.azure_storage import STORAGE_CONNECT_TIMEOUT_S, STORAGE_READ_TIMEOUT_S, STORAGE_RETRIES

    return {
        "connection_timeout": STORAGE_CONNECT_TIMEOUT_S,
        "read_timeout": STORAGE_READ_TIMEOUT_S,
        "retry_policy": LinearRetry(backoff=0, random_jitter_range=0, retry_total=STORAGE_RETRIES),
    }


class InMemoryReconcileQueue:
    def __init__(self) -> None:
        self.messages: list[ReconcileMessage] = []
        self._lock = threading.Lock()

    def send(self, message: ReconcileMessage, *, delay_s: int = 0) -> None:
        with self._lock:
            self.messages.append(message)

    def drain(self) -> list[ReconcileMessage]:
        with self._lock:
            taken, self.messages = self.messages, []
        return taken
