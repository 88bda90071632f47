"""Scale-set node types (VMSS Flex) through the real Azure SDK against the strict loopback ARM emulator.

The provider contract (tests/support/provider_contract.py, its pool checks), the scale set's shape (Flexible, the
cluster's subnet, no identity, deleteOption Delete, tags, the same cloud-init as a single VM), growing by one write
whatever the count, shrinking by exactly the chosen VMs in one call, Spot Priority Mix, eviction, and the destroy.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from autoscaler.config import ClusterConfig
from autoscaler.model import CloudState, LaunchRequest
from autoscaler.ports import InvalidRequestError, ThrottledError, TransientError
from provisioning.azure.provider import AzureCloudProvider
from provisioning.azure.scale_sets import scale_set_name_for
from tests.integration.test_azure_provider import make_provider
from tests.support.arm.rbac import CLUSTERS_ROLE_FILE
from tests.support.arm.throttling import BATCHED_VM_REQUESTS, ThrottleBudgets, Window
from tests.support.arm_emulator import ArmEmulator
from tests.support.arm_rules import ArmRuleViolation, validate_request
from tests.support.azure_configs import IMAGE, azure_cluster_config
from tests.support.provider_contract import POOL_CONTRACT_CHECKS, launch_request_for

RESOURCE_GROUP = "rg-ray"
POOL_TYPE = "ray.worker.pool"
MIX_TYPE = "ray.worker.mix"
SCALE_SET_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
VM_TYPE = "Microsoft.Compute/virtualMachines"


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    with ArmEmulator(strict=True, request_validator=validate_request) as started:
        yield started


def make_config(arm: ArmEmulator, cluster_name: str = "demo") -> ClusterConfig:
    worker = {"vmSize": "Standard_D4s_v3", **IMAGE}
    return azure_cluster_config(
        arm.subscription_id,
        cluster_name=cluster_name,
        resource_group=RESOURCE_GROUP,
        max_workers=2000,
        workers={
            POOL_TYPE: {
                "resources": {"CPU": 4},
                "max_workers": 1000,
                "node_config": {"azure_arm_parameters": worker, "azure_scale_set": {}},
            },
            MIX_TYPE: {
                "resources": {"CPU": 4},
                "max_workers": 1000,
                "node_config": {
                    "azure_arm_parameters": {**worker, "priority": "Spot", "evictionPolicy": "Delete"},
                    "azure_scale_set": {
                        "platform_fault_domain_count": 1,
                        "priority_mix": {"base_regular_count": 1, "regular_percentage_above_base": 50},
                    },
                },
            },
        },
        extra={"setup_commands": ["echo setup"]},
    )


def pool_request(
    config: ClusterConfig, instance_id: str, pool_target: int, node_type: str = POOL_TYPE
) -> LaunchRequest:
    return launch_request_for(
        config,
        instance_id,
        node_type,
        cluster_token="secret-cluster-token",
        head_address="10.100.0.4:6379",
        pool_target=pool_target,
    )


def next_tick(arm: ArmEmulator) -> None:
    assert arm.settle(), f"{arm.operations_in_progress()} ARM operations still in progress"


def scale_set(arm: ArmEmulator, config: ClusterConfig, node_type: str = POOL_TYPE) -> dict[str, Any]:
    name = scale_set_name_for(config.cluster_name, node_type)
    (found,) = [item for item in arm.resources(SCALE_SET_TYPE) if item["name"] == name]
    return found


# ------------------------------------------------------------------------------------------ contract


@dataclass
class PoolHarness:
    provider: AzureCloudProvider
    config: ClusterConfig
    cluster_name: str
    settle_timeout_s: float = 5.0

    def launch_request(self, *, instance_id: str, request_id: str, pool_target: int = 1) -> LaunchRequest:
        return replace(pool_request(self.config, instance_id, pool_target), request_id=request_id)


@pytest.mark.parametrize("check", POOL_CONTRACT_CHECKS, ids=lambda check: check.__name__)
def test_a_scale_set_node_type_meets_the_provider_contract(
    check: Callable[[PoolHarness], None], arm: ArmEmulator
) -> None:
    config = make_config(arm)
    check(PoolHarness(make_provider(arm, config), config, config.cluster_name))


# ------------------------------------------------------------------------------------------ shape


def test_the_scale_set_is_flexible_in_the_cluster_subnet_without_identity_deleting_nic_and_disk(
    arm: ArmEmulator,
) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "w1", 1))
    body = scale_set(arm, config)
    properties = body["properties"]
    profile = properties["virtualMachineProfile"]
    (nic,) = profile["networkProfile"]["networkInterfaceConfigurations"]
    assert properties["orchestrationMode"] == "Flexible"
    assert "identity" not in body
    assert body["zones"] == ["1", "2", "3"]
    assert nic["properties"]["deleteOption"] == "Delete"
    assert profile["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    subnet_id = nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"]
    assert subnet_id == provider.nodes_subnet_id()
    assert body["tags"]["ray-cluster-name"] == "demo"
    assert body["tags"]["managed-by"] == "ray-serverless-autoscaler"
    assert body["tags"]["ray-node-type"] == POOL_TYPE


def test_the_scale_set_boots_its_vms_with_the_same_cloud_init_as_a_single_worker(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    request = pool_request(config, "w1", 1)
    provider.launch(request)
    name = scale_set_name_for(config.cluster_name, POOL_TYPE)
    body = provider.batches.scale_sets.body(request, provider.nodes_subnet_id(), 1)
    worker_of_the_set = replace(request, instance_id=name, request_id="")  # the set's, not one launch's
    single = provider.template.body(worker_of_the_set, name, provider.nodes_subnet_id())
    custom_data = body["properties"]["virtualMachineProfile"]["osProfile"]["customData"]
    assert custom_data == single["properties"]["osProfile"]["customData"]
    cloud_config = gzip.decompress(base64.b64decode(custom_data))
    assert b"/etc/ray/cluster-token" in cloud_config
    assert request.instance_id.encode() not in cloud_config  # no launch's id: every VM of the set boots from it
    assert b"@metadata" in cloud_config  # each VM takes its own name from the instance metadata at boot


def test_the_scale_set_model_is_the_same_from_one_capacity_write_to_the_next(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    subnet_id = provider.ensure_network()
    first = provider.batches.scale_sets.body(pool_request(config, "w1", 1, node_type=MIX_TYPE), subnet_id, 1)
    regular_launch = replace(pool_request(config, "w9", 9, node_type=MIX_TYPE), priority="regular")
    later = provider.batches.scale_sets.body(regular_launch, subnet_id, 9)
    assert first["properties"] == later["properties"]  # a launch's own priority does not change the set
    assert later["properties"]["virtualMachineProfile"]["priority"] == "Spot"


# ------------------------------------------------------------------------------------------ growing and shrinking


AZURE_VM_LIST_PAGE_SIZE = 50  # Azure's page of the resource-group VM list (test_azure_provider.py)


def test_growing_by_five_hundred_is_one_write_and_the_vms_appear_over_time() -> None:
    with ArmEmulator(strict=True, page_size=AZURE_VM_LIST_PAGE_SIZE) as arm:
        grow_by_five_hundred(arm)


def grow_by_five_hundred(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "w0", 1))  # the network and the set exist
    next_tick(arm)
    arm.reset_counts()
    outcomes = provider.launch_many([pool_request(config, f"w{index}", index) for index in range(2, 502)])
    assert outcomes == [None] * 500
    assert arm.writes == 1
    assert scale_set(arm, config)["sku"]["capacity"] == 501
    early = [vm for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE]
    assert len(early) < 501  # appearing over time, not at once
    assert arm.settle(timeout_s=30)
    listed = [vm for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE]
    assert len(listed) == 501
    assert len({vm.instance_id for vm in listed}) == 501
    assert {vm.availability_zone for vm in listed} == {"1", "2", "3"}


def test_the_same_target_again_creates_nothing(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "w1", 3))
    next_tick(arm)
    provider.launch(pool_request(config, "w1", 3))
    next_tick(arm)
    assert len([vm for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE]) == 3


def test_shrinking_deletes_exactly_the_chosen_vms_in_one_call_and_lowers_the_capacity(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "w1", 6))
    next_tick(arm)
    vms = sorted(vm.instance_id for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE)
    chosen, kept = vms[1:4], vms[:1] + vms[4:]
    arm.reset_counts()
    assert provider.terminate_many("demo", chosen) == [None, None, None]
    assert arm.writes == 1
    assert [path for method, path, _ in arm.request_log if method == "POST"] == [
        f"/subscriptions/{arm.subscription_id}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/"
        f"virtualMachineScaleSets/{scale_set_name_for('demo', POOL_TYPE)}/delete"
    ]
    next_tick(arm)
    assert sorted(vm.instance_id for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE) == kept
    assert scale_set(arm, config)["sku"]["capacity"] == 3


def test_a_vm_of_another_set_is_never_listed_as_the_clusters(arm: ArmEmulator) -> None:
    config = make_config(arm)
    other = make_config(arm, cluster_name="other")
    make_provider(arm, other).launch(pool_request(other, "x1", 2))
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "w1", 1))
    next_tick(arm)
    assert len([vm for vm in provider.list_instances("demo") if vm.pool]) == 1


def test_spot_priority_mix_makes_the_base_and_the_share_above_it_regular(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "m1", 5, node_type=MIX_TYPE))
    next_tick(arm)
    priorities = sorted(vm.priority for vm in provider.list_instances("demo") if vm.pool == MIX_TYPE)
    # base 1 regular, then 50 % of the 4 above it: 1 + 2 regular, 2 spot
    assert priorities == ["regular", "regular", "regular", "spot", "spot"]
    policy = scale_set(arm, config, MIX_TYPE)["properties"]["priorityMixPolicy"]
    assert policy == {"baseRegularPriorityCount": 1, "regularPriorityPercentageAboveBase": 50}


def test_an_evicted_vm_leaves_the_list_and_a_new_target_replaces_it(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "m1", 5, node_type=MIX_TYPE))
    next_tick(arm)
    spot = next(vm for vm in provider.list_instances("demo") if vm.pool == MIX_TYPE and vm.priority == "spot")
    arm.evict(spot.instance_id, mode="delete")
    after = [vm for vm in provider.list_instances("demo") if vm.pool == MIX_TYPE]
    assert spot.instance_id not in {vm.instance_id for vm in after}
    assert scale_set(arm, config, MIX_TYPE)["sku"]["capacity"] == 4
    provider.launch(pool_request(config, "m6", 5, node_type=MIX_TYPE))  # the replacement's record: target 5 again
    next_tick(arm)
    replaced = [vm for vm in provider.list_instances("demo") if vm.pool == MIX_TYPE]
    assert len(replaced) == 5
    assert all(vm.state is CloudState.RUNNING for vm in replaced)


def test_destroy_removes_the_scale_set_and_everything_in_it(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "w1", 3))
    next_tick(arm)
    for _ in range(6):
        report = provider.destroy_cluster("demo")
        next_tick(arm)
        if report.complete:
            break
    assert report.complete, report.remaining
    left = [resource["id"] for resource in arm.resources() if "demo" in resource["id"].lower()]
    assert left == []


# ------------------------------------------------------------------------------------------ what Azure refuses


def flexible_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "location": "eastus",
        "sku": {"name": "Standard_D4s_v3", "capacity": 1},
        "properties": {
            "orchestrationMode": "Flexible",
            "platformFaultDomainCount": 1,
            "virtualMachineProfile": {
                "networkProfile": {
                    "networkApiVersion": "2020-11-01",
                    "networkInterfaceConfigurations": [
                        {"name": "nic", "properties": {"ipConfigurations": [{"name": "ip"}]}}
                    ],
                },
                "priority": "Spot",
            },
        },
    }
    for path, value in changes.items():
        target = body
        *parents, last = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return body


@pytest.mark.parametrize(
    ("changes", "code", "target"),
    [
        ({"properties__platformFaultDomainCount": None}, "InvalidParameter", "platformFaultDomainCount"),
        (
            {"properties__virtualMachineProfile__networkProfile__networkApiVersion": None},
            "NetworkApiVersionMustBeSpecifiedWithNetworkInterfaceConfigurations",
            None,
        ),
        (
            {"properties__priorityMixPolicy": {"regularPriorityPercentageAboveBase": 101}},
            "InvalidParameter",
            "priorityMixPolicy.regularPriorityPercentageAboveBase",
        ),
        (
            {
                "properties__priorityMixPolicy": {"baseRegularPriorityCount": 1},
                "properties__virtualMachineProfile__priority": "Regular",
            },
            "InvalidParameter",
            "priorityMixPolicy",
        ),
        ({"sku__capacity": -1}, "InvalidParameter", "sku.capacity"),
        ({"properties__virtualMachineProfile__bogus": 1}, "BadRequest", None),
    ],
)
def test_azure_refuses_a_scale_set_body_it_would_refuse(changes: dict[str, Any], code: str, target: str | None) -> None:
    path = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool"
    with pytest.raises(ArmRuleViolation) as refused:
        validate_request("PUT", path, "2026-04-01", flexible_body(**changes))
    assert refused.value.code == code
    assert refused.value.target == target


def test_azure_accepts_a_flexible_spot_set_with_a_priority_mix() -> None:
    path = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool"
    body = flexible_body(
        properties__priorityMixPolicy={"baseRegularPriorityCount": 1, "regularPriorityPercentageAboveBase": 50}
    )
    validate_request("PUT", path, "2026-04-01", body)


def test_delete_instances_of_a_vm_not_in_the_set_is_refused_and_deletes_nothing(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "w1", 2))
    next_tick(arm)
    (vm, _) = [vm for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE]
    name = scale_set_name_for("demo", POOL_TYPE)
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as refused:
        provider.clients.compute.virtual_machine_scale_sets.begin_delete_instances(
            RESOURCE_GROUP, name, {"instanceIds": [vm.instance_id, f"{name}_00000000"]}, polling=False
        )
    assert refused.value.status_code == 400
    assert len([vm for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE]) == 2


# ------------------------------------------------------------------------------------------ Compute's budgets


def test_a_capacity_write_is_charged_one_count_per_vm_and_refused_whole_when_the_batch_budget_is_short() -> None:
    defaults = ThrottleBudgets()
    batched = (Window("VMScaleSetBatchedVMRequests5Min", 10, 300.0),)
    budgets = replace(defaults, compute={**defaults.compute, BATCHED_VM_REQUESTS: batched})
    with ArmEmulator(strict=True, budgets=budgets) as arm:
        config = make_config(arm)
        provider = make_provider(arm, config)
        provider.launch(pool_request(config, "w1", 4))
        headers = provider.clients.budget.remaining("VMScaleSetBatchedVMRequests")
        assert headers == 6  # 4 VMs of 10
        next_tick(arm)
        (outcome,) = provider.launch_many([pool_request(config, "w9", 12)])  # 8 more: only 6 left
        assert isinstance(outcome, ThrottledError)
        assert scale_set(arm, config)["sku"]["capacity"] == 4  # nothing changed
        assert any(code == "OperationNotAllowed" for _, _, status, code, _ in arm.error_log if status == 429)


def test_a_capacity_write_during_the_sets_scale_out_is_refused_as_transient(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(pool_request(config, "w1", 3))
    (outcome,) = provider.launch_many([pool_request(config, "w4", 4)])  # the scale-out to 3 still runs
    assert isinstance(outcome, TransientError)
    next_tick(arm)
    assert provider.launch_many([pool_request(config, "w4", 4)]) == [None]


# ------------------------------------------------------------------------------------------ rights


SCALE_SET_ACTIONS = (
    "Microsoft.Compute/virtualMachineScaleSets/read",
    "Microsoft.Compute/virtualMachineScaleSets/write",
    "Microsoft.Compute/virtualMachineScaleSets/delete",
    "Microsoft.Compute/virtualMachineScaleSets/delete/action",
)


def test_the_clusters_role_needs_the_scale_set_actions_to_run_a_scale_set_node_type(arm: ArmEmulator) -> None:
    """What docs/decisions/scale-sets.md ("Rights") says: without the scale-set actions the capacity write is refused;
    with them (as the infra's role grants them), the whole life of a set goes through."""
    group = arm.resource_group_scope(RESOURCE_GROUP)
    granted = json.loads(CLUSTERS_ROLE_FILE.read_text())
    assert set(SCALE_SET_ACTIONS) <= set(granted)  # the infra's role grants them
    role = [action for action in granted if action not in SCALE_SET_ACTIONS]
    arm.grant(role, group)
    config = make_config(arm)
    provider = make_provider(arm, config)
    (refused,) = provider.launch_many([pool_request(config, "w1", 1)])
    assert isinstance(refused, InvalidRequestError)
    assert "AuthorizationFailed" in str(refused)
    arm.grant([*role, *SCALE_SET_ACTIONS], group)
    assert provider.launch_many([pool_request(config, "w1", 2)]) == [None]
    next_tick(arm)
    (vm, _) = [vm for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE]
    assert provider.terminate_many("demo", [vm.instance_id]) == [None]
    next_tick(arm)
    for _ in range(6):
        report = provider.destroy_cluster("demo")
        next_tick(arm)
        if report.complete:
            break
    assert report.complete, report.remaining


# ------------------------------------------------------------------------------------------ the emulator's own rules


def test_a_patch_of_the_capacity_scales_the_set_and_the_orchestration_mode_cannot_change(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    request = pool_request(config, "w1", 1)
    provider.launch(request)
    next_tick(arm)
    name = scale_set_name_for("demo", POOL_TYPE)
    compute = provider.clients.compute
    update = provider.clients.compute_models.VirtualMachineScaleSetUpdate({"sku": {"capacity": 3}})
    compute.virtual_machine_scale_sets.begin_update(RESOURCE_GROUP, name, update, polling=False)
    next_tick(arm)
    assert len([vm for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE]) == 3
    body = provider.batches.scale_sets.body(request, provider.nodes_subnet_id(), 3)
    body["properties"]["orchestrationMode"] = "Uniform"
    from azure.core.exceptions import HttpResponseError

    model = provider.clients.compute_models.VirtualMachineScaleSet(body)
    with pytest.raises(HttpResponseError) as refused:
        compute.virtual_machine_scale_sets.begin_create_or_update(RESOURCE_GROUP, name, model, polling=False)
    assert refused.value.status_code == 409
    assert scale_set(arm, config)["properties"]["orchestrationMode"] == "Flexible"


def test_a_steady_state_list_of_a_scale_set_cluster_is_one_read_after_the_sets_first_sighting() -> None:
    with ArmEmulator(strict=True, page_size=AZURE_VM_LIST_PAGE_SIZE) as arm:
        config = make_config(arm)
        provider = make_provider(arm, config)
        provider.launch(pool_request(config, "w1", 10))
        next_tick(arm)
        arm.reset_counts()
        provider.list_instances("demo")  # the set's VMs are seen: its tags are read once
        assert arm.reads == 2
        arm.reset_counts()
        assert len([vm for vm in provider.list_instances("demo") if vm.pool == POOL_TYPE]) == 10
        assert (arm.reads, arm.writes) == (1, 0)
