"""Offerings through the real app on Azurite and the strict ARM emulator: a spot capacity refusal in zone 1 moves the
next launch to zone 2, then to regular priority when the node type allows it (docs/decisions/offerings.md).

The service, the reconcile shell, the Table store and the Azure provider are the real ones; ARM is the strict emulator
answering `ZonalAllocationFailed` to the VM PUTs it is told to refuse, as Azure answers a zone out of spot capacity.
"""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.model import InstanceStatus
from tests.integration.test_azure_service import (  # the fixtures are used by name
    CLUSTER,
    HEAD_TYPE,
    SPOT_TYPE,
    VM_TYPE,
    Harness,
    arm,
    cluster_yaml,
    harness,
    store,
)
from tests.support.arm_emulator import Fault

pytestmark = pytest.mark.azurite
__all__ = ["arm", "harness", "store"]  # fixtures, imported for pytest

WORKER_PUT = rf"/virtualMachines/ray-{CLUSTER}-[0-9a-f]+$"


def create_zoned_cluster(harness: Harness, *, spot_fallback: bool) -> None:
    """Ray's example config with zones 1 and 2, spot workers without a fallback type, and (when asked) the spot type
    allowed to launch at regular priority; brought up to a running head."""
    body = cluster_yaml(harness.arm.subscription_id, on_demand_fallback=False)
    body = body.replace("    location: eastus\n", '    location: eastus\n    availability_zone: "1,2"\n')
    if spot_fallback:
        body = body.replace(f"    {SPOT_TYPE}:\n", f"    {SPOT_TYPE}:\n        spot_fallback: regular\n")
    assert harness.service.create_cluster(body.encode(), "application/yaml").created
    harness.tick()
    harness.tick()
    harness.ray.register(harness.head().instance_id, HEAD_TYPE, cpus=2, head=True)
    assert harness.view().status == "running"


def worker_vms(harness: Harness) -> list[dict[str, Any]]:
    return [vm for vm in harness.arm.resources(VM_TYPE) if vm["tags"].get("ray-node-type") == SPOT_TYPE]


def refuse_next_worker_put(harness: Harness) -> None:
    harness.arm.inject(Fault("PUT", WORKER_PUT, status=409, code="ZonalAllocationFailed", message="no spot capacity"))


def test_a_spot_capacity_refusal_in_zone_1_moves_the_launch_to_zone_2_then_to_regular_priority(harness: Harness):
    create_zoned_cluster(harness, spot_fallback=True)
    harness.demand(1)
    refuse_next_worker_put(harness)
    harness.tick()  # spot in zone 1: refused
    refuse_next_worker_put(harness)
    harness.tick()  # spot in zone 2: refused
    harness.tick()  # regular priority, zone 1: accepted
    [vm] = worker_vms(harness)
    assert vm["zones"] == ["1"]
    assert vm["properties"].get("priority", "Regular") == "Regular"
    launched = [n for n in harness.nodes(workers_only=True) if n.status == InstanceStatus.REQUESTED]
    assert [(n.availability_zone, n.priority) for n in launched] == [("1", "regular")]
    avoided = sorted((u.zone, u.priority, u.size) for u in harness.view().unavailable_node_types)
    assert avoided == [("1", "spot", "Standard_D2s_v3"), ("2", "spot", "Standard_D2s_v3")]


def test_without_spot_fallback_the_spot_type_waits_and_says_why(harness: Harness):
    create_zoned_cluster(harness, spot_fallback=False)
    harness.demand(1)
    refuse_next_worker_put(harness)
    harness.tick()
    refuse_next_worker_put(harness)
    harness.tick()
    harness.tick()  # every offering of the type is avoided: nothing is launched
    assert worker_vms(harness) == []
    [waiting] = harness.view().waiting
    assert waiting["cause"] == "unavailable"
    assert "Standard_D2s_v3 spot in zone 1" in waiting["reason"]
