"""Scale-set node types: one VM scale set in Flexible orchestration per node type with `node_config.azure_scale_set`.

- The set's name derives from the cluster and the node type (`scale_set_name_for`); its tags are the cluster's, so it
  is ours by tags like every other resource (teardown finds it by them). Its VMs carry no tags of their own (Azure
  documents no copy of the set's tags onto them): a listed VM is a pool VM of the cluster when its
  `properties.virtualMachineScaleSet.id` names one of the config's sets AND that set carries the cluster's tags,
  checked with ONE read of the set the first time it is seen (then remembered, as the head's IP is).
- Growing is ONE write for any count: a PUT of the whole set with `sku.capacity` = the launch's `pool_target` (every
  live record of the type, the new ones included). The PUT creates the set the first time, and is idempotent: the
  same target again creates nothing, so a launch repeated after a crash is harmless.
- Shrinking is ONE `delete instances` call per set with exactly the VM names the planner chose (for Flexible sets
  the instance ids are the VM names); Azure lowers the capacity by as many.
- The VM profile is the single-VM template's (vm_template.py): the cluster's subnet, no identity, `deleteOption:
  Delete` on the NIC and OS disk, the same cloud-init; `priority: Spot` (with `priorityMixPolicy` when the node type
  asks for a mix) for a spot node type.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from autoscaler.config import ClusterConfig
from autoscaler.model import LaunchRequest
from autoscaler.ports import InvalidRequestError
from provisioning.azure import network
from provisioning.azure.plugin import AzureScaleSet
from provisioning.azure.vm_template import (
    INLINE_NETWORK_API_VERSION,
    TAG_NODE_KIND,
    VmTemplate,
    arm_parameters,
    image_reference,
)

# Flexible VM names are "{scale set name}_{8 characters}" and at most 64 characters (Azure: virtual-machine-scale-sets-
# instance-ids), so a set's name keeps to 55.
SCALE_SET_NAME_MAX_LENGTH = 55
TAG_POOL = "ray-pool"  # on the scale set: the node type it holds
_UNSAFE = re.compile(r"[^a-z0-9-]")


def scale_set_name_for(cluster_name: str, node_type: str) -> str:
    """`ray-{cluster}-{node type}`, cut to fit, with a hash of both so two node types never share a set."""
    digest = hashlib.sha256(f"{cluster_name}/{node_type}".encode()).hexdigest()[:8]
    readable = _UNSAFE.sub("-", f"ray-{cluster_name}-{node_type}".lower())
    return f"{readable[: SCALE_SET_NAME_MAX_LENGTH - 9].rstrip('-')}-{digest}"


def scale_set_of(request_or_config: Mapping[str, object]) -> AzureScaleSet | None:
    """A node config's `azure_scale_set`, or None for single VMs."""
    raw = request_or_config.get("azure_scale_set")
    if raw is None:
        return None
    try:
        return AzureScaleSet.model_validate(raw)
    except ValueError as error:
        raise InvalidRequestError(f"invalid azure_scale_set: {error}") from None


def pool_types(config: ClusterConfig) -> dict[str, str]:
    """{scale set name (lower case): node type} of the config's scale-set node types."""
    return {
        scale_set_name_for(config.cluster_name, name).lower(): name
        for name, node_type in config.available_node_types.items()
        if node_type.node_config.get("azure_scale_set") is not None
    }


def scale_set_tags(cluster_name: str, node_type: str) -> dict[str, str]:
    return {**network.network_tags(cluster_name), network.TAG_NODE_TYPE: node_type, TAG_NODE_KIND: "worker"}


class ScaleSetTemplate:
    """Renders the scale set of one node type (the single-VM template's pieces, as a VM profile)."""

    def __init__(self, vm_template: VmTemplate) -> None:
        self.vm_template = vm_template

    def body(self, request: LaunchRequest, subnet_id: str, capacity: int) -> dict[str, Any]:
        settings = scale_set_of(request.node_config)
        if settings is None:
            raise InvalidRequestError(f"node type {request.node_type} is not a scale-set node type")
        if request.is_head:
            raise InvalidRequestError("the head cannot be a VM of a scale set")
        parameters = arm_parameters(request)
        name = scale_set_name_for(request.cluster_name, request.node_type)
        # The same OS profile, disk and cloud-init as one VM, rendered for the set rather than for one launch: every VM
        # of the set boots from this one custom data, so it names no launch (no record's instance id) and stays the
        # same from one capacity write to the next (docs/decisions/scale-sets.md, "What each VM reports").
        # A launch's own priority does not apply: the set's VMs take the node type's (and its priority mix).
        for_the_set = replace(request, instance_id=name, request_id="", priority="")
        single = self.vm_template.body(for_the_set, name, subnet_id)
        os_profile = dict(single["properties"]["osProfile"])
        os_profile.pop("computerName")
        os_profile["computerNamePrefix"] = name[:15]  # Azure appends 6 characters per VM
        single_disk = single["properties"]["storageProfile"]["osDisk"]
        os_disk = {key: value for key, value in single_disk.items() if key != "name"}
        tags = scale_set_tags(request.cluster_name, request.node_type)
        profile: dict[str, Any] = {
            "osProfile": os_profile,
            "storageProfile": {"imageReference": image_reference(parameters), "osDisk": os_disk},
            "networkProfile": {
                "networkApiVersion": INLINE_NETWORK_API_VERSION,
                "networkInterfaceConfigurations": [
                    {
                        "name": "nic",
                        "tags": tags,
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [
                                {"name": "ipconfig1", "properties": {"subnet": {"id": subnet_id}, "primary": True}}
                            ],
                        },
                    }
                ],
            },
        }
        for key in ("priority", "evictionPolicy", "billingProfile"):
            if key in single["properties"]:
                profile[key] = single["properties"][key]
        properties: dict[str, Any] = {
            "orchestrationMode": "Flexible",
            "platformFaultDomainCount": settings.platform_fault_domain_count,
            "virtualMachineProfile": profile,
        }
        if settings.priority_mix is not None and profile.get("priority") == "Spot":
            properties["priorityMixPolicy"] = {
                "baseRegularPriorityCount": settings.priority_mix.base_regular_count,
                "regularPriorityPercentageAboveBase": settings.priority_mix.regular_percentage_above_base,
            }
        body: dict[str, Any] = {
            "location": self.vm_template.location,
            "tags": tags,
            "sku": {"name": parameters.vmSize, "tier": "Standard", "capacity": capacity},
            "properties": properties,
        }
        zones = self.vm_template.config.provider.zones()
        if zones:
            body["zones"] = zones
        # No "identity": cluster VMs hold no Azure rights.
        return body


class ScaleSetOwnership:
    """Which scale sets carry the cluster's tags: read once per set, then remembered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, bool] = {}  # scale set id (lower) -> ours

    def known(self, scale_set_id: str) -> bool | None:
        with self._lock:
            return self._known.get(scale_set_id.lower())

    def remember(self, scale_set_id: str, ours: bool) -> None:
        with self._lock:
            self._known[scale_set_id.lower()] = ours

    def forget(self) -> None:
        with self._lock:
            self._known.clear()
