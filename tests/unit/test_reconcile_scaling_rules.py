"""The scaling rules that left the reconcile shell: the planner decides them, the shell only carries them out."""

from __future__ import annotations

import json
from dataclasses import replace

from autoscaler.model import InstanceStatus, RayNodeStatus, ShapeDemand, shape_of
from tests.unit.test_reconcile import demand, running_world, world_with_one_running_worker

S = InstanceStatus


def test_a_worker_whose_ray_node_died_is_terminated_without_drain_by_the_planners_dead_node_rule() -> None:
    world, worker = world_with_one_running_worker()
    [node] = [n for n in world.ray.state.nodes if n.instance_id == worker.instance_id]
    world.ray.state = replace(
        world.ray.state,
        nodes=tuple(replace(n, status=RayNodeStatus.DEAD) if n is node else n for n in world.ray.state.nodes),
    )
    result = world.tick()
    assert [r.status for r in world.nodes(head=False) if r.instance_id == worker.instance_id] == [S.TERMINATING]
    assert f"terminate {worker.instance_id}" in world.cloud.calls
    assert result.plan is not None
    assert [(t.instance_id, t.reason, t.drain) for t in result.plan.terminations] == [
        (worker.instance_id, "its Ray node is dead", False)
    ]
    assert world.ray.drains == []
    events = [e.message for e in world.store.list_events("unit") if e.instance_id == worker.instance_id]
    assert any("its Ray node is dead" in message for message in events)


def test_a_worker_ray_no_longer_lists_is_terminated_and_replaced_while_demand_remains() -> None:
    world, worker = world_with_one_running_worker()
    world.ray.state = replace(
        world.ray.state,
        nodes=tuple(n for n in world.ray.state.nodes if n.instance_id != worker.instance_id),
        pending=demand(2, 1).pending,
    )
    result = world.tick()
    assert result.plan is not None
    assert [(t.instance_id, t.reason) for t in result.plan.terminations] == [
        (worker.instance_id, "Ray lists no node for it")
    ]
    assert [launch.count for launch in result.plan.launches] == [1]  # the dead node is no capacity this tick


def test_with_the_head_agent_unreachable_a_running_worker_is_never_taken_for_dead() -> None:
    world, _ = world_with_one_running_worker()
    world.ray.state = replace(world.ray.state, nodes=())
    world.ray.reachable = False
    world.tick()
    assert [w.status for w in world.live_workers()] == [S.RAY_RUNNING]


def test_the_plans_waiting_demand_is_in_the_clusters_observation() -> None:
    world = running_world()
    world.ray.state = replace(world.ray.state, pending=(ShapeDemand(shape_of({"CPU": 2}), 5),))
    result = world.tick()
    assert result.plan is not None
    assert [launch.count for launch in result.plan.launches] == [3]  # max_workers of cpu is 3
    observation = json.loads(world.cluster().last_observation)
    assert observation["waiting"] == [
        {
            "shape": {"CPU": 2.0},
            "count": 2,
            "source": "pending",
            "cause": "max_workers",
            "node_types": ["cpu"],
            "reason": "max_workers of cpu (3) reached",
        }
    ]


def test_pending_demand_with_label_selectors_is_shown_with_them() -> None:
    world = running_world()
    selector = (("zone", "in", ("1",)),)
    world.ray.state = replace(world.ray.state, pending=(ShapeDemand(shape_of({"CPU": 2}), 1, (selector,)),))
    world.tick()
    observation = json.loads(world.cluster().last_observation)
    assert observation["pending"] == [
        {
            "shape": {"CPU": 2.0},
            "count": 1,
            "label_selectors": [[{"key": "zone", "operator": "in", "values": ["1"]}]],
        }
    ]
