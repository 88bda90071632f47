"""The planner's rules, one table row each: what a cluster looks like, and what the plan must launch and terminate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from autoscaler.model import GangDemand, GangStrategy, InstanceStatus, RayNodeStatus, Unavailability, shape_of
from tests.unit.test_planner_support import (
    NOW,
    Cluster,
    Node,
    busy,
    config,
    idle,
    launches_of,
    launching,
    terminations_of,
    worker,
)

CPU8 = {"CPU": 8.0}
GPU_NODE = {"CPU": 8.0, "GPU": 1.0}


@dataclass(frozen=True)
class Case:
    name: str
    cluster: Cluster
    launches: dict[str, int] = field(default_factory=dict)
    terminations: dict[str, bool] = field(default_factory=dict)  # instance id -> drain
    in_reasons: tuple[str, ...] = ()  # each must appear in some launch/termination reason or note
    infeasible: tuple[dict[str, float], ...] = ()


def unavailable(node_type: str, *, minutes: float = 30.0) -> Unavailability:
    return Unavailability(node_type, NOW + timedelta(minutes=minutes), "SkuNotAvailable (spot capacity)")


LAUNCH_CASES = [
    Case(
        "a draining worker counts against max_workers (Ray may refuse its drain and keep it)",
        Cluster(
            config(worker("cpu", CPU8, max_workers=2)),
            nodes=[launching("leaving", "cpu", status=InstanceStatus.DRAINING), launching("up", "cpu")],
            pending=[({"CPU": 8}, 3)],
        ),
        launches={},
    ),
    Case(
        "min_workers are launched when absent",
        Cluster(config(worker("cpu", CPU8, min_workers=2))),
        launches={"cpu": 2},
        in_reasons=("min_workers 2 (0 present)",),
    ),
    Case(
        "launching nodes count towards min_workers",
        Cluster(config(worker("cpu", CPU8, min_workers=2)), nodes=[launching("i1", "cpu")]),
        launches={"cpu": 1},
    ),
    Case(
        "pending demand that fits free capacity launches nothing",
        Cluster(config(worker("cpu", CPU8)), nodes=[busy("i1", "cpu", CPU8, {"CPU": 4.0})], pending=[({"CPU": 1}, 4)]),
    ),
    Case(
        "pending demand fits onto launching nodes before new ones",
        Cluster(config(worker("cpu", CPU8)), nodes=[launching("i1", "cpu")], pending=[({"CPU": 1}, 8)]),
    ),
    Case(
        "pending demand beyond free capacity launches enough nodes",
        Cluster(config(worker("cpu", CPU8)), nodes=[busy("i1", "cpu", CPU8, {"CPU": 2.0})], pending=[({"CPU": 2}, 9)]),
        launches={"cpu": 2},
        in_reasons=("8 pending {CPU: 2}",),
    ),
    Case(
        "the head's free capacity counts",
        Cluster(
            config(worker("cpu", CPU8)), pending=[({"CPU": 1}, 4)], head_total={"CPU": 4}, head_available={"CPU": 4}
        ),
    ),
    Case(
        "gpu demand launches a gpu node with a readable reason",
        Cluster(config(worker("cpu", CPU8), worker("gpu", GPU_NODE, cost=3.0)), pending=[({"GPU": 1}, 3)]),
        launches={"gpu": 3},
        in_reasons=("3 pending {GPU: 1}",),
    ),
    Case(
        "cpu-only demand avoids a gpu node even when the gpu node is cheaper",
        Cluster(config(worker("cpu", CPU8, cost=2.0), worker("gpu", GPU_NODE, cost=1.0)), pending=[({"CPU": 1}, 8)]),
        launches={"cpu": 1},
    ),
    Case(
        "the cheaper of two types that fit wins",
        Cluster(
            config(worker("regular", CPU8, cost=1.0), worker("spot", CPU8, cost=0.3)),
            pending=[({"CPU": 1}, 16)],
        ),
        launches={"spot": 2},
    ),
    Case(
        "many small cheap nodes beat one big dear node",
        Cluster(
            config(worker("small", {"CPU": 4}, cost=1.0), worker("big", {"CPU": 16}, cost=8.0)),
            pending=[({"CPU": 1}, 16)],
        ),
        launches={"small": 4},
    ),
    Case(
        "per-type max_workers caps launches",
        Cluster(config(worker("cpu", CPU8, max_workers=2)), pending=[({"CPU": 8}, 5)]),
        launches={"cpu": 2},
        in_reasons=("3 pending bundles wait",),
    ),
    Case(
        "global max_workers caps launches",
        Cluster(config(worker("cpu", CPU8), max_workers=3), nodes=[launching("i1", "cpu")], pending=[({"CPU": 8}, 9)]),
        launches={"cpu": 2},
    ),
    Case(
        "upscaling_speed caps demand-driven launches at five when nothing runs",
        Cluster(config(worker("cpu", CPU8), upscaling_speed=1.0), pending=[({"CPU": 8}, 9)]),
        launches={"cpu": 5},
        in_reasons=("capped from 9 by upscaling_speed 1",),
    ),
    Case(
        "upscaling_speed allows speed x running minus those already launching",
        Cluster(
            config(worker("cpu", CPU8), upscaling_speed=1.0),
            nodes=[busy(f"i{n}", "cpu", CPU8, {"CPU": 0}) for n in range(8)] + [launching("l1", "cpu")],
            pending=[({"CPU": 8}, 20)],
        ),
        launches={"cpu": 7},
    ),
    Case(
        "min_workers are exempt from the upscaling cap",
        Cluster(config(worker("cpu", CPU8, min_workers=8), upscaling_speed=1.0)),
        launches={"cpu": 8},
    ),
    Case(
        "request_resources is packed against total, not free, capacity",
        Cluster(
            config(worker("cpu", CPU8)), nodes=[busy("i1", "cpu", CPU8, {"CPU": 0})], constraints=[({"CPU": 8}, 1)]
        ),
    ),
    Case(
        "request_resources beyond the cluster's total launches",
        Cluster(
            config(worker("cpu", CPU8)), nodes=[busy("i1", "cpu", CPU8, {"CPU": 0})], constraints=[({"CPU": 8}, 3)]
        ),
        launches={"cpu": 2},
        in_reasons=("request_resources",),
    ),
    Case(
        "nodes launched for request_resources also take pending demand",
        Cluster(config(worker("cpu", CPU8)), constraints=[({"CPU": 8}, 1)], pending=[({"CPU": 1}, 8)]),
        launches={"cpu": 1},
    ),
    Case(
        "a STRICT_PACK placement group needs one node for all its bundles",
        Cluster(
            config(worker("small", {"CPU": 4}, cost=1.0), worker("big", CPU8, cost=5.0)),
            gangs=[GangDemand(GangStrategy.STRICT_PACK, (shape_of({"CPU": 4}), shape_of({"CPU": 4})))],
        ),
        launches={"big": 1},
    ),
    Case(
        "a PACK placement group is flattened into bundles",
        Cluster(
            config(worker("small", {"CPU": 4}, cost=1.0), worker("big", CPU8, cost=5.0)),
            gangs=[GangDemand(GangStrategy.PACK, (shape_of({"CPU": 4}), shape_of({"CPU": 4})))],
        ),
        launches={"small": 2},
    ),
    Case(
        "a STRICT_SPREAD placement group gets one node per bundle",
        Cluster(
            config(worker("cpu", CPU8)),
            gangs=[GangDemand(GangStrategy.STRICT_SPREAD, tuple(shape_of({"CPU": 1}) for _ in range(3)))],
        ),
        launches={"cpu": 3},
        in_reasons=("STRICT_SPREAD",),
    ),
    Case(
        "a STRICT_SPREAD placement group uses distinct existing nodes first",
        Cluster(
            config(worker("cpu", CPU8)),
            nodes=[busy("i1", "cpu", CPU8, {"CPU": 4}), busy("i2", "cpu", CPU8, {"CPU": 4})],
            gangs=[GangDemand(GangStrategy.STRICT_SPREAD, tuple(shape_of({"CPU": 1}) for _ in range(3)))],
        ),
        launches={"cpu": 1},
    ),
    Case(
        "a STRICT_SPREAD placement group that cannot get enough nodes launches nothing",
        Cluster(
            config(worker("cpu", CPU8, max_workers=2)),
            gangs=[GangDemand(GangStrategy.STRICT_SPREAD, tuple(shape_of({"CPU": 1}) for _ in range(3)))],
        ),
        in_reasons=("cannot get distinct nodes",),
    ),
    Case(
        "a shape no node type can hold is reported infeasible and launches nothing",
        Cluster(config(worker("cpu", CPU8)), pending=[({"GPU": 1}, 4), ({"CPU": 64}, 1)]),
        infeasible=({"GPU": 1}, {"CPU": 64}),
        in_reasons=("GPU: 1 (largest node type has 0)",),
    ),
    Case(
        "an unavailable type is replaced by its fallback",
        Cluster(
            config(
                worker("spot", CPU8, cost=0.3, fallback="regular"),
                worker("regular", CPU8, cost=1.0),
                worker("other", CPU8, cost=0.9),
            ),
            pending=[({"CPU": 8}, 2)],
            unavailable=[unavailable("spot")],
        ),
        launches={"regular": 2},
        in_reasons=("as fallback for spot unavailable until", "SkuNotAvailable"),
    ),
    Case(
        "an unavailable type without fallback gives way to the next best type",
        Cluster(
            config(worker("spot", CPU8, cost=0.3), worker("regular", CPU8, cost=1.0), worker("other", CPU8, cost=0.9)),
            pending=[({"CPU": 8}, 2)],
            unavailable=[unavailable("spot")],
        ),
        launches={"other": 2},
    ),
    Case(
        "an expired unavailability no longer blocks the type",
        Cluster(
            config(worker("spot", CPU8, cost=0.3), worker("regular", CPU8, cost=1.0)),
            pending=[({"CPU": 8}, 2)],
            unavailable=[unavailable("spot", minutes=-1)],
        ),
        launches={"spot": 2},
    ),
    Case(
        "min_workers of an unavailable type go to its fallback",
        Cluster(
            config(worker("spot", CPU8, min_workers=1, fallback="regular"), worker("regular", CPU8)),
            unavailable=[unavailable("spot")],
        ),
        launches={"regular": 1},
    ),
    Case(
        "with Ray unreachable min_workers are still launched",
        Cluster(config(worker("cpu", CPU8, min_workers=1)), ray_reachable=False),
        launches={"cpu": 1},
        in_reasons=("head agent unreachable",),
    ),
]

SCALE_DOWN_CASES = [
    Case(
        "a node idle past its timeout is drained and terminated",
        Cluster(config(worker("cpu", CPU8)), nodes=[idle("i1", "cpu", CPU8, idle_s=400)]),
        terminations={"i1": True},
        in_reasons=("idle 400 s > 300 s",),
    ),
    Case(
        "a node idle within its timeout stays",
        Cluster(config(worker("cpu", CPU8)), nodes=[idle("i1", "cpu", CPU8, idle_s=200)]),
    ),
    Case(
        "a busy node is never terminated for idleness",
        Cluster(config(worker("cpu", CPU8)), nodes=[busy("i1", "cpu", CPU8, {"CPU": 8})]),
    ),
    Case(
        "the per-type idle timeout overrides the cluster's",
        Cluster(config(worker("cpu", CPU8, idle_timeout_s=60)), nodes=[idle("i1", "cpu", CPU8, idle_s=90)]),
        terminations={"i1": True},
    ),
    Case(
        "idle nodes are kept down to min_workers, the longest idle going first",
        Cluster(
            config(worker("cpu", CPU8, min_workers=1)),
            nodes=[idle("recent", "cpu", CPU8, idle_s=400), idle("oldest", "cpu", CPU8, idle_s=900)],
        ),
        terminations={"oldest": True},
    ),
    Case(
        "an idle node needed by pending demand stays",
        Cluster(config(worker("cpu", CPU8)), nodes=[idle("i1", "cpu", CPU8, idle_s=900)], pending=[({"CPU": 1}, 1)]),
    ),
    Case(
        "an idle node needed by request_resources stays",
        Cluster(
            config(worker("cpu", CPU8)),
            nodes=[idle("i1", "cpu", CPU8, idle_s=900), idle("i2", "cpu", CPU8, idle_s=900)],
            constraints=[({"CPU": 8}, 1)],
        ),
        terminations={"i2": True},
    ),
    Case(
        "with Ray unreachable nothing is terminated for idleness",
        Cluster(config(worker("cpu", CPU8)), nodes=[idle("i1", "cpu", CPU8, idle_s=900)], ray_reachable=False),
        in_reasons=("no scale-down for idleness",),
    ),
    Case(
        "a launch that never registers with Ray is terminated without drain as a failure",
        Cluster(config(worker("cpu", CPU8, launch_timeout_s=300)), nodes=[launching("slow", "cpu", age_s=301)]),
        terminations={"slow": False},
        in_reasons=("launch failure: not registered with Ray 301 s after launch",),
    ),
    Case(
        "the launch timeout counts from the launch, not from queueing (a Retry-After pause is not the cloud's)",
        Cluster(
            config(worker("cpu", CPU8, launch_timeout_s=300)),
            nodes=[launching("paused", "cpu", age_s=1500, launched_age_s=30)],
        ),
        terminations={},
    ),
    Case(
        "launch timeouts apply even with Ray unreachable",
        Cluster(config(worker("cpu", CPU8)), nodes=[launching("slow", "cpu", age_s=700)], ray_reachable=False),
        terminations={"slow": False},
    ),
    Case(
        "a launch within its timeout is kept",
        Cluster(config(worker("cpu", CPU8)), nodes=[launching("new", "cpu", age_s=500)]),
    ),
    Case(
        "an idle node of an outdated config is drained and replaced",
        Cluster(
            config(worker("cpu", CPU8, min_workers=1)),
            nodes=[idle("old", "cpu", CPU8, idle_s=5, config_hash="old-config")],
        ),
        launches={"cpu": 1},
        terminations={"old": True},
        in_reasons=("outdated config",),
    ),
    Case(
        "a busy node of an outdated config stays until idle",
        Cluster(config(worker("cpu", CPU8)), nodes=[Node("old", "cpu", total=CPU8, config_hash="old-config")]),
        in_reasons=("replaced once idle",),
    ),
    Case(
        "a launching node of an outdated config is terminated without drain",
        Cluster(config(worker("cpu", CPU8)), nodes=[launching("old", "cpu", config_hash="old-config")]),
        terminations={"old": False},
    ),
    Case(
        "a ray_running instance without a Ray node is terminated without drain",
        Cluster(config(worker("cpu", CPU8)), nodes=[Node("lost", "cpu", total=CPU8, in_ray=False)]),
        terminations={"lost": False},
    ),
    Case(
        "a node Ray is already draining is neither capacity nor terminated",
        Cluster(
            config(worker("cpu", CPU8)),
            nodes=[Node("going", "cpu", total=CPU8, ray_status=RayNodeStatus.DRAINING)],
            pending=[({"CPU": 8}, 1)],
        ),
        launches={"cpu": 1},
    ),
    Case(
        "above a lowered max_workers idle nodes go, busy ones stay",
        Cluster(
            config(worker("cpu", CPU8, max_workers=1)),
            nodes=[
                busy("busy1", "cpu", CPU8, {"CPU": 0}),
                busy("busy2", "cpu", CPU8, {"CPU": 0}),
                idle("idle1", "cpu", CPU8, idle_s=10),
            ],
        ),
        terminations={"idle1": True},
        in_reasons=("above max_workers 1 of cpu",),
    ),
    Case(
        "queued, final and terminating instances are ignored",
        Cluster(
            config(worker("cpu", CPU8, min_workers=1)),
            nodes=[
                launching("queued", "cpu", status=InstanceStatus.QUEUED, age_s=5000),
                Node("gone", "cpu", status=InstanceStatus.TERMINATED),
                Node("leaving", "cpu", status=InstanceStatus.TERMINATING),
            ],
        ),
    ),
]


@pytest.mark.parametrize("case", LAUNCH_CASES + SCALE_DOWN_CASES, ids=lambda case: case.name)
def test_planner_rule(case: Case) -> None:
    result = case.cluster.plan()
    assert launches_of(result) == case.launches, result.reasons()
    assert terminations_of(result) == case.terminations, result.reasons()
    assert {item.shape for item in result.infeasible} == {shape_of(shape) for shape in case.infeasible}
    text = "\n".join(result.reasons())
    for expected in case.in_reasons:
        assert expected in text, text


@pytest.mark.parametrize("case", LAUNCH_CASES + SCALE_DOWN_CASES, ids=lambda case: case.name)
def test_every_launch_and_termination_carries_a_reason(case: Case) -> None:
    result = case.cluster.plan()
    assert all(launch.reason for launch in result.launches)
    assert all(termination.reason for termination in result.terminations)
    assert all(item.reason for item in result.infeasible)
