"""ARM error answers: the `{"error": {...}}` body and the exact codes and messages Azure gives.

Each builder names where its code, status and message shape were confirmed.
"""

from __future__ import annotations

import json
from typing import Any

JsonDict = dict[str, Any]


class ArmHttpError(Exception):
    """An ARM error answer: status, code and message, as Azure's `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after_s: float | None = None,
        *,
        target: str | None = None,
        details: list[JsonDict] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.target = target
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> JsonDict:
        error: JsonDict = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        if self.details:
            error["details"] = self.details
        return {"error": error}


def error_response(error: ArmHttpError) -> tuple[int, dict[str, str], JsonDict | None]:
    headers = {"x-ms-error-code": error.code, **error.headers}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(int(error.retry_after_s))
    return error.status, headers, error.body()


# ------------------------------------------------------------------------------------------ references


def invalid_resource_reference(referenced_id: str, referencing_id: str) -> ArmHttpError:
    """A reference to a resource that does not exist: 400 InvalidResourceReference, with a NotFound detail.

    Status and message as Network answers them: MicrosoftDocs/azure-docs#32363 (StatusCode=400) and
    Azure/azure-cli#1237 (the message and its `NotFound` detail).
    """
    return ArmHttpError(
        400,
        "InvalidResourceReference",
        f"Resource {referenced_id} referenced by resource {referencing_id} was not found. Please make sure that the "
        "referenced resource exists, and that both resources are in the same region.",
        details=[{"code": "NotFound", "message": f"Resource {referenced_id} not found."}],
    )


def referenced_resource_not_provisioned(
    referenced_id: str, referencing_id: str, state: str, operation_name: str
) -> ArmHttpError:
    """A reference to a resource whose provisioning state is not Succeeded: 400 ReferencedResourceNotProvisioned.

    Today's Network answers it as a 400 (pulumi/pulumi-azure-native#4340 "Status=400
    Code=ReferencedResourceNotProvisioned", Azure-Samples/azuresandbox#329 "unexpected status 400 ... with error:
    ReferencedResourceNotProvisioned", both for a peering whose VNet was Updating). Older answers wrapped the same
    detail in a 429 RetryableError (hashicorp/terraform#7986, 2016-2017); the current form is modelled.
    """
    return ArmHttpError(
        400,
        "ReferencedResourceNotProvisioned",
        f"Cannot proceed with operation because resource {referenced_id} used by resource {referencing_id} is not in "
        f"Succeeded state. Resource is in {state} state and the last operation that updated/is updating the resource "
        f"is {operation_name}.",
    )


def retryable_due_to_another_operation(
    resource_id: str, operation_name: str, operation_id: str, retry_after_s: int
) -> ArmHttpError:
    """A write to a network resource that another operation is still changing.

    "the network resource provider returns 429 with the RetryableErrorDueToAnotherOperation error code when the
    target resource is locked by another operation" (MicrosoftDocs azure-docs,
    articles/azure-resource-manager/management/request-limits-and-throttling.md, "Error code"); the envelope
    (429 RetryableError, "A retryable error occurred.", the detail naming the operation) as seen in
    kubernetes-sigs/cluster-api-provider-azure#4385. (When the conflict only surfaces while the operation runs, Azure
    reports `AnotherOperationInProgress` as the operation's failure instead: microsoft/AzureTRE#2222.)
    """
    return ArmHttpError(
        429,
        "RetryableError",
        "A retryable error occurred.",
        retry_after_s,
        details=[
            {
                "code": "RetryableErrorDueToAnotherOperation",
                "message": f"Operation {operation_name} ({operation_id}) is updating resource {resource_id}. "
                f"The call can be retried in {retry_after_s} seconds.",
            }
        ],
    )


def vm_concurrent_request() -> ArmHttpError:
    """A VM PUT with another goal while the VM's own operation runs: Compute's 409 Conflict (Azure/azure-cli#15765);
    the rule itself is the ARM RPC's ("never more than one ongoing PUT ... 409 Conflict",
    Azure/azure-resource-manager-rpc v1.0/Addendum.md, "Creating/Updating using PUT")."""
    return ArmHttpError(
        409,
        "Conflict",
        "The request failed due to conflict with a concurrent request. To resolve it, please refer to "
        "https://aka.ms/activitylog to get more details on the conflicting requests.",
    )


def vm_marked_for_deletion(vm_name: str, operation: str = "Update VM") -> ArmHttpError:
    """A write to a VM being deleted (cloud-barista/cb-spider#342; Azure/azure-sdk-for-python#2702)."""
    return ArmHttpError(
        409,
        "OperationNotAllowed",
        f"Operation '{operation}' is not allowed on VM '{vm_name}' since the VM is marked for deletion. You can only "
        "retry the Delete operation (or wait for an ongoing one to complete).",
    )


OPERATION_PREEMPTED = (
    # A VM create overtaken by its delete fails so (osbuild/osbuild-composer#1447).
    "OperationPreempted",
    "Operation execution has been preempted by a more recent operation.",
)


# ------------------------------------------------------------------------------------------ authorization


def authorization_failed(principal_id: str, action: str, scope: str) -> ArmHttpError:
    """403 AuthorizationFailed, message as ARM words it (Azure/ARO-RP#66, microsoft/foundry-dev-tools#555)."""
    return ArmHttpError(
        403,
        "AuthorizationFailed",
        f"The client '{principal_id}' with object id '{principal_id}' does not have authorization to perform action "
        f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh "
        "your credentials.",
    )


def linked_authorization_failed(
    principal_id: str, action: str, scope: str, linked: list[tuple[str, str]]
) -> ArmHttpError:
    """403 LinkedAuthorizationFailed: allowed on the target, not on a resource the request links to.

    Message shape from microsoft/planetary-computer-hub#25 and kubernetes-sigs/cloud-provider-azure#1999 (one linked
    action); several are listed with "action(s)" as in openshift/release#76853.
    """
    actions = ",".join(action for action, _ in linked)
    scopes = ",".join(linked_scope for _, linked_scope in linked)
    noun = "action" if len(linked) == 1 else "action(s)"
    respectively = "" if len(linked) == 1 else " (respectively)"
    return ArmHttpError(
        403,
        "LinkedAuthorizationFailed",
        f"The client '{principal_id}' with object id '{principal_id}' has permission to perform action '{action}' on "
        f"scope '{scope}'; however, it does not have permission to perform {noun} '{actions}' on the linked scope(s) "
        f"'{scopes}'{respectively} or the linked scope(s) are invalid.",
    )


# ------------------------------------------------------------------------------------------ throttling


def subscription_requests_throttled(
    kind: str, subscription_id: str, principal_id: str, retry_after_s: int, headers: dict[str, str]
) -> ArmHttpError:
    """ARM's own throttle (per subscription and principal): 429 SubscriptionRequestsThrottled, message as in
    velero-io/velero#9171; limits in request-limits-and-throttling.md (see throttling.py)."""
    return ArmHttpError(
        429,
        "SubscriptionRequestsThrottled",
        f"Number of '{kind}' requests for subscription '{subscription_id}' actor '{principal_id}' exceeded. Please "
        f"try again after '{retry_after_s}' seconds after additional tokens are available. Refer to "
        "https://aka.ms/arm-throttling for additional information.",
        retry_after_s,
        headers=headers,
    )


def compute_too_many_requests(
    policy: str,
    *,
    start: str,
    end: str,
    allowed: int,
    measured: int,
    retry_after_s: int,
    headers: dict[str, str],
) -> ArmHttpError:
    """Compute's throttle: 429, code OperationNotAllowed, a TooManyRequests detail naming the exhausted policy, and
    Retry-After (MicrosoftDocs, troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors,
    "Throttling error details")."""
    return ArmHttpError(
        429,
        "OperationNotAllowed",
        "The server rejected the request because too many requests have been received for this subscription.",
        retry_after_s,
        details=[
            {
                "code": "TooManyRequests",
                "target": policy,
                "message": json.dumps(
                    {
                        "operationGroup": policy,
                        "startTime": start,
                        "endTime": end,
                        "allowedRequestCount": allowed,
                        "measuredRequestCount": measured,
                    },
                    separators=(",", ":"),
                ),
            }
        ],
        headers=headers,
    )


def network_too_many_requests(policy: str, retry_after_s: int) -> ArmHttpError:
    """Network's own write/read limits (request-limits-and-throttling.md, "Network throttling") answer 429 with
    Retry-After (Azure/azure-libraries-for-net#1001); the error code is not documented: "TooManyRequests" is assumed."""
    return ArmHttpError(
        429,
        "TooManyRequests",
        f"Number of requests exceeded the limit of policy {policy} for this subscription. Please retry after "
        f"{retry_after_s} seconds.",
        retry_after_s,
    )
