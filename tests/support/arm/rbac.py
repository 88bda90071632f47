"""Azure RBAC as ARM evaluates it, for the requests the emulator serves.

- A role is a set of `Actions` minus `NotActions`; a `*` in either matches any run of characters (also across `/`),
  and actions compare case-insensitively (MicrosoftDocs azure-docs, articles/role-based-access-control/
  role-definitions.md: "Actions", "NotActions", wildcard permissions). The repo's role files
  (infra/roles/*.json) are plain action lists, which infra puts in `permissions[0].actions` with empty `notActions`
  (infra/app/cluster-access.bicep, app-access.bicep); Azure's role-definition documents
  (`{"Actions": [...], "NotActions": [...]}` or `{"properties": {"permissions": [...]}}`) load too.
- An assignment applies at its scope and every scope below it (role-based-access-control/scope-overview.md):
  subscription > resource group > resource > child resource.
- A request needs `<type>/read|write|delete` (POST `.../{verb}` needs `<type>/{verb}/action`) on its own path, else
  403 AuthorizationFailed. A write that links to other resources needs an action on each of them too (ARM's linked
  access check), else 403 LinkedAuthorizationFailed: a NIC's subnet (`subnets/join/action`), NSG
  (`networkSecurityGroups/join/action`) and public IP (`publicIPAddresses/join/action`); a VM's NICs
  (`networkInterfaces/join/action`, and for NICs and public IPs it declares inline, which Compute creates for the
  caller, their `write` too) and its image (`images/read`, or a gallery image's `read`); a subnet's NSG; a peering's
  remote VNet (`virtualNetworks/peer/action`). Sources: virtual-network/virtual-network-network-interface.md and
  virtual-network-manage-subnet.md ("Permissions"), virtual-network-manage-peering.md ("Permissions"),
  and the LinkedAuthorizationFailed answers quoted in errors.py.
- Not checked: polling an operation the caller started (its status URL), and what a delete removes along with its
  target (deleteOption cascades): Azure documents neither as a separate check.

tests/integration/test_role_actions.py derives the same actions from recorded requests (it also lists the checks
Azure does not document as "possibly checked"; those are not enforced here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
ROLES_DIR = REPO_ROOT / "infra" / "roles"
CLUSTERS_ROLE_FILE = ROLES_DIR / "autoscaler-actions.json"
APP_VNET_ROLE_FILE = ROLES_DIR / "app-network-peering-actions.json"

VERBS = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
NIC = "Microsoft.Network/networkInterfaces"
PUBLIC_IP = "Microsoft.Network/publicIPAddresses"
NSG = "Microsoft.Network/networkSecurityGroups"
VNET = "Microsoft.Network/virtualNetworks"
SUBNET = "Microsoft.Network/virtualNetworks/subnets"
PEERING = "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"
VM = "Microsoft.Compute/virtualMachines"
SCALE_SET = "Microsoft.Compute/virtualMachineScaleSets"
ROUTE_TABLE = "Microsoft.Network/routeTables"

# Azure's spelling of the resource types the emulator serves (RBAC actions keep the provider's casing).
_CANONICAL_TYPES = {
    name.lower(): name
    for name in (
        VM,
        SCALE_SET,
        "Microsoft.Compute/virtualMachines/instanceView",
        "Microsoft.Compute/disks",
        NIC,
        PUBLIC_IP,
        NSG,
        VNET,
        SUBNET,
        PEERING,
    )
}


# ------------------------------------------------------------------------------------------ roles


def _pattern(action: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in action.split("*")), re.IGNORECASE)


@dataclass(frozen=True)
class RoleDefinition:
    """`actions` minus `not_actions`, with `*` wildcards."""

    name: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()

    def allows(self, action: str) -> bool:
        return any(_pattern(granted).fullmatch(action) for granted in self.actions) and not any(
            _pattern(denied).fullmatch(action) for denied in self.not_actions
        )


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value or ())


def _lower_keys(document: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key).lower(): value for key, value in document.items()}


def role_from_document(document: Any, name: str = "role") -> RoleDefinition:
    """A role from a plain action list, `{"Actions", "NotActions"}`, or a role definition with `permissions`."""
    if isinstance(document, list):
        return RoleDefinition(name, _strings(document))
    if not isinstance(document, Mapping):
        raise ValueError(f"{name}: not a role definition")
    fields = _lower_keys(document)
    if "properties" in fields and isinstance(fields["properties"], Mapping):
        fields = {**fields, **_lower_keys(fields["properties"])}
    name = str(fields.get("rolename") or fields.get("name") or name)
    if "permissions" in fields:
        actions: list[str] = []
        not_actions: list[str] = []
        for permission in fields["permissions"] or []:
            lowered = _lower_keys(permission)
            actions += _strings(lowered.get("actions"))
            not_actions += _strings(lowered.get("notactions"))
        return RoleDefinition(name, tuple(actions), tuple(not_actions))
    return RoleDefinition(name, _strings(fields.get("actions")), _strings(fields.get("notactions")))


def load_role(path: Path | str) -> RoleDefinition:
    path = Path(path)
    return role_from_document(json.loads(path.read_text()), path.stem)


def as_role(actions_or_role: RoleDefinition | Path | str | Iterable[str]) -> RoleDefinition:
    """What `ArmEmulator.grant` takes: a role, a role file, or the actions themselves."""
    if isinstance(actions_or_role, RoleDefinition):
        return actions_or_role
    if isinstance(actions_or_role, Path) or (isinstance(actions_or_role, str) and actions_or_role.endswith(".json")):
        return load_role(actions_or_role)
    if isinstance(actions_or_role, str):
        return RoleDefinition("custom", (actions_or_role,))
    return RoleDefinition("custom", tuple(actions_or_role))


def _normalize_scope(scope: str) -> str:
    return "/" + scope.strip("/").lower() if scope.strip("/") else "/"


@dataclass(frozen=True)
class RoleAssignment:
    principal_id: str
    role: RoleDefinition
    scope: str

    def covers(self, target: str) -> bool:
        scope, target = _normalize_scope(self.scope), _normalize_scope(target)
        return scope in ("/", target) or target.startswith(scope + "/")


def resource_group_scope(subscription_id: str, resource_group: str) -> str:
    return f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"


def app_role_assignments(
    subscription_id: str, clusters_resource_group: str, app_vnet_id: str, principal_id: str
) -> list[RoleAssignment]:
    """The app identity's roles where infra assigns them: the clusters role (infra/roles/autoscaler-actions.json) on
    the clusters' resource group (infra/main.bicep deploys infra/app/cluster-access.bicep at
    `resourceGroup(effectiveClustersResourceGroupName)`), and the peering role
    (infra/roles/app-network-peering-actions.json) on the app's VNet (infra/app/app-access.bicep,
    `vnetPeeringRoleAssignment` with `scope: vnet`)."""
    return [
        RoleAssignment(
            principal_id, load_role(CLUSTERS_ROLE_FILE), resource_group_scope(subscription_id, clusters_resource_group)
        ),
        RoleAssignment(principal_id, load_role(APP_VNET_ROLE_FILE), app_vnet_id),
    ]


# ------------------------------------------------------------------------------------------ what a request needs


@dataclass(frozen=True)
class AccessCheck:
    action: str
    scope: str  # the resource id (or collection path) the action is checked on
    linked: bool  # a linked access check (on a referenced resource), not the request's own


def resource_type_of(path: str, method: str) -> tuple[str, bool]:
    """(the RBAC resource type of a request path, whether it is a POST action)."""
    segments = [segment for segment in path.split("/") if segment]
    lowered = [segment.lower() for segment in segments]
    start = len(lowered) - 1 - lowered[::-1].index("providers")
    namespace, rest = segments[start + 1], segments[start + 2 :]
    is_action = method == "POST"
    if is_action:
        rest = rest[:-1]
    name = "/".join([namespace, *rest[0::2]])
    return _CANONICAL_TYPES.get(name.lower(), name), is_action


def is_operation_status(path: str) -> bool:
    lowered = [segment.lower() for segment in path.split("/") if segment]
    return len(lowered) == 8 and lowered[4] == "locations" and lowered[6] in ("operations", "operationresults")


def access_checks(method: str, path: str, document: Mapping[str, Any] | None) -> list[AccessCheck]:
    """Every action ARM checks for a request, on which scope, and whether as a linked check."""
    if "providers" not in path.lower().split("/") or is_operation_status(path):
        return []
    resource_type, is_action = resource_type_of(path, method)
    verb = f"{path.rstrip('/').rsplit('/', 1)[-1]}/action" if is_action else VERBS.get(method, "write")
    checks = [AccessCheck(f"{resource_type}/{verb}", path, linked=False)]
    if method in ("PUT", "PATCH") and document:
        checks += _linked_checks(resource_type, path, document)
    return checks


def _group_prefix(path: str) -> str:
    """`/subscriptions/{s}/resourceGroups/{rg}/providers` of a resource path."""
    return path[: path.lower().index("/providers/")] + "/providers"


def _linked_checks(resource_type: str, path: str, document: Mapping[str, Any]) -> list[AccessCheck]:  # noqa: C901 -- one branch per kind of linked resource Azure checks
    properties = document.get("properties") or {}
    found: list[AccessCheck] = []
    if resource_type == VM:
        network_profile = properties.get("networkProfile") or {}
        for reference in network_profile.get("networkInterfaces") or []:
            if reference.get("id"):
                found.append(AccessCheck(f"{NIC}/join/action", reference["id"], linked=True))
        for configuration in network_profile.get("networkInterfaceConfigurations") or []:
            nic_id = f"{_group_prefix(path)}/{NIC}/{configuration.get('name', '')}"
            found += [
                AccessCheck(f"{NIC}/write", nic_id, linked=True),
                AccessCheck(f"{NIC}/join/action", nic_id, linked=True),
            ]
            found += _nic_links(path, configuration.get("properties") or {})
        image_id = ((properties.get("storageProfile") or {}).get("imageReference") or {}).get("id")
        if image_id:
            found.append(AccessCheck(_image_read_action(image_id), image_id, linked=True))
    elif resource_type == SCALE_SET:
        found += _scale_set_links(path, properties)
    elif resource_type == NIC:
        found += _nic_links(path, properties)
    elif resource_type == VNET:
        for subnet in properties.get("subnets") or []:
            found += _subnet_links(subnet.get("properties") or {})
    elif resource_type == SUBNET:
        found += _subnet_links(properties)
    elif resource_type == PEERING:
        remote = (properties.get("remoteVirtualNetwork") or {}).get("id")
        if remote:
            found.append(AccessCheck(f"{VNET}/peer/action", remote, linked=True))
    return found


def _scale_set_links(path: str, properties: Mapping[str, Any]) -> list[AccessCheck]:
    """A scale set's VM profile joins its NIC configurations' subnets (and NSGs) and reads its image, as a VM's
    inline NICs do; the NICs themselves are Compute's to create for each VM, checked as the VM's."""
    profile = properties.get("virtualMachineProfile") or {}
    found: list[AccessCheck] = []
    for configuration in (profile.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []:
        found += _nic_links(path, configuration.get("properties") or {})
    image_id = ((profile.get("storageProfile") or {}).get("imageReference") or {}).get("id")
    if image_id:
        found.append(AccessCheck(_image_read_action(image_id), image_id, linked=True))
    return found


def _image_read_action(image_id: str) -> str:
    lowered = image_id.lower()
    if "/galleries/" in lowered:
        return (
            "Microsoft.Compute/galleries/images/versions/read"
            if "/versions/" in lowered
            else "Microsoft.Compute/galleries/images/read"
        )
    return "Microsoft.Compute/images/read"


def _subnet_links(subnet_properties: Mapping[str, Any]) -> list[AccessCheck]:
    found = []
    nsg_id = (subnet_properties.get("networkSecurityGroup") or {}).get("id")
    if nsg_id:
        found.append(AccessCheck(f"{NSG}/join/action", nsg_id, linked=True))
    route_table_id = (subnet_properties.get("routeTable") or {}).get("id")
    if route_table_id:
        found.append(AccessCheck(f"{ROUTE_TABLE}/join/action", route_table_id, linked=True))
    return found


def _nic_links(owner_path: str, nic_properties: Mapping[str, Any]) -> list[AccessCheck]:
    found = []
    nsg_id = (nic_properties.get("networkSecurityGroup") or {}).get("id")
    if nsg_id:
        found.append(AccessCheck(f"{NSG}/join/action", nsg_id, linked=True))
    for ip_configuration in nic_properties.get("ipConfigurations") or []:
        ip_properties = ip_configuration.get("properties") or {}
        subnet_id = (ip_properties.get("subnet") or {}).get("id")
        if subnet_id:
            found.append(AccessCheck(f"{SUBNET}/join/action", subnet_id, linked=True))
        public_ip_id = (ip_properties.get("publicIPAddress") or {}).get("id")
        if public_ip_id:
            found.append(AccessCheck(f"{PUBLIC_IP}/join/action", public_ip_id, linked=True))
        inline_public_ip = ip_properties.get("publicIPAddressConfiguration")
        if inline_public_ip:
            public_ip_id = f"{_group_prefix(owner_path)}/{PUBLIC_IP}/{inline_public_ip.get('name', '')}"
            found += [
                AccessCheck(f"{PUBLIC_IP}/write", public_ip_id, linked=True),
                AccessCheck(f"{PUBLIC_IP}/join/action", public_ip_id, linked=True),
            ]
    return found


def is_allowed(assignments: Iterable[RoleAssignment], principal_id: str, action: str, scope: str) -> bool:
    return any(
        assignment.principal_id.lower() == principal_id.lower()
        and assignment.covers(scope)
        and assignment.role.allows(action)
        for assignment in assignments
    )
