"""Virtual machine scale sets in Flexible orchestration, as the ARM emulator serves them.

What is modelled, and where each rule comes from (Azure/azure-rest-api-specs, specification/compute/resource-manager/
Microsoft.Compute/Compute/stable/2026-04-01/ComputeRP.json, the api-version azure-mgmt-compute 39.0.0 sends, unless
another source is named):

- `PUT .../virtualMachineScaleSets/{name}` (VirtualMachineScaleSets_CreateOrUpdate) and `PATCH` (_Update): the set
  keeps `sku.capacity` VMs. Only `orchestrationMode: Flexible` is emulated (a Uniform set is answered 501, an
  emulator limit, not Azure's answer). `orchestrationMode` cannot change after creation (docs: virtual-machine-scale-
  sets-orchestration-modes, "The orchestration mode is defined when you create the scale set and cannot be changed
  or updated later"): 409 PropertyChangeNotAllowed. Request bodies are held to arm_rules' VirtualMachineScaleSet rules.
- Scale-out: the new VMs are ordinary `Microsoft.Compute/virtualMachines` of the resource group (listed by the
  resource-group VM list, as Flexible VMs are), named `{scale set name}_{8 hex}` (docs: virtual-machine-scale-sets-
  instance-ids, "Flexible orchestration mode instance name: {scale-set-name}_{8-char-guid}"; "the instance ID is simply
  the name of the virtual machine"), with `properties.virtualMachineScaleSet.id` naming the set. They appear over
  time: one every `scale_out_interval_s` after the write, each `Creating` for the emulator's `vm_create_s`. The
  set's operation (provisioningState `Updating`) ends when the last one exists. The VMs carry NO tags of their own:
  Azure documents no copy of the set's tags onto the VMs it creates, so the emulator makes none and the provider
  must not depend on one.
- Spot Priority Mix (`priorityMixPolicy`, docs: virtual-machine-scale-sets/spot-priority-mix.md): needs Flexible
  orchestration and a Spot VM profile; of the set's VMs, the first `baseRegularPriorityCount` are Regular, and of the
  ones above the base, `regularPriorityPercentageAboveBase` percent (rounded up) are Regular, the rest Spot. Each VM
  shows its own `properties.priority`.
- `POST .../{name}/delete` {instanceIds} (VirtualMachineScaleSets_DeleteInstances): for Flexible sets the instance ids
  are VM names (docs above; Azure/azure-sdk-for-go#19588). Every id must be a VM of this set (400 InvalidParameter,
  target instanceIds, otherwise: nothing is deleted); the VMs go `Deleting` and the capacity drops by their number,
  as a scale-in does.
- Spot eviction with policy Delete (`ArmEmulator.evict`) deletes the VM and lowers the capacity by one (docs:
  virtual-machine-scale-sets/use-spot.md: with Delete, evicted VMs are deleted; the set does not put them back
  unless `spotRestorePolicy` is on, which the emulator does not model).
- `DELETE .../{name}` deletes the set and every VM in it (with what their `deleteOption: Delete` takes along).
- Writes to a set while its operation runs: an identical PUT joins it; another is 409 Conflict (Compute's answer for
  a concurrent request, as for VMs, errors.vm_concurrent_request).
- Compute's throttling: a PUT/PATCH is charged to the PutVMScaleSet policies, a DELETE or delete-instances to the
  DeleteVMScaleSet policies, and every VM a write adds or removes to VMScaleSetBatchedVMRequests5Min ("Batch
  requests, such as for scaling a virtual machine scale set, can charge multiple counts": troubleshooting-throttling-
  errors, whose sample headers name these policies), see throttling.py.

Standby pools (Microsoft.StandbyPool) are not emulated: no SDK for them is installed and the provider does not call
them (docs/decisions/scale-sets.md).
"""

from __future__ import annotations

import json
import math
import secrets
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.support.arm import errors
from tests.support.arm.errors import ArmHttpError, JsonDict

if TYPE_CHECKING:
    from tests.support.arm.emulator import ArmEmulator, _Resource

SCALE_SET_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
VM_TYPE = "Microsoft.Compute/virtualMachines"
DEFAULT_SCALE_OUT_INTERVAL_S = 0.02


@dataclass
class ScaleSetState:
    """What the emulator keeps besides the set's body: VMs still to appear, in order."""

    pending: list[tuple[float, str]] = field(default_factory=list)  # (appears at, VM name)
    created: int = 0  # VMs made so far (priority mix counts them in creation order)


def regular_count(capacity: int, policy: JsonDict | None) -> int:
    """How many of `capacity` VMs Spot Priority Mix makes Regular."""
    if not policy:
        return 0
    base = int(policy.get("baseRegularPriorityCount") or 0)
    percent = int(policy.get("regularPriorityPercentageAboveBase") or 0)
    if capacity <= base:
        return capacity
    return base + math.ceil((capacity - base) * percent / 100)


class ScaleSets:
    """The scale-set routes of one ArmEmulator (called under its lock)."""

    def __init__(self, arm: ArmEmulator, scale_out_interval_s: float = DEFAULT_SCALE_OUT_INTERVAL_S) -> None:
        self.arm = arm
        self.scale_out_interval_s = scale_out_interval_s
        self.states: dict[str, ScaleSetState] = {}

    # ---------------------------------------------------------------- routing

    def request(
        self, method: str, resource_group: str, name: str, action: str, document: JsonDict
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        scale_set_id = self.arm._resource_id(resource_group, "virtualmachinescalesets", name)
        if action == "delete" and method == "POST":
            return self._delete_instances(scale_set_id, document)
        if action:
            raise ArmHttpError(404, "InvalidResourceType", f"no route for {scale_set_id}/{action}")
        if method == "GET":
            return 200, {}, self.arm._render(self.arm._get(scale_set_id), expand="")
        if method == "DELETE":
            return self._delete_set(scale_set_id)
        if method in ("PUT", "PATCH"):
            return self._write(method, scale_set_id, resource_group, name, document)
        raise ArmHttpError(405, "MethodNotAllowed", f"{method} on virtualMachineScaleSets")

    # ---------------------------------------------------------------- create, update, scale

    def _write(
        self, method: str, scale_set_id: str, resource_group: str, name: str, document: JsonDict
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        key = self.arm._key(scale_set_id)
        existing = self.arm._resources.get(key)
        if existing is None and method == "PATCH":
            raise ArmHttpError(404, "ResourceNotFound", f"The Resource '{scale_set_id}' was not found.")
        if existing is not None:
            self._refuse_concurrent(existing, document)
        merged = self._merged(existing, document) if method == "PATCH" else json.loads(json.dumps(document))
        properties = merged.setdefault("properties", {})
        mode = str(properties.get("orchestrationMode") or "")
        if existing is not None and mode.lower() != str(existing.body["properties"].get("orchestrationMode")).lower():
            raise ArmHttpError(409, "PropertyChangeNotAllowed", "Changing property 'orchestrationMode' is not allowed.")
        if mode.lower() != "flexible":
            raise ArmHttpError(501, "NotImplemented", "the emulator models scale sets in Flexible orchestration only")
        capacity = int((merged.get("sku") or {}).get("capacity") or 0)
        body: JsonDict = {
            "id": scale_set_id,
            "name": name,
            "type": SCALE_SET_TYPE,
            "location": merged.get("location", self.arm.location),
            "tags": merged.get("tags") or {},
            "sku": merged.get("sku") or {},
            "properties": properties,
        }
        for optional in ("zones", "identity", "plan"):
            if optional in merged:
                body[optional] = merged[optional]
        properties["uniqueId"] = existing.body["properties"]["uniqueId"] if existing else str(uuid.uuid4())
        properties.pop("provisioningState", None)
        self._check_subnets(body)
        state = self.states.get(key) or ScaleSetState()
        have = len(self.members(scale_set_id)) + len(state.pending)
        charged = self.arm._charge_batched(abs(capacity - have))  # before anything changes: a 429 changes nothing
        resource = existing
        if resource is None:
            from tests.support.arm.emulator import _Resource

            resource = _Resource(body)
            self.arm._resources[key] = resource
            self.states[key] = state
        else:
            resource.body = body
        self._scale_to(resource, capacity)
        self.refresh_capacity(resource)
        goal = json.dumps(document, sort_keys=True)
        operation = self.arm._start_operation(
            scale_set_id,
            SCALE_SET_TYPE,
            "update" if existing else "create",
            observations=0,
            duration_s=self._duration(key),
        )
        resource.operation_id = operation.operation_id
        resource.goal_digest = goal
        resource.body["properties"]["provisioningState"] = "Updating" if existing else "Creating"
        headers = {**self.arm._put_headers(operation.operation_id), **charged}
        snapshot = self.arm._render(resource, expand="")
        self.arm._complete_if_due(operation.operation_id)
        return (200 if existing else 201), headers, snapshot

    def _refuse_concurrent(self, existing: _Resource, document: JsonDict) -> None:
        if existing.body["properties"].get("provisioningState") == "Deleting":
            raise errors.vm_marked_for_deletion(existing.body["name"], "Update VM Scale Set")
        ongoing = self.arm._in_progress(existing.operation_id)
        if (
            self.arm.check_references
            and ongoing is not None
            and json.dumps(document, sort_keys=True) != (existing.goal_digest)
        ):
            raise errors.vm_concurrent_request()

    @staticmethod
    def _merged(existing: _Resource | None, patch: JsonDict) -> JsonDict:
        """A PATCH (VirtualMachineScaleSetUpdate) changes what it names: sku, tags, and properties it carries."""
        assert existing is not None
        merged: JsonDict = json.loads(json.dumps(existing.body))
        if "sku" in patch:
            merged["sku"] = {**merged.get("sku", {}), **(patch.get("sku") or {})}
        if "tags" in patch:
            merged["tags"] = patch.get("tags") or {}
        for name, value in (patch.get("properties") or {}).items():
            merged["properties"][name] = value
        return merged

    def _check_subnets(self, body: JsonDict) -> None:
        """The subnet every NIC configuration joins must exist and be provisioned (as for a VM's inline NICs)."""
        profile = body["properties"].get("virtualMachineProfile") or {}
        for configuration in (profile.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []:
            for ip_configuration in (configuration.get("properties") or {}).get("ipConfigurations") or []:
                subnet_id = ((ip_configuration.get("properties") or {}).get("subnet") or {}).get("id", "")
                self.arm._require_subnet(subnet_id, body["id"])

    def members(self, scale_set_id: str) -> list[_Resource]:
        """The set's live VMs (not being deleted), oldest first."""
        key = scale_set_id.lower()
        found = [
            resource
            for resource in self.arm._resources.values()
            if resource.body["type"] == VM_TYPE
            and str((resource.body["properties"].get("virtualMachineScaleSet") or {}).get("id", "")).lower() == key
            and resource.body["properties"].get("provisioningState") != "Deleting"
        ]
        return sorted(found, key=lambda resource: int(resource.body["properties"].get("_createdOrder", 0)))

    def _scale_to(self, resource: _Resource, capacity: int) -> int:
        """Schedule the VMs that bring the set to `capacity` (or delete the newest above it); the VMs changed."""
        key = self.arm._key(resource.body["id"])
        state = self.states[key]
        live = self.members(resource.body["id"])
        have = len(live) + len(state.pending)
        if capacity > have:
            now = self.arm._clock()
            start = max([now, *(appears for appears, _ in state.pending)])
            for index in range(capacity - have):
                vm_name = f"{resource.body['name']}_{secrets.token_hex(4)}"
                state.pending.append((start + (index + 1) * self.scale_out_interval_s, vm_name))
            return capacity - have
        surplus = have - capacity
        removed = 0
        while surplus > 0 and state.pending:
            state.pending.pop()
            surplus -= 1
            removed += 1
        for vm in reversed(live[len(live) - surplus :] if surplus else []):
            self.arm._delete(vm.body["id"], 0)
            removed += 1
        return removed

    def _duration(self, key: str) -> float:
        state = self.states.get(key)
        if state is None or not state.pending:
            return 0.0
        return max(0.0, state.pending[-1][0] - self.arm._clock())

    def advance(self) -> None:
        """Make every VM whose time has come (the emulator's _advance calls this first)."""
        now = self.arm._clock()
        for key, state in list(self.states.items()):
            resource = self.arm._resources.get(key)
            if resource is None:
                self.states.pop(key, None)
                continue
            while state.pending and state.pending[0][0] <= now:
                _, vm_name = state.pending.pop(0)
                self._create_member(resource, state, vm_name)
            self.refresh_capacity(resource)

    def _create_member(self, scale_set: _Resource, state: ScaleSetState, vm_name: str) -> None:
        body = scale_set.body
        profile = body["properties"].get("virtualMachineProfile") or {}
        resource_group = body["id"].split("/")[4]
        live = self.members(body["id"])
        regular_now = sum(1 for vm in live if vm.body["properties"].get("priority", "Regular") == "Regular")
        is_spot_profile = str(profile.get("priority", "")).lower() == "spot"
        wanted_regular = regular_count(len(live) + 1, body["properties"].get("priorityMixPolicy"))
        spot = is_spot_profile and regular_now >= wanted_regular
        os_profile = dict(profile.get("osProfile") or {})
        os_profile["computerName"] = f"{os_profile.pop('computerNamePrefix', vm_name)}{secrets.token_hex(3)}"
        network = profile.get("networkProfile") or {}
        properties: JsonDict = {
            "hardwareProfile": {"vmSize": (body.get("sku") or {}).get("name", "")},
            "storageProfile": json.loads(json.dumps(profile.get("storageProfile") or {})),
            "osProfile": os_profile,
            "networkProfile": {
                "networkApiVersion": network.get("networkApiVersion"),
                "networkInterfaceConfigurations": [
                    {**configuration, "name": f"{vm_name}-{configuration['name']}"}
                    for configuration in network.get("networkInterfaceConfigurations") or []
                ],
            },
            "virtualMachineScaleSet": {"id": body["id"]},
            "priority": "Spot" if spot else "Regular",
            "_createdOrder": state.created,
        }
        properties["storageProfile"].setdefault("osDisk", {}).pop("name", None)
        if spot:
            properties["evictionPolicy"] = profile.get("evictionPolicy") or "Deallocate"
            properties["billingProfile"] = profile.get("billingProfile") or {"maxPrice": -1}
        document: JsonDict = {"location": body.get("location"), "tags": {}, "properties": properties}
        zones = body.get("zones") or []
        if zones:
            document["zones"] = [zones[state.created % len(zones)]]
        state.created += 1
        vm_id = self.arm._resource_id(resource_group, "virtualmachines", vm_name)
        self.arm._create_vm(vm_id, resource_group, vm_name, document, observations=0, failure=None)

    # ---------------------------------------------------------------- delete instances, delete the set

    def _delete_instances(self, scale_set_id: str, document: JsonDict) -> tuple[int, dict[str, str], JsonDict | None]:
        resource = self.arm._get(scale_set_id)
        instance_ids = document.get("instanceIds")
        if not isinstance(instance_ids, list) or not instance_ids:
            raise ArmHttpError(
                400, "InvalidParameter", "Required parameter 'instanceIds' is missing (null).", target="instanceIds"
            )
        by_name = {vm.body["name"].lower(): vm for vm in self.members(scale_set_id)}
        unknown = [str(name) for name in instance_ids if str(name).lower() not in by_name]
        if unknown:
            raise ArmHttpError(
                400,
                "InvalidParameter",
                f"The provided instanceId {unknown[0]} is not an active Virtual Machine Scale Set VM instanceId.",
                target="instanceIds",
            )
        chosen = {str(name).lower() for name in instance_ids}
        charged = self.arm._charge_batched(len(chosen))
        for name in chosen:
            self.arm._delete(by_name[name].body["id"], 0)
        self.refresh_capacity(resource)
        operation = self.arm._start_operation(
            scale_set_id, SCALE_SET_TYPE, "update", observations=0, duration_s=self.arm.delete_s
        )
        resource.operation_id = operation.operation_id
        resource.body["properties"]["provisioningState"] = "Updating"
        headers = {**self.arm._delete_headers(operation), **charged}
        self.arm._complete_if_due(operation.operation_id)
        return 202, headers, None

    def _delete_set(self, scale_set_id: str) -> tuple[int, dict[str, str], JsonDict | None]:
        key = self.arm._key(scale_set_id)
        if key not in self.arm._resources:
            return 204, {}, None
        state = self.states.get(key)
        if state is not None:
            state.pending.clear()
        for vm in self.members(scale_set_id):
            self.arm._delete(vm.body["id"], 0)
        return self.arm._delete(scale_set_id, 0)

    def refresh_capacity(self, scale_set: _Resource) -> None:
        """`sku.capacity` is the number of VMs the set has or is making: a VM deleted by any path (delete-instances,
        a DELETE of the VM itself, a spot eviction with policy Delete) lowers it (see the module docstring)."""
        state = self.states.get(self.arm._key(scale_set.body["id"]))
        pending = len(state.pending) if state is not None else 0
        scale_set.body.setdefault("sku", {})["capacity"] = len(self.members(scale_set.body["id"])) + pending
