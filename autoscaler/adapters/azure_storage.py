"""What the Azure Storage adapters (Tables and Queues) share: bounded clients, and which SDK errors mean an outage.

Importing this module registers `outage_reason` with the core (autoscaler.ports.register_outage_classifier), so the
service's guard turns azure-core's "did not answer" errors into `StorageUnavailableError` wherever they come from,
without the core importing azure-core.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from autoscaler.ports import StorageUnavailableError, register_outage_classifier

# The SDK's defaults (a 300 s read timeout, up to 10 retries with backoff up to 2 minutes) held every HTTP request
# for as long as storage was away. Bounded, a call gives up within about 2 x 3 s, so a request that meets an outage
# answers 503 within 10 s (docs/decisions/failure-isolation.md). A table operation takes milliseconds when storage is
# well; these bounds only matter when it is not.
STORAGE_CONNECT_TIMEOUT_S = 3.0
STORAGE_READ_TIMEOUT_S = 3.0
STORAGE_RETRIES = 1
STORAGE_RETRY_BACKOFF_S = 0.2
STORAGE_CLIENT_OPTIONS: dict[str, Any] = {
    "connection_timeout": STORAGE_CONNECT_TIMEOUT_S,
    "read_timeout": STORAGE_READ_TIMEOUT_S,
    "retry_total": STORAGE_RETRIES,
    "retry_connect": STORAGE_RETRIES,
    "retry_read": STORAGE_RETRIES,
    "retry_status": STORAGE_RETRIES,
    "retry_backoff_factor": STORAGE_RETRY_BACKOFF_S,
    "retry_backoff_max": 1,
}
_UNAVAILABLE_STATUSES = frozenset({HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS})


def outage_reason(error: BaseException) -> str | None:
    """Why `error` means storage did not answer (connection or read failure, timeout, 5xx, throttling), or None."""
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return f"storage did not answer: {type(error).__name__}: {error}"[:500]
    if isinstance(error, HttpResponseError):
        status = error.status_code or 0
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR or status in _UNAVAILABLE_STATUSES:
            return f"storage answered {status}: {error.reason or error}"[:500]
    return None


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn "storage did not answer" (connection or read failure, timeout, 5xx, throttling) into
    `StorageUnavailableError`; every other error (a conflict, a bad request) passes unchanged."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError, HttpResponseError) as error:
        reason = outage_reason(error)
        if reason is None:
            raise
        raise StorageUnavailableError(reason) from error


register_outage_classifier(outage_reason)
