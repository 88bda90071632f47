"""The custom roles grant exactly the ARM actions the Azure provider performs (issue 6, item 3).

A full lifecycle of the provider runs against the loopback ARM emulator, which records every request (method, path,
body). Each request is mapped to the Azure RBAC actions it needs, and to the scope whose role must grant them:

- the HTTP verb on the resource type: GET -> `<type>/read`, PUT/PATCH -> `<type>/write`, DELETE -> `<type>/delete`,
  POST .../{name}/{verb} -> `<type>/{verb}/action`; the type is the provider namespace plus the path's collection
  segments (`/virtualNetworks/v/subnets/s` -> `Microsoft.Network/virtualNetworks/subnets`);
- the linked access checks ARM makes on resources a request references (the joins), from the request body:
  a NIC in a subnet needs `Microsoft.Network/virtualNetworks/subnets/join/action` on that subnet; an NSG on a NIC or
  subnet needs `networkSecurityGroups/join/action`; a VM with a NIC needs `networkInterfaces/join/action`; a public IP
  on a NIC needs `publicIPAddresses/join/action`;
- resources another resource provider creates for us (Compute creates the NIC and public IP a VM declares inline in
  `networkInterfaceConfigurations`): `networkInterfaces/write`, `publicIPAddresses/write`;
- a peering from VNet A to VNet B needs `virtualNetworkPeerings/write` on A and `virtualNetworks/peer/action` on the
  remote VNet B; the provider peers both ways, so each role needs both.

Some checks Azure does not document; they count as "possibly checked": an action the role may keep, never one the
test demands. (The asymmetry is deliberate: an action missing from the role breaks production with
AuthorizationFailed, an extra one only widens the grant.) They are: subnets declared inline in a VNet PUT
(`subnets/write`) or removed with the VNet (`subnets/delete`), rules declared inline in an NSG PUT
(`securityRules/write`), what a VM delete removes through `deleteOption: Delete` (NIC, public IP, OS disk), and the
public IP expanded into a NIC read. The OS disk a VM PUT creates from an image is Compute's own (no disks/write);
disks/write is the tagging of a disk an old VM keeps after its deletion (teardown.py), so that it is found later.

Scopes: requests under the clusters' resource group are the clusters role's (`infra/roles/autoscaler-actions.json`,
assigned on that group); requests on the function app's VNet are the app VNet role's
(`infra/roles/app-network-peering-actions.json`, assigned on that VNet). A subscription-wide request (e.g. the VM
`list_all`) is authorized at subscription scope, where neither role is assigned: the mapping refuses it.

The lifecycle runs against the emulator's strict mode (Azure's operation timings, reference refusals, paged lists,
request-body rules; ARM_EMULATOR_STRICT=0 for the lenient one), waiting between steps as the reconcile shell's ticks
do, so that it takes the paths a real cluster takes (e.g. a failed VM's instance view, read once it has failed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from autoscaler.config import ClusterConfig, parse_cluster_config
from provisioning.azure.network import MANAGED_BY
from provisioning.azure.provider import AzureCloudProvider, AzureSettings
from tests.support.arm_emulator import STRICT_ENV, ArmEmulator, Fault, FaultKind
from tests.support.arm_rules import validate_request
from tests.support.provider_contract import launch_request_for

ROLES_DIR = Path(__file__).resolve().parents[2] / "infra" / "roles"
CLUSTERS_ROLE_FILE = ROLES_DIR / "autoscaler-actions.json"
APP_VNET_ROLE_FILE = ROLES_DIR / "app-network-peering-actions.json"
CLUSTERS_SCOPE = "clusters resource group"
APP_VNET_SCOPE = "app VNet"

RESOURCE_GROUP = "rg-dev-clusters"
APP_RESOURCE_GROUP = "rg-dev"
APP_VNET = "vnet-app"
HEAD_TYPE = "ray.head.default"
SPOT_TYPE = "ray.worker.spot"
POOL_TYPE = "ray.worker.pool"  # a scale-set node type (docs/decisions/scale-sets.md)
IMAGE = {"imagePublisher": "Canonical", "imageOffer": "ubuntu-24_04-lts", "imageSku": "server"}

# Resource types the provider may touch, in Azure's spelling of RBAC actions; a request on any other type fails
# the mapping, so a new code path cannot slip past this test unmapped.
KNOWN_TYPES = {
    name.lower(): name
    for name in (
        "Microsoft.Compute/virtualMachines",
        "Microsoft.Compute/virtualMachines/instanceView",
        "Microsoft.Compute/virtualMachineScaleSets",
        "Microsoft.Compute/disks",
        "Microsoft.Compute/locations/operations",
        "Microsoft.Network/networkInterfaces",
        "Microsoft.Network/publicIPAddresses",
        "Microsoft.Network/networkSecurityGroups",
        "Microsoft.Network/virtualNetworks",
        "Microsoft.Network/virtualNetworks/subnets",
        "Microsoft.Network/virtualNetworks/virtualNetworkPeerings",
        "Microsoft.Network/locations/operations",
    )
}
VERBS = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
VM = "Microsoft.Compute/virtualMachines"
SCALE_SET = "Microsoft.Compute/virtualMachineScaleSets"
NIC = "Microsoft.Network/networkInterfaces"
PUBLIC_IP = "Microsoft.Network/publicIPAddresses"
NSG = "Microsoft.Network/networkSecurityGroups"
SUBNET = "Microsoft.Network/virtualNetworks/subnets"
VNET = "Microsoft.Network/virtualNetworks"
PEERING = "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"


# ------------------------------------------------------------------------------------------ recording


@dataclass(frozen=True)
class ArmRequest:
    method: str
    path: str
    query: dict[str, str]
    document: dict[str, Any]


class RecordingArmEmulator(ArmEmulator):
    """The emulator, keeping every request with its body (the joins are read from bodies). Strict unless
    ARM_EMULATOR_STRICT=0, and checking every request body against Azure's rules."""

    def __init__(self) -> None:
        strict = os.environ.get(STRICT_ENV, "").strip().lower() not in ("0", "false", "no")
        super().__init__(strict=strict, request_validator=validate_request)
        self.recorded: list[ArmRequest] = []

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        split = urlsplit(raw_path)
        query = {key.lower(): values[-1] for key, values in parse_qs(split.query).items()}
        self.recorded.append(ArmRequest(method, split.path.rstrip("/"), query, json.loads(body) if body else {}))
        return super().handle(method, raw_path, headers, body)


# ------------------------------------------------------------------------------------------ the mapping


@dataclass(frozen=True)
class Permission:
    action: str
    resource_id: str  # what it is checked on: decides the scope, hence the role
    required: bool  # False: possibly checked (see the module docstring)
    because: str  # the request that needs it


@dataclass
class PermissionMapper:
    app_vnet_id: str
    # VM and VNet bodies as last PUT, by lower-cased path: a DELETE carries no body, but what it removes depends on it.
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def scope_of(self, resource_id: str) -> str:
        lowered = resource_id.lower()
        if lowered == self.app_vnet_id.lower() or lowered.startswith(self.app_vnet_id.lower() + "/"):
            return APP_VNET_SCOPE
        segments = lowered.split("/")
        if len(segments) > 4 and segments[3] == "resourcegroups" and segments[4] == RESOURCE_GROUP.lower():
            return CLUSTERS_SCOPE
        raise AssertionError(f"{resource_id} is in no scope that a role of the app is assigned on")

    def permissions(self, request: ArmRequest) -> list[Permission]:
        because = f"{request.method} {request.path}"
        resource_type, is_action = resource_type_of(request.path, request.method)
        verb = f"{request.path.rsplit('/', 1)[-1]}/action" if is_action else VERBS[request.method]
        found = [Permission(f"{resource_type}/{verb}", request.path, True, because)]
        key = request.path.lower()
        if request.method == "PUT":
            self.bodies[key] = request.document
            found += implicit_on_write(resource_type, request.path, request.document, because)
        elif request.method == "DELETE":
            found += implicit_on_delete(resource_type, request.path, self.bodies.pop(key, {}), because)
        elif request.method == "GET" and "publicipaddress" in request.query.get("$expand", "").lower():
            found.append(Permission(f"{PUBLIC_IP}/read", request.path, False, because))
        return found


def resource_type_of(path: str, method: str) -> tuple[str, bool]:
    """(the RBAC resource type of a request path, whether it is a POST action)."""
    segments = [segment for segment in path.split("/") if segment]
    lowered = [segment.lower() for segment in segments]
    start = lowered.index("providers")
    namespace, rest = segments[start + 1], segments[start + 2 :]
    is_action = method == "POST"
    if is_action:
        rest = rest[:-1]
    name = "/".join([namespace, *rest[0::2]])
    canonical = KNOWN_TYPES.get(name.lower())
    if canonical is None:
        raise AssertionError(f"{method} {path}: resource type {name} has no mapping here; add it with its reason")
    return canonical, is_action


def implicit_on_write(resource_type: str, path: str, document: dict[str, Any], because: str) -> list[Permission]:
    properties = document.get("properties") or {}
    found: list[Permission] = []
    if resource_type == VM:
        found += _nics(path, properties.get("networkProfile") or {}, because)
    if resource_type == SCALE_SET:
        # A Flexible set's VMs get the NICs its profile declares, as a VM gets its inline NICs.
        found += _nics(path, (properties.get("virtualMachineProfile") or {}).get("networkProfile") or {}, because)
    if resource_type == "Microsoft.Network/virtualNetworks":
        for subnet in properties.get("subnets") or []:
            subnet_properties = subnet.get("properties") or {}
            found.append(Permission(f"{SUBNET}/write", path, False, because))
            if subnet_properties.get("networkSecurityGroup"):
                nsg_id = subnet_properties["networkSecurityGroup"]["id"]
                found.append(Permission(f"{NSG}/join/action", nsg_id, True, because))
    if resource_type == NSG and properties.get("securityRules"):
        found.append(Permission(f"{NSG}/securityRules/write", path, False, because))
    if resource_type == PEERING:
        remote_vnet_id = properties["remoteVirtualNetwork"]["id"]
        found.append(Permission(f"{VNET}/peer/action", remote_vnet_id, True, because))
    return found


def _nics(path: str, network_profile: dict[str, Any], because: str) -> list[Permission]:
    """The NICs a VM (or a scale set's VM profile) references or declares."""
    found = [
        Permission(f"{NIC}/join/action", reference["id"], True, because)
        for reference in network_profile.get("networkInterfaces") or []
    ]
    for configuration in network_profile.get("networkInterfaceConfigurations") or []:
        found += _inline_nic(path, configuration.get("properties") or {}, because)
    return found


def _inline_nic(vm_path: str, nic_properties: dict[str, Any], because: str) -> list[Permission]:
    """A NIC the VM PUT declares: Compute creates it (NIC write) and the VM joins it (NIC join)."""
    found = [
        Permission(f"{NIC}/write", vm_path, True, because),
        Permission(f"{NIC}/join/action", vm_path, True, because),
    ]
    if nic_properties.get("networkSecurityGroup"):
        found.append(Permission(f"{NSG}/join/action", nic_properties["networkSecurityGroup"]["id"], True, because))
    for ip_configuration in nic_properties.get("ipConfigurations") or []:
        ip_properties = ip_configuration.get("properties") or {}
        if ip_properties.get("subnet"):
            found.append(Permission(f"{SUBNET}/join/action", ip_properties["subnet"]["id"], True, because))
        if ip_properties.get("publicIPAddress"):
            found.append(Permission(f"{PUBLIC_IP}/join/action", ip_properties["publicIPAddress"]["id"], True, because))
        if ip_properties.get("publicIPAddressConfiguration"):
            found.append(Permission(f"{PUBLIC_IP}/write", vm_path, True, because))
            found.append(Permission(f"{PUBLIC_IP}/join/action", vm_path, True, because))
    return found


def implicit_on_delete(resource_type: str, path: str, body: dict[str, Any], because: str) -> list[Permission]:
    """What a delete removes along with the resource (as last PUT by us; unknown bodies remove nothing else)."""
    properties = body.get("properties") or {}
    found: list[Permission] = []
    if resource_type == VM:
        if ((properties.get("storageProfile") or {}).get("osDisk") or {}).get("deleteOption") == "Delete":
            found.append(Permission("Microsoft.Compute/disks/delete", path, False, because))
        for configuration in (properties.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []:
            nic_properties = configuration.get("properties") or {}
            if nic_properties.get("deleteOption") == "Delete":
                found.append(Permission(f"{NIC}/delete", path, False, because))
            for ip_configuration in nic_properties.get("ipConfigurations") or []:
                public = (ip_configuration.get("properties") or {}).get("publicIPAddressConfiguration") or {}
                if (public.get("properties") or {}).get("deleteOption") == "Delete":
                    found.append(Permission(f"{PUBLIC_IP}/delete", path, False, because))
    if resource_type == "Microsoft.Network/virtualNetworks" and properties.get("subnets"):
        found.append(Permission(f"{SUBNET}/delete", path, False, because))
    return found


# ------------------------------------------------------------------------------------------ the check


@dataclass(frozen=True)
class UsedActions:
    required: dict[str, list[str]]  # action -> the requests that need it (one scope)
    possible: set[str]


def used_actions(permissions: Iterable[Permission], mapper: PermissionMapper, scope: str) -> UsedActions:
    required: dict[str, list[str]] = {}
    possible: set[str] = set()
    for permission in permissions:
        if mapper.scope_of(permission.resource_id) != scope:
            continue
        if permission.required:
            required.setdefault(permission.action, []).append(permission.because)
        else:
            possible.add(permission.action)
    return UsedActions(required, possible - set(required))


def role_problems(role_actions: Iterable[str], used: UsedActions) -> list[str]:
    """What is wrong with a role for these uses: actions it lacks, and actions no code path uses."""
    granted = {action.lower(): action for action in role_actions}
    needed = {action.lower() for action in used.required} | {action.lower() for action in used.possible}
    missing = [
        f"missing {action} (needed by {used.required[action][0]})"
        for action in sorted(used.required)
        if action.lower() not in granted
    ]
    unused = [f"unused {granted[action]}" for action in sorted(granted) if action not in needed]
    return missing + unused


def load_role(path: Path) -> list[str]:
    actions = json.loads(path.read_text())
    assert isinstance(actions, list)
    return [str(action) for action in actions]


# ------------------------------------------------------------------------------------------ the lifecycle


def make_config(subscription_id: str, cluster_name: str, **provider: Any) -> ClusterConfig:
    document = {
        "cluster_name": cluster_name,
        "max_workers": 10,
        "provider": {
            "type": "azure",
            "location": "eastus",
            "resource_group": RESOURCE_GROUP,
            "subscription_id": subscription_id,
            **provider,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            HEAD_TYPE: {
                "resources": {"CPU": 2},
                "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D2s_v3", **IMAGE}},
            },
            SPOT_TYPE: {
                "resources": {"CPU": 4},
                "max_workers": 10,
                "node_config": {
                    "azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE, "priority": "Spot"},
                },
            },
            POOL_TYPE: {
                "resources": {"CPU": 4},
                "max_workers": 10,
                "node_config": {
                    "azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE, "priority": "Spot"},
                    "azure_scale_set": {},
                },
            },
        },
        "head_node_type": HEAD_TYPE,
    }
    return parse_cluster_config(document).config


def launch(
    provider: AzureCloudProvider, config: ClusterConfig, instance_id: str, node_type: str, pool_target: int = 0
) -> None:
    provider.launch(
        launch_request_for(
            config,
            instance_id,
            node_type,
            cluster_token="role-test-token",
            head_address="10.0.0.4:6379",
            pool_target=pool_target,
        )
    )


# VMs, then what they kept (deleteOption Detach), then the VNet, then the NSG: Azure refuses each while the former
# still holds it, and deletions are started, not waited on.
DESTROY_TICKS = 4


def next_tick(arm: ArmEmulator) -> None:
    """What the reconcile shell's next tick (15 s later) sees: every ARM operation started so far has ended."""
    assert arm.settle(), f"{arm.operations_in_progress()} ARM operations still in progress"


def run_lifecycle(arm: ArmEmulator, config: ClusterConfig, function_subnet_id: str) -> None:
    """Everything the provider does to a cluster: network, head and spot workers, list, terminate, destroy."""
    settings = AzureSettings(
        subscription_id=arm.subscription_id,
        function_subnet_id=function_subnet_id,
        base_url=arm.base_url,
        connection_verify=arm.ca_path,
        retry_backoff_factor_s=0.01,
        retry_backoff_max_s=0.05,
        delete_retry_backoff_s=0.01,
    )
    provider = AzureCloudProvider(config, arm.credential(), settings)
    cluster = config.cluster_name
    provider.ensure_network()
    launch(provider, config, "head0001", HEAD_TYPE)
    # One worker's allocation fails after the PUT was accepted: the list reads its instance view for the code.
    arm.inject(
        Fault("PUT", r"/virtualMachines/[^/]*worker0002$", kind=FaultKind.ASYNC_FAILURE, code="AllocationFailed")
    )
    for index in range(3):
        launch(provider, config, f"worker{index:04d}", SPOT_TYPE)
    launch(provider, config, "pool0001", POOL_TYPE, pool_target=2)  # the scale set, grown by one capacity write
    next_tick(arm)
    listed = provider.list_instances(cluster)  # with the head's NIC read and the failed worker's instance view
    provider.terminate(cluster, "worker0000")  # listed: deleted by its known name
    pool_vms = [instance.instance_id for instance in listed if instance.pool == POOL_TYPE]
    assert len(pool_vms) == 2, listed
    provider.terminate_many(cluster, pool_vms[:1])  # exactly the chosen VM of the set (delete instances)
    # A fresh process (another function instance) knows no names: it checks the VM's tags first.
    fresh = AzureCloudProvider(config, arm.credential(), settings)
    fresh.ensure_network()
    fresh.terminate(cluster, "worker0001")
    fresh.terminate(cluster, "never-launched")
    # Left behind by an older version: a VM whose NIC, public IP and disk survive it (deleteOption Detach).
    arm.seed_vm(
        RESOURCE_GROUP,
        f"ray-{cluster}-leftover",
        provider.nodes_subnet_id(),
        tags={"ray-cluster-name": cluster, "managed-by": MANAGED_BY},
        with_public_ip=True,
    )
    # Destroyed as the reconcile shell destroys a cluster: once a tick until the report is complete.
    reports = [provider.destroy_cluster(cluster)]
    while not reports[-1].complete and len(reports) < DESTROY_TICKS:
        next_tick(arm)
        reports.append(provider.destroy_cluster(cluster))
    assert reports[-1].complete, reports[-1].notes
    next_tick(arm)


@dataclass(frozen=True)
class Recorded:
    mapper: PermissionMapper
    permissions: list[Permission]


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    arm = RecordingArmEmulator()
    arm.start()
    try:
        function_subnet_id = arm.seed_subnet(APP_RESOURCE_GROUP, APP_VNET, "functions", "10.250.0.0/24")
        user_subnet_id = arm.seed_subnet(RESOURCE_GROUP, "user-vnet", "nodes", "10.20.0.0/16")
        # Its own network with a public IP on the head (SSH allowed); then a given subnet and no public IP.
        own_network = make_config(arm.subscription_id, "own-net", ssh_allowed_cidrs=["203.0.113.0/24"])
        run_lifecycle(arm, own_network, function_subnet_id)
        run_lifecycle(arm, make_config(arm.subscription_id, "given-subnet", subnet_id=user_subnet_id), "")
    finally:
        arm.stop()
    mapper = PermissionMapper(app_vnet_id=function_subnet_id.split("/subnets/")[0])
    return Recorded(mapper, [permission for request in arm.recorded for permission in mapper.permissions(request)])


# ------------------------------------------------------------------------------------------ tests


def test_lifecycle_exercised_every_kind_of_request_the_role_is_about(recorded: Recorded) -> None:
    """Guards the check itself: a lifecycle that skipped a path would make 'unused' findings meaningless."""
    actions = {permission.action for permission in recorded.permissions if permission.required}

    assert {
        f"{VM}/read",
        f"{VM}/instanceView/read",
        f"{VM}/write",
        f"{VM}/delete",
        f"{NIC}/read",
        f"{NIC}/delete",
        f"{PUBLIC_IP}/write",
        f"{PUBLIC_IP}/delete",
        f"{NSG}/write",
        f"{NSG}/delete",
        "Microsoft.Network/virtualNetworks/write",
        "Microsoft.Network/virtualNetworks/delete",
        f"{SUBNET}/join/action",
        f"{VNET}/read",
        "Microsoft.Compute/disks/delete",
        "Microsoft.Compute/disks/write",
        f"{VNET}/peer/action",
        f"{PEERING}/write",
        f"{PEERING}/read",
        f"{PEERING}/delete",
        f"{SCALE_SET}/read",
        f"{SCALE_SET}/write",
        f"{SCALE_SET}/delete",
        f"{SCALE_SET}/delete/action",
    } <= actions


def test_clusters_role_grants_every_action_the_provider_performs(recorded: Recorded) -> None:
    used = used_actions(recorded.permissions, recorded.mapper, CLUSTERS_SCOPE)

    missing = [
        problem for problem in role_problems(load_role(CLUSTERS_ROLE_FILE), used) if problem.startswith("missing")
    ]

    assert missing == []


def test_app_vnet_role_grants_every_action_the_provider_performs_on_the_app_vnet(recorded: Recorded) -> None:
    used = used_actions(recorded.permissions, recorded.mapper, APP_VNET_SCOPE)

    missing = [
        problem for problem in role_problems(load_role(APP_VNET_ROLE_FILE), used) if problem.startswith("missing")
    ]

    assert used.required  # the function subnet's range is read for the NSG rules
    assert missing == []


@pytest.mark.parametrize(
    ("role_file", "scope"),
    [(CLUSTERS_ROLE_FILE, CLUSTERS_SCOPE), (APP_VNET_ROLE_FILE, APP_VNET_SCOPE)],
    ids=["clusters-role", "app-vnet-role"],
)
def test_role_grants_no_action_that_no_code_path_uses(recorded: Recorded, role_file: Path, scope: str) -> None:
    used = used_actions(recorded.permissions, recorded.mapper, scope)

    unused = [problem for problem in role_problems(load_role(role_file), used) if problem.startswith("unused")]

    assert unused == [], f"{role_file.name} grants actions no code path uses: {unused}"


# ------------------------------------------------------------------------------------------ the check checks


def exact_role(used: UsedActions) -> list[str]:
    return sorted(used.required)


def test_check_passes_a_role_with_exactly_the_used_actions(recorded: Recorded) -> None:
    used = used_actions(recorded.permissions, recorded.mapper, CLUSTERS_SCOPE)

    assert role_problems(exact_role(used), used) == []


def test_check_fails_a_role_missing_any_one_action(recorded: Recorded) -> None:
    used = used_actions(recorded.permissions, recorded.mapper, CLUSTERS_SCOPE)
    role = exact_role(used)

    for removed in role:
        problems = role_problems([action for action in role if action != removed], used)
        assert [problem.split(" (")[0] for problem in problems] == [f"missing {removed}"]


def test_check_fails_a_role_with_an_extra_action(recorded: Recorded) -> None:
    used = used_actions(recorded.permissions, recorded.mapper, CLUSTERS_SCOPE)
    extra = "Microsoft.Compute/virtualMachines/runCommand/action"

    assert role_problems([*exact_role(used), extra], used) == [f"unused {extra}"]


def test_mapping_reads_joins_from_the_vm_body() -> None:
    mapper = PermissionMapper(app_vnet_id="/subscriptions/s/resourceGroups/rg-dev/providers/Microsoft.Network/x")
    subnet_id = (
        f"/subscriptions/s/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Network/virtualNetworks/v/subnets/n"
    )
    nic_configuration = {
        "name": "nic",
        "properties": {
            "deleteOption": "Delete",
            "ipConfigurations": [
                {
                    "name": "ip",
                    "properties": {
                        "subnet": {"id": subnet_id},
                        "publicIPAddressConfiguration": {"name": "pip", "properties": {"deleteOption": "Delete"}},
                    },
                }
            ],
        },
    }
    vm_path = f"/subscriptions/s/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/virtualMachines/vm"
    body = {"properties": {"networkProfile": {"networkInterfaceConfigurations": [nic_configuration]}}}

    on_put = {(p.action, p.required) for p in mapper.permissions(ArmRequest("PUT", vm_path, {}, body))}
    on_delete = {(p.action, p.required) for p in mapper.permissions(ArmRequest("DELETE", vm_path, {}, {}))}

    assert on_put == {
        (f"{VM}/write", True),
        (f"{NIC}/write", True),
        (f"{NIC}/join/action", True),
        (f"{SUBNET}/join/action", True),
        (f"{PUBLIC_IP}/write", True),
        (f"{PUBLIC_IP}/join/action", True),
    }
    assert on_delete == {(f"{VM}/delete", True), (f"{NIC}/delete", False), (f"{PUBLIC_IP}/delete", False)}
