"""Our planner against Ray's own `ResourceDemandScheduler.get_nodes_to_launch`, on the same generated inputs.

Every generated cluster gives each node type a cost (which Ray ignores). On every input, the nodes we launch must
serve every bundle that Ray's launches serve (checked by packing both results with Ray's own bin packer), and
cost no more than 10% above Ray's; summed over all inputs, ours must cost no more than Ray's.
Upscaling is left uncapped here (speed 1,000) so that both launch what they decide; the cap has its own tests.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autoscaler.model import (
    GangDemand,
    GangStrategy,
    InstanceRecord,
    InstanceStatus,
    RayNode,
    RayNodeStatus,
    RayState,
    ScalingPlan,
    Shape,
    ShapeDemand,
    shape_of,
)
from autoscaler.planner import PlannerConfig, WorkerType, plan

ray_scheduler = pytest.importorskip("ray.autoscaler._private.resource_demand_scheduler")
from ray.autoscaler._private.node_provider_availability_tracker import (  # noqa: E402
    NodeAvailabilitySummary,
)
from ray.autoscaler.tags import TAG_RAY_NODE_KIND, TAG_RAY_USER_NODE_TYPE  # noqa: E402
from ray.core.generated import common_pb2, gcs_pb2  # noqa: E402

# Generated protobuf classes are made at import time, so mypy cannot see them: reach them as plain attributes.
PlacementStrategy: Any = getattr(common_pb2, "PlacementStrategy")  # noqa: B009
PlacementGroupTableData: Any = getattr(gcs_pb2, "PlacementGroupTableData")  # noqa: B009

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HEAD_TYPE = "ray.head"
INPUTS = 500
UNCAPPED_SPEED = 1000.0
_RAY_STRATEGY = {
    GangStrategy.PACK: PlacementStrategy.PACK,
    GangStrategy.SPREAD: PlacementStrategy.SPREAD,
    GangStrategy.STRICT_PACK: PlacementStrategy.STRICT_PACK,
    GangStrategy.STRICT_SPREAD: PlacementStrategy.STRICT_SPREAD,
}


@dataclass
class ExistingNode:
    instance_id: str
    node_type: str
    total: dict[str, float]
    available: dict[str, float] | None  # None: still launching


@dataclass
class Scenario:
    worker_types: dict[str, WorkerType]
    head_resources: dict[str, float]
    max_workers: int
    upscaling_speed: float
    nodes: list[ExistingNode]
    head_available: dict[str, float]
    pending: list[tuple[Shape, int]]
    constraints: list[tuple[Shape, int]] = field(default_factory=list)
    gangs: list[GangDemand] = field(default_factory=list)

    def costs(self) -> dict[str, float]:
        return {name: worker.cost for name, worker in self.worker_types.items()}


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def random_scenario(rng: random.Random) -> Scenario:  # noqa: C901 -- a generator of scenarios: one branch per random feature
    worker_types: dict[str, WorkerType] = {}
    for index in range(rng.randint(2, 6)):
        resources: dict[str, float] = {"CPU": float(rng.choice([1, 2, 4, 8, 16, 32, 64]))}
        if rng.random() < 0.35:
            resources["GPU"] = float(rng.choice([1, 2, 4, 8]))
        if rng.random() < 0.3:
            resources["memory"] = float(rng.choice([4, 8, 16, 64, 256])) * 2**30
        if rng.random() < 0.15:
            resources["accel"] = float(rng.choice([1, 2]))
        # Prices roughly by size, with noise so that equal shapes may differ in price (spot vs regular).
        cost = resources["CPU"] * 0.05 * rng.uniform(0.3, 1.5) + resources.get("GPU", 0.0) * rng.uniform(0.5, 3.0)
        name = f"type{index}"
        max_workers = rng.randint(1, 25)
        worker_types[name] = WorkerType(
            name=name,
            resources=shape_of(resources),
            min_workers=rng.choice([0, 0, 0, 1, 2]) if rng.random() < 0.3 else 0,
            max_workers=max_workers,
            idle_timeout_s=300.0,
            launch_timeout_s=600.0,
            cost=round(cost, 4),
            cost_basis="test",
        )
    for worker in list(worker_types.values()):
        if worker.min_workers > worker.max_workers:
            worker_types[worker.name] = WorkerType(**{**worker.__dict__, "min_workers": worker.max_workers})
    head_resources = {"CPU": float(rng.choice([0, 2, 4]))}
    nodes = []
    for index in range(rng.randint(0, 8)):
        node_type = rng.choice(list(worker_types))
        total = dict(worker_types[node_type].resources)
        launching = rng.random() < 0.25
        available = None if launching else {name: float(rng.randint(0, int(amount))) for name, amount in total.items()}
        if available is not None and "memory" in total:
            available["memory"] = rng.choice([0.0, total["memory"] / 2, total["memory"]])
        nodes.append(ExistingNode(f"i{index:03d}", node_type, total, available))
    # Both planners pack onto running nodes before launching ones when given them in this order.
    nodes.sort(key=lambda node: node.available is None)
    # A valid state: the config allows every min_workers (config.py checks the sum) on top of the nodes present.
    min_total = sum(worker.min_workers for worker in worker_types.values())
    shapes = [
        {"CPU": 1.0},
        {"CPU": 2.0},
        {"CPU": 4.0},
        {"CPU": 8.0},
        {"CPU": 1.0, "GPU": 1.0},
        {"CPU": 4.0, "GPU": 2.0},
        {"GPU": 1.0},
        {"CPU": 2.0, "memory": 8.0 * 2**30},
        {"CPU": 1.0, "accel": 1.0},
        {"CPU": 0.5},
        {"CPU": 16.0},
        {"CPU": 128.0},  # often infeasible
    ]
    pending = [(shape_of(rng.choice(shapes)), rng.randint(1, 40)) for _ in range(rng.randint(0, 6))]
    constraints = []
    if rng.random() < 0.2:
        constraints = [(shape_of(rng.choice(shapes[:5])), rng.randint(1, 10)) for _ in range(rng.randint(1, 2))]
    gangs = []
    if rng.random() < 0.3:
        for _ in range(rng.randint(1, 2)):
            strategy = rng.choice(list(GangStrategy))
            bundles = tuple(shape_of(rng.choice(shapes[:7])) for _ in range(rng.randint(1, 4)))
            gangs.append(GangDemand(strategy, bundles))
    return Scenario(
        worker_types=worker_types,
        head_resources=head_resources,
        max_workers=len(nodes) + min_total + rng.randint(0, 60),
        upscaling_speed=UNCAPPED_SPEED,
        nodes=nodes,
        head_available={name: float(rng.randint(0, int(amount))) for name, amount in head_resources.items()},
        pending=pending,
        constraints=constraints,
        gangs=gangs,
    )


# ----------------------------------------------------------------------------------------------
# Ours
# ----------------------------------------------------------------------------------------------


def run_ours(scenario: Scenario) -> ScalingPlan:
    return plan(**our_inputs(scenario))


def our_inputs(scenario: Scenario) -> dict[str, Any]:
    """The keyword arguments of `plan` for this scenario."""
    config = PlannerConfig(
        worker_types=tuple(scenario.worker_types.values()),
        head_node_type=HEAD_TYPE,
        head_resources=shape_of(scenario.head_resources),
        max_workers=scenario.max_workers,
        upscaling_speed=scenario.upscaling_speed,
        config_hash="current",
    )
    created = NOW - timedelta(seconds=30)
    head = InstanceRecord("c", "head", HEAD_TYPE, InstanceStatus.RAY_RUNNING, "r", created, created, is_head=True)
    records = [head]
    ray_nodes = [
        RayNode(
            "ray-head",
            "head",
            HEAD_TYPE,
            RayNodeStatus.RUNNING,
            0.0,
            scenario.head_resources,
            scenario.head_available,
            is_head=True,
        )
    ]
    for node in scenario.nodes:
        status = InstanceStatus.ALLOCATED if node.available is None else InstanceStatus.RAY_RUNNING
        records.append(
            InstanceRecord("c", node.instance_id, node.node_type, status, "r", created, created, config_hash="current")
        )
        if node.available is not None:
            ray_nodes.append(
                RayNode(
                    f"ray-{node.instance_id}",
                    node.instance_id,
                    node.node_type,
                    RayNodeStatus.RUNNING,
                    0.0,
                    node.total,
                    node.available,
                )
            )
    ray = RayState(
        nodes=tuple(ray_nodes),
        pending=tuple(ShapeDemand(shape, count) for shape, count in scenario.pending),
        gangs=tuple(scenario.gangs),
        constraints=tuple(ShapeDemand(shape, count) for shape, count in scenario.constraints),
    )
    return {"config": config, "instances": records, "ray": ray, "unavailable": (), "now": NOW}


# ----------------------------------------------------------------------------------------------
# Ray's
# ----------------------------------------------------------------------------------------------


class RayProviderView:
    """The two NodeProvider methods the scheduler calls: node_tags and internal_ip."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, str]] = {}

    def add(self, node_id: str, node_type: str, kind: str) -> None:
        self.tags[node_id] = {TAG_RAY_USER_NODE_TYPE: node_type, TAG_RAY_NODE_KIND: kind}

    def node_tags(self, node_id: str) -> dict[str, str]:
        return self.tags[node_id]

    def internal_ip(self, node_id: str) -> str:
        return f"ip-{node_id}"


def ray_node_types(scenario: Scenario) -> dict[str, dict[str, object]]:
    node_types: dict[str, dict[str, object]] = {
        HEAD_TYPE: {"resources": dict(scenario.head_resources), "max_workers": 0, "node_config": {}},
    }
    for name, worker in scenario.worker_types.items():
        node_types[name] = {
            "resources": dict(worker.resources),
            "min_workers": worker.min_workers,
            "max_workers": worker.max_workers,
            "node_config": {},
        }
    return node_types


def ray_placement_groups(gangs: list[GangDemand]) -> list[PlacementGroupTableData]:
    groups = []
    for gang in gangs:
        for _ in range(gang.count):
            group = PlacementGroupTableData(strategy=_RAY_STRATEGY[gang.strategy])
            for shape in gang.bundles:
                bundle = group.bundles.add()
                for name, amount in shape:
                    bundle.unit_resources[name] = amount
            groups.append(group)
    return groups


def run_ray(scenario: Scenario) -> dict[str, int]:
    scheduler, arguments = ray_inputs(scenario)
    to_launch, _ = scheduler.get_nodes_to_launch(**arguments)
    return dict(to_launch)


def ray_inputs(scenario: Scenario) -> tuple[Any, dict[str, Any]]:
    """Ray's scheduler for this scenario, and the keyword arguments of its `get_nodes_to_launch`."""
    provider = RayProviderView()
    provider.add("head", HEAD_TYPE, "head")
    unused = {"ip-head": dict(scenario.head_available)}
    totals = {"ip-head": dict(scenario.head_resources)}
    for node in scenario.nodes:
        provider.add(node.instance_id, node.node_type, "worker")
        if node.available is not None:
            unused[f"ip-{node.instance_id}"] = dict(node.available)
            totals[f"ip-{node.instance_id}"] = dict(node.total)
    scheduler = ray_scheduler.ResourceDemandScheduler(
        provider, ray_node_types(scenario), scenario.max_workers, HEAD_TYPE, scenario.upscaling_speed
    )
    return scheduler, {
        "nodes": ["head", *(node.instance_id for node in scenario.nodes)],
        "launching_nodes": {},
        "resource_demands": [dict(shape) for shape, count in scenario.pending for _ in range(count)],
        "unused_resources_by_ip": unused,
        "pending_placement_groups": ray_placement_groups(scenario.gangs),
        "max_resources_by_ip": totals,
        "ensure_min_cluster_size": [dict(shape) for shape, count in scenario.constraints for _ in range(count)],
        "node_availability_summary": NodeAvailabilitySummary(node_availabilities={}),
    }


# ----------------------------------------------------------------------------------------------
# Judging: what a set of launches serves, by Ray's own bin packer
# ----------------------------------------------------------------------------------------------


def unserved(scenario: Scenario, launches: dict[str, int]) -> Counter[Shape]:
    """Bundles left over after packing all demand onto the free capacity plus the launched nodes (STRICT_SPREAD
    groups first, one node per bundle, all or nothing, as Ray does). First-fit depends on the order of the new
    nodes, so each result is judged in its own order and in name order, both ways, and keeps its best."""
    orders = [list(launches.items()), sorted(launches.items()), sorted(launches.items(), reverse=True)]
    results = [unserved_in_order(scenario, order) for order in orders]
    return min(results, key=lambda left: sum(left.values()))


def unserved_in_order(scenario: Scenario, launches: list[tuple[str, int]]) -> Counter[Shape]:
    capacity = [dict(scenario.head_available)]
    capacity += [dict(node.available if node.available is not None else node.total) for node in scenario.nodes]
    for name, count in launches:
        capacity += [dict(scenario.worker_types[name].resources) for _ in range(count)]
    left: Counter[Shape] = Counter()
    flat = []
    for gang in scenario.gangs:
        for _ in range(gang.count):
            if gang.strategy is GangStrategy.STRICT_SPREAD:
                residual, packed = ray_scheduler.get_bin_pack_residual(
                    capacity, [dict(bundle) for bundle in gang.bundles], strict_spread=True
                )
                if residual:
                    left.update(gang.bundles)
                else:
                    capacity = packed
            elif gang.strategy is GangStrategy.STRICT_PACK:
                summed: dict[str, float] = defaultdict(float)
                for bundle in gang.bundles:
                    for name, amount in bundle:
                        summed[name] += amount
                flat.append(dict(summed))
            else:
                flat += [dict(bundle) for bundle in gang.bundles]
    flat += [dict(shape) for shape, count in scenario.pending for _ in range(count)]
    residual, _ = ray_scheduler.get_bin_pack_residual(capacity, flat)
    left.update(shape_of(bundle) for bundle in residual)
    return left


def launch_cost(scenario: Scenario, launches: dict[str, int]) -> float:
    costs = scenario.costs()
    return sum(costs[name] * count for name, count in launches.items())


@dataclass
class Comparison:
    seed: int
    ours: dict[str, int]
    rays: dict[str, int]
    ours_cost: float
    rays_cost: float
    ours_left: Counter[Shape]
    rays_left: Counter[Shape]

    @property
    def serves_less(self) -> bool:
        return any(self.ours_left[shape] > self.rays_left[shape] for shape in self.ours_left)

    def describe(self) -> str:
        return (
            f"seed {self.seed}: ours {self.ours} cost {self.ours_cost:.3f} unserved {dict(self.ours_left)}; "
            f"ray {self.rays} cost {self.rays_cost:.3f} unserved {dict(self.rays_left)}"
        )


def compare(seed: int) -> Comparison:
    scenario = random_scenario(random.Random(seed))
    ours = {launch.node_type: launch.count for launch in run_ours(scenario).launches}
    rays = run_ray(scenario)
    return Comparison(
        seed,
        ours,
        rays,
        launch_cost(scenario, ours),
        launch_cost(scenario, rays),
        unserved(scenario, ours),
        unserved(scenario, rays),
    )


@pytest.fixture(scope="module")
def comparisons() -> list[Comparison]:
    # Ray logs a warning for every infeasible request; hundreds of them would bury a failure's own message.
    ray_logger = logging.getLogger(ray_scheduler.__name__)
    level = ray_logger.level
    ray_logger.setLevel(logging.ERROR)
    try:
        return [compare(seed) for seed in range(INPUTS)]
    finally:
        ray_logger.setLevel(level)


def test_our_launches_serve_every_bundle_that_rays_launches_serve(comparisons: list[Comparison]) -> None:
    worse = [c.describe() for c in comparisons if c.serves_less]
    assert not worse, "\n".join(worse)


def test_our_launches_cost_at_most_ten_percent_more_than_rays_on_any_input(comparisons: list[Comparison]) -> None:
    pricier = [c.describe() for c in comparisons if c.ours_cost > c.rays_cost * 1.10 + 1e-9]
    assert not pricier, "\n".join(pricier)


def test_our_launches_cost_no_more_than_rays_over_all_inputs(comparisons: list[Comparison]) -> None:
    ours = sum(c.ours_cost for c in comparisons)
    rays = sum(c.rays_cost for c in comparisons)
    differing = [c.describe() for c in comparisons if abs(c.ours_cost - c.rays_cost) > 1e-9]
    assert ours <= rays + 1e-6, f"ours {ours:.3f} > ray {rays:.3f}; differing inputs:\n" + "\n".join(differing)


def test_the_comparison_exercises_launches_on_most_inputs(comparisons: list[Comparison]) -> None:
    """Guards the generator: a sweep where nobody launches anything would prove nothing."""
    launching = sum(1 for c in comparisons if c.rays)
    assert launching >= INPUTS // 2
