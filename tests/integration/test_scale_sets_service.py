"""A scale-set node type's whole life through the Service: create -> scale up -> spot eviction -> replacement ->
scale down of the node the planner chose -> destroy, nothing left.

The same real parts as tests/integration/test_azure_service.py (Service, reconcile shell and planner,
AzureCloudProvider through the Azure SDK against the strict ARM emulator, TableStateStore on Azurite; Ray's view is
the test's), with the workers in a Flexible scale set: each VM the set makes is bound by the shell to one launched
record and carries on under its own name.
"""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.model import InstanceStatus
from provisioning.azure.scale_sets import scale_set_name_for
from tests.integration import test_azure_service as single_vm
from tests.integration.test_azure_service import CLUSTER, HEAD_TYPE, RESOURCE_GROUP, WORKER_CPUS, Harness

pytestmark = pytest.mark.azurite

# The single-VM lifecycle's fixtures (strict emulator, Azurite store, the Service harness), used by name.
arm = single_vm.arm
store = single_vm.store
harness = single_vm.harness

POOL_TYPE = "ray.worker.pool"
SCALE_SET_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
VM_TYPE = "Microsoft.Compute/virtualMachines"
S = InstanceStatus


def pool_cluster_yaml(subscription_id: str) -> str:
    image = "imagePublisher: Canonical, imageOffer: ubuntu-24_04-lts, imageSku: server"
    return f"""
cluster_name: {CLUSTER}
max_workers: 4
idle_timeout_minutes: 5
provider:
    type: azure
    location: eastus
    resource_group: {RESOURCE_GROUP}
    subscription_id: {subscription_id}
auth:
    ssh_user: ubuntu
available_node_types:
    {HEAD_TYPE}:
        resources: {{"CPU": 2}}
        node_config:
            azure_arm_parameters: {{vmSize: Standard_D2s_v3, {image}}}
    {POOL_TYPE}:
        min_workers: 0
        max_workers: 4
        resources: {{"CPU": {WORKER_CPUS}}}
        node_config:
            azure_arm_parameters: {{vmSize: Standard_D2s_v3, {image}, priority: Spot, evictionPolicy: Delete}}
            azure_scale_set: {{platform_fault_domain_count: 1}}
head_node_type: {HEAD_TYPE}
"""


def pool_vms(harness: Harness) -> list[dict[str, Any]]:
    scale_set_id = f"/{scale_set_name_for(CLUSTER, POOL_TYPE)}".lower()
    return [
        vm
        for vm in harness.arm.resources(VM_TYPE)
        if str((vm["properties"].get("virtualMachineScaleSet") or {}).get("id", "")).lower().endswith(scale_set_id)
    ]


def bring_up(harness: Harness) -> None:
    response = harness.service.create_cluster(pool_cluster_yaml(harness.arm.subscription_id).encode(), "text/yaml")
    assert response.created
    harness.tick()  # queues and launches the head (and starts the network)
    harness.tick()  # the head is listed, its agent answers: running
    harness.ray.register(harness.head().instance_id, HEAD_TYPE, cpus=2, head=True)
    assert harness.view().status == "running"


def test_a_scale_set_node_type_lives_through_the_service_and_destroy_leaves_nothing(harness: Harness) -> None:
    bring_up(harness)
    writes_before = harness.arm.writes
    workers = harness.scale_up(2)
    scale_set_writes = [
        path for method, path, _ in harness.arm.request_log if method == "PUT" and "virtualMachineScaleSets" in path
    ]
    assert len(scale_set_writes) == 1  # two workers: one capacity write
    assert harness.arm.writes - writes_before == 1
    vm_names = sorted(vm["name"] for vm in pool_vms(harness))
    assert sorted(worker.instance_id for worker in workers) == vm_names  # each record carries on under its VM's name
    assert {worker.node_type for worker in workers} == {POOL_TYPE}

    # A spot VM is evicted (policy Delete): its record ends, a replacement is launched into the set and bound.
    evicted, kept = workers
    harness.arm.evict(evicted.instance_id, mode="delete")
    harness.leave_ray(evicted.instance_id)
    harness.demand(1)
    harness.tick()
    assert {node.instance_id: node.status for node in harness.nodes(workers_only=True)}[evicted.instance_id] in (
        S.TERMINATED,
        S.TERMINATING,
    )
    harness.tick()  # the set's new VM is listed and bound
    harness.join_ray()
    harness.demand(0)
    harness.tick()
    running = {node.instance_id for node in harness.nodes(status=S.RAY_RUNNING, workers_only=True)}
    assert len(running) == 2
    assert kept.instance_id in running
    assert running == {vm["name"] for vm in pool_vms(harness)}

    # Scale down: the planner chooses the idle one; exactly that VM leaves the set, the other stays.
    (replacement,) = running - {kept.instance_id}
    harness.ray.register(replacement, POOL_TYPE, cpus=WORKER_CPUS, idle_s=3600)
    for _ in range(3):
        harness.tick()
        if replacement not in {vm["name"] for vm in pool_vms(harness)}:
            break
    assert [vm["name"] for vm in pool_vms(harness)] == [kept.instance_id]
    deletes = [path for method, path, _ in harness.arm.request_log if method == "POST" and path.endswith("/delete")]
    assert len(deletes) == 1

    harness.service.destroy_cluster(CLUSTER)
    for _ in range(5):
        harness.tick()
        if harness.view().status == "deleted":
            break
    assert harness.view().status == "deleted"
    assert harness.arm.settle()
    assert harness.arm.resources(SCALE_SET_TYPE) == []
    assert pool_vms(harness) == []
    left = [resource["id"] for resource in harness.arm.resources() if f"ray-{CLUSTER}-" in resource["id"].lower()]
    assert left == []
