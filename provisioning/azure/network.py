"""The per-cluster network, as pure values: names, address ranges, Ray's ports and the NSG rules.

Ray's ports are pinned (see `ray_start_arguments` in cloud_init.py) so that the NSG can name them: Ray would
otherwise pick random ports for the node manager, agents and metrics, and only "allow everything" would work.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MANAGED_BY = "ray-serverless-autoscaler"

TAG_CLUSTER = "ray-cluster-name"
TAG_NODE_TYPE = "ray-node-type"
TAG_INSTANCE = "ray-instance-id"
TAG_REQUEST = "ray-request-id"
TAG_MANAGED_BY = "managed-by"

GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_SERVER_PORT = 10001
OBJECT_MANAGER_PORT = 8076
NODE_MANAGER_PORT = 8077
DASHBOARD_AGENT_GRPC_PORT = 8078
RUNTIME_ENV_AGENT_PORT = 8079
METRICS_EXPORT_PORT = 8080
DASHBOARD_AGENT_HTTP_PORT = 52365
HEAD_AGENT_PORT = 8270
MIN_WORKER_PORT = 10002
MAX_WORKER_PORT = 19999

RAY_PORT_RANGES: tuple[str, ...] = (
    str(GCS_PORT),
    str(DASHBOARD_PORT),
    str(CLIENT_SERVER_PORT),
    str(OBJECT_MANAGER_PORT),
    str(NODE_MANAGER_PORT),
    str(DASHBOARD_AGENT_GRPC_PORT),
    str(RUNTIME_ENV_AGENT_PORT),
    str(METRICS_EXPORT_PORT),
    str(DASHBOARD_AGENT_HTTP_PORT),
    str(HEAD_AGENT_PORT),
    f"{MIN_WORKER_PORT}-{MAX_WORKER_PORT}",
)

NODES_SUBNET_NAME = "ray-nodes"
# Custom NSG rules live in 100..4096; ours deny everything else at the bottom of that range, so Azure's
# AllowVnetInBound (65000), which also admits peered and on-premises networks, never opens Ray's ports.
RAY_RULE_PRIORITY = 100
SSH_RULE_PRIORITY = 200
DENY_ALL_PRIORITY = 4096


def network_tags(cluster_name: str) -> dict[str, str]:
    return {TAG_CLUSTER: cluster_name, TAG_MANAGED_BY: MANAGED_BY}


def is_ours(resource: Mapping[str, Any], cluster_name: str, resource_group: str) -> bool:
    """Whether an ARM resource (as JSON) belongs to the cluster: by its tags, and in the clusters' resource group.
    Ownership is never decided by names."""
    tags = resource.get("tags") or {}
    if tags.get(TAG_CLUSTER) != cluster_name or tags.get(TAG_MANAGED_BY) != MANAGED_BY:
        return False
    segments = str(resource.get("id", "")).split("/")
    return len(segments) > 4 and segments[4].lower() == resource_group.lower()


def vnet_name(cluster_name: str) -> str:
    return f"ray-{cluster_name}-vnet"


def nsg_name(cluster_name: str) -> str:
    return f"ray-{cluster_name}-nsg"


def cluster_to_app_peering_name(cluster_name: str) -> str:
    """The peering in the cluster's VNet towards the app's VNet (peerings carry no tags: ours by name)."""
    return f"ray-{cluster_name}-to-app"


def app_to_cluster_peering_name(cluster_name: str) -> str:
    """The peering in the app's VNet towards the cluster's VNet."""
    return f"app-to-ray-{cluster_name}"


@dataclass(frozen=True)
class SubnetReference:
    """A subnet's resource id, in parts: `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Network/
    virtualNetworks/{v}/subnets/{n}`."""

    subscription_id: str
    resource_group: str
    vnet_name: str
    subnet_name: str

    @classmethod
    def parse(cls, subnet_id: str) -> SubnetReference:
        """Raises ValueError when `subnet_id` is not a subnet's resource id."""
        parts = subnet_id.strip("/").split("/")
        expected = {
            0: "subscriptions",
            2: "resourcegroups",
            4: "providers",
            5: "microsoft.network",
            6: "virtualnetworks",
        }
        if (
            len(parts) != 10
            or parts[8].lower() != "subnets"
            or any(parts[index].lower() != word for index, word in expected.items())
        ):
            raise ValueError(f"not a subnet resource id: {subnet_id}")
        return cls(parts[1], parts[3], parts[7], parts[9])

    @property
    def vnet_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/virtualNetworks/{self.vnet_name}"
        )


# Cluster VNets take one /16 each out of 10.0.0.0/8 (256 ranges), whatever the user's or the app's own ranges leave
# free. Address space is only private to the VNet and its peers, so the ranges to avoid are the app VNet's own and
# every range already peered with it (Azure refuses a peering whose range overlaps one of them:
# VnetAddressSpaceOverlapsWithAlreadyPeeredVnet).
CLUSTER_RANGE_POOL = ipaddress.IPv4Network("10.0.0.0/8")
CLUSTER_RANGE_PREFIX_LENGTH = 16


def address_space(cluster_name: str, taken: Iterable[str] = ()) -> tuple[str, str]:
    """(VNet range, nodes subnet range) for a new cluster VNet: the first free /16 of 10.0.0.0/8, starting at a
    point derived from the name (so clusters spread out and a retried creation picks the same range while nothing
    else changed), skipping every range in `taken` (CIDRs). Raises ValueError when all 256 are taken."""
    taken_networks = [ipaddress.ip_network(cidr, strict=False) for cidr in taken]
    candidates = list(CLUSTER_RANGE_POOL.subnets(new_prefix=CLUSTER_RANGE_PREFIX_LENGTH))
    start = int.from_bytes(hashlib.sha256(cluster_name.encode()).digest()[:2], "big") % len(candidates)
    for offset in range(len(candidates)):
        candidate = candidates[(start + offset) % len(candidates)]
        if not any(candidate.overlaps(other) for other in taken_networks if other.version == candidate.version):
            subnet = next(candidate.subnets(prefixlen_diff=1))
            return str(candidate), str(subnet)
    raise ValueError(f"every /{CLUSTER_RANGE_PREFIX_LENGTH} of {CLUSTER_RANGE_POOL} is taken by a peered network")


def overlaps_any(cidrs: Iterable[str], taken: Iterable[str]) -> bool:
    """Whether any of `cidrs` overlaps any of `taken` (both CIDR strings)."""
    taken_networks = [ipaddress.ip_network(cidr, strict=False) for cidr in taken]
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        if any(network.version == other.version and network.overlaps(other) for other in taken_networks):
            return True
    return False


def security_rules(
    cluster_subnet_prefix: str, function_subnet_prefix: str | None, ssh_allowed_cidrs: list[str]
) -> list[dict[str, Any]]:
    """The NSG's custom inbound rules (ARM JSON): Ray from the cluster and function subnets, SSH from the listed
    CIDRs only, and an explicit deny of everything else."""
    ray_sources = [cluster_subnet_prefix] + ([function_subnet_prefix] if function_subnet_prefix else [])
    rules: list[dict[str, Any]] = [
        _rule(
            "allow-ray-from-cluster-and-control-plane", RAY_RULE_PRIORITY, "Allow", ray_sources, list(RAY_PORT_RANGES)
        ),
    ]
    if ssh_allowed_cidrs:
        rules.append(_rule("allow-ssh-from-allowed-cidrs", SSH_RULE_PRIORITY, "Allow", list(ssh_allowed_cidrs), ["22"]))
    rules.append(_rule("deny-all-other-inbound", DENY_ALL_PRIORITY, "Deny", ["*"], ["*"], protocol="*"))
    return rules


def _rule(
    name: str, priority: int, access: str, sources: list[str], ports: list[str], *, protocol: str = "Tcp"
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "priority": priority,
        "direction": "Inbound",
        "access": access,
        "protocol": protocol,
        "sourcePortRange": "*",
        "destinationAddressPrefix": "*",
    }
    # ARM wants the singular field for one value and the plural one for several.
    if len(sources) == 1:
        properties["sourceAddressPrefix"] = sources[0]
    else:
        properties["sourceAddressPrefixes"] = sources
    if len(ports) == 1:
        properties["destinationPortRange"] = ports[0]
    else:
        properties["destinationPortRanges"] = ports
    return {"name": name, "properties": properties}
