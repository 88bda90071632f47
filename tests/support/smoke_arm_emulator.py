"""The loopback ARM emulator plus the routes `make azure-smoke` (infra/smoke/azure_smoke.py) calls besides Compute and
Network, answered in Azure's shapes:

- Microsoft.Resources: `GET .../resourceGroups/{g}/resources` with the `$filter` forms the runner uses
  (`tagName eq 'k' and tagValue eq 'v'`, whose answer carries no tags, as Azure's does; `substringof('s', name)`);
- Microsoft.Web: `POST .../sites/{app}/host/default/listKeys` (the function keys of one app);
- Microsoft.Authorization: `GET /subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions`, which lists
  roles assignable below the subscription only with `$filter=atScopeAndBelow()`;
- Microsoft.Compute: `POST .../virtualMachines/{vm}/runCommand` as a long-running operation: 202 with
  `Azure-AsyncOperation` (the status, in progress at the first look) and `Location` (the RunCommandResult once
  done); what the script "prints" comes from a function the test gives.

Everything else goes to `ArmEmulator.handle`, unchanged.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.arm_emulator import ArmEmulator, JsonDict

VM_TYPE = "Microsoft.Compute/virtualMachines"
RunCommandAnswer = Callable[[str, str], str]  # (VM name, script) -> the output Azure reports

_TAG_FILTER = re.compile(r"^tagName eq '([^']*)' and tagValue eq '([^']*)'$")
_NAME_FILTER = re.compile(r"^substringof\('([^']*)', name\)$")


@dataclass
class RunCommandCall:
    vm_name: str
    resource_group: str
    script: str


@dataclass
class _RunCommandOperation:
    output: str
    status_looks_left: int = 1  # the first status poll answers InProgress, so the client really polls


class SmokeArmEmulator(ArmEmulator):
    """`ArmEmulator` with the smoke runner's extra routes (see the module docstring)."""

    def __init__(self, **emulator_options: Any) -> None:
        super().__init__(**emulator_options)
        self.function_keys: dict[tuple[str, str], str] = {}  # (resource group, app), lower-cased -> default key
        self.role_definitions: list[JsonDict] = []
        self.other_resources: list[JsonDict] = []  # types the emulator does not model (snapshots...)
        self.run_command_answer: RunCommandAnswer | None = None
        self.run_commands: list[RunCommandCall] = []
        self._run_command_operations: dict[str, _RunCommandOperation] = {}

    def start(self) -> SmokeArmEmulator:
        super().start()
        return self

    def __enter__(self) -> SmokeArmEmulator:
        return self.start()

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        split = urlsplit(raw_path)
        path = split.path.rstrip("/")
        query = {key.lower(): values[-1] for key, values in parse_qs(split.query).items()}
        segments = [segment.lower() for segment in path.split("/") if segment]
        answer = self._smoke_route(method, path, segments, query, body)
        if answer is None:
            return super().handle(method, raw_path, headers, body)
        if not headers.get("authorization", "").lower().startswith("bearer "):
            answer = _error(401, "AuthenticationFailed", "missing bearer token")
        self.request_log.append((method, path, answer[0]))
        return answer

    def _smoke_route(  # noqa: PLR0911 -- one return per extra route of the smoke emulator
        self, method: str, path: str, segments: list[str], query: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], JsonDict | None] | None:
        original = [segment for segment in path.split("/") if segment]
        if len(segments) < 2 or segments[0] != "subscriptions" or segments[1] != self.subscription_id.lower():
            return None
        rest = segments[2:]
        if method == "GET" and len(rest) == 3 and rest[0] == "resourcegroups" and rest[2] == "resources":
            return self._list_resources(original[3], query.get("$filter", ""))
        if method == "POST" and rest[-3:] == ["host", "default", "listkeys"] and "microsoft.web" in rest:
            return self._list_keys(original[3], original[7])
        if method == "GET" and rest == ["providers", "microsoft.authorization", "roledefinitions"]:
            return self._list_role_definitions(query.get("$filter", ""))
        if method == "POST" and rest[-1:] == ["runcommand"] and "virtualmachines" in rest:
            return self._start_run_command(original[3], original[7], body)
        if method == "GET" and len(rest) == 6 and rest[1] == "microsoft.compute" and rest[4] == "operations":
            operation = self._run_command_operations.get(original[7])
            if operation is not None:
                return self._run_command_progress(operation, monitor=query.get("monitor") == "true")
        return None

    # -- Microsoft.Resources

    def _list_resources(self, resource_group: str, filter_expression: str) -> tuple[int, dict[str, str], JsonDict]:
        in_group: list[JsonDict] = [
            {key: resource[key] for key in ("id", "name", "type", "location", "tags") if key in resource}
            for resource in [*self.resources(), *self.other_resources]
            if resource["id"].split("/")[4].lower() == resource_group.lower()
        ]
        tag_filter = _TAG_FILTER.match(filter_expression)
        name_filter = _NAME_FILTER.match(filter_expression)
        selected: list[JsonDict]
        if tag_filter:
            name, value = tag_filter.groups()
            selected = [
                {key: item for key, item in resource.items() if key != "tags"}  # Azure leaves tags out here
                for resource in in_group
                if (resource.get("tags") or {}).get(name) == value
            ]
        elif name_filter:
            selected = [resource for resource in in_group if name_filter.group(1) in resource["name"]]
        elif not filter_expression:
            selected = in_group
        else:
            return _error(400, "InvalidFilterInQueryString", f"filter {filter_expression!r} is not emulated")
        return 200, {}, {"value": selected}

    # -- Microsoft.Web

    def _list_keys(self, resource_group: str, app_name: str) -> tuple[int, dict[str, str], JsonDict]:
        key = self.function_keys.get((resource_group.lower(), app_name.lower()))
        if key is None:
            return _error(404, "ResourceNotFound", f"site {app_name} not found in {resource_group}")
        return 200, {}, {"masterKey": uuid.uuid4().hex, "functionKeys": {"default": key}, "systemKeys": {}}

    # -- Microsoft.Authorization

    def _list_role_definitions(self, filter_expression: str) -> tuple[int, dict[str, str], JsonDict]:
        subscription_scope = f"/subscriptions/{self.subscription_id}".lower()
        if filter_expression == "atScopeAndBelow()":
            listed = self.role_definitions
        else:
            listed = [
                role
                for role in self.role_definitions
                if any(scope.lower() in ("/", subscription_scope) for scope in role["properties"]["assignableScopes"])
            ]
        return 200, {}, {"value": json.loads(json.dumps(listed))}

    # -- Microsoft.Compute run command

    def _start_run_command(
        self, resource_group: str, vm_name: str, body: bytes
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        vms = [
            vm
            for vm in self.resources(VM_TYPE)
            if vm["name"] == vm_name and vm["id"].split("/")[4].lower() == resource_group.lower()
        ]
        if not vms:
            return _error(404, "ResourceNotFound", f"The Resource '{VM_TYPE}/{vm_name}' was not found.")
        document = json.loads(body) if body else {}
        if document.get("commandId") != "RunShellScript":
            return _error(400, "InvalidParameter", f"commandId {document.get('commandId')!r} is not emulated")
        script = "\n".join(document.get("script") or [])
        self.run_commands.append(RunCommandCall(vm_name, resource_group, script))
        output = self.run_command_answer(vm_name, script) if self.run_command_answer else ""
        operation_id = uuid.uuid4().hex
        self._run_command_operations[operation_id] = _RunCommandOperation(output)
        status_url = (
            f"{self.base_url}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute/locations/"
            f"{self.location}/operations/{operation_id}?api-version=2024-07-01"
        )
        headers = {"Azure-AsyncOperation": status_url, "Location": f"{status_url}&monitor=true", "Retry-After": "0"}
        return 202, headers, None

    @staticmethod
    def _run_command_progress(
        operation: _RunCommandOperation, *, monitor: bool
    ) -> tuple[int, dict[str, str], JsonDict | None]:
        result: JsonDict = {
            "value": [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Provisioning succeeded",
                    "message": operation.output,
                }
            ]
        }
        if monitor:
            return (200, {}, result) if operation.status_looks_left == 0 else (202, {"Retry-After": "0"}, None)
        if operation.status_looks_left > 0:
            operation.status_looks_left -= 1
            return 200, {"Retry-After": "0"}, {"status": "InProgress"}
        return 200, {}, {"status": "Succeeded", "properties": {"output": result}}


def run_command_output(stdout: str, stderr: str = "") -> str:
    """What Azure reports for a Linux RunShellScript: one message with both streams."""
    return f"Enable succeeded: \n[stdout]\n{stdout}\n[stderr]\n{stderr}\n"


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], JsonDict]:
    return status, {"x-ms-error-code": code}, {"error": {"code": code, "message": message}}


def snapshot(subscription_id: str, resource_group: str, name: str, tags: dict[str, str]) -> dict[str, Any]:
    """A resource of a type neither the emulator nor the provider knows: only a listing of the group shows it."""
    return {
        "id": f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/Microsoft.Compute/snapshots/"
        f"{name}",
        "name": name,
        "type": "Microsoft.Compute/snapshots",
        "location": "eastus",
        "tags": tags,
    }
