"""Times our `plan` and Ray's `ResourceDemandScheduler.get_nodes_to_launch` on the same large input.

The input: 20 node types (Azure-like sizes, regular and spot, CPU and GPU), 1,000 running workers with part of their
resources in use, and 10,000 pending bundles of 20 shapes. Both get all 10,000 bundles: Ray's autoscaler would cut
its demand vector at 1,000 before calling the scheduler, which this benchmark deliberately does not do.

A second timing runs ours alone on the same input with Ray 2.60's scheduling features in play: every node type and
running node has labels, a third of the pending shapes carry label selectors (with fallbacks and every operator), and
one more shape asks for an implicit per-node resource. Ray v1's scheduler has no labels, so there is no Ray figure.

Run from the repository root: `.venv/bin/python bench/planner.py [--ray-runs N]`. The last line is JSON:
{"ours_ms": ..., "ours_labels_ms": ..., "ray_ms": ..., "speedup": ray_ms / ours_ms}.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from autoscaler.model import RayState, Shape, ShapeDemand, shape_of
from autoscaler.planner import IMPLICIT_RESOURCE_PREFIX, WorkerType, labels_of, parse_selector, plan
from tests.unit.test_planner_vs_ray import ExistingNode, Scenario, our_inputs, ray_inputs

T = TypeVar("T")
NODES = 1_000
PENDING_BUNDLES = 10_000
OUR_RUNS = 5
GIB = float(2**30)


def node_types() -> dict[str, WorkerType]:
    sizes: list[tuple[str, dict[str, float], float]] = []
    for vcpus in (2, 4, 8, 16, 32, 48, 64, 96):
        sizes.append((f"D{vcpus}", {"CPU": vcpus, "memory": 4 * vcpus * GIB}, 0.048 * vcpus))
    for vcpus in (4, 16, 64):
        sizes.append((f"D{vcpus}.spot", {"CPU": vcpus, "memory": 4 * vcpus * GIB}, 0.048 * vcpus * 0.3))
    for vcpus in (8, 32):
        sizes.append((f"E{vcpus}", {"CPU": vcpus, "memory": 8 * vcpus * GIB}, 0.063 * vcpus))
    for vcpus in (8, 32):
        sizes.append((f"F{vcpus}", {"CPU": vcpus, "memory": 2 * vcpus * GIB}, 0.043 * vcpus))
    for name, vcpus, gpus, price in (
        ("NC4.T4", 4, 1, 0.53),
        ("NC24.A100", 24, 1, 3.67),
        ("NC48.A100", 48, 2, 7.35),
        ("NC96.A100", 96, 4, 14.69),
        ("ND96.A100", 96, 8, 27.2),
    ):
        sizes.append((name, {"CPU": vcpus, "GPU": gpus, "memory": 8 * vcpus * GIB}, price))
    assert len(sizes) == 20
    return {
        name: WorkerType(
            name=name,
            resources=shape_of(resources),
            min_workers=0,
            max_workers=2_000,
            idle_timeout_s=300.0,
            launch_timeout_s=600.0,
            cost=round(cost, 4),
            cost_basis="bench",
        )
        for name, resources, cost in sizes
    }


def pending_shapes(rng: random.Random) -> list[tuple[Shape, int]]:
    shapes: list[dict[str, float]] = [
        {"CPU": 0.5},
        {"CPU": 1},
        {"CPU": 2},
        {"CPU": 4},
        {"CPU": 8},
        {"CPU": 16},
        {"CPU": 1, "memory": 2 * GIB},
        {"CPU": 2, "memory": 8 * GIB},
        {"CPU": 4, "memory": 32 * GIB},
        {"CPU": 8, "memory": 64 * GIB},
        {"CPU": 32, "memory": 128 * GIB},
        {"CPU": 1, "GPU": 1},
        {"CPU": 8, "GPU": 1},
        {"CPU": 4, "GPU": 2},
        {"CPU": 12, "GPU": 1, "memory": 96 * GIB},
        {"GPU": 1},
        {"CPU": 2, "GPU": 4},
        {"CPU": 6},
        {"CPU": 3, "memory": 12 * GIB},
        {"CPU": 24},
    ]
    weights = [rng.uniform(0.2, 1.0) for _ in shapes]
    counts = [int(PENDING_BUNDLES * weight / sum(weights)) for weight in weights]
    counts[0] += PENDING_BUNDLES - sum(counts)
    return [(shape_of(shape), count) for shape, count in zip(shapes, counts, strict=True)]


def scenario(seed: int = 7) -> Scenario:
    rng = random.Random(seed)
    types = node_types()
    nodes = []
    for index in range(NODES):
        node_type = rng.choice(list(types))
        total = dict(types[node_type].resources)
        # Busy nodes: each resource is used by a random whole number of units (memory by a fraction).
        available = {
            name: (
                amount * rng.choice([0.0, 0.25, 0.5]) if name == "memory" else float(rng.randint(0, int(amount) // 2))
            )
            for name, amount in total.items()
        }
        nodes.append(ExistingNode(f"i{index:05d}", node_type, total, available))
    return Scenario(
        worker_types=types,
        head_resources={"CPU": 8.0, "memory": 32 * GIB},
        max_workers=10_000,
        upscaling_speed=1.0,
        nodes=nodes,
        head_available={"CPU": 0.0, "memory": 8 * GIB},
        pending=pending_shapes(rng),
    )


ZONES = ("a", "b", "c")
SELECTORS = [
    (parse_selector({"zone": "a"}),),
    (parse_selector({"zone": "!b"}),),
    (parse_selector({"zone": "in(b, c)", "market": "spot"}),),
    (parse_selector({"zone": "c"}), parse_selector({"zone": "!in(a, c)"})),
]


def with_labels(inputs: dict[str, Any]) -> dict[str, Any]:
    """The same input with labels on every type and node, selectors on a third of the shapes, and one shape asking
    for an implicit per-node resource (two per node)."""
    config = inputs["config"]
    labels = {
        worker.name: {"zone": ZONES[index % 3], "market": "spot" if "spot" in worker.name else "regular"}
        for index, worker in enumerate(config.worker_types)
    }
    config = replace(
        config, worker_types=tuple(replace(w, labels=labels_of(labels[w.name])) for w in config.worker_types)
    )
    types = {record.instance_id: record.node_type for record in inputs["instances"]}
    ray: RayState = inputs["ray"]
    nodes = tuple(
        replace(node, labels={**labels.get(types.get(node.instance_id, ""), {}), "ray.io/node-id": node.ray_node_id})
        for node in ray.nodes
    )
    pending = [
        replace(demand, selectors=SELECTORS[index % len(SELECTORS)]) if index % 3 == 0 else demand
        for index, demand in enumerate(ray.pending)
    ]
    pending.append(ShapeDemand(shape_of({"CPU": 1, IMPLICIT_RESOURCE_PREFIX + "replica": 0.5}), 200))
    return {**inputs, "config": config, "ray": replace(ray, nodes=nodes, pending=tuple(pending))}


def time_ms(call: Callable[[], T], runs: int) -> tuple[float, list[float], T]:
    """Median and every run's wall time in milliseconds, and the last result."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        timings.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(timings), timings, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-runs", type=int, default=3, help="runs of Ray's scheduler (20-40 s each)")
    arguments = parser.parse_args()
    if arguments.ray_runs < 1:
        parser.error("--ray-runs must be at least 1")
    logging.getLogger("ray.autoscaler._private.resource_demand_scheduler").setLevel(logging.ERROR)

    case = scenario()
    bundles = sum(count for _, count in case.pending)
    print(f"input: {len(case.worker_types)} node types, {len(case.nodes)} nodes, {bundles} pending bundles")

    ours_inputs = our_inputs(case)
    ours_ms, ours_all, ours_plan = time_ms(lambda: plan(**ours_inputs), OUR_RUNS)
    launches = {launch.node_type: launch.count for launch in ours_plan.launches}
    print(f"ours: median of {OUR_RUNS} = {ours_ms:.1f} ms ({', '.join(f'{t:.1f}' for t in ours_all)})")
    print(f"ours launches {sum(launches.values())} nodes: {launches}")
    labelled = with_labels(ours_inputs)
    labels_ms, labels_all, labels_plan = time_ms(lambda: plan(**labelled), OUR_RUNS)
    launches = {launch.node_type: launch.count for launch in labels_plan.launches}
    print(f"ours with labels: median of {OUR_RUNS} = {labels_ms:.1f} ms ({', '.join(f'{t:.1f}' for t in labels_all)})")
    print(f"ours with labels launches {sum(launches.values())} nodes: {launches}")

    scheduler, rays_arguments = ray_inputs(case)
    assert len(rays_arguments["resource_demands"]) == bundles, "Ray must get every bundle"
    ray_ms, ray_all, ray_result = time_ms(lambda: scheduler.get_nodes_to_launch(**rays_arguments), arguments.ray_runs)
    ray_launches = dict(ray_result[0])
    print(f"ray: median of {arguments.ray_runs} = {ray_ms:.1f} ms ({', '.join(f'{t:.1f}' for t in ray_all)})")
    print(f"ray launches {sum(ray_launches.values())} nodes: {ray_launches}")
    figures = {"ours_ms": round(ours_ms, 2), "ours_labels_ms": round(labels_ms, 2), "ray_ms": round(ray_ms, 1)}
    print(json.dumps({**figures, "speedup": round(ray_ms / ours_ms, 1)}))


if __name__ == "__main__":
    main()
