"""A loopback Azure Resource Manager emulator: just enough of Compute and Network for our provider and Ray's.

It serves HTTPS on 127.0.0.1 with a throwaway CA from `trustme`; clients trust it through
`connection_verify=emulator.ca_path`. It keeps resources as Azure's JSON shapes and implements:

- virtual machines (PUT/GET/DELETE, list by resource group, list all with `statusOnly=true`, instanceView),
  with inline network interface and public IP configurations (`networkApiVersion`) and `deleteOption` cascade;
  as in Azure, only `list_all(statusOnly=true)` and the instanceView GET carry the instance view (power state,
  `ProvisioningState/failed/<code>`); a resource-group list shows provisioning state and tags only;
- network interfaces, public IP addresses, disks (list/GET/DELETE; NICs and public IPs also PUT);
- network security groups (with Azure's default rules), virtual networks and subnets;
- virtual network peerings (PUT/GET/DELETE, listed inline in the VNet as Azure does): `peeringState` Initiated
  while only one side exists, Connected once both do, Disconnected when the other side is deleted; overlapping
  address spaces refused (`VnetAddressSpacesOverlap`, `VnetAddressSpaceOverlapsWithAlreadyPeeredVnet`);
- long-running operations: PUT/DELETE answer with `Azure-AsyncOperation` and `Location` headers pointing at an
  operation-status endpoint; an operation completes once it has been observed `observations` times;
- `InUse` refusals as Azure gives them (NIC attached to a VM, subnet with NICs, NSG used by a subnet...);
- fault injection (`inject(Fault(...))`): a queue of faults matched by method + path regex;
- spot eviction (`evict(vm_name, mode=...)`);
- request counting by method and normalized path, and by read/write, for tests and benchmarks.

Usage::

    with ArmEmulator() as arm:
        client = ComputeManagementClient(arm.credential(), arm.subscription_id,
                                         base_url=arm.base_url, connection_verify=arm.ca_path)
"""

from __future__ import annotations

import enum
import hashlib
import http.server
import ipaddress
import json
import re
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
from azure.core.credentials import AccessToken

DEFAULT_SUBSCRIPTION_ID = "00000000-0000-0000-0000-0000000000a1"
DEFAULT_LOCATION = "eastus"

JsonDict = dict[str, Any]
TEST_ACCESS_TOKEN = "emulator-test-token"


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


class ArmHttpError(Exception):
    """An ARM error answer: status, code and message, as Azure's `{"error": {...}}` body."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class _Operation:
    operation_id: str
    resource_key: str
    kind: str  # "create" or "delete"
    observations_left: int
    failure: tuple[str, str] | None = None  # (code, message) when the operation ends failed
    status: str = "InProgress"


@dataclass
class _Resource:
    body: JsonDict
    power_state: str = "running"  # VMs only
    failure: tuple[str, str] | None = None  # VMs only: why provisioning failed
    operation_id: str = ""  # the operation in progress on it, if any
    os_profile_digest: str = ""  # VMs only: osProfile (with custom data) is immutable after creation


# Collection names whose next path segment is a name; used to normalize paths for counting.
_NAMED_COLLECTIONS = {
    "subscriptions",
    "resourcegroups",
    "locations",
    "operations",
    "virtualmachines",
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
    "disks": "Microsoft.Compute/disks",
    "networkinterfaces": "Microsoft.Network/networkInterfaces",
    "publicipaddresses": "Microsoft.Network/publicIPAddresses",
    "networksecuritygroups": "Microsoft.Network/networkSecurityGroups",
    "virtualnetworks": "Microsoft.Network/virtualNetworks",
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


class ArmEmulator:
    """The emulator: start()/stop() or use as a context manager. Thread-safe."""

    def __init__(
        self,
        *,
        subscription_id: str = DEFAULT_SUBSCRIPTION_ID,
        location: str = DEFAULT_LOCATION,
        page_size: int | None = None,
    ) -> None:
        self.subscription_id = subscription_id
        self.location = location
        self.page_size = page_size  # None: every list answers in one page
        self._lock = threading.RLock()
        self._resources: dict[str, _Resource] = {}  # key: lower-cased resource id
        self._operations: dict[str, _Operation] = {}
        self._faults: list[Fault] = []
        self._next_private_host: dict[str, int] = {}
        self._next_public_host = 10
        self.requests_by_route: Counter[tuple[str, str]] = Counter()
        self.requests_by_kind: Counter[str] = Counter()
        self.request_log: list[tuple[str, str, int]] = []  # (method, path, status)
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

    def credential(self) -> StaticTestCredential:
        return StaticTestCredential()

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

    @property
    def reads(self) -> int:
        return self.requests_by_kind["read"]

    @property
    def writes(self) -> int:
        return self.requests_by_kind["write"]

    def resources(self, type_name: str | None = None) -> list[JsonDict]:
        """Snapshots of every stored resource (optionally of one type, e.g. "Microsoft.Compute/virtualMachines")."""
        with self._lock:
            return [
                _strip_internal(json.loads(json.dumps(resource.body)))
                for resource in self._resources.values()
                if type_name is None or resource.body["type"].lower() == type_name.lower()
            ]

    def evict(self, vm_name: str, mode: str = "delete") -> None:
        """Spot eviction: "delete" removes the VM (and what is marked deleteOption Delete); "deallocate" stops it."""
        with self._lock:
            resource = self._find_by_name("virtualmachines", vm_name)
            if mode == "delete":
                self._delete_now(self._key(resource.body["id"]))
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
            self._put_virtual_network(vnet_id, resource_group, vnet_name, body, observations=0)
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
            self._create_vm(vm_id, resource_group, vm_name, body, observations=0, failure=None)
        return vm_id

    # ---------------------------------------------------------------- request entry point

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        split = urlsplit(raw_path)
        path = split.path.rstrip("/")
        query = {key.lower(): values[-1] for key, values in parse_qs(split.query).items()}
        with self._lock:
            status, response_headers, payload = self._handle_locked(method, path, query, headers, body)
            self.requests_by_route[(method, normalize_path(path))] += 1
            self.requests_by_kind["read" if method in ("GET", "HEAD") else "write"] += 1
            self.request_log.append((method, path, status))
            return status, response_headers, payload

    def _handle_locked(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        if not headers.get("authorization", "").lower().startswith("bearer "):
            return _error_response(ArmHttpError(401, "AuthenticationFailed", "missing bearer token"))
        fault = self._take_fault(method, path)
        try:
            if fault is not None and fault.kind is FaultKind.ERROR:
                raise ArmHttpError(fault.status, fault.code, fault.message, fault.retry_after_s)
            document = json.loads(body) if body else {}
            return self._route(method, path, query, document, fault)
        except ArmHttpError as error:
            return _error_response(error)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                return fault
        return None

    # ---------------------------------------------------------------- routing

    def _route(
        self, method: str, path: str, query: dict[str, str], document: JsonDict, fault: Fault | None
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        segments = [segment for segment in path.split("/") if segment]
        lowered = [segment.lower() for segment in segments]
        if len(segments) < 2 or lowered[0] != "subscriptions":
            raise ArmHttpError(404, "InvalidResourceType", f"no route for {path}")
        if segments[1].lower() != self.subscription_id.lower():
            raise ArmHttpError(404, "SubscriptionNotFound", f"subscription {segments[1]} not found")
        # /subscriptions/{s}/providers/{ns}/locations/{loc}/operations/{op}
        if (
            len(segments) == 8
            and lowered[2] == "providers"
            and lowered[4] == "locations"
            and lowered[6] == "operations"
        ):
            return self._operation_status(segments[7])
        # /subscriptions/{s}/providers/Microsoft.Compute/virtualMachines  (list all)
        if len(segments) == 5 and lowered[2] == "providers" and lowered[4] == "virtualmachines" and method == "GET":
            return 200, {}, self._list(None, "virtualmachines", with_instance_view=query.get("statusonly") == "true")
        if len(segments) < 7 or lowered[2] != "resourcegroups" or lowered[4] != "providers":
            raise ArmHttpError(404, "InvalidResourceType", f"no route for {path}")
        resource_group, collection = segments[3], lowered[6]
        if collection not in _TYPES:
            raise ArmHttpError(404, "InvalidResourceType", f"resource type {segments[6]} is not emulated")
        if len(segments) == 7:
            if method != "GET":
                raise ArmHttpError(405, "MethodNotAllowed", f"{method} on a collection")
            return 200, {}, self._list(resource_group, collection, with_instance_view=False)
        name = segments[7]
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
        if collection == "virtualnetworks" and lowered[8] == "subnets" and len(segments) == 10:
            return self._subnet_request(method, resource_id, segments[9], document)
        if collection == "virtualnetworks" and lowered[8] == "virtualnetworkpeerings" and len(segments) == 10:
            return self._peering_request(method, resource_id, segments[9], document)
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
            resource = self._put_virtual_network(resource_id, resource_group, name, document, observations)
        elif collection == "networkinterfaces":
            ip_configuration = document.get("properties", {}).get("ipConfigurations", [{}])[0].get("properties", {})
            resource = self._store_nic(
                resource_id,
                name,
                document.get("tags") or {},
                subnet_id=ip_configuration.get("subnet", {}).get("id", ""),
                public_ip_id=ip_configuration.get("publicIPAddress", {}).get("id", ""),
                delete_option="Detach",
            )
        elif collection == "publicipaddresses":
            resource = self._store_public_ip(resource_id, resource_group, name, document.get("tags") or {}, "Detach")
        else:
            raise ArmHttpError(405, "MethodNotAllowed", f"PUT on {collection} is not emulated")
        headers = self._operation_headers(resource.operation_id, resource_id) if resource.operation_id else {}
        snapshot = self._render(resource, expand="")
        self._complete_if_due(resource)
        return (200 if existed else 201), headers, snapshot

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
        self._observe(resource)
        return resource

    def _find_by_name(self, collection: str, name: str) -> _Resource:
        for resource in self._resources.values():
            if resource.body["type"].lower() == _TYPES[collection].lower() and resource.body["name"] == name:
                return resource
        raise KeyError(f"no {collection} named {name}")

    def _list(self, resource_group: str | None, collection: str, *, with_instance_view: bool) -> JsonDict:
        type_name = _TYPES[collection].lower()
        prefix = f"/subscriptions/{self.subscription_id}/resourcegroups/{(resource_group or '').lower()}/"
        selected = [
            resource
            for key, resource in list(self._resources.items())
            if resource.body["type"].lower() == type_name and (resource_group is None or key.startswith(prefix))
        ]
        values = []
        for resource in selected:
            self._observe(resource)
            rendered = self._render(resource, expand="instanceView" if with_instance_view else "")
            values.append(rendered)
        # Paging is emulated only to count requests; a nextLink would need a cursor, which no caller needs here.
        return {"value": values[: self.page_size] if self.page_size else values}

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
        self, resource: _Resource, kind: str, observations: int, failure: tuple[str, str] | None = None
    ) -> None:
        operation = _Operation(uuid.uuid4().hex, self._key(resource.body["id"]), kind, observations, failure)
        self._operations[operation.operation_id] = operation
        resource.operation_id = operation.operation_id

    def _operation_headers(self, operation_id: str, resource_id: str) -> dict[str, str]:
        namespace = resource_id.split("/providers/")[1].split("/", maxsplit=1)[0]
        url = (
            f"{self.base_url}/subscriptions/{self.subscription_id}/providers/{namespace}/locations/"
            f"{self.location}/operations/{operation_id}?api-version=2024-01-01"
        )
        return {"Azure-AsyncOperation": url, "Location": url, "Retry-After": "0"}

    def _observe(self, resource: _Resource) -> None:
        operation = self._operations.get(resource.operation_id) if resource.operation_id else None
        if operation is None or operation.status != "InProgress":
            return
        if operation.observations_left > 0:
            operation.observations_left -= 1
            return
        self._complete(operation)

    def _complete_if_due(self, resource: _Resource) -> None:
        operation = self._operations.get(resource.operation_id) if resource.operation_id else None
        if operation is not None and operation.status == "InProgress" and operation.observations_left == 0:
            self._complete(operation)

    def _complete(self, operation: _Operation) -> None:
        resource = self._resources.get(operation.resource_key)
        if operation.kind == "delete":
            operation.status = "Succeeded"
            if resource is not None:
                self._delete_now(operation.resource_key)
            return
        operation.status = "Failed" if operation.failure else "Succeeded"
        if resource is not None:
            resource.operation_id = ""
            resource.body["properties"]["provisioningState"] = operation.status
            if operation.failure is not None:
                resource.failure = operation.failure

    def _operation_status(self, operation_id: str) -> tuple[int, dict[str, str], JsonDict | None]:
        operation = self._operations.get(operation_id)
        if operation is None:
            raise ArmHttpError(404, "OperationNotFound", f"operation {operation_id} not found")
        if operation.status == "InProgress":
            if operation.observations_left > 0:
                operation.observations_left -= 1
            else:
                self._complete(operation)
        answer: JsonDict = {"name": operation_id, "status": operation.status}
        if operation.failure is not None and operation.status == "Failed":
            answer["error"] = {"code": operation.failure[0], "message": operation.failure[1]}
        return 200, {"Retry-After": "0"}, answer

    # ---------------------------------------------------------------- deletion

    def _delete(self, resource_id: str, observations: int) -> tuple[int, dict[str, str], JsonDict | None]:
        key = self._key(resource_id)
        resource = self._resources.get(key)
        if resource is None:
            return 204, {}, None
        self._refuse_if_in_use(resource)
        self._start_operation(resource, "delete", observations)
        resource.body["properties"]["provisioningState"] = "Deleting"
        headers = self._operation_headers(resource.operation_id, resource_id)
        self._complete_if_due(resource)
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
        elif resource_type == _TYPES["networksecuritygroups"]:
            pass

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

    def _create_vm(
        self,
        vm_id: str,
        resource_group: str,
        name: str,
        document: JsonDict,
        *,
        observations: int,
        failure: tuple[str, str] | None,
    ) -> _Resource:
        existing = self._resources.get(self._key(vm_id))
        if existing is not None:
            if existing.body["properties"]["provisioningState"] == "Deleting":
                raise ArmHttpError(409, "OperationNotAllowed", f"VM {name} is being deleted.")
            if sorted(document.get("zones") or []) != sorted(existing.body.get("zones") or []):
                raise ArmHttpError(409, "PropertyChangeNotAllowed", "Changing property 'zones' is not allowed.")
            if _digest(document.get("properties", {}).get("osProfile")) != existing.os_profile_digest:
                raise ArmHttpError(409, "PropertyChangeNotAllowed", "Changing property 'osProfile' is not allowed.")
            # A PUT of the same VM is an idempotent update: nothing new is created.
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
                raise ArmHttpError(
                    400,
                    "InvalidResourceReference",
                    f"Resource {interface['id']} referenced by VM {name} was not found.",
                )
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
        resource = _Resource(body, os_profile_digest=os_profile_digest)
        self._resources[self._key(vm_id)] = resource
        self._start_operation(resource, "create", observations, failure)
        return resource

    def _create_inline_nic(self, vm_id: str, resource_group: str, configuration: JsonDict) -> JsonDict:
        """`networkInterfaceConfigurations`: the VM PUT creates the NIC (and public IP) itself."""
        nic_name = configuration["name"]
        nic_properties = configuration.get("properties", {})
        ip_configuration = nic_properties.get("ipConfigurations", [{}])[0]
        ip_properties = ip_configuration.get("properties", {})
        subnet_id = ip_properties.get("subnet", {}).get("id", "")
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
        nic_id = self._resource_id(resource_group, "networkinterfaces", nic_name)
        if self._key(nic_id) in self._resources:
            raise ArmHttpError(409, "ResourceExists", f"Network interface {nic_id} already exists.")
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
        subnet = self._subnet_by_id(subnet_id)
        if subnet is None:
            raise ArmHttpError(
                400, "InvalidResourceReference", f"Resource {subnet_id} referenced by {nic_id} was not found."
            )
        configuration_id = f"{nic_id}/ipConfigurations/ipconfig1"
        ip_properties: JsonDict = {
            "privateIPAddress": self._allocate_private_ip(subnet),
            "privateIPAllocationMethod": "Dynamic",
            "subnet": {"id": subnet["id"]},
            "primary": True,
        }
        if public_ip_id:
            ip_properties["publicIPAddress"] = {"id": public_ip_id}
            public_ip = self._resources[self._key(public_ip_id)]
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
        self._start_operation(resource, "create", observations)
        return resource

    def _put_virtual_network(
        self, vnet_id: str, resource_group: str, name: str, document: JsonDict, observations: int
    ) -> _Resource:
        existing = self._resources.get(self._key(vnet_id))
        old_subnets = (
            {subnet["name"].lower(): subnet for subnet in existing.body["properties"]["subnets"]} if existing else {}
        )
        subnets = []
        for requested in document.get("properties", {}).get("subnets", []):
            subnet_id = f"{vnet_id}/subnets/{requested['name']}"
            properties = json.loads(json.dumps(requested.get("properties", {})))
            previous = old_subnets.pop(requested["name"].lower(), None)
            properties["ipConfigurations"] = previous["properties"].get("ipConfigurations", []) if previous else []
            properties["provisioningState"] = "Succeeded"
            subnets.append({"id": subnet_id, "name": requested["name"], "properties": properties})
        for dropped in old_subnets.values():
            if dropped["properties"].get("ipConfigurations"):
                raise ArmHttpError(400, "InUseSubnetCannotBeDeleted", f"Subnet {dropped['name']} is in use.")
        for subnet in subnets:
            reference = subnet["properties"].get("networkSecurityGroup")
            if reference:
                nsg = self._resources.get(self._key(reference["id"]))
                if nsg is None:
                    raise ArmHttpError(400, "InvalidResourceReference", f"Resource {reference['id']} was not found.")
                links = nsg.body["properties"].setdefault("subnets", [])
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
        self._start_operation(resource, "create", observations)
        self._complete_if_due(resource)
        return resource

    def _subnet_request(
        self, method: str, vnet_id: str, subnet_name: str, document: JsonDict
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        vnet = self._get(vnet_id)
        subnet = self._subnet_by_id(f"{vnet_id}/subnets/{subnet_name}")
        if method == "GET":
            if subnet is None:
                raise ArmHttpError(404, "NotFound", f"Subnet {subnet_name} not found.")
            return 200, {}, json.loads(json.dumps(subnet))
        if method == "DELETE":
            if subnet is None:
                return 204, {}, None
            if subnet["properties"].get("ipConfigurations"):
                raise ArmHttpError(400, "InUseSubnetCannotBeDeleted", f"Subnet {subnet_name} is in use.")
            self._unlink_subnet_from_nsg(subnet)
            vnet.body["properties"]["subnets"].remove(subnet)
            return 200, {}, None
        raise ArmHttpError(405, "MethodNotAllowed", f"{method} on a subnet is not emulated")

    # ---------------------------------------------------------------- virtual network peerings

    def _peering_request(
        self, method: str, vnet_id: str, peering_name: str, document: JsonDict
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        vnet = self._get(vnet_id)
        peerings: list[JsonDict] = vnet.body["properties"].setdefault("virtualNetworkPeerings", [])
        existing = next((p for p in peerings if p["name"].lower() == peering_name.lower()), None)
        if method == "GET":
            if existing is None:
                raise ArmHttpError(
                    404, "NotFound", f"Resource {vnet_id}/virtualNetworkPeerings/{peering_name} not found."
                )
            return 200, {}, json.loads(json.dumps(existing))
        if method == "DELETE":
            if existing is None:
                return 204, {}, None
            peerings.remove(existing)
            self._disconnect_reverse_of(vnet_id, existing)
            return 200, {}, None
        if method != "PUT":
            raise ArmHttpError(405, "MethodNotAllowed", f"{method} on a virtual network peering")
        peering = self._put_peering(vnet, peering_name, document, existing)
        if existing is not None:
            peerings[peerings.index(existing)] = peering
        else:
            peerings.append(peering)
        return (200 if existing is not None else 201), {}, json.loads(json.dumps(peering))

    def _put_peering(self, vnet: _Resource, name: str, document: JsonDict, existing: JsonDict | None) -> JsonDict:
        vnet_id = vnet.body["id"]
        peering_id = f"{vnet_id}/virtualNetworkPeerings/{name}"
        requested = document.get("properties", {})
        remote_id = requested.get("remoteVirtualNetwork", {}).get("id", "")
        remote = self._resources.get(self._key(remote_id))
        if remote is None or remote.body["type"] != _TYPES["virtualnetworks"]:
            raise ArmHttpError(
                400,
                "InvalidResourceReference",
                f"Resource {remote_id} referenced by resource {peering_id} was not found.",
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
            "type": "Microsoft.Network/virtualNetworks/virtualNetworkPeerings",
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
            vnet = self._resources.get(self._key(vnet_id))
            return json.loads(json.dumps(vnet.body["properties"].get("virtualNetworkPeerings", []))) if vnet else []


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


def _error_response(error: ArmHttpError) -> tuple[int, dict[str, str], JsonDict | None]:
    headers = {"x-ms-error-code": error.code}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(int(error.retry_after_s))
    return error.status, headers, {"error": {"code": error.code, "message": error.message}}


class _ArmRequestHandler(http.server.BaseHTTPRequestHandler):
    arm: ArmEmulator
    protocol_version = "HTTP/1.1"  # keep-alive: one TLS handshake per client connection, not per request
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
