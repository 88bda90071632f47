"""Domain values shared by the planner, the reconcile shell, the state store and the providers.

Everything here is a plain value: frozen dataclasses, enums, no I/O and no clock.
Resource shapes (Shape, shape_of, format_shape, GangStrategy) are defined in autoscaler/shapes.py and re-exported
here: demand is always "shape x count", never one dict per bundle.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# The shape helpers live in autoscaler/shapes.py (stdlib only, Python 3.10) because the head agent ships them to the VM;
# they are re-exported here so every caller keeps importing them from the model.
from autoscaler.shapes import GangStrategy, Shape, format_shape, shape_dict, shape_of

# Listing the re-exported shape names here is what makes them part of this module's interface (mypy --strict).
__all__ = [
    "BootPhase",
    "BootPhaseReport",
    "CloudInstance",
    "CloudState",
    "ClusterRecord",
    "ClusterStatus",
    "Event",
    "GangDemand",
    "GangStrategy",
    "HeadInfo",
    "Infeasible",
    "InstanceRecord",
    "InstanceStatus",
    "LabelConstraint",
    "LabelSelector",
    "Launch",
    "LaunchRequest",
    "RayNode",
    "RayNodeStatus",
    "RayState",
    "ScalingPlan",
    "Shape",
    "ShapeDemand",
    "Termination",
    "Unavailability",
    "WaitCause",
    "Waiting",
    "format_shape",
    "shape_dict",
    "shape_of",
]

# --------------------------------------------------------------------------------------------
# Statuses
# --------------------------------------------------------------------------------------------


class ClusterStatus(enum.StrEnum):
    CREATING = "creating"  # accepted; head not yet running Ray
    RUNNING = "running"  # head agent answers
    DELETING = "deleting"  # destroy requested; instances being terminated
    DELETED = "deleted"  # nothing of it remains in the cloud
    FAILED = "failed"  # the head could not be brought up; see events
    STOPPING = "stopping"  # autostop: every instance, head included, is being removed; network and config stay
    STOPPED = "stopped"  # autostop removed every instance; `start` brings the cluster back

    @property
    def is_active(self) -> bool:
        """Whether the timer still reconciles clusters in this status."""
        # A failed cluster is still reconciled so that its remaining instances are terminated; a stopping one until
        # its instances are gone. A stopped cluster has nothing in the cloud but its network: nothing to reconcile.
        return self not in (ClusterStatus.DELETED, ClusterStatus.STOPPED)


class InstanceStatus(enum.StrEnum):
    """Instance statuses after Ray's autoscaler v2 (see lifecycle.py for the allowed edges)."""

    QUEUED = "queued"
    REQUESTED = "requested"
    ALLOCATED = "allocated"
    RAY_RUNNING = "ray_running"
    DRAINING = "draining"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    ALLOCATION_FAILED = "allocation_failed"
    TERMINATION_FAILED = "termination_failed"

    @property
    def is_final(self) -> bool:
        return self in (InstanceStatus.TERMINATED, InstanceStatus.ALLOCATION_FAILED)

    @property
    def is_live(self) -> bool:
        """Counts towards the cluster's size (and may cost money)."""
        return not self.is_final


# --------------------------------------------------------------------------------------------
# What the cloud shows (one list call per tick)
# --------------------------------------------------------------------------------------------


class CloudState(enum.StrEnum):
    PENDING = "pending"  # being created
    RUNNING = "running"  # the VM / process is up
    STOPPED = "stopped"  # deallocated (spot eviction with Deallocate) or exited
    TERMINATING = "terminating"  # being deleted
    FAILED = "failed"  # provisioning failed


@dataclass(frozen=True)
class CloudInstance:
    """One instance as the provider's list shows it. Ownership comes from tags, never names."""

    instance_id: str
    cluster_name: str
    node_type: str
    request_id: str
    state: CloudState
    cloud_instance_id: str = ""  # the VM resource id, or the local process id
    private_ip: str = ""
    public_ip: str = ""
    is_head: bool = False
    # Head endpoints, filled by the provider for the head instance.
    ray_address: str = ""  # GCS host:port
    dashboard_url: str = ""
    agent_url: str = ""
    detail: str = ""  # e.g. the provisioning error
    # When state is FAILED: the provider's classification of the failure, so the planner can avoid the node type.
    failure_kind: str = ""  # "capacity" | "quota" | "invalid" | "" (unknown or transient)
    failure_code: str = ""  # e.g. "ZonalAllocationFailed"
    failure_ttl_s: float = 0.0  # how long the node type should be avoided
    # Set for a VM of a scale-set (pool) node type: the pool's node type. Such a VM is created by a capacity change,
    # not by a launch of one record, so its `instance_id` is the VM's own name (what the VM reports to Ray) and its
    # `request_id` is "": the shell binds it to one of the type's launched records (see reconcile's sync step).
    pool: str = ""
    availability_zone: str = ""  # the zone the cloud placed it in, when it tells ("" when unknown or regional)
    priority: str = ""  # "spot" | "regular" | "" (unknown): what the cloud gave this VM (Spot Priority Mix)


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a provider needs to start one instance. Launch is idempotent by `request_id`."""

    cluster_name: str
    instance_id: str
    request_id: str
    node_type: str
    is_head: bool
    resources: Mapping[str, float]
    node_config: Mapping[str, object]
    cluster_token: str  # never stored or logged; derived per cluster (see tokens.py)
    config_hash: str
    head_address: str = ""  # GCS host:port of the head; set for workers
    control_plane_url: str = ""  # where the head agent sends wake-ups
    availability_zone: str = ""  # chosen by the shell (round-robin)
    # The node type's labels: the node starts with them, so Ray places label-selector demand on it.
    labels: Mapping[str, str] = field(default_factory=dict)
    # Scale-set (pool) node types only: how many instances of this node type the cluster should have once this
    # launch lands (every live record of the type, this one included). A provider sets the pool's capacity to it,
    # which makes a repeated launch (a crash before the shell saved it) harmless.
    pool_target: int = 0
    # "spot" | "regular" | "": the priority the shell chose for this launch ("" = the node type's own setting). A
    # spot node type with `spot_fallback: regular` is launched with "regular" while its spot offerings are avoided.
    priority: str = ""


# --------------------------------------------------------------------------------------------
# What Ray shows (the head agent's GET /v1/state)
# --------------------------------------------------------------------------------------------


class BootPhase(enum.StrEnum):
    """How far a node got in its first boot, in boot order (`boot_failed` ends a boot that went wrong)."""

    VM_CREATED = "vm_created"  # the cloud lists the VM; its boot script has reported nothing yet
    CLOUD_INIT_RUNNING = "cloud_init_running"  # its boot script runs: installing Ray, the config's setup commands
    RAY_STARTED = "ray_started"  # ray-node.service is up; Ray does not list the node yet
    JOINED = "joined"  # Ray lists the node alive
    BOOT_FAILED = "boot_failed"  # a step of its boot script failed; the detail says which


@dataclass(frozen=True)
class BootPhaseReport:
    """The last boot phase one VM reported to the head agent, and when the agent received it."""

    phase: BootPhase
    at: datetime
    detail: str = ""


class RayNodeStatus(enum.StrEnum):
    RUNNING = "running"  # has work (not idle)
    IDLE = "idle"
    DRAINING = "draining"
    DEAD = "dead"


# A Ray label selector (Ray 2.60 `label_selector`, `bundle_label_selector`): every constraint must hold. A constraint
# is (key, operator, values), operator "in" or "!in" (Ray's LABEL_OPERATOR_IN / NOT_IN): Ray's {"k": "v"} is
# ("k", "in", ("v",)), {"k": "!v"} is ("k", "!in", ("v",)), {"k": "in(a,b)"} is ("k", "in", ("a", "b")).
LabelConstraint = tuple[str, str, tuple[str, ...]]
LabelSelector = tuple[LabelConstraint, ...]


@dataclass(frozen=True)
class RayNode:
    ray_node_id: str
    instance_id: str  # from RAY_CLOUD_INSTANCE_ID; "" if the node was started by hand
    node_type: str
    status: RayNodeStatus
    idle_duration_s: float
    total_resources: Mapping[str, float]
    available_resources: Mapping[str, float]
    is_head: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)  # as Ray reports them; {} from an agent that does not
    # The node's VM received a spot preemption notice (Azure Scheduled Events `Preempt`): Azure stops it at this time
    # (the event's NotBefore). None when no notice was seen, or from an agent that does not report notices.
    preempt_deadline: datetime | None = None


@dataclass(frozen=True)
class ShapeDemand:
    """`count` bundles of one resource shape."""

    shape: Shape
    count: int
    # Ray's label selectors of these bundles, in Ray's order: the first is preferred, the others are fallbacks; a node
    # must satisfy one of them. () places them anywhere.
    selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True)
class GangDemand:
    """A placement group waiting to be scheduled: its bundles must be placed together."""

    strategy: GangStrategy
    bundles: tuple[Shape, ...]
    count: int = 1  # identical gangs are folded together
    # Per bundle, in the order of `bundles`: that bundle's label selectors (as ShapeDemand.selectors). () if none has.
    bundle_selectors: tuple[tuple[LabelSelector, ...], ...] = ()


@dataclass(frozen=True)
class RayState:
    """Ray's view of the cluster, read from the head agent."""

    nodes: tuple[RayNode, ...] = ()
    pending: tuple[ShapeDemand, ...] = ()  # tasks and actors waiting for resources
    gangs: tuple[GangDemand, ...] = ()  # placement groups waiting
    constraints: tuple[ShapeDemand, ...] = ()  # ray.autoscaler.sdk.request_resources
    boot_phases: Mapping[str, BootPhaseReport] = field(default_factory=dict)  # instance id -> what its VM reported
    jobs_running: int | None = None  # Ray jobs not yet finished (Ray's job table); None when the agent cannot tell

    @property
    def pending_bundles(self) -> int:
        return sum(d.count for d in self.pending) + sum(len(g.bundles) * g.count for g in self.gangs)


# --------------------------------------------------------------------------------------------
# Stored records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadInfo:
    instance_id: str = ""
    ray_address: str = ""
    dashboard_url: str = ""
    agent_url: str = ""
    auth_token_path: str = ""  # local clusters only: a 0600 file holding the cluster token
    public_ip: str = ""  # the head's public address, when it has one
    vm_id: str = ""  # the cloud's id of the head instance (the VM resource id, or the local process id)


@dataclass(frozen=True)
class Unavailability:
    """An offering not to launch until `until` (Karpenter's unavailable-offerings cache): an instance size in a zone
    at a priority. An empty `zone` or `priority` means every zone or both priorities (a quota is regional); a row with
    only `node_type` (written before offerings existed) avoids the whole node type."""

    node_type: str  # the node type whose launch failed (what the status page shows)
    until: datetime
    reason: str
    size: str = ""  # the instance size (Azure vmSize); "" = the node type as a whole
    zone: str = ""
    priority: str = ""  # "spot" | "regular" | "" (both)
    kind: str = ""  # what was refused: "capacity" | "quota" | "eviction" (its TTL depends on it)

    def covers(self, size: str, zone: str, priority: str, node_type: str) -> bool:
        """Whether launching `node_type` as (size, zone, priority) is avoided by this entry."""
        if not self.size:
            return self.node_type == node_type
        return (
            self.size == size
            and (not self.zone or self.zone == zone)
            and (not self.priority or self.priority == priority)
        )


@dataclass(frozen=True)
class ClusterRecord:
    name: str
    status: ClusterStatus
    config_json: str  # the normalized config, as JSON
    config_hash: str
    generation: int  # bumped when a deleted cluster's name is reused
    created_at: datetime
    updated_at: datetime
    head: HeadInfo = field(default_factory=HeadInfo)
    last_decision: str = ""  # JSON of the last ScalingPlan that changed something
    last_observation: str = ""  # JSON summary of the last Ray state (pending demand, infeasible)
    unavailable: tuple[Unavailability, ...] = ()
    ignored_fields: tuple[str, ...] = ()
    status_reason: str = ""
    launches_paused_until: datetime | None = None  # the cloud throttled launches (429 Retry-After) until then
    # Failure isolation: ticks that failed in a row, why the last one failed, and when the next may run. A success
    # resets all three; a tick before `backoff_until` returns at once without touching the cloud.
    consecutive_failures: int = 0
    last_error: str = ""
    last_error_at: datetime | None = None
    backoff_until: datetime | None = None
    # Set (and saved) before the first provider call that could create anything for this generation. While False,
    # nothing of it exists in the cloud, so deleting it needs no provider at all.
    cloud_touched: bool = False
    head_auth_error: str = ""  # the head agent refuses the cluster token; "" while it accepts it (or is unknown)
    # Since when the running head's VM is listed but its agent does not answer (written once, cleared by an answer).
    # A head silent for longer than the head-unreachable timeout fails the cluster (a deallocated head VM is still
    # listed as running: Azure's VM list carries no power state).
    head_unreachable_since: datetime | None = None
    # Autostop: since when the running cluster has had no pending demand, no busy node and no running Ray job.
    idle_since: datetime | None = None
    # Set when a deleted cluster's rows were removed after the retention period: the row is then a tombstone that
    # only keeps the name's generation (so a new cluster of that name never gets an old cluster's token).
    purged_at: datetime | None = None
    etag: str = ""  # set by the store; an update must carry the etag it read


@dataclass(frozen=True)
class InstanceRecord:
    cluster_name: str
    instance_id: str
    node_type: str
    status: InstanceStatus
    request_id: str
    status_since: datetime
    created_at: datetime
    is_head: bool = False
    cloud_instance_id: str = ""
    ray_node_id: str = ""
    config_hash: str = ""
    availability_zone: str = ""
    last_error: str = ""
    attempts: int = 0  # terminate/launch attempts, for backoff and failure counting
    priority: str = ""  # "spot" | "regular": the priority it was launched at; "" before launch or when unknown
    # The VM received a spot preemption notice: Azure stops it at this time. Set once; the node is leaving.
    preempt_deadline: datetime | None = None
    # When the cloud accepted the launch: the launch timeout counts from here, not from queueing (a launch may wait
    # queued for a Retry-After or for the head's address).
    launched_at: datetime | None = None
    etag: str = ""


@dataclass(frozen=True)
class Event:
    cluster_name: str
    at: datetime
    kind: str  # e.g. "launch", "terminate", "drain-refused", "poison", "status"
    message: str
    instance_id: str = ""


# --------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    node_type: str
    count: int
    reason: str


@dataclass(frozen=True)
class Termination:
    instance_id: str
    reason: str
    drain: bool = True  # ask Ray to drain first (idle scale-down); False for broken or deleting nodes


@dataclass(frozen=True)
class Infeasible:
    shape: Shape
    count: int
    reason: str


class WaitCause(enum.StrEnum):
    """Why feasible demand is left waiting by a plan."""

    MAX_WORKERS = "max_workers"  # every node type that could hold it is at its own max_workers
    GLOBAL_MAX_WORKERS = "global_max_workers"  # the cluster is at its max_workers
    UNAVAILABLE = "unavailable"  # the types that could hold it are out of capacity or quota (and have no fallback)
    EXISTING_NODE = "existing_node"  # only an existing node can hold it (node:<ip>, a label only it has): it is full


@dataclass(frozen=True)
class Waiting:
    """Feasible demand that this plan launches nothing for, and why (`reason` says it in words)."""

    shape: Shape
    count: int
    # "pending" (tasks, actors, placement group bundles) | "placement_group" (STRICT_SPREAD) | "request_resources"
    source: str
    cause: WaitCause
    node_types: tuple[str, ...] = ()  # the node types that could hold it
    reason: str = ""


@dataclass(frozen=True)
class ScalingPlan:
    launches: tuple[Launch, ...] = ()
    terminations: tuple[Termination, ...] = ()
    infeasible: tuple[Infeasible, ...] = ()
    notes: tuple[str, ...] = ()  # why nothing happened, when nothing happened
    waiting: tuple[Waiting, ...] = ()  # feasible demand left waiting (max_workers, unavailable types), by cause

    @property
    def is_empty(self) -> bool:
        return not self.launches and not self.terminations

    def reasons(self) -> list[str]:
        lines = [f"launch {launch.count} x {launch.node_type}: {launch.reason}" for launch in self.launches]
        lines += [f"terminate {t.instance_id}: {t.reason}" for t in self.terminations]
        lines += [f"infeasible {format_shape(i.shape)} x {i.count}: {i.reason}" for i in self.infeasible]
        return lines + list(self.notes)
