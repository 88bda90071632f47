"""The `reconcile` queue: the Storage Queue adapter used by the app, and an in-memory one for unit tests."""

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

        return cls(QueueClient.from_connection_string(connection_string, queue_name))

    @classmethod
    def from_account(cls, account_name: str, credential: Any, queue_name: str) -> StorageReconcileQueue:
        from azure.storage.queue import QueueClient

        return cls(QueueClient(f"https://{account_name}.queue.core.windows.net", queue_name, credential=credential))

    def send(self, message: ReconcileMessage, *, delay_s: int = 0) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        body = message.model_dump_json()
        visibility = delay_s or None
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
