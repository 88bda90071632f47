"""Properties of any plan, over random node types, nodes and demand (hypothesis)."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Mapping, Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.model import InstanceStatus, ScalingPlan, shape_of
from autoscaler.planner import PlannerConfig, WorkerType
from tests.unit.test_planner_support import Cluster, Node, config, launches_of, worker

COUNTED = {InstanceStatus.QUEUED, InstanceStatus.REQUESTED, InstanceStatus.ALLOCATED, InstanceStatus.RAY_RUNNING}


@st.composite
def worker_types(draw: st.DrawFn, *, loose_maxima: bool) -> list[WorkerType]:
    types = []
    for index in range(draw(st.integers(1, 4))):
        resources = {"CPU": float(draw(st.sampled_from([1, 2, 4, 8, 16])))}
        if draw(st.booleans()):
            resources["GPU"] = float(draw(st.sampled_from([1, 2])))
        min_workers = draw(st.integers(0, 2))
        max_workers = 500 if loose_maxima else draw(st.integers(min_workers, 6))
        cost = draw(st.floats(0.1, 10.0))
        types.append(worker(f"t{index}", resources, min_workers=min_workers, max_workers=max_workers, cost=cost))
    return types


@st.composite
def nodes(draw: st.DrawFn, types: Sequence[WorkerType]) -> list[Node]:
    drawn = []
    per_type: Counter[str] = Counter()
    for index in range(draw(st.integers(0, 8))):
        node_type = draw(st.sampled_from(types))
        if per_type[node_type.name] >= node_type.max_workers:
            continue
        per_type[node_type.name] += 1
        total = dict(node_type.resources)
        kind = draw(st.sampled_from(["busy", "idle", "launching", "old"]))
        instance_id = f"n{index}"
        if kind == "launching":
            drawn.append(
                Node(
                    instance_id, node_type.name, status=InstanceStatus.ALLOCATED, age_s=draw(st.sampled_from([10, 900]))
                )
            )
        elif kind == "idle":
            drawn.append(Node(instance_id, node_type.name, total=total, idle_s=draw(st.sampled_from([10.0, 1000.0]))))
        else:
            available = {name: float(draw(st.integers(0, int(amount)))) for name, amount in total.items()}
            drawn.append(
                Node(
                    instance_id,
                    node_type.name,
                    total=total,
                    available=available,
                    config_hash="old" if kind == "old" else "current-config",
                )
            )
    return drawn


SHAPES: list[dict[str, float]] = [
    {"CPU": 0.5},
    {"CPU": 1},
    {"CPU": 4},
    {"CPU": 1, "GPU": 1},
    {"GPU": 2},
    {"CPU": 16},
    {"CPU": 32},
]


@st.composite
def clusters(draw: st.DrawFn, *, loose_maxima: bool) -> Cluster:
    types = draw(worker_types(loose_maxima=loose_maxima))
    existing = draw(nodes(types))
    pending = [(draw(st.sampled_from(SHAPES)), draw(st.integers(1, 30))) for _ in range(draw(st.integers(0, 4)))]
    slack = 1000 if loose_maxima else draw(st.integers(0, 4))
    return Cluster(
        config(*types, max_workers=len(existing) + sum(t.min_workers for t in types) + slack),
        nodes=existing,
        pending=pending,
        ray_reachable=draw(st.booleans()) if not loose_maxima else True,
    )


def counts_after(cluster: Cluster, result: ScalingPlan) -> Counter[str]:
    terminated = {termination.instance_id for termination in result.terminations}
    after: Counter[str] = Counter(
        node.node_type for node in cluster.nodes if node.status in COUNTED and node.instance_id not in terminated
    )
    after.update(launches_of(result))
    return after


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(clusters(loose_maxima=False))
def test_a_plan_never_exceeds_a_max_nor_goes_below_a_min(cluster: Cluster) -> None:
    result = cluster.plan()
    after = counts_after(cluster, result)
    planner_config: PlannerConfig = cluster.config
    for node_type in planner_config.worker_types:
        assert after[node_type.name] <= node_type.max_workers, result.reasons()
        assert after[node_type.name] >= min(node_type.min_workers, node_type.max_workers), result.reasons()
    assert sum(after.values()) <= planner_config.max_workers, result.reasons()


@PROPERTY_SETTINGS
@given(clusters(loose_maxima=False))
def test_a_plan_never_terminates_a_node_that_ray_reports_busy(cluster: Cluster) -> None:
    result = cluster.plan()
    busy = {
        node.instance_id for node in cluster.nodes if node.status is InstanceStatus.RAY_RUNNING and node.idle_s is None
    }
    assert not busy & {termination.instance_id for termination in result.terminations}, result.reasons()


@PROPERTY_SETTINGS
@given(clusters(loose_maxima=True))
def test_after_the_launches_all_feasible_demand_fits(cluster: Cluster) -> None:
    result = cluster.plan()
    terminated = {termination.instance_id for termination in result.terminations}
    types = {node_type.name: dict(node_type.resources) for node_type in cluster.config.worker_types}
    capacity = [dict(cluster.head_available)]
    running = [n for n in cluster.nodes if n.status is InstanceStatus.RAY_RUNNING and n.instance_id not in terminated]
    capacity += [dict(n.total if n.available is None else n.available) for n in running]
    capacity += [
        dict(types[n.node_type])
        for n in cluster.nodes
        if n.status is InstanceStatus.ALLOCATED and n.instance_id not in terminated
    ]
    new_nodes = list(launches_of(result).items())
    infeasible = {item.shape for item in result.infeasible}
    wanted = [(shape_of(item[0]), item[1]) for item in cluster.pending]  # no label selectors here
    demand = [(shape, count) for shape, count in wanted if shape not in infeasible]
    # First-fit depends on the order of the nodes: the launches pass when some order of the new nodes fits all the
    # demand. Orders by type are tried first, then node-by-node shuffles (the planner interleaves types).
    new_capacity = [dict(types[name]) for name, count in new_nodes for _ in range(count)]
    by_type = (
        [dict(types[name]) for name, count in order for _ in range(count)]
        for order in itertools.permutations(new_nodes)
    )
    shuffled = (random.Random(seed).sample(new_capacity, len(new_capacity)) for seed in range(300))
    assert any(not unfitted(capacity + order, demand) for order in itertools.chain(by_type, shuffled)), result.reasons()


def unfitted(capacity: list[dict[str, float]], demand: Sequence[tuple[tuple[tuple[str, float], ...], int]]) -> int:
    """Bundles left after first-fit, largest shapes first (an independent packer, on plain dicts)."""
    free = [dict(node) for node in capacity]
    left = 0
    ordered = sorted(demand, key=lambda item: (len(item[0]), sum(a for _, a in item[0]), item[0]), reverse=True)
    for shape, count in ordered:
        for _ in range(count):
            target = next((node for node in free if fits(node, dict(shape))), None)
            if target is None:
                left += 1
                continue
            for name, amount in shape:
                target[name] -= amount
    return left


def fits(node: Mapping[str, float], bundle: Mapping[str, float]) -> bool:
    return all(node.get(name, 0.0) >= amount for name, amount in bundle.items())
