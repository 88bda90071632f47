"""Each scale-down rule alone: a table of candidates per rule, and what that rule terminates (and why)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from autoscaler.model import InstanceStatus, RayNodeStatus
from autoscaler.planner import SCALE_DOWN_RULES, DeadNode, Idle, LaunchTimeout, Outdated, OverMax, ScaleDownRule
from autoscaler.planner.scale_down import Candidate, ScaleDownView
from tests.unit.test_planner_support import worker

S = InstanceStatus
CPU = worker("cpu", {"CPU": 8}, min_workers=1, max_workers=3, idle_timeout_s=300, launch_timeout_s=600)
GPU = worker("gpu", {"CPU": 8, "GPU": 1}, max_workers=2, idle_timeout_s=60, launch_timeout_s=1200)


def launching(instance_id: str, *, status: S = S.ALLOCATED, age_s: float = 60.0, **fields: object) -> Candidate:
    candidate = Candidate(instance_id, "cpu", status, CPU, launched_age_s=age_s)
    for name, value in fields.items():
        setattr(candidate, name, value)
    return candidate


def running(
    instance_id: str, ray: RayNodeStatus | None = RayNodeStatus.RUNNING, *, idle_s: float = 0.0, **fields: object
) -> Candidate:
    candidate = Candidate(instance_id, "cpu", S.RAY_RUNNING, CPU, ray_status=ray, idle_s=idle_s)
    for name, value in fields.items():
        setattr(candidate, name, value)
    return candidate


@dataclass(frozen=True)
class Case:
    name: str
    candidates: Sequence[Candidate]
    terminated: dict[str, bool] = field(default_factory=dict)  # instance id -> drain
    reasons: tuple[str, ...] = ()  # each in some termination reason or note
    ray_known: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    max_workers: int = 10


def run(rule: ScaleDownRule, case: Case) -> ScaleDownView:
    view = ScaleDownView(case.candidates, max_workers=case.max_workers, ray_known=case.ray_known)
    view.counts = dict(case.counts)
    rule.apply(view)
    return view


def check(rule: ScaleDownRule, case: Case) -> None:
    view = run(rule, case)
    assert {t.instance_id: t.drain for t in view.terminations} == case.terminated, view.terminations
    text = "\n".join([*(t.reason for t in view.terminations), *view.notes])
    for expected in case.reasons:
        assert expected in text, text
    assert all(t.reason for t in view.terminations)
    assert view.taken == set(case.terminated)


LAUNCH_TIMEOUT = [
    Case(
        "an allocated node past its type's launch_timeout_s is a launch failure, not drained",
        [launching("slow", age_s=601)],
        {"slow": False},
        ("launch failure: not registered with Ray 601 s after launch (launch_timeout_s 600, status allocated)",),
    ),
    Case("within the timeout it is kept", [launching("new", age_s=600)]),
    Case("a requested node is timed too", [launching("req", status=S.REQUESTED, age_s=700)], {"req": False}),
    Case("a queued node is not (lifecycle's queued timeout is)", [launching("q", status=S.QUEUED, age_s=5000)]),
    Case("each type has its own timeout", [launching("g", age_s=900, node_type="gpu", worker=GPU)]),
    Case(
        "a node of a type no longer in the config gets the default timeout",
        [launching("gone", age_s=601, node_type="old", worker=None)],
        {"gone": False},
        ("launch_timeout_s 600",),
    ),
    Case("it applies with Ray unreachable", [launching("slow", age_s=700)], {"slow": False}, ray_known=False),
    Case("running nodes are not its business", [running("r", idle_s=0, launched_age_s=5000)]),
]

DEAD_NODE = [
    Case("a node Ray reports dead", [running("d", RayNodeStatus.DEAD)], {"d": False}, ("its Ray node is dead",)),
    Case("a node Ray no longer lists", [running("gone", None)], {"gone": False}, ("Ray lists no node for it",)),
    Case("a live node stays", [running("ok"), running("idle", RayNodeStatus.IDLE, idle_s=5000)]),
    Case("with Ray unreachable nothing is dead", [running("unknown", None)], ray_known=False),
    Case("a launching node has no Ray node yet: not dead", [launching("l")]),
]

OUTDATED = [
    Case(
        "a launching node of an outdated config goes at once",
        [launching("old", outdated=True)],
        {"old": False},
        ("outdated config: replaced before it starts Ray",),
    ),
    Case(
        "a launching node of a removed type goes at once",
        [launching("gone", status=S.QUEUED, node_type="old", worker=None)],
        {"gone": False},
        ("node type old is no longer in the config",),
    ),
    Case(
        "an idle outdated node is drained",
        [running("old", RayNodeStatus.IDLE, idle_s=5, outdated=True)],
        {"old": True},
        ("outdated config: idle, replaced by the current config",),
    ),
    Case(
        "a busy outdated node stays, with a note",
        [running("old", outdated=True)],
        {},
        ("old (cpu) has an outdated config; replaced once idle",),
    ),
    Case(
        "an idle node of a removed type is drained",
        [running("gone", RayNodeStatus.IDLE, node_type="old", worker=None)],
        {"gone": True},
        ("no longer in the config: idle",),
    ),
    Case("a draining outdated node is left to its drain", [running("old", RayNodeStatus.DRAINING, outdated=True)]),
    Case("with Ray unreachable a running node is not judged", [running("old", outdated=True)], ray_known=False),
    Case("a current node stays", [launching("l"), running("r", RayNodeStatus.IDLE, idle_s=9999)]),
]

OVER_MAX = [
    Case(
        "above the type's max: launching nodes go first, without drain",
        [running("busy"), running("idle", RayNodeStatus.IDLE, idle_s=10), launching("l")],
        {"l": False},
        ("above max_workers 3 of cpu (config lowered)",),
        counts={"cpu": 4},
    ),
    Case(
        "then idle ones, the longest idle first, drained",
        [
            running("recent", RayNodeStatus.IDLE, idle_s=10),
            running("oldest", RayNodeStatus.IDLE, idle_s=50),
            running("busy"),
        ],
        {"oldest": True},
        counts={"cpu": 4},
    ),
    Case("busy nodes are never cut", [running("b1"), running("b2")], counts={"cpu": 5}),
    Case(
        "above the global max",
        [launching("l1"), launching("l2")],
        {"l1": False},
        ("above global max_workers 1",),
        counts={"cpu": 2},
        max_workers=1,
    ),
    Case("within both maxima nothing goes", [launching("l"), running("i", RayNodeStatus.IDLE)], counts={"cpu": 2}),
    Case(
        "with Ray unreachable only launching nodes may go",
        [running("i", RayNodeStatus.IDLE, idle_s=99), running("j", RayNodeStatus.IDLE, idle_s=99)],
        counts={"cpu": 5},
        ray_known=False,
    ),
]

IDLE = [
    Case(
        "idle past the type's timeout and not needed: drained",
        [running("i", RayNodeStatus.IDLE, idle_s=400)],
        {"i": True},
        ("idle 400 s > 300 s and not needed by pending demand (1 cpu left, min_workers 1)",),
        counts={"cpu": 2},
    ),
    Case("idle within its timeout stays", [running("i", RayNodeStatus.IDLE, idle_s=300)], counts={"cpu": 2}),
    Case("needed by demand stays", [running("i", RayNodeStatus.IDLE, idle_s=900, needed=True)], counts={"cpu": 2}),
    Case(
        "never below min_workers, the longest idle going first",
        [running("recent", RayNodeStatus.IDLE, idle_s=400), running("oldest", RayNodeStatus.IDLE, idle_s=900)],
        {"oldest": True},
        counts={"cpu": 2},
    ),
    Case(
        "each type has its own idle timeout",
        [running("g", RayNodeStatus.IDLE, idle_s=61, node_type="gpu", worker=GPU)],
        {"g": True},
        counts={"gpu": 1},
    ),
    Case("busy nodes are not idle", [running("b")], counts={"cpu": 5}),
    Case(
        "with Ray unreachable nothing goes for idleness",
        [running("i", RayNodeStatus.IDLE, idle_s=9999)],
        reasons=("head agent unreachable: no scale-down for idleness this tick",),
        counts={"cpu": 5},
        ray_known=False,
    ),
]


@pytest.mark.parametrize("case", LAUNCH_TIMEOUT, ids=lambda case: case.name)
def test_launch_timeout(case: Case) -> None:
    check(LaunchTimeout(), case)


@pytest.mark.parametrize("case", DEAD_NODE, ids=lambda case: case.name)
def test_dead_node(case: Case) -> None:
    check(DeadNode(), case)


@pytest.mark.parametrize("case", OUTDATED, ids=lambda case: case.name)
def test_outdated(case: Case) -> None:
    check(Outdated(), case)


@pytest.mark.parametrize("case", OVER_MAX, ids=lambda case: case.name)
def test_over_max(case: Case) -> None:
    check(OverMax(), case)


@pytest.mark.parametrize("case", IDLE, ids=lambda case: case.name)
def test_idle(case: Case) -> None:
    check(Idle(), case)


def test_the_rules_run_in_order_and_a_node_gets_the_first_rule_that_applies() -> None:
    assert [type(rule) for rule in SCALE_DOWN_RULES] == [LaunchTimeout, DeadNode, Outdated, OverMax, Idle]
    assert [rule.after_placement for rule in SCALE_DOWN_RULES] == [False, False, False, True, True]
    # An outdated launch that also timed out is a launch failure; a dead outdated node is dead.
    view = ScaleDownView(
        [launching("slow", age_s=700, outdated=True), running("dead", RayNodeStatus.DEAD, outdated=True)],
        max_workers=10,
        ray_known=True,
    )
    for rule in SCALE_DOWN_RULES:
        rule.apply(view)
    assert [(t.instance_id, t.reason.split(":")[0]) for t in view.terminations] == [
        ("slow", "launch failure"),
        ("dead", "its Ray node is dead"),
    ]


def test_counts_go_down_with_each_termination_so_over_max_and_idle_share_them() -> None:
    view = ScaleDownView(
        [running("a", RayNodeStatus.IDLE, idle_s=900), running("b", RayNodeStatus.IDLE, idle_s=800)],
        max_workers=10,
        ray_known=True,
    )
    view.counts = {"cpu": 4}  # one above max_workers 3; min_workers 1
    OverMax().apply(view)
    Idle().apply(view)
    assert [(t.instance_id, t.reason.split(" (")[0]) for t in view.terminations] == [
        ("a", "above max_workers 3 of cpu"),
        ("b", "idle 800 s > 300 s and not needed by pending demand"),
    ]
    assert view.counts == {"cpu": 2}
