"""Scoring: which node type to launch for demand that fits nowhere yet, and which of the scorers' plans wins.

Ray's `get_nodes_for` picks the best type for what remains, gives it one node's worth, and repeats. Three scorers
rank the types: Ray's utilization scorer, a cost scorer (ours: cheapest per unit of demand served) and a capacity
scorer (ours: most demand per node, for when max_workers leaves too few nodes). Every key starts with Ray v2's label
score (a node type that satisfies a demand's preferred selector beats one that satisfies a fallback), then Ray's
"not a GPU node for CPU-only demand" (AUTOSCALER_CONSERVE_GPU_NODES, per cluster here).
"""

from __future__ import annotations

import enum
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from autoscaler.planner.labels import admits, label_score
from autoscaler.planner.packing import Demand, DemandKey, fit, take

# When max_workers binds, the cost-scored plan may serve more bundles than Ray's scorer at a higher price: it is
# taken only up to this premium, beyond which Ray's cheaper, smaller plan stands.
MAX_PREMIUM_FOR_MORE_SERVED = 0.10


class Strategy(enum.Enum):
    RAY = "ray"  # Ray's utilization scorer
    COST = "cost"  # ours: cheapest per unit of demand served
    CAPACITY = "capacity"  # ours: most demand per node, for when max_workers leaves too few nodes


@dataclass(frozen=True, slots=True)
class TypeOption:
    name: str
    units: tuple[int, ...]
    cost: float
    is_gpu: bool
    scored: tuple[tuple[int, str, float], ...]  # (index, name, amount) of resources >= 1 unit: Ray's scorer uses these
    labels: Mapping[str, str]


@dataclass
class NewNodes:
    node_type: str
    nodes: int
    served: dict[DemandKey, int]  # bundles (per shape and selectors) these nodes were chosen for
    free: list[int] | None = None  # each node's free capacity after those bundles


@dataclass
class Choice:
    groups: list[NewNodes]
    residual: list[Demand]

    def residual_counts(self) -> dict[DemandKey, int]:
        return {demand.key: demand.count for demand in self.residual}


def pattern(
    option: TypeOption, demands: Sequence[Demand], remaining: list[int], eligible: Sequence[bool] | None
) -> tuple[list[int], list[int]]:
    """What one fresh node of this type takes, greedily in demand order: (bundles per demand, free after)."""
    free = list(option.units)
    taken = [0] * len(demands)
    for position, demand in enumerate(demands):
        if remaining[position] and (eligible is None or eligible[position]):
            fits = fit(free, demand.need)
            if fits:
                count = min(fits, remaining[position])
                take(free, demand.need, count)
                taken[position] = count
    return taken, free


def ray_score(
    option: TypeOption,
    free_after: list[int],
    resource_names: set[str],
    any_gpu_demand: bool,
    *,
    conserve_gpu_nodes: bool = True,
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
    gpu_ok = not (conserve_gpu_nodes and option.is_gpu and not any_gpu_demand)
    return gpu_ok, matching, min(weighted), sum(weighted) / len(weighted)


def _labels_first(option: TypeOption, demands: Sequence[Demand], taken: Sequence[int]) -> int:
    """Ray v2's label score of a node: that of the first bundle placed on it that carries selectors."""
    for position, count in enumerate(taken):
        if count and demands[position].selectors:
            return label_score(option.labels, demands[position].selectors)
    return 0


def _key(
    strategy: Strategy, option: TypeOption, labels: int, score: tuple[bool, int, float, float], weight: float
) -> tuple[Any, ...]:
    """How a scorer ranks one node of a type (the higher the better), after Ray v2's label score."""
    if strategy is Strategy.RAY:
        return (labels, score, option.name)
    if strategy is Strategy.COST:
        return (labels, score[0], -option.cost / weight, score[1:], option.name)
    return (labels, score[0], weight, -option.cost, score[1:], option.name)


def choose(
    demands: Sequence[Demand],
    *,
    options: Sequence[TypeOption],
    room: Mapping[str, int],
    global_room: int,
    weights: Sequence[float],
    strategy: Strategy,
    unplaceable_names: frozenset[str] = frozenset(),
    conserve_gpu_nodes: bool = True,
) -> Choice:
    """Ray's `get_nodes_for`: pick the best type for what remains, give it one node's worth, repeat. A node's worth
    is repeated as many times as the choice provably stays the same, so the loop runs per change, not per node.
    `unplaceable_names` are the resources of infeasible bundles, which Ray keeps in its list and so in its scores."""
    remaining = [demand.count for demand in demands]
    eligible: dict[str, list[bool]] = {}
    if any(demand.selectors for demand in demands):
        eligible = {option.name: [admits(option.labels, demand.selectors) for demand in demands] for option in options}
    added: dict[str, int] = defaultdict(int)
    total_added = 0
    groups: list[NewNodes] = []
    while any(remaining) and total_added < global_room:
        resource_names = {name for position, d in enumerate(demands) if remaining[position] for name, _ in d.shape}
        resource_names |= unplaceable_names
        any_gpu_demand = "GPU" in resource_names
        candidates = []
        patterns: list[list[int]] = []
        for option in options:
            if added[option.name] >= room.get(option.name, 0):
                continue
            taken, free_after = pattern(option, demands, remaining, eligible.get(option.name))
            patterns.append(taken)
            if not any(taken):
                continue
            score = ray_score(option, free_after, resource_names, any_gpu_demand, conserve_gpu_nodes=conserve_gpu_nodes)
            if score is None:
                continue
            labels = _labels_first(option, demands, taken) if eligible else 0
            key = _key(strategy, option, labels, score, sum(count * weights[p] for p, count in enumerate(taken)))
            candidates.append((key, option, taken, free_after))
        if not candidates:
            break
        _, best, taken, free_after = max(candidates, key=lambda candidate: candidate[0])
        # Every type's greedy pattern (hence every score) is unchanged while each shape keeps at least as many
        # bundles as any type takes of it, so the same choice repeats that many times.
        repeat = min(
            1 + (remaining[position] - max(taken_by[position] for taken_by in patterns)) // count
            for position, count in enumerate(taken)
            if count
        )
        repeat = max(1, min(repeat, room[best.name] - added[best.name], global_room - total_added))
        served: dict[DemandKey, int] = {}
        for position, count in enumerate(taken):
            if count:
                remaining[position] -= count * repeat
                served[demands[position].key] = count * repeat
        added[best.name] += repeat
        total_added += repeat
        groups.append(NewNodes(best.name, repeat, served, free_after))
    residual = [
        demand.with_count(remaining[position]) for position, demand in enumerate(demands) if remaining[position]
    ]
    return Choice(groups, residual)


# --------------------------------------------------------------------------------------------
# One plan against another
# --------------------------------------------------------------------------------------------


class Outcome(Protocol):
    """A scorer's plan as the comparison sees it."""

    @property
    def unserved(self) -> Counter[tuple[str, DemandKey]]: ...

    def planned_cost(self) -> float: ...


def is_acceptable(candidate: Outcome, rays: Outcome) -> bool:
    """Another scorer's plan may replace the Ray-scored one when it serves every bundle that one serves and is
    cheaper, or serves strictly more for at most MAX_PREMIUM_FOR_MORE_SERVED extra."""
    if not serves_at_least(candidate, rays):
        return False
    if candidate.unserved == rays.unserved:
        return candidate.planned_cost() < rays.planned_cost()
    return candidate.planned_cost() <= rays.planned_cost() * (1.0 + MAX_PREMIUM_FOR_MORE_SERVED)


def serves_at_least(one: Outcome, other: Outcome) -> bool:
    return all(one.unserved[key] <= other.unserved[key] for key in one.unserved)


def is_better(one: Outcome, other: Outcome) -> bool:
    """Serves strictly more, or the same for less."""
    if one.unserved == other.unserved:
        return one.planned_cost() < other.planned_cost()
    return serves_at_least(one, other)
