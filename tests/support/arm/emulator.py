"""A loopback Azure Resource Manager emulator: just enough of Compute and Network for our provider and Ray's.

It serves HTTPS on 127.0.0.1 with a throwaway CA from `trustme`; clients trust it through
`connection_verify=emulator.ca_path`. It keeps resources as Azure's JSON shapes and implements:

- virtual machines (PUT/GET/DELETE, list by resource group, list all with `statusOnly=true`, instanceView),
  with inline network interface and public IP configurations (`networkApiVersion`) and `deleteOption` cascade;
  as in Azure, only `list_all(statusOnly=true)` and the instanceView GET carry the instance view (power state,
  `ProvisioningState/failed/<code>`); a resource-group list shows provisioning state and tags only;
- virtual machine scale sets in Flexible orchestration (scale_sets.py): capacity writes whose VMs appear over time
  as ordinary VMs of the resource group, Spot Priority Mix, delete instances by VM name, capacity lowered by
  evictions and deletions, the set's deletion taking its VMs along;
- network interfaces, public IP addresses, disks (list/GET/DELETE; NICs and public IPs also PUT);
- network security groups (with Azure's default rules), virtual networks and subnets;
- virtual network peerings (PUT/GET/DELETE, listed inline in the VNet as Azure does): `peeringState` Initiated
  while only one side exists, Connected once both do, Disconnected when the other side is deleted; overlapping
  address spaces refused (`VnetAddressSpacesOverlap`, `VnetAddressSpaceOverlapsWithAlreadyPeeredVnet`);
- long-running operations: PUT answers 201/200 with `Azure-AsyncOperation`, DELETE 202 with `Location` and
  `Azure-AsyncOperation`, pointing at an operation-status endpoint (and an operation-result endpoint for
  `Location`);
- `InUse` refusals as Azure gives them (NIC attached to a VM, subnet with NICs, NSG used by a subnet...);
- fault injection (`inject(Fault(...))`): a queue of faults matched by method + path regex;
- spot eviction (`evict(vm_name, mode=...)`);
- request counting by method and normalized path, and by read/write, for tests and benchmarks;
- a `request_validator` hook, called for every request before routing; in strict mode it defaults to Azure's request
  rules (tests/support/arm_rules.validate_request) unless `request_rules=False`;
- `error_log`: every error answer (method, path, status, code, message); with ARM_EMULATOR_TRACE=<file> each is also
  appended to that file as a JSON line naming the running test, to see why a suite fails in strict mode;
- `settle()` waits until no operation is in progress (what a test does where production code would poll).

Strict mode (`strict=True`; the default is STRICT_BY_DEFAULT, or the ARM_EMULATOR_STRICT environment variable)
models ARM's real semantics. Each part has its own constructor option, on in strict mode unless given:

- `long_running`: an operation takes time, not just observations: a VM stays `Creating` for `vm_create_s`, a
  network resource (NSG, VNet, peering, NIC, public IP) `Updating` for `network_update_s`, and a deleted resource
  `Deleting` for `delete_s` before it is gone. The status endpoint answers InProgress, then Succeeded or Failed
  (or Canceled). Off: operations complete as soon as they are accepted (or after a SLOW fault's observations).
- `check_references`: a write referencing a resource that is not `Succeeded` is refused with 400
  `ReferencedResourceNotProvisioned`; a write to a network resource with an operation in progress with 429
  `RetryableError`/`RetryableErrorDueToAnotherOperation`; a VM PUT with another goal during its creation with 409
  `Conflict`, during its deletion with 409 `OperationNotAllowed`; a VM deleted while being created has its creation
  end with `OperationPreempted`. A reference to a missing resource is 400 `InvalidResourceReference` in both modes.
- `page_size`: every list is paged with an absolute `nextLink` carrying a `$skipToken` (strict default:
  STRICT_PAGE_SIZE; 0 or None outside strict mode: one page).
- `rbac`: requests are authorized against role assignments given with `grant(...)` / `grant_app_roles(...)`
  (see rbac.py): 403 `AuthorizationFailed` / `LinkedAuthorizationFailed`. `rbac=None` (the default, strict or not)
  enforces RBAC as soon as one grant exists: a test that grants nothing is not authorized-checked; `rbac=True`
  enforces it even with no grant (everything is refused); `rbac=False` never.
- `throttling`: ARM's per-subscription, per-principal read/write/delete buckets and Compute's and Network's own
  budgets (`budgets=ThrottleBudgets(...)`, see throttling.py; Compute's write policies for VMs and scale sets, a
  scale-set write charging one count per VM it adds or removes), reported in `x-ms-ratelimit-remaining-*` headers;
  an exhausted budget answers 429 with Retry-After. With `clock=`, budgets and operations run on the caller's clock.

Usage::

    with ArmEmulator() as arm:
        client = ComputeManagementClient(arm.credential(), arm.subscription_id,
                                         base_url=arm.base_url, connection_verify=arm.ca_path)
"""

from __future__ import annotations

import base64
import enum
import hashlib
import http.server
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import trustme
from azure.core.credentials import AccessToken

from tests.support.arm import errors
from tests.support.arm.errors import ArmHttpError, JsonDict, error_response
from tests.support.arm.rbac import (
    RoleAssignment,
    RoleDefinition,
    access_checks,
    app_role_assignments,
    as_role,
    is_allowed,
    resource_group_scope,
)
from tests.support.arm.scale_sets import DEFAULT_SCALE_OUT_INTERVAL_S, ScaleSets
from tests.support.arm.throttling import BATCHED_VM_REQUESTS, Throttle, ThrottleBudgets, compute_group

# Strict is the default: every Azure suite runs against ARM's real semantics and Azure's request rules
# (tests/support/arm_rules.py). Suites about the emulator's own lenient bookkeeping pass strict=False, and
# ARM_EMULATOR_STRICT=0 runs everything lenient for comparison.
STRICT_BY_DEFAULT = True
STRICT_ENV = "ARM_EMULATOR_STRICT"  # "1": strict by default for this process (to run the suites strict), "0": not
TRACE_ENV = "ARM_EMULATOR_TRACE"  # a file path: every error answer is appended to it as a JSON line

DEFAULT_SUBSCRIPTION_ID = "00000000-0000-0000-0000-0000000000a1"
DEFAULT_LOCATION = "eastus"
TEST_ACCESS_TOKEN = "emulator-test-token"
DEFAULT_PRINCIPAL_ID = "00000000-0000-0000-0000-0000000000b1"  # whom TEST_ACCESS_TOKEN stands for
PRINCIPAL_TOKEN_PREFIX = "emulator-principal:"  # a token "emulator-principal:<object id>" acts as that principal

# Strict mode's defaults: short, so that tests stay fast, yet long enough that an unwaited burst of dependent
# requests sees its first resources still in progress.
STRICT_PAGE_SIZE = 3
STRICT_VM_CREATE_S = 0.3
STRICT_NETWORK_UPDATE_S = 0.2
STRICT_DELETE_S = 0.2

RequestValidator = Callable[[str, str, str | None, JsonDict | None], None]


def strict_default() -> bool:
    """STRICT_BY_DEFAULT, unless ARM_EMULATOR_STRICT says otherwise."""
    override = os.environ.get(STRICT_ENV, "").strip()
    if override in ("1", "true", "yes"):
        return True
    if override in ("0", "false", "no"):
        return False
    return STRICT_BY_DEFAULT


class StaticTestCredential:
    """A credential that always returns the same token: what tests and benchmarks use instead of Azure AD."""

    def __init__(self, access_token: str = TEST_ACCESS_TOKEN) -> None:
        self._token = access_token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


class FaultKind(enum.StrEnum):
    ERROR = "error"  # answer the request itself with `status` and an ARM error body
    SLOW = "slow"  # accept the PUT/DELETE, but its operation stays in progress for `observations` looks
    ASYNC_FAILURE = "async_failure"  # accept the VM PUT; the operation then fails with `code` (VM -> Failed)


@dataclass
class Fault:
    """One injected fault, consumed by the first `times` requests whose method and path match."""

    method: str  # "GET", "PUT", "DELETE", ... or "*"
    path_pattern: str  # a regex searched (case-insensitively) in the request path
    kind: FaultKind = FaultKind.ERROR
    status: int = 500
    code: str = "InternalServerError"
    message: str = "injected fault"
    retry_after_s: float | None = None
    observations: int = 0  # SLOW: how many observations the operation stays in progress
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method) and bool(
            re.search(self.path_pattern, path, re.IGNORECASE)
        )


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------

IN_PROGRESS = "InProgress"


@dataclass
class _Operation:
    operation_id: str
    resource_key: str  # lower-cased id of what it changes (a resource, or a peering inside its VNet)
    kind: str  # "create", "update" or "delete"
    name: str  # Azure's name for it in messages, e.g. "PutVirtualNetworkOperation"
    namespace: str  # "Microsoft.Compute" or "Microsoft.Network"
    observations_left: int
    due_at: float  # clock time from which it may complete
    failure: tuple[str, str] | None = None  # (code, message) when the operation ends failed
    status: str = IN_PROGRESS
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    end_time: datetime | None = None


@dataclass
class _Resource:
    body: JsonDict
    power_state: str = "running"  # VMs only
    failure: tuple[str, str] | None = None  # VMs only: why provisioning failed
    operation_id: str = ""  # the operation in progress on it, if any
    os_profile_digest: str = ""  # VMs only: osProfile (with custom data) is immutable after creation
    goal_digest: str = ""  # VMs only: the PUT that started the operation in progress (an identical PUT joins it)


# Collection names whose next path segment is a name; used to normalize paths for counting.
_NAMED_COLLECTIONS = {
    "subscriptions",
    "resourcegroups",
    "locations",
    "operations",
    "operationresults",
    "virtualmachines",
    "virtualmachinescalesets",
    "disks",
    "networkinterfaces",
    "publicipaddresses",
    "networksecuritygroups",
    "virtualnetworks",
    "subnets",
    "virtualnetworkpeerings",
}

_TYPES = {
    "virtualmachines": "Microsoft.Compute/virtualMachines",
    "virtualmachinescalesets": "Microsoft.Compute/virtualMachineScaleSets",
    "disks": "Microsoft.Compute/disks",
    "networkinterfaces": "Microsoft.Network/networkInterfaces",
    "publicipaddresses": "Microsoft.Network/publicIPAddresses",
    "networksecuritygroups": "Microsoft.Network/networkSecurityGroups",
    "virtualnetworks": "Microsoft.Network/virtualNetworks",
}
_PEERING_TYPE = "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"

# Operation names as Network reports them in ReferencedResourceNotProvisioned / RetryableErrorDueToAnotherOperation
# messages ("PutSubnetOperation", "PutSecurityRuleOperation", "PutVirtualNetworkOperation"... in the issues quoted in
# errors.py); the others follow the same pattern.
_OPERATION_TYPE_NAMES = {
    "Microsoft.Compute/virtualMachines": "VirtualMachine",
    "Microsoft.Compute/virtualMachineScaleSets": "VirtualMachineScaleSet",
    "Microsoft.Compute/disks": "Disk",
    "Microsoft.Network/networkInterfaces": "NetworkInterface",
    "Microsoft.Network/publicIPAddresses": "PublicIpAddress",
    "Microsoft.Network/networkSecurityGroups": "NetworkSecurityGroup",
    "Microsoft.Network/virtualNetworks": "VirtualNetwork",
    _PEERING_TYPE: "VirtualNetworkPeering",
}

_DEFAULT_NSG_RULES = (
    ("AllowVnetInBound", "Inbound", "Allow", 65000, "VirtualNetwork", "VirtualNetwork"),
    ("AllowAzureLoadBalancerInBound", "Inbound", "Allow", 65001, "AzureLoadBalancer", "*"),
    ("DenyAllInBound", "Inbound", "Deny", 65500, "*", "*"),
    ("AllowVnetOutBound", "Outbound", "Allow", 65000, "VirtualNetwork", "VirtualNetwork"),
    ("AllowInternetOutBound", "Outbound", "Allow", 65001, "*", "Internet"),
    ("DenyAllOutBound", "Outbound", "Deny", 65500, "*", "*"),
)


def normalize_path(path: str) -> str:
    """`/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}`: names replaced."""
    segments = [segment for segment in path.split("/") if segment]
    normalized: list[str] = []
    previous = ""
    for segment in segments:
        normalized.append("{}" if previous.lower() in _NAMED_COLLECTIONS else segment)
        previous = segment
    return "/" + "/".join(normalized)


def _pick(value: Any, strict_value: Any, strict: bool, off_value: Any) -> Any:
    if value is not None:
        return value
    return strict_value if strict else off_value


class ArmEmulator:
    """The emulator: start()/stop() or use as a context manager. Thread-safe."""

    def __init__(
        self,
        *,
        subscription_id: str = DEFAULT_SUBSCRIPTION_ID,
        location: str = DEFAULT_LOCATION,
        page_size: int | None = None,
        strict: bool | None = None,
        long_running: bool | None = None,
        vm_create_s: float | None = None,
        network_update_s: float | None = None,
        delete_s: float | None = None,
        check_references: bool | None = None,
        rbac: bool | None = None,
        throttling: bool | None = None,
        budgets: ThrottleBudgets | None = None,
        request_validator: RequestValidator | None = None,
        request_rules: bool | None = None,  # Azure's request rules (arm_rules.validate_request); on in strict mode
        operation_retry_after_s: int = 0,
        clock: Callable[[], float] = time.monotonic,
        scale_out_interval_s: float = DEFAULT_SCALE_OUT_INTERVAL_S,  # a scale set's new VMs appear one per interval
    ) -> None:
        self.subscription_id = subscription_id
        self.location = location
        self.strict = strict_default() if strict is None else strict
        strict_on = self.strict
        self.long_running: bool = _pick(long_running, True, strict_on, False)
        self.vm_create_s = float(vm_create_s if vm_create_s is not None else STRICT_VM_CREATE_S)
        self.network_update_s = float(network_update_s if network_update_s is not None else STRICT_NETWORK_UPDATE_S)
        self.delete_s = float(delete_s if delete_s is not None else STRICT_DELETE_S)
        self.check_references: bool = _pick(check_references, True, strict_on, False)
        page = _pick(page_size, STRICT_PAGE_SIZE, strict_on, None)
        self.page_size: int | None = page or None  # None: every list answers in one page
        self.rbac = rbac
        self.throttling: bool = _pick(throttling, True, strict_on, False)
        self.budgets = budgets or ThrottleBudgets()
        if request_validator is None and _pick(request_rules, True, self.strict, False):
            from tests.support.arm_rules import validate_request  # what Azure refuses, from its REST definitions

            request_validator = validate_request
        self.request_validator = request_validator
        self.operation_retry_after_s = operation_retry_after_s
        self._clock = clock
        self._throttle = Throttle(self.budgets, clock)
        self._assignments: list[RoleAssignment] = []
        self._lock = threading.RLock()
        self._resources: dict[str, _Resource] = {}  # key: lower-cased resource id
        self._operations: dict[str, _Operation] = {}
        self._faults: list[Fault] = []
        self._next_private_host: dict[str, int] = {}
        self._next_public_host = 10
        self.requests_by_route: Counter[tuple[str, str]] = Counter()
        self.requests_by_kind: Counter[str] = Counter()
        self.request_log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.error_log: list[tuple[str, str, int, str, str]] = []  # (method, path, status, code, message)
        self.scale_sets = ScaleSets(self, scale_out_interval_s)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._temp_dir: Path | None = None
        self.ca_path = ""
        self.base_url = ""

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> ArmEmulator:
        authority = trustme.CA()
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        self._temp_dir = Path(tempfile.mkdtemp(prefix="arm-emulator-"))
        ca_file = self._temp_dir / "ca.pem"
        authority.cert_pem.write_to_path(str(ca_file))
        self.ca_path = str(ca_file)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        certificate.configure_cert(context)
        emulator = self

        class Handler(_ArmRequestHandler):
            arm = emulator

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.base_url = f"https://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="arm-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def credential(self, principal_id: str | None = None) -> StaticTestCredential:
        """The default principal's credential, or one acting as `principal_id` (for RBAC tests)."""
        if principal_id is None or principal_id == DEFAULT_PRINCIPAL_ID:
            return StaticTestCredential()
        return StaticTestCredential(f"{PRINCIPAL_TOKEN_PREFIX}{principal_id}")

    def client_kwargs(self) -> dict[str, Any]:
        """What an Azure SDK client needs to talk to this emulator (besides credential and subscription)."""
        return {"base_url": self.base_url, "connection_verify": self.ca_path}

    # ---------------------------------------------------------------- test controls

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return [fault for fault in self._faults if fault.times > 0]

    def reset_counts(self) -> None:
        with self._lock:
            self.requests_by_route.clear()
            self.requests_by_kind.clear()
            self.request_log.clear()
            self.error_log.clear()

    @property
    def reads(self) -> int:
        return self.requests_by_kind["read"]

    @property
    def writes(self) -> int:
        return self.requests_by_kind["write"]

    def resources(self, type_name: str | None = None) -> list[JsonDict]:
        """Snapshots of every stored resource (optionally of one type, e.g. "Microsoft.Compute/virtualMachines")."""
        with self._lock:
            self._advance()
            return [
                _strip_internal(json.loads(json.dumps(resource.body)))
                for resource in self._resources.values()
                if type_name is None or resource.body["type"].lower() == type_name.lower()
            ]

    def operations_in_progress(self) -> int:
        with self._lock:
            self._advance()
            return sum(1 for operation in self._operations.values() if operation.status == IN_PROGRESS)

    def settle(self, timeout_s: float = 5.0) -> bool:
        """Wait (real time) until no operation is in progress; False if some still is after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.operations_in_progress():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def evict(self, vm_name: str, mode: str = "delete") -> None:
        """Spot eviction: "delete" removes the VM (and what is marked deleteOption Delete); "deallocate" stops it."""
        with self._lock:
            resource = self._find_by_name("virtualmachines", vm_name)
            if mode == "delete":
                self._delete_now(self._key(resource.body["id"]))
                self.scale_sets.advance()  # a scale set's capacity drops with its evicted VM
            elif mode == "deallocate":
                resource.power_state = "deallocated"
            else:
                raise ValueError(f"unknown eviction mode {mode!r}")

    def seed_subnet(self, resource_group: str, vnet_name: str, subnet_name: str, address_prefix: str) -> str:
        """Create a VNet with one subnet directly (e.g. the function app's subnet); returns the subnet id."""
        vnet_id = self._resource_id(resource_group, "virtualnetworks", vnet_name)
        body = {
            "location": self.location,
            "properties": {
                "addressSpace": {"addressPrefixes": [address_prefix]},
                "subnets": [{"name": subnet_name, "properties": {"addressPrefix": address_prefix}}],
            },
        }
        with self._lock:
            self._put_virtual_network(vnet_id, resource_group, vnet_name, body, observations=0, duration_s=0.0)
        return f"{vnet_id}/subnets/{subnet_name}"

    def seed_vm(
        self,
        resource_group: str,
        vm_name: str,
        subnet_id: str,
        *,
        tags: dict[str, str],
        with_public_ip: bool = True,
    ) -> str:
        """Create a running VM with a separate NIC (and public IP), as Ray's ARM template deploys them."""
        with self._lock:
            public_ip_id = ""
            if with_public_ip:
                public_ip_id = self._resource_id(resource_group, "publicipaddresses", f"{vm_name}-ip")
                self._store_public_ip(public_ip_id, resource_group, f"{vm_name}-ip", tags, "Detach")
            nic_name = f"{vm_name}-nic"
            nic_id = self._resource_id(resource_group, "networkinterfaces", nic_name)
            self._store_nic(
                nic_id, nic_name, tags, subnet_id=subnet_id, public_ip_id=public_ip_id, delete_option="Detach"
            )
            vm_id = self._resource_id(resource_group, "virtualmachines", vm_name)
            body = {
                "location": self.location,
                "tags": tags,
                "properties": {
                    "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
                    "storageProfile": {"osDisk": {"createOption": "FromImage", "deleteOption": "Detach"}},
                    "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True}}]},
                },
            }
            self._create_vm(vm_id, resource_group, vm_name, body, observations=0, failure=None, duration_s=0.0)
            self._advance()
        return vm_id

    # ---------------------------------------------------------------- RBAC

    def grant(
        self,
        actions_or_role: RoleDefinition | Path | str | Iterable[str],
        scope: str,
        *,
        principal_id: str = DEFAULT_PRINCIPAL_ID,
    ) -> RoleAssignment:
        """Assign a role (a RoleDefinition, a role file, or a list of actions) to a principal at a scope
        (`/subscriptions/{s}`, `.../resourceGroups/{rg}`, or a resource id). With a grant, RBAC is enforced
        (unless the emulator was made with `rbac=False`)."""
        assignment = RoleAssignment(principal_id, as_role(actions_or_role), scope)
        with self._lock:
            self._assignments.append(assignment)
        return assignment

    def grant_app_roles(
        self, clusters_resource_group: str, app_vnet_id: str, *, principal_id: str = DEFAULT_PRINCIPAL_ID
    ) -> list[RoleAssignment]:
        """The app identity's two custom roles where infra assigns them (see rbac.app_role_assignments)."""
        assignments = app_role_assignments(self.subscription_id, clusters_resource_group, app_vnet_id, principal_id)
        with self._lock:
            self._assignments.extend(assignments)
        return assignments

    def revoke_all(self) -> None:
        with self._lock:
            self._assignments.clear()

    def resource_group_scope(self, resource_group: str) -> str:
        return resource_group_scope(self.subscription_id, resource_group)

    def subscription_scope(self) -> str:
        return f"/subscriptions/{self.subscription_id}"

    @property
    def rbac_enforced(self) -> bool:
        if self.rbac is not None:
            return self.rbac
        return bool(self._assignments)

    # ---------------------------------------------------------------- request entry point

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        split = urlsplit(raw_path)
        path = split.path.rstrip("/")
        raw_query = parse_qsl(split.query, keep_blank_values=True)
        query = {key.lower(): value for key, value in raw_query}
        with self._lock:
            self._advance()
            status, response_headers, payload = self._handle_locked(
                method, path, query=query, raw_query=raw_query, headers=headers, body=body
            )
            self.requests_by_route[(method, normalize_path(path))] += 1
            self.requests_by_kind["read" if method in ("GET", "HEAD") else "write"] += 1
            self.request_log.append((method, path, status))
            if status >= 400:
                self._record_error(method, path, status, payload)
            return status, response_headers, payload

    def _record_error(self, method: str, path: str, status: int, payload: JsonDict | None) -> None:
        """Keep every error answer (and append it to the ARM_EMULATOR_TRACE file, if set, with the test's name)."""
        error = (payload or {}).get("error") or {}
        entry = (method, path, status, str(error.get("code", "")), str(error.get("message", "")))
        self.error_log.append(entry)
        trace = os.environ.get(TRACE_ENV)
        if trace:
            line: dict[str, object] = {"test": os.environ.get("PYTEST_CURRENT_TEST", ""), "method": method}
            line |= {"path": path, "status": status, "code": entry[3], "message": entry[4]}
            with Path(trace).open("a") as handle:
                handle.write(json.dumps(line) + "\n")

    def _handle_locked(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str],
        raw_query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        authorization = headers.get("authorization", "")
        if not authorization.lower().startswith("bearer "):
            return error_response(ArmHttpError(401, "AuthenticationFailed", "missing bearer token"))
        principal_id = self._principal_of(authorization.split(" ", 1)[1].strip())
        answer_headers: dict[str, str] = {}
        try:
            document = self._parse_body(body)
            if self.throttling:
                answer_headers.update(self._throttle.charge_arm(self.subscription_id, principal_id, method))
            if self.rbac_enforced:
                self._authorize(principal_id, method, path, document)
            if self.request_validator is not None:
                self._validate(method, path, query.get("api-version"), document if body else None)
            fault = self._take_fault(method, path)
            if fault is not None and fault.kind is FaultKind.ERROR:
                raise ArmHttpError(fault.status, fault.code, fault.message, fault.retry_after_s)
            if self.throttling:
                answer_headers.update(self._charge_provider(method, path))
            status, route_headers, payload = self._route(
                method, path, query=query, raw_query=raw_query, document=document, fault=fault
            )
            return status, _merge_headers(answer_headers, route_headers), payload
        except ArmHttpError as error:
            status, error_headers, payload = error_response(error)
            return status, {**answer_headers, **error_headers}, payload

    @staticmethod
    def _parse_body(body: bytes) -> JsonDict:
        if not body:
            return {}
        try:
            document = json.loads(body)
        except ValueError as error:
            raise ArmHttpError(400, "InvalidRequestContent", f"The request content was invalid: {error}") from None
        if not isinstance(document, dict):
            raise ArmHttpError(400, "InvalidRequestContent", "The request content was invalid: not a JSON object")
        return document

    @staticmethod
    def _principal_of(token: str) -> str:
        if token == TEST_ACCESS_TOKEN:
            return DEFAULT_PRINCIPAL_ID
        if token.startswith(PRINCIPAL_TOKEN_PREFIX):
            return token[len(PRINCIPAL_TOKEN_PREFIX) :]
        return token

    def _validate(self, method: str, path: str, api_version: str | None, document: JsonDict | None) -> None:
        """The request_validator hook; an exception with status, code and message becomes that ARM error."""
        assert self.request_validator is not None
        try:
            self.request_validator(method, path, api_version, document)
        except ArmHttpError:
            raise
        except Exception as error:
            status, code, message = (getattr(error, name, None) for name in ("status", "code", "message"))
            if status is None or code is None or message is None:
                raise ArmHttpError(500, "RequestValidatorError", f"request validator raised {error!r}") from error
            target = getattr(error, "target", None)
            raise ArmHttpError(
                int(status), str(code), str(message), target=None if target is None else str(target)
            ) from error

    def _authorize(self, principal_id: str, method: str, path: str, document: JsonDict) -> None:
        checks = access_checks(method, path, document)
        own = [check for check in checks if not check.linked]
        for check in own:
            if not is_allowed(self._assignments, principal_id, check.action, check.scope):
                raise errors.authorization_failed(principal_id, check.action, check.scope)
        refused = [
            (check.action, check.scope)
            for check in checks
            if check.linked and not is_allowed(self._assignments, principal_id, check.action, check.scope)
        ]
        if refused:
            action = own[0].action if own else ""
            raise errors.linked_authorization_failed(principal_id, action, path, refused)

    def _charge_provider(self, method: str, path: str) -> dict[str, str]:
        segments = [segment.lower() for segment in path.split("/") if segment]
        if "providers" not in segments or _is_operation_path(segments):
            return {}
        start = segments.index("providers")
        namespace, rest = segments[start + 1], segments[start + 2 :]
        if namespace == "microsoft.compute" and rest and rest[0] == "virtualmachinescalesets":
            sub_resource = "/".join(rest[2:])
            group = compute_group(method, collection_path=len(rest) == 1, sub_resource=sub_resource, scale_set=True)
            return self._throttle.charge_compute(self.subscription_id, group) if group else {}
        if namespace == "microsoft.compute" and rest and rest[0] == "virtualmachines":
            group = compute_group(method, collection_path=len(rest) == 1, sub_resource="/".join(rest[2:]))
            return self._throttle.charge_compute(self.subscription_id, group) if group else {}
        if namespace == "microsoft.network":
            self._throttle.charge_network(self.subscription_id, method)
        return {}

    def _charge_batched(self, vm_count: int) -> dict[str, str]:
        """A scale-set write that adds or removes `vm_count` VMs charges that many counts (throttling.py); the
        policy's remaining count, for the answer's `x-ms-ratelimit-remaining-resource`."""
        if self.throttling and vm_count > 0:
            return self._throttle.charge_compute(self.subscription_id, BATCHED_VM_REQUESTS, count=vm_count)
        return {}

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                return fault
        return None

    # ---------------------------------------------------------------- routing

    def _route(  # noqa: C901,PLR0911,PLR0912 -- ARM's URL space, one branch per route family, as a router reads
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str],
        raw_query: list[tuple[str, str]],
        document: JsonDict,
        fault: Fault | None,
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        segments = [segment for segment in path.split("/") if segment]
        lowered = [segment.lower() for segment in segments]
        if len(segments) < 2 or lowered[0] != "subscriptions":
            raise ArmHttpError(404, "InvalidResourceType", f"no route for {path}")
        if segments[1].lower() != self.subscription_id.lower():
            raise ArmHttpError(404, "SubscriptionNotFound", f"subscription {segments[1]} not found")
        # /subscriptions/{s}/providers/{ns}/locations/{loc}/operations|operationResults/{op}
        if _is_operation_path(lowered):
            if method != "GET":
                raise ArmHttpError(405, "MethodNotAllowed", f"{method} on an operation")
            if lowered[6] == "operations":
                return self._operation_status(segments[7])
            return self._operation_result(segments[7])
        # /subscriptions/{s}/providers/Microsoft.Compute/virtualMachines  (list all)
        if len(segments) == 5 and lowered[2] == "providers" and lowered[4] == "virtualmachines" and method == "GET":
            status_only = query.get("statusonly") == "true"
            listing = self._list(None, "virtualmachines", with_instance_view=status_only, path=path, query=raw_query)
            return 200, {}, listing
        if len(segments) < 7 or lowered[2] != "resourcegroups" or lowered[4] != "providers":
            raise ArmHttpError(404, "InvalidResourceType", f"no route for {path}")
        resource_group, collection = segments[3], lowered[6]
        if collection not in _TYPES:
            raise ArmHttpError(404, "InvalidResourceType", f"resource type {segments[6]} is not emulated")
        if len(segments) == 7:
            if method != "GET":
                raise ArmHttpError(405, "MethodNotAllowed", f"{method} on a collection")
            return 200, {}, self._list(resource_group, collection, with_instance_view=False, path=path, query=raw_query)
        name = segments[7]
        if collection == "virtualmachinescalesets" and len(segments) <= 9:
            action = lowered[8] if len(segments) == 9 else ""
            return self.scale_sets.request(method, resource_group, name, action, document)
        resource_id = self._resource_id(resource_group, collection, name)
        if len(segments) == 8:
            return self._resource_request(
                method,
                resource_id=resource_id,
                resource_group=resource_group,
                collection=collection,
                name=name,
                query=query,
                document=document,
                fault=fault,
            )
        if collection == "virtualmachines" and lowered[8] == "instanceview" and len(segments) == 9 and method == "GET":
            resource = self._get(resource_id)
            return 200, {}, self._instance_view(resource)
        if collection == "virtualnetworks" and lowered[8] == "subnets" and len(segments) == 9 and method == "GET":
            vnet = self._get(resource_id)
            subnets = [json.loads(json.dumps(subnet)) for subnet in vnet.body["properties"].get("subnets", [])]
            return 200, {}, self._page(subnets, path=path, query=raw_query)
        if collection == "virtualnetworks" and lowered[8] == "subnets" and len(segments) == 10:
            return self._subnet_request(method, resource_id, segments[9], document)
        if collection == "virtualnetworks" and lowered[8] == "virtualnetworkpeerings" and len(segments) == 10:
            return self._peering_request(method, resource_id, segments[9], document, fault)
        raise ArmHttpError(404, "InvalidResourceType", f"no route for {path}")

    def _resource_request(
        self,
        method: str,
        *,
        resource_id: str,
        resource_group: str,
        collection: str,
        name: str,
        query: dict[str, str],
        document: JsonDict,
        fault: Fault | None,
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        observations = fault.observations if fault is not None and fault.kind is FaultKind.SLOW else 0
        if method == "GET":
            resource = self._get(resource_id)
            return 200, {}, self._render(resource, expand=query.get("$expand", ""))
        if method == "DELETE":
            return self._delete(resource_id, observations)
        if method == "PATCH" and collection == "disks":
            return self._patch_disk(resource_id, document)
        if method != "PUT":
            raise ArmHttpError(405, "MethodNotAllowed", f"{method} on {collection}")
        existed = self._key(resource_id) in self._resources
        if collection == "virtualmachines":
            failure = (
                (fault.code, fault.message) if fault is not None and fault.kind is FaultKind.ASYNC_FAILURE else None
            )
            resource = self._create_vm(
                resource_id, resource_group, name, document, observations=observations, failure=failure
            )
        elif collection == "networksecuritygroups":
            resource = self._put_security_group(resource_id, resource_group, name, document, observations)
        elif collection == "virtualnetworks":
            resource = self._put_virtual_network(resource_id, resource_group, name, document, observations=observations)
        elif collection == "networkinterfaces":
            self._refuse_if_busy(resource_id)
            ip_configuration = document.get("properties", {}).get("ipConfigurations", [{}])[0].get("properties", {})
            resource = self._store_nic(
                resource_id,
                name,
                document.get("tags") or {},
                subnet_id=ip_configuration.get("subnet", {}).get("id", ""),
                public_ip_id=ip_configuration.get("publicIPAddress", {}).get("id", ""),
                delete_option="Detach",
            )
            self._start_network_update(resource, "create" if not existed else "update", observations)
        elif collection == "publicipaddresses":
            self._refuse_if_busy(resource_id)
            resource = self._store_public_ip(resource_id, resource_group, name, document.get("tags") or {}, "Detach")
            self._start_network_update(resource, "create" if not existed else "update", observations)
        else:
            raise ArmHttpError(405, "MethodNotAllowed", f"PUT on {collection} is not emulated")
        headers = self._put_headers(resource.operation_id)
        snapshot = self._render(resource, expand="")
        self._complete_if_due(resource.operation_id)
        return (200 if existed else 201), headers, snapshot

    def _patch_disk(self, resource_id: str, document: JsonDict) -> tuple[int, dict[str, str], JsonDict | None]:
        """Disks - Update (PATCH, DiskUpdate): tags replace the disk's tags; allowed while a VM holds the disk (only
        the properties that need a detached disk, such as a resize of some kinds, are refused then).
        specification/compute/resource-manager/Microsoft.Compute/DiskRP/stable/<version>/disk.json: Disks_Update."""
        resource = self._get(resource_id)
        if "tags" in document:
            resource.body["tags"] = dict(document.get("tags") or {})
        return 200, {}, self._render(resource, expand="")

    # ---------------------------------------------------------------- generic resource helpers

    def _resource_id(self, resource_group: str, collection: str, name: str) -> str:
        group = f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
        return f"{group}/providers/{_TYPES[collection]}/{name}"

    @staticmethod
    def _key(resource_id: str) -> str:
        return resource_id.lower()

    def _get(self, resource_id: str) -> _Resource:
        resource = self._resources.get(self._key(resource_id))
        if resource is None:
            raise ArmHttpError(404, "ResourceNotFound", f"The Resource '{resource_id}' was not found.")
        self._observe(resource.operation_id)
        return resource

    def _find_by_name(self, collection: str, name: str) -> _Resource:
        for resource in self._resources.values():
            if resource.body["type"].lower() == _TYPES[collection].lower() and resource.body["name"] == name:
                return resource
        raise KeyError(f"no {collection} named {name}")

    def _list(
        self,
        resource_group: str | None,
        collection: str,
        *,
        with_instance_view: bool,
        path: str,
        query: list[tuple[str, str]],
    ) -> JsonDict:
        type_name = _TYPES[collection].lower()
        prefix = f"/subscriptions/{self.subscription_id}/resourcegroups/{(resource_group or '').lower()}/"
        selected = sorted(
            (
                (key, resource)
                for key, resource in list(self._resources.items())
                if resource.body["type"].lower() == type_name and (resource_group is None or key.startswith(prefix))
            ),
            key=lambda item: item[0],
        )
        values = []
        for _, resource in selected:
            self._observe(resource.operation_id)
            if self._key(resource.body["id"]) not in self._resources:
                continue  # its deletion completed on this look
            values.append(self._render(resource, expand="instanceView" if with_instance_view else ""))
        return self._page(values, path=path, query=query)

    def _page(self, values: list[JsonDict], *, path: str, query: list[tuple[str, str]]) -> JsonDict:
        """One page of a list. ARM's server-side paging: `nextLink` is "{originalRequestUrl}?$skipToken=
        {opaqueString}", an absolute URL keeping the request's own query parameters (Azure/azure-resource-manager-rpc
        v1.0/resource-api-reference.md, "Paging Response Body"). The token names the last id returned, so the next
        page starts after it whatever was created or deleted in between."""
        if not self.page_size:
            return {"value": values}
        token = next((value for key, value in query if key.lower() == "$skiptoken"), "")
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else ""
        remaining = [value for value in values if str(value.get("id", "")).lower() > after] if after else values
        page = remaining[: self.page_size]
        answer: JsonDict = {"value": page}
        if len(remaining) > self.page_size:
            next_token = base64.urlsafe_b64encode(str(page[-1]["id"]).lower().encode()).decode()
            kept = [(key, value) for key, value in query if key.lower() != "$skiptoken"]
            kept.append(("$skipToken", next_token))
            answer["nextLink"] = f"{self.base_url}{quote(path)}?{urlencode(kept, safe='$')}"
        return answer

    def _render(self, resource: _Resource, *, expand: str) -> JsonDict:
        body: JsonDict = json.loads(json.dumps(resource.body))
        if body["type"] == _TYPES["virtualmachines"] and "instanceview" in expand.lower():
            body["properties"]["instanceView"] = self._instance_view(resource)
        if body["type"] == _TYPES["networkinterfaces"] and "publicipaddress" in expand.lower():
            for configuration in body["properties"]["ipConfigurations"]:
                reference = configuration["properties"].get("publicIPAddress")
                public_ip = self._resources.get(self._key(reference["id"])) if reference else None
                if public_ip is not None:
                    configuration["properties"]["publicIPAddress"] = json.loads(json.dumps(public_ip.body))
        return body

    def _instance_view(self, resource: _Resource) -> JsonDict:
        state = resource.body["properties"]["provisioningState"]
        statuses: list[JsonDict] = []
        if resource.failure is not None:
            code, message = resource.failure
            statuses.append({"code": f"ProvisioningState/failed/{code}", "level": "Error", "message": message})
        else:
            statuses.append({"code": f"ProvisioningState/{state.lower()}", "level": "Info"})
        if state == "Succeeded":
            statuses.append({"code": f"PowerState/{resource.power_state}", "level": "Info"})
        elif state == "Creating":
            statuses.append({"code": "PowerState/starting", "level": "Info"})
        return {"computerName": resource.body["name"], "statuses": statuses}

    # ---------------------------------------------------------------- operations

    def _start_operation(
        self,
        target_id: str,
        resource_type: str,
        kind: str,
        *,
        observations: int,
        duration_s: float,
        failure: tuple[str, str] | None = None,
    ) -> _Operation:
        verb = "Delete" if kind == "delete" else "Put"
        operation = _Operation(
            operation_id=str(uuid.uuid4()),
            resource_key=self._key(target_id),
            kind=kind,
            name=f"{verb}{_OPERATION_TYPE_NAMES.get(resource_type, 'Resource')}Operation",
            namespace=resource_type.split("/", 1)[0],
            observations_left=observations,
            due_at=self._clock() + (duration_s if self.long_running else 0.0),
            failure=failure,
        )
        self._operations[operation.operation_id] = operation
        return operation

    def _start_network_update(
        self, resource: _Resource, kind: str, observations: int, duration_s: float | None = None
    ) -> None:
        """A Network PUT: the resource is `Updating` until its operation completes."""
        operation = self._start_operation(
            resource.body["id"],
            resource.body["type"],
            kind,
            observations=observations,
            duration_s=self.network_update_s if duration_s is None else duration_s,
        )
        resource.operation_id = operation.operation_id
        resource.body["properties"]["provisioningState"] = "Updating"

    def _operation_url(self, operation: _Operation, kind: str) -> str:
        return (
            f"{self.base_url}/subscriptions/{self.subscription_id}/providers/{operation.namespace}/locations/"
            f"{self.location}/{kind}/{operation.operation_id}?api-version=2024-01-01"
        )

    def _put_headers(self, operation_id: str) -> dict[str, str]:
        """A PUT answers 201/200 with Azure-AsyncOperation while its operation runs (Azure/azure-resource-manager-rpc
        v1.0/Addendum.md, "Creating/Updating using PUT": a 200/201 carrying the header means "poll it")."""
        operation = self._operations.get(operation_id) if operation_id else None
        if operation is None:
            return {}
        return {
            "Azure-AsyncOperation": self._operation_url(operation, "operations"),
            "Retry-After": str(self.operation_retry_after_s),
        }

    def _delete_headers(self, operation: _Operation) -> dict[str, str]:
        """A DELETE answers 202 with Location (and Azure-AsyncOperation) (Addendum.md, "Delete Resource
        Asynchronously")."""
        return {
            "Azure-AsyncOperation": self._operation_url(operation, "operations"),
            "Location": self._operation_url(operation, "operationResults"),
            "Retry-After": str(self.operation_retry_after_s),
        }

    def _in_progress(self, operation_id: str) -> _Operation | None:
        operation = self._operations.get(operation_id) if operation_id else None
        return operation if operation is not None and operation.status == IN_PROGRESS else None

    def _advance(self) -> None:
        """Complete every operation whose time has come (and that no SLOW fault still holds)."""
        self.scale_sets.advance()
        now = self._clock()
        for operation in list(self._operations.values()):
            if operation.status == IN_PROGRESS and operation.observations_left == 0 and now >= operation.due_at:
                self._complete(operation)

    def _observe(self, operation_id: str) -> None:
        """A look at an operation's resource or status: it counts down a SLOW fault, or completes it when due."""
        operation = self._in_progress(operation_id)
        if operation is None:
            return
        if operation.observations_left > 0:
            operation.observations_left -= 1
        elif self._clock() >= operation.due_at:
            self._complete(operation)

    def _complete_if_due(self, operation_id: str) -> None:
        operation = self._in_progress(operation_id)
        if operation is not None and operation.observations_left == 0 and self._clock() >= operation.due_at:
            self._complete(operation)

    def _complete(self, operation: _Operation, *, status: str | None = None) -> None:
        operation.end_time = datetime.now(UTC)
        resource = self._resources.get(operation.resource_key)
        peering = None if resource is not None else self._peering_by_id(operation.resource_key)
        if operation.kind == "delete":
            operation.status = "Succeeded"
            if resource is not None:
                self._delete_now(operation.resource_key)
            elif peering is not None:
                self._remove_peering(operation.resource_key)
            return
        operation.status = status or ("Failed" if operation.failure else "Succeeded")
        final_state = "Failed" if operation.status != "Succeeded" else "Succeeded"
        if resource is not None:
            if resource.operation_id == operation.operation_id:
                resource.operation_id = ""
                resource.body["properties"]["provisioningState"] = final_state
                if resource.body["type"] == _TYPES["virtualnetworks"]:
                    for subnet in resource.body["properties"].get("subnets", []):
                        subnet["properties"]["provisioningState"] = "Succeeded"
            if operation.failure is not None:
                resource.failure = operation.failure
        elif peering is not None and peering.get("_operationId") == operation.operation_id:
            peering.pop("_operationId", None)
            peering["properties"]["provisioningState"] = final_state

    def _operation_status(self, operation_id: str) -> tuple[int, dict[str, str], JsonDict | None]:
        """The Azure-AsyncOperation resource: always 200, status InProgress until terminal, `error` when it failed
        (Addendum.md, "Operation Resource format")."""
        operation = self._operations.get(operation_id)
        if operation is None:
            raise ArmHttpError(404, "OperationNotFound", f"operation {operation_id} not found")
        self._observe(operation_id)
        answer: JsonDict = {
            "id": urlsplit(self._operation_url(operation, "operations")).path,
            "name": operation_id,
            "status": operation.status,
            "startTime": operation.start_time.isoformat(),
        }
        if operation.end_time is not None:
            answer["endTime"] = operation.end_time.isoformat()
        if operation.failure is not None and operation.status in ("Failed", "Canceled"):
            answer["error"] = {"code": operation.failure[0], "message": operation.failure[1]}
        return 200, {"Retry-After": str(self.operation_retry_after_s)}, answer

    def _operation_result(self, operation_id: str) -> tuple[int, dict[str, str], JsonDict | None]:
        """The Location resource: 202 while in progress, then what the request would have answered synchronously
        (Addendum.md, "202 Accepted and Location Headers")."""
        operation = self._operations.get(operation_id)
        if operation is None:
            raise ArmHttpError(404, "OperationNotFound", f"operation {operation_id} not found")
        self._observe(operation_id)
        if operation.status == IN_PROGRESS:
            return 202, self._delete_headers(operation), None
        if operation.status != "Succeeded" and operation.failure is not None:
            raise ArmHttpError(400, operation.failure[0], operation.failure[1])
        return 204, {}, None

    # ---------------------------------------------------------------- references and concurrency (strict)

    def _refuse_if_busy(self, resource_id: str) -> None:
        """A write to a network resource that an operation is still changing (check_references)."""
        if not self.check_references:
            return
        resource = self._resources.get(self._key(resource_id))
        operation = self._in_progress(resource.operation_id) if resource is not None else None
        if operation is None:
            return
        raise errors.retryable_due_to_another_operation(
            resource_id, operation.name, operation.operation_id, self._seconds_left(operation)
        )

    def _seconds_left(self, operation: _Operation) -> int:
        return max(1, math.ceil(operation.due_at - self._clock()))

    def _require_provisioned(self, referenced_id: str, state: str, operation_id: str, referencing_id: str) -> None:
        if not self.check_references or state == "Succeeded":
            return
        operation = self._operations.get(operation_id) if operation_id else None
        name = operation.name if operation is not None else "PutResourceOperation"
        raise errors.referenced_resource_not_provisioned(referenced_id, referencing_id, state, name)

    def _require_subnet(self, subnet_id: str, referencing_id: str) -> JsonDict:
        """The subnet a NIC joins: it must exist (InvalidResourceReference) and be provisioned."""
        subnet = self._subnet_by_id(subnet_id)
        if subnet is None:
            raise errors.invalid_resource_reference(subnet_id, referencing_id)
        vnet = self._resources[self._key(subnet_id.rsplit("/subnets/", 1)[0])]
        self._require_provisioned(
            subnet["id"], subnet["properties"].get("provisioningState", "Succeeded"), vnet.operation_id, referencing_id
        )
        return subnet

    # ---------------------------------------------------------------- deletion

    def _delete(self, resource_id: str, observations: int) -> tuple[int, dict[str, str], JsonDict | None]:
        key = self._key(resource_id)
        resource = self._resources.get(key)
        if resource is None:
            return 204, {}, None
        ongoing = self._in_progress(resource.operation_id)
        if ongoing is not None and ongoing.kind == "delete":
            return 202, self._delete_headers(ongoing), None  # a repeated DELETE joins the one in progress
        if ongoing is not None and self.check_references:
            if resource.body["type"] == _TYPES["virtualmachines"]:
                # Compute lets a delete overtake a VM's creation; the creation ends preempted.
                ongoing.failure = errors.OPERATION_PREEMPTED
                self._complete(ongoing, status="Canceled")
                resource.failure = None
            else:
                self._refuse_if_busy(resource_id)
        self._refuse_if_in_use(resource)
        operation = self._start_operation(
            resource.body["id"], resource.body["type"], "delete", observations=observations, duration_s=self.delete_s
        )
        resource.operation_id = operation.operation_id
        resource.body["properties"]["provisioningState"] = "Deleting"
        headers = self._delete_headers(operation)
        self._complete_if_due(operation.operation_id)
        return 202, headers, None

    def _refuse_if_in_use(self, resource: _Resource) -> None:
        resource_type = resource.body["type"]
        properties = resource.body["properties"]
        resource_id = resource.body["id"]
        if resource_type == _TYPES["networkinterfaces"] and properties.get("virtualMachine"):
            raise ArmHttpError(
                400,
                "NicInUse",
                f"Network Interface {resource_id} is used by existing resource {properties['virtualMachine']['id']}.",
            )
        if resource_type == _TYPES["publicipaddresses"] and properties.get("ipConfiguration"):
            raise ArmHttpError(
                400,
                "PublicIPAddressCannotBeDeleted",
                f"Public IP address {resource_id} can not be deleted since it is still allocated to resource "
                f"{properties['ipConfiguration']['id']}.",
            )
        if resource_type == _TYPES["disks"] and resource.body.get("managedBy"):
            raise ArmHttpError(
                409,
                "OperationNotAllowed",
                f"Disk {resource.body['name']} is attached to VM {resource.body['managedBy']}.",
            )
        if resource_type == _TYPES["virtualnetworks"]:
            for subnet in properties.get("subnets", []):
                if subnet["properties"].get("ipConfigurations"):
                    raise ArmHttpError(
                        400,
                        "InUseSubnetCannotBeDeleted",
                        f"Subnet {subnet['name']} is in use by {subnet['properties']['ipConfigurations'][0]['id']} "
                        "and cannot be deleted.",
                    )
        if resource_type == _TYPES["networksecuritygroups"] and properties.get("subnets"):
            raise ArmHttpError(
                400,
                "InUseNetworkSecurityGroupCannotBeDeleted",
                f"Network security group {resource_id} cannot be deleted because it is in use by "
                f"{properties['subnets'][0]['id']}.",
            )

    def _delete_now(self, key: str) -> None:
        resource = self._resources.pop(key, None)
        if resource is None:
            return
        operation = self._in_progress(resource.operation_id)
        if operation is not None:
            operation.status = "Succeeded" if operation.kind == "delete" else "Canceled"
            operation.end_time = datetime.now(UTC)
        resource_type = resource.body["type"]
        properties = resource.body["properties"]
        if resource_type == _TYPES["virtualmachines"]:
            self._release_vm_resources(resource)
        elif resource_type == _TYPES["networkinterfaces"]:
            for configuration in properties.get("ipConfigurations", []):
                self._detach_ip_configuration(configuration)
        elif resource_type == _TYPES["virtualnetworks"]:
            for subnet in properties.get("subnets", []):
                self._unlink_subnet_from_nsg(subnet)
            for peering in properties.get("virtualNetworkPeerings", []):
                self._disconnect_reverse_of(resource.body["id"], peering)

    def _release_vm_resources(self, vm: _Resource) -> None:
        """Azure's deleteOption cascade: Delete removes the resource with the VM, Detach leaves it behind."""
        properties = vm.body["properties"]
        for interface in properties.get("networkProfile", {}).get("networkInterfaces", []):
            nic = self._resources.get(self._key(interface["id"]))
            if nic is None:
                continue
            nic.body["properties"].pop("virtualMachine", None)
            if interface.get("properties", {}).get("deleteOption") == "Delete":
                public_ips = [
                    configuration["properties"]["publicIPAddress"]["id"]
                    for configuration in nic.body["properties"].get("ipConfigurations", [])
                    if configuration["properties"].get("publicIPAddress")
                ]
                self._delete_now(self._key(interface["id"]))
                for public_ip_id in public_ips:
                    public_ip = self._resources.get(self._key(public_ip_id))
                    if public_ip is not None and public_ip.body["properties"].get("_deleteOption") == "Delete":
                        self._delete_now(self._key(public_ip_id))
        os_disk = properties.get("storageProfile", {}).get("osDisk", {})
        disk_id = os_disk.get("managedDisk", {}).get("id")
        disk = self._resources.get(self._key(disk_id)) if disk_id else None
        if disk is not None:
            disk.body.pop("managedBy", None)
            if os_disk.get("deleteOption") == "Delete":
                self._delete_now(self._key(disk_id))

    def _detach_ip_configuration(self, configuration: JsonDict) -> None:
        reference = configuration["properties"].get("publicIPAddress")
        public_ip = self._resources.get(self._key(reference["id"])) if reference else None
        if public_ip is not None:
            public_ip.body["properties"].pop("ipConfiguration", None)
        subnet_id = configuration["properties"].get("subnet", {}).get("id", "")
        subnet = self._subnet_by_id(subnet_id)
        if subnet is not None:
            subnet["properties"]["ipConfigurations"] = [
                entry
                for entry in subnet["properties"].get("ipConfigurations", [])
                if entry["id"].lower() != configuration["id"].lower()
            ]

    def _unlink_subnet_from_nsg(self, subnet: JsonDict) -> None:
        reference = subnet["properties"].get("networkSecurityGroup")
        nsg = self._resources.get(self._key(reference["id"])) if reference else None
        if nsg is not None:
            nsg.body["properties"]["subnets"] = [
                entry
                for entry in nsg.body["properties"].get("subnets", [])
                if entry["id"].lower() != subnet["id"].lower()
            ]

    # ---------------------------------------------------------------- virtual machines

    def _create_vm(  # noqa: C901,PLR0912 -- the VM PUT's checks in the order Azure applies them
        self,
        vm_id: str,
        resource_group: str,
        name: str,
        document: JsonDict,
        *,
        observations: int,
        failure: tuple[str, str] | None,
        duration_s: float | None = None,
    ) -> _Resource:
        existing = self._resources.get(self._key(vm_id))
        if existing is not None:
            if existing.body["properties"]["provisioningState"] == "Deleting":
                raise errors.vm_marked_for_deletion(name)
            if (
                self.check_references
                and self._in_progress(existing.operation_id)
                and _digest(document) != (existing.goal_digest)
            ):
                raise errors.vm_concurrent_request()
            if sorted(document.get("zones") or []) != sorted(existing.body.get("zones") or []):
                raise ArmHttpError(409, "PropertyChangeNotAllowed", "Changing property 'zones' is not allowed.")
            if _digest(document.get("properties", {}).get("osProfile")) != existing.os_profile_digest:
                raise ArmHttpError(409, "PropertyChangeNotAllowed", "Changing property 'osProfile' is not allowed.")
            # A PUT of the same VM is an idempotent update: nothing new is created (an identical PUT during the
            # creation joins its operation: Addendum.md, "the server should not start a new asynchronous operation").
            existing.body["tags"] = document.get("tags") or {}
            return existing
        properties: JsonDict = json.loads(json.dumps(document.get("properties", {})))
        os_profile_digest = _digest(properties.get("osProfile"))
        properties.pop("instanceView", None)
        os_profile = properties.get("osProfile", {})
        os_profile.pop("customData", None)  # Azure never returns custom data
        os_profile.pop("adminPassword", None)
        network_profile = properties.setdefault("networkProfile", {})
        interfaces = list(network_profile.get("networkInterfaces", []))
        for interface in interfaces:
            if self._key(interface["id"]) not in self._resources:
                raise errors.invalid_resource_reference(interface["id"], vm_id)
        # Validate every inline NIC's references before creating anything.
        for configuration in network_profile.get("networkInterfaceConfigurations", []):
            nic_id = self._resource_id(resource_group, "networkinterfaces", configuration["name"])
            for ip_configuration in configuration.get("properties", {}).get("ipConfigurations", []):
                subnet_id = ip_configuration.get("properties", {}).get("subnet", {}).get("id", "")
                self._require_subnet(subnet_id, nic_id)
        for configuration in network_profile.get("networkInterfaceConfigurations", []):
            interfaces.append(self._create_inline_nic(vm_id, resource_group, configuration))
        network_profile["networkInterfaces"] = interfaces
        for interface in interfaces:
            nic = self._resources[self._key(interface["id"])]
            if nic.body["properties"].get("virtualMachine"):
                raise ArmHttpError(400, "NicInUse", f"Network interface {interface['id']} is attached to another VM.")
            nic.body["properties"]["virtualMachine"] = {"id": vm_id}
        os_disk = properties.setdefault("storageProfile", {}).setdefault("osDisk", {})
        disk_name = os_disk.get("name") or f"{name}_OsDisk_1_{secrets.token_hex(16)}"
        disk_id = self._resource_id(resource_group, "disks", disk_name)
        self._resources[self._key(disk_id)] = _Resource(
            {
                "id": disk_id,
                "name": disk_name,
                "type": _TYPES["disks"],
                "location": self.location,
                "managedBy": vm_id,
                "properties": {"provisioningState": "Succeeded", "diskSizeGB": os_disk.get("diskSizeGB", 30)},
            }
        )
        os_disk["name"] = disk_name
        os_disk.setdefault("managedDisk", {})["id"] = disk_id
        properties["provisioningState"] = "Creating"
        properties["vmId"] = str(uuid.uuid4())
        body: JsonDict = {
            "id": vm_id,
            "name": name,
            "type": _TYPES["virtualmachines"],
            "location": document.get("location", self.location),
            "tags": document.get("tags") or {},
            "properties": properties,
        }
        for optional in ("zones", "identity", "plan"):
            if optional in document:
                body[optional] = document[optional]
        resource = _Resource(body, os_profile_digest=os_profile_digest, goal_digest=_digest(document))
        self._resources[self._key(vm_id)] = resource
        operation = self._start_operation(
            vm_id,
            _TYPES["virtualmachines"],
            "create",
            observations=observations,
            duration_s=self.vm_create_s if duration_s is None else duration_s,
            failure=failure,
        )
        resource.operation_id = operation.operation_id
        return resource

    def _create_inline_nic(self, vm_id: str, resource_group: str, configuration: JsonDict) -> JsonDict:
        """`networkInterfaceConfigurations`: the VM PUT creates the NIC (and public IP) itself."""
        nic_name = configuration["name"]
        nic_properties = configuration.get("properties", {})
        ip_configuration = nic_properties.get("ipConfigurations", [{}])[0]
        ip_properties = ip_configuration.get("properties", {})
        subnet_id = ip_properties.get("subnet", {}).get("id", "")
        nic_id = self._resource_id(resource_group, "networkinterfaces", nic_name)
        if self._key(nic_id) in self._resources:
            raise ArmHttpError(409, "ResourceExists", f"Network interface {nic_id} already exists.")
        public_ip_id = ""
        public_configuration = ip_properties.get("publicIPAddressConfiguration")
        if public_configuration:
            public_name = public_configuration["name"]
            public_ip_id = self._resource_id(resource_group, "publicipaddresses", public_name)
            self._store_public_ip(
                public_ip_id,
                resource_group,
                public_name,
                public_configuration.get("tags") or {},
                public_configuration.get("properties", {}).get("deleteOption", "Detach"),
            )
        self._store_nic(
            nic_id,
            nic_name,
            configuration.get("tags") or {},
            subnet_id=subnet_id,
            public_ip_id=public_ip_id,
            delete_option=nic_properties.get("deleteOption", "Detach"),
            network_security_group=nic_properties.get("networkSecurityGroup"),
        )
        return {
            "id": nic_id,
            "properties": {
                "primary": nic_properties.get("primary", True),
                "deleteOption": nic_properties.get("deleteOption", "Detach"),
            },
        }

    # ---------------------------------------------------------------- network resources

    def _subnet_by_id(self, subnet_id: str) -> JsonDict | None:
        if "/subnets/" not in subnet_id:
            return None
        vnet_id, subnet_name = subnet_id.rsplit("/subnets/", 1)
        vnet = self._resources.get(self._key(vnet_id))
        if vnet is None:
            return None
        for subnet in vnet.body["properties"].get("subnets", []):
            if subnet["name"].lower() == subnet_name.lower():
                return subnet  # type: ignore[no-any-return]
        return None

    def _allocate_private_ip(self, subnet: JsonDict) -> str:
        network = ipaddress.ip_network(subnet["properties"]["addressPrefix"], strict=False)
        # Azure reserves the first four addresses of every subnet.
        host = self._next_private_host.get(subnet["id"].lower(), 4)
        self._next_private_host[subnet["id"].lower()] = host + 1
        return str(network.network_address + host)

    def _store_nic(
        self,
        nic_id: str,
        name: str,
        tags: dict[str, str],
        *,
        subnet_id: str,
        public_ip_id: str,
        delete_option: str,
        network_security_group: JsonDict | None = None,
    ) -> _Resource:
        subnet = self._require_subnet(subnet_id, nic_id)
        public_ip = self._resources.get(self._key(public_ip_id)) if public_ip_id else None
        if public_ip_id and public_ip is None:
            raise errors.invalid_resource_reference(public_ip_id, nic_id)
        configuration_id = f"{nic_id}/ipConfigurations/ipconfig1"
        ip_properties: JsonDict = {
            "privateIPAddress": self._allocate_private_ip(subnet),
            "privateIPAllocationMethod": "Dynamic",
            "subnet": {"id": subnet["id"]},
            "primary": True,
        }
        if public_ip is not None:
            ip_properties["publicIPAddress"] = {"id": public_ip_id}
            public_ip.body["properties"]["ipConfiguration"] = {"id": configuration_id}
        subnet["properties"].setdefault("ipConfigurations", []).append({"id": configuration_id})
        properties: JsonDict = {
            "provisioningState": "Succeeded",
            "ipConfigurations": [{"id": configuration_id, "name": "ipconfig1", "properties": ip_properties}],
        }
        if network_security_group:
            properties["networkSecurityGroup"] = network_security_group
        resource = _Resource(
            {
                "id": nic_id,
                "name": name,
                "type": _TYPES["networkinterfaces"],
                "location": self.location,
                "tags": tags,
                "properties": properties,
            }
        )
        resource.body["properties"]["_deleteOption"] = delete_option
        self._resources[self._key(nic_id)] = resource
        return resource

    def _store_public_ip(
        self, public_ip_id: str, resource_group: str, name: str, tags: dict[str, str], delete_option: str
    ) -> _Resource:
        address = f"20.0.{self._next_public_host // 250}.{self._next_public_host % 250 + 1}"
        self._next_public_host += 1
        resource = _Resource(
            {
                "id": public_ip_id,
                "name": name,
                "type": _TYPES["publicipaddresses"],
                "location": self.location,
                "tags": tags,
                "sku": {"name": "Standard"},
                "properties": {
                    "provisioningState": "Succeeded",
                    "publicIPAllocationMethod": "Static",
                    "ipAddress": address,
                    "_deleteOption": delete_option,
                },
            }
        )
        self._resources[self._key(public_ip_id)] = resource
        return resource

    def _put_security_group(
        self, nsg_id: str, resource_group: str, name: str, document: JsonDict, observations: int
    ) -> _Resource:
        self._refuse_if_busy(nsg_id)
        rules = []
        for requested in document.get("properties", {}).get("securityRules", []):
            rule = json.loads(json.dumps(requested))
            rule["id"] = f"{nsg_id}/securityRules/{rule['name']}"
            rule.setdefault("properties", {})["provisioningState"] = "Succeeded"
            rules.append(rule)
        defaults = [
            {
                "id": f"{nsg_id}/defaultSecurityRules/{rule_name}",
                "name": rule_name,
                "properties": {
                    "direction": direction,
                    "access": access,
                    "priority": priority,
                    "protocol": "*",
                    "sourceAddressPrefix": source,
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": destination,
                    "destinationPortRange": "*",
                },
            }
            for rule_name, direction, access, priority, source, destination in _DEFAULT_NSG_RULES
        ]
        existing = self._resources.get(self._key(nsg_id))
        subnets = existing.body["properties"].get("subnets", []) if existing else []
        resource = _Resource(
            {
                "id": nsg_id,
                "name": name,
                "type": _TYPES["networksecuritygroups"],
                "location": document.get("location", self.location),
                "tags": document.get("tags") or {},
                "properties": {
                    "provisioningState": "Updating",
                    "securityRules": rules,
                    "defaultSecurityRules": defaults,
                    "subnets": subnets,
                },
            }
        )
        self._resources[self._key(nsg_id)] = resource
        self._start_network_update(resource, "update" if existing else "create", observations)
        return resource

    def _put_virtual_network(
        self,
        vnet_id: str,
        resource_group: str,
        name: str,
        document: JsonDict,
        *,
        observations: int,
        duration_s: float | None = None,
    ) -> _Resource:
        self._refuse_if_busy(vnet_id)
        existing = self._resources.get(self._key(vnet_id))
        old_subnets = (
            {subnet["name"].lower(): subnet for subnet in existing.body["properties"]["subnets"]} if existing else {}
        )
        in_progress_state = "Updating" if self.long_running and (duration_s is None or duration_s > 0) else "Succeeded"
        subnets = []
        for requested in document.get("properties", {}).get("subnets", []):
            subnet_id = f"{vnet_id}/subnets/{requested['name']}"
            properties = json.loads(json.dumps(requested.get("properties", {})))
            previous = old_subnets.pop(requested["name"].lower(), None)
            properties["ipConfigurations"] = previous["properties"].get("ipConfigurations", []) if previous else []
            properties["provisioningState"] = in_progress_state
            subnets.append({"id": subnet_id, "name": requested["name"], "properties": properties})
        for dropped in old_subnets.values():
            if dropped["properties"].get("ipConfigurations"):
                raise ArmHttpError(400, "InUseSubnetCannotBeDeleted", f"Subnet {dropped['name']} is in use.")
        for subnet in subnets:
            reference = subnet["properties"].get("networkSecurityGroup")
            if reference:
                nsg = self._resources.get(self._key(reference["id"]))
                if nsg is None or nsg.body["type"] != _TYPES["networksecuritygroups"]:
                    raise errors.invalid_resource_reference(reference["id"], subnet["id"])
                self._require_provisioned(
                    nsg.body["id"], nsg.body["properties"]["provisioningState"], nsg.operation_id, subnet["id"]
                )
        for subnet in subnets:
            reference = subnet["properties"].get("networkSecurityGroup")
            if reference:
                links = self._resources[self._key(reference["id"])].body["properties"].setdefault("subnets", [])
                if all(link["id"].lower() != subnet["id"].lower() for link in links):
                    links.append({"id": subnet["id"]})
        resource = _Resource(
            {
                "id": vnet_id,
                "name": name,
                "type": _TYPES["virtualnetworks"],
                "location": document.get("location", self.location),
                "tags": document.get("tags") or {},
                "properties": {
                    "provisioningState": "Updating",
                    "addressSpace": document.get("properties", {}).get("addressSpace", {}),
                    "subnets": subnets,
                    # Peerings are their own requests here: a VNet PUT keeps those that exist.
                    "virtualNetworkPeerings": existing.body["properties"].get("virtualNetworkPeerings", [])
                    if existing
                    else [],
                },
            }
        )
        self._resources[self._key(vnet_id)] = resource
        self._start_network_update(resource, "update" if existing else "create", observations, duration_s)
        self._complete_if_due(resource.operation_id)
        return resource

    def _subnet_request(
        self, method: str, vnet_id: str, subnet_name: str, document: JsonDict
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        vnet = self._get(vnet_id)
        subnet = self._subnet_by_id(f"{vnet_id}/subnets/{subnet_name}")
        if method == "GET":
            if subnet is None:
                raise ArmHttpError(404, "NotFound", f"Resource {vnet_id}/subnets/{subnet_name} not found.")
            return 200, {}, json.loads(json.dumps(subnet))
        if method == "DELETE":
            if subnet is None:
                return 204, {}, None
            self._refuse_if_busy(vnet_id)
            if subnet["properties"].get("ipConfigurations"):
                raise ArmHttpError(400, "InUseSubnetCannotBeDeleted", f"Subnet {subnet_name} is in use.")
            self._unlink_subnet_from_nsg(subnet)
            vnet.body["properties"]["subnets"].remove(subnet)
            return 200, {}, None
        raise ArmHttpError(405, "MethodNotAllowed", f"{method} on a subnet is not emulated")

    # ---------------------------------------------------------------- virtual network peerings

    def _peering_by_id(self, peering_key: str) -> JsonDict | None:
        if "/virtualnetworkpeerings/" not in peering_key.lower():
            return None
        vnet_id, name = peering_key.rsplit("/", 1)
        vnet_id = vnet_id.rsplit("/", 1)[0]
        vnet = self._resources.get(self._key(vnet_id))
        if vnet is None:
            return None
        for peering in vnet.body["properties"].get("virtualNetworkPeerings", []):
            if peering["name"].lower() == name.lower():
                return peering  # type: ignore[no-any-return]
        return None

    def _remove_peering(self, peering_key: str) -> None:
        vnet_id = peering_key.rsplit("/", 2)[0]
        vnet = self._resources.get(self._key(vnet_id))
        peering = self._peering_by_id(peering_key)
        if vnet is None or peering is None:
            return
        vnet.body["properties"]["virtualNetworkPeerings"].remove(peering)
        self._disconnect_reverse_of(vnet.body["id"], peering)

    def _peering_request(
        self, method: str, vnet_id: str, peering_name: str, document: JsonDict, fault: Fault | None
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        vnet = self._get(vnet_id)
        observations = fault.observations if fault is not None and fault.kind is FaultKind.SLOW else 0
        peerings: list[JsonDict] = vnet.body["properties"].setdefault("virtualNetworkPeerings", [])
        existing = next((p for p in peerings if p["name"].lower() == peering_name.lower()), None)
        peering_id = f"{vnet.body['id']}/virtualNetworkPeerings/{peering_name}"
        if method == "GET":
            if existing is None:
                raise ArmHttpError(404, "NotFound", f"Resource {peering_id} not found.")
            self._observe(existing.get("_operationId", ""))
            return 200, {}, json.loads(json.dumps(existing))
        busy = self._in_progress(existing.get("_operationId", "")) if existing is not None else None
        if method == "DELETE":
            if existing is None:
                return 204, {}, None
            if busy is not None and busy.kind == "delete":
                return 202, self._delete_headers(busy), None
            if busy is not None and self.check_references:
                raise errors.retryable_due_to_another_operation(
                    peering_id, busy.name, busy.operation_id, self._seconds_left(busy)
                )
            operation = self._start_operation(
                peering_id, _PEERING_TYPE, "delete", observations=observations, duration_s=self.delete_s
            )
            existing["_operationId"] = operation.operation_id
            existing["properties"]["provisioningState"] = "Deleting"
            headers = self._delete_headers(operation)
            self._complete_if_due(operation.operation_id)
            return 202, headers, None
        if method != "PUT":
            raise ArmHttpError(405, "MethodNotAllowed", f"{method} on a virtual network peering")
        if busy is not None and self.check_references:
            raise errors.retryable_due_to_another_operation(
                peering_id, busy.name, busy.operation_id, self._seconds_left(busy)
            )
        peering = self._put_peering(vnet, peering_name, document, existing)
        if existing is not None:
            peerings[peerings.index(existing)] = peering
        else:
            peerings.append(peering)
        operation = self._start_operation(
            peering_id,
            _PEERING_TYPE,
            "update" if existing else "create",
            observations=observations,
            duration_s=self.network_update_s,
        )
        peering["_operationId"] = operation.operation_id
        peering["properties"]["provisioningState"] = "Updating"
        headers = self._put_headers(operation.operation_id)
        snapshot = json.loads(json.dumps(peering))
        self._complete_if_due(operation.operation_id)
        return (200 if existing is not None else 201), headers, snapshot

    def _put_peering(self, vnet: _Resource, name: str, document: JsonDict, existing: JsonDict | None) -> JsonDict:
        vnet_id = vnet.body["id"]
        peering_id = f"{vnet_id}/virtualNetworkPeerings/{name}"
        requested = document.get("properties", {})
        remote_id = requested.get("remoteVirtualNetwork", {}).get("id", "")
        self._require_provisioned(vnet_id, vnet.body["properties"]["provisioningState"], vnet.operation_id, peering_id)
        remote = self._resources.get(self._key(remote_id))
        if remote is None or remote.body["type"] != _TYPES["virtualnetworks"]:
            raise errors.invalid_resource_reference(remote_id, peering_id)
        self._require_provisioned(
            remote.body["id"], remote.body["properties"]["provisioningState"], remote.operation_id, peering_id
        )
        local_prefixes = _prefixes(vnet.body)
        overlap = _overlapping(local_prefixes, _prefixes(remote.body))
        if overlap:
            raise ArmHttpError(
                400,
                "VnetAddressSpacesOverlap",
                f"Cannot create or update peering {peering_id} because the address spaces of {vnet_id} and "
                f"{remote_id} overlap. Overlapping address prefixes: {', '.join(overlap)}.",
            )
        for other in remote.body["properties"].get("virtualNetworkPeerings", []):
            other_id = other["properties"]["remoteVirtualNetwork"]["id"]
            if other_id.lower() == vnet_id.lower():
                continue
            overlap = _overlapping(
                local_prefixes, other["properties"].get("remoteAddressSpace", {}).get("addressPrefixes", [])
            )
            if overlap:
                raise ArmHttpError(
                    400,
                    "VnetAddressSpaceOverlapsWithAlreadyPeeredVnet",
                    f"Cannot create or update peering {peering_id}. Virtual networks {vnet_id} and {remote_id} cannot "
                    f"be peered because address space of the first virtual network overlaps with address space of "
                    f"virtual network {other_id} already peered with the second virtual network. Overlapping "
                    f"address prefixes: {', '.join(overlap)}.",
                )
        reverse = self._reverse_peering(remote, vnet_id)
        was_disconnected = existing is not None and existing["properties"]["peeringState"] == "Disconnected"
        # A disconnected link never reconnects: Azure wants it deleted and both sides created again.
        if was_disconnected:
            state = "Disconnected"
        elif reverse is not None and reverse["properties"]["peeringState"] != "Disconnected":
            state = "Connected"
            reverse["properties"]["peeringState"] = "Connected"
        else:
            state = "Initiated"
        return {
            "id": peering_id,
            "name": name,
            "type": _PEERING_TYPE,
            "etag": f'W/"{uuid.uuid4()}"',
            "properties": {
                "provisioningState": "Succeeded",
                "peeringState": state,
                "peeringSyncLevel": "FullyInSync",
                "remoteVirtualNetwork": {"id": remote.body["id"]},
                "remoteAddressSpace": {"addressPrefixes": _prefixes(remote.body)},
                "remoteVirtualNetworkAddressSpace": {"addressPrefixes": _prefixes(remote.body)},
                "allowVirtualNetworkAccess": requested.get("allowVirtualNetworkAccess", True),
                "allowForwardedTraffic": requested.get("allowForwardedTraffic", False),
                "allowGatewayTransit": requested.get("allowGatewayTransit", False),
                "useRemoteGateways": requested.get("useRemoteGateways", False),
            },
        }

    @staticmethod
    def _reverse_peering(remote: _Resource, local_vnet_id: str) -> JsonDict | None:
        for peering in remote.body["properties"].get("virtualNetworkPeerings", []):
            if peering["properties"]["remoteVirtualNetwork"]["id"].lower() == local_vnet_id.lower():
                return peering  # type: ignore[no-any-return]
        return None

    def _disconnect_reverse_of(self, vnet_id: str, peering: JsonDict) -> None:
        """A deleted link leaves the other side Disconnected."""
        remote = self._resources.get(self._key(peering["properties"]["remoteVirtualNetwork"]["id"]))
        reverse = self._reverse_peering(remote, vnet_id) if remote is not None else None
        if reverse is not None:
            reverse["properties"]["peeringState"] = "Disconnected"

    def peerings(self, vnet_id: str) -> list[JsonDict]:
        """Snapshots of the peerings of a VNet (empty when the VNet does not exist)."""
        with self._lock:
            self._advance()
            vnet = self._resources.get(self._key(vnet_id))
            if vnet is None:
                return []
            return _strip_internal(json.loads(json.dumps(vnet.body["properties"].get("virtualNetworkPeerings", []))))  # type: ignore[no-any-return]


def _is_operation_path(lowered: list[str]) -> bool:
    return (
        len(lowered) == 8
        and lowered[2] == "providers"
        and lowered[4] == "locations"
        and lowered[6] in ("operations", "operationresults")
    )


def _prefixes(vnet_body: JsonDict) -> list[str]:
    return list(vnet_body["properties"].get("addressSpace", {}).get("addressPrefixes", []))


def _overlapping(first: list[str], second: list[str]) -> list[str]:
    return [
        left
        for left in first
        if any(
            ipaddress.ip_network(left, strict=False).overlaps(ipaddress.ip_network(right, strict=False))
            for right in second
        )
    ]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class _ArmRequestHandler(http.server.BaseHTTPRequestHandler):
    arm: ArmEmulator
    protocol_version = "HTTP/1.1"  # keep-alive: one TLS handshake per client connection, not per request
    # Headers and body go out in two writes: with Nagle's algorithm the second waits for the client's delayed ACK
    # (about 40 ms per request).
    disable_nagle_algorithm = True
    timeout = 10  # idle keep-alive connections are closed, so stop() does not wait on them

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        status, response_headers, payload = self.arm.handle(self.command, self.path, headers, body)
        data = b"" if payload is None else json.dumps(_strip_internal(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for name, value in response_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    # The method names http.server dispatches to.
    do_GET = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_POST = _serve
    do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is kept in the emulator itself."""


RESOURCE_BUDGET_HEADER = "x-ms-ratelimit-remaining-resource"


def _merge_headers(first: dict[str, str], second: dict[str, str]) -> dict[str, str]:
    """Both header sets; every Compute policy a request was charged to is one entry of the same
    `x-ms-ratelimit-remaining-resource` (troubleshooting-throttling-errors), so that header's values are joined."""
    merged = {**first, **second}
    if first.get(RESOURCE_BUDGET_HEADER) and second.get(RESOURCE_BUDGET_HEADER):
        merged[RESOURCE_BUDGET_HEADER] = f"{first[RESOURCE_BUDGET_HEADER]},{second[RESOURCE_BUDGET_HEADER]}"
    return merged


def _strip_internal(value: Any) -> Any:
    """Drop the emulator's own bookkeeping keys (leading underscore) from an answer."""
    if isinstance(value, dict):
        return {key: _strip_internal(item) for key, item in value.items() if not key.startswith("_")}
    if isinstance(value, list):
        return [_strip_internal(item) for item in value]
    return value


def iter_allow_rules(nsg: JsonDict) -> Iterator[JsonDict]:
    """Every inbound Allow rule of an NSG snapshot (custom and default), with properties flattened."""
    for rule in nsg["properties"].get("securityRules", []) + nsg["properties"].get("defaultSecurityRules", []):
        properties = rule["properties"]
        if properties.get("access") == "Allow" and properties.get("direction") == "Inbound":
            yield {"name": rule["name"], **properties}
