"""Cluster VMs as instances: list them (ONE read in steady state), launch one (ONE write), terminate one.

ARM calls are a budget (docs/decisions/arm-call-budget.md): `list` is `virtual_machines.list(resource_group)`
(provisioning state and tags; the role is granted on that group only, so a subscription-wide list would be
refused). Two things cost one more read, once, then come from memory: the head's private IP (a NIC read the
first time the head is seen running, unless the reconcile shell seeded it from stored state with `remember_address`)
and the failure code of a VM whose provisioning failed (its instance view).
Long-running operations are started and never waited on; the next tick's list shows their outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from azure.core.exceptions import AzureError

from autoscaler.model import CloudInstance, CloudState, LaunchRequest
from autoscaler.ports import InvalidRequestError, NotFoundError, TransientError
from provisioning.azure import network
from provisioning.azure.clients import ArmClients, get_or_none
from provisioning.azure.errors import (
    FailureClass,
    classify_failed_provisioning,
    failure_class_of,
    from_azure_error,
)
from provisioning.azure.scale_sets import ScaleSetOwnership
from provisioning.azure.vm_template import TAG_NODE_KIND, VmTemplate, arm_parameters, vm_name_for

logger = logging.getLogger(__name__)

FAILED_WITHOUT_CODE = "ProvisioningFailed"


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


class ClusterInstances:
    """The VMs of one resource group that belong to a cluster, with what is remembered between ticks."""

    def __init__(
        self,
        clients: ArmClients,
        template: VmTemplate,
        resource_group: str,
        pool_types: Mapping[str, str] | None = None,  # scale set name (lower) -> node type: scale_sets.pool_types
    ) -> None:
        self.clients = clients
        self.template = template
        self.resource_group = resource_group
        self.pool_types = dict(pool_types or {})
        self.ownership = ScaleSetOwnership()
        self._pool_vms: dict[str, str] = {}  # pool VM name (lower) -> its scale set's name, from the last list
        self._lock = threading.Lock()
        self._addresses: dict[str, tuple[str, str]] = {}  # head VM id (lower) -> (private IP, public IP)
        self._vm_names: dict[str, str] = {}  # instance id -> VM name, from the last list
        self._failures: dict[str, tuple[str, FailureClass]] = {}  # failed VM id (lower) -> (detail, class)

    def forget(self) -> None:
        with self._lock:
            self._addresses.clear()
            self._vm_names.clear()
            self._failures.clear()
            self._pool_vms.clear()
        self.ownership.forget()

    # ------------------------------------------------------------------ list

    def list(self, cluster_name: str) -> list[CloudInstance]:
        try:
            virtual_machines = [vm.as_dict() for vm in self.clients.compute.virtual_machines.list(self.resource_group)]
        except AzureError as error:
            raise from_azure_error(error) from None
        instances: list[CloudInstance] = []
        names: dict[str, str] = {}
        pool_vms: dict[str, str] = {}
        for vm in virtual_machines:
            scale_set = self._scale_set_of(vm, cluster_name)
            if scale_set:
                instance = self._pool_instance(vm, cluster_name, self.pool_types[scale_set.lower()])
                pool_vms[str(vm["name"]).lower()] = scale_set
            elif network.is_ours(vm, cluster_name, self.resource_group):
                instance = self._instance_from_vm(vm, cluster_name)
            else:
                continue
            names[instance.instance_id] = vm["name"]
            instances.append(instance)
        listed = {instance.cloud_instance_id.lower() for instance in instances}
        with self._lock:
            self._vm_names = names
            self._pool_vms = pool_vms
            self._failures = {key: failure for key, failure in self._failures.items() if key in listed}
        return instances

    def _scale_set_of(self, vm: Mapping[str, Any], cluster_name: str) -> str:
        """The name of the cluster's scale set this VM belongs to, or "" (docs/decisions/scale-sets.md, "Binding")."""
        reference = str(((vm.get("properties") or {}).get("virtualMachineScaleSet") or {}).get("id", ""))
        segments = reference.split("/")
        if len(segments) < 9 or segments[4].lower() != self.resource_group.lower():
            return ""
        name = segments[8]
        if name.lower() not in self.pool_types:
            return ""
        ours = self.ownership.known(reference)
        if ours is None:
            try:
                scale_set = self.clients.compute.virtual_machine_scale_sets.get(self.resource_group, name).as_dict()
            except AzureError as error:
                cloud_error = from_azure_error(error)
                if isinstance(cloud_error, NotFoundError):
                    return ""  # the set is gone (its VMs go with it)
                raise cloud_error from None
            ours = network.is_ours(scale_set, cluster_name, self.resource_group)
            self.ownership.remember(reference, ours)
        return name if ours else ""

    def _pool_instance(self, vm: Mapping[str, Any], cluster_name: str, node_type: str) -> CloudInstance:
        """A VM of a scale-set node type: its instance id is its own name; the shell binds it to a record."""
        properties = vm.get("properties") or {}
        state, detail = cloud_state_of(str(properties.get("provisioningState", "")))
        zones = vm.get("zones") or []
        instance = CloudInstance(
            instance_id=str(vm["name"]),
            cluster_name=cluster_name,
            node_type=node_type,
            request_id="",
            state=state,
            cloud_instance_id=str(vm.get("id", "")),
            detail=detail,
            pool=node_type,
            availability_zone=str(zones[0]) if zones else "",
            priority=str(properties.get("priority") or "").lower(),
        )
        return self._with_failure(instance, vm) if state is CloudState.FAILED else instance

    def pool_scale_set(self, instance_id: str) -> str | None:
        """The scale set of a pool VM (by the last list, or by its name: "{scale set}_{8 characters}"), or None."""
        with self._lock:
            known = self._pool_vms.get(instance_id.lower())
        if known is not None:
            return known
        prefix, separator, suffix = instance_id.rpartition("_")
        if separator and len(suffix) == 8 and prefix.lower() in self.pool_types:
            return prefix
        return None

    def was_listed(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id.lower() in self._pool_vms

    def _instance_from_vm(self, vm: Mapping[str, Any], cluster_name: str) -> CloudInstance:
        tags = vm.get("tags") or {}
        properties = vm.get("properties") or {}
        state, detail = cloud_state_of(str(properties.get("provisioningState", "")))
        is_head = tags.get(TAG_NODE_KIND) == "head"
        private_ip, public_ip = "", ""
        if is_head and state is CloudState.RUNNING:
            private_ip, public_ip = self._head_addresses(vm)
        instance = CloudInstance(
            instance_id=tags.get(network.TAG_INSTANCE, ""),
            cluster_name=cluster_name,
            node_type=tags.get(network.TAG_NODE_TYPE, ""),
            request_id=tags.get(network.TAG_REQUEST, ""),
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
                view = self.clients.compute.virtual_machines.instance_view(self.resource_group, str(vm["name"]))
            except AzureError as error:
                cloud_error = from_azure_error(error)
                if isinstance(cloud_error, NotFoundError):
                    return instance  # deleted since the list: the next list no longer shows it
                # Not knowing why it failed would launch the same type again: better skip the tick.
                raise cloud_error from None
            detail = failure_detail(view.as_dict().get("statuses") or [])
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
            nic = self.clients.network.network_interfaces.get(
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
        """Seed the head's address (from stored cluster state) so a fresh process needs no NIC read."""
        if not cloud_instance_id or not private_ip:
            return
        with self._lock:
            self._addresses.setdefault(cloud_instance_id.lower(), (private_ip, public_ip))

    # ------------------------------------------------------------------ launch, terminate

    def launch(self, request: LaunchRequest, subnet_id: str, **call_options: Any) -> None:
        """One VM PUT, not waited on. Idempotent: the VM name derives from the instance id."""
        self.prepare_launch(request, subnet_id)(**call_options)

    def prepare_launch(self, request: LaunchRequest, subnet_id: str) -> Callable[..., None]:
        """The VM body rendered now (InvalidRequestError if it cannot be), and the PUT to send it, to call later (a
        burst renders in one thread and sends from several)."""
        is_spot = arm_parameters(request).is_spot
        vm_name = vm_name_for(request.cluster_name, request.instance_id)
        model = self.clients.compute_models.VirtualMachine(self.template.body(request, vm_name, subnet_id))

        def put(**call_options: Any) -> None:
            try:
                self.clients.compute.virtual_machines.begin_create_or_update(
                    self.resource_group, vm_name, model, polling=False, **call_options
                )
            except AzureError as error:
                raise from_azure_error(error, is_spot=is_spot) from None
            logger.info(
                "launch started: cluster=%s instance=%s type=%s vm=%s request=%s",
                request.cluster_name,
                request.instance_id,
                request.node_type,
                vm_name,
                request.request_id,
            )

        return put

    def terminate(self, cluster_name: str, instance_id: str, **call_options: Any) -> None:
        """Start deleting the instance's VM (its NIC, disk and IP follow); already gone is success."""
        scale_set = self.pool_scale_set(instance_id)
        if scale_set is not None:
            self.delete_pool_vms(scale_set, [instance_id], **call_options)
            return
        with self._lock:
            vm_name = self._vm_names.get(instance_id)
        try:
            if vm_name is None:
                # Not in the last list: check ownership by tags before deleting by the derived name.
                vm_name = vm_name_for(cluster_name, instance_id)
                name = vm_name
                vm = get_or_none(lambda: self.clients.compute.virtual_machines.get(self.resource_group, name))
                if vm is None:
                    return
                if (
                    not network.is_ours(vm, cluster_name, self.resource_group)
                    or (vm.get("tags") or {}).get(network.TAG_INSTANCE) != instance_id
                ):
                    raise InvalidRequestError(f"VM {vm_name} is not instance {instance_id} of cluster {cluster_name}")
            self.clients.compute.virtual_machines.begin_delete(
                self.resource_group, vm_name, polling=False, **call_options
            )
        except AzureError as error:
            cloud_error = from_azure_error(error)
            if isinstance(cloud_error, NotFoundError):
                return
            raise cloud_error from None
        logger.info("terminate started: cluster=%s instance=%s vm=%s", cluster_name, instance_id, vm_name)

    def delete_pool_vms(self, scale_set: str, vm_names: Sequence[str], **call_options: Any) -> None:
        """ONE `delete instances` call: exactly these VMs of the set go (Azure lowers its capacity by as many).
        Names the last list did not show are already gone (success); a set that is gone has no VM left."""
        with self._lock:
            listed = [name for name in vm_names if name.lower() in self._pool_vms]
        if not listed:
            return
        try:
            self.clients.compute.virtual_machine_scale_sets.begin_delete_instances(
                self.resource_group, scale_set, {"instanceIds": listed}, polling=False, **call_options
            )
        except AzureError as error:
            cloud_error = from_azure_error(error)
            if isinstance(cloud_error, NotFoundError):
                return
            if isinstance(cloud_error, InvalidRequestError) and "instanceid" in str(cloud_error).lower():
                # One of them left the set since the list (an eviction): nothing was deleted. The next tick's list
                # no longer shows it, and the shell asks again for the others.
                raise TransientError(f"scale set {scale_set}: {cloud_error}", code=cloud_error.code) from None
            raise cloud_error from None
        with self._lock:  # they are going: a second terminate of one of them has nothing left to do
            for name in listed:
                self._pool_vms.pop(name.lower(), None)
        logger.info("pool VMs deleting: scale set=%s vms=%s", scale_set, ",".join(listed))
