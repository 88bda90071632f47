"""Destroying a cluster on Azure: whatever is left of it, found by tags, in the order Azure allows.

Scale sets first (with every VM still in them), then VMs, then the NICs, public IPs and disks they may have left,
then (when we created them) the peerings, the VNet and the NSG. The resource group is the user's and stays.
Deletions are started, not waited on; `InUse` answers (a NIC still attached while its VM is being deleted, ...) are
retried a few times with backoff, and whatever still refuses is reported as remaining, for the next tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from azure.core.exceptions import AzureError

from autoscaler.ports import CloudError, DestroyReport, NotFoundError, TransientError
from provisioning.azure import network
from provisioning.azure.clients import ArmClients, get_or_none
from provisioning.azure.cluster_network import ClusterNetwork
from provisioning.azure.errors import from_azure_error


class ClusterTeardown:
    def __init__(
        self, clients: ArmClients, cluster_network: ClusterNetwork, resource_group: str, *, with_scale_sets: bool
    ) -> None:
        self.with_scale_sets = with_scale_sets
        self.clients = clients
        self.cluster_network = cluster_network
        self.resource_group = resource_group
        self._removed: list[str] = []
        self._remaining: list[str] = []
        self._notes: list[str] = []

    def run(self, cluster_name: str) -> DestroyReport:
        self._removed, self._remaining, self._notes = [], [], []
        try:
            self._delete_vms_and_leftovers(cluster_name)
            if not self.cluster_network.config.provider.subnet_id:
                self._delete_network(cluster_name)
        except AzureError as error:
            raise from_azure_error(error) from None
        return DestroyReport(removed=tuple(self._removed), remaining=tuple(self._remaining), notes=tuple(self._notes))

    def _owned(self, resource: Mapping[str, Any], cluster_name: str) -> bool:
        return network.is_ours(resource, cluster_name, self.resource_group)

    def _delete_vms_and_leftovers(self, cluster_name: str) -> None:
        compute, net = self.clients.compute, self.clients.network
        # A scale set (a scale-set node type's) goes with the VMs still in it, and their NICs and disks
        # (deleteOption Delete); its VMs carry no tags of ours, the set does. Listed only for a config with scale-set
        # node types: a cluster of single VMs needs no right on scale sets (docs/decisions/scale-sets.md).
        scale_sets = compute.virtual_machine_scale_sets.list(self.resource_group) if self.with_scale_sets else []
        for scale_set in scale_sets:
            data = scale_set.as_dict()
            if self._owned(data, cluster_name):
                delete_set = _bind(compute.virtual_machine_scale_sets.begin_delete, self.resource_group, data["name"])
                self._delete(data["id"], delete_set)
        for vm in compute.virtual_machines.list(self.resource_group):
            data = vm.as_dict()
            if self._owned(data, cluster_name):
                # A disk the VM keeps (deleteOption Detach, e.g. a VM made by an older version) carries no tags of
                # ours: it is ours because our VM references it. Azure refuses to delete it until the VM's deletion
                # has released it (minutes), after which nothing references it any more: so it gets the cluster's
                # tags first, and the leftover sweep below (this call or a later one) finds and deletes it.
                for disk_id in _disks_kept_after_vm(data):
                    self._tag_as_ours(disk_id, cluster_name)
                delete_vm = _bind(compute.virtual_machines.begin_delete, self.resource_group, data["name"])
                self._delete(data["id"], delete_vm)
        leftovers: list[tuple[Callable[..., Any], Iterable[Any]]] = [
            (net.network_interfaces.begin_delete, net.network_interfaces.list(self.resource_group)),
            (net.public_ip_addresses.begin_delete, net.public_ip_addresses.list(self.resource_group)),
            (compute.disks.begin_delete, compute.disks.list_by_resource_group(self.resource_group)),
        ]
        for begin_delete, listing in leftovers:
            for item in listing:
                data = item.as_dict()
                if self._owned(data, cluster_name):
                    self._delete(data["id"], _bind(begin_delete, self.resource_group, data["name"]))

    def _tag_as_ours(self, disk_id: str, cluster_name: str) -> None:
        parts = disk_id.split("/")
        resource_group, disk_name = parts[4], parts[-1]
        try:
            disk = self.clients.compute.disks.get(resource_group, disk_name).as_dict()
        except AzureError as error:
            if isinstance(from_azure_error(error), NotFoundError):
                return
            raise
        tags = {**(disk.get("tags") or {}), **network.network_tags(cluster_name)}
        if tags != (disk.get("tags") or {}):
            self.clients.compute.disks.begin_update(
                resource_group, disk_name, self.clients.compute_models.DiskUpdate(tags=tags), polling=False
            )

    def _delete_network(self, cluster_name: str) -> None:
        net = self.clients.network
        self._delete_app_side_peering(cluster_name)
        vnet = get_or_none(lambda: net.virtual_networks.get(self.resource_group, network.vnet_name(cluster_name)))
        if vnet is not None and self._owned(vnet, cluster_name):
            for peering in (vnet.get("properties") or {}).get("virtualNetworkPeerings") or []:
                self._delete(
                    peering["id"],
                    _bind_peering(
                        net.virtual_network_peerings.begin_delete, self.resource_group, vnet["name"], peering["name"]
                    ),
                )
            self._delete(vnet["id"], _bind(net.virtual_networks.begin_delete, self.resource_group, vnet["name"]))
        nsg = get_or_none(lambda: net.network_security_groups.get(self.resource_group, network.nsg_name(cluster_name)))
        if nsg is not None and self._owned(nsg, cluster_name):
            self._delete(nsg["id"], _bind(net.network_security_groups.begin_delete, self.resource_group, nsg["name"]))

    def _delete_app_side_peering(self, cluster_name: str) -> None:
        """Delete the app VNet's peering towards this cluster (the app VNet itself is not ours). Peerings carry no
        tags: the name says it is ours only if it points at this cluster's VNet."""
        app = self.clients.app_subnet
        if app is None:
            return
        app_network = self.clients.app_network
        name = network.app_to_cluster_peering_name(cluster_name)
        peering = get_or_none(lambda: app_network.virtual_network_peerings.get(app.resource_group, app.vnet_name, name))
        if peering is None:
            return
        remote = str(((peering.get("properties") or {}).get("remoteVirtualNetwork") or {}).get("id", ""))
        if remote.lower() != self.cluster_network.vnet_id().lower():
            self._notes.append(f"left alone: {peering['id']} peers with {remote}, not this cluster's VNet")
            return
        self._delete(
            peering["id"],
            _bind_peering(app_network.virtual_network_peerings.begin_delete, app.resource_group, app.vnet_name, name),
        )

    def _delete(self, resource_id: str, start: Callable[[], Any]) -> None:
        outcome = self._delete_with_retry(start)
        if outcome is None:
            self._removed.append(resource_id)
        elif isinstance(outcome, NotFoundError):
            self._notes.append(f"already gone: {resource_id}")
        else:
            self._remaining.append(resource_id)
            self._notes.append(f"{resource_id}: {outcome}")

    def _delete_with_retry(self, start: Callable[[], Any]) -> CloudError | None:
        """None when the deletion was accepted; else the error that stopped it. Transient refusals (InUse while
        a holder is still being deleted, a resource busy with another operation) are retried with backoff."""
        settings = self.clients.settings
        backoff_s = settings.delete_retry_backoff_s
        attempts_left = settings.delete_retries
        while True:
            try:
                start()
                return None
            except AzureError as error:
                cloud_error = from_azure_error(error)
            if not isinstance(cloud_error, TransientError) or attempts_left <= 0:
                return cloud_error
            attempts_left -= 1
            time.sleep(backoff_s)
            backoff_s *= 2


def _disks_kept_after_vm(vm: Mapping[str, Any]) -> list[str]:
    """Ids of the VM's disks that deleting the VM leaves behind (deleteOption other than Delete)."""
    storage = (vm.get("properties") or {}).get("storageProfile") or {}
    disks = [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]
    return [
        str(disk["managedDisk"]["id"])
        for disk in disks
        if disk.get("deleteOption") != "Delete" and (disk.get("managedDisk") or {}).get("id")
    ]


def _bind(begin_delete: Callable[..., Any], resource_group: str, name: str) -> Callable[[], Any]:
    """A deletion to start later, not waited on."""
    return lambda: begin_delete(resource_group, name, polling=False)


def _bind_peering(
    begin_delete: Callable[..., Any], resource_group: str, vnet_name: str, peering_name: str
) -> Callable[[], Any]:
    """A peering deletion to start later, not waited on."""
    return lambda: begin_delete(resource_group, vnet_name, peering_name, polling=False)
