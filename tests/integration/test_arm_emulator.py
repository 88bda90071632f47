"""The ARM emulator behaves as Azure does for what the providers use, seen through the real Azure SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachine
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import VirtualNetworkPeering

from tests.support.arm_emulator import ArmEmulator, Fault, FaultKind, normalize_path

RESOURCE_GROUP = "rg"


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    # The emulator's own behaviours, without strict mode's timing (tests/integration/test_arm_semantics.py has those).
    with ArmEmulator(strict=False) as emulator:
        yield emulator


@pytest.fixture
def compute(arm: ArmEmulator) -> ComputeManagementClient:
    return ComputeManagementClient(arm.credential(), arm.subscription_id, retry_total=0, **arm.client_kwargs())


@pytest.fixture
def network(arm: ArmEmulator) -> NetworkManagementClient:
    return NetworkManagementClient(arm.credential(), arm.subscription_id, retry_total=0, **arm.client_kwargs())


@pytest.fixture
def subnet_id(arm: ArmEmulator) -> str:
    return arm.seed_subnet(RESOURCE_GROUP, "vnet", "nodes", "10.1.0.0/24")


def vm_body(subnet_id: str, *, delete_option: str = "Delete", tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "location": "eastus",
        "tags": tags or {"ray-cluster-name": "c1"},
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
            "storageProfile": {"osDisk": {"createOption": "FromImage", "deleteOption": delete_option}},
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": "vm1-nic",
                        "properties": {
                            "deleteOption": delete_option,
                            "ipConfigurations": [
                                {
                                    "name": "ip",
                                    "properties": {
                                        "subnet": {"id": subnet_id},
                                        "publicIPAddressConfiguration": {
                                            "name": "vm1-ip",
                                            "properties": {"deleteOption": delete_option},
                                        },
                                    },
                                }
                            ],
                        },
                    }
                ],
            },
        },
    }


def types_of(arm: ArmEmulator) -> list[str]:
    return sorted(resource["type"].split("/")[-1] for resource in arm.resources())


def test_a_polled_creation_follows_the_async_operation_until_it_succeeds(
    arm: ArmEmulator, compute: ComputeManagementClient, subnet_id: str
) -> None:
    arm.inject(Fault("PUT", r"/virtualMachines/vm1$", kind=FaultKind.SLOW, observations=2))

    poller = compute.virtual_machines.begin_create_or_update(
        RESOURCE_GROUP, "vm1", VirtualMachine(vm_body(subnet_id)), polling_interval=0
    )
    vm = poller.result()

    assert vm.as_dict()["properties"]["provisioningState"] == "Succeeded"
    assert (
        arm.requests_by_route[("GET", "/subscriptions/{}/providers/Microsoft.Compute/locations/{}/operations/{}")] >= 2
    )


@pytest.mark.parametrize(
    ("delete_option", "left_behind"),
    [
        ("Delete", ["virtualNetworks"]),
        ("Detach", ["disks", "networkInterfaces", "publicIPAddresses", "virtualNetworks"]),
    ],
)
def test_deleting_a_vm_takes_along_only_what_is_marked_delete(
    arm: ArmEmulator, compute: ComputeManagementClient, subnet_id: str, delete_option: str, left_behind: list[str]
) -> None:
    compute.virtual_machines.begin_create_or_update(
        RESOURCE_GROUP, "vm1", VirtualMachine(vm_body(subnet_id, delete_option=delete_option)), polling=False
    )

    compute.virtual_machines.begin_delete(RESOURCE_GROUP, "vm1", polling=False)

    assert types_of(arm) == left_behind


def test_resources_in_use_refuse_deletion_as_azure_does(
    arm: ArmEmulator, compute: ComputeManagementClient, network: NetworkManagementClient, subnet_id: str
) -> None:
    compute.virtual_machines.begin_create_or_update(
        RESOURCE_GROUP, "vm1", VirtualMachine(vm_body(subnet_id)), polling=False
    )

    with pytest.raises(HttpResponseError) as nic_error:
        network.network_interfaces.begin_delete(RESOURCE_GROUP, "vm1-nic", polling=False)
    with pytest.raises(HttpResponseError) as vnet_error:
        network.virtual_networks.begin_delete(RESOURCE_GROUP, "vnet", polling=False)

    assert nic_error.value.error is not None
    assert nic_error.value.error.code == "NicInUse"
    assert vnet_error.value.error is not None
    assert vnet_error.value.error.code == "InUseSubnetCannotBeDeleted"


def test_list_all_with_status_only_shows_power_state_and_eviction_changes_it(
    arm: ArmEmulator, compute: ComputeManagementClient, subnet_id: str
) -> None:
    compute.virtual_machines.begin_create_or_update(
        RESOURCE_GROUP, "vm1", VirtualMachine(vm_body(subnet_id)), polling=False
    )

    def power_states() -> list[str]:
        return [
            status["code"]
            for vm in compute.virtual_machines.list_all(status_only="true")
            for status in vm.as_dict()["properties"]["instanceView"]["statuses"]
            if status["code"].startswith("PowerState/")
        ]

    assert power_states() == ["PowerState/running"]
    arm.evict("vm1", mode="deallocate")
    assert power_states() == ["PowerState/deallocated"]
    arm.evict("vm1", mode="delete")
    assert power_states() == []
    assert types_of(arm) == ["virtualNetworks"]


def test_resource_group_list_has_no_instance_view_and_the_instance_view_get_has_the_failure_code(
    arm: ArmEmulator, compute: ComputeManagementClient, subnet_id: str
) -> None:
    arm.inject(Fault("PUT", r"/virtualMachines/vm1$", kind=FaultKind.ASYNC_FAILURE, code="AllocationFailed"))
    compute.virtual_machines.begin_create_or_update(
        RESOURCE_GROUP, "vm1", VirtualMachine(vm_body(subnet_id)), polling=False
    )

    (listed,) = [vm.as_dict() for vm in compute.virtual_machines.list(RESOURCE_GROUP)]
    view = compute.virtual_machines.instance_view(RESOURCE_GROUP, "vm1").as_dict()

    assert listed["properties"]["provisioningState"] == "Failed"
    assert "instanceView" not in listed["properties"]
    assert [status["code"] for status in view["statuses"]] == ["ProvisioningState/failed/AllocationFailed"]


def peering_to(remote_vnet_id: str) -> VirtualNetworkPeering:
    return VirtualNetworkPeering(
        {"properties": {"remoteVirtualNetwork": {"id": remote_vnet_id}, "allowVirtualNetworkAccess": True}}
    )


def peering_states(network: NetworkManagementClient, vnet_name: str) -> dict[str, str]:
    vnet = network.virtual_networks.get(RESOURCE_GROUP, vnet_name).as_dict()
    return {
        peering["name"]: peering["properties"]["peeringState"]
        for peering in vnet["properties"]["virtualNetworkPeerings"]
    }


def test_peering_is_initiated_then_connected_then_disconnected_as_in_azure(
    arm: ArmEmulator, network: NetworkManagementClient
) -> None:
    first_id = arm.seed_subnet(RESOURCE_GROUP, "vnet-a", "default", "10.1.0.0/16").split("/subnets/")[0]
    second_id = arm.seed_subnet(RESOURCE_GROUP, "vnet-b", "default", "10.2.0.0/16").split("/subnets/")[0]
    peerings = network.virtual_network_peerings

    created = peerings.begin_create_or_update(
        RESOURCE_GROUP, "vnet-a", "a-to-b", peering_to(second_id), polling=False
    ).result()
    after_one_side = peering_states(network, "vnet-a")
    peerings.begin_create_or_update(RESOURCE_GROUP, "vnet-b", "b-to-a", peering_to(first_id), polling=False)
    after_both_sides = {**peering_states(network, "vnet-a"), **peering_states(network, "vnet-b")}
    peerings.begin_delete(RESOURCE_GROUP, "vnet-b", "b-to-a", polling=False)

    assert created.as_dict()["type"] == "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"
    assert created.as_dict()["properties"]["remoteAddressSpace"] == {"addressPrefixes": ["10.2.0.0/16"]}
    assert after_one_side == {"a-to-b": "Initiated"}
    assert after_both_sides == {"a-to-b": "Connected", "b-to-a": "Connected"}
    assert peerings.get(RESOURCE_GROUP, "vnet-a", "a-to-b").as_dict()["properties"]["peeringState"] == "Disconnected"
    with pytest.raises(HttpResponseError) as missing:
        peerings.get(RESOURCE_GROUP, "vnet-b", "b-to-a")
    assert missing.value.status_code == 404
    route = (
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}/virtualNetworkPeerings/{}"
    )
    assert (arm.requests_by_route[("PUT", route)], arm.requests_by_route[("DELETE", route)]) == (2, 1)


def test_deleting_a_vnet_disconnects_the_other_side_of_its_peerings(
    arm: ArmEmulator, network: NetworkManagementClient
) -> None:
    first_id = arm.seed_subnet(RESOURCE_GROUP, "vnet-a", "default", "10.1.0.0/16").split("/subnets/")[0]
    second_id = arm.seed_subnet(RESOURCE_GROUP, "vnet-b", "default", "10.2.0.0/16").split("/subnets/")[0]
    network.virtual_network_peerings.begin_create_or_update(
        RESOURCE_GROUP, "vnet-a", "a-to-b", peering_to(second_id), polling=False
    )
    network.virtual_network_peerings.begin_create_or_update(
        RESOURCE_GROUP, "vnet-b", "b-to-a", peering_to(first_id), polling=False
    )

    network.virtual_networks.begin_delete(RESOURCE_GROUP, "vnet-a", polling=False)

    assert peering_states(network, "vnet-b") == {"b-to-a": "Disconnected"}


@pytest.mark.parametrize(
    ("third_prefix", "expected_code"),
    [("10.1.64.0/18", "VnetAddressSpacesOverlap"), ("10.2.0.0/16", "VnetAddressSpaceOverlapsWithAlreadyPeeredVnet")],
    ids=["with-the-remote", "with-a-vnet-already-peered-with-the-remote"],
)
def test_peering_overlapping_address_spaces_is_refused(
    arm: ArmEmulator, network: NetworkManagementClient, third_prefix: str, expected_code: str
) -> None:
    hub_id = arm.seed_subnet(RESOURCE_GROUP, "hub", "default", "10.1.0.0/17").split("/subnets/")[0]
    arm.seed_subnet(RESOURCE_GROUP, "spoke", "default", "10.2.0.0/16")
    arm.seed_subnet(RESOURCE_GROUP, "third", "default", third_prefix)
    spoke_id = hub_id.replace("/hub", "/spoke")
    network.virtual_network_peerings.begin_create_or_update(
        RESOURCE_GROUP, "spoke", "spoke-to-hub", peering_to(hub_id), polling=False
    )
    network.virtual_network_peerings.begin_create_or_update(
        RESOURCE_GROUP, "hub", "hub-to-spoke", peering_to(spoke_id), polling=False
    )

    with pytest.raises(HttpResponseError) as refused:
        network.virtual_network_peerings.begin_create_or_update(
            RESOURCE_GROUP, "third", "third-to-hub", peering_to(hub_id), polling=False
        )

    assert refused.value.status_code == 400
    assert refused.value.error is not None
    assert refused.value.error.code == expected_code


def test_faults_match_method_and_path_and_are_consumed(arm: ArmEmulator, compute: ComputeManagementClient) -> None:
    arm.inject(Fault("DELETE", r"/virtualMachines/", status=503, code="ServiceUnavailable"))
    arm.inject(Fault("GET", r"/virtualMachines$", status=429, code="TooManyRequests", retry_after_s=30))

    with pytest.raises(HttpResponseError) as throttled:
        list(compute.virtual_machines.list_all())
    second = list(compute.virtual_machines.list_all())

    assert throttled.value.status_code == 429
    assert getattr(throttled.value.response, "headers", {}).get("Retry-After") == "30"
    assert second == []
    assert len(arm.pending_faults()) == 1  # the DELETE fault waits for its request


def test_requests_are_counted_by_normalized_path_and_kind(
    arm: ArmEmulator, compute: ComputeManagementClient, subnet_id: str
) -> None:
    compute.virtual_machines.begin_create_or_update(
        RESOURCE_GROUP, "vm1", VirtualMachine(vm_body(subnet_id)), polling=False
    )
    list(compute.virtual_machines.list(RESOURCE_GROUP))
    compute.virtual_machines.instance_view(RESOURCE_GROUP, "vm1")

    assert (arm.reads, arm.writes) == (2, 1)
    assert (
        arm.requests_by_route[
            ("GET", "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines")
        ]
        == 1
    )
    assert normalize_path(
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1/instanceView"
    ) == ("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}/instanceView")


def test_a_request_without_a_bearer_token_is_refused(arm: ArmEmulator) -> None:
    url = f"{arm.base_url}/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/virtualMachines"

    answer = requests.get(url, verify=arm.ca_path, timeout=5)

    assert answer.status_code == 401
