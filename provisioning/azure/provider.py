"""`AzureCloudProvider`: cluster VMs on Azure, through azure-mgmt-compute and azure-mgmt-network.

Contracts are the CloudProvider port's (autoscaler/ports.py). The work is split by what changes together:
- clients.py: the ARM clients and their bounded retries;
- vm_template.py: the VM one launch PUTs (NIC and public IP inline, deleteOption Delete, no identity, tags);
- instances.py: list (ONE read per tick), launch (ONE write), terminate, and what is remembered between ticks;
- scale_sets.py: scale-set node types (one Flexible VM scale set each: docs/decisions/scale-sets.md);
- batches.py: every launch / terminate of a tick at once, within the subscription's write budget (write_budget.py);
- cluster_network.py: the cluster's NSG, VNet and peerings with the app's VNet, awaited within a bound, once;
- teardown.py: destroying what is left of a cluster, by tags.
Ownership is decided by tags (`ray-cluster-name` + `managed-by`), never by names.
The management SDKs are imported when a provider is built, so importing this module is cheap (Functions cold start).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from autoscaler.config import ClusterConfig
from autoscaler.model import CloudInstance, LaunchRequest
from autoscaler.ports import CloudError, DestroyReport, InvalidRequestError
from provisioning.azure.batches import BatchIssuer
from provisioning.azure.clients import ArmClients, AzureSettings
from provisioning.azure.cluster_network import ClusterNetwork
from provisioning.azure.instances import ClusterInstances, cloud_state_of, failure_detail
from provisioning.azure.scale_sets import ScaleSetTemplate, pool_types, scale_set_of
from provisioning.azure.teardown import ClusterTeardown
from provisioning.azure.vm_template import VmTemplate, vm_name_for

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["AzureCloudProvider", "AzureSettings", "cloud_state_of", "failure_detail", "vm_name_for"]


class AzureCloudProvider:
    """A `CloudProvider` for one cluster config (see the module docstring)."""

    def __init__(self, config: ClusterConfig, credential: TokenCredential, settings: AzureSettings) -> None:
        if not config.provider.resource_group or not config.provider.location:
            raise InvalidRequestError("provider.resource_group and provider.location are required for Azure")
        if not settings.subscription_id:
            raise InvalidRequestError("no subscription: set provider.subscription_id or CLUSTERS_SUBSCRIPTION_ID")
        self.config = config
        self.settings = settings
        self.resource_group = config.provider.resource_group
        self.location = config.provider.location
        self.clients = ArmClients(credential, settings)
        self.template = VmTemplate(config, self.location)
        self.cluster_network = ClusterNetwork(self.clients, config, self.resource_group, self.location)
        self.instances = ClusterInstances(self.clients, self.template, self.resource_group, pool_types(config))
        self.batches = BatchIssuer(self.clients, self.instances, ScaleSetTemplate(self.template), self.resource_group)

    @classmethod
    def from_environment(cls, config: ClusterConfig, settings: AzureSettings) -> AzureCloudProvider:
        """For Azure: the app's managed identity (AZURE_CLIENT_ID names a user-assigned one), or a developer login."""
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=os.environ.get("AZURE_CLIENT_ID") or None)
        return cls(config, credential, settings)

    def nodes_subnet_id(self) -> str:
        return self.cluster_network.nodes_subnet_id()

    def cluster_vnet_id(self) -> str:
        return self.cluster_network.vnet_id()

    def ensure_network(self) -> str:
        return self.cluster_network.ensure()

    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        return self.instances.list(cluster_name)

    def remember_address(self, cloud_instance_id: str, private_ip: str, public_ip: str = "") -> None:
        self.instances.remember_address(cloud_instance_id, private_ip, public_ip)

    def launch(self, request: LaunchRequest) -> None:
        subnet_id = self.cluster_network.ensure()  # remembered after the first call: no ARM request in steady state
        if scale_set_of(request.node_config) is not None:
            (outcome,) = self.batches.launch_many([request], subnet_id)
            if outcome is not None:
                raise outcome
            return
        self.instances.launch(request, subnet_id)

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        self.instances.terminate(cluster_name, instance_id)

    def launch_many(self, requests: Sequence[LaunchRequest]) -> list[CloudError | None]:
        """Every launch of a tick: one write per scale-set node type, single VMs in parallel within the budget."""
        if not requests:
            return []
        try:
            subnet_id = self.cluster_network.ensure()
        except CloudError as error:
            return [error] * len(requests)
        return self.batches.launch_many(requests, subnet_id)

    def terminate_many(self, cluster_name: str, instance_ids: Sequence[str]) -> list[CloudError | None]:
        """Every terminate of a tick: one delete-instances call per scale set, single VMs in parallel."""
        return self.batches.terminate_many(cluster_name, instance_ids)

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        teardown = ClusterTeardown(
            self.clients, self.cluster_network, self.resource_group, with_scale_sets=bool(self.instances.pool_types)
        )
        report = teardown.run(cluster_name)
        self.cluster_network.forget()
        self.instances.forget()
        return report
