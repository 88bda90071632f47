"""The demand view: Ray's resources as integer vectors, and what Ray waits for as demand the planner can place.

Three kinds of resource need care beyond plain amounts:
- Ray's implicit per-node resources (`node:__internal_implicit_resource_<name>`, e.g. Serve's max_replicas_per_node):
  every node has 1 of each unless it reports otherwise, so a new node of any type brings its own. Like Ray's
  `_fits`, a node that does not report one has all of it free.
- Node-bound resources (`node:<ip>`, `node:__internal_head__`): only the node that reports them has them, and no new
  node ever will. Demand for one is placed on existing nodes only; while that node is full it waits, never launches.
- Label selectors: a bundle may only go to a node whose labels one of its selectors admits (labels.py).

Demand is merged by (shape, selectors) and sorted in Ray's packing order. A shape that neither a node type nor an
existing node can hold is infeasible, with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.model import (
    GangDemand,
    GangStrategy,
    Infeasible,
    InstanceRecord,
    RayNodeStatus,
    RayState,
    Shape,
    shape_of,
)
from autoscaler.planner.inputs import PlannerConfig
from autoscaler.planner.labels import Selectors, admits, conjunction, format_selectors
from autoscaler.planner.packing import RESOURCE_UNITS, Demand, Kind, Need, Slot, demand_order, fit, units

IMPLICIT_RESOURCE_PREFIX = "node:__internal_implicit_resource_"  # ray._raylet.IMPLICIT_RESOURCE_PREFIX
NODE_RESOURCE_PREFIX = "node:"  # node:<ip> and node:__internal_head__: Ray puts them on one node each
RUNTIME_LEARNED_RESOURCES = ("CPU", "GPU", "memory")  # what Ray copies from a running node into its type

DemandItem = tuple[Shape, int, Selectors]


def is_implicit(name: str) -> bool:
    return name.startswith(IMPLICIT_RESOURCE_PREFIX)


class Resources:
    """Every resource name of this tick, indexed, and the node types' capacity as vectors of units."""

    def __init__(self, config: PlannerConfig, instances: Sequence[InstanceRecord], ray: RayState | None) -> None:
        names: dict[str, None] = {}
        declared: set[str] = set()
        for worker in config.worker_types:
            declared.update(name for name, _ in worker.resources)
        declared.update(name for name, _ in config.head_resources)
        names.update(dict.fromkeys(name for worker in config.worker_types for name, _ in worker.resources))
        names.update(dict.fromkeys(name for name, _ in config.head_resources))
        if ray is not None:
            for node in ray.nodes:
                names.update(dict.fromkeys(node.total_resources))
                names.update(dict.fromkeys(node.available_resources))
            for demand in (*ray.pending, *ray.constraints):
                names.update(dict.fromkeys(name for name, _ in demand.shape))
            for gang in ray.gangs:
                for bundle in gang.bundles:
                    names.update(dict.fromkeys(name for name, _ in bundle))
        self.index = {name: index for index, name in enumerate(names)}
        self.names = list(self.index)
        self.implicit = tuple(index for name, index in self.index.items() if is_implicit(name))
        self.node_bound = frozenset(
            index
            for name, index in self.index.items()
            if name.startswith(NODE_RESOURCE_PREFIX) and not is_implicit(name) and name not in declared
        )
        self.weighed = [index for index in range(len(self.index)) if index not in self.implicit]
        self.type_units = {worker.name: self.fresh(dict(worker.resources)) for worker in config.worker_types}
        self.type_declares = {worker.name: {name for name, _ in worker.resources} for worker in config.worker_types}
        if ray is not None:
            self._learn_runtime_resources(config, instances, ray)
        self.type_max_units = [
            max((vector[index] for vector in self.type_units.values()), default=0) for index in range(len(self.index))
        ]
        self.head_units = self.fresh(dict(config.head_resources))

    def plain(self, resources: Mapping[str, float]) -> list[int]:
        vector = [0] * len(self.index)
        for name, amount in resources.items():
            if name in self.index:
                vector[self.index[name]] = max(0, units(amount))
        return vector

    def fresh(self, resources: Mapping[str, float]) -> list[int]:
        """A new node with these resources: and 1 of each implicit resource it does not declare."""
        vector = self.plain(resources)
        for index in self.implicit:
            if self.names[index] not in resources:
                vector[index] = RESOURCE_UNITS
        return vector

    def node(self, total: Mapping[str, float], available: Mapping[str, float]) -> tuple[list[int], list[int]]:
        """(total, free) of a node Ray lists. An implicit resource it does not report is wholly free, as in Ray;
        one it reports in total but not as available is used up."""
        total_vector, free = self.plain(total), self.plain(available)
        for index in self.implicit:
            name = self.names[index]
            if name not in total:
                total_vector[index] = RESOURCE_UNITS
                if name not in available:
                    free[index] = RESOURCE_UNITS
        return total_vector, free

    def need(self, shape: Shape) -> Need:
        return tuple((self.index[name], units(amount)) for name, amount in shape if units(amount) > 0)

    def weight(self, need: Need) -> float:
        """How much of the largest node types one bundle takes, summed over its resources: the unit of 'demand
        served' in the cost scorer (implicit resources left out: they limit a count per node, not a size)."""
        return sum(
            amount / self.type_max_units[index]
            for index, amount in need
            if self.type_max_units[index] and index not in self.implicit
        )

    def _learn_runtime_resources(
        self, config: PlannerConfig, instances: Sequence[InstanceRecord], ray: RayState
    ) -> None:
        """As Ray does: a running worker's real CPU/GPU/memory replace its type's declared ones (memory is
        usually not declared at all)."""
        types = {worker.name for worker in config.worker_types}
        records = {record.instance_id: record for record in instances}
        learned: set[str] = set()
        for node in ray.nodes:
            record = records.get(node.instance_id)
            if node.is_head or record is None or record.node_type not in types or record.node_type in learned:
                continue
            if node.status == RayNodeStatus.DEAD or not node.total_resources:
                continue
            vector = self.type_units[record.node_type]
            for name in RUNTIME_LEARNED_RESOURCES:
                if name in node.total_resources:
                    vector[self.index[name]] = units(node.total_resources[name])
            learned.add(record.node_type)


# --------------------------------------------------------------------------------------------
# Demand
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpreadGang:
    """A STRICT_SPREAD placement group: one node per bundle, `count` identical groups."""

    bundles: tuple[Demand, ...]
    count: int


@dataclass
class Merged:
    """Demand of one step, merged and sorted, and what of it no node type can launch for."""

    demands: list[Demand]
    infeasible: list[Infeasible] = field(default_factory=list)
    infeasible_names: frozenset[str] = frozenset()  # resources of the infeasible bundles (they sway Ray's scorer)
    existing_only: frozenset[tuple[Shape, Selectors]] = frozenset()  # fits an existing node only, never a new one


class DemandReader:
    """Merges demand and sorts feasible from infeasible, against the node types and the nodes Ray lists."""

    def __init__(
        self,
        config: PlannerConfig,
        resources: Resources,
        existing: Sequence[Slot],
    ) -> None:
        self.resources = resources
        self.types = [
            (worker.name, resources.type_units[worker.name], dict(worker.labels))
            for worker in config.worker_types
            if worker.max_workers > 0
        ]
        self.existing = [(slot.total, slot.labels) for slot in existing]
        if not any(slot.kind is Kind.HEAD for slot in existing):
            self.existing.append((resources.head_units, dict(config.head_labels)))

    def merge(self, items: Iterable[DemandItem]) -> Merged:
        """Merged by (shape, selectors) and sorted in Ray's packing order; infeasible shapes are reported and left
        out."""
        counts: dict[tuple[Shape, Selectors], int] = defaultdict(int)
        for shape, count, selectors in items:
            if count > 0 and self.resources.need(shape):
                counts[(shape, selectors)] += count
        merged = Merged([])
        names: set[str] = set()
        existing_only: set[tuple[Shape, Selectors]] = set()
        for (shape, selectors), count in counts.items():
            need = self.resources.need(shape)
            if self._launchable(need, selectors):
                merged.demands.append(Demand(shape, need, count, selectors))
            elif self._on_existing(need, selectors):
                merged.demands.append(Demand(shape, need, count, selectors))
                existing_only.add((shape, selectors))
            else:
                merged.infeasible.append(Infeasible(shape, count, self.infeasible_reason(shape, selectors)))
                names.update(name for name, _ in shape)
        merged.demands.sort(key=demand_order, reverse=True)
        merged.infeasible_names = frozenset(names)
        merged.existing_only = frozenset(existing_only)
        return merged

    def launchable_types(self, need: Need, selectors: Selectors) -> list[str]:
        """The node types a new node of which can hold one bundle."""
        return [name for name, vector, labels in self.types if fit(vector, need) and admits(labels, selectors)]

    def _launchable(self, need: Need, selectors: Selectors) -> bool:
        return any(fit(vector, need) and admits(labels, selectors) for _, vector, labels in self.types)

    def _on_existing(self, need: Need, selectors: Selectors) -> bool:
        return any(fit(total, need) and admits(labels, selectors) for total, labels in self.existing)

    def infeasible_reason(self, shape: Shape, selectors: Selectors) -> str:
        need = self.resources.need(shape)
        holders = [vector for _, vector, _ in self.types] + [total for total, _ in self.existing]
        if selectors and any(fit(vector, need) for vector in holders):
            return f"no node type nor node has labels that match {format_selectors(selectors)}"
        short = []
        for name, amount in shape:
            index = self.resources.index[name]
            most = max(self.resources.type_max_units[index], 0) / RESOURCE_UNITS
            if units(amount) > self.resources.type_max_units[index]:
                if index in self.resources.node_bound:
                    short.append(f"{name}: {amount:g} (no node of the cluster has it)")
                else:
                    short.append(f"{name}: {amount:g} (largest node type has {most:g})")
        detail = "; ".join(short) if short else "no single node type has all of it"
        return f"no node type can hold it: {detail}"


@dataclass
class DemandView:
    """What Ray waits for this tick, step by step, as the planner places it."""

    constraints: Merged  # request_resources
    spread: list[SpreadGang]  # STRICT_SPREAD placement groups (their infeasible bundles are in `spread_infeasible`)
    spread_infeasible: list[Infeasible]
    gangs: Merged  # the other placement groups' bundles alone (for their exemption from upscaling_speed)
    pending: Merged  # tasks, actors and the other placement groups' bundles
    has_gangs: bool = False  # placement groups other than STRICT_SPREAD wait

    @property
    def infeasible(self) -> list[Infeasible]:
        return [*self.constraints.infeasible, *self.spread_infeasible, *self.pending.infeasible]

    @classmethod
    def read(cls, ray: RayState, reader: DemandReader) -> DemandView:
        constraints = reader.merge((d.shape, d.count, d.selectors) for d in ray.constraints)
        spread: list[SpreadGang] = []
        spread_infeasible: list[Infeasible] = []
        for gang in ray.gangs:
            if gang.strategy is not GangStrategy.STRICT_SPREAD:
                continue
            merged = reader.merge(
                (bundle, gang.count, selectors)
                for bundle, selectors in zip(gang.bundles, bundle_selectors(gang), strict=True)
            )
            spread_infeasible.extend(merged.infeasible)
            bundles = tuple(d.with_count(1) for d in merged.demands for _ in range(d.count // gang.count))
            if len(bundles) != sum(1 for bundle in gang.bundles if reader.resources.need(bundle)):
                continue  # one of its bundles fits no node type: reported as infeasible
            spread.append(SpreadGang(bundles, gang.count))
        gang_items = list(gang_bundles(ray.gangs))
        gangs = reader.merge(gang_items)
        pending = reader.merge([*((d.shape, d.count, d.selectors) for d in ray.pending), *gang_items])
        return cls(constraints, spread, spread_infeasible, gangs, pending, has_gangs=bool(gang_items))


def bundle_selectors(gang: GangDemand) -> tuple[Selectors, ...]:
    """Each bundle's selectors, in the order of its bundles (() for a bundle without)."""
    given = gang.bundle_selectors
    return tuple(given[index] if index < len(given) else () for index in range(len(gang.bundles)))


def gang_bundles(gangs: Sequence[GangDemand]) -> Iterable[DemandItem]:
    """Ray's `placement_groups_to_resource_demands`, minus STRICT_SPREAD (placed on distinct nodes elsewhere): a
    STRICT_PACK group is one bundle (on a node that every bundle's selectors admit), PACK and SPREAD are flattened."""
    for gang in gangs:
        if gang.strategy is GangStrategy.STRICT_PACK:
            summed: dict[str, float] = defaultdict(float)
            for bundle in gang.bundles:
                for name, amount in bundle:
                    summed[name] += amount
            yield shape_of(summed), gang.count, conjunction(bundle_selectors(gang))
        elif gang.strategy in (GangStrategy.PACK, GangStrategy.SPREAD):
            yield from (
                (bundle, gang.count, selectors)
                for bundle, selectors in zip(gang.bundles, bundle_selectors(gang), strict=True)
            )
