"""The head agent reports Ray 2.60's node labels and label selectors (built from Ray's own protobuf messages)."""

from __future__ import annotations

from typing import Any

import pytest

from provisioning.head.agent_gcs import LABEL_OPERATORS, cluster_state_payload

autoscaler_pb2: Any = pytest.importorskip("ray.core.generated.autoscaler_pb2")
common_pb2: Any = pytest.importorskip("ray.core.generated.common_pb2")
IN = common_pb2.LabelSelectorOperator.Value("LABEL_OPERATOR_IN")
NOT_IN = common_pb2.LabelSelectorOperator.Value("LABEL_OPERATOR_NOT_IN")


def request(resources: dict[str, float], *selectors: list[tuple[str, int, list[str]]]) -> Any:
    made = autoscaler_pb2.ResourceRequest()
    for name, amount in resources.items():
        made.resources_bundle[name] = amount
    for selector in selectors:
        proto = made.label_selectors.add()
        for key, operator, values in selector:
            proto.label_constraints.add(label_key=key, operator=operator, label_values=values)
    return made


def payload(state: Any) -> dict[str, Any]:
    return cluster_state_payload(state, "c", autoscaler_pb2.NodeStatus.Name)


def test_the_operator_numbers_are_rays() -> None:
    assert LABEL_OPERATORS == {IN: "in", NOT_IN: "!in"}


def test_node_labels_are_reported() -> None:
    state = autoscaler_pb2.ClusterResourceState()
    node = state.node_states.add(node_id=b"\x01" * 28, instance_id="i1", ray_node_type_name="cpu")
    node.labels["zone"] = "a"
    node.labels["ray.io/node-id"] = "01" * 28
    [reported] = payload(state)["nodes"]
    assert reported["labels"] == {"zone": "a", "ray.io/node-id": "01" * 28}


def test_pending_requests_fold_by_shape_and_selectors_and_keep_rays_order_of_selectors() -> None:
    state = autoscaler_pb2.ClusterResourceState()
    zone_b_then_a = ([("zone", IN, ["b"])], [("zone", IN, ["a"])])
    for selectors, count in [(zone_b_then_a, 2), (zone_b_then_a, 3), ((), 4), (([("gpu", NOT_IN, ["T4", "A10"])],), 1)]:
        state.pending_resource_requests.add(request=request({"CPU": 1}, *selectors), count=count)
    assert payload(state)["pending"] == [
        {"shape": {"CPU": 1.0}, "count": 4},
        {
            "shape": {"CPU": 1.0},
            "count": 1,
            "label_selectors": [[{"key": "gpu", "operator": "!in", "values": ["T4", "A10"]}]],
        },
        {
            "shape": {"CPU": 1.0},
            "count": 5,
            "label_selectors": [
                [{"key": "zone", "operator": "in", "values": ["b"]}],
                [{"key": "zone", "operator": "in", "values": ["a"]}],
            ],
        },
    ]


def test_request_resources_constraints_carry_their_selectors() -> None:
    state = autoscaler_pb2.ClusterResourceState()
    constraint = state.cluster_resource_constraints.add()
    constraint.resource_requests.add(request=request({"GPU": 1}, [("accelerator", IN, ["A100", "H100"])]), count=2)
    assert payload(state)["constraints"] == [
        {
            "shape": {"GPU": 1.0},
            "count": 2,
            "label_selectors": [[{"key": "accelerator", "operator": "in", "values": ["A100", "H100"]}]],
        }
    ]


def test_placement_group_bundles_carry_theirs_in_bundle_order() -> None:
    state = autoscaler_pb2.ClusterResourceState()
    gang = state.pending_gang_resource_requests.add(details="pg1:PACK|PENDING")
    bundles = gang.bundle_selectors.add()
    bundles.resource_requests.append(request({"CPU": 2}, [("zone", IN, ["b"])]))
    bundles.resource_requests.append(request({"CPU": 1}))
    [reported] = payload(state)["gangs"]
    assert reported == {
        "strategy": "PACK",
        "bundles": [{"CPU": 1.0}, {"CPU": 2.0}],
        "count": 1,
        "bundle_label_selectors": [[], [[{"key": "zone", "operator": "in", "values": ["b"]}]]],
    }


def test_demand_without_selectors_looks_as_before() -> None:
    state = autoscaler_pb2.ClusterResourceState()
    state.pending_resource_requests.add(request=request({"CPU": 1}), count=2)
    gang = state.pending_gang_resource_requests.add(details="pg1:STRICT_SPREAD|PENDING")
    gang.requests.append(request({"CPU": 1}))
    reported = payload(state)
    assert reported["pending"] == [{"shape": {"CPU": 1.0}, "count": 2}]
    assert reported["gangs"] == [{"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 1.0}], "count": 1}]


def test_the_control_plane_reads_them_back_and_the_planner_places_by_them() -> None:
    from autoscaler.agent_contract import parse_state
    from autoscaler.model import InstanceRecord, InstanceStatus
    from autoscaler.planner import plan
    from tests.unit.test_planner_support import NOW, config, worker

    state = autoscaler_pb2.ClusterResourceState()
    head = state.node_states.add(node_id=b"\x02" * 28, instance_id="head", ray_node_type_name="head")
    head.total_resources["node:__internal_head__"] = 1.0
    head.labels["ray.io/node-id"] = "02" * 28
    state.pending_resource_requests.add(request=request({"CPU": 4}, [("zone", IN, ["b"])]), count=3)
    gang = state.pending_gang_resource_requests.add(details="pg1:STRICT_SPREAD|PENDING")
    for _ in range(2):
        gang.requests.append(request({"CPU": 1}, [("zone", NOT_IN, ["b"])]))
    ray = parse_state(payload(state))
    assert ray.nodes[0].labels == {"ray.io/node-id": "02" * 28}
    assert [(d.count, d.selectors) for d in ray.pending] == [(3, ((("zone", "in", ("b",)),),))]
    assert ray.gangs[0].bundle_selectors == (((("zone", "!in", ("b",)),),),) * 2

    zones = config(worker("a", {"CPU": 8}, labels={"zone": "a"}), worker("b", {"CPU": 8}, labels={"zone": "b"}))
    since = NOW
    records = [InstanceRecord("c", "head", "head", InstanceStatus.RAY_RUNNING, "r", since, since, is_head=True)]
    result = plan(config=zones, instances=records, ray=ray, unavailable=(), now=NOW)
    assert {launch.node_type: launch.count for launch in result.launches} == {"a": 2, "b": 2}
