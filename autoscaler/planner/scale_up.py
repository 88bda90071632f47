"""Scale-up: min_workers, request_resources, STRICT_SPREAD placement groups, then tasks, actors and the other
placement groups, each placed on free capacity first and covered by new nodes; then Ray's upscaling_speed cap.

One `ScaleUp` is one pass with one scorer (scoring.Strategy); `plan` runs up to three and keeps the best. Demand that
no new node is launched for, though a node type could hold it, is reported as `Waiting` with its cause.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.model import Unavailability, WaitCause, Waiting, format_shape
from autoscaler.planner.demand import DemandReader, DemandView, Merged, Resources, SpreadGang
from autoscaler.planner.inputs import UPSCALING_INITIAL_NUM_NODES, PlannerConfig, WorkerType
from autoscaler.planner.labels import format_selectors
from autoscaler.planner.packing import RESOURCE_UNITS, Demand, DemandKey, Kind, Slot, first_fit, spread_on_existing
from autoscaler.planner.scoring import Choice, NewNodes, Strategy, TypeOption, choose


@dataclass
class Cluster:
    """The nodes as packing sees them (slots in placement order) and the worker counts, before this tick's steps."""

    slots: list[Slot]
    counts: dict[str, int]  # live workers per type that count towards max_workers
    running: dict[str, int]
    launching: dict[str, int]

    def copy(self) -> Cluster:
        return Cluster(
            [slot.split(slot.nodes) for slot in self.slots], dict(self.counts), dict(self.running), dict(self.launching)
        )


@dataclass
class Tick:
    """What every pass of one tick shares, computed once."""

    config: PlannerConfig
    resources: Resources
    reader: DemandReader
    demand: DemandView | None  # None: Ray's state is unknown
    unavailable: Mapping[str, Unavailability]  # by node type, still in force

    def __post_init__(self) -> None:
        self.types: dict[str, WorkerType] = {worker.name: worker for worker in self.config.worker_types}
        self.options = {flag: self._options(include_unavailable=flag) for flag in (False, True)}

    def _options(self, *, include_unavailable: bool) -> list[TypeOption]:
        resources = self.resources
        gpu_index = resources.index.get("GPU")
        implicit = set(resources.implicit)
        options = []
        for name, worker in self.types.items():
            if name in self.unavailable and not include_unavailable:
                continue
            vector = tuple(resources.type_units[name])
            declares = resources.type_declares[name]
            scored = tuple(
                (index, resources.names[index], vector[index] / RESOURCE_UNITS)
                for index in range(len(vector))
                if vector[index] >= RESOURCE_UNITS and (index not in implicit or resources.names[index] in declares)
            )
            is_gpu = gpu_index is not None and vector[gpu_index] > 0
            options.append(TypeOption(name, vector, worker.cost, is_gpu, scored, dict(worker.labels)))
        return options

    def unavailable_text(self, name: str) -> str:
        why = self.unavailable.get(name)
        return f"{name} unavailable until {why.until:%H:%M:%S}Z ({why.reason})" if why else f"{name} unavailable"


@dataclass
class Purpose:
    """Why nodes of one type are launched, collected for the reason text."""

    min_workers: int = 0
    constraint: int = 0
    spread: int = 0
    demand: int = 0
    served: dict[DemandKey, int] = field(default_factory=dict)
    instead_of: dict[str, int] = field(default_factory=dict)  # unavailable type -> nodes taken over

    @property
    def exempt_from_cap(self) -> int:
        return self.min_workers + self.constraint + self.spread


_SOURCE_OF = {"constraint": "request_resources", "spread": "placement_group", "demand": "pending"}


def _names_of(demands: Iterable[Demand]) -> frozenset[str]:
    return frozenset(name for demand in demands for name, _ in demand.shape)


class ScaleUp:
    """One pass of steps 2-7 with one scorer."""

    def __init__(self, tick: Tick, cluster: Cluster, strategy: Strategy) -> None:
        self.tick = tick
        self.config = tick.config
        self.types = tick.types
        self.unavailable = tick.unavailable
        self.strategy = strategy
        self.slots = cluster.slots
        self.counts = cluster.counts
        self.running = cluster.running
        self.launching = cluster.launching
        self.chose_node_types = False  # whether any step had to pick types (else every scorer agrees)
        self.unserved: Counter[tuple[str, DemandKey]] = Counter()
        self.unplaceable_names: frozenset[str] = frozenset()  # of the demand being covered (sways Ray's scorer)
        self.notes: list[str] = []
        self.waiting: list[Waiting] = []
        self.planned: dict[str, Purpose] = defaultdict(Purpose)
        self.pg_allowance: dict[str, int] = defaultdict(int)
        self.launches: dict[str, tuple[int, str]] = {}

    def run(self) -> None:
        self._min_workers()
        demand = self.tick.demand
        if demand is not None:
            self._constraints(demand.constraints)
            self._strict_spread(demand.spread)
            self._pending(demand)
        self.launches = self._cap_launches()

    def planned_cost(self) -> float:
        return sum(self.types[name].cost * self._planned_count(name) for name in self.planned)

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
        vector = self.tick.resources.type_units[node_type]
        labels = dict(self.types[node_type].labels)
        self.slots.append(
            Slot(list(vector) if free is None else list(free), vector, nodes, node_type, Kind.PLANNED, labels=labels)
        )

    # ---- 2. min_workers -------------------------------------------------------------------

    def _min_workers(self) -> None:
        for name, worker in self.types.items():
            wanted = min(worker.min_workers, worker.max_workers) - self.counts[name] - self._planned_count(name)
            if wanted <= 0:
                continue
            target = self._launchable(name)
            if target is None:
                self.notes.append(f"min_workers of {name} not met: {self.tick.unavailable_text(name)} and no fallback")
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

    def _launchable(self, name: str) -> str | None:
        """The type itself, or the first available type along its fallback chain with room."""
        seen = set()
        current: str | None = name
        while current is not None and current in self.types and current not in seen:
            if current not in self.unavailable and (current == name or self._room()[current] > 0):
                return current
            seen.add(current)
            current = self.types[current].fallback
        return None

    # ---- 3. request_resources ---------------------------------------------------------------

    def _constraints(self, constraints: Merged) -> None:
        if not constraints.demands:
            return
        # Packed against total capacity, as if the cluster were idle: a constraint is a floor on size, not on load.
        scratch = [slot.scratch(from_total=True) for slot in self.slots]
        residual = first_fit(scratch, constraints.demands)
        for slot in scratch:
            if slot.needed and slot.origin is not None:
                slot.origin.needed = True
        left = self._cover_or_wait(residual, constraints, "constraint")
        if left:
            self.notes.append(f"request_resources not fully met: {self._causes_text(left)}")

    # ---- 4. STRICT_SPREAD placement groups -----------------------------------------------------

    def _strict_spread(self, gangs: Sequence[SpreadGang]) -> None:
        for gang in gangs:
            for placed in range(gang.count):
                unplaced = self._place_spread(gang.bundles)
                if unplaced:
                    self.unserved.update(("spread", bundle.key) for bundle in gang.bundles)
                    per_key = Counter(bundle.key for bundle in gang.bundles)
                    distinct = {bundle.key: bundle for bundle in gang.bundles}
                    waiting = [
                        self._waiting(distinct[key].with_count(count * (gang.count - placed)), "spread", unplaced)
                        for key, count in per_key.items()
                    ]
                    self.waiting.extend(waiting)
                    self.notes.append(
                        f"STRICT_SPREAD placement group of {len(gang.bundles)} bundles cannot get distinct nodes: "
                        f"{self._causes_text(waiting)}"
                    )
                    break

    def _place_spread(self, bundles: Sequence[Demand]) -> int:
        """All bundles on distinct nodes (existing capacity first, then one new node each), or none at all.
        Returns 0 when placed, else how many new nodes it lacked."""
        trial = [slot.split(slot.nodes) for slot in self.slots]
        unplaced = spread_on_existing(trial, bundles)
        if unplaced:
            self.chose_node_types = True
        options = self.tick.options[False]
        room, global_room = self._room(), self._global_room()
        chosen: list[NewNodes] = []
        for bundle in unplaced:
            # One node per bundle: the cheapest type that holds it (Ray's scorer breaks ties).
            choice = choose(
                [bundle],
                options=options,
                room=room,
                global_room=global_room - len(chosen),
                weights=[1.0],
                strategy=self.strategy,
                conserve_gpu_nodes=self.config.conserve_gpu_nodes,
            )
            if choice.residual:
                return len(unplaced)
            group = choice.groups[0]
            room = {**room, group.node_type: room[group.node_type] - 1}
            chosen.append(group)
        self.slots = trial
        for group in chosen:
            self._record_new_nodes(group.node_type, 1, "spread", group.served, group.free)
        return 0

    # ---- 5. tasks, actors, other placement groups ------------------------------------------------

    def _pending(self, demand: DemandView) -> None:
        if demand.has_gangs:
            self._placement_group_allowance(demand.gangs)
        residual = first_fit(self.slots, demand.pending.demands)
        left = self._cover_or_wait(residual, demand.pending, "demand")
        if left:
            bundles = sum(waiting.count for waiting in left)
            self.notes.append(f"{bundles} pending bundles wait: {self._causes_text(left)}")

    def _placement_group_allowance(self, gangs: Merged) -> None:
        """Ray lets placement groups exceed the upscaling_speed cap: it sizes them alone, on a scratch copy."""
        scratch = [slot.scratch(from_total=False) for slot in self.slots]
        residual = first_fit(scratch, gangs.demands)
        coverable = [d for d in residual if d.key not in gangs.existing_only]
        self.unplaceable_names = gangs.infeasible_names | _names_of(d for d in residual if d.key in gangs.existing_only)
        choice = self._choose_best(coverable, include_unavailable=False)
        for group in choice.groups:
            self.pg_allowance[group.node_type] += group.nodes

    # ---- covering what fits nowhere yet --------------------------------------------------------------

    def _cover_or_wait(self, residual: list[Demand], merged: Merged, purpose_of: str) -> list[Waiting]:
        """New nodes for the residual that a node type can hold; what stays is unserved, and reported waiting."""
        coverable = [d for d in residual if d.key not in merged.existing_only]
        bound = [d for d in residual if d.key in merged.existing_only]
        self.unplaceable_names = merged.infeasible_names | _names_of(bound)
        left = self._cover(coverable, purpose_of) if coverable else []
        left += bound
        self.unserved.update({(purpose_of, d.key): d.count for d in left})
        waiting = [self._waiting(d, purpose_of, 1, existing_only=d.key in merged.existing_only) for d in left]
        self.waiting.extend(waiting)
        return waiting

    def _cover(self, demands: list[Demand], purpose_of: str) -> list[Demand]:
        """Launch nodes for demand that fits nowhere yet; returns what still does not fit. Types marked unavailable
        are planned as if available, then replaced along their fallback chain; whatever the fallback nodes do not
        hold goes to the best available type."""
        ideal = self._choose_best(demands, include_unavailable=bool(self.unavailable))
        blocked = [group for group in ideal.groups if group.node_type in self.unavailable]
        for group in ideal.groups:
            if group.node_type not in self.unavailable:
                self._record_new_nodes(group.node_type, group.nodes, purpose_of, group.served, group.free)
        if not blocked:
            return ideal.residual
        left = ideal.residual_counts()
        for group in blocked:
            for key, count in group.served.items():
                left[key] = left.get(key, 0) + count
        first_fallback_slot = len(self.slots)
        for group in blocked:
            target = self._launchable(group.node_type)
            if target is None or target == group.node_type:
                continue
            nodes = min(group.nodes, self._room()[target], self._global_room())
            if nodes > 0:
                instead = self.planned[target].instead_of
                instead[group.node_type] = instead.get(group.node_type, 0) + nodes
                self._record_new_nodes(target, nodes, purpose_of, {}, None)
        # The fallback type may be another size: see what its nodes really hold, then cover the rest.
        fallback_slots = self.slots[first_fallback_slot:]
        still = first_fit(fallback_slots, [d.with_count(left[d.key]) for d in demands if left.get(d.key)])
        self.slots[first_fallback_slot:] = fallback_slots
        rest = self._choose_best(still, include_unavailable=False)
        for group in rest.groups:
            self._record_new_nodes(group.node_type, group.nodes, purpose_of, group.served, group.free)
        return rest.residual

    def _choose_best(self, demands: list[Demand], *, include_unavailable: bool) -> Choice:
        self.chose_node_types = True
        return choose(
            demands,
            options=self.tick.options[include_unavailable],
            room=self._room(),
            global_room=self._global_room(),
            weights=[self.tick.resources.weight(demand.need) for demand in demands],
            strategy=self.strategy,
            # Ray lets infeasible bundles sway its scorer (a GPU request no type can hold makes GPU nodes look
            # right for CPU work); the Ray-scored plan keeps that, for parity, and the other scorers do not.
            unplaceable_names=self.unplaceable_names if self.strategy is Strategy.RAY else frozenset(),
            conserve_gpu_nodes=self.config.conserve_gpu_nodes,
        )

    def _record_new_nodes(
        self, node_type: str, nodes: int, purpose_of: str, served: Mapping[DemandKey, int], free: list[int] | None
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
        for key, count in served.items():
            purpose.served[key] = purpose.served.get(key, 0) + count
        self._add_planned(node_type, nodes, free)

    # ---- why demand waits ---------------------------------------------------------------------

    def _waiting(self, demand: Demand, purpose_of: str, nodes_needed: int, *, existing_only: bool = False) -> Waiting:
        source = _SOURCE_OF[purpose_of]
        with_selectors = f" with {format_selectors(demand.selectors)}" if demand.selectors else ""
        if existing_only:
            reason = f"only an existing node can hold {format_shape(demand.shape)}{with_selectors}, and it is full"
            return Waiting(demand.shape, demand.count, source, WaitCause.EXISTING_NODE, (), reason)
        holders = tuple(self.tick.reader.launchable_types(demand.need, demand.selectors))
        room = self._room()
        if self._global_room() < nodes_needed:
            cause = WaitCause.GLOBAL_MAX_WORKERS
            reason = f"global max_workers {self.config.max_workers} reached"
        elif sum(room[name] for name in holders if name not in self.unavailable) < nodes_needed and any(
            room[name] > 0 for name in holders if name in self.unavailable
        ):
            cause = WaitCause.UNAVAILABLE
            reason = ", ".join(self.tick.unavailable_text(name) for name in holders if name in self.unavailable)
        else:
            cause = WaitCause.MAX_WORKERS
            limits = ", ".join(f"{name} ({self.types[name].max_workers})" for name in holders)
            reason = f"max_workers of {limits} reached"
        return Waiting(demand.shape, demand.count, source, cause, holders, reason)

    @staticmethod
    def _causes_text(waiting: Sequence[Waiting]) -> str:
        return "; ".join(dict.fromkeys(item.reason for item in waiting))

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

    def _launch_reason(self, name: str, purpose: Purpose) -> str:
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
            text = ", ".join(
                f"{count} pending {format_shape(shape)}" + (f" with {format_selectors(selectors)}" if selectors else "")
                for (shape, selectors), count in ranked[:3]
            )
            if len(ranked) > 3:
                text += f" and {len(ranked) - 3} more shapes"
            parts.append(text)
        elif purpose.demand:
            parts.append(f"pending demand ({purpose.demand} nodes)")
        for other, nodes in purpose.instead_of.items():
            parts.append(f"{nodes} as fallback for {self.tick.unavailable_text(other)}")
        if self.strategy is Strategy.COST and (purpose.served or purpose.demand):
            # The cost scorer chose this type: say what it was priced at and where the price came from.
            worker = self.types[name]
            parts.append(f"cheapest fit at {worker.cost:g}/h ({worker.cost_basis})")
        return "; ".join(parts)
