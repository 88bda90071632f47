"""The ARM emulator's strict mode: Azure's long-running operations, reference and concurrency refusals, paging, RBAC
and throttling, one behaviour per test, with short timings. (Sources for each behaviour are cited in
tests/support/arm/.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachine
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import NetworkSecurityGroup

from tests.support.arm_emulator import (
    APP_VNET_ROLE_FILE,
    CLUSTERS_ROLE_FILE,
    DEFAULT_PRINCIPAL_ID,
    STRICT_ENV,
    TEST_ACCESS_TOKEN,
    TRACE_ENV,
    AccessCheck,
    ArmEmulator,
    Fault,
    FaultKind,
    RoleAssignment,
    RoleDefinition,
    ThrottleBudgets,
    TokenBucket,
    Window,
    access_checks,
    load_role,
    role_from_document,
    strict_default,
)

RG = "rg"
OTHER_RG = "rg-other"
API = "?api-version=2024-05-01"
DURATION_S = 0.5  # every operation's time here; WAIT_S outlasts it
WAIT_S = DURATION_S + 0.1


def strict_arm(*, check_references: bool | None = None) -> ArmEmulator:
    # The requests here are minimal bodies about ARM's semantics, not about Azure's request rules (test_arm_rules.py).
    return ArmEmulator(
        strict=True,
        request_rules=False,
        vm_create_s=DURATION_S,
        network_update_s=DURATION_S,
        delete_s=DURATION_S,
        check_references=check_references,
    )


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    with strict_arm() as emulator:
        yield emulator


def call(
    arm: ArmEmulator, method: str, path: str, body: Any = None, *, token: str = TEST_ACCESS_TOKEN
) -> requests.Response:
    url = path if path.startswith("https://") else f"{arm.base_url}{path}{API if '?' not in path else ''}"
    return requests.request(
        method,
        url,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        verify=arm.ca_path,
        timeout=10,
    )


def rid(arm: ArmEmulator, kind: str, name: str, group: str = RG) -> str:
    return f"/subscriptions/{arm.subscription_id}/resourceGroups/{group}/providers/{kind}/{name}"


def nsg_path(arm: ArmEmulator, name: str = "nsg", group: str = RG) -> str:
    return rid(arm, "Microsoft.Network/networkSecurityGroups", name, group)


def vnet_path(arm: ArmEmulator, name: str = "vnet", group: str = RG) -> str:
    return rid(arm, "Microsoft.Network/virtualNetworks", name, group)


def vm_path(arm: ArmEmulator, name: str = "vm1", group: str = RG) -> str:
    return rid(arm, "Microsoft.Compute/virtualMachines", name, group)


def vnet_body(prefix: str = "10.1.0.0/16", nsg_id: str | None = None) -> dict[str, Any]:
    subnet: dict[str, Any] = {"addressPrefix": prefix}
    if nsg_id:
        subnet["networkSecurityGroup"] = {"id": nsg_id}
    return {
        "location": "eastus",
        "properties": {
            "addressSpace": {"addressPrefixes": [prefix]},
            "subnets": [{"name": "nodes", "properties": subnet}],
        },
    }


def vm_body(
    subnet_id: str, *, size: str = "Standard_D2s_v3", public_ip: bool = False, name: str = "vm1"
) -> dict[str, Any]:
    ip_properties: dict[str, Any] = {"subnet": {"id": subnet_id}}
    if public_ip:
        ip_properties["publicIPAddressConfiguration"] = {"name": f"{name}-ip", "properties": {"deleteOption": "Delete"}}
    return {
        "location": "eastus",
        "tags": {"ray-cluster-name": "c1"},
        "properties": {
            "hardwareProfile": {"vmSize": size},
            "storageProfile": {"osDisk": {"createOption": "FromImage", "deleteOption": "Delete"}},
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": f"{name}-nic",
                        "properties": {
                            "deleteOption": "Delete",
                            "ipConfigurations": [{"name": "ip", "properties": ip_properties}],
                        },
                    }
                ],
            },
        },
    }


def error_of(answer: requests.Response) -> dict[str, Any]:
    return answer.json()["error"]  # type: ignore[no-any-return]


def state_of(arm: ArmEmulator, path: str) -> str:
    return call(arm, "GET", path).json()["properties"]["provisioningState"]  # type: ignore[no-any-return]


def settled_subnet(arm: ArmEmulator, group: str = RG, name: str = "vnet", prefix: str = "10.1.0.0/16") -> str:
    return arm.seed_subnet(group, name, "nodes", prefix)


# ------------------------------------------------------------------------------------------ long-running operations


def test_a_vm_put_answers_201_with_an_async_operation_and_stays_creating_for_its_time(arm: ArmEmulator) -> None:
    subnet_id = settled_subnet(arm)

    created = call(arm, "PUT", vm_path(arm), vm_body(subnet_id))
    status_url = created.headers["Azure-AsyncOperation"]
    first_status = call(arm, "GET", status_url).json()["status"]
    first_state = state_of(arm, vm_path(arm))
    time.sleep(WAIT_S)

    assert created.status_code == 201
    assert "Location" not in created.headers
    assert created.json()["properties"]["provisioningState"] == "Creating"
    assert (first_status, first_state) == ("InProgress", "Creating")
    assert call(arm, "GET", status_url).json()["status"] == "Succeeded"
    assert state_of(arm, vm_path(arm)) == "Succeeded"


def test_time_not_looks_completes_an_operation(arm: ArmEmulator) -> None:
    """However often it is looked at, the VM stays Creating until its time has passed."""
    subnet_id = settled_subnet(arm)
    call(arm, "PUT", vm_path(arm), vm_body(subnet_id))

    states = {state_of(arm, vm_path(arm)) for _ in range(5)}

    assert states == {"Creating"}


def test_a_network_put_is_updating_then_succeeded_and_an_update_answers_200(arm: ArmEmulator) -> None:
    created = call(arm, "PUT", nsg_path(arm), {"location": "eastus"})
    while_updating = state_of(arm, nsg_path(arm))
    time.sleep(WAIT_S)
    after = state_of(arm, nsg_path(arm))
    updated = call(arm, "PUT", nsg_path(arm), {"location": "eastus", "tags": {"a": "b"}})

    assert (created.status_code, created.json()["properties"]["provisioningState"]) == (201, "Updating")
    assert "Azure-AsyncOperation" in created.headers
    assert (while_updating, after) == ("Updating", "Succeeded")
    assert (updated.status_code, updated.json()["properties"]["provisioningState"]) == (200, "Updating")


def test_a_delete_answers_202_with_location_stays_deleting_then_is_gone(arm: ArmEmulator) -> None:
    settled_subnet(arm)

    deleted = call(arm, "DELETE", vnet_path(arm))
    location = deleted.headers["Location"]
    state_while = state_of(arm, vnet_path(arm))
    result_while = call(arm, "GET", location).status_code
    time.sleep(WAIT_S)

    assert deleted.status_code == 202
    assert location.startswith(arm.base_url)
    assert "Azure-AsyncOperation" in deleted.headers
    assert (state_while, result_while) == ("Deleting", 202)
    assert call(arm, "GET", vnet_path(arm)).status_code == 404
    assert call(arm, "GET", location).status_code == 204
    assert call(arm, "GET", deleted.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"


def test_a_failed_creation_reports_failed_with_its_error_on_the_status_endpoint(arm: ArmEmulator) -> None:
    subnet_id = settled_subnet(arm)
    arm.inject(Fault("PUT", r"/virtualMachines/vm1$", kind=FaultKind.ASYNC_FAILURE, code="AllocationFailed"))

    created = call(arm, "PUT", vm_path(arm), vm_body(subnet_id))
    time.sleep(WAIT_S)
    status = call(arm, "GET", created.headers["Azure-AsyncOperation"]).json()

    assert status["status"] == "Failed"
    assert status["error"]["code"] == "AllocationFailed"
    assert state_of(arm, vm_path(arm)) == "Failed"


def test_the_sdk_poller_waits_for_the_operation(arm: ArmEmulator) -> None:
    compute = ComputeManagementClient(arm.credential(), arm.subscription_id, **arm.client_kwargs())
    subnet_id = settled_subnet(arm)

    started = time.monotonic()
    vm = compute.virtual_machines.begin_create_or_update(
        RG, "vm1", VirtualMachine(vm_body(subnet_id)), polling_interval=0.05
    ).result()

    assert vm.provisioning_state == "Succeeded"
    assert time.monotonic() - started >= DURATION_S - 0.05


def test_without_long_running_operations_complete_at_once() -> None:
    with ArmEmulator(strict=True, request_rules=False, long_running=False) as arm:
        answer = call(arm, "PUT", nsg_path(arm), {"location": "eastus"})

        assert answer.json()["properties"]["provisioningState"] == "Updating"  # the answer to the PUT itself
        assert state_of(arm, nsg_path(arm)) == "Succeeded"


# ------------------------------------------------------------------------------------------ references


def test_a_vnet_referencing_an_nsg_still_updating_is_refused_until_the_nsg_succeeds(arm: ArmEmulator) -> None:
    call(arm, "PUT", nsg_path(arm), {"location": "eastus"})
    nsg_id = nsg_path(arm)

    refused = call(arm, "PUT", vnet_path(arm), vnet_body(nsg_id=nsg_id))
    time.sleep(WAIT_S)
    accepted = call(arm, "PUT", vnet_path(arm), vnet_body(nsg_id=nsg_id))

    assert refused.status_code == 400
    assert error_of(refused)["code"] == "ReferencedResourceNotProvisioned"
    assert error_of(refused)["message"] == (
        f"Cannot proceed with operation because resource {nsg_id} used by resource {vnet_path(arm)}/subnets/nodes is "
        "not in Succeeded state. Resource is in Updating state and the last operation that updated/is updating the "
        "resource is PutNetworkSecurityGroupOperation."
    )
    assert accepted.status_code == 201


def test_a_vm_whose_nic_joins_a_subnet_of_an_updating_vnet_is_refused(arm: ArmEmulator) -> None:
    call(arm, "PUT", vnet_path(arm), vnet_body())
    subnet_id = f"{vnet_path(arm)}/subnets/nodes"

    refused = call(arm, "PUT", vm_path(arm), vm_body(subnet_id))

    assert refused.status_code == 400
    assert error_of(refused)["code"] == "ReferencedResourceNotProvisioned"
    assert (
        f"resource {subnet_id} used by resource {rid(arm, 'Microsoft.Network/networkInterfaces', 'vm1-nic')}"
        in (error_of(refused)["message"])
    )
    assert arm.resources("Microsoft.Compute/virtualMachines") == []
    assert arm.resources("Microsoft.Network/networkInterfaces") == []


@pytest.mark.parametrize("updating", ["local", "remote"])
def test_a_peering_whose_local_or_remote_vnet_is_updating_is_refused(arm: ArmEmulator, updating: str) -> None:
    settled_subnet(arm, name="settled", prefix="10.1.0.0/16")
    call(arm, "PUT", vnet_path(arm, "fresh"), vnet_body("10.2.0.0/16"))
    local, remote = ("fresh", "settled") if updating == "local" else ("settled", "fresh")

    refused = call(
        arm,
        "PUT",
        f"{vnet_path(arm, local)}/virtualNetworkPeerings/to-{remote}",
        {"properties": {"remoteVirtualNetwork": {"id": vnet_path(arm, remote)}}},
    )

    assert refused.status_code == 400
    assert error_of(refused)["code"] == "ReferencedResourceNotProvisioned"
    assert f"resource {vnet_path(arm, 'fresh')} used by resource" in error_of(refused)["message"]


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_write_to_a_network_resource_with_an_operation_in_progress_is_retryable(
    arm: ArmEmulator, method: str
) -> None:
    call(arm, "PUT", nsg_path(arm), {"location": "eastus"})

    refused = call(arm, method, nsg_path(arm), {"location": "eastus"} if method == "PUT" else None)

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = error_of(refused)
    assert error["code"] == "RetryableError"
    assert error["details"][0]["code"] == "RetryableErrorDueToAnotherOperation"
    assert "Operation PutNetworkSecurityGroupOperation" in error["details"][0]["message"]


def test_a_second_peering_put_while_the_first_runs_is_retryable(arm: ArmEmulator) -> None:
    settled_subnet(arm, name="a", prefix="10.1.0.0/16")
    settled_subnet(arm, name="b", prefix="10.2.0.0/16")
    peering = f"{vnet_path(arm, 'a')}/virtualNetworkPeerings/a-to-b"
    body = {"properties": {"remoteVirtualNetwork": {"id": vnet_path(arm, "b")}}}

    first = call(arm, "PUT", peering, body)
    second = call(arm, "PUT", peering, body)

    assert (first.status_code, first.json()["properties"]["provisioningState"]) == (201, "Updating")
    assert (second.status_code, error_of(second)["code"]) == (429, "RetryableError")


@pytest.mark.parametrize("missing", ["subnet", "remote-vnet", "nsg"])
def test_a_reference_to_a_missing_resource_is_an_invalid_resource_reference(arm: ArmEmulator, missing: str) -> None:
    settled_subnet(arm)
    if missing == "subnet":
        target, referenced = vm_path(arm), f"{vnet_path(arm, 'nowhere')}/subnets/nodes"
        answer = call(arm, "PUT", target, vm_body(referenced))
    elif missing == "remote-vnet":
        referenced = vnet_path(arm, "nowhere")
        answer = call(
            arm,
            "PUT",
            f"{vnet_path(arm)}/virtualNetworkPeerings/p",
            {"properties": {"remoteVirtualNetwork": {"id": referenced}}},
        )
    else:
        referenced = nsg_path(arm, "nowhere")
        answer = call(arm, "PUT", vnet_path(arm, "other"), vnet_body("10.9.0.0/16", nsg_id=referenced))

    assert answer.status_code == 400
    error = error_of(answer)
    assert error["code"] == "InvalidResourceReference"
    assert error["message"].startswith(f"Resource {referenced} referenced by resource ")
    assert error["details"][0]["code"] == "NotFound"


def test_without_reference_checks_a_reference_to_an_updating_resource_is_accepted() -> None:
    with strict_arm(check_references=False) as arm:
        call(arm, "PUT", nsg_path(arm), {"location": "eastus"})

        answer = call(arm, "PUT", vnet_path(arm), vnet_body(nsg_id=nsg_path(arm)))

        assert answer.status_code == 201


# ------------------------------------------------------------------------------------------ VM concurrency


def test_vm_puts_during_creation_join_it_when_identical_and_conflict_otherwise(arm: ArmEmulator) -> None:
    subnet_id = settled_subnet(arm)
    first = call(arm, "PUT", vm_path(arm), vm_body(subnet_id))

    same = call(arm, "PUT", vm_path(arm), vm_body(subnet_id))
    other = call(arm, "PUT", vm_path(arm), vm_body(subnet_id, size="Standard_D4s_v3"))

    assert (same.status_code, same.headers["Azure-AsyncOperation"]) == (200, first.headers["Azure-AsyncOperation"])
    assert (other.status_code, error_of(other)["code"]) == (409, "Conflict")


def test_a_vm_put_during_its_deletion_is_not_allowed(arm: ArmEmulator) -> None:
    subnet_id = settled_subnet(arm)
    call(arm, "PUT", vm_path(arm), vm_body(subnet_id))
    time.sleep(WAIT_S)
    call(arm, "DELETE", vm_path(arm))

    answer = call(arm, "PUT", vm_path(arm), vm_body(subnet_id))

    assert (answer.status_code, error_of(answer)["code"]) == (409, "OperationNotAllowed")
    assert "marked for deletion" in error_of(answer)["message"]


def test_deleting_a_vm_being_created_preempts_the_creation(arm: ArmEmulator) -> None:
    subnet_id = settled_subnet(arm, prefix="10.1.0.0/16")
    created = call(arm, "PUT", vm_path(arm), vm_body(subnet_id, public_ip=True))

    deleted = call(arm, "DELETE", vm_path(arm))
    creation = call(arm, "GET", created.headers["Azure-AsyncOperation"]).json()
    time.sleep(WAIT_S)

    assert deleted.status_code == 202
    assert (creation["status"], creation["error"]["code"]) == ("Canceled", "OperationPreempted")
    assert sorted(r["type"] for r in arm.resources()) == ["Microsoft.Network/virtualNetworks"]


def test_a_nic_held_by_a_vm_being_deleted_is_in_use_until_the_vm_is_gone(arm: ArmEmulator) -> None:
    subnet_id = settled_subnet(arm)
    call(arm, "PUT", vm_path(arm), vm_body(subnet_id))
    time.sleep(WAIT_S)
    call(arm, "DELETE", vm_path(arm))
    nic = rid(arm, "Microsoft.Network/networkInterfaces", "vm1-nic")

    refused = call(arm, "DELETE", nic)
    time.sleep(WAIT_S)

    assert (refused.status_code, error_of(refused)["code"]) == (400, "NicInUse")
    assert call(arm, "GET", nic).status_code == 404  # deleteOption Delete: gone with the VM


# ------------------------------------------------------------------------------------------ paging


def test_lists_are_paged_with_an_absolute_next_link_carrying_a_skip_token() -> None:
    with ArmEmulator(strict=True, request_rules=False, page_size=2, long_running=False) as arm:
        for index in range(5):
            call(arm, "PUT", nsg_path(arm, f"nsg{index}"), {"location": "eastus"})
        network = NetworkManagementClient(arm.credential(), arm.subscription_id, **arm.client_kwargs())
        arm.reset_counts()

        first_page = call(arm, "GET", f"{nsg_path(arm, '')[:-1]}").json()
        names = [nsg.name for nsg in network.network_security_groups.list(RG)]

        assert len(first_page["value"]) == 2
        assert first_page["nextLink"].startswith(f"{arm.base_url}/subscriptions/")
        assert "$skipToken=" in first_page["nextLink"]
        assert "api-version=" in first_page["nextLink"]
        assert names == [f"nsg{index}" for index in range(5)]
        assert arm.reads == 1 + 3


def test_the_next_link_keeps_the_query_of_the_first_request() -> None:
    with ArmEmulator(strict=True, request_rules=False, page_size=1, long_running=False) as arm:
        subnet_id = arm.seed_subnet(RG, "vnet", "nodes", "10.1.0.0/16")
        arm.seed_vm(RG, "a", subnet_id, tags={})
        arm.seed_vm(RG, "b", subnet_id, tags={})
        compute = ComputeManagementClient(arm.credential(), arm.subscription_id, **arm.client_kwargs())

        first = call(
            arm,
            "GET",
            f"/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/virtualMachines{API}&statusOnly=true",
        ).json()
        vms = list(compute.virtual_machines.list_all(status_only="true"))

        assert "statusOnly=true" in first["nextLink"]
        assert [vm.name for vm in vms] == ["a", "b"]
        assert all(vm.instance_view is not None for vm in vms)


def test_strict_mode_pages_by_default_and_page_size_zero_turns_it_off() -> None:
    with (
        ArmEmulator(strict=True, request_rules=False) as paged,
        ArmEmulator(strict=True, request_rules=False, page_size=0) as unpaged,
    ):
        assert paged.page_size
        assert unpaged.page_size is None


# ------------------------------------------------------------------------------------------ RBAC


def test_roles_evaluate_wildcards_and_not_actions_case_insensitively() -> None:
    role = RoleDefinition("r", ("Microsoft.Compute/*", "*/read"), ("Microsoft.Compute/*/delete",))

    assert role.allows("microsoft.compute/virtualMachines/write")
    assert role.allows("Microsoft.Network/virtualNetworks/read")
    assert not role.allows("Microsoft.Compute/virtualMachines/delete")
    assert not role.allows("Microsoft.Network/virtualNetworks/write")


def test_role_documents_load_in_the_repo_s_and_azure_s_formats(tmp_path: Any) -> None:
    azure_style = {
        "properties": {
            "roleName": "Reader-ish",
            "permissions": [{"actions": ["*/read"], "notActions": ["Microsoft.Network/*/read"]}],
        }
    }
    path = tmp_path / "role.json"
    path.write_text(json.dumps(azure_style))

    clusters = load_role(CLUSTERS_ROLE_FILE)
    reader = load_role(path)
    flat = role_from_document({"Actions": ["a/b"], "NotActions": ["a/c"]})

    assert clusters.allows("Microsoft.Compute/virtualMachines/write")
    assert not clusters.allows("Microsoft.Compute/virtualMachines/runCommand/action")
    assert (reader.name, reader.allows("Microsoft.Compute/disks/read"), reader.allows("Microsoft.Network/x/read")) == (
        "Reader-ish",
        True,
        False,
    )
    assert (flat.actions, flat.not_actions) == (("a/b",), ("a/c",))


def test_an_assignment_covers_its_scope_and_everything_below() -> None:
    assignment = RoleAssignment("p", RoleDefinition("r", ("*",)), "/subscriptions/s/resourceGroups/RG")

    assert assignment.covers("/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/v")
    assert assignment.covers("/subscriptions/s/resourceGroups/rg")
    assert not assignment.covers("/subscriptions/s/resourceGroups/rg2")
    assert not assignment.covers("/subscriptions/s")


def test_the_actions_a_vm_put_needs_include_its_linked_checks() -> None:
    vm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
    subnet = "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/n"
    body = vm_body(subnet, public_ip=True)
    body["properties"]["storageProfile"]["imageReference"] = {
        "id": "/subscriptions/s/resourceGroups/img/providers/Microsoft.Compute/galleries/g/images/i/versions/1.0.0"
    }

    checks = access_checks("PUT", vm, body)

    nic = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/vm1-nic"
    public_ip = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/vm1-ip"
    assert checks == [
        AccessCheck("Microsoft.Compute/virtualMachines/write", vm, linked=False),
        AccessCheck("Microsoft.Network/networkInterfaces/write", nic, linked=True),
        AccessCheck("Microsoft.Network/networkInterfaces/join/action", nic, linked=True),
        AccessCheck("Microsoft.Network/virtualNetworks/subnets/join/action", subnet, linked=True),
        AccessCheck("Microsoft.Network/publicIPAddresses/write", public_ip, linked=True),
        AccessCheck("Microsoft.Network/publicIPAddresses/join/action", public_ip, linked=True),
        AccessCheck(
            "Microsoft.Compute/galleries/images/versions/read",
            body["properties"]["storageProfile"]["imageReference"]["id"],
            linked=True,
        ),
    ]


def test_without_grants_nothing_is_authorization_checked_and_rbac_true_refuses_everything() -> None:
    with (
        ArmEmulator(strict=True, request_rules=False) as open_arm,
        ArmEmulator(strict=True, request_rules=False, rbac=True) as closed_arm,
    ):
        assert call(open_arm, "GET", nsg_path(open_arm)).status_code == 404
        refused = call(closed_arm, "GET", nsg_path(closed_arm))
        assert (refused.status_code, error_of(refused)["code"]) == (403, "AuthorizationFailed")


def test_a_request_outside_the_granted_scope_fails_authorization_with_azure_s_message(arm: ArmEmulator) -> None:
    arm.grant(CLUSTERS_ROLE_FILE, arm.resource_group_scope(RG))
    list_all = f"/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/virtualMachines"

    in_group = call(
        arm,
        "GET",
        f"/subscriptions/{arm.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines",
    )
    refused = call(arm, "GET", list_all)

    assert in_group.status_code == 200
    assert refused.status_code == 403
    assert error_of(refused) == {
        "code": "AuthorizationFailed",
        "message": f"The client '{DEFAULT_PRINCIPAL_ID}' with object id '{DEFAULT_PRINCIPAL_ID}' does not have "
        f"authorization to perform action 'Microsoft.Compute/virtualMachines/read' over scope '{list_all}' or the "
        "scope is invalid. If access was recently granted, please refresh your credentials.",
    }


def test_a_vm_joining_a_subnet_in_an_ungranted_group_fails_linked_authorization(arm: ArmEmulator) -> None:
    subnet_id = settled_subnet(arm, group=OTHER_RG)
    arm.grant(CLUSTERS_ROLE_FILE, arm.resource_group_scope(RG))

    refused = call(arm, "PUT", vm_path(arm), vm_body(subnet_id))
    arm.grant(["Microsoft.Network/virtualNetworks/subnets/join/action"], vnet_path(arm, group=OTHER_RG))
    accepted = call(arm, "PUT", vm_path(arm), vm_body(subnet_id))

    assert refused.status_code == 403
    assert error_of(refused)["code"] == "LinkedAuthorizationFailed"
    assert error_of(refused)["message"] == (
        f"The client '{DEFAULT_PRINCIPAL_ID}' with object id '{DEFAULT_PRINCIPAL_ID}' has permission to perform action "
        f"'Microsoft.Compute/virtualMachines/write' on scope '{vm_path(arm)}'; however, it does not have permission "
        "to perform action 'Microsoft.Network/virtualNetworks/subnets/join/action' on the linked scope(s) "
        f"'{subnet_id}' or the linked scope(s) are invalid."
    )
    assert accepted.status_code == 201


def test_peering_needs_peer_action_on_the_remote_vnet(arm: ArmEmulator) -> None:
    settled_subnet(arm, name="local", prefix="10.1.0.0/16")
    settled_subnet(arm, group=OTHER_RG, name="remote", prefix="10.2.0.0/16")
    arm.grant(["Microsoft.Network/virtualNetworks/virtualNetworkPeerings/write"], arm.resource_group_scope(RG))
    body = {"properties": {"remoteVirtualNetwork": {"id": vnet_path(arm, "remote", OTHER_RG)}}}

    refused = call(arm, "PUT", f"{vnet_path(arm, 'local')}/virtualNetworkPeerings/p", body)

    assert error_of(refused)["code"] == "LinkedAuthorizationFailed"
    assert "'Microsoft.Network/virtualNetworks/peer/action'" in error_of(refused)["message"]


def test_the_app_roles_as_infra_assigns_them_allow_both_peerings_and_nothing_outside(arm: ArmEmulator) -> None:
    app_vnet = vnet_path(arm, "vnet-app", "rg-app")
    arm.seed_subnet("rg-app", "vnet-app", "functions", "10.250.0.0/24")
    settled_subnet(arm, name="cluster", prefix="10.1.0.0/16")
    arm.grant_app_roles(RG, app_vnet)

    to_app = call(
        arm,
        "PUT",
        f"{vnet_path(arm, 'cluster')}/virtualNetworkPeerings/to-app",
        {"properties": {"remoteVirtualNetwork": {"id": app_vnet}}},
    )
    to_cluster = call(
        arm,
        "PUT",
        f"{app_vnet}/virtualNetworkPeerings/to-cluster",
        {"properties": {"remoteVirtualNetwork": {"id": vnet_path(arm, "cluster")}}},
    )
    app_vnet_write = call(arm, "PUT", app_vnet, vnet_body("10.250.0.0/24"))
    elsewhere = call(arm, "PUT", nsg_path(arm, group="rg-elsewhere"), {"location": "eastus"})

    assert (to_app.status_code, to_cluster.status_code) == (201, 201)
    assert error_of(app_vnet_write)["code"] == "AuthorizationFailed"
    assert error_of(elsewhere)["code"] == "AuthorizationFailed"
    assert [role.role.name for role in arm.grant_app_roles(RG, app_vnet)] == [
        CLUSTERS_ROLE_FILE.stem,
        APP_VNET_ROLE_FILE.stem,
    ]


def test_grants_belong_to_a_principal(arm: ArmEmulator) -> None:
    arm.grant(["*"], arm.subscription_scope(), principal_id="someone-else")
    arm.grant(["*/read"], arm.subscription_scope())

    mine = call(arm, "PUT", nsg_path(arm), {"location": "eastus"})
    theirs = call(arm, "PUT", nsg_path(arm), {"location": "eastus"}, token="emulator-principal:someone-else")

    assert error_of(mine)["code"] == "AuthorizationFailed"
    assert theirs.status_code == 201


# ------------------------------------------------------------------------------------------ throttling


def test_arm_read_budget_is_reported_and_exhausted_per_principal() -> None:
    budgets = ThrottleBudgets(subscription_reads=TokenBucket(3, 1.0))
    with ArmEmulator(strict=True, request_rules=False, budgets=budgets) as arm:
        remaining = [
            call(arm, "GET", nsg_path(arm)).headers["x-ms-ratelimit-remaining-subscription-reads"] for _ in "abc"
        ]
        throttled = call(arm, "GET", nsg_path(arm))
        other_principal = call(arm, "GET", nsg_path(arm), token="emulator-principal:other")
        time.sleep(1.05)
        refilled = call(arm, "GET", nsg_path(arm))

        assert remaining == ["2", "1", "0"]
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "1"
        assert error_of(throttled)["code"] == "SubscriptionRequestsThrottled"
        assert error_of(throttled)["message"].startswith(
            f"Number of 'read' requests for subscription '{arm.subscription_id}' actor '{DEFAULT_PRINCIPAL_ID}' "
            "exceeded. Please try again after '1' seconds"
        )
        assert other_principal.status_code == 404
        assert refilled.status_code == 404


def test_arm_write_budget_has_its_own_header() -> None:
    with ArmEmulator(
        strict=True, request_rules=False, budgets=ThrottleBudgets(subscription_writes=TokenBucket(10, 1.0))
    ) as arm:
        answer = call(arm, "PUT", nsg_path(arm), {"location": "eastus"})

        assert answer.headers["x-ms-ratelimit-remaining-subscription-writes"] == "9"
        assert "x-ms-ratelimit-remaining-subscription-reads" not in answer.headers


def test_compute_put_vm_policies_are_reported_and_a_full_one_answers_429_until_its_window_ends() -> None:
    budgets = ThrottleBudgets(
        compute={"PutVM": (Window("PutVM3Min", 2, 0.6), Window("PutVM30Min", 10, 60.0))},
    )
    with ArmEmulator(strict=True, request_rules=False, long_running=False, budgets=budgets) as arm:
        subnet_id = arm.seed_subnet(RG, "vnet", "nodes", "10.1.0.0/16")
        headers = [
            call(arm, "PUT", vm_path(arm, f"vm{index}"), vm_body(subnet_id, name=f"vm{index}")).headers
            for index in range(2)
        ]
        throttled = call(arm, "PUT", vm_path(arm, "vm9"), vm_body(subnet_id, name="vm9"))
        time.sleep(0.65)
        after_window = call(arm, "PUT", vm_path(arm, "vm9"), vm_body(subnet_id, name="vm9"))

        assert [h["x-ms-ratelimit-remaining-resource"] for h in headers] == [
            "Microsoft.Compute/PutVM3Min;1,Microsoft.Compute/PutVM30Min;9",
            "Microsoft.Compute/PutVM3Min;0,Microsoft.Compute/PutVM30Min;8",
        ]
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "1"
        error = error_of(throttled)
        assert (error["code"], error["details"][0]["code"], error["details"][0]["target"]) == (
            "OperationNotAllowed",
            "TooManyRequests",
            "PutVM3Min",
        )
        assert json.loads(error["details"][0]["message"])["allowedRequestCount"] == 2
        assert after_window.status_code == 201


def test_compute_reads_are_split_into_low_and_high_cost_policies() -> None:
    with ArmEmulator(strict=True, request_rules=False) as arm:
        listed = call(arm, "GET", f"/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/virtualMachines")
        single = call(arm, "GET", vm_path(arm))

        assert listed.headers["x-ms-ratelimit-remaining-resource"].startswith("Microsoft.Compute/HighCostGet3Min;")
        assert single.headers["x-ms-ratelimit-remaining-resource"].startswith("Microsoft.Compute/LowCostGet3Min;")


def test_network_write_budget_answers_429() -> None:
    with ArmEmulator(
        strict=True, request_rules=False, budgets=ThrottleBudgets(network_writes=Window("w", 1, 30.0))
    ) as arm:
        call(arm, "PUT", nsg_path(arm, "a"), {"location": "eastus"})

        throttled = call(arm, "PUT", nsg_path(arm, "b"), {"location": "eastus"})

        assert throttled.status_code == 429
        assert int(throttled.headers["Retry-After"]) > 1


def test_throttling_off_reports_no_budget() -> None:
    with ArmEmulator(strict=True, request_rules=False, throttling=False) as arm:
        answer = call(arm, "GET", nsg_path(arm))

        assert not [name for name in answer.headers if name.lower().startswith("x-ms-ratelimit")]


# ------------------------------------------------------------------------------------------ request validation hook


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.target = status, code, message, target


def test_the_request_validator_sees_every_request_and_its_refusal_becomes_an_arm_error() -> None:
    seen: list[tuple[str, str, str | None, dict[str, Any] | None]] = []

    def validator(method: str, path: str, api_version: str | None, body: dict[str, Any] | None) -> None:
        seen.append((method, path, api_version, body))
        if body is not None and "location" not in body:
            raise Refusal(400, "LocationRequired", "The location property is required for this definition.", "location")

    with ArmEmulator(strict=True, request_rules=False, request_validator=validator) as arm:
        refused = call(arm, "PUT", nsg_path(arm), {"properties": {}})
        read = call(arm, "GET", nsg_path(arm))

        assert refused.status_code == 400
        assert error_of(refused) == {
            "code": "LocationRequired",
            "message": "The location property is required for this definition.",
            "target": "location",
        }
        assert read.status_code == 404
        assert seen == [
            ("PUT", nsg_path(arm), "2024-05-01", {"properties": {}}),
            ("GET", nsg_path(arm), "2024-05-01", None),
        ]
        assert arm.resources() == []


def test_a_validator_that_breaks_answers_500_instead_of_hanging() -> None:
    def broken(method: str, path: str, api_version: str | None, body: dict[str, Any] | None) -> None:
        raise KeyError("oops")

    with ArmEmulator(request_validator=broken, request_rules=False) as arm:
        answer = call(arm, "GET", nsg_path(arm))

        assert (answer.status_code, error_of(answer)["code"]) == (500, "RequestValidatorError")


# ------------------------------------------------------------------------------------------ defaults and what stays


def test_strict_default_follows_the_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_ENV, "1")
    assert strict_default() is True
    assert ArmEmulator().strict is True
    monkeypatch.setenv(STRICT_ENV, "0")
    assert ArmEmulator().strict is False
    assert ArmEmulator(strict=True, request_rules=False).long_running is True


def test_seeds_are_provisioned_at_once_and_faults_still_apply_in_strict_mode(arm: ArmEmulator) -> None:
    subnet_id = settled_subnet(arm)
    arm.seed_vm(RG, "seeded", subnet_id, tags={})
    arm.inject(Fault("GET", r"/networkSecurityGroups$", status=503, code="ServiceUnavailable"))
    network = NetworkManagementClient(arm.credential(), arm.subscription_id, retry_total=0, **arm.client_kwargs())

    with pytest.raises(HttpResponseError) as failed:
        list(network.network_security_groups.list(RG))

    assert {r["properties"]["provisioningState"] for r in arm.resources()} == {"Succeeded"}
    assert failed.value.status_code == 503


def test_settle_waits_for_every_operation(arm: ArmEmulator) -> None:
    network = NetworkManagementClient(arm.credential(), arm.subscription_id, **arm.client_kwargs())
    network.network_security_groups.begin_create_or_update(
        RG, "nsg", NetworkSecurityGroup(location="eastus"), polling=False
    )

    assert arm.operations_in_progress() == 1
    assert arm.settle(timeout_s=2.0)
    assert arm.resources()[0]["properties"]["provisioningState"] == "Succeeded"


def test_error_answers_are_kept_and_traced_to_a_file(
    arm: ArmEmulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))

    call(arm, "GET", nsg_path(arm))

    assert arm.error_log == [
        ("GET", nsg_path(arm), 404, "ResourceNotFound", f"The Resource '{nsg_path(arm)}' was not found.")
    ]
    (line,) = trace.read_text().splitlines()
    assert json.loads(line)["code"] == "ResourceNotFound"
    assert "test_error_answers_are_kept_and_traced_to_a_file" in json.loads(line)["test"]
