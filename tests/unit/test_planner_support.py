"""Builders for the planner tests (no tests here): a cluster in a few lines, turned into `plan`'s arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from autoscaler.model import (
    GangDemand,
    InstanceRecord,
    InstanceStatus,
    RayNode,
    RayNodeStatus,
    RayState,
    ScalingPlan,
    ShapeDemand,
    Unavailability,
    shape_of,
)
from autoscaler.planner import PlannerConfig, WorkerType, labels_of, plan
from autoscaler.planner.labels import Selectors

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CURRENT_HASH = "current-config"
HEAD_TYPE = "head"


def worker(
    name: str,
    resources: Mapping[str, float],
    *,
    min_workers: int = 0,
    max_workers: int = 50,
    cost: float = 1.0,
    fallback: str | None = None,
    idle_timeout_s: float = 300.0,
    launch_timeout_s: float = 600.0,
    labels: Mapping[str, str] | None = None,
) -> WorkerType:
    return WorkerType(
        name=name,
        resources=shape_of(resources),
        min_workers=min_workers,
        max_workers=max_workers,
        idle_timeout_s=idle_timeout_s,
        launch_timeout_s=launch_timeout_s,
        cost=cost,
        cost_basis="test",
        fallback=fallback,
        labels=labels_of(labels or {}),
    )


def config(
    *workers: WorkerType,
    max_workers: int = 100,
    upscaling_speed: float = 1000.0,
    head_resources: Mapping[str, float] | None = None,
    conserve_gpu_nodes: bool = True,
) -> PlannerConfig:
    return PlannerConfig(
        worker_types=workers,
        head_node_type=HEAD_TYPE,
        head_resources=shape_of(head_resources or {"CPU": 0.0}),
        max_workers=max_workers,
        upscaling_speed=upscaling_speed,
        config_hash=CURRENT_HASH,
        conserve_gpu_nodes=conserve_gpu_nodes,
    )


@dataclass(frozen=True)
class Node:
    """A worker as the planner sees it: its stored record and, when it runs Ray, its Ray node."""

    instance_id: str
    node_type: str
    status: InstanceStatus = InstanceStatus.RAY_RUNNING
    total: Mapping[str, float] = field(default_factory=dict)
    available: Mapping[str, float] | None = None  # None: all of `total`
    idle_s: float | None = None  # None: busy
    age_s: float = 60.0
    launched_age_s: float | None = None  # None: launched when queued (age_s)
    config_hash: str = CURRENT_HASH
    ray_status: RayNodeStatus | None = None  # override; None: from idle_s
    in_ray: bool = True  # False: Ray has no node for this instance
    labels: Mapping[str, str] = field(default_factory=dict)  # as Ray reports them


def busy(instance_id: str, node_type: str, total: Mapping[str, float], available: Mapping[str, float]) -> Node:
    return Node(instance_id, node_type, total=total, available=available)


def idle(
    instance_id: str, node_type: str, total: Mapping[str, float], idle_s: float, *, config_hash: str = CURRENT_HASH
) -> Node:
    return Node(instance_id, node_type, total=total, idle_s=idle_s, config_hash=config_hash)


def launching(
    instance_id: str,
    node_type: str,
    *,
    age_s: float = 60.0,
    status: InstanceStatus = InstanceStatus.ALLOCATED,
    config_hash: str = CURRENT_HASH,
    launched_age_s: float | None = None,
) -> Node:
    return Node(
        instance_id, node_type, status=status, age_s=age_s, config_hash=config_hash, launched_age_s=launched_age_s
    )


Wanted = tuple[Mapping[str, float], int] | tuple[Mapping[str, float], int, Selectors]
"""(shape, count) or (shape, count, label selectors)."""


def shape_demand(wanted: Wanted) -> ShapeDemand:
    selectors: Selectors = wanted[2] if len(wanted) == 3 else ()
    return ShapeDemand(shape_of(wanted[0]), wanted[1], selectors)


@dataclass(frozen=True)
class Cluster:
    config: PlannerConfig
    nodes: Sequence[Node] = ()
    pending: Sequence[Wanted] = ()
    gangs: Sequence[GangDemand] = ()
    constraints: Sequence[Wanted] = ()
    other_ray_nodes: Sequence[RayNode] = ()  # Ray nodes without an instance record (started by hand)
    head_total: Mapping[str, float] = field(default_factory=lambda: {"CPU": 0.0})
    head_available: Mapping[str, float] = field(default_factory=lambda: {"CPU": 0.0})
    ray_reachable: bool = True
    unavailable: Sequence[Unavailability] = ()

    def records(self) -> list[InstanceRecord]:
        head_since = NOW - timedelta(hours=1)
        records = [
            InstanceRecord(
                "c",
                "head-1",
                HEAD_TYPE,
                InstanceStatus.RAY_RUNNING,
                "r",
                head_since,
                head_since,
                is_head=True,
                config_hash=CURRENT_HASH,
            ),
        ]
        for node in self.nodes:
            created = NOW - timedelta(seconds=node.age_s)
            records.append(
                InstanceRecord(
                    "c",
                    node.instance_id,
                    node.node_type,
                    node.status,
                    f"req-{node.instance_id}",
                    created,
                    created,
                    config_hash=node.config_hash,
                    launched_at=None if node.launched_age_s is None else NOW - timedelta(seconds=node.launched_age_s),
                )
            )
        return records

    def ray_state(self) -> RayState | None:
        if not self.ray_reachable:
            return None
        ray_nodes = [
            RayNode(
                "ray-head",
                "head-1",
                HEAD_TYPE,
                RayNodeStatus.RUNNING,
                0.0,
                self.head_total,
                self.head_available,
                is_head=True,
            )
        ]
        for node in self.nodes:
            if node.status is not InstanceStatus.RAY_RUNNING or not node.in_ray:
                continue
            status = node.ray_status or (RayNodeStatus.RUNNING if node.idle_s is None else RayNodeStatus.IDLE)
            available = node.total if node.available is None else node.available
            ray_nodes.append(
                RayNode(
                    f"ray-{node.instance_id}",
                    node.instance_id,
                    node.node_type,
                    status,
                    node.idle_s or 0.0,
                    node.total,
                    available,
                    labels=node.labels,
                )
            )
        return RayState(
            nodes=(*ray_nodes, *self.other_ray_nodes),
            pending=tuple(shape_demand(wanted) for wanted in self.pending),
            gangs=tuple(self.gangs),
            constraints=tuple(shape_demand(wanted) for wanted in self.constraints),
        )

    def plan(self) -> ScalingPlan:
        return plan(
            config=self.config,
            instances=self.records(),
            ray=self.ray_state(),
            unavailable=self.unavailable,
            now=NOW,
        )


def launches_of(result: ScalingPlan) -> dict[str, int]:
    return {launch.node_type: launch.count for launch in result.launches}


def terminations_of(result: ScalingPlan) -> dict[str, bool]:
    """instance id -> drain."""
    return {termination.instance_id: termination.drain for termination in result.terminations}
