"""The head agent's JSON (`GET /v1/state`, the drain answer), validated at the edge into `autoscaler.model.RayState`.

The same boot-phase entries are kept in a cluster's stored observation, which the status page reads back with
`parse_boot_phases`: they are read leniently, entry by entry, because they only inform the status page and must never
cost a tick its view of Ray. Anything in `/v1/state` short of the contract is `HeadUnreachableError` (the reconcile
shell reads it as "no new information about Ray this tick", never as "Ray has no nodes").

Pure: no I/O. The HTTP client that fetches it is an adapter (autoscaler/adapters/head_agent.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from autoscaler.model import (
    BootPhase,
    BootPhaseReport,
    GangDemand,
    GangStrategy,
    LabelSelector,
    RayNode,
    RayNodeStatus,
    RayState,
    Shape,
    ShapeDemand,
    shape_of,
)
from autoscaler.ports import HeadUnreachableError

# What a VM's boot script reports to the head agent (provisioning/head/agent_boot.py); the other phases the control
# plane sees for itself.
REPORTED_BOOT_PHASES = frozenset({BootPhase.CLOUD_INIT_RUNNING, BootPhase.RAY_STARTED, BootPhase.BOOT_FAILED})
MAX_BOOT_DETAIL_CHARS = 300


# --------------------------------------------------------------------------------------------
# The wire format (see provisioning/head/agent_gcs.py for the producer)
# --------------------------------------------------------------------------------------------


def _check_resources(resources: dict[str, float]) -> dict[str, float]:
    for name, amount in resources.items():
        if not name or not math.isfinite(amount) or amount < 0:
            raise ValueError(f"resource {name!r} has amount {amount}; expected a finite amount >= 0")
    return resources


class _WireModel(BaseModel):
    # Unknown fields are ignored so that a newer agent can add some without breaking an older control plane.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _NodePayload(_WireModel):
    ray_node_id: str = Field(min_length=1)
    instance_id: str = ""
    node_type: str = ""
    status: RayNodeStatus
    idle_duration_s: float = Field(ge=0, allow_inf_nan=False)
    total_resources: dict[str, float] = Field(default_factory=dict)
    available_resources: dict[str, float] = Field(default_factory=dict)
    is_head: bool = False
    labels: dict[str, str] = Field(default_factory=dict)  # Ray 2.60 node labels; absent from an older agent
    # ISO 8601 with offset: when Azure stops this node's VM after a Preempt notice (NotBefore); absent without one.
    preempt_deadline: AwareDatetime | None = None

    _resources_are_amounts = field_validator("total_resources", "available_resources")(_check_resources)


class _LabelConstraintPayload(_WireModel):
    """One constraint of a Ray label selector: operator "in" or "!in" (any other never matches, as in Ray)."""

    key: str = Field(min_length=1)
    operator: str
    values: list[str] = Field(default_factory=list)


# A request's label selectors in Ray's order (the first preferred); a node must satisfy every constraint of one.
_SelectorsPayload = list[list[_LabelConstraintPayload]]


class _ShapeCountPayload(_WireModel):
    shape: dict[str, float]
    count: int = Field(ge=1)
    label_selectors: _SelectorsPayload = Field(default_factory=list)

    _shape_is_amounts = field_validator("shape")(_check_resources)


class _GangPayload(_WireModel):
    strategy: GangStrategy
    bundles: list[dict[str, float]] = Field(min_length=1)
    count: int = Field(default=1, ge=1)
    bundle_label_selectors: list[_SelectorsPayload] = Field(default_factory=list)  # per bundle, in bundle order

    @field_validator("bundles")
    @classmethod
    def _bundles_are_amounts(cls, bundles: list[dict[str, float]]) -> list[dict[str, float]]:
        return [_check_resources(bundle) for bundle in bundles]


class _StatePayload(_WireModel):
    nodes: list[_NodePayload]
    pending: list[_ShapeCountPayload] = Field(default_factory=list)
    gangs: list[_GangPayload] = Field(default_factory=list)
    constraints: list[_ShapeCountPayload] = Field(default_factory=list)


def parse_state(payload: object) -> RayState:
    """Validate the agent's `/v1/state` JSON and build a RayState; identical shapes and gangs are folded."""
    try:
        state = _StatePayload.model_validate(payload)
    except ValidationError as error:
        raise HeadUnreachableError(f"head agent state does not match the contract: {error}") from error
    return RayState(
        nodes=tuple(
            RayNode(
                ray_node_id=node.ray_node_id,
                instance_id=node.instance_id,
                node_type=node.node_type,
                status=node.status,
                idle_duration_s=node.idle_duration_s,
                total_resources=node.total_resources,
                available_resources=node.available_resources,
                is_head=node.is_head,
                labels=node.labels,
                preempt_deadline=node.preempt_deadline,
            )
            for node in state.nodes
        ),
        pending=_fold_shapes((item.shape, item.count, _selectors(item.label_selectors)) for item in state.pending),
        gangs=_fold_gangs(state.gangs),
        constraints=_fold_shapes(
            (item.shape, item.count, _selectors(item.label_selectors)) for item in state.constraints
        ),
        boot_phases=parse_boot_phases(payload),
        jobs_running=parse_jobs_running(payload),
    )


def parse_jobs_running(payload: object) -> int | None:
    """The agent's `jobs_running`: a count >= 0, or None when it is absent (an older agent), null (the agent could
    not read Ray's jobs) or not a count. Read leniently: it only informs autostop, never the view of Ray."""
    value = payload.get("jobs_running") if isinstance(payload, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


Selectors = tuple[LabelSelector, ...]


def _selectors(selectors: _SelectorsPayload) -> Selectors:
    """As autoscaler.model.ShapeDemand.selectors: each selector's constraints sorted, Ray's order of selectors kept."""
    return tuple(
        tuple(sorted((c.key, c.operator, tuple(c.values)) for c in selector)) for selector in selectors if selector
    )


def _fold_shapes(
    shapes_with_counts: Iterable[tuple[Mapping[str, float], int, Selectors]],
) -> tuple[ShapeDemand, ...]:
    counts: Counter[tuple[Shape, Selectors]] = Counter()
    for resources, count, selectors in shapes_with_counts:
        shape = shape_of(resources)
        if shape:  # a shape of nothing needs no node
            counts[(shape, selectors)] += count
    return tuple(
        ShapeDemand(shape=shape, count=count, selectors=selectors)
        for (shape, selectors), count in sorted(counts.items())
    )


def _fold_gangs(gangs: Iterable[_GangPayload]) -> tuple[GangDemand, ...]:
    counts: Counter[tuple[GangStrategy, tuple[tuple[Shape, Selectors], ...]]] = Counter()
    for gang in gangs:
        given = [_selectors(selectors) for selectors in gang.bundle_label_selectors]
        with_selectors = (
            (shape_of(bundle), given[index] if index < len(given) else ()) for index, bundle in enumerate(gang.bundles)
        )
        bundles = tuple(sorted(pair for pair in with_selectors if pair[0]))
        if bundles:
            counts[(gang.strategy, bundles)] += gang.count
    return tuple(
        GangDemand(
            strategy=strategy,
            bundles=tuple(shape for shape, _ in bundles),
            count=count,
            bundle_selectors=tuple(selectors for _, selectors in bundles) if any(s for _, s in bundles) else (),
        )
        for (strategy, bundles), count in sorted(counts.items())
    )


class _BootPhasePayload(_WireModel):
    phase: BootPhase
    at: AwareDatetime
    detail: str = ""


def parse_boot_phases(payload: object) -> dict[str, BootPhaseReport]:
    """The `boot_phases` of the agent's `/v1/state` JSON, by instance id.

    An entry that does not fit (a phase this version does not know, a bad timestamp) is left out, and an agent
    without boot phases gives none: the state of Ray is usable either way.
    """
    entries = payload.get("boot_phases") if isinstance(payload, dict) else None
    if not isinstance(entries, dict):
        return {}
    reports: dict[str, BootPhaseReport] = {}
    for instance_id, entry in entries.items():
        try:
            parsed = _BootPhasePayload.model_validate(entry)
        except ValidationError:
            continue
        if instance_id and parsed.phase in REPORTED_BOOT_PHASES:
            reports[instance_id] = BootPhaseReport(parsed.phase, parsed.at, parsed.detail[:MAX_BOOT_DETAIL_CHARS])
    return reports


class DrainAnswer(_WireModel):
    accepted: bool
    rejection_reason: str = ""
