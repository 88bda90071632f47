"""The cluster's network on Azure: its NSG, its VNet and nodes subnet, and the peerings with the app's VNet.

Created once, at the cluster's first launch. Azure's network provider refuses a reference to a resource that is
still `Updating` (`ReferencedResourceNotProvisioned`) and a write to a resource busy with another operation
(`AnotherOperationInProgress`), so the writes are made in order and each is awaited, within a bound
(`AzureSettings.network_wait_s`): NSG, then the VNet whose subnet references it, then both peerings. Past the bound
the launch fails as transient and the next tick carries on from what ARM shows; nothing here is ever fatal.

The cluster's /16 avoids the app VNet's range and every range already peered with it (network.address_space), and
a VNet that lost a race for a range (two clusters created at once) is re-addressed before it is peered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from azure.core.exceptions import AzureError

from autoscaler.config import ClusterConfig
from autoscaler.ports import TransientError
from provisioning.azure import network
from provisioning.azure.clients import ArmClients, get_or_none
from provisioning.azure.errors import from_azure_error

logger = logging.getLogger(__name__)

Resource = dict[str, Any]


class ClusterNetwork:
    """`ensure()` returns the nodes subnet id, creating and peering what is missing first."""

    def __init__(self, clients: ArmClients, config: ClusterConfig, resource_group: str, location: str) -> None:
        self.clients = clients
        self.config = config
        self.resource_group = resource_group
        self.location = location
        self.cluster = config.cluster_name
        self._lock = threading.Lock()
        self._ready = False

    # ------------------------------------------------------------------ names

    def vnet_id(self) -> str:
        return (
            f"/subscriptions/{self.clients.settings.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/virtualNetworks/{network.vnet_name(self.cluster)}"
        )

    def nodes_subnet_id(self) -> str:
        """The subnet VMs join: the config's `provider.subnet_id`, or the cluster's own."""
        if self.config.provider.subnet_id:
            return self.config.provider.subnet_id
        return f"{self.vnet_id()}/subnets/{network.NODES_SUBNET_NAME}"

    def forget(self) -> None:
        with self._lock:
            self._ready = False

    # ------------------------------------------------------------------ ensure

    def ensure(self) -> str:
        """Create the cluster's NSG, VNet/subnet and its peerings with the app's VNet if missing; return the nodes
        subnet id. One read once the network exists and is peered, then nothing (remembered).

        A user-given subnet (`provider.subnet_id`) is the user's network: nothing is created or peered, and the
        user makes it reachable from the app's subnet (docs/deploy.md).
        """
        subnet_id = self.nodes_subnet_id()
        with self._lock:
            if self._ready or self.config.provider.subnet_id:
                return subnet_id
        deadline_s = time.monotonic() + self.clients.settings.network_wait_s
        try:
            vnet = self._read_vnet()
            if vnet is None or not self._vnet_complete(vnet) or self._lost_range_race(vnet):
                vnet = self._create_network(vnet, deadline_s)
            if not self._peered_with_app(vnet):
                self._peer_with_app(vnet, deadline_s)
        except AzureError as error:
            raise from_azure_error(error) from None
        with self._lock:
            self._ready = True
        return subnet_id

    def _read_vnet(self) -> Resource | None:
        return get_or_none(
            lambda: self.clients.network.virtual_networks.get(self.resource_group, network.vnet_name(self.cluster))
        )

    @staticmethod
    def _vnet_complete(vnet: Mapping[str, Any]) -> bool:
        properties = vnet.get("properties") or {}
        if properties.get("provisioningState") != "Succeeded":
            return False
        return any(
            subnet.get("name") == network.NODES_SUBNET_NAME
            and (subnet.get("properties") or {}).get("networkSecurityGroup")
            for subnet in properties.get("subnets") or []
        )

    # ------------------------------------------------------------------ address ranges

    def _app_vnet(self) -> Resource | None:
        """The app's VNet (its address space, subnets and peerings inline): one read, only while creating."""
        app = self.clients.app_subnet
        if app is None:
            return None
        return dict(self.clients.app_network.virtual_networks.get(app.resource_group, app.vnet_name).as_dict())

    def _ranges_taken(self, app_vnet: Mapping[str, Any] | None) -> list[str]:
        """The app VNet's ranges and those of every VNet peered with it, except this cluster's own."""
        if app_vnet is None:
            return []
        properties = app_vnet.get("properties") or {}
        taken = list((properties.get("addressSpace") or {}).get("addressPrefixes") or [])
        own_vnet = self.vnet_id().lower()
        for peering in properties.get("virtualNetworkPeerings") or []:
            peering_properties = peering.get("properties") or {}
            remote = str((peering_properties.get("remoteVirtualNetwork") or {}).get("id", ""))
            if remote.lower() == own_vnet:
                continue
            remote_space = peering_properties.get("remoteAddressSpace") or {}
            taken.extend(remote_space.get("addressPrefixes") or [])
        return taken

    def _lost_range_race(self, vnet: Mapping[str, Any]) -> bool:
        """Whether another VNet was peered with the app's on this VNet's range since it was created (two clusters
        created at once). Checked only while this VNet is not peered yet: a peered range is ours for good."""
        if self.clients.app_subnet is None or self._cluster_side_peering(vnet) is not None:
            return False
        own = ((vnet.get("properties") or {}).get("addressSpace") or {}).get("addressPrefixes") or []
        return network.overlaps_any(own, self._ranges_taken(self._app_vnet()))

    # ------------------------------------------------------------------ creation

    def _create_network(self, vnet: Resource | None, deadline_s: float) -> Resource:
        app_vnet = self._app_vnet()
        taken = self._ranges_taken(app_vnet)
        existing_range = ((vnet or {}).get("properties") or {}).get("addressSpace", {}).get("addressPrefixes") or []
        if existing_range and not network.overlaps_any(existing_range, taken):
            vnet_range = existing_range[0]
            subnet_range = self._nodes_subnet_range(vnet) or network.address_space(self.cluster, taken)[1]
        else:
            try:
                vnet_range, subnet_range = network.address_space(self.cluster, taken)
            except ValueError as error:
                raise TransientError(f"no free address range for cluster {self.cluster}: {error}") from None
        nsg = self._put_and_wait(
            "network security group",
            lambda: self.clients.network.network_security_groups.begin_create_or_update(
                self.resource_group,
                network.nsg_name(self.cluster),
                self.clients.network_models.NetworkSecurityGroup(self._nsg_body(subnet_range, app_vnet)),
                polling=False,
            ),
            lambda: self.clients.network.network_security_groups.get(
                self.resource_group, network.nsg_name(self.cluster)
            ),
            deadline_s,
        )
        vnet_body = {
            "location": self.location,
            "tags": network.network_tags(self.cluster),
            "properties": {
                "addressSpace": {"addressPrefixes": [vnet_range]},
                "subnets": [
                    {
                        "name": network.NODES_SUBNET_NAME,
                        "properties": {
                            "addressPrefix": subnet_range,
                            "networkSecurityGroup": {"id": nsg["id"]},
                            # New subnets have no default outbound access any more; nodes need it to install
                            # Ray and packages unless the user brings a subnet with a NAT gateway.
                            "defaultOutboundAccess": True,
                        },
                    }
                ],
            },
        }
        # The peerings already made with the app's VNet stay: a VNet PUT without them would not remove them
        # (peerings are their own resources), and a re-addressed VNet keeps none (it is not peered yet).
        created = self._put_and_wait(
            "virtual network",
            lambda: self.clients.network.virtual_networks.begin_create_or_update(
                self.resource_group,
                network.vnet_name(self.cluster),
                self.clients.network_models.VirtualNetwork(vnet_body),
                polling=False,
            ),
            self._read_vnet_or_fail,
            deadline_s,
        )
        logger.info("network of cluster %s created on %s", self.cluster, vnet_range)
        return created

    def _read_vnet_or_fail(self) -> Any:
        return self.clients.network.virtual_networks.get(self.resource_group, network.vnet_name(self.cluster))

    @staticmethod
    def _nodes_subnet_range(vnet: Mapping[str, Any] | None) -> str | None:
        for subnet in ((vnet or {}).get("properties") or {}).get("subnets") or []:
            if subnet.get("name") == network.NODES_SUBNET_NAME:
                prefix = (subnet.get("properties") or {}).get("addressPrefix")
                return str(prefix) if prefix else None
        return None

    def _nsg_body(self, subnet_range: str, app_vnet: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "location": self.location,
            "tags": network.network_tags(self.cluster),
            "properties": {
                "securityRules": network.security_rules(
                    subnet_range, self._function_subnet_prefix(app_vnet), list(self.config.provider.ssh_allowed_cidrs)
                )
            },
        }

    def _function_subnet_prefix(self, app_vnet: Mapping[str, Any] | None) -> str | None:
        """The function app's subnet range, from the app VNet read; None when the app has no subnet."""
        app = self.clients.app_subnet
        if app is None or app_vnet is None:
            return None
        for subnet in (app_vnet.get("properties") or {}).get("subnets") or []:
            if str(subnet.get("name", "")).lower() == app.subnet_name.lower():
                properties = subnet.get("properties") or {}
                prefix = properties.get("addressPrefix") or (properties.get("addressPrefixes") or [None])[0]
                return str(prefix) if prefix else None
        raise TransientError(f"the app's subnet {app.subnet_name} is not in its VNet {app.vnet_name}")

    def _put_and_wait(
        self, what: str, start: Callable[[], Any], read: Callable[[], Any], deadline_s: float
    ) -> Resource:
        """Start a PUT, then read the resource until its provisioning state is Succeeded or the deadline passes."""
        start()
        return self._wait_for(what, read, lambda resource: _state(resource) == "succeeded", deadline_s)

    def _wait_for(
        self,
        what: str,
        read: Callable[[], Any],
        done: Callable[[Mapping[str, Any]], bool],
        deadline_s: float,
    ) -> Resource:
        interval_s = self.clients.settings.network_poll_interval_s
        while True:
            resource = dict(read().as_dict())
            if done(resource):
                return resource
            if _state(resource) == "failed":
                raise TransientError(f"{what} {resource.get('id', '')} failed to provision; it is written again")
            if time.monotonic() + interval_s > deadline_s:
                raise TransientError(
                    f"{what} {resource.get('id', '')} still {_state(resource) or 'provisioning'} after "
                    f"{self.clients.settings.network_wait_s:g} s; the next tick carries on"
                )
            time.sleep(interval_s)

    # ------------------------------------------------------------------ peering

    def _cluster_side_peering(self, vnet: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The cluster VNet's peering towards the app's VNet, as the VNet read shows it inline."""
        app = self.clients.app_subnet
        if vnet is None or app is None:
            return None
        app_vnet_id = app.vnet_id.lower()
        name = network.cluster_to_app_peering_name(self.cluster)
        for peering in (vnet.get("properties") or {}).get("virtualNetworkPeerings") or []:
            remote = ((peering.get("properties") or {}).get("remoteVirtualNetwork") or {}).get("id", "")
            if peering.get("name") == name and remote.lower() == app_vnet_id:
                return dict(peering)
        return None

    def _peered_with_app(self, vnet: Mapping[str, Any]) -> bool:
        """Whether the cluster VNet (as read) is peered both ways with the app's VNet: its own peering is
        Connected only once the app side exists too. True when there is no app VNet to peer with."""
        if self.clients.app_subnet is None:
            return True
        peering = self._cluster_side_peering(vnet)
        return peering is not None and (peering.get("properties") or {}).get("peeringState") == "Connected"

    def _peer_with_app(self, vnet: Mapping[str, Any], deadline_s: float) -> None:
        """Create both peerings, cluster -> app and app -> cluster (a peering needs a link on each side), and wait
        until the cluster side shows Connected."""
        app = self.clients.app_subnet
        if app is None:
            return
        existing = self._cluster_side_peering(vnet)
        if existing is not None and (existing.get("properties") or {}).get("peeringState") == "Disconnected":
            # The app side was deleted after both were connected: Azure reconnects only after the cluster side is
            # deleted too and both are created again. Start the deletion; the retried launch re-creates both.
            self.clients.network.virtual_network_peerings.begin_delete(
                self.resource_group, network.vnet_name(self.cluster), existing["name"], polling=False
            )
            raise TransientError(f"peering {existing['id']} was disconnected: deleted, to be created again")
        cluster_side_name = network.cluster_to_app_peering_name(self.cluster)
        self._put_and_wait(
            "peering towards the app VNet",
            lambda: self.clients.network.virtual_network_peerings.begin_create_or_update(
                self.resource_group,
                network.vnet_name(self.cluster),
                cluster_side_name,
                self.clients.network_models.VirtualNetworkPeering(peering_body(app.vnet_id)),
                polling=False,
            ),
            lambda: self.clients.network.virtual_network_peerings.get(
                self.resource_group, network.vnet_name(self.cluster), cluster_side_name
            ),
            deadline_s,
        )
        app_side_name = network.app_to_cluster_peering_name(self.cluster)
        self._put_and_wait(
            "peering from the app VNet",
            lambda: self.clients.app_network.virtual_network_peerings.begin_create_or_update(
                app.resource_group,
                app.vnet_name,
                app_side_name,
                self.clients.network_models.VirtualNetworkPeering(peering_body(self.vnet_id())),
                polling=False,
            ),
            lambda: self.clients.app_network.virtual_network_peerings.get(
                app.resource_group, app.vnet_name, app_side_name
            ),
            deadline_s,
        )
        self._wait_for(
            "peering towards the app VNet",
            lambda: self.clients.network.virtual_network_peerings.get(
                self.resource_group, network.vnet_name(self.cluster), cluster_side_name
            ),
            lambda peering: (peering.get("properties") or {}).get("peeringState") == "Connected",
            deadline_s,
        )
        logger.info("cluster %s peered with the app VNet %s", self.cluster, app.vnet_id)


def peering_body(remote_vnet_id: str) -> dict[str, Any]:
    # Plain reachability between the two VNets; no transit: neither side forwards nor shares a gateway.
    return {
        "properties": {
            "remoteVirtualNetwork": {"id": remote_vnet_id},
            "allowVirtualNetworkAccess": True,
            "allowForwardedTraffic": False,
            "allowGatewayTransit": False,
            "useRemoteGateways": False,
        }
    }


def _state(resource: Mapping[str, Any]) -> str:
    return str((resource.get("properties") or {}).get("provisioningState") or "").lower()
