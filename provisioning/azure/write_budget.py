"""How many ARM writes of each kind one subscription may still make, as Azure's last answers reported it.

Azure reports budgets on every answer (docs/decisions/scale-sets.md, "Bursts"):
- ARM's own, per subscription and principal: `x-ms-ratelimit-remaining-subscription-writes` (PUT, PATCH, POST) and
  `...-deletes` (DELETE), token buckets that refill continuously;
- Compute's, per subscription and region: `x-ms-ratelimit-remaining-resource: Microsoft.Compute/PutVM3Min;239,
  Microsoft.Compute/PutVM30Min;1199`, one entry per policy the request was charged to. A policy counts requests over
  its window (the 3 or 30 minutes in its name); the window's end is not reported, only a 429's `Retry-After`.

A `WriteBudget` keeps, per kind (`PutVM`, `DeleteVM`, `PutVMScaleSet`, `DeleteVMScaleSet`, `arm-writes`,
`arm-deletes`), the smallest remaining count reported and what is in flight, and lends requests against it:
- before anything is known, one request at a time (the first answer tells the budget);
- then as many as remain; at 0 nothing more is sent until `probe_after_s` has passed, when ONE request probes: it
  either goes through (a new window began) or is refused with 429 and `Retry-After`, and nothing is sent before then.
So a burst gets at most one 429 per budget window, never a storm. The budget is per process (one Functions instance);
concurrent instances share Azure's budget and each keeps its own view, so each may see its own one 429 per window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from provisioning.azure.errors import parse_retry_after

ARM_WRITES = "arm-writes"
ARM_DELETES = "arm-deletes"
PUT_VM = "PutVM"
DELETE_VM = "DeleteVM"
PUT_SCALE_SET = "PutVMScaleSet"
DELETE_SCALE_SET = "DeleteVMScaleSet"
RESOURCE_HEADER = "x-ms-ratelimit-remaining-resource"
_WINDOW_SUFFIXES = ("30Min", "5Min", "3Min", "1Min")


def policy_kind(policy: str) -> str:
    """`Microsoft.Compute/PutVM30Min` -> `PutVM`: the operation group a policy counts, without its window."""
    name = policy.rsplit("/", 1)[-1]
    for suffix in _WINDOW_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def remaining_by_kind(headers: Mapping[str, str]) -> dict[str, int]:
    """The smallest remaining count per kind in one answer's headers."""
    found: dict[str, int] = {}
    lowered = {key.lower(): value for key, value in headers.items()}
    for entry in (lowered.get(RESOURCE_HEADER) or "").split(","):
        policy, _, count = entry.strip().partition(";")
        if policy and count.strip().isdigit():
            kind = policy_kind(policy)
            found[kind] = min(found.get(kind, int(count)), int(count))
    for header, kind in (
        ("x-ms-ratelimit-remaining-subscription-writes", ARM_WRITES),
        ("x-ms-ratelimit-remaining-subscription-deletes", ARM_DELETES),
    ):
        value = (lowered.get(header) or "").strip()
        if value.isdigit():
            found[kind] = int(value)
    return found


@dataclass
class _Gauge:
    remaining: int | None = None  # None: not known yet (nothing answered, or a new window may have begun)
    in_flight: int = 0
    blocked_until: float = 0.0  # a 429's Retry-After, on the budget's clock
    exhausted_at: float | None = None  # when `remaining` reached 0 without a 429


class WriteBudget:
    """The write budgets of one subscription (thread-safe). `try_acquire` before a request, `release` after it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, probe_after_s: float = 15.0) -> None:
        self._clock = clock
        self.probe_after_s = probe_after_s
        self._gauges: dict[str, _Gauge] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- lending

    def try_acquire(self, kinds: Iterable[str]) -> bool:
        """Take one request of every kind, or none (False) when one of them has nothing to lend now."""
        kinds = tuple(kinds)
        with self._lock:
            now = self._clock()
            gauges = [self._gauges.setdefault(kind, _Gauge()) for kind in kinds]
            if not all(self._can_lend(gauge, now) for gauge in gauges):
                return False
            for gauge in gauges:
                gauge.in_flight += 1
                if gauge.remaining is not None:
                    gauge.remaining -= 1
                    if gauge.remaining <= 0:
                        gauge.exhausted_at = now
            return True

    def _can_lend(self, gauge: _Gauge, now: float) -> bool:
        if now < gauge.blocked_until:
            return False
        if gauge.remaining is None:
            return gauge.in_flight == 0  # the first answer tells the budget
        if gauge.remaining > 0:
            return True
        # Exhausted without a refusal: one probe once `probe_after_s` has passed (nothing else in flight).
        if gauge.in_flight == 0 and gauge.exhausted_at is not None and now >= gauge.exhausted_at + self.probe_after_s:
            gauge.remaining = None
            return True
        return False

    def waiting_for_answer(self, kinds: Iterable[str]) -> bool:
        """Whether a request in flight will tell more (its answer may let further requests go)."""
        with self._lock:
            return any(
                (gauge := self._gauges.get(kind)) is not None and gauge.in_flight > 0 and gauge.remaining is None
                for kind in kinds
            )

    def release(self, kinds: Iterable[str]) -> None:
        with self._lock:
            for kind in kinds:
                gauge = self._gauges.setdefault(kind, _Gauge())
                gauge.in_flight = max(0, gauge.in_flight - 1)

    def retry_after_s(self, kinds: Iterable[str]) -> float:
        """How long until one of these kinds may lend again (for the ThrottledError of what was not sent)."""
        with self._lock:
            now = self._clock()
            waits = [0.0]
            for kind in kinds:
                gauge = self._gauges.get(kind)
                if gauge is None:
                    continue
                waits.append(gauge.blocked_until - now)
                if gauge.remaining is not None and gauge.remaining <= 0 and gauge.exhausted_at is not None:
                    waits.append(gauge.exhausted_at + self.probe_after_s - now)
            return max(waits)

    # ---------------------------------------------------------------- what Azure answered

    def record(self, status: int, headers: Mapping[str, str]) -> None:
        """Take in one answer (any status): the remaining counts it reports, and a 429's Retry-After."""
        reported = remaining_by_kind(headers)
        lowered = {key.lower(): value for key, value in headers.items()}
        with self._lock:
            now = self._clock()
            for kind, count in reported.items():
                gauge = self._gauges.setdefault(kind, _Gauge())
                # Answers of parallel requests arrive in any order: within a burst the smallest count is the truest.
                gauge.remaining = count if gauge.remaining is None else min(gauge.remaining, count)
                if gauge.remaining > 0:
                    gauge.exhausted_at = None
                elif gauge.exhausted_at is None:
                    gauge.exhausted_at = now
            if status == 429:
                retry_after = parse_retry_after(lowered.get("retry-after")) or self.probe_after_s
                exhausted = [kind for kind, count in reported.items() if count == 0] or list(self._gauges)
                for kind in exhausted:
                    gauge = self._gauges.setdefault(kind, _Gauge())
                    gauge.blocked_until = max(gauge.blocked_until, now + retry_after)
                    gauge.remaining = None  # after the wait, the first answer tells the new window's budget

    def remaining(self, kind: str) -> int | None:
        with self._lock:
            gauge = self._gauges.get(kind)
            return None if gauge is None else gauge.remaining


_budgets: dict[tuple[str, str], WriteBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(subscription_id: str, endpoint: str, clock: Callable[[], float] = time.monotonic) -> WriteBudget:
    """The process's budget of one subscription at one ARM endpoint (shared by every cluster's provider)."""
    key = (subscription_id.lower(), endpoint.lower())
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = WriteBudget(clock)
        return budget
