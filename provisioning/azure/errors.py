"""Azure failures mapped to the typed errors of provisioning/cloud.py, in ONE table.

Each row names an Azure error code, the typed error it becomes, how long the planner should avoid the
offering (TTL, Karpenter-for-Azure style) and why. HTTP status rules come after the code rules:
429 -> ThrottledError (with Retry-After), 404 -> NotFoundError, 5xx -> TransientError, other 4xx -> InvalidRequestError.

`classify(...)` is pure and also serves a VM whose creation failed asynchronously (how Azure usually reports capacity
and quota: the PUT is accepted, the allocation fails later): its instance view shows `ProvisioningState/failed/<code>`,
`classify_failed_provisioning` turns "<code>: <message>" into the typed error and `failure_class_of` into the
`CloudInstance.failure_*` fields the reconcile shell reads.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError, ServiceResponseError

from autoscaler.ports import (
    CapacityError,
    CloudError,
    InvalidRequestError,
    NotFoundError,
    QuotaError,
    ThrottledError,
    TransientError,
)

HOUR_S = 3600.0
MINUTE_S = 60.0


@dataclass(frozen=True)
class ErrorRule:
    code: str  # Azure's error code, compared case-insensitively
    error_type: type[CloudError]
    ttl_s: float  # capacity/quota only: how long the offering is marked unavailable
    reason: str
    message_contains: str = ""  # the rule applies only if the message contains this (case-insensitive)
    spot_ttl_s: float | None = None  # a different TTL when the VM is spot


# fmt: off
ERROR_TABLE: tuple[ErrorRule, ...] = (
    # No capacity for the size in the region: on-demand rarely comes back within the day, spot often does.
    ErrorRule("SkuNotAvailable", CapacityError, 23 * HOUR_S, "size not offered here now", spot_ttl_s=HOUR_S),
    # The region or zone has no hardware free for this size right now.
    ErrorRule("AllocationFailed", CapacityError, HOUR_S, "no capacity for this size now"),
    ErrorRule("ZonalAllocationFailed", CapacityError, HOUR_S, "no capacity for this size in the zone"),
    # Size + zone + features (accelerated networking, spot...) cannot be satisfied together.
    ErrorRule("OverconstrainedAllocationRequest", CapacityError, HOUR_S, "size and constraints cannot be met"),
    ErrorRule("OverconstrainedZonalAllocationRequest", CapacityError, HOUR_S, "size and zone cannot be met"),
    # Spot has its own vCPU pool; it frees slowly.
    ErrorRule("LowPriorityQuota", QuotaError, HOUR_S, "spot vCPU quota exhausted"),
    # Regional or family vCPU quota: frees as soon as other VMs go away, so retry sooner.
    ErrorRule("OperationNotAllowed", QuotaError, 15 * MINUTE_S, "vCPU quota exceeded", message_contains="quota"),
    ErrorRule("QuotaExceeded", QuotaError, 15 * MINUTE_S, "quota exceeded"),
    # The spot price moved above our cap: the offering is unavailable at this price for a while.
    ErrorRule("SpotPriceGreaterThanProvidedMaxPrice", CapacityError, HOUR_S, "spot price above maxPrice"),
    # Requests Azure will never accept as written.
    ErrorRule("MaxPriceValueInvalid", InvalidRequestError, 0.0, "billingProfile.maxPrice is invalid"),
    ErrorRule("AzureSpotVMNotSupportedInAvailabilitySet", InvalidRequestError, 0.0, "spot VM in an availability set"),
    ErrorRule("InvalidParameter", InvalidRequestError, 0.0, "a VM parameter is invalid"),
    ErrorRule("ImageNotFound", InvalidRequestError, 0.0, "the image does not exist"),
    # The VM exists with another model (e.g. the config changed under the same instance id): retrying cannot help.
    ErrorRule("PropertyChangeNotAllowed", InvalidRequestError, 0.0, "the existing VM differs from this launch"),
    ErrorRule("AuthorizationFailed", InvalidRequestError, 0.0, "the app's identity lacks a permission"),
    # The network resource is locked by another operation (a 429 that is not throttling).
    ErrorRule("RetryableErrorDueToAnotherOperation", TransientError, 0.0, "resource busy with another operation"),
    ErrorRule("AnotherOperationInProgress", TransientError, 0.0, "resource busy with another operation"),
    # In use: a NIC still attached, a subnet with NICs, an NSG on a subnet; gone once the holder is deleted.
    ErrorRule("NicInUse", TransientError, 0.0, "NIC still attached to a VM"),
    ErrorRule("InUseSubnetCannotBeDeleted", TransientError, 0.0, "subnet still has NICs"),
    ErrorRule("InUseNetworkSecurityGroupCannotBeDeleted", TransientError, 0.0, "NSG still used by a subnet"),
    ErrorRule("PublicIPAddressCannotBeDeleted", TransientError, 0.0, "public IP still attached to a NIC"),
    # A referenced resource (e.g. the subnet being created) is not there yet: the next tick retries.
    ErrorRule("InvalidResourceReference", TransientError, 0.0, "a referenced resource does not exist yet"),
    # Azure's network provider refuses a reference to a resource that is still Updating (an NSG named by a subnet
    # of a VNet being written, a VNet named by a peering or a NIC): it succeeds once that operation ends.
    ErrorRule("ReferencedResourceNotProvisioned", TransientError, 0.0, "a referenced resource is still updating"),
    # Network writes that Azure cancels or asks to retry while it reconciles the same resource.
    ErrorRule("RetryableError", TransientError, 0.0, "Azure asks to retry"),
    ErrorRule("CanceledAndSupersededDueToAnotherOperation", TransientError, 0.0, "superseded by another write"),
    # A subnet, NIC or image in another resource group needs join/read rights there (docs/deploy.md): a
    # configuration problem that retrying cannot fix.
    ErrorRule("LinkedAuthorizationFailed", InvalidRequestError, 0.0, "the app's identity lacks a right on a linked "
              "resource (subnet or image in another resource group: see docs/deploy.md)"),
    # A write to a VM or scale set while another write to it runs (ARM RPC: "never more than one ongoing PUT", 409
    # Conflict; Azure/azure-cli#15765): a scale set's capacity write during its scale-out, e.g.; passes once it ends.
    ErrorRule("Conflict", TransientError, 0.0, "another write to it is still running",
              message_contains="concurrent request"),
    # Any other OperationNotAllowed (e.g. "VM is being deleted") passes once the other operation ends.
    ErrorRule("OperationNotAllowed", TransientError, 0.0, "operation not allowed in the current state"),
    ErrorRule("ResourceNotFound", NotFoundError, 0.0, "resource not found"),
    ErrorRule("NotFound", NotFoundError, 0.0, "resource not found"),
    ErrorRule("ResourceGroupNotFound", InvalidRequestError, 0.0, "the resource group does not exist"),
    # Peering the cluster VNet with the app VNet: their ranges, or the ranges of two clusters peered with the app
    # (two names hashed to the same 10.<octet>.0.0/16, see network.address_space), must not overlap.
    ErrorRule("VnetAddressSpacesOverlap", InvalidRequestError, 0.0, "the cluster and app VNets overlap"),
    ErrorRule(
        "VnetAddressSpaceOverlapsWithAlreadyPeeredVnet",
        InvalidRequestError,
        0.0,
        "another VNet peered with the app VNet has this range",
    ),
)
# fmt: on

# 429s that mean "this resource is busy", not "you are over your request budget": retried on the next tick
# without pausing every launch of the cluster.
_LOCKED_CODES = {
    "retryableerrorduetoanotheroperation",
    "anotheroperationinprogress",
    "retryableerror",
    "canceledandsupersededduetoanotheroperation",
}


def _find_rule(code: str, message: str) -> ErrorRule | None:
    for rule in ERROR_TABLE:
        if rule.code.lower() != code.lower():
            continue
        if rule.message_contains and rule.message_contains.lower() not in message.lower():
            continue
        return rule
    return None


def classify(  # noqa: PLR0911 -- the error table's precedence, one return per rule kind
    code: str,
    message: str,
    *,
    status: int | None = None,
    retry_after_s: float | None = None,
    is_spot: bool = False,
) -> CloudError:
    """The typed error for an Azure answer (code, message, HTTP status)."""
    text = f"{code}: {message}" if code else message
    rule = _find_rule(code, message)
    # A 429 is throttling unless its code says the resource is merely locked by another operation.
    if status == 429 and code.lower() not in _LOCKED_CODES:
        return ThrottledError(text, code=code or "TooManyRequests", retry_after_s=retry_after_s or 0.0)
    if rule is not None:
        if rule.error_type is CapacityError or rule.error_type is QuotaError:
            ttl_s = rule.spot_ttl_s if is_spot and rule.spot_ttl_s is not None else rule.ttl_s
            factory: Callable[..., CloudError] = rule.error_type
            return factory(f"{text} ({rule.reason})", code=rule.code, ttl_s=ttl_s)
        return rule.error_type(f"{text} ({rule.reason})", code=rule.code)
    if status == 404:
        return NotFoundError(text, code=code or "NotFound")
    if status is not None and (status >= 500 or status == 408):
        return TransientError(text, code=code or str(status))
    if status is not None and status >= 400:
        return InvalidRequestError(text, code=code or str(status))
    return TransientError(text, code=code)


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now_s is None else now_s))


def from_azure_error(error: AzureError, *, is_spot: bool = False) -> CloudError:
    """The typed error for an exception raised by the Azure SDK."""
    if isinstance(error, HttpResponseError):
        code = ""
        message = error.message or str(error)
        if error.error is not None:
            code = error.error.code or ""
            message = error.error.message or message
        # The typed response API omits `headers`, which every transport's response has.
        headers: Mapping[str, str] = getattr(error.response, "headers", None) or {}
        retry_after = parse_retry_after(headers.get("Retry-After"))
        code = code or headers.get("x-ms-error-code", "")
        status = error.status_code
        return classify(code, message, status=status, retry_after_s=retry_after, is_spot=is_spot)
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"connection to Azure failed: {error}", code="ConnectionError")
    return TransientError(str(error), code=type(error).__name__)


def classify_failed_provisioning(detail: str, *, is_spot: bool = False) -> CloudError:
    """The typed error for a VM whose creation failed asynchronously; `detail` is "<code>: <message>"."""
    code, _, message = detail.partition(": ")
    return classify(code, message, is_spot=is_spot)


@dataclass(frozen=True)
class FailureClass:
    """How the planner should take a failed provisioning: the `CloudInstance.failure_*` fields."""

    kind: str  # "capacity" | "quota" | "invalid" | "" (transient or unknown: nothing to avoid)
    code: str
    ttl_s: float  # capacity/quota only: how long the node type is avoided


def failure_class_of(error: CloudError) -> FailureClass:
    if isinstance(error, CapacityError):
        return FailureClass("capacity", error.code, error.ttl_s)
    if isinstance(error, QuotaError):
        return FailureClass("quota", error.code, error.ttl_s)
    if isinstance(error, InvalidRequestError):
        return FailureClass("invalid", error.code, 0.0)
    return FailureClass("", error.code, 0.0)
