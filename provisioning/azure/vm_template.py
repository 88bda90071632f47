"""The VM one launch creates: a pure function of the cluster config and the launch request.

A launch is one VM PUT: the NIC (and the head's public IP, if any) are declared inline with `deleteOption: Delete`,
so nothing is left behind when the VM goes, by any path (terminate, spot eviction with Delete). The body is the
same for a retried launch (same name, zone and stand-in SSH key), so a retry PUTs the same VM instead of making
another, and Azure does not refuse it as a change of an immutable property.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from autoscaler.config import ClusterConfig
from autoscaler.model import LaunchRequest
from autoscaler.ports import InvalidRequestError
from provisioning.azure.cloud_init import NodeBootSpec, render_custom_data
from provisioning.azure.network import (
    MANAGED_BY,
    TAG_CLUSTER,
    TAG_INSTANCE,
    TAG_MANAGED_BY,
    TAG_NODE_TYPE,
    TAG_REQUEST,
)
from provisioning.azure.plugin import AzureArmParameters
from provisioning.azure.ssh import derived_public_key

TAG_NODE_KIND = "ray-node-kind"  # "head" or "worker": the head's node type may also be launched as a worker
VM_NAME_MAX_LENGTH = 64  # Linux computer names and VM names: 64 characters at most
DEFAULT_IMAGE = {
    "publisher": "Canonical",
    "offer": "0001-com-ubuntu-server-jammy",
    "sku": "22_04-lts-gen2",
    "version": "latest",
}
# Inline NIC and public IP configurations in the VM model need `networkApiVersion`; this is the first version that
# supports them (virtualMachine.json, NetworkProfile.networkApiVersion enum).
INLINE_NETWORK_API_VERSION = "2020-11-01"
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^a-z0-9-]")


def vm_name_for(cluster_name: str, instance_id: str) -> str:
    safe_instance = _UNSAFE_NAME_CHARACTERS.sub("-", instance_id.lower())
    return f"ray-{cluster_name}-{safe_instance}"[:VM_NAME_MAX_LENGTH].rstrip("-")


def arm_parameters(request: LaunchRequest) -> AzureArmParameters:
    raw = request.node_config.get("azure_arm_parameters")
    if raw is None:
        raise InvalidRequestError(f"node type {request.node_type} has no node_config.azure_arm_parameters")
    try:
        return AzureArmParameters.model_validate(raw)
    except ValueError as error:
        raise InvalidRequestError(f"node type {request.node_type}: invalid azure_arm_parameters: {error}") from None


def tags_for(request: LaunchRequest) -> dict[str, str]:
    return {
        TAG_CLUSTER: request.cluster_name,
        TAG_NODE_TYPE: request.node_type,
        TAG_INSTANCE: request.instance_id,
        TAG_REQUEST: request.request_id,
        TAG_MANAGED_BY: MANAGED_BY,
        TAG_NODE_KIND: "head" if request.is_head else "worker",
    }


class VmTemplate:
    """Renders VM bodies for one cluster config, in one location."""

    def __init__(self, config: ClusterConfig, location: str) -> None:
        self.config = config
        self.location = location

    def zone_for(self, request: LaunchRequest) -> str:
        if request.availability_zone:
            return request.availability_zone
        zones = self.config.provider.zones()
        if not zones:
            return ""
        # Spread by a hash of the instance id rather than a counter: a retried launch must ask for the same zone,
        # or Azure refuses the PUT as a change of an immutable property.
        index = int.from_bytes(hashlib.sha256(request.instance_id.encode()).digest()[:4], "big") % len(zones)
        return zones[index]

    def boot_spec(self, request: LaunchRequest) -> NodeBootSpec:
        commands = self.config.commands_for(request.node_type, is_head=request.is_head)
        return NodeBootSpec(
            cluster_name=request.cluster_name,
            instance_id=request.instance_id,
            node_type=request.node_type,
            is_head=request.is_head,
            resources=request.resources,
            cluster_token=request.cluster_token,
            ssh_user=self.config.auth.ssh_user,
            initialization_commands=commands.initialization,
            setup_commands=commands.setup,
            head_address=request.head_address,
            control_plane_url=request.control_plane_url,
            labels=request.labels,
            # A scale set's VMs share one custom data: each takes its instance id from its own name at boot.
            name_from_metadata=request.node_config.get("azure_scale_set") is not None,
        )

    def wants_public_ip(self, request: LaunchRequest) -> bool:
        """Only the head, only when SSH is allowed from somewhere, and not when the user asked for internal IPs
        (e.g. SSH through Azure Bastion in a peered VNet: docs/deploy.md)."""
        return (
            request.is_head
            and not self.config.provider.use_internal_ips
            and bool(self.config.provider.ssh_allowed_cidrs)
        )

    def body(self, request: LaunchRequest, vm_name: str, subnet_id: str) -> dict[str, Any]:
        parameters = arm_parameters(request)
        tags = tags_for(request)
        ssh_user = self.config.auth.ssh_user
        # Without a configured key nobody should log in. The stand-in key derives from the cluster token (whoever
        # holds the token controls Ray already), so a retried launch PUTs an identical body.
        public_key = self.config.auth.ssh_public_key or derived_public_key(
            f"ssh/{request.cluster_token}/{request.cluster_name}".encode()
        )
        ip_configuration: dict[str, Any] = {"subnet": {"id": subnet_id}, "primary": True}
        if self.wants_public_ip(request):
            ip_configuration["publicIPAddressConfiguration"] = {
                "name": f"{vm_name}-ip",
                "sku": {"name": "Standard", "tier": "Regional"},
                "tags": tags,
                "properties": {"deleteOption": "Delete", "publicIPAllocationMethod": "Static"},
            }
        os_disk: dict[str, Any] = {
            "name": f"{vm_name}-osdisk",
            "createOption": "FromImage",
            "deleteOption": "Delete",
            "caching": "ReadWrite",
        }
        if parameters.osDiskSizeGB:
            os_disk["diskSizeGB"] = parameters.osDiskSizeGB
        if parameters.osDiskType:
            os_disk["managedDisk"] = {"storageAccountType": parameters.osDiskType}
        try:
            custom_data = render_custom_data(self.boot_spec(request))
        except ValueError as error:  # too large for Azure: the config's commands are too long
            raise InvalidRequestError(f"node type {request.node_type}: {error}") from None
        properties: dict[str, Any] = {
            "hardwareProfile": {"vmSize": parameters.vmSize},
            "storageProfile": {"imageReference": image_reference(parameters), "osDisk": os_disk},
            "osProfile": {
                "computerName": vm_name,
                "adminUsername": ssh_user,
                "customData": custom_data,
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {"publicKeys": [{"path": f"/home/{ssh_user}/.ssh/authorized_keys", "keyData": public_key}]},
                },
            },
            "networkProfile": {
                "networkApiVersion": INLINE_NETWORK_API_VERSION,
                "networkInterfaceConfigurations": [
                    {
                        "name": f"{vm_name}-nic",
                        "tags": tags,
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [{"name": "ipconfig1", "properties": ip_configuration}],
                        },
                    }
                ],
            },
        }
        # The head is always on-demand: losing it loses the cluster. A launch may override the node type's priority
        # (the shell launches a spot type as regular while its spot offerings are avoided).
        is_spot = parameters.is_spot if not request.priority else request.priority.lower() == "spot"
        if not request.is_head and is_spot:
            properties["priority"] = "Spot"  # Ray's legacy "Low" is Spot for VMs (Azure deprecated "Low")
            properties["evictionPolicy"] = parameters.evictionPolicy or "Delete"
            properties["billingProfile"] = {
                "maxPrice": parameters.billingProfile.maxPrice if parameters.billingProfile else -1
            }
        body: dict[str, Any] = {"location": self.location, "tags": tags, "properties": properties}
        zone = self.zone_for(request)
        if zone:
            body["zones"] = [zone]
        # No "identity": cluster VMs hold no Azure rights.
        return body


def image_reference(parameters: AzureArmParameters) -> dict[str, str]:
    if parameters.imageId:
        return {"id": parameters.imageId}
    return {
        "publisher": parameters.imagePublisher or DEFAULT_IMAGE["publisher"],
        "offer": parameters.imageOffer or DEFAULT_IMAGE["offer"],
        "sku": parameters.imageSku or DEFAULT_IMAGE["sku"],
        "version": parameters.imageVersion or DEFAULT_IMAGE["version"],
    }
