"""The head agent's `/v1/state` reports a node's preemption deadline from Ray's draining nodes, and the control
plane's contract reads it back as a timezone-aware time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from autoscaler.agent_contract import parse_state
from provisioning.head.agent_gcs import cluster_state_payload

autoscaler_pb2: Any = pytest.importorskip("ray.core.generated.autoscaler_pb2")

DEADLINE = datetime(2026, 11, 30, 12, 0, 30, 250000, tzinfo=UTC)
DEADLINE_MS = int(DEADLINE.timestamp() * 1000)


def state_with(*nodes: tuple[str, str, str]) -> Any:
    """A ClusterResourceState with (node id hex, instance id, Ray status name) nodes."""
    state = autoscaler_pb2.ClusterResourceState()
    for node_id_hex, instance_id, status in nodes:
        node = state.node_states.add()
        node.node_id = bytes.fromhex(node_id_hex)
        node.instance_id = instance_id
        node.status = autoscaler_pb2.NodeStatus.Value(status)
        node.total_resources["CPU"] = 1.0
    return state


@pytest.mark.parametrize(
    ("status", "deadline_ms", "expected"),
    [
        pytest.param("DRAINING", DEADLINE_MS, "2026-11-30T12:00:30.250+00:00", id="preemption-drain"),
        pytest.param("RUNNING", DEADLINE_MS, "2026-11-30T12:00:30.250+00:00", id="drained-before-ray-says-draining"),
        pytest.param("DRAINING", 0, None, id="idle-drain-has-no-deadline"),
        pytest.param("DEAD", DEADLINE_MS, None, id="dead-node"),
        pytest.param("RUNNING", None, None, id="not-draining"),
    ],
)
def test_a_node_carries_the_deadline_ray_drains_it_with(
    status: str, deadline_ms: int | None, expected: str | None
) -> None:
    node_id = "ab" * 28
    deadlines = {} if deadline_ms is None else {node_id: deadline_ms}
    payload = cluster_state_payload(
        state_with((node_id, "worker0001", status)), "c", autoscaler_pb2.NodeStatus.Name, deadlines
    )
    nodes: list[dict[str, Any]] = payload["nodes"]  # type: ignore[assignment]
    assert [node.get("preempt_deadline") for node in nodes] == [expected]


def test_the_control_plane_reads_the_deadline_as_an_aware_time() -> None:
    node_id = "cd" * 28
    payload = cluster_state_payload(
        state_with((node_id, "worker0001", "DRAINING"), ("ef" * 28, "worker0002", "RUNNING")),
        "c",
        autoscaler_pb2.NodeStatus.Name,
        {node_id: DEADLINE_MS},
    )
    state = parse_state({**payload, "boot_phases": {}, "jobs_running": 0})
    deadlines = {node.instance_id: node.preempt_deadline for node in state.nodes}
    assert deadlines == {"worker0001": DEADLINE, "worker0002": None}
