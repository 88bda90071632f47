"""The `CloudProvider` protocol and the typed errors that drive the planner's behaviour.

Contracts (every implementation passes tests/integration/test_provider_contract.py):
- `list_instances` is ONE call to the cloud and returns every live instance of the cluster, found by tags.
  It is eventually consistent: an instance launched a moment ago may be missing for a while.
- `launch` starts an instance and returns without waiting for it to boot. It is idempotent by
  `request.request_id` / `request.instance_id`: calling it twice never creates two instances.
- `terminate` starts the deletion and returns. An instance that is already gone is success, not an error.
- `destroy_cluster` removes whatever the provider created for the cluster besides instances (networks...),
  once no instance is left; it is idempotent and reports what it removed.
Errors are the subclasses of `CloudError` below; never a bare SDK exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from autoscaler.model import CloudInstance, LaunchRequest


class CloudError(Exception):
    """Base of every provider error. `retryable` says whether the same call may succeed later."""

    retryable: bool = True

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class CapacityError(CloudError):
    """No capacity for this size/zone/priority now (AllocationFailed, SkuNotAvailable, spot gone...).

    The planner marks the node type unavailable for `ttl_s` and falls back to another type.
    """

    def __init__(self, message: str, *, code: str = "", ttl_s: float = 3600.0) -> None:
        super().__init__(message, code=code)
        self.ttl_s = ttl_s


class QuotaError(CloudError):
    """The subscription's vCPU quota (regional, family or spot) would be exceeded."""

    def __init__(self, message: str, *, code: str = "", ttl_s: float = 3600.0) -> None:
        super().__init__(message, code=code)
        self.ttl_s = ttl_s


class ThrottledError(CloudError):
    """429: the cloud asks us to wait `retry_after_s` before the next call of this kind."""

    def __init__(self, message: str, *, code: str = "", retry_after_s: float = 0.0) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class TransientError(CloudError):
    """5xx, timeouts, resource locked by another operation: try again on a later tick."""


class InvalidRequestError(CloudError):
    """The cloud rejected the request itself (bad image, bad max price...): retrying will not help."""

    retryable = False


class NotFoundError(CloudError):
    """The instance or resource does not exist. `terminate` treats it as success."""

    retryable = False


@dataclass(frozen=True)
class DestroyReport:
    removed: tuple[str, ...] = ()  # resource ids or descriptions, in removal order
    remaining: tuple[str, ...] = ()  # what could not be removed yet (retry on the next tick)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        return not self.remaining


class CloudProvider(Protocol):
    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        """Every non-terminated instance of the cluster, in ONE cloud call."""
        ...

    def launch(self, request: LaunchRequest) -> None:
        """Start one instance; do not wait for it. Idempotent by request id."""
        ...

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        """Start deleting one instance; already gone is success."""
        ...

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        """Remove what the provider created besides instances. Called once no instance is left."""
        ...


@runtime_checkable
class RemembersHeadAddress(Protocol):
    """Optional: a provider that would otherwise pay a cloud read to learn the head's address (Azure: a NIC read)
    takes it from the cluster's stored state instead, so a fresh process (a new Functions instance) pays nothing."""

    def remember_address(self, cloud_instance_id: str, private_ip: str, public_ip: str = "") -> None: ...
