"""Ray 2.60 scheduling features the planner used to lack, one table row each: implicit per-node resources, node-bound
resources (node:<ip>), node labels and label selectors (tasks, actors, placement group bundles, request_resources),
demand waiting on max_workers, and Ray's switch that keeps GPU nodes for GPU work."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from autoscaler.model import (
    GangDemand,
    GangStrategy,
    RayNode,
    RayNodeStatus,
    ScalingPlan,
    WaitCause,
    shape_of,
)
from autoscaler.planner import IMPLICIT_RESOURCE_PREFIX, parse_selector
from autoscaler.planner.labels import Selectors, admits, conjunction, format_selector, label_score
from tests.unit.test_planner_rules import unavailable
from tests.unit.test_planner_support import (
    Cluster,
    Node,
    busy,
    config,
    idle,
    launches_of,
    terminations_of,
    worker,
)

CPU8 = {"CPU": 8.0}
GPU_NODE = {"CPU": 8.0, "GPU": 1.0}
REPLICA = IMPLICIT_RESOURCE_PREFIX + "serve_app_deployment"  # Serve's max_replicas_per_node
NODE_IP = "node:10.0.0.5"


def sel(*selectors: dict[str, str]) -> Selectors:
    """Ray's dict syntax, in Ray's order (the first preferred, the others fallbacks)."""
    return tuple(parse_selector(selector) for selector in selectors)


ZONES = config(
    worker("zone-a", CPU8, cost=1.0, labels={"zone": "a", "tier": "spot"}),
    worker("zone-b", CPU8, cost=2.0, labels={"zone": "b"}),
    worker("plain", CPU8, cost=3.0),
)


@dataclass(frozen=True)
class Case:
    name: str
    cluster: Cluster
    launches: dict[str, int] = field(default_factory=dict)
    terminations: dict[str, bool] = field(default_factory=dict)
    infeasible: tuple[dict[str, float], ...] = ()
    waiting: tuple[tuple[str, WaitCause, int], ...] = ()  # (source, cause, count)
    in_reasons: tuple[str, ...] = ()


def check(case: Case) -> ScalingPlan:
    result = case.cluster.plan()
    assert launches_of(result) == case.launches, result.reasons()
    assert terminations_of(result) == case.terminations, result.reasons()
    assert {item.shape for item in result.infeasible} == {shape_of(shape) for shape in case.infeasible}, (
        result.reasons()
    )
    assert sorted((w.source, w.cause, w.count) for w in result.waiting) == sorted(case.waiting), result.waiting
    text = "\n".join([*result.reasons(), *(w.reason for w in result.waiting)])
    for expected in case.in_reasons:
        assert expected in text, text
    return result


IMPLICIT = [
    Case(
        "an implicit per-node resource is not infeasible: each new node brings one",
        Cluster(config(worker("cpu", CPU8)), pending=[({"CPU": 1, REPLICA: 0.5}, 8)]),
        launches={"cpu": 4},  # two replicas per node, whatever the CPUs left
    ),
    Case(
        "a whole implicit resource per bundle: one bundle per node",
        Cluster(config(worker("cpu", CPU8)), pending=[({"CPU": 1, REPLICA: 1}, 3)]),
        launches={"cpu": 3},
    ),
    Case(
        "a running node that does not report it has all of it free",
        Cluster(
            config(worker("cpu", CPU8)),
            nodes=[busy("i1", "cpu", CPU8, {"CPU": 4})],
            pending=[({"CPU": 1, REPLICA: 1}, 2)],
        ),
        launches={"cpu": 1},
    ),
    Case(
        "a running node that reports it used up takes none",
        Cluster(
            config(worker("cpu", CPU8)),
            nodes=[busy("i1", "cpu", {**CPU8, REPLICA: 1}, {"CPU": 4})],
            pending=[({"CPU": 1, REPLICA: 1}, 1)],
        ),
        launches={"cpu": 1},
    ),
    Case(
        "more than one of it per bundle is infeasible",
        Cluster(config(worker("cpu", CPU8)), pending=[({"CPU": 1, REPLICA: 2}, 1)]),
        infeasible=({"CPU": 1, REPLICA: 2},),
        in_reasons=(f"{REPLICA}: 2 (largest node type has 1)",),
    ),
    Case(
        "it does not count as a matching resource in Ray's scorer (a GPU node stays avoided)",
        Cluster(
            config(worker("cpu", CPU8, cost=2.0), worker("gpu", GPU_NODE, cost=1.0)),
            pending=[({"CPU": 1, REPLICA: 0.25}, 8)],
        ),
        launches={"cpu": 2},
    ),
]

NODE_BOUND = [
    Case(
        "demand pinned to a node's IP goes to that node and launches nothing",
        Cluster(
            config(worker("cpu", CPU8)),
            nodes=[busy("i1", "cpu", {**CPU8, NODE_IP: 1}, {"CPU": 4, NODE_IP: 1})],
            pending=[({"CPU": 1, NODE_IP: 0.01}, 4)],
        ),
    ),
    Case(
        "an idle node that pinned demand needs is kept",
        Cluster(
            config(worker("cpu", CPU8)),
            nodes=[idle("i1", "cpu", {**CPU8, NODE_IP: 1}, idle_s=900)],
            pending=[({"CPU": 1, NODE_IP: 0.01}, 1)],
        ),
    ),
    Case(
        "while that node is full, the demand waits for it: no launch, not infeasible",
        Cluster(
            config(worker("cpu", CPU8)),
            nodes=[busy("i1", "cpu", {**CPU8, NODE_IP: 1}, {"CPU": 0, NODE_IP: 1})],
            pending=[({"CPU": 1, NODE_IP: 0.01}, 3)],
        ),
        waiting=(("pending", WaitCause.EXISTING_NODE, 3),),
        in_reasons=("only an existing node can hold",),
    ),
    Case(
        "pinned to a node the cluster does not have: infeasible",
        Cluster(config(worker("cpu", CPU8)), pending=[({"CPU": 1, "node:10.0.0.9": 0.01}, 1)]),
        infeasible=({"CPU": 1, "node:10.0.0.9": 0.01},),
        in_reasons=("node:10.0.0.9: 0.01 (no node of the cluster has it)",),
    ),
    Case(
        "Ray's head marker goes to the head",
        Cluster(
            config(worker("cpu", CPU8)),
            pending=[({"CPU": 1, "node:__internal_head__": 0.001}, 2)],
            head_total={"CPU": 4, "node:__internal_head__": 1},
            head_available={"CPU": 4, "node:__internal_head__": 1},
        ),
    ),
    Case(
        "a resource only a node started by hand has: it waits for that node",
        Cluster(
            config(worker("cpu", CPU8)),
            pending=[({"fpga": 1}, 2)],
            other_ray_nodes=[RayNode("r", "", "manual", RayNodeStatus.RUNNING, 0.0, {"fpga": 1}, {"fpga": 1})],
        ),
        waiting=(("pending", WaitCause.EXISTING_NODE, 1),),
    ),
]

LABELS = [
    Case(
        "equals: only a node type with that label",
        Cluster(ZONES, pending=[(CPU8, 2, sel({"zone": "b"}))]),
        launches={"zone-b": 2},
        in_reasons=("2 pending {CPU: 8} with {zone: b}",),
    ),
    Case(
        "not equals: a type without the label qualifies too, the cheapest wins",
        Cluster(ZONES, pending=[(CPU8, 1, sel({"zone": "!a"}))]),
        launches={"zone-b": 1},
    ),
    Case(
        "in(): any of the values",
        Cluster(ZONES, pending=[(CPU8, 1, sel({"zone": "in(b, c)"}))]),
        launches={"zone-b": 1},
    ),
    Case(
        "!in(): none of the values (a type without the label passes)",
        Cluster(ZONES, pending=[(CPU8, 1, sel({"zone": "!in(a, b)"}))]),
        launches={"plain": 1},
    ),
    Case(
        "several keys must all hold",
        Cluster(ZONES, pending=[(CPU8, 1, sel({"zone": "a", "tier": "!spot"}))]),
        infeasible=(CPU8,),
        in_reasons=("no node type nor node has labels that match {tier: !spot, zone: a}",),
    ),
    Case(
        "a fallback selector is used when the first matches no type",
        Cluster(ZONES, pending=[(CPU8, 1, sel({"zone": "c"}, {"zone": "b"}))]),
        launches={"zone-b": 1},
    ),
    Case(
        "the preferred selector wins over a cheaper fallback (Ray v2's label score)",
        Cluster(ZONES, pending=[(CPU8, 1, sel({"zone": "b"}, {"zone": "a"}))]),
        launches={"zone-b": 1},
    ),
    Case(
        "a running node whose Ray labels match takes it; another zone launches",
        Cluster(
            ZONES,
            nodes=[Node("i1", "zone-a", total=CPU8, available=CPU8, labels={"zone": "a", "ray.io/node-id": "x"})],
            pending=[(CPU8, 1, sel({"zone": "a"})), (CPU8, 1, sel({"zone": "b"}))],
        ),
        launches={"zone-b": 1},
    ),
    Case(
        "Ray's own labels (ray.io/node-id) bind demand to that node: it waits, it never launches",
        Cluster(
            ZONES,
            nodes=[Node("i1", "zone-a", total=CPU8, available={"CPU": 0}, labels={"ray.io/node-id": "abc"})],
            pending=[({"CPU": 1}, 1, sel({"ray.io/node-id": "abc"}))],
        ),
        waiting=(("pending", WaitCause.EXISTING_NODE, 1),),
    ),
    Case(
        "a node whose agent reports no labels is taken to have its type's",
        Cluster(
            ZONES,
            nodes=[Node("i1", "zone-b", total=CPU8, available=CPU8)],
            pending=[(CPU8, 1, sel({"zone": "b"}))],
        ),
    ),
    Case(
        "bundle selectors of a PACK placement group: each bundle on its own kind of node",
        Cluster(
            ZONES,
            gangs=[
                GangDemand(
                    GangStrategy.PACK,
                    (shape_of(CPU8), shape_of(CPU8)),
                    bundle_selectors=(sel({"zone": "a"}), sel({"zone": "b"})),
                )
            ],
        ),
        launches={"zone-a": 1, "zone-b": 1},
    ),
    Case(
        "a STRICT_PACK group goes to one node that every bundle's selector admits",
        Cluster(
            ZONES,
            gangs=[
                GangDemand(
                    GangStrategy.STRICT_PACK,
                    (shape_of({"CPU": 4}), shape_of({"CPU": 4})),
                    bundle_selectors=(sel({"zone": "!a"}), sel({"zone": "in(a, b)"})),
                )
            ],
        ),
        launches={"zone-b": 1},
    ),
    Case(
        "a STRICT_PACK group whose selectors no single node satisfies is infeasible",
        Cluster(
            ZONES,
            gangs=[
                GangDemand(
                    GangStrategy.STRICT_PACK,
                    (shape_of({"CPU": 4}), shape_of({"CPU": 4})),
                    bundle_selectors=(sel({"zone": "a"}), sel({"zone": "b"})),
                )
            ],
        ),
        infeasible=(CPU8,),
    ),
    Case(
        "a STRICT_SPREAD group with selectors: distinct nodes of the matching type",
        Cluster(
            ZONES,
            gangs=[
                GangDemand(
                    GangStrategy.STRICT_SPREAD,
                    (shape_of({"CPU": 1}), shape_of({"CPU": 1})),
                    bundle_selectors=(sel({"zone": "b"}), sel({"zone": "b"})),
                )
            ],
        ),
        launches={"zone-b": 2},
    ),
    Case(
        "request_resources with a selector",
        Cluster(ZONES, constraints=[(CPU8, 2, sel({"zone": "b"}))]),
        launches={"zone-b": 2},
    ),
]

WAITING = [
    Case(
        "demand beyond a type's max_workers waits on max_workers, with the type named",
        Cluster(config(worker("cpu", CPU8, max_workers=2)), pending=[(CPU8, 5)]),
        launches={"cpu": 2},
        waiting=(("pending", WaitCause.MAX_WORKERS, 3),),
        in_reasons=("3 pending bundles wait: max_workers of cpu (2) reached",),
    ),
    Case(
        "demand beyond the global max_workers",
        Cluster(config(worker("cpu", CPU8), max_workers=3), pending=[(CPU8, 5)]),
        launches={"cpu": 3},
        waiting=(("pending", WaitCause.GLOBAL_MAX_WORKERS, 2),),
        in_reasons=("global max_workers 3 reached",),
    ),
    Case(
        "demand whose only type is unavailable, with no fallback",
        Cluster(config(worker("spot", CPU8)), pending=[(CPU8, 2)], unavailable=[unavailable("spot")]),
        waiting=(("pending", WaitCause.UNAVAILABLE, 2),),
        in_reasons=("spot unavailable until",),
    ),
    Case(
        "a STRICT_SPREAD group that cannot get enough nodes waits as a placement group",
        Cluster(
            config(worker("cpu", CPU8, max_workers=2)),
            gangs=[GangDemand(GangStrategy.STRICT_SPREAD, tuple(shape_of({"CPU": 1}) for _ in range(3)))],
        ),
        waiting=(("placement_group", WaitCause.MAX_WORKERS, 3),),
        in_reasons=("cannot get distinct nodes: max_workers of cpu (2) reached",),
    ),
    Case(
        "request_resources beyond max_workers",
        Cluster(config(worker("cpu", CPU8, max_workers=1)), constraints=[(CPU8, 3)]),
        launches={"cpu": 1},
        waiting=(("request_resources", WaitCause.MAX_WORKERS, 2),),
        in_reasons=("request_resources not fully met: max_workers of cpu (1) reached",),
    ),
    Case(
        "infeasible demand is not waiting",
        Cluster(config(worker("cpu", CPU8)), pending=[({"GPU": 1}, 2)]),
        infeasible=({"GPU": 1},),
    ),
]

GPU_SWITCH = [
    Case(
        "by default (Ray's AUTOSCALER_CONSERVE_GPU_NODES=1) CPU-only demand avoids a cheaper GPU node",
        Cluster(config(worker("cpu", CPU8, cost=2.0), worker("gpu", GPU_NODE, cost=1.0)), pending=[({"CPU": 1}, 8)]),
        launches={"cpu": 1},
    ),
    Case(
        "GPU nodes still take CPU-only work when nothing else fits",
        Cluster(config(worker("cpu", {"CPU": 2}), worker("gpu", GPU_NODE)), pending=[({"CPU": 8}, 1)]),
        launches={"gpu": 1},
    ),
    Case(
        "switched off for the cluster, GPU nodes compete like any other (the cheaper one wins)",
        Cluster(
            config(worker("cpu", CPU8, cost=2.0), worker("gpu", GPU_NODE, cost=1.0), conserve_gpu_nodes=False),
            pending=[({"CPU": 1}, 8)],
        ),
        launches={"gpu": 1},
    ),
]


@pytest.mark.parametrize("case", IMPLICIT, ids=lambda case: case.name)
def test_implicit_resources(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", NODE_BOUND, ids=lambda case: case.name)
def test_node_bound_resources(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", LABELS, ids=lambda case: case.name)
def test_labels_and_selectors(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", WAITING, ids=lambda case: case.name)
def test_waiting_demand(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", GPU_SWITCH, ids=lambda case: case.name)
def test_gpu_switch(case: Case) -> None:
    check(case)


def test_waiting_names_the_node_types_that_could_hold_it() -> None:
    result = Cluster(
        config(worker("small", {"CPU": 2}, max_workers=1), worker("big", CPU8, max_workers=1)),
        pending=[({"CPU": 2}, 9)],
    ).plan()
    [waiting] = result.waiting
    assert (waiting.shape, waiting.cause, waiting.node_types) == (
        shape_of({"CPU": 2}),
        WaitCause.MAX_WORKERS,
        ("small", "big"),
    )


# ---- the selector language ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ray_syntax", "constraints"),
    [
        ({"zone": "a"}, (("zone", "in", ("a",)),)),
        ({"zone": "!a"}, (("zone", "!in", ("a",)),)),
        ({"gpu": "in(A100, H100)"}, (("gpu", "in", ("A100", "H100")),)),
        ({"gpu": "!in(T4,A10)"}, (("gpu", "!in", ("T4", "A10")),)),
        ({"b": "x", "a": "y"}, (("a", "in", ("y",)), ("b", "in", ("x",)))),
    ],
)
def test_parse_selector_reads_rays_syntax(ray_syntax: dict[str, str], constraints: tuple[object, ...]) -> None:
    assert parse_selector(ray_syntax) == constraints


def test_format_selector_writes_it_back() -> None:
    assert format_selector(parse_selector({"gpu": "!in(T4, A10)", "zone": "a"})) == "{gpu: !in(T4, A10), zone: a}"


@pytest.mark.parametrize(
    ("labels", "selector", "admitted"),
    [
        ({"zone": "a"}, {"zone": "a"}, True),
        ({}, {"zone": "a"}, False),  # "in" wants the label
        ({}, {"zone": "!a"}, True),  # "!in" passes without it
        ({"zone": "a"}, {"zone": "!a"}, False),
        ({"zone": "b"}, {"zone": "in(a, b)"}, True),
        ({"zone": "b"}, {"zone": "!in(a, b)"}, False),
    ],
)
def test_admits_as_ray_v2_matches(labels: dict[str, str], selector: dict[str, str], admitted: bool) -> None:
    assert admits(labels, (parse_selector(selector),)) is admitted


def test_an_unknown_operator_never_matches_as_in_ray() -> None:
    assert not admits({"zone": "a"}, ((("zone", "exists", ()),),))


def test_label_score_prefers_the_earlier_selector() -> None:
    selectors = sel({"zone": "a"}, {"zone": "b"})
    assert [label_score({"zone": zone}, selectors) for zone in ("a", "b", "c")] == [2, 1, 0]


def test_conjunction_combines_one_alternative_of_each() -> None:
    assert conjunction([sel({"a": "1"}, {"a": "2"}), (), sel({"b": "x"})]) == (
        (("a", "in", ("1",)), ("b", "in", ("x",))),
        (("a", "in", ("2",)), ("b", "in", ("x",))),
    )
    assert conjunction([(), ()]) == ()
