"""parse_state: the head agent's /v1/state JSON -> RayState, and what it refuses; parse_boot_phases: its boot phases."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from autoscaler.model import GangDemand, GangStrategy, RayNode, RayNodeStatus, RayState, ShapeDemand
from autoscaler.ray_state import (
    BootPhase,
    BootPhaseReport,
    HeadAuthError,
    HeadUnreachableError,
    HttpRayStateReader,
    parse_boot_phases,
    parse_state,
)

HEAD_ID = "a" * 56
WORKER_ID = "b" * 56


def _node(**overrides: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "ray_node_id": WORKER_ID,
        "instance_id": "instance-1",
        "node_type": "cpu-worker",
        "status": "idle",
        "idle_duration_s": 12.5,
        "total_resources": {"CPU": 4.0, "memory": 1e9},
        "available_resources": {"CPU": 4.0, "memory": 1e9},
        "is_head": False,
    }
    node.update(overrides)
    return node


def _payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "cluster_name": "demo",
        "nodes": [_node(ray_node_id=HEAD_ID, instance_id="", node_type="head", is_head=True), _node()],
        "pending": [],
        "gangs": [],
        "constraints": [],
    }
    payload.update(overrides)
    return payload


WORKER = RayNode(
    ray_node_id=WORKER_ID,
    instance_id="instance-1",
    node_type="cpu-worker",
    status=RayNodeStatus.IDLE,
    idle_duration_s=12.5,
    total_resources={"CPU": 4.0, "memory": 1e9},
    available_resources={"CPU": 4.0, "memory": 1e9},
)
HEAD = RayNode(
    ray_node_id=HEAD_ID,
    instance_id="",
    node_type="head",
    status=RayNodeStatus.IDLE,
    idle_duration_s=12.5,
    total_resources={"CPU": 4.0, "memory": 1e9},
    available_resources={"CPU": 4.0, "memory": 1e9},
    is_head=True,
)
CPU1 = (("CPU", 1.0),)
CPU2 = (("CPU", 2.0),)
GPU1 = (("CPU", 1.0), ("GPU", 1.0))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(_payload(), RayState(nodes=(HEAD, WORKER)), id="nodes-only"),
        pytest.param(
            _payload(pending=[{"shape": {"CPU": 1}, "count": 3}, {"shape": {"GPU": 1, "CPU": 1}, "count": 1}]),
            RayState(nodes=(HEAD, WORKER), pending=(ShapeDemand(CPU1, 3), ShapeDemand(GPU1, 1))),
            id="pending-shapes-with-counts",
        ),
        pytest.param(
            _payload(pending=[{"shape": {"CPU": 1}, "count": 3}, {"shape": {"CPU": 1.0, "GPU": 0}, "count": 2}]),
            RayState(nodes=(HEAD, WORKER), pending=(ShapeDemand(CPU1, 5),)),
            id="identical-shapes-fold-zero-amounts-dropped",
        ),
        pytest.param(
            _payload(pending=[{"shape": {"CPU": 0}, "count": 2}]),
            RayState(nodes=(HEAD, WORKER)),
            id="empty-shape-needs-no-node",
        ),
        pytest.param(
            _payload(gangs=[{"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 1}, {"CPU": 1}], "count": 1}]),
            RayState(nodes=(HEAD, WORKER), gangs=(GangDemand(GangStrategy.STRICT_SPREAD, (CPU1, CPU1), 1),)),
            id="gang-with-strategy",
        ),
        pytest.param(
            _payload(
                gangs=[
                    {"strategy": "PACK", "bundles": [{"CPU": 2}, {"CPU": 1}]},
                    {"strategy": "PACK", "bundles": [{"CPU": 1}, {"CPU": 2}], "count": 2},
                    {"strategy": "SPREAD", "bundles": [{"CPU": 1}, {"CPU": 2}]},
                ]
            ),
            RayState(
                nodes=(HEAD, WORKER),
                gangs=(
                    GangDemand(GangStrategy.PACK, (CPU1, CPU2), 3),
                    GangDemand(GangStrategy.SPREAD, (CPU1, CPU2), 1),
                ),
            ),
            id="identical-gangs-fold-whatever-bundle-order",
        ),
        pytest.param(
            _payload(constraints=[{"shape": {"CPU": 1}, "count": 3}]),
            RayState(nodes=(HEAD, WORKER), constraints=(ShapeDemand(CPU1, 3),)),
            id="request-resources-constraint",
        ),
        pytest.param(
            {"nodes": [_node(status="draining", future_field=1)], "agent_version": "2"},
            RayState(nodes=(replace(WORKER, status=RayNodeStatus.DRAINING),)),
            id="unknown-fields-ignored-missing-lists-empty",
        ),
        pytest.param(
            _payload(nodes=[_node(status="dead", instance_id="", node_type="")]),
            RayState(nodes=(replace(WORKER, status=RayNodeStatus.DEAD, instance_id="", node_type=""),)),
            id="dead-node-started-by-hand",
        ),
    ],
)
def test_parse_state_builds_the_ray_state(payload: dict[str, Any], expected: RayState) -> None:
    assert parse_state(payload) == expected


def _without(key: str) -> dict[str, Any]:
    payload = _payload()
    del payload[key]
    return payload


def _with_node(**overrides: Any) -> dict[str, Any]:
    return _payload(nodes=[_node(**overrides)])


def _without_node_field(key: str) -> dict[str, Any]:
    payload = copy.deepcopy(_payload())
    del payload["nodes"][0][key]
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(None, id="null"),
        pytest.param([], id="a-list"),
        pytest.param("<html>502 Bad Gateway</html>", id="a-string"),
        pytest.param({}, id="empty-object"),
        pytest.param(_without("nodes"), id="no-nodes"),
        pytest.param(_payload(nodes={"x": 1}), id="nodes-not-a-list"),
        pytest.param(_with_node(status="sleeping"), id="unknown-node-status"),
        pytest.param(_with_node(ray_node_id=""), id="empty-ray-node-id"),
        pytest.param(_without_node_field("ray_node_id"), id="missing-ray-node-id"),
        pytest.param(_without_node_field("status"), id="missing-status"),
        pytest.param(_without_node_field("idle_duration_s"), id="missing-idle-duration"),
        pytest.param(_with_node(idle_duration_s=-1), id="negative-idle-duration"),
        pytest.param(_with_node(idle_duration_s="a while"), id="idle-duration-not-a-number"),
        pytest.param(_with_node(total_resources={"CPU": -1}), id="negative-resource"),
        pytest.param(_with_node(total_resources={"CPU": "many"}), id="resource-not-a-number"),
        pytest.param(_with_node(available_resources=[1, 2]), id="resources-not-a-dict"),
        pytest.param(_payload(pending=[{"shape": {"CPU": 1}, "count": 0}]), id="zero-count"),
        pytest.param(_payload(pending=[{"shape": {"CPU": 1}, "count": 1.5}]), id="fractional-count"),
        pytest.param(_payload(pending=[{"shape": {"CPU": 1}}]), id="pending-without-count"),
        pytest.param(_payload(pending=[{"count": 1}]), id="pending-without-shape"),
        pytest.param(_payload(constraints=[{"shape": {"CPU": float("inf")}, "count": 1}]), id="infinite-amount"),
        pytest.param(_payload(gangs=[{"strategy": "ANYWHERE", "bundles": [{"CPU": 1}]}]), id="unknown-strategy"),
        pytest.param(_payload(gangs=[{"strategy": "PACK", "bundles": []}]), id="gang-without-bundles"),
        pytest.param(_payload(gangs=[{"strategy": "PACK", "bundles": [{"CPU": -2}]}]), id="gang-negative-amount"),
    ],
)
def test_parse_state_refuses_a_malformed_payload_as_unreachable(payload: object) -> None:
    with pytest.raises(HeadUnreachableError, match="does not match the contract"):
        parse_state(payload)


# --------------------------------------------------------------------------------------------
# Boot phases
# --------------------------------------------------------------------------------------------

REPORTED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _boot_entry(phase: str = "ray_started", at: str = "2026-01-02T03:04:05Z", detail: str = "") -> dict[str, str]:
    return {"phase": phase, "at": at, "detail": detail}


def test_parse_boot_phases_reads_each_reported_phase_by_instance() -> None:
    payload = _payload(
        boot_phases={
            "worker-1": _boot_entry("cloud_init_running"),
            "worker-2": _boot_entry("boot_failed", detail="bootstrap.sh line 40 exited 1"),
        }
    )
    assert parse_boot_phases(payload) == {
        "worker-1": BootPhaseReport(BootPhase.CLOUD_INIT_RUNNING, REPORTED_AT),
        "worker-2": BootPhaseReport(BootPhase.BOOT_FAILED, REPORTED_AT, "bootstrap.sh line 40 exited 1"),
    }


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(_boot_entry(phase="installing_drivers"), id="phase-this-version-does-not-know"),
        pytest.param(_boot_entry(phase="joined"), id="phase-the-control-plane-derives-itself"),
        pytest.param(_boot_entry(at="yesterday"), id="time-not-a-time"),
        pytest.param(_boot_entry(at="2026-01-02T03:04:05"), id="time-without-zone"),
        pytest.param("ray_started", id="entry-not-an-object"),
    ],
)
def test_parse_boot_phases_leaves_out_an_entry_that_does_not_fit_and_keeps_the_others(entry: object) -> None:
    payload = _payload(boot_phases={"odd": entry, "worker-1": _boot_entry()})
    assert parse_boot_phases(payload) == {"worker-1": BootPhaseReport(BootPhase.RAY_STARTED, REPORTED_AT)}


@pytest.mark.parametrize(
    "payload",
    [pytest.param(_payload(), id="agent-without-boot-phases"), pytest.param(_payload(boot_phases=[]), id="a-list")],
)
def test_parse_boot_phases_of_an_agent_without_them_is_empty(payload: dict[str, Any]) -> None:
    assert parse_boot_phases(payload) == {}


def test_a_malformed_boot_phase_does_not_cost_the_state_of_ray() -> None:
    payload = _payload(boot_phases={"worker-1": _boot_entry(phase="exploded")})
    assert parse_state(payload) == RayState(nodes=(HEAD, WORKER))


class _AnsweringSession(requests.Session):
    """A session whose every request gets one fixed answer (no network)."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = self.status
        response._content = b'{"title": "refused"}'
        return response


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("call", ["read_state", "drain"])
def test_a_refused_token_is_head_auth_error_and_not_an_unreachable_agent(status: int, call: str) -> None:
    reader = HttpRayStateReader(session=_AnsweringSession(status))
    calls = {
        "read_state": lambda: reader.read_state("http://head:8270", "wrong-token"),
        "drain": lambda: reader.drain("http://head:8270", "wrong-token", WORKER_ID, "idle", "scale down"),
    }
    with pytest.raises(HeadAuthError) as refused:
        calls[call]()
    assert not isinstance(refused.value, HeadUnreachableError)


def test_an_agent_that_answers_5xx_is_unreachable_not_an_auth_error() -> None:
    reader = HttpRayStateReader(session=_AnsweringSession(503))
    with pytest.raises(HeadUnreachableError) as unreachable:
        reader.read_state("http://head:8270", "token")
    assert not isinstance(unreachable.value, HeadAuthError)
