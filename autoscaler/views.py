"""The HTTP contract: pydantic models for responses, queue messages and problems.

`GET /api/openapi.json` is generated from these models (and the config model for the request body), so the document
cannot drift from what the handlers return.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autoscaler.agent_contract import parse_boot_phases
from autoscaler.model import (
    BootPhase,
    BootPhaseReport,
    ClusterRecord,
    ClusterStatus,
    Event,
    InstanceRecord,
    InstanceStatus,
)


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class FieldProblem(_View):
    field: str = Field(description="Dotted path of the failing field ('' for the whole body).")
    message: str


class Problem(_View):
    """RFC 9457 problem details, served as application/problem+json."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    errors: list[FieldProblem] = Field(default_factory=list)


class NodeView(_View):
    instance_id: str
    node_type: str
    status: InstanceStatus
    is_head: bool
    status_since: datetime
    ray_node_id: str = ""
    availability_zone: str = ""
    priority: str = Field("", description="spot or regular: what it was launched at ('' for a head or unknown).")
    preempt_deadline: datetime | None = Field(
        None, description="Set when its VM got a spot preemption notice: when Azure stops it."
    )
    last_error: str = ""
    boot_phase: BootPhase | None = Field(
        None,
        description="How far the node got in booting: vm_created (the cloud lists the VM), cloud_init_running, "
        "ray_started (reported by the VM to the head agent), joined (Ray lists it) or boot_failed (see "
        "boot_phase_detail); null before the cloud lists its VM.",
    )
    boot_phase_at: datetime | None = Field(None, description="When the head agent received the reported phase.")
    boot_phase_detail: str = Field("", description="What the VM said with its phase, e.g. which boot step failed.")


class HeadView(_View):
    instance_id: str = ""
    ray_address: str = Field("", description="GCS host:port of the head.")
    dashboard_url: str = ""
    auth_token_path: str = Field("", description="Local clusters only: a 0600 file with the cluster token.")
    public_ip: str = Field("", description="The head's public IP address, when it has one.")
    vm_id: str = Field("", description="The cloud's id of the head instance (the Azure VM resource id).")


class DecisionView(_View):
    at: datetime | None = None
    reasons: list[str] = Field(default_factory=list)


class EventView(_View):
    at: datetime
    kind: str
    message: str
    instance_id: str = ""


class UnavailableView(_View):
    node_type: str
    until: datetime
    reason: str
    size: str = Field("", description="The instance size avoided ('' = the whole node type).")
    zone: str = Field("", description="The zone avoided ('' = every zone: a quota is regional).")
    priority: str = Field("", description="spot, regular, or '' (both).")
    kind: str = Field("", description="What was refused: capacity, quota or eviction.")


class ClusterSummary(_View):
    name: str
    status: ClusterStatus
    created_at: datetime
    updated_at: datetime


class ClusterView(_View):
    name: str
    status: ClusterStatus
    status_reason: str = Field(
        "", description="Why the cluster is in its status; while its ticks fail, why they fail and until when it waits."
    )
    consecutive_failures: int = Field(0, description="Ticks that failed in a row (0 once one succeeds).")
    last_error: str = Field("", description="Why the last tick failed; '' after a successful tick.")
    last_error_at: datetime | None = None
    backoff_until: datetime | None = Field(
        None, description="No tick runs before this time (exponential backoff after failed ticks)."
    )
    head_auth_error: str = Field("", description="Set while the head agent refuses the cluster token.")
    head_unreachable_since: datetime | None = Field(
        None,
        description="Since when the running head's agent has not answered (null while it answers); past the "
        "head-unreachable timeout the cluster fails.",
    )
    provider: str
    created_at: datetime
    updated_at: datetime
    head: HeadView
    nodes: list[NodeView]
    nodes_by_status: dict[str, int]
    pending_demand: list[dict[str, Any]] = Field(
        default_factory=list, description="Ray's pending demand at the last tick: [{shape, count, label_selectors?}]."
    )
    infeasible: list[dict[str, Any]] = Field(default_factory=list)
    waiting: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Feasible demand the last tick launched nothing for, and why: [{shape, count, source, cause, "
        "node_types, reason}]; source is pending, placement_group or request_resources; cause is max_workers, "
        "global_max_workers, unavailable or existing_node.",
    )
    last_decision: DecisionView
    unavailable_node_types: list[UnavailableView] = Field(default_factory=list)
    ignored_fields: list[str] = Field(default_factory=list)
    events: list[EventView] = Field(default_factory=list, description="Most recent first.")

    @classmethod
    def build(
        cls, record: ClusterRecord, provider: str, instances: list[InstanceRecord], events: list[Event]
    ) -> ClusterView:
        observation: dict[str, Any] = json.loads(record.last_observation) if record.last_observation else {}
        decision: dict[str, Any] = json.loads(record.last_decision) if record.last_decision else {}
        reported_boot_phases = parse_boot_phases(observation)
        nodes: list[NodeView] = []
        for r in sorted(instances, key=lambda r: (not r.is_head, r.created_at)):
            boot_phase, boot_phase_at, boot_phase_detail = _boot_phase(r, reported_boot_phases)
            nodes.append(
                NodeView(
                    instance_id=r.instance_id,
                    node_type=r.node_type,
                    status=r.status,
                    is_head=r.is_head,
                    status_since=r.status_since,
                    ray_node_id=r.ray_node_id,
                    availability_zone=r.availability_zone,
                    priority=r.priority,
                    preempt_deadline=r.preempt_deadline,
                    last_error=r.last_error,
                    boot_phase=boot_phase,
                    boot_phase_at=boot_phase_at,
                    boot_phase_detail=boot_phase_detail,
                )
            )
        by_status: dict[str, int] = {}
        for node in nodes:
            by_status[str(node.status)] = by_status.get(str(node.status), 0) + 1
        return cls(
            name=record.name,
            status=record.status,
            status_reason=status_reason_of(record),
            consecutive_failures=record.consecutive_failures,
            last_error=record.last_error,
            last_error_at=record.last_error_at,
            backoff_until=record.backoff_until,
            head_auth_error=record.head_auth_error,
            head_unreachable_since=record.head_unreachable_since,
            provider=provider,
            created_at=record.created_at,
            updated_at=record.updated_at,
            head=HeadView(
                instance_id=record.head.instance_id,
                ray_address=record.head.ray_address,
                dashboard_url=record.head.dashboard_url,
                auth_token_path=record.head.auth_token_path,
                public_ip=record.head.public_ip,
                vm_id=record.head.vm_id,
            ),
            nodes=nodes,
            nodes_by_status=by_status,
            pending_demand=observation.get("pending", []),
            infeasible=observation.get("infeasible", []),
            waiting=observation.get("waiting", []),
            last_decision=DecisionView(at=decision.get("at"), reasons=decision.get("reasons", [])),
            unavailable_node_types=[
                UnavailableView(**{f.name: getattr(u, f.name) for f in dataclasses.fields(u)})
                for u in record.unavailable
            ],
            ignored_fields=list(record.ignored_fields),
            events=[EventView(at=e.at, kind=e.kind, message=e.message, instance_id=e.instance_id) for e in events],
        )


def status_reason_of(record: ClusterRecord) -> str:
    """The stored reason, unless ticks are failing or the head refuses the token: then that is the news."""
    if record.consecutive_failures:
        until = record.backoff_until.isoformat() if record.backoff_until else "the next tick"
        attempts = f"{record.consecutive_failures} failed attempt(s) in a row; next after {until}"
        if record.status == ClusterStatus.DELETING:
            return (
                f"deleting, but what was created in the cloud cannot be removed yet ({attempts}): {record.last_error}"
            )
        return f"reconcile failing ({attempts}): {record.last_error}"
    if record.head_auth_error:
        prefix = f"{record.status_reason}; " if record.status_reason else ""
        return f"{prefix}the head agent refuses the cluster token, Ray's state is unknown: {record.head_auth_error}"
    if record.head_unreachable_since is not None and record.status == ClusterStatus.RUNNING:
        since = record.head_unreachable_since.isoformat()
        return f"the head agent has not answered since {since}: Ray's state is unknown, nothing is scaled down"
    return record.status_reason


# ------------------------------------------------------------------------------------------------------------------
# Boot phases: what the VMs reported to the head agent, and what the control plane sees itself
# ------------------------------------------------------------------------------------------------------------------


def _has_joined(record: InstanceRecord) -> bool:
    """Ray has listed the node alive: now, or before it was drained or terminated (its Ray node id is kept)."""
    return bool(record.ray_node_id) or record.status in (InstanceStatus.RAY_RUNNING, InstanceStatus.DRAINING)


def boot_phases_observation(
    reports: Mapping[str, BootPhaseReport], records: Iterable[InstanceRecord]
) -> dict[str, dict[str, str]]:
    """The reported boot phases worth keeping in the cluster's `last_observation` (under "boot_phases").

    Only instances of the cluster that have not joined Ray: a joined node's phase follows from its status, so the
    stored row stays small and, between two reports, unchanged. The format is the agent's own, so one parser
    (`parse_boot_phases`) reads both.
    """
    not_joined = {record.instance_id for record in records if not _has_joined(record)}
    return {
        instance_id: {"phase": str(report.phase), "at": report.at.isoformat(), "detail": report.detail}
        for instance_id, report in sorted(reports.items())
        if instance_id in not_joined
    }


def _boot_phase(
    record: InstanceRecord, reported: Mapping[str, BootPhaseReport]
) -> tuple[BootPhase | None, datetime | None, str]:
    """(phase, when it was reported, detail): joined beats any report, a report beats the bare VM."""
    if _has_joined(record):
        return BootPhase.JOINED, None, ""
    report = reported.get(record.instance_id)
    if report is not None:
        return report.phase, report.at, report.detail
    if record.status == InstanceStatus.ALLOCATED:
        return BootPhase.VM_CREATED, None, ""
    return None, None, ""


class ClusterList(_View):
    clusters: list[ClusterSummary]


class AdjustedField(_View):
    """A config field this deployment uses with another value than the one given (e.g. the resource group)."""

    path: str
    given: str
    used: str
    reason: str


class CreateResponse(_View):
    name: str
    status: ClusterStatus
    created: bool = Field(description="False when the same config was posted again (no second cluster).")
    location: str
    ignored_fields: list[str] = Field(default_factory=list)
    adjusted_fields: list[AdjustedField] = Field(
        default_factory=list, description="Fields used with another value than the one given, and why."
    )
    ssh_private_key: str | None = Field(
        None, description="Only when a key pair was generated for you: returned once, stored nowhere."
    )


class UpdateResponse(_View):
    name: str
    status: ClusterStatus
    detail: str = Field("", description="What the update changes, or 'nothing to do' for the same config.")
    adjusted_fields: list[AdjustedField] = Field(
        default_factory=list, description="Fields used with another value than the one given, and why."
    )
    ignored_fields: list[str] = Field(default_factory=list)


class AcceptedResponse(_View):
    name: str
    status: ClusterStatus
    detail: str = ""


class WakeRequest(_View):
    reason: str = Field("", max_length=500)


ReconcileReason = Literal["create", "destroy", "timer", "wake", "manual", "follow-up"]


class ReconcileMessage(BaseModel):
    """The body of a message on the `reconcile` queue."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    cluster_name: str = Field(min_length=1, max_length=64)
    reason: ReconcileReason = "timer"
    enqueued_at: datetime | None = None
    detail: str = Field("", max_length=500)
    follow_ups: int = Field(0, ge=0, description="How many follow-ups led to this message (chains are capped).")


class Health(_View):
    status: Literal["ok"] = "ok"
    version: str
