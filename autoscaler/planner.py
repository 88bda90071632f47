"""The planner: which workers to launch and which to terminate, given what the cluster has and what Ray waits for.

Pure: no I/O, no clock (`now` is passed in). The reconcile shell calls `plan(...)` once per tick and acts on the
`ScalingPlan`. The rules, in the order `plan` applies them (Ray's resource demand scheduler, v1 and v2, unless
marked "ours"; docs/decisions/planner.md says why each difference exists):

1. Observe. Final instances and the head record are ignored (the shell owns the head). Launching instances
   (queued/requested/allocated) count with their node type's resources; ray_running ones with what their Ray node
   reports free; the head's Ray node adds its free capacity. A requested/allocated instance older than its type's
   launch_timeout_s is terminated without drain and counted as a launch failure (ours). Launching instances of an
   outdated config, and idle ray_running ones, are terminated; busy outdated nodes stay until they are idle.
2. min_workers per type (capped by max_workers and the global max_workers).
3. `request_resources` constraints are packed against the cluster's *total* capacity; what does not fit launches.
4. STRICT_SPREAD placement groups take one distinct node per bundle, or nothing at all.
5. Tasks, actors and the other placement groups (STRICT_PACK as one summed bundle, PACK/SPREAD flattened) are
   first-fit onto free capacity, largest shapes first; the rest is covered by new nodes.
6. New nodes are chosen twice: with Ray's utilization scorer (which also avoids GPU nodes for CPU-only demand) and
   with a cost-per-packed-demand scorer (ours); the result that serves more demand, then costs less, wins.
   Types marked unavailable are replaced by their `fallback` chain, then by the next best type (ours).
7. upscaling_speed caps demand-driven launches per type as Ray does: pending + new <= max(5, speed * running);
   min_workers, request_resources and placement groups are exempt.
8. Scale-down, only when Ray's state is known: idle longer than the type's idle timeout, not needed by any demand
   or constraint, never below min_workers, the longest idle first, drained first. Types above their max_workers
   (after a config change) shed launching and idle nodes.

Resource amounts are integers in Ray's own granularity (1/10,000 of a unit) so that packing is exact, and demand is
always "shape x count": 10,000 pending bundles of 30 shapes cost 30 steps, not 10,000.
"""

from __future__ import annotations

import enum
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from autoscaler.config import ClusterConfig, NodeTypeConfig, is_outdated_node_hash
from autoscaler.model import (
    GangDemand,
    GangStrategy,
    Infeasible,
    InstanceRecord,
    InstanceStatus,
    Launch,
    RayNode,
    RayNodeStatus,
    RayState,
    ScalingPlan,
    Shape,
    ShapeDemand,
    Termination,
    Unavailability,
    format_shape,
    shape_of,
)

DEFAULT_LAUNCH_TIMEOUT_S = 600.0
UPSCALING_INITIAL_NUM_NODES = 5  # Ray's AUTOSCALER_UPSCALING_INITIAL_NUM_NODES
RESOURCE_UNITS = 10_000  # Ray keeps resources as fixed-point with 4 decimals; so do we, to pack exactly
RUNTIME_LEARNED_RESOURCES = ("CPU", "GPU", "memory")  # what Ray copies from a running node into its type
# When max_workers binds, the cost-scored plan may serve more bundles than Ray's scorer at a higher price: it is
# taken only up to this premium, beyond which Ray's cheaper, smaller plan stands.
MAX_PREMIUM_FOR_MORE_SERVED = 0.10
SPOT_PRICE_FACTOR = 0.3  # Azure spot is typically 60-90% cheaper; 0.3 ranks spot below regular without guessing low

_LAUNCHING = frozenset({InstanceStatus.QUEUED, InstanceStatus.REQUESTED, InstanceStatus.ALLOCATED})
_LAUNCH_TIMED = frozenset({InstanceStatus.REQUESTED, InstanceStatus.ALLOCATED})  # queued has lifecycle's own timeout


# --------------------------------------------------------------------------------------------
# The config as the planner reads it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerType:
    name: str
    resources: Shape
    min_workers: int
    max_workers: int
    idle_timeout_s: float
    launch_timeout_s: float
    cost: float  # relative price per hour; only ratios between types matter
    cost_basis: str  # where `cost` came from, for reasons and the status page
    fallback: str | None = None
    # ClusterConfig.node_hash of this type as a worker: its instances launched with another are outdated.
    # "" (configs built by hand) falls back to PlannerConfig.config_hash.
    config_hash: str = ""


@dataclass(frozen=True)
class PlannerConfig:
    """What `plan` reads from a ClusterConfig, precomputed once (tests and the benchmark build it directly)."""

    worker_types: tuple[WorkerType, ...]  # in config order
    head_node_type: str
    head_resources: Shape
    max_workers: int  # global, workers only
    upscaling_speed: float
    config_hash: str

    @classmethod
    def from_cluster_config(cls, config: ClusterConfig) -> PlannerConfig:
        workers = []
        for name, node_type in config.worker_node_types().items():
            cost, basis = node_type_cost(node_type)
            workers.append(
                WorkerType(
                    name=name,
                    resources=shape_of(node_type.resources),
                    min_workers=node_type.min_workers,
                    max_workers=node_type.max_workers,
                    idle_timeout_s=config.idle_timeout_s_for(name),
                    launch_timeout_s=node_type.launch_timeout_s or DEFAULT_LAUNCH_TIMEOUT_S,
                    cost=cost,
                    cost_basis=basis,
                    fallback=node_type.fallback,
                    config_hash=config.node_hash(name, is_head=False),
                )
            )
        head = config.available_node_types[config.head_node_type]
        return cls(
            worker_types=tuple(workers),
            head_node_type=config.head_node_type,
            head_resources=shape_of(head.resources),
            max_workers=config.max_workers,
            upscaling_speed=config.upscaling_speed,
            config_hash=config.config_hash(),
        )


# --------------------------------------------------------------------------------------------
# Price classes (ours): used only when a node type gives no `cost`
# --------------------------------------------------------------------------------------------

# Pay-as-you-go Linux list prices per vCPU-hour by VM family (rounded, East US, 2024-2025). Relative, not a bill.
# GPU families carry most of their price in the accelerator, below.
_FAMILY_PRICE_PER_VCPU_HOUR: dict[str, float] = {
    "A": 0.045,
    "B": 0.021,
    "D": 0.048,
    "DC": 0.1,
    "E": 0.063,
    "EC": 0.075,
    "F": 0.043,
    "FX": 0.09,
    "H": 0.03,
    "HB": 0.03,
    "HC": 0.072,
    "L": 0.078,
    "M": 0.27,
    "NC": 0.02,
    "ND": 0.02,
    "NG": 0.02,
    "NV": 0.02,
}
# Price per GPU-hour by accelerator named in the size (NC24ads_A100_v4); "" is the default for older GPU sizes.
_ACCELERATOR_PRICE_PER_GPU_HOUR: dict[str, float] = {
    "H200": 8.0,
    "H100": 6.5,
    "MI300X": 6.0,
    "A100": 3.4,
    "A10": 1.0,
    "T4": 0.45,
    "": 2.8,
}
_DEFAULT_PRICE_PER_VCPU_HOUR = 0.05
_VM_SIZE_PARTS = re.compile(r"^(?:Standard|Basic)_([A-Z]+)(\d+)")


def vm_size_price(vm_size: str, *, gpus: float, cpus: float, is_spot: bool) -> float:
    """A relative hourly price for an Azure VM size: family rate x vCPUs (from the name) + GPUs x accelerator rate."""
    parts = _VM_SIZE_PARTS.match(vm_size)
    family, vcpus = (parts.group(1), float(parts.group(2))) if parts else ("", cpus)
    per_vcpu = next(
        (
            _FAMILY_PRICE_PER_VCPU_HOUR[family[:length]]
            for length in (2, 1)
            if family[:length] in _FAMILY_PRICE_PER_VCPU_HOUR
        ),
        _DEFAULT_PRICE_PER_VCPU_HOUR,
    )
    accelerator = next((name for name in _ACCELERATOR_PRICE_PER_GPU_HOUR if name and name in vm_size.upper()), "")
    price = per_vcpu * max(vcpus, 1.0) + gpus * _ACCELERATOR_PRICE_PER_GPU_HOUR[accelerator]
    return price * (SPOT_PRICE_FACTOR if is_spot else 1.0)


def node_type_cost(node_type: NodeTypeConfig) -> tuple[float, str]:
    """The type's `cost`, else a price class from its VM size, else one from its resources; with where it came from."""
    if node_type.cost is not None:
        return node_type.cost, "cost from the config"
    cpus = float(node_type.resources.get("CPU", 0.0))
    gpus = float(node_type.resources.get("GPU", 0.0))
    arm = node_type.azure_arm_parameters()
    if arm is not None:
        price = vm_size_price(arm.vmSize, gpus=gpus, cpus=cpus, is_spot=arm.is_spot)
        return price, f"price class of {arm.vmSize}{' (spot)' if arm.is_spot else ''}"
    price = vm_size_price("", gpus=gpus, cpus=cpus, is_spot=False)
    return price, "price class of its resources"


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def plan(
    *,
    config: ClusterConfig | PlannerConfig,
    instances: Sequence[InstanceRecord],
    ray: RayState | None,
    unavailable: Sequence[Unavailability],
    now: datetime,
) -> ScalingPlan:
    """Decide one tick. `ray is None` means the head agent did not answer: keep min_workers and apply launch
    timeouts, but never scale down for idleness on stale information."""
    planner_config = config if isinstance(config, PlannerConfig) else PlannerConfig.from_cluster_config(config)

    def planner(strategy: _Strategy) -> tuple[_Planner, ScalingPlan]:
        candidate = _Planner(planner_config, instances, ray, unavailable, now, strategy=strategy)
        return candidate, candidate.run()

    rays, rays_plan = planner(_Strategy.RAY)
    if not rays.chose_node_types:
        return rays_plan  # nothing was chosen, so every scorer gives this same plan
    chosen, chosen_plan = rays, rays_plan
    cheapest = planner(_Strategy.COST)
    candidates = [cheapest]
    if cheapest[0].unserved:
        candidates.append(planner(_Strategy.CAPACITY))
    for candidate, candidate_plan in candidates:
        if _is_acceptable(candidate, rays) and (chosen is rays or _is_better(candidate, chosen)):
            chosen, chosen_plan = candidate, candidate_plan
    return chosen_plan


# --------------------------------------------------------------------------------------------
# Internals: vectors, slots (nodes with free capacity), demand
# --------------------------------------------------------------------------------------------

Need = tuple[tuple[int, int], ...]  # (resource index, units), nonzero only


def _units(amount: float) -> int:
    return round(amount * RESOURCE_UNITS)


def _fit(free: list[int], need: Need) -> int:
    """How many bundles of `need` fit into `free`."""
    best = -1
    for index, units in need:
        fits = free[index] // units
        if fits == 0:
            return 0
        if best < 0 or fits < best:
            best = fits
    return best


def _take(free: list[int], need: Need, times: int) -> None:
    for index, units in need:
        free[index] -= units * times


class _Kind(enum.Enum):
    HEAD = "head"
    BUSY = "busy"  # running Ray with work, or of unknown usage (Ray unreachable)
    UNMANAGED = "unmanaged"  # a Ray node without an instance record (started by hand)
    IDLE = "idle"
    LAUNCHING = "launching"
    PLANNED = "planned"  # a launch decided in this tick


@dataclass(slots=True, eq=False)
class _Slot:
    """`nodes` identical nodes with `free` capacity each (planned launches are grouped; real nodes have nodes=1)."""

    free: list[int]
    total: list[int]
    nodes: int
    node_type: str
    kind: _Kind
    instance_id: str = ""
    idle_duration_s: float = 0.0
    needed: bool = False
    origin: _Slot | None = None  # for scratch copies: the slot whose `needed` they report to

    def split(self, nodes: int) -> _Slot:
        return _Slot(
            list(self.free),
            self.total,
            nodes,
            self.node_type,
            self.kind,
            self.instance_id,
            self.idle_duration_s,
            self.needed,
            self.origin,
        )

    def scratch(self, *, from_total: bool) -> _Slot:
        copy = self.split(self.nodes)
        copy.origin = self
        if from_total:
            copy.free = list(self.total)
        return copy


@dataclass(frozen=True, slots=True)
class _Demand:
    shape: Shape
    need: Need
    count: int


def _demand_order(demand: _Demand) -> tuple[int, float, Shape]:
    """Ray's bin-packing order: more resource kinds first, then heavier, then by name (stable)."""
    return (len(demand.shape), sum(amount for _, amount in demand.shape), demand.shape)


def _first_fit(slots: list[_Slot], demands: Sequence[_Demand]) -> list[_Demand]:
    """Ray's `get_bin_pack_residual`, on shapes with counts: each bundle goes to the first slot it fits, largest
    shapes first. Marks the slots that receive anything as needed; returns what did not fit (in order)."""
    residual = []
    for demand in demands:
        remaining = demand.count
        index = 0
        while remaining and index < len(slots):
            slot = slots[index]
            fits = _fit(slot.free, demand.need)
            if fits:
                slot.needed = True
                if slot.nodes == 1:
                    taken = min(fits, remaining)
                    _take(slot.free, demand.need, taken)
                    remaining -= taken
                elif fits * slot.nodes <= remaining:
                    _take(slot.free, demand.need, fits)
                    remaining -= fits * slot.nodes
                else:
                    # Only some of these identical nodes fill up: split them off, the rest stay as they were.
                    full_nodes, last = divmod(remaining, fits)
                    parts = []
                    if full_nodes:
                        parts.append(slot.split(full_nodes))
                        _take(parts[-1].free, demand.need, fits)
                    if last:
                        parts.append(slot.split(1))
                        _take(parts[-1].free, demand.need, last)
                    slot.nodes -= full_nodes + (1 if last else 0)
                    slot.needed = False
                    if slot.nodes:
                        parts.append(slot)
                    slots[index : index + 1] = parts
                    index += len(parts) - 1
                    remaining = 0
            index += 1
        if remaining:
            residual.append(_Demand(demand.shape, demand.need, remaining))
    return residual


# --------------------------------------------------------------------------------------------
# Choosing node types for demand that fits nowhere yet
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TypeOption:
    name: str
    units: tuple[int, ...]
    cost: float
    is_gpu: bool
    scored: tuple[tuple[int, str, float], ...]  # (index, name, amount) of resources >= 1 unit: Ray's scorer uses these


@dataclass
class _NewNodes:
    node_type: str
    nodes: int
    served: dict[Shape, int]  # bundles (per shape) these nodes were chosen for
    free: list[int] | None = None  # each node's free capacity after those bundles


@dataclass
class _Choice:
    groups: list[_NewNodes]
    residual: list[_Demand]

    def residual_counts(self) -> dict[Shape, int]:
        return {demand.shape: demand.count for demand in self.residual}


class _Strategy(enum.Enum):
    RAY = "ray"  # Ray's utilization scorer
    COST = "cost"  # ours: cheapest per unit of demand served
    CAPACITY = "capacity"  # ours: most demand per node, for when max_workers leaves too few nodes


def _pattern(option: _TypeOption, demands: Sequence[_Demand], remaining: list[int]) -> tuple[list[int], list[int]]:
    """What one fresh node of this type takes, greedily in demand order: (bundles per demand, free after)."""
    free = list(option.units)
    taken = [0] * len(demands)
    for position, demand in enumerate(demands):
        if remaining[position]:
            fits = _fit(free, demand.need)
            if fits:
                count = min(fits, remaining[position])
                _take(free, demand.need, count)
                taken[position] = count
    return taken, free


def _ray_score(
    option: _TypeOption, free_after: list[int], resource_names: set[str], any_gpu_demand: bool
) -> tuple[bool, int, float, float] | None:
    """Ray's `_resource_based_utilization_scorer`: (not a GPU node for CPU-only demand, resource kinds matched,
    least utilized resource, mean utilization), each utilization weighted as amount * util**3."""
    weighted = []
    matching = 0
    for index, name, amount in option.scored:
        if name in resource_names:
            matching += 1
        utilization = (option.units[index] - free_after[index]) / option.units[index]
        weighted.append(amount * utilization**3)
    if not weighted:
        return None
    gpu_ok = not (option.is_gpu and not any_gpu_demand)
    return gpu_ok, matching, min(weighted), sum(weighted) / len(weighted)


def _choose(
    demands: Sequence[_Demand],
    *,
    options: Sequence[_TypeOption],
    room: Mapping[str, int],
    global_room: int,
    weights: Sequence[float],
    strategy: _Strategy,
    unplaceable_names: frozenset[str] = frozenset(),
) -> _Choice:
    """Ray's `get_nodes_for`: pick the best type for what remains, give it one node's worth, repeat. A node's worth
    is repeated as many times as the choice provably stays the same, so the loop runs per change, not per node.
    `unplaceable_names` are the resources of infeasible bundles, which Ray keeps in its list and so in its scores."""
    remaining = [demand.count for demand in demands]
    added: dict[str, int] = defaultdict(int)
    total_added = 0
    groups: list[_NewNodes] = []
    while any(remaining) and total_added < global_room:
        resource_names = {name for position, d in enumerate(demands) if remaining[position] for name, _ in d.shape}
        resource_names |= unplaceable_names
        any_gpu_demand = "GPU" in resource_names
        candidates = []
        patterns: list[list[int]] = []
        for option in options:
            if added[option.name] >= room.get(option.name, 0):
                continue
            taken, free_after = _pattern(option, demands, remaining)
            patterns.append(taken)
            if not any(taken):
                continue
            ray_score = _ray_score(option, free_after, resource_names, any_gpu_demand)
            if ray_score is None:
                continue
            if strategy is _Strategy.RAY:
                key: tuple[Any, ...] = (ray_score, option.name)
            else:
                weight = sum(count * weights[position] for position, count in enumerate(taken))
                if strategy is _Strategy.COST:
                    key = (ray_score[0], -option.cost / weight, ray_score[1:], option.name)
                else:
                    key = (ray_score[0], weight, -option.cost, ray_score[1:], option.name)
            candidates.append((key, option, taken, free_after))
        if not candidates:
            break
        _, best, taken, free_after = max(candidates, key=lambda candidate: candidate[0])
        # Every type's greedy pattern (hence every score) is unchanged while each shape keeps at least as many
        # bundles as any type takes of it, so the same choice repeats that many times.
        repeat = min(
            1 + (remaining[position] - max(pattern[position] for pattern in patterns)) // count
            for position, count in enumerate(taken)
            if count
        )
        repeat = max(1, min(repeat, room[best.name] - added[best.name], global_room - total_added))
        served: dict[Shape, int] = {}
        for position, count in enumerate(taken):
            if count:
                remaining[position] -= count * repeat
                served[demands[position].shape] = count * repeat
        added[best.name] += repeat
        total_added += repeat
        groups.append(_NewNodes(best.name, repeat, served, free_after))
    residual = [
        _Demand(demand.shape, demand.need, remaining[position])
        for position, demand in enumerate(demands)
        if remaining[position]
    ]
    return _Choice(groups, residual)


def _is_acceptable(candidate: _Planner, rays: _Planner) -> bool:
    """Another scorer's plan may replace the Ray-scored one when it serves every bundle that one serves and is
    cheaper, or serves strictly more for at most MAX_PREMIUM_FOR_MORE_SERVED extra."""
    if not _serves_at_least(candidate, rays):
        return False
    if candidate.unserved == rays.unserved:
        return candidate.planned_cost() < rays.planned_cost()
    return candidate.planned_cost() <= rays.planned_cost() * (1.0 + MAX_PREMIUM_FOR_MORE_SERVED)


def _serves_at_least(one: _Planner, other: _Planner) -> bool:
    return all(one.unserved[key] <= other.unserved[key] for key in one.unserved)


def _is_better(one: _Planner, other: _Planner) -> bool:
    """Serves strictly more, or the same for less."""
    if one.unserved == other.unserved:
        return one.planned_cost() < other.planned_cost()
    return _serves_at_least(one, other)


# --------------------------------------------------------------------------------------------
# The planner proper
# --------------------------------------------------------------------------------------------


@dataclass
class _Purpose:
    """Why nodes of one type are launched, collected for the reason text."""

    min_workers: int = 0
    constraint: int = 0
    spread: int = 0
    demand: int = 0
    served: dict[Shape, int] = field(default_factory=dict)
    instead_of: dict[str, int] = field(default_factory=dict)  # unavailable type -> nodes taken over

    @property
    def exempt_from_cap(self) -> int:
        return self.min_workers + self.constraint + self.spread


class _Planner:
    def __init__(
        self,
        config: PlannerConfig,
        instances: Sequence[InstanceRecord],
        ray: RayState | None,
        unavailable: Sequence[Unavailability],
        now: datetime,
        *,
        strategy: _Strategy,
    ) -> None:
        self.config = config
        self.strategy = strategy
        self.chose_node_types = False  # whether any step had to pick types (else both strategies agree)
        self.unserved: Counter[tuple[str, Shape]] = Counter()
        self.infeasible_names: frozenset[str] = frozenset()  # of the demand being covered
        self.instances = instances
        self.ray = ray
        self.now = now
        self.types = {worker.name: worker for worker in config.worker_types}
        self.unavailable = {u.node_type: u for u in unavailable if u.until > now}
        self.terminations: list[Termination] = []
        self.infeasible: list[Infeasible] = []
        self.notes: list[str] = []
        self.slots: list[_Slot] = []
        self.counts: dict[str, int] = dict.fromkeys(self.types, 0)  # live workers that count towards max_workers
        self.running: dict[str, int] = dict.fromkeys(self.types, 0)
        self.launching: dict[str, int] = dict.fromkeys(self.types, 0)
        self.planned: dict[str, _Purpose] = defaultdict(_Purpose)
        self.pg_allowance: dict[str, int] = defaultdict(int)
        self._build_vocabulary()

    # ---- vectors ------------------------------------------------------------------------

    def _build_vocabulary(self) -> None:
        names: dict[str, None] = {}
        for worker in self.config.worker_types:
            names.update(dict.fromkeys(name for name, _ in worker.resources))
        names.update(dict.fromkeys(name for name, _ in self.config.head_resources))
        ray = self.ray
        if ray is not None:
            for node in ray.nodes:
                names.update(dict.fromkeys(node.total_resources))
                names.update(dict.fromkeys(node.available_resources))
            for demand in (*ray.pending, *ray.constraints):
                names.update(dict.fromkeys(name for name, _ in demand.shape))
            for gang in ray.gangs:
                for bundle in gang.bundles:
                    names.update(dict.fromkeys(name for name, _ in bundle))
        self.resource_index = {name: index for index, name in enumerate(names)}
        self.type_units = {name: self._vector(dict(worker.resources)) for name, worker in self.types.items()}
        if ray is not None:
            self._learn_runtime_resources(ray)
        self.type_max_units = [
            max((units[index] for units in self.type_units.values()), default=0)
            for index in range(len(self.resource_index))
        ]

    def _vector(self, resources: Mapping[str, float]) -> list[int]:
        vector = [0] * len(self.resource_index)
        for name, amount in resources.items():
            if name in self.resource_index:
                vector[self.resource_index[name]] = max(0, _units(amount))
        return vector

    def _need(self, shape: Shape) -> Need:
        return tuple((self.resource_index[name], _units(amount)) for name, amount in shape if _units(amount) > 0)

    def _learn_runtime_resources(self, ray: RayState) -> None:
        """As Ray does: a running worker's real CPU/GPU/memory replace its type's declared ones (memory is
        usually not declared at all)."""
        records = {record.instance_id: record for record in self.instances}
        learned: set[str] = set()
        for node in ray.nodes:
            record = records.get(node.instance_id)
            if node.is_head or record is None or record.node_type not in self.types or record.node_type in learned:
                continue
            if node.status == RayNodeStatus.DEAD or not node.total_resources:
                continue
            units = self.type_units[record.node_type]
            for name in RUNTIME_LEARNED_RESOURCES:
                if name in node.total_resources:
                    units[self.resource_index[name]] = _units(node.total_resources[name])
            learned.add(record.node_type)

    def _options(self, *, include_unavailable: bool) -> list[_TypeOption]:
        gpu_index = self.resource_index.get("GPU")
        names_by_index = list(self.resource_index)
        options = []
        for name, worker in self.types.items():
            if name in self.unavailable and not include_unavailable:
                continue
            units = tuple(self.type_units[name])
            scored = tuple(
                (index, names_by_index[index], units[index] / RESOURCE_UNITS)
                for index in range(len(units))
                if units[index] >= RESOURCE_UNITS
            )
            is_gpu = gpu_index is not None and units[gpu_index] > 0
            options.append(_TypeOption(name, units, worker.cost, is_gpu, scored))
        return options

    # ---- the story ----------------------------------------------------------------------

    def run(self) -> ScalingPlan:
        self.notes.extend(
            f"not launched: {self._unavailable_text(name)}" for name in self.unavailable if name in self.types
        )
        self._observe()
        self._min_workers()
        if self.ray is not None:
            self._constraints(self.ray.constraints)
            self._strict_spread(self.ray.gangs)
            self._pending(self.ray)
        launches = self._cap_launches()
        self._scale_down(launches)
        return self._assemble(launches)

    # ---- 1. observe ---------------------------------------------------------------------

    def _observe(self) -> None:
        ray = self.ray
        ray_nodes = {node.instance_id: node for node in ray.nodes if node.instance_id} if ray else {}
        known_ids = {record.instance_id for record in self.instances}
        head_ids = {record.instance_id for record in self.instances if record.is_head}
        head_slots: list[_Slot] = []
        busy: list[_Slot] = []
        idle: list[_Slot] = []
        launching: list[_Slot] = []
        unmanaged: list[_Slot] = []
        for record in self.instances:
            if record.is_head or not record.status.is_live:
                continue
            if record.status in _LAUNCHING:
                slot = self._observe_launching(record)
                if slot is not None:
                    launching.append(slot)
            elif record.status == InstanceStatus.RAY_RUNNING:
                slot = self._observe_running(record, ray_nodes.get(record.instance_id))
                if slot is not None:
                    (idle if slot.kind is _Kind.IDLE else busy).append(slot)
        if ray is not None:
            for node in ray.nodes:
                if node.status in (RayNodeStatus.DEAD, RayNodeStatus.DRAINING):
                    continue
                if node.is_head or node.instance_id in head_ids:
                    head_slots.append(self._ray_slot(node, self.config.head_node_type, _Kind.HEAD))
                elif not node.instance_id or node.instance_id not in known_ids:
                    unmanaged.append(self._ray_slot(node, node.node_type, _Kind.UNMANAGED))
        # Demand lands on running nodes before launching ones, and on recently used idle nodes before long idle
        # ones, so that the nodes left unneeded are the ones worth terminating.
        idle.sort(key=lambda slot: slot.idle_duration_s)
        self.slots = head_slots + busy + unmanaged + idle + launching

    def _observe_launching(self, record: InstanceRecord) -> _Slot | None:
        worker = self.types.get(record.node_type)
        timeout_s = worker.launch_timeout_s if worker else DEFAULT_LAUNCH_TIMEOUT_S
        # From when the cloud accepted the launch: time spent queued (a Retry-After pause) is not the cloud's.
        age_s = (self.now - (record.launched_at or record.created_at)).total_seconds()
        if record.status in _LAUNCH_TIMED and age_s > timeout_s:
            self._terminate(
                record,
                f"launch failure: not registered with Ray {age_s:.0f} s after launch "
                f"(launch_timeout_s {timeout_s:g}, status {record.status})",
                drain=False,
            )
            return None
        if worker is None:
            self._terminate(record, f"node type {record.node_type} is no longer in the config", drain=False)
            return None
        if self._is_outdated(record):
            self._terminate(record, "outdated config: replaced before it starts Ray", drain=False)
            return None
        self.counts[worker.name] += 1
        self.launching[worker.name] += 1
        units = self.type_units[worker.name]
        return _Slot(list(units), units, 1, worker.name, _Kind.LAUNCHING, record.instance_id)

    def _observe_running(self, record: InstanceRecord, node: RayNode | None) -> _Slot | None:
        worker = self.types.get(record.node_type)
        if self.ray is None:
            # No news from Ray: the node keeps counting, with unknown usage, and is never taken for idle.
            if worker is None:
                return None
            self.counts[worker.name] += 1
            self.running[worker.name] += 1
            units = self.type_units[worker.name]
            return _Slot(list(units), units, 1, worker.name, _Kind.BUSY, record.instance_id)
        if node is None or node.status == RayNodeStatus.DEAD:
            self._terminate(record, "Ray reports no live node for it", drain=False)
            return None
        if node.status == RayNodeStatus.DRAINING:
            return None  # already leaving: neither capacity nor a worker to count
        is_idle = node.status == RayNodeStatus.IDLE
        if worker is None or self._is_outdated(record):
            why = "no longer in the config" if worker is None else "outdated config"
            if is_idle:
                self._terminate(record, f"{why}: idle, replaced by the current config", drain=True)
                return None
            self.notes.append(f"{record.instance_id} ({record.node_type}) has an {why}; replaced once idle")
        if worker is not None:
            self.counts[worker.name] += 1
            self.running[worker.name] += 1
        slot = self._ray_slot(node, record.node_type, _Kind.IDLE if is_idle else _Kind.BUSY)
        slot.instance_id = record.instance_id
        return slot

    def _ray_slot(self, node: RayNode, node_type: str, kind: _Kind) -> _Slot:
        total = self._vector(node.total_resources)
        free = self._vector(node.available_resources)
        return _Slot(free, total, 1, node_type, kind, node.instance_id, idle_duration_s=node.idle_duration_s)

    def _is_outdated(self, record: InstanceRecord) -> bool:
        worker = self.types.get(record.node_type)
        current = worker.config_hash if worker is not None and worker.config_hash else self.config.config_hash
        return is_outdated_node_hash(record.config_hash, current)

    def _terminate(self, record: InstanceRecord, reason: str, *, drain: bool) -> None:
        self.terminations.append(Termination(record.instance_id, reason, drain=drain))

    # ---- room under the maxima --------------------------------------------------------------

    def _room(self) -> dict[str, int]:
        return {
            name: max(0, worker.max_workers - self.counts[name] - self._planned_count(name))
            for name, worker in self.types.items()
        }

    def _planned_count(self, name: str) -> int:
        purpose = self.planned.get(name)
        return 0 if purpose is None else purpose.min_workers + purpose.constraint + purpose.spread + purpose.demand

    def _global_room(self) -> int:
        planned = sum(self._planned_count(name) for name in self.types)
        return max(0, self.config.max_workers - sum(self.counts.values()) - planned)

    def _add_planned(self, node_type: str, nodes: int, free: list[int] | None = None) -> None:
        units = self.type_units[node_type]
        self.slots.append(_Slot(list(units) if free is None else list(free), units, nodes, node_type, _Kind.PLANNED))

    # ---- 2. min_workers -------------------------------------------------------------------

    def _min_workers(self) -> None:
        for name, worker in self.types.items():
            wanted = min(worker.min_workers, worker.max_workers) - self.counts[name] - self._planned_count(name)
            if wanted <= 0:
                continue
            target = self._launchable(name, wanted)
            if target is None:
                self.notes.append(f"min_workers of {name} not met: {self._unavailable_text(name)} and no fallback")
                continue
            nodes = min(wanted, self._room()[target], self._global_room())
            if nodes <= 0:
                self.notes.append(f"min_workers of {name} not met: max_workers reached")
                continue
            purpose = self.planned[target]
            purpose.min_workers += nodes
            if target != name:
                purpose.instead_of[name] = purpose.instead_of.get(name, 0) + nodes
            self._add_planned(target, nodes)

    def _launchable(self, name: str, nodes: int) -> str | None:
        """The type itself, or the first available type along its fallback chain with room."""
        seen = set()
        current: str | None = name
        while current is not None and current in self.types and current not in seen:
            if current not in self.unavailable and (current == name or self._room()[current] > 0):
                return current
            seen.add(current)
            current = self.types[current].fallback
        return None

    def _unavailable_text(self, name: str) -> str:
        why = self.unavailable.get(name)
        return f"{name} unavailable until {why.until:%H:%M:%S}Z ({why.reason})" if why else f"{name} unavailable"

    # ---- demand helpers -------------------------------------------------------------------

    def _demands(self, shapes: Iterable[tuple[Shape, int]]) -> list[_Demand]:
        """Merged by shape and sorted in Ray's packing order; infeasible shapes are reported and left out."""
        counts: dict[Shape, int] = defaultdict(int)
        for shape, count in shapes:
            if count > 0 and self._need(shape):
                counts[shape] += count
        feasible = []
        self.infeasible_names = frozenset()
        for shape, count in counts.items():
            need = self._need(shape)
            if self._is_feasible(need):
                feasible.append(_Demand(shape, need, count))
            else:
                self.infeasible.append(Infeasible(shape, count, self._infeasible_reason(shape)))
                self.infeasible_names |= {name for name, _ in shape}
        feasible.sort(key=_demand_order, reverse=True)
        return feasible

    def _is_feasible(self, need: Need) -> bool:
        if any(_fit(self.type_units[name], need) for name, worker in self.types.items() if worker.max_workers > 0):
            return True
        head = next((slot for slot in self.slots if slot.kind is _Kind.HEAD), None)
        head_total = head.total if head is not None else self._vector(dict(self.config.head_resources))
        return _fit(head_total, need) > 0

    def _infeasible_reason(self, shape: Shape) -> str:
        short = []
        for name, amount in shape:
            index = self.resource_index[name]
            most = max(self.type_max_units[index], 0) / RESOURCE_UNITS
            if _units(amount) > self.type_max_units[index]:
                short.append(f"{name}: {amount:g} (largest node type has {most:g})")
        detail = "; ".join(short) if short else "no single node type has all of it"
        return f"no node type can hold it: {detail}"

    def _cover(self, demands: list[_Demand], purpose_of: str) -> list[_Demand]:
        """Launch nodes for demand that fits nowhere yet; returns what still does not fit. Types marked unavailable
        are planned as if available, then replaced along their fallback chain; whatever the fallback nodes do not
        hold goes to the best available type."""
        if not demands:
            return []
        ideal = self._choose_best(demands, include_unavailable=bool(self.unavailable))
        blocked = [group for group in ideal.groups if group.node_type in self.unavailable]
        for group in ideal.groups:
            if group.node_type not in self.unavailable:
                self._record_new_nodes(group.node_type, group.nodes, purpose_of, group.served, group.free)
        if not blocked:
            return ideal.residual
        left = ideal.residual_counts()
        for group in blocked:
            for shape, count in group.served.items():
                left[shape] = left.get(shape, 0) + count
        first_fallback_slot = len(self.slots)
        for group in blocked:
            target = self._launchable(group.node_type, group.nodes)
            if target is None or target == group.node_type:
                continue
            nodes = min(group.nodes, self._room()[target], self._global_room())
            if nodes > 0:
                instead = self.planned[target].instead_of
                instead[group.node_type] = instead.get(group.node_type, 0) + nodes
                self._record_new_nodes(target, nodes, purpose_of, {}, None)
        # The fallback type may be another size: see what its nodes really hold, then cover the rest.
        fallback_slots = self.slots[first_fallback_slot:]
        still = _first_fit(
            fallback_slots, [_Demand(d.shape, d.need, left[d.shape]) for d in demands if left.get(d.shape)]
        )
        self.slots[first_fallback_slot:] = fallback_slots
        rest = self._choose_best(still, include_unavailable=False)
        for group in rest.groups:
            self._record_new_nodes(group.node_type, group.nodes, purpose_of, group.served, group.free)
        return rest.residual

    def _choose_best(self, demands: list[_Demand], *, include_unavailable: bool) -> _Choice:
        self.chose_node_types = True
        return _choose(
            demands,
            options=self._options(include_unavailable=include_unavailable),
            room=self._room(),
            global_room=self._global_room(),
            weights=[self._weight(demand.need) for demand in demands],
            strategy=self.strategy,
            # Ray lets infeasible bundles sway its scorer (a GPU request no type can hold makes GPU nodes look
            # right for CPU work); the Ray-scored plan keeps that, for parity, and the other scorers do not.
            unplaceable_names=self.infeasible_names if self.strategy is _Strategy.RAY else frozenset(),
        )

    def planned_cost(self) -> float:
        return sum(self.types[name].cost * self._planned_count(name) for name in self.planned)

    def _weight(self, need: Need) -> float:
        """How much of the largest node types one bundle takes, summed over its resources: the unit of 'demand
        served' in the cost scorer."""
        return sum(units / self.type_max_units[index] for index, units in need if self.type_max_units[index])

    def _record_new_nodes(
        self, node_type: str, nodes: int, purpose_of: str, served: Mapping[Shape, int], free: list[int] | None
    ) -> None:
        purpose = self.planned[node_type]
        if purpose_of == "constraint":
            # A constraint reserves nothing: the new nodes stay wholly free for pending demand.
            purpose.constraint += nodes
            self._add_planned(node_type, nodes)
            return
        if purpose_of == "spread":
            purpose.spread += nodes
        else:
            purpose.demand += nodes
        for shape, count in served.items():
            purpose.served[shape] = purpose.served.get(shape, 0) + count
        self._add_planned(node_type, nodes, free)

    # ---- 3. request_resources ---------------------------------------------------------------

    def _constraints(self, constraints: Sequence[ShapeDemand]) -> None:
        demands = self._demands((constraint.shape, constraint.count) for constraint in constraints)
        if not demands:
            return
        # Packed against total capacity, as if the cluster were idle: a constraint is a floor on size, not on load.
        scratch = [slot.scratch(from_total=True) for slot in self.slots]
        residual = _first_fit(scratch, demands)
        for slot in scratch:
            if slot.needed and slot.origin is not None:
                slot.origin.needed = True
        left = self._cover(residual, "constraint")
        self.unserved.update({("constraint", demand.shape): demand.count for demand in left})
        if left:
            self.notes.append("request_resources not fully met: max_workers reached or types unavailable")

    # ---- 4. STRICT_SPREAD placement groups -----------------------------------------------------

    def _strict_spread(self, gangs: Sequence[GangDemand]) -> None:
        for gang in gangs:
            if gang.strategy is not GangStrategy.STRICT_SPREAD:
                continue
            demands = self._demands((bundle, gang.count) for bundle in gang.bundles)
            bundles = [_Demand(d.shape, d.need, 1) for d in demands for _ in range(d.count // gang.count)]
            if len(bundles) != sum(1 for bundle in gang.bundles if self._need(bundle)):
                continue  # one of its bundles fits no node type: reported as infeasible by _demands
            for _ in range(gang.count):
                if not self._place_spread(bundles):
                    self.unserved.update(("spread", bundle.shape) for bundle in bundles)
                    self.notes.append(
                        f"STRICT_SPREAD placement group of {len(bundles)} bundles cannot get distinct nodes: "
                        "max_workers reached or types unavailable"
                    )
                    break

    def _place_spread(self, bundles: Sequence[_Demand]) -> bool:
        """All bundles on distinct nodes (existing capacity first, then one new node each), or none at all."""
        trial = [slot.split(slot.nodes) for slot in self.slots]
        used: set[int] = set()
        unplaced = []
        for bundle in bundles:
            for index, slot in enumerate(trial):
                if id(slot) in used or not _fit(slot.free, bundle.need):
                    continue
                target = slot
                if slot.nodes > 1:
                    slot.nodes -= 1
                    target = slot.split(1)
                    trial.insert(index, target)
                _take(target.free, bundle.need, 1)
                target.needed = True
                used.add(id(target))
                break
            else:
                unplaced.append(bundle)
        if unplaced:
            self.chose_node_types = True
        options = self._options(include_unavailable=False)
        room, global_room = self._room(), self._global_room()
        chosen: list[_NewNodes] = []
        for bundle in unplaced:
            # One node per bundle: the cheapest type that holds it (Ray's scorer breaks ties).
            choice = _choose(
                [bundle],
                options=options,
                room=room,
                global_room=global_room - len(chosen),
                weights=[1.0],
                strategy=self.strategy,
            )
            if choice.residual:
                return False
            group = choice.groups[0]
            room = {**room, group.node_type: room[group.node_type] - 1}
            chosen.append(group)
        self.slots = trial
        for group in chosen:
            self._record_new_nodes(group.node_type, 1, "spread", group.served, group.free)
        return True

    # ---- 5. tasks, actors, other placement groups ------------------------------------------------

    def _pending(self, ray: RayState) -> None:
        gang_shapes = list(_gang_bundles(ray.gangs))
        if gang_shapes:
            self._placement_group_allowance(gang_shapes)
        demands = self._demands([*((d.shape, d.count) for d in ray.pending), *gang_shapes])
        residual = _first_fit(self.slots, demands)
        left = self._cover(residual, "demand")
        self.unserved.update({("pending", demand.shape): demand.count for demand in left})
        if left:
            waiting = sum(demand.count for demand in left)
            self.notes.append(f"{waiting} pending bundles wait: max_workers reached or their types are unavailable")

    def _placement_group_allowance(self, gang_shapes: list[tuple[Shape, int]]) -> None:
        """Ray lets placement groups exceed the upscaling_speed cap: it sizes them alone, on a scratch copy."""
        scratch = [slot.scratch(from_total=False) for slot in self.slots]
        infeasible_before = len(self.infeasible)
        demands = self._demands(gang_shapes)
        del self.infeasible[infeasible_before:]  # reported once, by the full pass
        residual = _first_fit(scratch, demands)
        choice = self._choose_best(residual, include_unavailable=False)
        for group in choice.groups:
            self.pg_allowance[group.node_type] += group.nodes

    # ---- 7. upscaling_speed ----------------------------------------------------------------

    def _cap_launches(self) -> dict[str, tuple[int, str]]:
        launches: dict[str, tuple[int, str]] = {}
        for name, purpose in self.planned.items():
            wanted = self._planned_count(name)
            if wanted <= 0:
                continue
            allowed_pending = max(
                UPSCALING_INITIAL_NUM_NODES, int(self.config.upscaling_speed * max(self.running[name], 1))
            )
            upper = max(allowed_pending - self.launching[name], purpose.exempt_from_cap + self.pg_allowance[name])
            nodes = min(upper, wanted)
            cap_note = ""
            if nodes < wanted:
                cap_note = (
                    f"; capped from {wanted} by upscaling_speed {self.config.upscaling_speed:g} "
                    f"({self.running[name]} running, {self.launching[name]} launching)"
                )
            if nodes > 0:
                launches[name] = (nodes, self._launch_reason(name, purpose) + cap_note)
        return launches

    def _launch_reason(self, name: str, purpose: _Purpose) -> str:
        parts = []
        if purpose.min_workers:
            worker = self.types[name]
            parts.append(f"min_workers {worker.min_workers} ({self.counts[name]} present)")
        if purpose.constraint:
            parts.append(f"request_resources beyond the cluster's total ({purpose.constraint} nodes)")
        if purpose.spread:
            parts.append(f"STRICT_SPREAD placement group ({purpose.spread} nodes)")
        if purpose.served:
            ranked = sorted(purpose.served.items(), key=lambda item: -item[1])
            text = ", ".join(f"{count} pending {format_shape(shape)}" for shape, count in ranked[:3])
            if len(ranked) > 3:
                text += f" and {len(ranked) - 3} more shapes"
            parts.append(text)
        elif purpose.demand:
            parts.append(f"pending demand ({purpose.demand} nodes)")
        for other, nodes in purpose.instead_of.items():
            parts.append(f"{nodes} as fallback for {self._unavailable_text(other)}")
        return "; ".join(parts)

    # ---- 8. scale-down ---------------------------------------------------------------------

    def _scale_down(self, launches: Mapping[str, tuple[int, str]]) -> None:
        remaining = dict(self.counts)
        self._shed_over_max(remaining, launches)
        if self.ray is None:
            self.notes.append("head agent unreachable: no scale-down for idleness this tick")
            return
        idle = [slot for slot in self.slots if slot.kind is _Kind.IDLE and slot.instance_id]
        idle.sort(key=lambda slot: -slot.idle_duration_s)  # least recently used first
        terminated = {termination.instance_id for termination in self.terminations}
        for slot in idle:
            worker = self.types.get(slot.node_type)
            if worker is None or slot.instance_id in terminated:
                continue
            if slot.idle_duration_s <= worker.idle_timeout_s:
                continue
            if slot.needed:
                continue
            if remaining[worker.name] <= min(worker.min_workers, worker.max_workers):
                continue
            remaining[worker.name] -= 1
            self.terminations.append(
                Termination(
                    slot.instance_id,
                    f"idle {slot.idle_duration_s:.0f} s > {worker.idle_timeout_s:g} s and not needed by pending "
                    f"demand ({remaining[worker.name]} {worker.name} left, min_workers {worker.min_workers})",
                    drain=True,
                )
            )

    def _shed_over_max(self, remaining: dict[str, int], launches: Mapping[str, tuple[int, str]]) -> None:
        """After max_workers is lowered: launching nodes go first, then idle ones; busy nodes are never cut."""
        cuttable = [slot for slot in self.slots if slot.kind is _Kind.LAUNCHING] + sorted(
            (slot for slot in self.slots if slot.kind is _Kind.IDLE and self.ray is not None),
            key=lambda slot: -slot.idle_duration_s,
        )
        total = sum(remaining.values())
        for slot in cuttable:
            worker = self.types.get(slot.node_type)
            if worker is None or not slot.instance_id:
                continue
            over_type = remaining[worker.name] > worker.max_workers
            over_global = total > self.config.max_workers
            if not (over_type or over_global):
                continue
            remaining[worker.name] -= 1
            total -= 1
            limit = (
                f"max_workers {worker.max_workers} of {worker.name}"
                if over_type
                else f"global max_workers {self.config.max_workers}"
            )
            self.terminations.append(
                Termination(slot.instance_id, f"above {limit} (config lowered)", drain=slot.kind is _Kind.IDLE)
            )
            slot.kind = _Kind.BUSY  # taken: not again for idleness

    # ---- the result --------------------------------------------------------------------------

    def _assemble(self, launches: Mapping[str, tuple[int, str]]) -> ScalingPlan:
        ordered = [Launch(name, nodes, reason) for name, (nodes, reason) in launches.items()]
        notes = list(dict.fromkeys(self.notes))
        if not ordered and not self.terminations:
            workers = sum(self.counts.values())
            pending = self.ray.pending_bundles if self.ray is not None else 0
            notes.append(f"no change: {workers} workers, {pending} pending bundles, none idle past their timeout")
        return ScalingPlan(
            launches=tuple(ordered),
            terminations=tuple(self.terminations),
            infeasible=tuple(self.infeasible),
            notes=tuple(notes),
        )


def _gang_bundles(gangs: Sequence[GangDemand]) -> Iterable[tuple[Shape, int]]:
    """Ray's `placement_groups_to_resource_demands`, minus STRICT_SPREAD (placed on distinct nodes elsewhere)."""
    for gang in gangs:
        if gang.strategy is GangStrategy.STRICT_PACK:
            summed: dict[str, float] = defaultdict(float)
            for bundle in gang.bundles:
                for name, amount in bundle:
                    summed[name] += amount
            yield shape_of(summed), gang.count
        elif gang.strategy in (GangStrategy.PACK, GangStrategy.SPREAD):
            for bundle in gang.bundles:
                yield bundle, gang.count
