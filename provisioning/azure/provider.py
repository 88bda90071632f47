"""`AzureCloudProvider`: cluster VMs on Azure, through azure-mgmt-compute and azure-mgmt-network.

Contracts are provisioning/cloud.py's. What this implementation adds:
- ARM calls are a budget (docs/decisions/arm-call-budget.md): `list_instances` is ONE request,
  `virtual_machines.list(resource_group)` (provisioning state and tags; the role is granted on that group only).
  Two things cost one more read, once, then come from memory: the head's private IP (a NIC read the first time the
  head is seen running) and the failure code of a VM whose provisioning failed (its instance view).
- Each cluster VNet is peered both ways with the function app's VNet (FUNCTION_SUBNET_ID), so the app reaches the
  head agent on its private IP.
- Long-running operations are started and never waited on; the next tick's list shows their outcome.
- A launch is one VM PUT: the NIC (and the head's public IP, if any) are declared inline with `deleteOption: Delete`,
  so nothing is left behind when the VM goes, by any path (terminate, spot eviction with Delete).
  The VM name derives from the instance id, so a retried launch PUTs the same VM instead of creating another.
- Ownership is decided by tags (`ray-cluster-name` + `managed-by`), never by names.
- The management SDKs are imported in the constructor, so importing this module is cheap (Functions cold start).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

from autoscaler.config import AzureArmParameters, ClusterConfig
from autoscaler.model import CloudInstance, CloudState, LaunchRequest
from provisioning.azure import network
from provisioning.azure.cloud_init import NodeBootSpec, render_custom_data
from provisioning.azure.errors import (
    FailureClass,
    classify_failed_provisioning,
    failure_class_of,
    from_azure_error,
    parse_retry_after,
)
from provisioning.azure.network import (
    MANAGED_BY,
    TAG_CLUSTER,
    TAG_INSTANCE,
    TAG_MANAGED_BY,
    TAG_NODE_TYPE,
    TAG_REQUEST,
    SubnetReference,
)
from provisioning.azure.ssh import derived_public_key
from provisioning.cloud import CloudError, DestroyReport, InvalidRequestError, NotFoundError, TransientError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

logger = logging.getLogger(__name__)

TAG_NODE_KIND = "ray-node-kind"  # "head" or "worker": the head's node type may also be launched as a worker
VM_NAME_MAX_LENGTH = 64
DEFAULT_IMAGE = {
    "publisher": "Canonical",
    "offer": "0001-com-ubuntu-server-jammy",
    "sku": "22_04-lts-gen2",
    "version": "latest",
}
# The NIC and public IP are declared inside the VM (created and deleted with it); this network API version enables it.
INLINE_NETWORK_API_VERSION = "2020-11-01"
FAILED_WITHOUT_CODE = "ProvisioningFailed"
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^a-z0-9-]")


@dataclass(frozen=True)
class AzureSettings:
    """Where and how to call ARM. `base_url`/`connection_verify` point the SDK at the loopback emulator in tests."""

    subscription_id: str
    function_subnet_id: str = ""  # app setting FUNCTION_SUBNET_ID: may reach the Ray ports of every cluster
    base_url: str | None = None
    connection_verify: str | None = None  # a CA bundle path
    retry_total: int = 2
    retry_backoff_factor_s: float = 0.5
    retry_backoff_max_s: float = 4.0
    max_retry_after_s: float = 5.0  # a longer Retry-After is not slept: the call fails with ThrottledError
    request_timeout_s: float = 20.0
    delete_retries: int = 3  # `InUse` answers during destroy_cluster are retried this many times ...
    delete_retry_backoff_s: float = 0.5  # ... with this backoff, doubling


class BoundedRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retry, except that an answer asking to wait longer than `max_retry_after_s` is not retried:
    the SDK would sleep it in full (Azure sends `Retry-After: 1200`), outliving the function invocation."""

    def __init__(self, max_retry_after_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_retry_after_s = max_retry_after_s

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        retry_after = parse_retry_after(response.http_response.headers.get("Retry-After"))
        if retry_after is not None and retry_after > self.max_retry_after_s:
            return False
        return bool(super().is_retry(settings, response))


def vm_name_for(cluster_name: str, instance_id: str) -> str:
    safe_instance = _UNSAFE_NAME_CHARACTERS.sub("-", instance_id.lower())
    return f"ray-{cluster_name}-{safe_instance}"[:VM_NAME_MAX_LENGTH].rstrip("-")


def cloud_state_of(provisioning_state: str) -> tuple[CloudState, str]:
    """(state, detail) of a VM from the provisioning state a resource-group list shows.

    The list carries no power state: a spot VM deallocated by an eviction (policy Deallocate) still shows Succeeded
    and is taken as running; Ray then reports its node dead and the reconcile shell terminates it.
    """
    state = provisioning_state.lower()
    if state == "failed":
        return CloudState.FAILED, FAILED_WITHOUT_CODE
    if state == "deleting":
        return CloudState.TERMINATING, ""
    if state == "succeeded":
        return CloudState.RUNNING, ""
    return CloudState.PENDING, f"provisioning {state or 'unknown'}"


def failure_detail(statuses: Sequence[Mapping[str, Any]]) -> str:
    """ "<code>: <message>" from a failed VM's instance-view statuses (`ProvisioningState/failed/<code>`)."""
    for status in statuses:
        parts = str(status.get("code", "")).split("/")
        if parts[0] == "ProvisioningState" and len(parts) > 2 and parts[1].lower() == "failed":
            message = str(status.get("message") or "")
            return f"{parts[2]}: {message}" if message else parts[2]
    return FAILED_WITHOUT_CODE


class AzureCloudProvider:
    """A `CloudProvider` for one cluster config (see the module docstring)."""

    def __init__(self, config: ClusterConfig, credential: TokenCredential, settings: AzureSettings) -> None:
        # Imported here, not at module level: these packages are large and only Azure clusters need them.
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.compute import models as compute_models
        from azure.mgmt.network import NetworkManagementClient
        from azure.mgmt.network import models as network_models

        if not config.provider.resource_group or not config.provider.location:
            raise InvalidRequestError("provider.resource_group and provider.location are required for Azure")
        if not settings.subscription_id:
            raise InvalidRequestError("no subscription: set provider.subscription_id or CLUSTERS_SUBSCRIPTION_ID")
        self.config = config
        self.settings = settings
        self.resource_group = config.provider.resource_group
        self.location = config.provider.location
        client_options: dict[str, Any] = {
            "retry_policy": BoundedRetryPolicy(
                settings.max_retry_after_s,
                retry_total=settings.retry_total,
                retry_backoff_factor=settings.retry_backoff_factor_s,
                retry_backoff_max=settings.retry_backoff_max_s,
                timeout=settings.request_timeout_s,
            ),
            "connection_timeout": settings.request_timeout_s,
            "read_timeout": settings.request_timeout_s,
        }
        if settings.base_url:
            client_options["base_url"] = settings.base_url
        if settings.connection_verify:
            client_options["connection_verify"] = settings.connection_verify
        self.compute = ComputeManagementClient(credential, settings.subscription_id, **client_options)
        self.network = NetworkManagementClient(credential, settings.subscription_id, **client_options)
        self.app_subnet = self._parse_app_subnet(settings.function_subnet_id)
        # The app's VNet may live in another subscription than the clusters.
        self.app_network = self.network
        if self.app_subnet is not None and self.app_subnet.subscription_id.lower() != settings.subscription_id.lower():
            self.app_network = NetworkManagementClient(credential, self.app_subnet.subscription_id, **client_options)
        self._compute_models = compute_models
        self._network_models = network_models
        self._lock = threading.Lock()
        self._network_ready = False
        self._addresses: dict[str, tuple[str, str]] = {}  # head VM id (lower) -> (private IP, public IP)
        self._vm_names: dict[str, str] = {}  # instance id -> VM name, from the last list
        self._failures: dict[str, tuple[str, FailureClass]] = {}  # failed VM id (lower) -> (detail, class)

    @staticmethod
    def _parse_app_subnet(function_subnet_id: str) -> SubnetReference | None:
        if not function_subnet_id:
            return None
        try:
            return SubnetReference.parse(function_subnet_id)
        except ValueError as error:
            raise InvalidRequestError(f"FUNCTION_SUBNET_ID: {error}") from None

    @classmethod
    def from_environment(cls, config: ClusterConfig, settings: AzureSettings) -> AzureCloudProvider:
        """For Azure: the app's managed identity (AZURE_CLIENT_ID names a user-assigned one), or a developer login."""
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=os.environ.get("AZURE_CLIENT_ID") or None)
        return cls(config, credential, settings)

    # ------------------------------------------------------------------ names

    @property
    def _subscription_prefix(self) -> str:
        return f"/subscriptions/{self.settings.subscription_id}/resourceGroups/{self.resource_group}/providers"

    def nodes_subnet_id(self) -> str:
        """The subnet VMs join: the config's `provider.subnet_id`, or the cluster's own."""
        if self.config.provider.subnet_id:
            return self.config.provider.subnet_id
        return f"{self.cluster_vnet_id(self.config.cluster_name)}/subnets/{network.NODES_SUBNET_NAME}"

    def cluster_vnet_id(self, cluster_name: str) -> str:
        return f"{self._subscription_prefix}/Microsoft.Network/virtualNetworks/{network.vnet_name(cluster_name)}"

    def _is_ours(self, resource: Mapping[str, Any], cluster_name: str) -> bool:
        tags = resource.get("tags") or {}
        if tags.get(TAG_CLUSTER) != cluster_name or tags.get(TAG_MANAGED_BY) != MANAGED_BY:
            return False
        segments = str(resource.get("id", "")).split("/")
        return len(segments) > 4 and segments[4].lower() == self.resource_group.lower()

    # ------------------------------------------------------------------ list

    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        """ONE ARM read in steady state: the VMs of the clusters' resource group, filtered to ours by tags.

        A resource-group list, not `list_all`: the app's role is granted on that group, and a subscription-wide
        list is authorized at subscription scope. A VM whose provisioning failed costs one instance-view read,
        once, for the failure code.
        """
        try:
            virtual_machines = [vm.as_dict() for vm in self.compute.virtual_machines.list(self.resource_group)]
        except AzureError as error:
            raise from_azure_error(error) from None
        instances: list[CloudInstance] = []
        names: dict[str, str] = {}
        for vm in virtual_machines:
            if not self._is_ours(vm, cluster_name):
                continue
            instance = self._instance_from_vm(vm, cluster_name)
            names[instance.instance_id] = vm["name"]
            instances.append(instance)
        listed = {instance.cloud_instance_id.lower() for instance in instances}
        with self._lock:
            self._vm_names = names
            self._failures = {key: failure for key, failure in self._failures.items() if key in listed}
        return instances

    def _instance_from_vm(self, vm: Mapping[str, Any], cluster_name: str) -> CloudInstance:
        tags = vm.get("tags") or {}
        properties = vm.get("properties") or {}
        state, detail = cloud_state_of(str(properties.get("provisioningState", "")))
        is_head = tags.get(TAG_NODE_KIND) == "head"
        private_ip, public_ip = "", ""
        if is_head and state is CloudState.RUNNING:
            private_ip, public_ip = self._head_addresses(vm)
        instance = CloudInstance(
            instance_id=tags.get(TAG_INSTANCE, ""),
            cluster_name=cluster_name,
            node_type=tags.get(TAG_NODE_TYPE, ""),
            request_id=tags.get(TAG_REQUEST, ""),
            state=state,
            cloud_instance_id=str(vm.get("id", "")),
            private_ip=private_ip,
            public_ip=public_ip,
            is_head=is_head,
            detail=detail,
        )
        if state is CloudState.FAILED:
            instance = self._with_failure(instance, vm)
        if is_head and private_ip:
            instance = replace(
                instance,
                ray_address=f"{private_ip}:{network.GCS_PORT}",
                dashboard_url=f"http://{private_ip}:{network.DASHBOARD_PORT}",
                agent_url=f"http://{private_ip}:{network.HEAD_AGENT_PORT}",
            )
        return instance

    def _with_failure(self, instance: CloudInstance, vm: Mapping[str, Any]) -> CloudInstance:
        """The failed instance with its failure classified: one instance-view read per VM, then from memory."""
        vm_key = instance.cloud_instance_id.lower()
        with self._lock:
            known = self._failures.get(vm_key)
        if known is None:
            try:
                view = self.compute.virtual_machines.instance_view(self.resource_group, str(vm["name"])).as_dict()
            except AzureError as error:
                cloud_error = from_azure_error(error)
                if isinstance(cloud_error, NotFoundError):
                    return instance  # deleted since the list: the next list no longer shows it
                # Not knowing why it failed would launch the same type again: better skip the tick.
                raise cloud_error from None
            detail = failure_detail(view.get("statuses") or [])
            is_spot = str((vm.get("properties") or {}).get("priority", "")).lower() == "spot"
            known = (detail, failure_class_of(classify_failed_provisioning(detail, is_spot=is_spot)))
            with self._lock:
                self._failures[vm_key] = known
        detail, failure = known
        return replace(
            instance,
            detail=detail,
            failure_kind=failure.kind,
            failure_code=failure.code,
            failure_ttl_s=failure.ttl_s,
        )

    def _head_addresses(self, vm: Mapping[str, Any]) -> tuple[str, str]:
        """The head's IPs: one NIC read (public IP expanded into it) the first time, then from memory."""
        vm_key = str(vm.get("id", "")).lower()
        with self._lock:
            known = self._addresses.get(vm_key)
        if known is not None:
            return known
        interfaces = ((vm.get("properties") or {}).get("networkProfile") or {}).get("networkInterfaces") or []
        nic_name = str(interfaces[0]["id"]).rsplit("/", 1)[-1] if interfaces else f"{vm['name']}-nic"
        try:
            nic = self.network.network_interfaces.get(
                self.resource_group, nic_name, expand="ipConfigurations/publicIPAddress"
            ).as_dict()
        except AzureError as error:
            logger.warning("head NIC %s could not be read yet: %s", nic_name, from_azure_error(error))
            return "", ""
        private_ip, public_ip = "", ""
        for configuration in (nic.get("properties") or {}).get("ipConfigurations") or []:
            ip_properties = configuration.get("properties") or {}
            private_ip = private_ip or str(ip_properties.get("privateIPAddress") or "")
            public = (ip_properties.get("publicIPAddress") or {}).get("properties") or {}
            public_ip = public_ip or str(public.get("ipAddress") or "")
        if private_ip:
            with self._lock:
                self._addresses[vm_key] = (private_ip, public_ip)
        return private_ip, public_ip

    def remember_address(self, cloud_instance_id: str, private_ip: str, public_ip: str = "") -> None:
        """Seed the head's address (e.g. from stored cluster state) so a fresh process needs no NIC read."""
        with self._lock:
            self._addresses[cloud_instance_id.lower()] = (private_ip, public_ip)

    # ------------------------------------------------------------------ launch

    def launch(self, request: LaunchRequest) -> None:
        """One VM PUT, not waited on. Idempotent: the VM name derives from the instance id."""
        parameters = self._arm_parameters(request)
        subnet_id = self.ensure_network()  # remembered after the first call: no ARM request in steady state
        vm_name = vm_name_for(request.cluster_name, request.instance_id)
        body = self._vm_body(request, parameters, vm_name, subnet_id)
        try:
            self.compute.virtual_machines.begin_create_or_update(
                self.resource_group, vm_name, self._compute_models.VirtualMachine(body), polling=False
            )
        except AzureError as error:
            raise from_azure_error(error, is_spot=parameters.is_spot) from None
        logger.info(
            "launch started: cluster=%s instance=%s type=%s vm=%s request=%s",
            request.cluster_name,
            request.instance_id,
            request.node_type,
            vm_name,
            request.request_id,
        )

    def _arm_parameters(self, request: LaunchRequest) -> AzureArmParameters:
        raw = request.node_config.get("azure_arm_parameters")
        if raw is None:
            raise InvalidRequestError(f"node type {request.node_type} has no node_config.azure_arm_parameters")
        try:
            return AzureArmParameters.model_validate(raw)
        except ValueError as error:
            raise InvalidRequestError(f"node type {request.node_type}: invalid azure_arm_parameters: {error}") from None

    def _zone_for(self, request: LaunchRequest) -> str:
        if request.availability_zone:
            return request.availability_zone
        zones = self.config.provider.zones()
        if not zones:
            return ""
        # Spread by a hash of the instance id rather than a counter: a retried launch must ask for the same zone,
        # or Azure refuses the PUT as a change of an immutable property.
        index = int.from_bytes(hashlib.sha256(request.instance_id.encode()).digest()[:4], "big") % len(zones)
        return zones[index]

    def _tags(self, request: LaunchRequest) -> dict[str, str]:
        return {
            TAG_CLUSTER: request.cluster_name,
            TAG_NODE_TYPE: request.node_type,
            TAG_INSTANCE: request.instance_id,
            TAG_REQUEST: request.request_id,
            TAG_MANAGED_BY: MANAGED_BY,
            TAG_NODE_KIND: "head" if request.is_head else "worker",
        }

    def _boot_spec(self, request: LaunchRequest) -> NodeBootSpec:
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
        )

    def _vm_body(
        self, request: LaunchRequest, parameters: AzureArmParameters, vm_name: str, subnet_id: str
    ) -> dict[str, Any]:
        tags = self._tags(request)
        ssh_user = self.config.auth.ssh_user
        # Without a configured key nobody should log in. The stand-in key derives from the cluster token (whoever
        # holds the token controls Ray already), so a retried launch PUTs an identical body.
        public_key = self.config.auth.ssh_public_key or derived_public_key(
            f"ssh/{request.cluster_token}/{request.cluster_name}".encode()
        )
        ip_configuration: dict[str, Any] = {"subnet": {"id": subnet_id}, "primary": True}
        wants_public_ip = (
            request.is_head
            and not self.config.provider.use_internal_ips
            and bool(self.config.provider.ssh_allowed_cidrs)
        )
        if wants_public_ip:
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
        properties: dict[str, Any] = {
            "hardwareProfile": {"vmSize": parameters.vmSize},
            "storageProfile": {"imageReference": self._image_reference(parameters), "osDisk": os_disk},
            "osProfile": {
                "computerName": vm_name,
                "adminUsername": ssh_user,
                "customData": render_custom_data(self._boot_spec(request)),
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
        # The head is always on-demand: losing it loses the cluster.
        if not request.is_head and parameters.is_spot:
            properties["priority"] = parameters.priority
            properties["evictionPolicy"] = parameters.evictionPolicy or "Delete"
            properties["billingProfile"] = {
                "maxPrice": parameters.billingProfile.maxPrice if parameters.billingProfile else -1
            }
        body: dict[str, Any] = {"location": self.location, "tags": tags, "properties": properties}
        zone = self._zone_for(request)
        if zone:
            body["zones"] = [zone]
        # No "identity": cluster VMs hold no Azure rights (principle 6).
        return body

    @staticmethod
    def _image_reference(parameters: AzureArmParameters) -> dict[str, str]:
        if parameters.imageId:
            return {"id": parameters.imageId}
        return {
            "publisher": parameters.imagePublisher or DEFAULT_IMAGE["publisher"],
            "offer": parameters.imageOffer or DEFAULT_IMAGE["offer"],
            "sku": parameters.imageSku or DEFAULT_IMAGE["sku"],
            "version": parameters.imageVersion or DEFAULT_IMAGE["version"],
        }

    # ------------------------------------------------------------------ network

    def ensure_network(self) -> str:
        """Create the cluster's NSG, VNet/subnet and its peerings with the app's VNet if missing (not waited on);
        return the nodes subnet id.

        Costs one read once the network exists and is peered (then remembered), and writes only what is missing.
        A user-given subnet (`provider.subnet_id`) is the user's network: nothing is created or peered, and the
        user makes it reachable from the app's subnet (docs/deploy.md).
        """
        subnet_id = self.nodes_subnet_id()
        with self._lock:
            if self._network_ready or self.config.provider.subnet_id:
                return subnet_id
        cluster = self.config.cluster_name
        try:
            vnet = self._get_or_none(
                lambda: self.network.virtual_networks.get(self.resource_group, network.vnet_name(cluster))
            )
            network_complete = vnet is not None and self._network_complete(vnet)
            peered = vnet is not None and self._peered_with_app(vnet, cluster)
            if network_complete and peered:
                with self._lock:
                    self._network_ready = True
                return subnet_id
            if not network_complete:
                self._create_network(cluster)
            if not peered:
                # Right after the VNet PUT, Azure may refuse a peering until the VNet is provisioned: that error
                # fails this launch, and the retried launch (next tick) finds the VNet and peers it.
                self._peer_with_app(cluster, vnet)
        except AzureError as error:
            raise from_azure_error(error) from None
        return subnet_id

    def _create_network(self, cluster: str) -> None:
        vnet_range, subnet_range = network.address_space(cluster)
        nsg_body = {
            "location": self.location,
            "tags": network.network_tags(cluster),
            "properties": {
                "securityRules": network.security_rules(
                    subnet_range, self._function_subnet_prefix(), list(self.config.provider.ssh_allowed_cidrs)
                )
            },
        }
        nsg = self.network.network_security_groups.begin_create_or_update(
            self.resource_group,
            network.nsg_name(cluster),
            self._network_models.NetworkSecurityGroup(nsg_body),
            polling=False,
        ).result()
        vnet_body = {
            "location": self.location,
            "tags": network.network_tags(cluster),
            "properties": {
                "addressSpace": {"addressPrefixes": [vnet_range]},
                "subnets": [
                    {
                        "name": network.NODES_SUBNET_NAME,
                        "properties": {
                            "addressPrefix": subnet_range,
                            "networkSecurityGroup": {"id": nsg.as_dict()["id"]},
                            # New subnets have no default outbound access any more; nodes need it to install
                            # Ray and packages unless the user brings a subnet with a NAT gateway.
                            "defaultOutboundAccess": True,
                        },
                    }
                ],
            },
        }
        self.network.virtual_networks.begin_create_or_update(
            self.resource_group,
            network.vnet_name(cluster),
            self._network_models.VirtualNetwork(vnet_body),
            polling=False,
        )
        logger.info("network creation started for cluster %s", cluster)

    @staticmethod
    def _network_complete(vnet: Mapping[str, Any]) -> bool:
        properties = vnet.get("properties") or {}
        if properties.get("provisioningState") != "Succeeded":
            return False
        return any(
            subnet.get("name") == network.NODES_SUBNET_NAME
            and (subnet.get("properties") or {}).get("networkSecurityGroup")
            for subnet in properties.get("subnets") or []
        )

    def _cluster_side_peering(self, vnet: Mapping[str, Any] | None, cluster: str) -> Mapping[str, Any] | None:
        """The cluster VNet's peering towards the app's VNet, as the VNet read shows it inline."""
        if vnet is None or self.app_subnet is None:
            return None
        app_vnet_id = self.app_subnet.vnet_id.lower()
        for peering in (vnet.get("properties") or {}).get("virtualNetworkPeerings") or []:
            remote = ((peering.get("properties") or {}).get("remoteVirtualNetwork") or {}).get("id", "")
            if peering.get("name") == network.cluster_to_app_peering_name(cluster) and remote.lower() == app_vnet_id:
                return dict(peering)
        return None

    def _peered_with_app(self, vnet: Mapping[str, Any], cluster: str) -> bool:
        """Whether the cluster VNet (as read) is peered both ways with the app's VNet: its own peering is
        Connected only once the app side exists too. True when there is no app VNet to peer with."""
        if self.app_subnet is None:
            return True
        peering = self._cluster_side_peering(vnet, cluster)
        return peering is not None and (peering.get("properties") or {}).get("peeringState") == "Connected"

    def _peer_with_app(self, cluster: str, vnet: Mapping[str, Any] | None) -> None:
        """Start both peerings, cluster -> app and app -> cluster (a peering needs a link on each side)."""
        app = self.app_subnet
        if app is None:
            return
        existing = self._cluster_side_peering(vnet, cluster)
        if existing is not None and (existing.get("properties") or {}).get("peeringState") == "Disconnected":
            # The app side was deleted after both were connected: Azure reconnects only after the cluster side is
            # deleted too and both are created again. Start the deletion; the retried launch re-creates both.
            self.network.virtual_network_peerings.begin_delete(
                self.resource_group, network.vnet_name(cluster), existing["name"], polling=False
            )
            raise TransientError(f"peering {existing['id']} was disconnected: deleted, to be created again")
        self.network.virtual_network_peerings.begin_create_or_update(
            self.resource_group,
            network.vnet_name(cluster),
            network.cluster_to_app_peering_name(cluster),
            self._network_models.VirtualNetworkPeering(_peering_body(app.vnet_id)),
            polling=False,
        )
        self.app_network.virtual_network_peerings.begin_create_or_update(
            app.resource_group,
            app.vnet_name,
            network.app_to_cluster_peering_name(cluster),
            self._network_models.VirtualNetworkPeering(_peering_body(self.cluster_vnet_id(cluster))),
            polling=False,
        )
        logger.info("peering of cluster %s with the app VNet %s started", cluster, app.vnet_id)

    def _function_subnet_prefix(self) -> str | None:
        """The function app's subnet range (one read, at network creation); None when the app has no subnet."""
        app = self.app_subnet
        if app is None:
            return None
        subnet = self.app_network.subnets.get(app.resource_group, app.vnet_name, app.subnet_name).as_dict()
        properties = subnet.get("properties") or {}
        prefix = properties.get("addressPrefix") or (properties.get("addressPrefixes") or [None])[0]
        return str(prefix) if prefix else None

    def _get_or_none(self, read: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            return dict(read().as_dict())
        except AzureError as error:
            if isinstance(from_azure_error(error), NotFoundError):
                return None
            raise

    # ------------------------------------------------------------------ terminate

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        """Start deleting the instance's VM (its NIC, disk and IP follow); already gone is success."""
        with self._lock:
            vm_name = self._vm_names.get(instance_id)
        try:
            if vm_name is None:
                # Not in the last list: check ownership by tags before deleting by the derived name.
                vm_name = vm_name_for(cluster_name, instance_id)
                vm = self._get_or_none(lambda: self.compute.virtual_machines.get(self.resource_group, vm_name))
                if vm is None:
                    return
                if not self._is_ours(vm, cluster_name) or (vm.get("tags") or {}).get(TAG_INSTANCE) != instance_id:
                    raise InvalidRequestError(f"VM {vm_name} is not instance {instance_id} of cluster {cluster_name}")
            self.compute.virtual_machines.begin_delete(self.resource_group, vm_name, polling=False)
        except AzureError as error:
            cloud_error = from_azure_error(error)
            if isinstance(cloud_error, NotFoundError):
                return
            raise cloud_error from None
        logger.info("terminate started: cluster=%s instance=%s vm=%s", cluster_name, instance_id, vm_name)

    # ------------------------------------------------------------------ destroy

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        """Delete what is left, by tags: VMs, then NICs/public IPs/disks, then the VNet and NSG we created.
        The resource group is the user's and stays. Deletions are started, not waited on; `InUse` answers are
        retried a few times with backoff, and whatever still refuses is reported as remaining."""
        removed: list[str] = []
        remaining: list[str] = []
        notes: list[str] = []

        def delete(resource_id: str, start: Callable[[], Any]) -> None:
            outcome = self._delete_with_retry(start)
            if outcome is None:
                removed.append(resource_id)
            elif isinstance(outcome, NotFoundError):
                notes.append(f"already gone: {resource_id}")
            else:
                remaining.append(resource_id)
                notes.append(f"{resource_id}: {outcome}")

        try:
            detached_disks: list[str] = []
            for vm in self.compute.virtual_machines.list(self.resource_group):
                data = vm.as_dict()
                if self._is_ours(data, cluster_name):
                    detached_disks += _disks_kept_after_vm(data)
                    delete(
                        data["id"], _bind(self.compute.virtual_machines.begin_delete, self.resource_group, data["name"])
                    )
            # A disk the VM keeps (deleteOption Detach, e.g. a VM made by an older version) carries no tags of ours:
            # it is ours because our VM referenced it.
            for disk_id in detached_disks:
                parts = disk_id.split("/")
                delete(disk_id, _bind(self.compute.disks.begin_delete, parts[4], parts[-1]))
            leftovers: list[tuple[Callable[..., Any], Iterable[Any]]] = [
                (
                    self.network.network_interfaces.begin_delete,
                    self.network.network_interfaces.list(self.resource_group),
                ),
                (
                    self.network.public_ip_addresses.begin_delete,
                    self.network.public_ip_addresses.list(self.resource_group),
                ),
                (self.compute.disks.begin_delete, self.compute.disks.list_by_resource_group(self.resource_group)),
            ]
            for begin_delete, listing in leftovers:
                for item in listing:
                    data = item.as_dict()
                    if self._is_ours(data, cluster_name):
                        delete(data["id"], _bind(begin_delete, self.resource_group, data["name"]))
            if not self.config.provider.subnet_id:
                self._delete_app_side_peering(cluster_name, delete, notes)
                vnet = self._get_or_none(
                    lambda: self.network.virtual_networks.get(self.resource_group, network.vnet_name(cluster_name))
                )
                if vnet is not None and self._is_ours(vnet, cluster_name):
                    for peering in (vnet.get("properties") or {}).get("virtualNetworkPeerings") or []:
                        delete(
                            peering["id"],
                            _bind_peering(
                                self.network.virtual_network_peerings.begin_delete,
                                self.resource_group,
                                vnet["name"],
                                peering["name"],
                            ),
                        )
                    delete(
                        vnet["id"], _bind(self.network.virtual_networks.begin_delete, self.resource_group, vnet["name"])
                    )
                nsg = self._get_or_none(
                    lambda: self.network.network_security_groups.get(
                        self.resource_group, network.nsg_name(cluster_name)
                    )
                )
                if nsg is not None and self._is_ours(nsg, cluster_name):
                    delete(
                        nsg["id"],
                        _bind(self.network.network_security_groups.begin_delete, self.resource_group, nsg["name"]),
                    )
        except AzureError as error:
            raise from_azure_error(error) from None
        with self._lock:
            self._network_ready = False
            self._addresses.clear()
            self._vm_names.clear()
        return DestroyReport(removed=tuple(removed), remaining=tuple(remaining), notes=tuple(notes))

    def _delete_app_side_peering(
        self, cluster_name: str, delete: Callable[[str, Callable[[], Any]], None], notes: list[str]
    ) -> None:
        """Delete the app VNet's peering towards this cluster (the app VNet itself is not ours). Peerings carry no
        tags: the name says it is ours only if it points at this cluster's VNet."""
        app = self.app_subnet
        if app is None:
            return
        name = network.app_to_cluster_peering_name(cluster_name)
        peering = self._get_or_none(
            lambda: self.app_network.virtual_network_peerings.get(app.resource_group, app.vnet_name, name)
        )
        if peering is None:
            return
        remote = str(((peering.get("properties") or {}).get("remoteVirtualNetwork") or {}).get("id", ""))
        if remote.lower() != self.cluster_vnet_id(cluster_name).lower():
            notes.append(f"left alone: {peering['id']} peers with {remote}, not this cluster's VNet")
            return
        delete(
            peering["id"],
            _bind_peering(
                self.app_network.virtual_network_peerings.begin_delete, app.resource_group, app.vnet_name, name
            ),
        )

    def _delete_with_retry(self, start: Callable[[], Any]) -> CloudError | None:
        """None when the deletion was accepted; else the error that stopped it. Transient refusals (InUse while
        a holder is still being deleted, a resource busy with another operation) are retried with backoff."""
        backoff_s = self.settings.delete_retry_backoff_s
        attempts_left = self.settings.delete_retries
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


def _peering_body(remote_vnet_id: str) -> dict[str, Any]:
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


def _bind(begin_delete: Callable[..., Any], resource_group: str, name: str) -> Callable[[], Any]:
    """A deletion to start later, not waited on."""
    return lambda: begin_delete(resource_group, name, polling=False)


def _bind_peering(
    begin_delete: Callable[..., Any], resource_group: str, vnet_name: str, peering_name: str
) -> Callable[[], Any]:
    """A peering deletion to start later, not waited on."""
    return lambda: begin_delete(resource_group, vnet_name, peering_name, polling=False)
