"""AzureCloudProvider through the real Azure SDK against the loopback ARM emulator, in its strict mode.

Strict mode is Azure's timing and refusals (tests/support/arm/emulator.py): a VM is `Creating` for a while after its
PUT, a network resource `Updating`, a deleted resource `Deleting`; a write referencing a resource not yet provisioned
is refused, lists are paged, and every request body is checked against Azure's rules (tests/support/arm_rules.py).
The provider starts long-running operations and never waits for them: what it sees of them is what the reconcile
shell's next tick (15 s later) lists. Tests stand for that tick with `next_tick(arm)` (the emulator settles: every
operation started has ended), and call destroy_cluster as the shell does, once a tick until it reports complete.
ARM_EMULATOR_STRICT=0 runs the file against the lenient emulator instead (operations end at once, one page).
"""

from __future__ import annotations

import base64
import gzip
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import yaml
from azure.mgmt.network.models import VirtualNetworkPeering

from autoscaler.config import ClusterConfig
from autoscaler.model import CloudState, LaunchRequest
from provisioning.azure.cloud_init import NodeBootSpec, render_cloud_config
from provisioning.azure.network import HEAD_AGENT_PORT, MANAGED_BY, address_space
from provisioning.azure.provider import AzureCloudProvider, AzureSettings, vm_name_for
from provisioning.azure.ssh import generate_ssh_keypair
from provisioning.cloud import (
    CapacityError,
    CloudError,
    DestroyReport,
    InvalidRequestError,
    NotFoundError,
    QuotaError,
    ThrottledError,
    TransientError,
)
from tests.support.arm_emulator import STRICT_ENV, ArmEmulator, Fault, FaultKind, iter_allow_rules
from tests.support.arm_rules import validate_request
from tests.support.azure_configs import HEAD_TYPE, IMAGE, azure_cluster_config
from tests.support.provider_contract import CONTRACT_CHECKS, launch_request_for

RESOURCE_GROUP = "rg-ray"
SPOT_TYPE = "ray.worker.spot"
ON_DEMAND_TYPE = "ray.worker.cpu"
FUNCTION_SUBNET_PREFIX = "10.250.0.0/24"
APP_RESOURCE_GROUP = "rg-platform"
APP_VNET = "functions-vnet"
CLUSTER_TAGS = ("ray-cluster-name", "ray-node-type", "ray-instance-id", "ray-request-id", "managed-by")
VM_TYPE = "Microsoft.Compute/virtualMachines"
VNET_TYPE = "Microsoft.Network/virtualNetworks"


# Azure's VM list by resource group answers 50 VMs a page (Azure/azure-powershell#7321 and #7292:
# "Get-AzureRmVM -ResourceGroupName is only returning 50 results", the rest behind a nextLink).
AZURE_VM_LIST_PAGE_SIZE = 50
# Destroying a cluster takes the shell a few ticks, as deletions are started and not waited on: the VMs (their NICs,
# IPs and disks with them), then what a VM kept (deleteOption Detach) once the VM is gone, then the VNet once no NIC
# holds its subnet, then the NSG once no subnet uses it. Each tick deletes what Azure accepts and reports the rest.
DESTROY_TICKS = 4


def strict() -> bool:
    """Strict unless ARM_EMULATOR_STRICT=0 asks for the lenient emulator (to compare the two)."""
    return os.environ.get(STRICT_ENV, "").strip().lower() not in ("0", "false", "no")


def emulator(**options: Any) -> ArmEmulator:
    return ArmEmulator(strict=strict(), request_validator=validate_request, **options)


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    with emulator() as started:
        yield started


def next_tick(arm: ArmEmulator) -> None:
    """What the reconcile shell's next tick (15 s later) sees: every ARM operation started so far has ended."""
    assert arm.settle(), f"{arm.operations_in_progress()} ARM operations still in progress"


def destroy_until_complete(
    provider: AzureCloudProvider, arm: ArmEmulator, cluster_name: str = "demo"
) -> list[DestroyReport]:
    """destroy_cluster once a tick, as the reconcile shell calls it, until it reports complete (within
    DESTROY_TICKS calls); then the deletions it started run to their end. Returns every call's report."""
    reports: list[DestroyReport] = []
    while len(reports) < DESTROY_TICKS:
        reports.append(provider.destroy_cluster(cluster_name))
        next_tick(arm)
        if reports[-1].complete:
            return reports
    raise AssertionError(f"destroy still incomplete after {DESTROY_TICKS} ticks: {reports[-1].notes}")


def removed_by(reports: list[DestroyReport]) -> list[str]:
    return [removed for report in reports for removed in report.removed]


@pytest.fixture
def function_subnet_id(arm: ArmEmulator) -> str:
    return arm.seed_subnet(APP_RESOURCE_GROUP, APP_VNET, "functions", FUNCTION_SUBNET_PREFIX)


def make_config(arm: ArmEmulator, cluster_name: str = "demo", **provider: Any) -> ClusterConfig:
    spot = {"vmSize": "Standard_D4s_v3", **IMAGE, "priority": "Spot", "billingProfile": {"maxPrice": 0.05}}
    return azure_cluster_config(
        arm.subscription_id,
        cluster_name=cluster_name,
        resource_group=RESOURCE_GROUP,
        max_workers=200,
        workers={
            ON_DEMAND_TYPE: {
                "resources": {"CPU": 4},
                "max_workers": 200,
                "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE}},
            },
            SPOT_TYPE: {"resources": {"CPU": 4}, "max_workers": 200, "node_config": {"azure_arm_parameters": spot}},
        },
        extra={"setup_commands": ["echo setup"]},
        **provider,
    )


def make_provider(arm: ArmEmulator, config: ClusterConfig, function_subnet_id: str = "") -> AzureCloudProvider:
    settings = AzureSettings(
        subscription_id=arm.subscription_id,
        function_subnet_id=function_subnet_id,
        base_url=arm.base_url,
        connection_verify=arm.ca_path,
        retry_backoff_factor_s=0.01,
        retry_backoff_max_s=0.05,
        delete_retry_backoff_s=0.01,
        network_poll_interval_s=0.02,
    )
    return AzureCloudProvider(config, arm.credential(), settings)


def make_request(
    config: ClusterConfig,
    instance_id: str,
    *,
    node_type: str = HEAD_TYPE,
    availability_zone: str = "",
) -> LaunchRequest:
    return launch_request_for(
        config,
        instance_id,
        node_type,
        cluster_token="secret-cluster-token",
        head_address="10.100.0.4:6379",
        control_plane_url="https://control.example",
        availability_zone=availability_zone,
    )


def vm_snapshot(arm: ArmEmulator, config: ClusterConfig, instance_id: str) -> dict[str, Any]:
    name = vm_name_for(config.cluster_name, instance_id)
    (vm,) = [vm for vm in arm.resources(VM_TYPE) if vm["name"] == name]
    return vm


# ------------------------------------------------------------------------------------------ contract


@dataclass
class AzureHarness:
    provider: AzureCloudProvider
    config: ClusterConfig
    cluster_name: str
    settle_timeout_s: float = 5.0  # an upper bound: strict mode's operations take 0.2-0.3 s, a destroy a few ticks

    def launch_request(self, *, instance_id: str, request_id: str) -> LaunchRequest:
        request = make_request(self.config, instance_id)
        return LaunchRequest(**{**request.__dict__, "request_id": request_id})


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__)
def test_azure_provider_meets_the_provider_contract(
    check: Callable[[AzureHarness], None], arm: ArmEmulator, function_subnet_id: str
) -> None:
    config = make_config(arm)
    check(AzureHarness(make_provider(arm, config, function_subnet_id), config, config.cluster_name))


# ------------------------------------------------------------------------------------------ ARM budget


@pytest.fixture
def arm_with_azure_pages() -> Iterator[ArmEmulator]:
    """Pages as Azure's VM list does (50 VMs), so that a read count is Azure's: a cluster of up to 50 VMs is
    listed in one request. (Paging itself is exercised with strict mode's small pages elsewhere.)"""
    with emulator(page_size=AZURE_VM_LIST_PAGE_SIZE) as started:
        yield started


def test_steady_state_list_is_one_read_of_the_resource_group_and_no_write(arm_with_azure_pages: ArmEmulator) -> None:
    arm = arm_with_azure_pages
    function_subnet_id = arm.seed_subnet(APP_RESOURCE_GROUP, APP_VNET, "functions", FUNCTION_SUBNET_PREFIX)
    config = make_config(arm)
    provider = make_provider(arm, config, function_subnet_id)
    provider.launch(make_request(config, "head0001"))
    for index in range(5):
        provider.launch(make_request(config, f"worker{index:04d}", node_type=SPOT_TYPE))
    next_tick(arm)
    provider.list_instances(config.cluster_name)  # the head's NIC is read once, here
    arm.reset_counts()

    instances = provider.list_instances(config.cluster_name)

    assert [instance.state for instance in instances] == [CloudState.RUNNING] * 6
    assert (arm.reads, arm.writes) == (1, 0)
    # Not the subscription-wide list: the app's role is granted on the clusters' resource group only.
    assert dict(arm.requests_by_route) == {
        ("GET", "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines"): 1
    }


def test_a_list_longer_than_a_page_follows_the_next_links() -> None:
    with emulator(page_size=3) as arm:  # strict mode's own page size, whatever the mode
        config = make_config(arm)
        provider = make_provider(arm, config)
        provider.launch(make_request(config, "head0001"))
        for index in range(6):
            provider.launch(make_request(config, f"worker{index:04d}", node_type=SPOT_TYPE))
        next_tick(arm)
        provider.list_instances(config.cluster_name)  # the head's NIC is read once, here
        arm.reset_counts()

        instances = provider.list_instances(config.cluster_name)

        assert sorted(instance.instance_id for instance in instances) == [
            "head0001",
            *(f"worker{index:04d}" for index in range(6)),
        ]
        assert (arm.reads, arm.writes) == (3, 0)  # 7 VMs: pages of 3, 3 and 1


def test_head_instance_carries_ray_address_dashboard_and_agent_urls(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(make_request(config, "head0001"))
    next_tick(arm)

    (head,) = provider.list_instances(config.cluster_name)

    assert head.is_head
    assert head.state is CloudState.RUNNING
    assert head.private_ip.startswith("10.")
    assert head.ray_address == f"{head.private_ip}:6379"
    assert head.dashboard_url == f"http://{head.private_ip}:8265"
    assert head.agent_url == f"http://{head.private_ip}:{HEAD_AGENT_PORT}"


def test_network_is_written_once_and_then_only_read_by_a_fresh_process(arm: ArmEmulator) -> None:
    config = make_config(arm)
    make_provider(arm, config).ensure_network()
    arm.reset_counts()

    make_provider(arm, config).ensure_network()

    assert (arm.reads, arm.writes) == (1, 0)


def test_given_subnet_means_no_network_is_created(arm: ArmEmulator) -> None:
    subnet_id = arm.seed_subnet(RESOURCE_GROUP, "user-vnet", "nodes", "10.20.0.0/16")
    config = make_config(arm, subnet_id=subnet_id)
    provider = make_provider(arm, config)

    provider.launch(make_request(config, "head0001"))

    assert not arm.resources("Microsoft.Network/networkSecurityGroups")
    assert [vnet["name"] for vnet in arm.resources("Microsoft.Network/virtualNetworks")] == ["user-vnet"]


# ------------------------------------------------------------------------------------------ security


def test_nsg_opens_ray_ports_only_to_cluster_and_function_subnets_and_ssh_only_to_given_cidrs(
    arm: ArmEmulator, function_subnet_id: str
) -> None:
    config = make_config(arm, ssh_allowed_cidrs=["203.0.113.0/24"])
    make_provider(arm, config, function_subnet_id).launch(make_request(config, "head0001"))

    (nsg,) = arm.resources("Microsoft.Network/networkSecurityGroups")
    (vnet,) = [v for v in arm.resources("Microsoft.Network/virtualNetworks") if v["name"] == "ray-demo-vnet"]
    cluster_subnet_prefix = vnet["properties"]["subnets"][0]["properties"]["addressPrefix"]
    for rule in iter_allow_rules(nsg):
        sources = rule.get("sourceAddressPrefixes") or [rule["sourceAddressPrefix"]]
        ports = rule.get("destinationPortRanges") or [rule["destinationPortRange"]]
        assert not {"*", "Internet", "0.0.0.0/0"} & set(sources), rule["name"]
        if "22" in ports:
            assert (sources, ports) == (["203.0.113.0/24"], ["22"])
        elif rule["priority"] < 65000:
            assert set(sources) == {cluster_subnet_prefix, FUNCTION_SUBNET_PREFIX}
            assert {"6379", "8265", "10001", "8076", str(HEAD_AGENT_PORT)} <= set(ports)
    deny = [rule for rule in nsg["properties"]["securityRules"] if rule["properties"]["access"] == "Deny"]
    assert deny
    assert deny[0]["properties"]["sourceAddressPrefix"] == "*"
    assert deny[0]["properties"]["priority"] < 65000


def test_without_ssh_cidrs_there_is_no_ssh_rule(arm: ArmEmulator) -> None:
    config = make_config(arm)
    make_provider(arm, config).launch(make_request(config, "head0001"))

    (nsg,) = arm.resources("Microsoft.Network/networkSecurityGroups")
    assert all("ssh" not in rule["name"] for rule in nsg["properties"]["securityRules"])


@pytest.mark.parametrize(
    ("use_internal_ips", "ssh_allowed_cidrs", "expect_public_ip"),
    [
        (False, ["203.0.113.0/24"], True),
        (False, [], False),
        (True, ["203.0.113.0/24"], False),
    ],
)
def test_head_gets_a_public_ip_only_when_ssh_is_allowed_and_ips_are_external(
    arm: ArmEmulator, use_internal_ips: bool, ssh_allowed_cidrs: list[str], expect_public_ip: bool
) -> None:
    config = make_config(arm, use_internal_ips=use_internal_ips, ssh_allowed_cidrs=ssh_allowed_cidrs)
    provider = make_provider(arm, config)
    provider.launch(make_request(config, "head0001"))
    provider.launch(make_request(config, "worker0001", node_type=SPOT_TYPE))

    public_ips = arm.resources("Microsoft.Network/publicIPAddresses")

    assert [ip["name"] for ip in public_ips] == ([f"{vm_name_for('demo', 'head0001')}-ip"] if expect_public_ip else [])


def test_the_bastion_path_admits_ssh_from_the_bastion_subnet_without_a_public_ip_on_the_head(
    arm: ArmEmulator, function_subnet_id: str
) -> None:
    bastion_subnet = "10.250.0.64/26"  # AzureBastionSubnet in the app's VNet, which every cluster VNet is peered with
    config = make_config(arm, use_internal_ips=True, ssh_allowed_cidrs=[bastion_subnet])
    make_provider(arm, config, function_subnet_id).launch(make_request(config, "head0001"))

    (nsg,) = arm.resources("Microsoft.Network/networkSecurityGroups")
    ssh_rules = [
        rule
        for rule in iter_allow_rules(nsg)
        if "22" in (rule.get("destinationPortRanges") or [rule.get("destinationPortRange")])
    ]
    assert [rule.get("sourceAddressPrefixes") or [rule["sourceAddressPrefix"]] for rule in ssh_rules] == [
        [bastion_subnet]
    ]
    assert arm.resources("Microsoft.Network/publicIPAddresses") == []
    assert [state for _, _, state in peering_summary(arm, app_vnet_id(arm))] == ["Connected"]


def test_no_vm_has_a_managed_identity(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(make_request(config, "head0001"))
    provider.launch(make_request(config, "worker0001", node_type=SPOT_TYPE))

    assert all("identity" not in vm for vm in arm.resources(VM_TYPE))


def test_every_resource_is_tagged_for_ownership(arm: ArmEmulator) -> None:
    config = make_config(arm, ssh_allowed_cidrs=["203.0.113.0/24"])
    provider = make_provider(arm, config)
    provider.launch(make_request(config, "head0001"))

    for type_name in (VM_TYPE, "Microsoft.Network/networkInterfaces", "Microsoft.Network/publicIPAddresses"):
        for resource in arm.resources(type_name):
            assert set(CLUSTER_TAGS) <= set(resource["tags"]), resource["id"]
            assert resource["tags"]["ray-instance-id"] == "head0001"
    for type_name in ("Microsoft.Network/virtualNetworks", "Microsoft.Network/networkSecurityGroups"):
        for resource in arm.resources(type_name):
            assert resource["tags"] == {"ray-cluster-name": "demo", "managed-by": MANAGED_BY}


# ------------------------------------------------------------------------------------------ VM model


def test_spot_worker_carries_priority_eviction_policy_and_max_price(arm: ArmEmulator) -> None:
    config = make_config(arm)
    make_provider(arm, config).launch(make_request(config, "worker0001", node_type=SPOT_TYPE))

    properties = vm_snapshot(arm, config, "worker0001")["properties"]

    assert properties["priority"] == "Spot"
    assert properties["evictionPolicy"] == "Delete"
    assert properties["billingProfile"] == {"maxPrice": 0.05}


@pytest.mark.parametrize(
    ("node_type", "priority", "expected"),
    [(SPOT_TYPE, "regular", None), (SPOT_TYPE, "", "Spot"), (ON_DEMAND_TYPE, "spot", "Spot")],
)
def test_a_launch_priority_overrides_the_node_types(
    arm: ArmEmulator, node_type: str, priority: str, expected: str | None
) -> None:
    config = make_config(arm)
    request = replace(make_request(config, "worker0001", node_type=node_type), priority=priority)
    make_provider(arm, config).launch(request)

    properties = vm_snapshot(arm, config, "worker0001")["properties"]

    assert properties.get("priority") == expected
    assert ("evictionPolicy" in properties) is (expected == "Spot")


def test_nic_os_disk_and_public_ip_are_deleted_with_the_vm(arm: ArmEmulator) -> None:
    config = make_config(arm, ssh_allowed_cidrs=["203.0.113.0/24"])
    make_provider(arm, config).launch(make_request(config, "head0001"))

    properties = vm_snapshot(arm, config, "head0001")["properties"]
    (nic,) = properties["networkProfile"]["networkInterfaceConfigurations"]
    public_ip = nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddressConfiguration"]
    assert nic["properties"]["deleteOption"] == "Delete"
    assert public_ip["properties"]["deleteOption"] == "Delete"
    assert properties["storageProfile"]["osDisk"]["deleteOption"] == "Delete"


@pytest.mark.parametrize(
    ("requested_zone", "expected_zones"),
    [("2", {"2"}), ("", {"1", "2", "3"})],
)
def test_workers_use_the_requested_zone_or_spread_over_the_configured_ones(
    arm: ArmEmulator, requested_zone: str, expected_zones: set[str]
) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    for index in range(12):
        provider.launch(
            make_request(config, f"worker{index:04d}", node_type=ON_DEMAND_TYPE, availability_zone=requested_zone)
        )

    zones = {vm["zones"][0] for vm in arm.resources(VM_TYPE)}

    assert zones == expected_zones


def test_cloud_config_keeps_the_token_in_a_root_only_file_and_starts_ray_with_token_auth() -> None:
    spec = NodeBootSpec(
        cluster_name="demo",
        instance_id="worker0001",
        node_type=SPOT_TYPE,
        is_head=False,
        resources={"CPU": 4, "accelerator": 1},
        cluster_token="secret-cluster-token",
        ssh_user="ubuntu",
        setup_commands=["echo $HOME"],
        head_address="10.100.0.4:6379",
    )
    document = yaml.safe_load(render_cloud_config(spec).removeprefix("#cloud-config\n"))
    files = {entry["path"]: entry for entry in document["write_files"]}

    holding_token = [path for path, entry in files.items() if "secret-cluster-token" in entry["content"]]
    assert holding_token == ["/etc/ray/cluster-token"]
    assert files["/etc/ray/cluster-token"]["permissions"] == "0600"
    unit = files["/etc/systemd/system/ray-node.service"]["content"]
    for line in (
        "Environment=RAY_AUTH_MODE=token",
        "EnvironmentFile=/etc/ray/node.env",  # RAY_CLOUD_INSTANCE_ID, written by bootstrap.sh
        "Environment=RAY_enable_autoscaler_v2=1",
        "LoadCredential=cluster-token:/etc/ray/cluster-token",
    ):
        assert line in unit
    start = files["/opt/ray/start-ray.sh"]["content"]
    assert "--address=10.100.0.4:6379" in start
    assert "--num-cpus=4" in start
    assert "sudo -u ubuntu -H bash -lc 'echo $HOME'" in files["/opt/ray/bootstrap.sh"]["content"]
    assert 'INSTANCE_ID="worker0001"' in files["/opt/ray/bootstrap.sh"]["content"]
    assert "secret-cluster-token" not in str(document["runcmd"])


def test_custom_data_is_base64_gzip_of_the_cloud_config(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    request = make_request(config, "worker0001", node_type=SPOT_TYPE)

    body = provider.template.body(request, "vm", provider.nodes_subnet_id())

    text = gzip.decompress(base64.b64decode(body["properties"]["osProfile"]["customData"])).decode()
    assert text.startswith("#cloud-config\n")


def test_generated_ssh_keypair_is_ed25519_openssh() -> None:
    public_key, private_key = generate_ssh_keypair()

    assert public_key.startswith("ssh-ed25519 ")
    assert private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


# ------------------------------------------------------------------------------------------ faults


@dataclass(frozen=True)
class FaultCase:
    name: str
    fault: Fault
    node_type: str
    expected: type[CloudError] | None  # None: the SDK's bounded retry absorbs it
    ttl_s: float | None = None
    retry_after_s: float | None = None


VM_PUT = r"/virtualMachines/[^/]+$"
QUOTA_MESSAGE = "Operation could not be completed as it results in exceeding approved Total Regional Cores quota."

FAULT_TABLE = [
    FaultCase(
        "sku-on-demand", Fault("PUT", VM_PUT, status=409, code="SkuNotAvailable"), ON_DEMAND_TYPE, CapacityError, 82800
    ),
    FaultCase("sku-spot", Fault("PUT", VM_PUT, status=409, code="SkuNotAvailable"), SPOT_TYPE, CapacityError, 3600),
    FaultCase("allocation", Fault("PUT", VM_PUT, status=409, code="AllocationFailed"), SPOT_TYPE, CapacityError, 3600),
    FaultCase("zonal", Fault("PUT", VM_PUT, status=409, code="ZonalAllocationFailed"), SPOT_TYPE, CapacityError, 3600),
    FaultCase(
        "overconstrained",
        Fault("PUT", VM_PUT, status=409, code="OverconstrainedAllocationRequest"),
        SPOT_TYPE,
        CapacityError,
        3600,
    ),
    FaultCase(
        "overconstrained-zonal",
        Fault("PUT", VM_PUT, status=409, code="OverconstrainedZonalAllocationRequest"),
        SPOT_TYPE,
        CapacityError,
        3600,
    ),
    FaultCase(
        "regional-quota",
        Fault("PUT", VM_PUT, status=409, code="OperationNotAllowed", message=QUOTA_MESSAGE),
        ON_DEMAND_TYPE,
        QuotaError,
        900,
    ),
    FaultCase("spot-quota", Fault("PUT", VM_PUT, status=409, code="LowPriorityQuota"), SPOT_TYPE, QuotaError, 3600),
    FaultCase(
        "spot-price",
        Fault("PUT", VM_PUT, status=409, code="SpotPriceGreaterThanProvidedMaxPrice"),
        SPOT_TYPE,
        CapacityError,
        3600,
    ),
    FaultCase(
        "max-price-invalid",
        Fault("PUT", VM_PUT, status=400, code="MaxPriceValueInvalid"),
        SPOT_TYPE,
        InvalidRequestError,
    ),
    FaultCase(
        "throttled-long",
        Fault("PUT", VM_PUT, status=429, code="OperationNotAllowed", message="TooManyRequests", retry_after_s=1200),
        SPOT_TYPE,
        ThrottledError,
        retry_after_s=1200,
    ),
    FaultCase(
        "throttled-short-is-retried",
        Fault("PUT", VM_PUT, status=429, code="TooManyRequests", retry_after_s=1),
        SPOT_TYPE,
        None,
    ),
    FaultCase(
        "locked-by-another-operation",
        Fault("PUT", VM_PUT, status=429, code="RetryableErrorDueToAnotherOperation", times=3),
        SPOT_TYPE,
        TransientError,
    ),
    FaultCase("server-error", Fault("PUT", VM_PUT, status=500, times=3), SPOT_TYPE, TransientError),
    FaultCase(
        "unavailable", Fault("PUT", VM_PUT, status=503, code="ServiceUnavailable", times=3), SPOT_TYPE, TransientError
    ),
    FaultCase("server-error-once-is-retried", Fault("PUT", VM_PUT, status=500, times=1), SPOT_TYPE, None),
]


@pytest.mark.parametrize("case", FAULT_TABLE, ids=lambda case: case.name)
def test_each_launch_fault_is_answered_as_its_error_table_row_says(arm: ArmEmulator, case: FaultCase) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    request = make_request(config, "worker0001", node_type=case.node_type)
    arm.inject(case.fault)
    started = time.monotonic()

    if case.expected is None:
        provider.launch(request)
    else:
        with pytest.raises(case.expected) as raised:
            provider.launch(request)
        error: Any = raised.value
        if case.ttl_s is not None:
            assert error.ttl_s == case.ttl_s
        if case.retry_after_s is not None:
            assert error.retry_after_s == case.retry_after_s
        next_tick(arm)
        provider.launch(request)  # the next tick retries the same request

    assert time.monotonic() - started < 5, "a fault must never hold a call for long"
    assert not arm.pending_faults()
    assert [instance.instance_id for instance in provider.list_instances(config.cluster_name)] == ["worker0001"]


def test_list_maps_not_found_and_throttling_to_typed_errors(arm: ArmEmulator) -> None:
    provider = make_provider(arm, make_config(arm))
    arm.inject(Fault("GET", r"/virtualMachines$", status=404, code="ResourceGroupNotFound"))
    with pytest.raises(InvalidRequestError):
        provider.list_instances("demo")
    arm.inject(Fault("GET", r"/virtualMachines$", status=404, code="NotFound"))
    with pytest.raises(NotFoundError):
        provider.list_instances("demo")
    arm.inject(Fault("GET", r"/virtualMachines$", status=429, code="TooManyRequests", retry_after_s=600))
    with pytest.raises(ThrottledError):
        provider.list_instances("demo")


@dataclass(frozen=True)
class AsyncFailureCase:
    code: str
    message: str
    node_type: str
    kind: str
    ttl_s: float


ASYNC_FAILURES = [
    AsyncFailureCase("ZonalAllocationFailed", "no room", SPOT_TYPE, "capacity", 3600),
    AsyncFailureCase("SkuNotAvailable", "not here", ON_DEMAND_TYPE, "capacity", 82800),
    AsyncFailureCase("SkuNotAvailable", "not here", SPOT_TYPE, "capacity", 3600),
    AsyncFailureCase("LowPriorityQuota", "spot cores", SPOT_TYPE, "quota", 3600),
    AsyncFailureCase("OperationNotAllowed", QUOTA_MESSAGE, ON_DEMAND_TYPE, "quota", 900),
    AsyncFailureCase("InvalidParameter", "bad size", ON_DEMAND_TYPE, "invalid", 0),
    AsyncFailureCase("InternalExecutionError", "try again", ON_DEMAND_TYPE, "", 0),
]


@pytest.mark.parametrize("case", ASYNC_FAILURES, ids=lambda case: f"{case.code}-{case.node_type}")
def test_asynchronous_failure_is_listed_failed_and_classified_by_the_error_table(
    arm: ArmEmulator, case: AsyncFailureCase
) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    arm.inject(Fault("PUT", VM_PUT, kind=FaultKind.ASYNC_FAILURE, code=case.code, message=case.message))
    provider.launch(make_request(config, "worker0001", node_type=case.node_type))
    next_tick(arm)

    (instance,) = provider.list_instances(config.cluster_name)

    assert instance.state is CloudState.FAILED
    assert instance.detail == f"{case.code}: {case.message}"
    assert (instance.failure_kind, instance.failure_code, instance.failure_ttl_s) == (case.kind, case.code, case.ttl_s)


def test_failed_vm_instance_view_is_read_once_then_remembered(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(make_request(config, "head0001"))
    arm.inject(Fault("PUT", VM_PUT, kind=FaultKind.ASYNC_FAILURE, code="AllocationFailed", message="no room"))
    provider.launch(make_request(config, "worker0001", node_type=SPOT_TYPE))
    next_tick(arm)
    provider.list_instances(config.cluster_name)  # the head's NIC read
    instance_views = (
        "GET",
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}/instanceView",
    )

    first = arm.requests_by_route[instance_views]
    arm.reset_counts()
    again = {instance.instance_id: instance.failure_code for instance in provider.list_instances("demo")}

    assert first == 1
    assert (arm.reads, arm.writes) == (1, 0)
    assert again == {"head0001": "", "worker0001": "AllocationFailed"}


# Azure's network provider refuses a write that references a resource still Updating, or that touches a resource
# busy with another operation; these must never fail a cluster: the launch fails as transient and the next one
# carries on from what ARM shows.
NETWORK_REFUSALS = [
    ("nsg-busy", r"/networkSecurityGroups/[^/]+$", 409, "AnotherOperationInProgress"),
    ("vnet-references-updating-nsg", r"/virtualNetworks/[^/]+$", 400, "ReferencedResourceNotProvisioned"),
    ("vnet-retryable", r"/virtualNetworks/[^/]+$", 429, "RetryableError"),
    ("peering-superseded", r"/virtualNetworkPeerings/[^/]+$", 409, "CanceledAndSupersededDueToAnotherOperation"),
    ("peering-references-updating-vnet", r"/virtualNetworkPeerings/[^/]+$", 400, "ReferencedResourceNotProvisioned"),
    ("vm-references-updating-subnet", VM_PUT, 400, "ReferencedResourceNotProvisioned"),
]


@pytest.mark.parametrize(
    ("path_pattern", "status", "code"),
    [case[1:] for case in NETWORK_REFUSALS],
    ids=[case[0] for case in NETWORK_REFUSALS],
)
def test_a_network_refusal_fails_the_launch_as_transient_and_the_next_launch_completes(
    arm: ArmEmulator, function_subnet_id: str, path_pattern: str, status: int, code: str
) -> None:
    config = make_config(arm)
    request = make_request(config, "head0001")
    # A 429 is retried by the SDK (2 retries) before it reaches the provider; other statuses are not.
    arm.inject(Fault("PUT", path_pattern, status=status, code=code, times=3 if status == 429 else 1))

    with pytest.raises(TransientError, match=code):
        make_provider(arm, config, function_subnet_id).launch(request)
    next_tick(arm)
    make_provider(arm, config, function_subnet_id).launch(request)  # the next tick, maybe in another process

    assert [instance.instance_id for instance in make_provider(arm, config).list_instances("demo")] == ["head0001"]
    assert [state for _, _, state in peering_summary(arm, app_vnet_id(arm))] == ["Connected"]


def test_network_writes_are_awaited_one_after_the_other_within_one_launch(
    arm: ArmEmulator, function_subnet_id: str
) -> None:
    config = make_config(arm)
    arm.inject(Fault("PUT", r"/networkSecurityGroups/[^/]+$", kind=FaultKind.SLOW, observations=3))
    arm.inject(Fault("PUT", r"/virtualNetworks/[^/]+$", kind=FaultKind.SLOW, observations=3))

    make_provider(arm, config, function_subnet_id).launch(make_request(config, "head0001"))

    assert not arm.pending_faults()
    assert [vm["name"] for vm in arm.resources(VM_TYPE)] == [vm_name_for("demo", "head0001")]


def test_a_network_still_updating_past_the_bound_fails_the_launch_as_transient(
    arm: ArmEmulator, function_subnet_id: str
) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config, function_subnet_id)
    provider.settings = provider.clients.settings = replace(provider.settings, network_wait_s=0.1)
    arm.inject(Fault("PUT", r"/virtualNetworks/[^/]+$", kind=FaultKind.SLOW, observations=1000))
    started = time.monotonic()

    with pytest.raises(TransientError, match="still"):
        provider.launch(make_request(config, "head0001"))

    assert time.monotonic() - started < 2
    assert arm.resources(VM_TYPE) == []


def test_slow_creation_is_listed_pending_until_it_completes(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    arm.inject(Fault("PUT", VM_PUT, kind=FaultKind.SLOW, observations=2))
    provider.launch(make_request(config, "worker0001", node_type=SPOT_TYPE))
    if arm.long_running:
        # Past the creation's own time (strict): what keeps it Creating now is the fault's two observations only.
        time.sleep(arm.vm_create_s)

    states = [provider.list_instances(config.cluster_name)[0].state for _ in range(4)]

    assert states == [CloudState.PENDING, CloudState.PENDING, CloudState.RUNNING, CloudState.RUNNING]


# The resource-group list carries no power state: a deallocated VM still shows provisioning Succeeded (Ray reports
# its node dead and the reconcile shell terminates it; see docs/decisions/arm-call-budget.md).
@pytest.mark.parametrize(("mode", "expected_states"), [("delete", []), ("deallocate", [CloudState.RUNNING])])
def test_spot_eviction_is_observed_by_list(arm: ArmEmulator, mode: str, expected_states: list[CloudState]) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(make_request(config, "worker0001", node_type=SPOT_TYPE))
    next_tick(arm)  # a spot VM is evicted once running

    arm.evict(vm_name_for("demo", "worker0001"), mode=mode)

    assert [instance.state for instance in provider.list_instances("demo")] == expected_states
    if mode == "delete":
        assert not arm.resources("Microsoft.Network/networkInterfaces")
        assert not arm.resources("Microsoft.Compute/disks")


# ------------------------------------------------------------------------------------------ peering


def app_vnet_id(arm: ArmEmulator) -> str:
    group = f"/subscriptions/{arm.subscription_id}/resourceGroups/{APP_RESOURCE_GROUP}"
    return f"{group}/providers/Microsoft.Network/virtualNetworks/{APP_VNET}"


def cluster_vnet_id(arm: ArmEmulator, cluster_name: str = "demo") -> str:
    group = f"/subscriptions/{arm.subscription_id}/resourceGroups/{RESOURCE_GROUP}"
    return f"{group}/providers/Microsoft.Network/virtualNetworks/ray-{cluster_name}-vnet"


def peering_summary(arm: ArmEmulator, vnet_id: str) -> list[tuple[str, str, str]]:
    """(name, remote VNet id, peering state) of each peering of a VNet."""
    return [
        (
            peering["name"],
            peering["properties"]["remoteVirtualNetwork"]["id"],
            peering["properties"]["peeringState"],
        )
        for peering in arm.peerings(vnet_id)
    ]


def test_cluster_vnet_is_peered_both_ways_with_the_app_vnet(arm: ArmEmulator, function_subnet_id: str) -> None:
    config = make_config(arm)

    make_provider(arm, config, function_subnet_id).launch(make_request(config, "head0001"))

    assert peering_summary(arm, cluster_vnet_id(arm)) == [("ray-demo-to-app", app_vnet_id(arm), "Connected")]
    assert peering_summary(arm, app_vnet_id(arm)) == [("app-to-ray-demo", cluster_vnet_id(arm), "Connected")]
    (peering,) = arm.peerings(cluster_vnet_id(arm))
    assert peering["properties"]["allowVirtualNetworkAccess"] is True
    assert peering["properties"]["allowForwardedTraffic"] is False


def test_peered_network_costs_a_fresh_process_one_read_and_no_write(arm: ArmEmulator, function_subnet_id: str) -> None:
    config = make_config(arm)
    make_provider(arm, config, function_subnet_id).ensure_network()
    arm.reset_counts()

    make_provider(arm, config, function_subnet_id).ensure_network()

    assert (arm.reads, arm.writes) == (1, 0)


@pytest.mark.parametrize("network_kind", ["no-function-subnet", "given-subnet"])
def test_no_peering_without_a_function_subnet_or_with_a_given_subnet(
    arm: ArmEmulator, function_subnet_id: str, network_kind: str
) -> None:
    if network_kind == "given-subnet":
        user_subnet_id = arm.seed_subnet(RESOURCE_GROUP, "user-vnet", "nodes", "10.20.0.0/16")
        config = make_config(arm, subnet_id=user_subnet_id)
        provider = make_provider(arm, config, function_subnet_id)
    else:
        config = make_config(arm)
        provider = make_provider(arm, config, "")

    provider.launch(make_request(config, "head0001"))

    assert all(vnet["properties"]["virtualNetworkPeerings"] == [] for vnet in arm.resources(VNET_TYPE))
    assert not [path for _, path, _ in arm.request_log if "virtualNetworkPeerings" in path]


def test_a_disconnected_peering_is_deleted_and_both_sides_created_again(
    arm: ArmEmulator, function_subnet_id: str
) -> None:
    config = make_config(arm)
    make_provider(arm, config, function_subnet_id).ensure_network()
    network_client = make_provider(arm, config, function_subnet_id).clients.network
    network_client.virtual_network_peerings.begin_delete(
        APP_RESOURCE_GROUP, APP_VNET, "app-to-ray-demo", polling=False
    )  # someone removes the app side
    next_tick(arm)
    provider = make_provider(arm, config, function_subnet_id)  # a fresh process: nothing remembered

    with pytest.raises(TransientError):
        provider.launch(make_request(config, "head0001"))
    next_tick(arm)
    provider.launch(make_request(config, "head0001"))  # the next tick retries

    assert peering_summary(arm, cluster_vnet_id(arm)) == [("ray-demo-to-app", app_vnet_id(arm), "Connected")]
    assert peering_summary(arm, app_vnet_id(arm)) == [("app-to-ray-demo", cluster_vnet_id(arm), "Connected")]


def test_a_cluster_whose_name_hashes_to_a_peered_range_takes_the_next_free_one(
    arm: ArmEmulator, function_subnet_id: str
) -> None:
    first, second = colliding_cluster_names()
    make_provider(arm, make_config(arm, first), function_subnet_id).ensure_network()

    make_provider(arm, make_config(arm, second), function_subnet_id).ensure_network()

    ranges = {vnet["name"]: vnet["properties"]["addressSpace"]["addressPrefixes"] for vnet in arm.resources(VNET_TYPE)}
    assert ranges[f"ray-{first}-vnet"] == [address_space(first)[0]]
    assert ranges[f"ray-{second}-vnet"] != ranges[f"ray-{first}-vnet"]
    assert [state for _, _, state in peering_summary(arm, app_vnet_id(arm))] == ["Connected", "Connected"]


def test_twelve_clusters_peer_with_the_app_without_a_range_collision() -> None:
    # Network operations end sooner than strict mode's default (each is still awaited, NSG -> VNet -> peerings, and
    # refused while in progress): this test is about address ranges over many clusters, not about timing.
    with emulator(network_update_s=0.05) as arm:
        function_subnet_id = arm.seed_subnet(APP_RESOURCE_GROUP, APP_VNET, "functions", FUNCTION_SUBNET_PREFIX)
        for index in range(12):
            make_provider(arm, make_config(arm, f"team{index}"), function_subnet_id).ensure_network()

        peerings = peering_summary(arm, app_vnet_id(arm))
        assert len(peerings) == 12
        assert {state for _, _, state in peerings} == {"Connected"}


def test_a_vnet_that_lost_the_race_for_a_range_is_readdressed_before_peering(
    arm: ArmEmulator, function_subnet_id: str
) -> None:
    first, second = colliding_cluster_names()
    # Both clusters chose their range before either was peered (created at the same moment): the second VNet
    # exists, unpeered, on the range the first one has since peered with the app.
    make_provider(arm, make_config(arm, second)).ensure_network()
    make_provider(arm, make_config(arm, first), function_subnet_id).ensure_network()

    make_provider(arm, make_config(arm, second), function_subnet_id).ensure_network()

    ranges = {vnet["name"]: vnet["properties"]["addressSpace"]["addressPrefixes"] for vnet in arm.resources(VNET_TYPE)}
    assert ranges[f"ray-{second}-vnet"] != ranges[f"ray-{first}-vnet"]
    assert [state for _, _, state in peering_summary(arm, app_vnet_id(arm))] == ["Connected", "Connected"]


def colliding_cluster_names() -> tuple[str, str]:
    """Two cluster names whose VNets would hash to the same /16 (network.address_space with nothing taken)."""
    seen: dict[str, str] = {}
    for index in range(1000):
        name = f"c{index}"
        vnet_range = address_space(name)[0]
        if vnet_range in seen:
            return seen[vnet_range], name
        seen[vnet_range] = name
    raise AssertionError("no collision among 1000 names")


# ------------------------------------------------------------------------------------------ destroy


def test_destroy_leaves_zero_resources_of_the_cluster(arm: ArmEmulator, function_subnet_id: str) -> None:
    config = make_config(arm, ssh_allowed_cidrs=["203.0.113.0/24"])
    provider = make_provider(arm, config, function_subnet_id)
    provider.launch(make_request(config, "head0001"))
    for index in range(3):
        provider.launch(make_request(config, f"worker{index:04d}", node_type=SPOT_TYPE))
    next_tick(arm)

    reports = destroy_until_complete(provider, arm)

    assert [resource["name"] for resource in arm.resources()] == [APP_VNET]
    assert any("virtualNetworks/ray-demo-vnet" in removed for removed in removed_by(reports))


def test_destroy_deletes_both_peerings_and_leaves_the_app_vnet(arm: ArmEmulator, function_subnet_id: str) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config, function_subnet_id)
    provider.launch(make_request(config, "head0001"))
    next_tick(arm)

    removed = removed_by(destroy_until_complete(provider, arm))

    assert f"{app_vnet_id(arm)}/virtualNetworkPeerings/app-to-ray-demo" in removed
    assert f"{cluster_vnet_id(arm)}/virtualNetworkPeerings/ray-demo-to-app" in removed
    assert [vnet["id"] for vnet in arm.resources(VNET_TYPE)] == [app_vnet_id(arm)]
    assert arm.peerings(app_vnet_id(arm)) == []


def test_destroy_leaves_an_app_peering_of_the_same_name_that_points_elsewhere(
    arm: ArmEmulator, function_subnet_id: str
) -> None:
    other_vnet_subnet = arm.seed_subnet("rg-other", "ray-demo-vnet", "default", "10.40.0.0/16")
    other_vnet_id = other_vnet_subnet.split("/subnets/")[0]
    provider = make_provider(arm, make_config(arm), function_subnet_id)
    provider.clients.app_network.virtual_network_peerings.begin_create_or_update(
        APP_RESOURCE_GROUP,
        APP_VNET,
        "app-to-ray-demo",
        VirtualNetworkPeering({"properties": {"remoteVirtualNetwork": {"id": other_vnet_id}}}),
        polling=False,
    )
    next_tick(arm)

    report = provider.destroy_cluster("demo")

    assert peering_summary(arm, app_vnet_id(arm)) == [("app-to-ray-demo", other_vnet_id, "Initiated")]
    assert any("left alone" in note for note in report.notes)


def seed_leaky_vm(arm: ArmEmulator, provider: AzureCloudProvider) -> None:
    """A VM of the cluster whose NIC, public IP and OS disk outlive it (deleteOption Detach, as an older version or
    Ray's ARM template made them). The NIC and public IP carry the cluster's tags; the OS disk, as Azure creates it
    from the VM PUT, carries none."""
    arm.seed_vm(
        RESOURCE_GROUP,
        "leaky-vm",
        provider.nodes_subnet_id(),
        tags={"ray-cluster-name": "demo", "managed-by": MANAGED_BY},
        with_public_ip=True,
    )


def test_destroy_removes_nics_and_public_ips_left_behind_by_detached_deletes(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.launch(make_request(config, "head0001"))
    seed_leaky_vm(arm, provider)
    next_tick(arm)

    destroy_until_complete(provider, arm)

    for type_name in (VM_TYPE, "Microsoft.Network/networkInterfaces", "Microsoft.Network/publicIPAddresses", VNET_TYPE):
        assert arm.resources(type_name) == [], type_name


def test_destroy_removes_the_disks_left_behind_by_detached_deletes() -> None:
    """Strict whatever ARM_EMULATOR_STRICT says (the defect is one of timing): deletions take longer than destroy's
    retries within one call, as a VM's deletion in Azure (a minute or more) outlasts production's retries (0.5 + 1 +
    2 s); strict mode's default deletion time (0.2 s) is outlasted only when requests are slow."""
    with ArmEmulator(strict=True, delete_s=0.5, request_validator=validate_request) as arm:
        config = make_config(arm)
        provider = make_provider(arm, config)
        provider.launch(make_request(config, "head0001"))
        seed_leaky_vm(arm, provider)
        next_tick(arm)

        destroy_until_complete(provider, arm)

        assert arm.resources() == []


def test_destroy_retries_in_use_and_reports_what_still_refuses(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    provider.ensure_network()
    in_use = Fault("DELETE", r"/virtualNetworks/", status=400, code="InUseSubnetCannotBeDeleted", times=50)
    arm.inject(in_use)

    first = provider.destroy_cluster("demo")
    in_use.times = 0
    next_tick(arm)
    destroy_until_complete(provider, arm)

    assert any("ray-demo-vnet" in remaining for remaining in first.remaining)
    assert arm.resources() == []


def test_destroy_absorbs_a_brief_in_use(arm: ArmEmulator) -> None:
    """One call absorbs InUse answers that last less than its retries: here an injected one, then (strict) those
    Azure gives while the VNet that used the NSG is still Deleting. The retries' backoff (half the emulator's
    deletion time, doubling) spans that deletion, as production's (0.5 s doubling) spans a brief one."""
    config = make_config(arm)
    provider = make_provider(arm, config)
    backoff = replace(provider.settings, delete_retry_backoff_s=arm.delete_s / 2)
    provider.settings = provider.clients.settings = backoff
    provider.ensure_network()
    arm.inject(Fault("DELETE", r"/networkSecurityGroups/", status=400, code="InUseNetworkSecurityGroupCannotBeDeleted"))

    report = provider.destroy_cluster("demo")

    assert report.complete, report.notes
    assert not arm.pending_faults()
    next_tick(arm)
    assert arm.resources() == []


def test_relaunching_an_instance_with_another_vm_model_is_an_invalid_request(arm: ArmEmulator) -> None:
    config = make_config(arm)
    provider = make_provider(arm, config)
    request = make_request(config, "worker0001", node_type=SPOT_TYPE)
    provider.launch(request)
    next_tick(arm)  # created: while it is Creating, Azure answers any other PUT 409 Conflict (a concurrent request)

    with pytest.raises(InvalidRequestError, match="PropertyChangeNotAllowed"):
        provider.launch(LaunchRequest(**{**request.__dict__, "cluster_token": "another-token"}))
