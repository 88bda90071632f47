"""ARM requests per steady-state tick: our AzureCloudProvider versus Ray's own Azure NodeProvider.

Both run against the loopback ARM emulator (tests/support/arm_emulator.py) with clusters of 1, 10 and 100 workers.
Ours: `list_instances` (target: 1 read, 0 writes, whatever the size: ONE `virtual_machines.list` of the clusters'
resource group), with the cluster VNet peered with an app VNet as in a deployment. Ray's: `non_terminated_nodes`,
which lists VMs and then reads each VM's instance view, NIC and public IP (the facts file measured 301 at 100 VMs).

Nothing may leave loopback: an audit hook refuses any socket connection to another address, and Ray's cloud
probe (`get_cloud_from_metadata_requests`, which calls 169.254.169.254) and its DefaultAzureCredential are
replaced before its provider is constructed.

The emulator runs strict (timed operations, references to resources still updating refused, request bodies held
to Azure's REST definitions, throttling budgets) and pages the VM list at 50 VMs, as Compute does for a resource
group's VMs (a list of 101 VMs is one `list` call of 3 pages).
Run: `.venv/bin/python bench/arm_calls.py`. The last line is JSON:
{"list_calls_per_tick": {"1": n, ...}, "reads_per_tick": {"1": r, "10": r, "100": r}, "writes_per_tick": w,
 "ray_reads": {"1": r, "10": r, "100": r}}
"""

from __future__ import annotations

import json
import secrets
import sys
import types
from functools import partial
from typing import Any

from autoscaler.config import ClusterConfig, parse_cluster_config
from autoscaler.model import LaunchRequest
from provisioning.azure.provider import AzureCloudProvider, AzureSettings
from tests.support.arm_emulator import ArmEmulator, StaticTestCredential
from tests.support.arm_rules import validate_request
from tests.support.provider_contract import launch_request_for

CLUSTER_SIZES = (1, 10, 100)
# Compute answers a resource group's VM list in pages of 50 VMs (with a nextLink beyond), see e.g. the paging fixes
# Azure/azure-powershell #7292 and azure-sdk-for-node #1785.
VM_LIST_PAGE_SIZE = 50
RESOURCE_GROUP = "rg-bench"
RESOURCE_GROUP_LIST = ("GET", "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
IMAGE = {"imagePublisher": "Canonical", "imageOffer": "ubuntu-24_04-lts", "imageSku": "server"}


def refuse_non_loopback_connections(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: any socket connection to an address other than loopback is an error."""
    if event != "socket.connect":
        return
    address = args[1]
    if isinstance(address, tuple) and address and str(address[0]) not in LOOPBACK_HOSTS:
        raise RuntimeError(f"benchmark tried to connect to {address[0]}: only loopback is allowed")


def bench_config(cluster_name: str, subscription_id: str) -> ClusterConfig:
    document = {
        "cluster_name": cluster_name,
        "max_workers": 100,
        "provider": {
            "type": "azure",
            "location": "eastus",
            "resource_group": RESOURCE_GROUP,
            "subscription_id": subscription_id,
        },
        "available_node_types": {
            "head": {
                "resources": {"CPU": 2},
                "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D2s_v3", **IMAGE}},
            },
            "worker": {
                "resources": {"CPU": 4},
                "max_workers": 100,
                "node_config": {
                    "azure_arm_parameters": {
                        "vmSize": "Standard_D4s_v3",
                        **IMAGE,
                        "priority": "Spot",
                        "billingProfile": {"maxPrice": -1},
                    }
                },
            },
        },
        "head_node_type": "head",
    }
    return parse_cluster_config(document).config


def launch_request(config: ClusterConfig, instance_id: str, node_type: str) -> LaunchRequest:
    return launch_request_for(
        config, instance_id, node_type, cluster_token=secrets.token_urlsafe(32), head_address="10.100.0.4:6379"
    )


def our_tick(arm: ArmEmulator, workers: int, function_subnet_id: str) -> tuple[int, int]:
    """(reads, writes) of one steady-state `list_instances` of a cluster with a head and `workers` workers."""
    config = bench_config(f"ours{workers}", arm.subscription_id)
    settings = AzureSettings(
        subscription_id=arm.subscription_id,
        function_subnet_id=function_subnet_id,
        base_url=arm.base_url,
        connection_verify=arm.ca_path,
    )
    provider = AzureCloudProvider(config, arm.credential(), settings)
    provider.launch(launch_request(config, "head", "head"))
    for index in range(workers):
        provider.launch(launch_request(config, f"w{index:04d}", "worker"))
    if not arm.settle(timeout_s=30.0):
        raise RuntimeError("the emulator's VM creations did not finish")
    provider.list_instances(config.cluster_name)  # first sight of the head: its NIC is read once
    arm.reset_counts()
    instances = provider.list_instances(config.cluster_name)
    if len(instances) != workers + 1:
        raise RuntimeError(f"expected {workers + 1} instances, listed {len(instances)}")
    reads, writes = arm.reads, arm.writes
    pages = -(-(workers + 1) // VM_LIST_PAGE_SIZE)
    if dict(arm.requests_by_route) != {RESOURCE_GROUP_LIST: pages}:
        raise RuntimeError(f"expected one resource-group VM list ({pages} pages), saw {dict(arm.requests_by_route)}")
    provider.destroy_cluster(config.cluster_name)
    return reads, writes


def ray_provider_class(arm: ArmEmulator) -> Any:
    """Ray's AzureNodeProvider, with its cloud probe, credential and clients pointed at the emulator."""
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource import ResourceManagementClient

    provide_cli_profile_module()
    from ray.autoscaler._private._azure import node_provider

    # Ray's module, as a plain namespace: its names are rebound to loopback equivalents.
    ray_module: Any = node_provider
    # Replaced before any provider is constructed: the probe would call 169.254.169.254.
    ray_module.get_cloud_from_metadata_requests = lambda: "unknown"
    ray_module.DefaultAzureCredential = lambda **_: StaticTestCredential()
    ray_module.ComputeManagementClient = partial(
        ComputeManagementClient, base_url=arm.base_url, connection_verify=arm.ca_path
    )
    ray_module.NetworkManagementClient = partial(
        NetworkManagementClient, base_url=arm.base_url, connection_verify=arm.ca_path
    )
    ray_module.ResourceManagementClient = partial(
        ResourceManagementClient, base_url=arm.base_url, connection_verify=arm.ca_path
    )
    return ray_module.AzureNodeProvider


def provide_cli_profile_module() -> None:
    """Ray imports `azure.common.credentials.get_cli_profile`, which needs the retired msrestazure package.
    It is only called when no subscription id is configured (never here), so a module that refuses the call
    stands in for it when msrestazure is absent."""
    try:
        import azure.common.credentials  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("azure.common.credentials")

        def get_cli_profile() -> Any:
            raise RuntimeError("the Azure CLI profile is not available in this benchmark")

        stand_in.get_cli_profile = get_cli_profile  # type: ignore[attr-defined]
        sys.modules["azure.common.credentials"] = stand_in


def ray_tick(arm: ArmEmulator, provider_class: Any, workers: int) -> int:
    """Reads of one `non_terminated_nodes` of Ray's provider over a cluster deployed as Ray deploys it."""
    cluster_name = f"ray{workers}"
    # Ray lists every VM of its resource group and reads each one, whichever cluster it belongs to:
    # one resource group per size keeps the sizes apart.
    resource_group = f"{RESOURCE_GROUP}-ray-{workers}"
    subnet_id = arm.seed_subnet(resource_group, f"ray-vnet-{workers}", "default", f"10.{workers % 250}.0.0/16")
    for index in range(workers + 1):
        kind = "head" if index == 0 else "worker"
        tags = {"ray-cluster-name": cluster_name, "ray-node-type": kind, "ray-user-node-type": kind}
        arm.seed_vm(resource_group, f"ray-{cluster_name}-{kind}-{index:04d}", subnet_id, tags=tags, with_public_ip=True)
    provider = provider_class(
        {"resource_group": resource_group, "subscription_id": arm.subscription_id, "use_internal_ips": False},
        cluster_name,
    )
    arm.reset_counts()
    nodes = provider.non_terminated_nodes({})
    if len(nodes) != workers + 1:
        raise RuntimeError(f"Ray listed {len(nodes)} nodes, expected {workers + 1}")
    return arm.reads


def main() -> None:
    sys.addaudithook(refuse_non_loopback_connections)
    reads_per_tick: dict[str, int] = {}
    ray_reads: dict[str, int] = {}
    writes_per_tick = 0
    with ArmEmulator(strict=True, request_validator=validate_request, page_size=VM_LIST_PAGE_SIZE) as arm:
        function_subnet_id = arm.seed_subnet("rg-bench-app", "vnet-app", "snet-function-app", "10.250.0.0/26")
        for workers in CLUSTER_SIZES:
            reads, writes = our_tick(arm, workers, function_subnet_id)
            reads_per_tick[str(workers)] = reads
            writes_per_tick = max(writes_per_tick, writes)
            print(f"ours: head + {workers:>3} workers -> {reads} read(s), {writes} write(s) per tick", flush=True)
        provider_class = ray_provider_class(arm)
        for workers in CLUSTER_SIZES:
            ray_reads[str(workers)] = ray_tick(arm, provider_class, workers)
            print(f"ray:  head + {workers:>3} workers -> {ray_reads[str(workers)]} read(s) per tick", flush=True)
    list_calls = dict.fromkeys(reads_per_tick, 1)  # our_tick checks that every read is a page of that one list
    print(
        json.dumps(
            {
                "list_calls_per_tick": list_calls,
                "reads_per_tick": reads_per_tick,
                "writes_per_tick": writes_per_tick,
                "ray_reads": ray_reads,
                "vm_list_page_size": VM_LIST_PAGE_SIZE,
            }
        )
    )


if __name__ == "__main__":
    main()
