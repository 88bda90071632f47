"""The reconcile queue adapter: bounded like the Table store, so a send during an outage cannot hold a request."""

from __future__ import annotations

from typing import Any

from autoscaler.queueing import StorageReconcileQueue
from autoscaler.state import STORAGE_CONNECT_TIMEOUT_S, STORAGE_READ_TIMEOUT_S, STORAGE_RETRIES

CONNECTION = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:1/a;"


def test_the_queue_client_has_the_stores_timeouts_and_one_retry_without_a_long_backoff() -> None:
    queue = StorageReconcileQueue.from_connection_string(CONNECTION, "reconcile")
    pipeline: Any = queue._client._pipeline
    config = pipeline._transport.connection_config
    assert (config.timeout, config.read_timeout) == (STORAGE_CONNECT_TIMEOUT_S, STORAGE_READ_TIMEOUT_S)
    [retry] = [p for p in pipeline._impl_policies if type(p).__name__ == "LinearRetry"]
    assert (retry.total_retries, retry.backoff) == (STORAGE_RETRIES, 0)
