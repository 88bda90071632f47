"""The instance state machine: one table of allowed transitions, one comment per edge (after Ray's autoscaler v2),
plus the per-status timeouts that rescue an instance stuck waiting for an answer.

Those timeouts are not scaling rules, and so they stay here: each bounds how long an operation already started may
go unanswered (the launch call that never left: queued; the VM the cloud never lists: requested; the drain Ray never
answers: draining; the delete that never completes: terminating) and moves the instance to the status that says so.
They never decide how many nodes the cluster should have, they apply to the head as much as to workers, and they are
Ray v2's `Reconciler._handle_stuck_instances`, which also lives outside Ray's scheduler. Whether a node should go (it
did not register with Ray within its type's launch_timeout_s, its Ray node died, it is outdated, idle or above
max_workers) is decided by the planner's scale-down rules, autoscaler/planner/scale_down.py. A requested instance is
under both clocks: the request timeout here (600 s in requested: allocation_failed) and the planner's launch timeout
(launch_timeout_s since the cloud accepted the launch: terminated); whichever comes first (docs/decisions/planner.md).

Pure: `now` is always passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from autoscaler.model import InstanceRecord
from autoscaler.model import InstanceStatus as S

ALLOWED: dict[S, dict[S, str]] = {
    S.QUEUED: {
        S.REQUESTED: "the launch call was accepted by the cloud",
        S.ALLOCATION_FAILED: "the launch call failed (capacity, quota, invalid request)",
        S.TERMINATED: "the launch was cancelled before it was issued (cluster deleted), or a scale-set VM it may have "
        "created was bound to it (the VM's own record carries on)",
    },
    S.REQUESTED: {
        S.ALLOCATED: "the cloud lists the instance",
        S.ALLOCATION_FAILED: "the cloud never listed it within the request timeout, or reported a failure",
        S.TERMINATING: "the cluster is being deleted while the launch is in flight",
        S.TERMINATED: "a scale-set VM was bound to this launch: the VM's own record (keyed by its name) carries on",
    },
    S.ALLOCATED: {
        S.RAY_RUNNING: "a Ray node with this instance id registered with the head",
        S.ALLOCATION_FAILED: "the cloud accepted the launch, then reported that provisioning failed",
        S.TERMINATING: "Ray never came up within launch_timeout_s, or the node is no longer wanted",
        S.TERMINATED: "the instance vanished from the cloud (spot eviction, manual deletion)",
    },
    S.RAY_RUNNING: {
        S.DRAINING: "idle past its timeout, Ray is asked to drain it first; or its VM got a spot preemption notice",
        S.TERMINATING: "terminated without drain (cluster deleted, Ray node dead, outdated)",
        S.TERMINATED: "the instance vanished from the cloud (spot eviction, manual deletion)",
    },
    S.DRAINING: {
        S.TERMINATING: "Ray accepted the drain",
        S.RAY_RUNNING: "Ray refused the drain (the node became busy): keep it",
        # A preempted node is not kept: Azure stops it at the notice's deadline whatever Ray says.
        S.TERMINATED: "the instance vanished from the cloud while draining",
    },
    S.TERMINATING: {
        S.TERMINATED: "the cloud no longer lists the instance",
        S.TERMINATION_FAILED: "the terminate call failed or the instance stayed listed past the terminate timeout",
    },
    S.TERMINATION_FAILED: {
        S.TERMINATING: "terminate is retried on a later tick",
        S.TERMINATED: "the cloud no longer lists the instance",
    },
    S.TERMINATED: {},
    S.ALLOCATION_FAILED: {
        S.TERMINATING: "a failed launch may have left an instance behind; make sure it goes",
    },
}

# Timeouts per stuck status (Ray autoscaler v2 uses requested 600 s, terminating 300 s). allocated -> ray_running is no
# stuck status but a launch that failed: the planner's LaunchTimeout rule decides it, with the node type's
# launch_timeout_s.
STATUS_TIMEOUT_S: dict[S, float] = {
    S.QUEUED: 120.0,  # intent saved but the launch call never made it out: relaunch (idempotent) or fail
    S.REQUESTED: 600.0,
    S.DRAINING: 120.0,
    S.TERMINATING: 300.0,
}


class TransitionError(ValueError):
    """A transition the table does not allow: a bug in the caller, never silently applied."""


@dataclass(frozen=True)
class Transition:
    instance_id: str
    from_status: S
    to_status: S
    reason: str


def can_transition(from_status: S, to_status: S) -> bool:
    return to_status in ALLOWED[from_status]


def transition(record: InstanceRecord, to_status: S, now: datetime, *, error: str = "") -> InstanceRecord:
    """The record moved to `to_status` at `now`; raises TransitionError for an edge the table does not have."""
    if record.status == to_status:
        return record
    if not can_transition(record.status, to_status):
        raise TransitionError(f"instance {record.instance_id}: {record.status} -> {to_status} is not allowed")
    return replace(record, status=to_status, status_since=now, last_error=error or record.last_error)


def is_stuck(record: InstanceRecord, now: datetime) -> bool:
    """Whether the record has been in its status longer than that status's timeout."""
    timeout_s = STATUS_TIMEOUT_S.get(record.status)
    return timeout_s is not None and (now - record.status_since).total_seconds() > timeout_s
