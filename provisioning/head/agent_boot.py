"""Boot phases: how far each VM of the cluster got in its first boot, as its boot script reports it to the head agent.

Every VM's bootstrap.sh (head and workers) posts `POST /v1/boot-phase` `{"instance_id", "phase", "detail"}` with the
cluster token when it starts (`cloud_init_running`), once `ray-node.service` is up (`ray_started`), and when a step
fails (`boot_failed`, with the failing line and exit code). The agent keeps the last report per instance in memory
and adds them to `GET /v1/state` as `"boot_phases": {instance_id: {"phase", "at", "detail"}}`, so the control plane
can show a node that is booting, or failed to, before Ray ever hears of it.

The map is bounded (the least recently reported instance is forgotten first) and lives only in memory: an agent
restart forgets it, which costs nothing once the nodes have joined Ray (the control plane shows those as joined from
Ray's own state). Standard library only and Python 3.10: this module runs on the head VM.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# What a boot script may report, in the order a boot goes through them. `vm_created` (the cloud lists the VM) and
# `joined` (Ray lists the node) are not reported: the control plane sees those itself.
REPORTED_BOOT_PHASES = ("cloud_init_running", "ray_started", "boot_failed")
# Far above any cluster's size; it only stops a misbehaving caller from growing the agent without limit.
MAX_TRACKED_INSTANCES = 2048
MAX_INSTANCE_ID_CHARS = 64
MAX_DETAIL_CHARS = 300
INSTANCE_ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class BootPhaseRefusedError(ValueError):
    """A report that does not fit the contract; `field_name` names the failing field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


@dataclass(frozen=True)
class BootPhaseReport:
    phase: str
    at: str  # when the agent received it: ISO 8601 UTC, whole seconds
    detail: str = ""

    def as_json(self) -> dict[str, str]:
        return {"phase": self.phase, "at": self.at, "detail": self.detail}


def checked_report(body: dict[str, object]) -> tuple[str, str, str]:
    """`(instance_id, phase, detail)` of a `POST /v1/boot-phase` body, or BootPhaseRefusedError."""
    instance_id = body.get("instance_id")
    if (
        not isinstance(instance_id, str)
        or not 0 < len(instance_id) <= MAX_INSTANCE_ID_CHARS
        or not set(instance_id) <= INSTANCE_ID_CHARACTERS
    ):
        raise BootPhaseRefusedError(
            "instance_id", f"instance_id must be 1 to {MAX_INSTANCE_ID_CHARS} letters, digits, '-', '_' or '.'"
        )
    phase = body.get("phase")
    if not isinstance(phase, str) or phase not in REPORTED_BOOT_PHASES:
        raise BootPhaseRefusedError("phase", f"phase must be one of {list(REPORTED_BOOT_PHASES)}")
    detail = body.get("detail", "")
    if not isinstance(detail, str):
        raise BootPhaseRefusedError("detail", "detail must be a string")
    # Cut rather than refuse: a boot script's failure text is worth keeping even when it is long.
    return instance_id, phase, detail[:MAX_DETAIL_CHARS]


class BootPhaseBook:
    """instance id -> its last report; thread-safe (the HTTP server answers each request in its own thread)."""

    def __init__(self, capacity: int = MAX_TRACKED_INSTANCES, clock_s: Callable[[], float] = time.time) -> None:
        self._capacity = capacity
        self._clock_s = clock_s
        self._reports: OrderedDict[str, BootPhaseReport] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, instance_id: str, phase: str, detail: str = "") -> BootPhaseReport:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock_s()))
        report = BootPhaseReport(phase=phase, at=at, detail=detail)
        with self._lock:
            self._reports[instance_id] = report
            self._reports.move_to_end(instance_id)
            while len(self._reports) > self._capacity:
                self._reports.popitem(last=False)
        return report

    def snapshot(self) -> dict[str, dict[str, str]]:
        """The `boot_phases` member of `GET /v1/state`."""
        with self._lock:
            return {instance_id: report.as_json() for instance_id, report in self._reports.items()}
