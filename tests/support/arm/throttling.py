"""Request budgets as ARM and its resource providers keep them, decremented per request, reported in headers.

Two levels, as in Azure (MicrosoftDocs azure-docs, articles/azure-resource-manager/management/
request-limits-and-throttling.md):

- ARM itself, per subscription and per principal, separately for reads, writes and deletes. Since 2024 this is a
  token bucket ("Regional throttling and token bucket algorithm": reads bucket 250 refilled 25/s, writes and deletes
  200 refilled 10/s); the remaining count is reported in `x-ms-ratelimit-remaining-subscription-reads|writes|deletes`
  and an empty bucket answers 429 `SubscriptionRequestsThrottled` with Retry-After.
- The resource provider. Compute counts requests per operation group in policies of a fixed window each and
  reports every policy a request falls under in `x-ms-ratelimit-remaining-resource`, e.g.
  `Microsoft.Compute/PutVM3Min;239,Microsoft.Compute/PutVM30Min;1199` (the header as recorded in Azure SDK test
  recordings; format `<RP>/<policy>;<count>` per MicrosoftDocs troubleshoot/azure/virtual-machines/
  troubleshooting-throttling-errors, "Call rate informational response headers"). An exhausted policy answers 429
  `OperationNotAllowed` with a `TooManyRequests` detail and Retry-After until its window ends. Network documents
  1000 writes/deletes and 10000 reads per 5 minutes ("Network throttling").

The default limits are Azure's published ones where published (ARM buckets, Network); Compute's per-policy limits
are not published: the defaults are of the order its headers show (PutVM3Min 240 / PutVM30Min 1200 as in the
recorded headers above; HighCostGet30Min 800 as in the documented error example). Tests pass small ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tests.support.arm.errors import (
    ArmHttpError,
    compute_too_many_requests,
    network_too_many_requests,
    subscription_requests_throttled,
)


@dataclass(frozen=True)
class TokenBucket:
    """A bucket of `size` tokens refilled at `refill_per_s`; each request takes one."""

    size: int
    refill_per_s: float


@dataclass(frozen=True)
class Window:
    """At most `limit` requests per fixed window of `window_s` seconds (the window opens at its first request)."""

    name: str  # the policy name Azure reports, e.g. "PutVM3Min"
    limit: int
    window_s: float


def _windows(group: str, short: int, long: int) -> tuple[Window, Window]:
    return (Window(f"{group}3Min", short, 180.0), Window(f"{group}30Min", long, 1800.0))


# Compute operation groups: which requests fall in which group (see compute_group below).
PUT_VM = "PutVM"
DELETE_VM = "DeleteVM"
HIGH_COST_GET = "HighCostGet"
LOW_COST_GET = "LowCostGet"
# Scale sets: the policies troubleshooting-throttling-errors shows in its sample headers of a scale-set request
# ("Microsoft.Compute/DeleteVMScaleSet3Min;107", "DeleteVMScaleSet30Min;587", "VMScaleSetBatchedVMRequests5Min;3704",
# "HighCostGetVMScaleSet3Min/30Min"); a write to a set is charged to PutVMScaleSet (the same naming as PutVM), and
# "Batch requests, such as for scaling a virtual machine scale set, can charge multiple counts": every VM a write adds
# or removes is one count of VMScaleSetBatchedVMRequests5Min.
PUT_SCALE_SET = "PutVMScaleSet"
DELETE_SCALE_SET = "DeleteVMScaleSet"
HIGH_COST_GET_SCALE_SET = "HighCostGetVMScaleSet"
BATCHED_VM_REQUESTS = "VMScaleSetBatchedVMRequests"


@dataclass(frozen=True)
class ThrottleBudgets:
    """Every budget the emulator keeps. `ThrottleBudgets()` is Azure's defaults; tests replace what they exercise."""

    subscription_reads: TokenBucket = TokenBucket(250, 25.0)
    subscription_writes: TokenBucket = TokenBucket(200, 10.0)
    subscription_deletes: TokenBucket = TokenBucket(200, 10.0)
    compute: Mapping[str, tuple[Window, ...]] = field(
        default_factory=lambda: {
            PUT_VM: _windows(PUT_VM, 240, 1200),
            DELETE_VM: _windows(DELETE_VM, 240, 1200),
            HIGH_COST_GET: _windows(HIGH_COST_GET, 140, 800),
            LOW_COST_GET: _windows(LOW_COST_GET, 4000, 32000),
            PUT_SCALE_SET: _windows(PUT_SCALE_SET, 60, 300),
            DELETE_SCALE_SET: _windows(DELETE_SCALE_SET, 60, 300),
            HIGH_COST_GET_SCALE_SET: _windows(HIGH_COST_GET_SCALE_SET, 140, 800),
            BATCHED_VM_REQUESTS: (Window(f"{BATCHED_VM_REQUESTS}5Min", 4000, 300.0),),
        }
    )
    network_reads: Window = Window("NetworkReads5Min", 10000, 300.0)
    network_writes: Window = Window("NetworkWrites5Min", 1000, 300.0)


def arm_kind(method: str) -> str:
    """ARM's bucket for a request: "read" (GET/HEAD), "delete", or "write" (PUT, PATCH, POST)."""
    if method in ("GET", "HEAD"):
        return "read"
    return "delete" if method == "DELETE" else "write"


def compute_group(method: str, collection_path: bool, sub_resource: str, *, scale_set: bool = False) -> str | None:
    """The Compute operation group of a request on virtual machines or scale sets (None: not counted here).

    A single VM read or its instance view is a low-cost read; a list is a high-cost read (the split seen in the
    `LowCostGet`/`HighCostGet` headers quoted in throttling-errors)."""
    if scale_set:
        return _scale_set_group(method, sub_resource)
    if method == "PUT" and not sub_resource:
        return PUT_VM
    if method == "DELETE" and not sub_resource:
        return DELETE_VM
    if method == "GET":
        return HIGH_COST_GET if collection_path else LOW_COST_GET
    return None


def _scale_set_group(method: str, sub_resource: str) -> str | None:
    if method in ("PUT", "PATCH") and not sub_resource:
        return PUT_SCALE_SET
    if (method == "DELETE" and not sub_resource) or (method == "POST" and sub_resource == "delete"):
        return DELETE_SCALE_SET
    return HIGH_COST_GET_SCALE_SET if method == "GET" else None


def _iso(moment: datetime) -> str:
    return moment.isoformat()


class Throttle:
    """The budgets' state. Not thread-safe: the emulator calls it under its lock."""

    def __init__(self, budgets: ThrottleBudgets, clock: Callable[[], float]) -> None:
        self.budgets = budgets
        self._clock = clock
        self._buckets: dict[tuple[str, str, str], tuple[float, float]] = {}  # -> (tokens, last refill time)
        self._windows: dict[tuple[str, str], tuple[float, int, datetime]] = {}  # -> (start, count, wall start)

    # ---------------------------------------------------------------- ARM

    def charge_arm(self, subscription_id: str, principal_id: str, method: str) -> dict[str, str]:
        """Take one token of the request's ARM bucket; the remaining-count header, or 429 when it is empty."""
        kind = arm_kind(method)
        bucket = {
            "read": self.budgets.subscription_reads,
            "write": self.budgets.subscription_writes,
            "delete": self.budgets.subscription_deletes,
        }[kind]
        header = f"x-ms-ratelimit-remaining-subscription-{kind}s"
        key = (subscription_id.lower(), principal_id.lower(), kind)
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(bucket.size), now))
        tokens = min(float(bucket.size), tokens + (now - last) * bucket.refill_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry_after = max(1, math.ceil((1.0 - tokens) / bucket.refill_per_s))
            raise subscription_requests_throttled(kind, subscription_id, principal_id, retry_after, {header: "0"})
        tokens -= 1.0
        self._buckets[key] = (tokens, now)
        return {header: str(int(tokens))}

    # ---------------------------------------------------------------- resource providers

    def charge_compute(self, subscription_id: str, group: str, count: int = 1) -> dict[str, str]:
        """Charge `count` requests to every policy of the group; the remaining-counts header, or 429 when one of the
        policies has fewer than `count` left (nothing is charged then)."""
        windows = self.budgets.compute.get(group, ())
        if not windows:
            return {}
        states = [self._window_state(subscription_id, window) for window in windows]
        exhausted = [
            (window, state) for window, state in zip(windows, states, strict=True) if state[1] + count > window.limit
        ]
        if exhausted:
            header = self._resource_header(windows, states)
            window, (start, used, wall_start) = max(exhausted, key=lambda item: item[1][0] + item[0].window_s)
            retry_after = self._retry_after(start, window)
            raise compute_too_many_requests(
                window.name,
                start=_iso(wall_start),
                end=_iso(wall_start + timedelta(seconds=window.window_s)),
                allowed=window.limit,
                measured=used + count,
                retry_after_s=retry_after,
                headers={"x-ms-ratelimit-remaining-resource": header},
            )
        charged = []
        for window, (start, used, wall_start) in zip(windows, states, strict=True):
            self._windows[(subscription_id.lower(), window.name)] = (start, used + count, wall_start)
            charged.append((start, used + count, wall_start))
        return {"x-ms-ratelimit-remaining-resource": self._resource_header(windows, charged)}

    def charge_network(self, subscription_id: str, method: str) -> None:
        window = self.budgets.network_reads if method in ("GET", "HEAD") else self.budgets.network_writes
        start, count, wall_start = self._window_state(subscription_id, window)
        if count >= window.limit:
            raise network_too_many_requests(window.name, self._retry_after(start, window))
        self._windows[(subscription_id.lower(), window.name)] = (start, count + 1, wall_start)

    def _window_state(self, subscription_id: str, window: Window) -> tuple[float, int, datetime]:
        now = self._clock()
        key = (subscription_id.lower(), window.name)
        state = self._windows.get(key)
        if state is None or now >= state[0] + window.window_s:
            state = (now, 0, datetime.now(UTC))
            self._windows[key] = state
        return state

    def _retry_after(self, start: float, window: Window) -> int:
        return max(1, math.ceil(start + window.window_s - self._clock()))

    @staticmethod
    def _resource_header(windows: tuple[Window, ...], states: list[tuple[float, int, datetime]]) -> str:
        return ",".join(
            f"Microsoft.Compute/{window.name};{max(0, window.limit - count)}"
            for window, (_, count, _) in zip(windows, states, strict=True)
        )


__all__ = [
    "BATCHED_VM_REQUESTS",
    "DELETE_SCALE_SET",
    "DELETE_VM",
    "HIGH_COST_GET",
    "LOW_COST_GET",
    "PUT_VM",
    "ArmHttpError",
    "Throttle",
    "ThrottleBudgets",
    "TokenBucket",
    "Window",
    "arm_kind",
    "compute_group",
]
