"""The ARM clients of one cluster's provider, and how they retry.

Retries are bounded so that a tick stays short whatever Azure answers: azure-core's retry policy would sleep a
`Retry-After: 1200` in full, outliving the function invocation, so a longer ask fails the call with ThrottledError
and the reconcile shell pauses launches for that long instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

from autoscaler.ports import InvalidRequestError, NotFoundError
from provisioning.azure.errors import from_azure_error, parse_retry_after
from provisioning.azure.network import SubnetReference
from provisioning.azure.write_budget import WriteBudget, budget_for

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


@dataclass(frozen=True)
class AzureSettings:
    """Where and how to call ARM. `base_url`/`connection_verify` point the SDK at the loopback emulator in tests."""

    subscription_id: str
    function_subnet_id: str = ""  # app setting FUNCTION_SUBNET_ID: may reach the Ray ports of every cluster
    base_url: str | None = None
    connection_verify: str | None = None  # a CA bundle path
    retry_total: int = 2
    retry_backoff_factor_s: float = 0.5
    retry_backoff_max_s: float = 4.0
    max_retry_after_s: float = 5.0  # a longer Retry-After is not slept: the call fails with ThrottledError
    request_timeout_s: float = 20.0
    delete_retries: int = 3  # `InUse` answers during destroy_cluster are retried this many times ...
    delete_retry_backoff_s: float = 0.5  # ... with this backoff, doubling
    # One-time network writes (NSG, VNet, peerings) are awaited at most this long within one launch; past it the
    # launch fails as transient and the next tick carries on from what ARM shows.
    network_wait_s: float = 30.0
    network_poll_interval_s: float = 1.0
    # Bursts (launch_many / terminate_many): at most this many requests in flight at once, within the write budget
    # Azure reports (write_budget.py), whose clock this is (tests and the burst bench run a simulated one).
    burst_concurrency: int = 8
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)


class BoundedRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retry, except that an answer asking to wait longer than `max_retry_after_s` is not retried, and
    that a call made with `retry_on_throttle=False` (a burst's: batches.py) never retries a 429: within a burst the
    write budget decides what is sent next, and one 429 must not become several."""

    def __init__(self, max_retry_after_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_retry_after_s = max_retry_after_s

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["retry_on_throttle"] = bool(options.pop("retry_on_throttle", True))
        return dict(settings)

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        if response.http_response.status_code == 429 and not settings.get("retry_on_throttle", True):
            return False
        retry_after = parse_retry_after(response.http_response.headers.get("Retry-After"))
        if retry_after is not None and retry_after > self.max_retry_after_s:
            return False
        return bool(super().is_retry(settings, response))


class ArmClients:
    """Compute and Network clients for the clusters' subscription, and a Network client for the app's VNet (which
    may live in another subscription). The management SDKs are imported here, not at module level: they are large
    and only Azure clusters need them (Functions cold start)."""

    def __init__(self, credential: TokenCredential, settings: AzureSettings) -> None:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.compute import models as compute_models
        from azure.mgmt.network import NetworkManagementClient
        from azure.mgmt.network import models as network_models

        self.settings = settings
        self.budget: WriteBudget = budget_for(settings.subscription_id, settings.base_url or "", settings.clock)
        budget = self.budget

        def record_budget(response: PipelineResponse[Any, Any]) -> None:
            budget.record(response.http_response.status_code, response.http_response.headers)

        # Passed with each write of a burst (`raw_response_hook=`, a per-call option every pipeline honours), so
        # that each answer, 429s included, tells the budget.
        self.record_budget = record_budget

        options: dict[str, Any] = {
            "retry_policy": BoundedRetryPolicy(
                settings.max_retry_after_s,
                retry_total=settings.retry_total,
                retry_backoff_factor=settings.retry_backoff_factor_s,
                retry_backoff_max=settings.retry_backoff_max_s,
                timeout=settings.request_timeout_s,
            ),
            "connection_timeout": settings.request_timeout_s,
            "read_timeout": settings.request_timeout_s,
        }
        if settings.base_url:
            options["base_url"] = settings.base_url
        if settings.connection_verify:
            options["connection_verify"] = settings.connection_verify
        self.compute = ComputeManagementClient(credential, settings.subscription_id, **options)
        self.network = NetworkManagementClient(credential, settings.subscription_id, **options)
        self.compute_models = compute_models
        self.network_models = network_models
        self.app_subnet = parse_app_subnet(settings.function_subnet_id)
        self.app_network = self.network
        if self.app_subnet is not None and self.app_subnet.subscription_id.lower() != settings.subscription_id.lower():
            self.app_network = NetworkManagementClient(credential, self.app_subnet.subscription_id, **options)


def parse_app_subnet(function_subnet_id: str) -> SubnetReference | None:
    if not function_subnet_id:
        return None
    try:
        return SubnetReference.parse(function_subnet_id)
    except ValueError as error:
        raise InvalidRequestError(f"FUNCTION_SUBNET_ID: {error}") from None


def get_or_none(read: Callable[[], Any]) -> dict[str, Any] | None:
    """The resource as a dict, or None when ARM answers that it does not exist. Other errors propagate."""
    try:
        return dict(read().as_dict())
    except AzureError as error:
        if isinstance(from_azure_error(error), NotFoundError):
            return None
        raise
