"""Packing: resource vectors in integer units, slots (nodes with free capacity) and Ray's first-fit bin packing.

Resource amounts are integers in Ray's own granularity (1/10,000 of a unit) so that packing is exact, and demand is
always "shape x count": 10,000 pending bundles of 30 shapes cost 30 steps, not 10,000. Identical planned nodes are one
slot with a node count, split only when some of them fill up.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.model import Shape
from autoscaler.planner.labels import Selectors, admits

RESOURCE_UNITS = 10_000  # Ray keeps resources as fixed-point with 4 decimals; so do we, to pack exactly

Need = tuple[tuple[int, int], ...]  # (resource index, units), nonzero only
DemandKey = tuple[Shape, Selectors]  # what tells two demands apart: the shape and the label selectors


def units(amount: float) -> int:
    return round(amount * RESOURCE_UNITS)


def fit(free: list[int], need: Need) -> int:
    """How many bundles of `need` fit into `free`."""
    best = -1
    for index, amount in need:
        fits = free[index] // amount
        if fits == 0:
            return 0
        if best < 0 or fits < best:
            best = fits
    return best


def take(free: list[int], need: Need, times: int) -> None:
    for index, amount in need:
        free[index] -= amount * times


class Kind(enum.Enum):
    HEAD = "head"
    BUSY = "busy"  # running Ray with work, or of unknown usage (Ray unreachable)
    UNMANAGED = "unmanaged"  # a Ray node without an instance record (started by hand)
    IDLE = "idle"
    LAUNCHING = "launching"
    PLANNED = "planned"  # a launch decided in this tick


EXISTING = frozenset({Kind.HEAD, Kind.BUSY, Kind.UNMANAGED, Kind.IDLE})  # nodes Ray already lists


@dataclass(slots=True, eq=False)
class Slot:
    """`nodes` identical nodes with `free` capacity each (planned launches are grouped; real nodes have nodes=1)."""

    free: list[int]
    total: list[int]
    nodes: int
    node_type: str
    kind: Kind
    instance_id: str = ""
    idle_duration_s: float = 0.0
    needed: bool = False
    origin: Slot | None = None  # for scratch copies: the slot whose `needed` they report to
    labels: Mapping[str, str] = field(default_factory=dict)

    def split(self, nodes: int) -> Slot:
        return Slot(
            list(self.free),
            self.total,
            nodes,
            self.node_type,
            self.kind,
            self.instance_id,
            self.idle_duration_s,
            self.needed,
            self.origin,
            self.labels,
        )

    def scratch(self, *, from_total: bool) -> Slot:
        copy = self.split(self.nodes)
        copy.origin = self
        if from_total:
            copy.free = list(self.total)
        return copy


@dataclass(frozen=True, slots=True)
class Demand:
    """`count` bundles of one shape (with the label selectors they carry), as resource units."""

    shape: Shape
    need: Need
    count: int
    selectors: Selectors = ()

    @property
    def key(self) -> DemandKey:
        return (self.shape, self.selectors)

    def with_count(self, count: int) -> Demand:
        return Demand(self.shape, self.need, count, self.selectors)


def demand_order(demand: Demand) -> tuple[int, int, float, Shape, Selectors]:
    """Ray's bin-packing order: more label constraints first (v2), then more resource kinds, then heavier, then by
    name (stable). Without selectors this is Ray v1's order."""
    label_constraints = len(demand.selectors[0]) if demand.selectors else 0
    return (
        label_constraints,
        len(demand.shape),
        sum(amount for _, amount in demand.shape),
        demand.shape,
        demand.selectors,
    )


def first_fit(slots: list[Slot], demands: Sequence[Demand]) -> list[Demand]:
    """Ray's `get_bin_pack_residual`, on shapes with counts: each bundle goes to the first slot it fits (and whose
    labels its selectors admit), largest shapes first. Marks the slots that receive anything as needed; returns what
    did not fit (in order)."""
    residual = []
    for demand in demands:
        remaining = demand.count
        selectors = demand.selectors
        index = 0
        while remaining and index < len(slots):
            slot = slots[index]
            fits = fit(slot.free, demand.need)
            if fits and selectors and not admits(slot.labels, selectors):
                fits = 0
            if fits:
                slot.needed = True
                if slot.nodes == 1:
                    taken = min(fits, remaining)
                    take(slot.free, demand.need, taken)
                    remaining -= taken
                elif fits * slot.nodes <= remaining:
                    take(slot.free, demand.need, fits)
                    remaining -= fits * slot.nodes
                else:
                    index = _fill_some(slots, index, demand.need, fits, remaining)
                    remaining = 0
            index += 1
        if remaining:
            residual.append(demand.with_count(remaining))
    return residual


def _fill_some(slots: list[Slot], index: int, need: Need, fits: int, remaining: int) -> int:
    """Only some of the identical nodes of `slots[index]` fill up with the `remaining` bundles: split them off, the
    rest stay as they were. Returns the index of the last part."""
    slot = slots[index]
    full_nodes, last = divmod(remaining, fits)
    parts = []
    if full_nodes:
        parts.append(slot.split(full_nodes))
        take(parts[-1].free, need, fits)
    if last:
        parts.append(slot.split(1))
        take(parts[-1].free, need, last)
    slot.nodes -= full_nodes + (1 if last else 0)
    slot.needed = False
    if slot.nodes:
        parts.append(slot)
    slots[index : index + 1] = parts
    return index + len(parts) - 1


def spread_on_existing(trial: list[Slot], bundles: Sequence[Demand]) -> list[Demand]:
    """STRICT_SPREAD on the capacity there is: each bundle on a distinct node (splitting grouped slots in `trial`),
    first fit. Returns the bundles that found no node."""
    used: set[int] = set()
    unplaced = []
    for bundle in bundles:
        for index, slot in enumerate(trial):
            if id(slot) in used or not fit(slot.free, bundle.need):
                continue
            if bundle.selectors and not admits(slot.labels, bundle.selectors):
                continue
            target = slot
            if slot.nodes > 1:
                slot.nodes -= 1
                target = slot.split(1)
                trial.insert(index, target)
            take(target.free, bundle.need, 1)
            target.needed = True
            used.add(id(target))
            break
        else:
            unplaced.append(bundle)
    return unplaced
