"""`make azure-smoke`: the whole product once, on a real Azure subscription, then nothing left behind.

It spends money, so it refuses to start without AZURE_SUBSCRIPTION_ID and SMOKE_OK=1. Then, in a fresh azd
environment: `azd up` deploys the control plane; the function key comes from ARM (listKeys); a one-worker spot
cluster (infra/smoke/smoke-cluster.yaml) is POSTed to the API and polled until the head and the worker run Ray; a Ray
task pinned to the worker runs from the head through ARM's VM Run Command (Ray's ports are private by design); the
cluster is DELETEd and polled until `deleted`; ARM is asked whether anything tagged for the cluster (or named after
it) is left; `azd down --force --purge` removes the deployment. Cleanup runs whatever failed before it, and says what
it could not remove. Progress goes to stdout; the last line is the report as JSON (see docs/azure-smoke.md).

The logic talks to three ports, wired in one place (`build_azure_ports`): a command runner (azd), the app's HTTP API,
and ARM (azure-mgmt-compute and azure-mgmt-resource clients built from a credential, an endpoint and a CA bundle),
so tests run it against the loopback ARM emulator, the real app on loopback and a scripted azd.

Run from the repository root with the repository on the import path: `PYTHONPATH=. python infra/smoke/azure_smoke.py`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import IO, TYPE_CHECKING, Any, Protocol

import requests
import yaml

from provisioning.azure.cloud_init import CREDENTIAL_FILE
from provisioning.azure.network import MANAGED_BY, TAG_CLUSTER, TAG_INSTANCE, TAG_MANAGED_BY

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

SMOKE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SMOKE_DIR.parents[1]
CLUSTER_TEMPLATE = SMOKE_DIR / "smoke-cluster.yaml"

ARM_ENDPOINT = "https://management.azure.com"
WEB_API_VERSION = "2024-04-01"  # Microsoft.Web/sites/host/listKeys
AUTHORIZATION_API_VERSION = "2022-04-01"  # Microsoft.Authorization/roleDefinitions
DEFAULT_LOCATION = "swedencentral"  # offers Flex Consumption; override with AZURE_LOCATION
DEFAULT_VM_SIZE = "Standard_D2s_v5"  # 2 vCPUs, 8 GiB: enough for Ray's head processes; Spot-capable
SSH_USER = "ubuntu"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130

# What the driver prints on the head, and what its task computes on the worker: a value, not only "Ray answered".
TASK_RESULT_MARKER = "SMOKE_TASK_RESULT "
TASK_EXPECTED_VALUE = sum(range(1000))
_SUBSCRIPTION_ID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class SmokeRefused(Exception):
    """The smoke test must not start; the message is the one line to print."""


class SmokeFailure(Exception):
    """A step failed; the message says which and why."""


class ApiUnavailable(SmokeFailure):
    """The API did not answer, or answered 5xx: the app may still be starting (polling goes on)."""


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class SmokeSettings:
    subscription_id: str
    location: str
    env_name: str
    cluster_name: str
    head_vm_size: str = DEFAULT_VM_SIZE
    worker_vm_size: str = DEFAULT_VM_SIZE
    image_id: str = ""  # a Compute Gallery image version (docs/image.md) for both node types; "" = stock Ubuntu
    ssh_user: str = SSH_USER
    poll_interval_s: float = 10.0
    deploy_timeout_s: float = 3600.0
    app_ready_timeout_s: float = 600.0
    worker_running_timeout_s: float = 1800.0  # from the POST: VM allocation plus Ray's install on two VMs
    task_timeout_s: float = 600.0
    delete_timeout_s: float = 1200.0
    leftover_timeout_s: float = 600.0  # ARM deletes a VNet and an NSG after `deleted` is reported (not waited on)
    command_timeout_s: float = 300.0  # azd commands other than up and down

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> SmokeSettings:
        """Raises SmokeRefused unless AZURE_SUBSCRIPTION_ID is a subscription id and SMOKE_OK is exactly 1."""
        subscription_id = environ.get("AZURE_SUBSCRIPTION_ID", "").strip()
        missing = []
        if not _SUBSCRIPTION_ID.match(subscription_id):
            missing.append("AZURE_SUBSCRIPTION_ID=<subscription id>")
        if environ.get("SMOKE_OK", "").strip() != "1":
            missing.append("SMOKE_OK=1")
        if missing:
            raise SmokeRefused(
                "azure-smoke: refusing to run: it deploys to a real Azure subscription and costs money; "
                f"set {' and '.join(missing)} (see docs/azure-smoke.md)"
            )
        stamp = datetime.now(UTC).strftime("%m%d%H%M")
        return cls(
            subscription_id=subscription_id,
            location=environ.get("AZURE_LOCATION", "").strip() or DEFAULT_LOCATION,
            env_name=environ.get("SMOKE_ENV_NAME", "").strip() or f"smoke-{stamp}-{secrets.token_hex(2)}",
            cluster_name=environ.get("SMOKE_CLUSTER_NAME", "").strip() or f"smoke-{secrets.token_hex(3)}",
            head_vm_size=environ.get("SMOKE_HEAD_VM_SIZE", "").strip() or DEFAULT_VM_SIZE,
            worker_vm_size=environ.get("SMOKE_WORKER_VM_SIZE", "").strip() or DEFAULT_VM_SIZE,
            image_id=environ.get("SMOKE_IMAGE_ID", "").strip(),
        )


# ------------------------------------------------------------------------------------------------ ports


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    output: str  # stdout and stderr, interleaved


class CommandRunner(Protocol):
    def run(self, arguments: Sequence[str], *, timeout_s: float, echo: bool = False) -> CommandResult:
        """Run a command to completion (killed after `timeout_s`); `echo` shows its output as it comes."""
        ...


class ControlPlaneApi(Protocol):
    def health(self) -> bool: ...

    def create_cluster(self, config_yaml: str) -> None: ...

    def get_cluster(self, name: str) -> dict[str, Any] | None:
        """The cluster view (GET /api/clusters/{name}); None when the API does not know the cluster."""
        ...

    def delete_cluster(self, name: str) -> None: ...


class ResourceManager(Protocol):
    def function_key(self, app_resource_group: str, app_name: str) -> str: ...

    def vm_name_of_instance(self, resource_group: str, cluster_name: str, instance_id: str) -> str: ...

    def run_shell_script(self, resource_group: str, vm_name: str, script: str, timeout_s: float) -> str:
        """Run Command (RunShellScript) on the VM, as root; returns the output Azure reports."""
        ...

    def resources_of_cluster(self, resource_group: str, cluster_name: str) -> list[str]:
        """Ids of what is left of the cluster in the resource group."""
        ...

    def custom_roles_of_environment(self, env_name: str) -> list[str]:
        """The deployment's custom role definitions that still exist (they can outlive their resource group)."""
        ...


@dataclass
class SmokePorts:
    commands: CommandRunner
    arm: ResourceManager
    connect_api: Callable[[str, str], ControlPlaneApi]  # (app URL, function key) -> API client
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


# ------------------------------------------------------------------------------------------------ adapters


class SubprocessRunner:
    """Runs commands from the repository root (where azure.yaml is), without standard input."""

    def __init__(self, out: IO[str], cwd: Path = REPO_ROOT) -> None:
        self.out = out
        self.cwd = cwd

    def run(self, arguments: Sequence[str], *, timeout_s: float, echo: bool = False) -> CommandResult:
        try:
            process = subprocess.Popen(
                list(arguments),
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        except FileNotFoundError:
            return CommandResult(127, f"{arguments[0]}: command not found")
        # A timer kills the process: reading its output line by line would otherwise block past the deadline.
        killer = threading.Timer(timeout_s, process.kill)
        killer.start()
        lines: list[str] = []
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if echo:
                    self.out.write(f"    | {line}")
                    self.out.flush()
            exit_code = process.wait()
        finally:
            killer.cancel()
        if exit_code < 0:
            lines.append(f"killed after {timeout_s:.0f} s\n")
        return CommandResult(exit_code, "".join(lines))


class HttpControlPlaneApi:
    """The app's HTTP API with its function key (every route but /api/health needs it)."""

    def __init__(
        self, app_url: str, function_key: str, session: requests.Session | None = None, timeout_s: float = 60.0
    ) -> None:
        self.api_url = f"{app_url.rstrip('/')}/api"
        self.session = session or requests.Session()
        self.headers = {"x-functions-key": function_key}
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, f"{self.api_url}{path}", timeout=self.timeout_s, **kwargs)
        except requests.RequestException as error:
            raise ApiUnavailable(f"{method} {path}: {type(error).__name__}: {error}") from None
        if response.status_code >= 500:
            raise ApiUnavailable(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return response

    def health(self) -> bool:
        return self._call("GET", "/health").status_code == 200

    def create_cluster(self, config_yaml: str) -> None:
        response = self._call(
            "POST",
            "/clusters",
            data=config_yaml.encode(),
            headers={**self.headers, "content-type": "application/yaml"},
        )
        if response.status_code != 202:
            raise SmokeFailure(f"POST /api/clusters answered {response.status_code}: {response.text[:1000]}")

    def get_cluster(self, name: str) -> dict[str, Any] | None:
        response = self._call("GET", f"/clusters/{name}", headers=self.headers)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise SmokeFailure(f"GET /api/clusters/{name} answered {response.status_code}: {response.text[:500]}")
        view: dict[str, Any] = response.json()
        return view

    def delete_cluster(self, name: str) -> None:
        response = self._call("DELETE", f"/clusters/{name}", headers=self.headers)
        if response.status_code not in (202, 404):
            raise SmokeFailure(f"DELETE /api/clusters/{name} answered {response.status_code}: {response.text[:500]}")


class AzureResourceManager:
    """ARM through the management SDKs. `base_url` and `connection_verify` point it at another endpoint (tests)."""

    def __init__(
        self,
        credential: TokenCredential,
        subscription_id: str,
        *,
        base_url: str = ARM_ENDPOINT,
        connection_verify: str | None = None,
        lro_polling_interval_s: float = 5.0,
    ) -> None:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.resource import ResourceManagementClient

        options: dict[str, Any] = {"base_url": base_url}
        if connection_verify:
            options["connection_verify"] = connection_verify
        self.subscription_id = subscription_id
        self.compute = ComputeManagementClient(credential, subscription_id, **options)
        self.resources = ResourceManagementClient(credential, subscription_id, **options)
        self.lro_polling_interval_s = lro_polling_interval_s

    def _arm_json(self, method: str, path: str, api_version: str, **params: str) -> dict[str, Any]:
        """A call no SDK here models (listKeys, role definitions), through the compute client's ARM pipeline
        (the same credential, retries and endpoint)."""
        from azure.core.rest import HttpRequest

        request = HttpRequest(method, path, params={"api-version": api_version, **params})
        response = self.compute.send_request(request)
        if response.status_code != 200:
            raise SmokeFailure(f"{method} {path} answered {response.status_code}: {response.text()[:500]}")
        document: dict[str, Any] = response.json()
        return document

    def function_key(self, app_resource_group: str, app_name: str) -> str:
        path = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{app_resource_group}"
            f"/providers/Microsoft.Web/sites/{app_name}/host/default/listKeys"
        )
        keys = self._arm_json("POST", path, WEB_API_VERSION)
        key = (keys.get("functionKeys") or {}).get("default")
        if not key:
            raise SmokeFailure(f"the app {app_name} has no default function key (listKeys shows none)")
        return str(key)

    def vm_name_of_instance(self, resource_group: str, cluster_name: str, instance_id: str) -> str:
        for vm in self.compute.virtual_machines.list(resource_group):
            tags = vm.tags or {}
            if (
                tags.get(TAG_CLUSTER) == cluster_name
                and tags.get(TAG_MANAGED_BY) == MANAGED_BY
                and tags.get(TAG_INSTANCE) == instance_id
            ):
                return str(vm.name)
        raise SmokeFailure(f"no VM in {resource_group} is instance {instance_id} of cluster {cluster_name}")

    def run_shell_script(self, resource_group: str, vm_name: str, script: str, timeout_s: float) -> str:
        from azure.mgmt.compute.models import RunCommandInput

        poller = self.compute.virtual_machines.begin_run_command(
            resource_group,
            vm_name,
            RunCommandInput(command_id="RunShellScript", script=script.splitlines()),
            polling_interval=self.lro_polling_interval_s,
        )
        poller.wait(timeout_s)
        if not poller.done():
            raise SmokeFailure(f"Run Command on {vm_name} did not finish within {timeout_s:.0f} s")
        result = poller.result()
        return "\n".join(status.message or "" for status in result.value or [])

    def resources_of_cluster(self, resource_group: str, cluster_name: str) -> list[str]:
        def listed(filter_expression: str) -> dict[str, str]:
            found = self.resources.resources.list_by_resource_group(resource_group, filter=filter_expression)
            return {str(resource.id): str(resource.name) for resource in found}

        # ARM returns no tags when it filters by a tag, so ownership (both tags, as the provider decides it) is the
        # intersection of two listings.
        tagged_for_cluster = listed(f"tagName eq '{TAG_CLUSTER}' and tagValue eq '{cluster_name}'")
        managed_by_us = listed(f"tagName eq '{TAG_MANAGED_BY}' and tagValue eq '{MANAGED_BY}'")
        # An OS disk made with a VM carries no tags; its name derives from the VM's (`ray-<cluster>-...`). Names are
        # a safe signal here only because the resource group is this run's own.
        prefix = f"ray-{cluster_name}-"
        named_for_cluster = {
            resource_id
            for resource_id, name in listed(f"substringof('{prefix}', name)").items()
            if name.startswith(prefix)
        }
        return sorted((set(tagged_for_cluster) & set(managed_by_us)) | named_for_cluster)

    def custom_roles_of_environment(self, env_name: str) -> list[str]:
        # Listing at subscription scope shows only roles assignable there or above; the deployment's roles are
        # assignable at its resource groups, hence atScopeAndBelow().
        path = f"/subscriptions/{self.subscription_id}/providers/Microsoft.Authorization/roleDefinitions"
        document = self._arm_json("GET", path, AUTHORIZATION_API_VERSION, **{"$filter": "atScopeAndBelow()"})
        names = []
        for role in document.get("value") or []:
            properties = role.get("properties") or {}
            role_name = str(properties.get("roleName", ""))
            # infra/app/*.bicep name them 'Ray autoscaler <what> (<environment>, <suffix>)'.
            if (
                properties.get("type") == "CustomRole"
                and role_name.startswith("Ray autoscaler ")
                and f"({env_name}, " in role_name
            ):
                names.append(role_name)
        return sorted(names)


def build_azure_ports(settings: SmokeSettings, out: IO[str]) -> SmokePorts:
    """The real wiring: azd on PATH, ARM with the developer's login (azd's first, the Azure CLI's second), HTTPS."""
    from azure.identity import AzureCliCredential, AzureDeveloperCliCredential, ChainedTokenCredential

    credential = ChainedTokenCredential(AzureDeveloperCliCredential(), AzureCliCredential())
    return SmokePorts(
        commands=SubprocessRunner(out),
        arm=AzureResourceManager(credential, settings.subscription_id),
        connect_api=HttpControlPlaneApi,
    )


# ------------------------------------------------------------------------------------------------ pure parts


def render_cluster_config(settings: SmokeSettings, resource_group: str) -> str:
    """The smoke cluster's YAML, as POSTed: infra/smoke/smoke-cluster.yaml filled in."""
    text = Template(CLUSTER_TEMPLATE.read_text()).substitute(
        cluster_name=settings.cluster_name,
        location=settings.location,
        resource_group=resource_group,
        ssh_user=settings.ssh_user,
        head_vm_size=settings.head_vm_size,
        worker_vm_size=settings.worker_vm_size,
    )
    if not settings.image_id:
        return text
    config = yaml.safe_load(text)
    for node_type in config["available_node_types"].values():
        node_type["node_config"]["azure_arm_parameters"]["imageId"] = settings.image_id
    return str(yaml.safe_dump(config, sort_keys=False))


def ray_task_script(ray_address: str, worker_ray_node_id: str, ssh_user: str, timeout_s: float) -> str:
    """The shell script Run Command runs on the head (as root): a Ray driver, as the Ray user with a private copy of
    the cluster token, that runs one task pinned to the worker and prints where it ran and what it computed."""
    driver = textwrap.dedent(
        f"""\
        import json
        import socket

        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray.init(address={ray_address!r}, logging_level="ERROR", log_to_driver=False)


        @ray.remote(num_cpus=1)
        def where_and_what():
            node_id = ray.get_runtime_context().get_node_id()
            return {{"node_id": node_id, "hostname": socket.gethostname(), "value": sum(range(1000))}}


        on_the_worker = NodeAffinitySchedulingStrategy(node_id={worker_ray_node_id!r}, soft=False)
        result = ray.get(where_and_what.options(scheduling_strategy=on_the_worker).remote(), timeout={timeout_s:.0f})
        print({TASK_RESULT_MARKER!r} + json.dumps(result), flush=True)
        """
    )
    user = shlex.quote(ssh_user)
    # The token file is root's (0600); Ray's own processes run as the SSH user, so the driver runs as that user
    # too, with a copy only it can read, removed on exit. The Python is the one next to `ray` (the one with Ray).
    return (
        textwrap.dedent(
            f"""\
            set -euo pipefail
            ray_bin="$(command -v ray || echo /opt/ray/venv/bin/ray)"
            python_bin="$(dirname "$(readlink -f "$ray_bin")")/python"
            [ -x "$python_bin" ] || python_bin=python3
            token_copy="$(mktemp)"
            trap 'rm -f "$token_copy"' EXIT
            install -m 0600 -o {user} {CREDENTIAL_FILE} "$token_copy"
            sudo -u {user} -H env RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$token_copy" "$python_bin" - <<'SMOKE_DRIVER'
            """
        )
        + driver
        + "SMOKE_DRIVER\n"
    )


def task_result_from(run_command_output: str) -> dict[str, Any]:
    """The driver's result line, parsed; SmokeFailure (with the output's end) when there is none."""
    for line in run_command_output.splitlines():
        if line.startswith(TASK_RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(TASK_RESULT_MARKER) :])
            return result
    raise SmokeFailure(f"the Ray task printed no result; Run Command's output ends with: {run_command_output[-1500:]}")


def describe(view: Mapping[str, Any]) -> str:
    """One progress line for a cluster view: its status, each node's status and boot phase, the last decision."""
    parts = [f"cluster {view.get('status')}"]
    for node in view.get("nodes") or []:
        label = "head" if node.get("is_head") else f"worker {node.get('node_type')}"
        boot = f" [{node['boot_phase']}]" if node.get("boot_phase") else ""
        problem = node.get("last_error") or (
            node.get("boot_phase_detail") if node.get("boot_phase") == "boot_failed" else ""
        )
        error = f" ({str(problem)[:120]})" if problem else ""
        parts.append(f"{label} {node.get('status')}{boot}{error}")
    reasons = (view.get("last_decision") or {}).get("reasons") or []
    if reasons:
        parts.append(f"last decision: {str(reasons[0])[:120]}")
    return "; ".join(parts)


def _seconds_between(start: str, end: str) -> float:
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 1)


def _running_head(view: Mapping[str, Any]) -> dict[str, Any] | None:
    return next((n for n in view.get("nodes") or [] if n.get("is_head") and n.get("status") == "ray_running"), None)


def _running_workers(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [n for n in view.get("nodes") or [] if not n.get("is_head") and n.get("status") == "ray_running"]


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class SmokeReport:
    env_name: str
    cluster_name: str
    deploy_s: float | None = None
    app_ready_s: float | None = None
    create_to_head_running_s: float | None = None
    create_to_worker_running_s: float | None = None
    task_s: float | None = None
    delete_s: float | None = None
    azd_down_s: float | None = None
    leftovers: list[str] = field(default_factory=list)  # the cluster's resources still in ARM after `deleted`
    not_removed: list[str] = field(default_factory=list)  # what cleanup could not remove, and how to remove it
    orphaned_role_definitions: list[str] = field(default_factory=list)
    error: str = ""
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.error and not self.leftovers and not self.not_removed

    def to_json(self) -> str:
        document = asdict(self)
        document.pop("interrupted")
        document["ok"] = self.ok
        return json.dumps(document)


@dataclass
class _Deployment:
    app_url: str
    app_name: str
    app_resource_group: str
    clusters_resource_group: str


class SmokeRun:
    """One smoke run: `execute()` returns the report; cleanup has run by then, whatever happened."""

    def __init__(self, settings: SmokeSettings, ports: SmokePorts, out: IO[str]) -> None:
        self.settings = settings
        self.ports = ports
        self.out = out
        self.report = SmokeReport(env_name=settings.env_name, cluster_name=settings.cluster_name)
        self.started = ports.clock()
        self.environment_created = False
        self.deployment: _Deployment | None = None
        self.api: ControlPlaneApi | None = None
        self.cluster_posted = False
        self.cluster_deleted = False

    # -- output and commands

    def say(self, message: str) -> None:
        self.out.write(f"[{self.ports.clock() - self.started:7.1f}s] {message}\n")
        self.out.flush()

    def azd(self, *arguments: str, timeout_s: float | None = None, echo: bool = False) -> CommandResult:
        command = ["azd", *arguments]
        self.say("$ " + shlex.join(command))
        return self.ports.commands.run(command, timeout_s=timeout_s or self.settings.command_timeout_s, echo=echo)

    def azd_or_fail(self, *arguments: str, timeout_s: float | None = None, echo: bool = False) -> str:
        result = self.azd(*arguments, timeout_s=timeout_s, echo=echo)
        if result.exit_code != 0:
            raise SmokeFailure(f"`azd {' '.join(arguments[:2])}` exited {result.exit_code}: {result.output[-1500:]}")
        return result.output

    def wait_for(self, what: str, timeout_s: float, check: Callable[[], Any]) -> Any:
        """Call `check` every poll interval until it returns something truthy; ApiUnavailable counts as "not yet"."""
        deadline = self.ports.clock() + timeout_s
        last_problem = ""
        while True:
            try:
                value = check()
                if value:
                    return value
            except ApiUnavailable as problem:
                if str(problem) != last_problem:
                    self.say(f"  (not answering yet: {problem})")
                    last_problem = str(problem)
            if self.ports.clock() >= deadline:
                raise SmokeFailure(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self.ports.sleep(self.settings.poll_interval_s)

    # -- the steps

    def execute(self) -> SmokeReport:
        self.say(
            f"smoke test: environment {self.settings.env_name}, cluster {self.settings.cluster_name}, "
            f"subscription {self.settings.subscription_id}, region {self.settings.location}"
        )
        try:
            self.deploy()
            view = self.create_cluster()
            self.run_ray_task(view)
            self.delete_cluster()
            self.check_leftovers()
        except SmokeFailure as failure:
            self.report.error = str(failure)
            self.say(f"FAILED: {failure}")
        except KeyboardInterrupt:
            self.report.error = "interrupted"
            self.report.interrupted = True
            self.say("interrupted: cleaning up (interrupting again leaves resources behind)")
        except Exception as error:  # anything unexpected must still reach the cleanup below
            self.report.error = f"{type(error).__name__}: {error}"
            self.say(f"FAILED unexpectedly: {self.report.error}")
        finally:
            self.clean_up()
        self.say("smoke test passed" if self.report.ok else "smoke test FAILED")
        return self.report

    def deploy(self) -> None:
        settings = self.settings
        previous_default = self.default_environment()
        self.azd_or_fail("env", "new", settings.env_name, "--no-prompt")
        self.environment_created = True
        if previous_default and previous_default != settings.env_name:
            # `azd env new` makes the new environment the default; every later command names it with -e, so the
            # developer's own default goes back at once (and stays, should the run die).
            self.azd("env", "select", previous_default)
        self.azd_or_fail("env", "set", "AZURE_SUBSCRIPTION_ID", settings.subscription_id, "-e", settings.env_name)
        self.azd_or_fail("env", "set", "AZURE_LOCATION", settings.location, "-e", settings.env_name)
        started = self.ports.clock()
        self.azd_or_fail("up", "--no-prompt", "-e", settings.env_name, timeout_s=settings.deploy_timeout_s, echo=True)
        self.report.deploy_s = round(self.ports.clock() - started, 1)
        self.say(f"deployed in {self.report.deploy_s:.0f} s")

        values = json.loads(self.azd_or_fail("env", "get-values", "--output", "json", "-e", settings.env_name))
        names = ("FUNCTION_APP_URL", "FUNCTION_APP_NAME", "AZURE_RESOURCE_GROUP", "CLUSTERS_RESOURCE_GROUP")
        missing = [name for name in names if not values.get(name)]
        if missing:
            raise SmokeFailure(f"the deployment's outputs lack {', '.join(missing)} (azd env get-values)")
        deployment = _Deployment(*(str(values[name]) for name in names))
        self.deployment = deployment
        self.say(f"app {deployment.app_name} at {deployment.app_url}; clusters in {deployment.clusters_resource_group}")

        key = self.ports.arm.function_key(deployment.app_resource_group, deployment.app_name)
        api = self.ports.connect_api(deployment.app_url, key)
        self.api = api
        started = self.ports.clock()
        self.wait_for("GET /api/health to answer 200", settings.app_ready_timeout_s, api.health)
        self.report.app_ready_s = round(self.ports.clock() - started, 1)
        self.say(f"API answers ({self.report.app_ready_s:.0f} s after deployment)")

    def default_environment(self) -> str:
        result = self.azd("env", "list", "--output", "json")
        if result.exit_code != 0:
            return ""
        try:
            environments = json.loads(result.output or "[]")
        except json.JSONDecodeError:
            return ""
        return next((str(env.get("Name", "")) for env in environments or [] if env.get("IsDefault")), "")

    def create_cluster(self) -> dict[str, Any]:
        assert self.api is not None
        assert self.deployment is not None
        api, name = self.api, self.settings.cluster_name
        config = render_cluster_config(self.settings, self.deployment.clusters_resource_group)
        self.cluster_posted = True  # before the call: a POST that times out may still have created it
        api.create_cluster(config)
        self.say(f"POST /api/clusters: {name} (one on-demand head, one spot worker)")
        last_line = ""

        def head_and_worker_running() -> dict[str, Any] | None:
            nonlocal last_line
            view = api.get_cluster(name)
            if view is None:
                return None
            line = describe(view)
            if line != last_line:
                self.say(line)
                last_line = line
            if view.get("status") == "failed":
                raise SmokeFailure(f"the cluster failed: {view.get('status_reason')}")
            head = _running_head(view)
            if head is not None and self.report.create_to_head_running_s is None:
                self.report.create_to_head_running_s = _seconds_between(view["created_at"], head["status_since"])
            workers = _running_workers(view)
            if head is None or not workers:
                return None
            self.report.create_to_worker_running_s = _seconds_between(view["created_at"], workers[0]["status_since"])
            return view

        view: dict[str, Any] = self.wait_for(
            "the head and the worker to run Ray", self.settings.worker_running_timeout_s, head_and_worker_running
        )
        self.say(
            f"head running Ray {self.report.create_to_head_running_s} s after the POST, "
            f"worker {self.report.create_to_worker_running_s} s after it"
        )
        return view

    def run_ray_task(self, view: Mapping[str, Any]) -> None:
        assert self.deployment is not None
        head = _running_head(view)
        worker = _running_workers(view)[0]
        ray_address = str((view.get("head") or {}).get("ray_address", ""))
        if head is None or not ray_address or not worker.get("ray_node_id"):
            raise SmokeFailure(f"the cluster view lacks the head's Ray address or the worker's Ray node id: {view}")
        resource_group = self.deployment.clusters_resource_group
        vm_name = self.ports.arm.vm_name_of_instance(resource_group, self.settings.cluster_name, head["instance_id"])
        timeout_s = self.settings.task_timeout_s
        script = ray_task_script(ray_address, worker["ray_node_id"], self.settings.ssh_user, timeout_s)
        self.say(f"Run Command on {vm_name}: a Ray task pinned to worker node {worker['ray_node_id']}")
        started = self.ports.clock()
        output = self.ports.arm.run_shell_script(resource_group, vm_name, script, timeout_s)
        self.report.task_s = round(self.ports.clock() - started, 1)
        result = task_result_from(output)
        if result.get("node_id") != worker["ray_node_id"] or result.get("value") != TASK_EXPECTED_VALUE:
            raise SmokeFailure(
                f"the Ray task did not run as asked: {result} (expected node {worker['ray_node_id']}, "
                f"value {TASK_EXPECTED_VALUE})"
            )
        self.say(f"Ray task ran on {result.get('hostname')} in {self.report.task_s:.0f} s (Run Command included)")

    def delete_cluster(self) -> None:
        started = self.ports.clock()
        self.delete_and_wait()
        self.report.delete_s = round(self.ports.clock() - started, 1)
        self.say(f"cluster deleted in {self.report.delete_s:.0f} s")

    def delete_and_wait(self) -> None:
        assert self.api is not None
        api, name = self.api, self.settings.cluster_name
        api.delete_cluster(name)
        self.say(f"DELETE /api/clusters/{name}")
        last_line = ""

        def deleted() -> bool:
            nonlocal last_line
            view = api.get_cluster(name)
            if view is None:
                return True
            line = describe(view)
            if line != last_line:
                self.say(line)
                last_line = line
            return view.get("status") == "deleted"

        self.wait_for(f"cluster {name} to be deleted", self.settings.delete_timeout_s, deleted)
        self.cluster_deleted = True

    def check_leftovers(self) -> None:
        assert self.deployment is not None
        resource_group, name = self.deployment.clusters_resource_group, self.settings.cluster_name
        deadline = self.ports.clock() + self.settings.leftover_timeout_s
        while True:
            remaining = self.ports.arm.resources_of_cluster(resource_group, name)
            if not remaining or self.ports.clock() >= deadline:
                break
            self.say(f"  {len(remaining)} resource(s) of {name} still being deleted by ARM")
            self.ports.sleep(self.settings.poll_interval_s)
        self.report.leftovers = remaining
        if remaining:
            self.say(f"LEFT BEHIND after {self.settings.leftover_timeout_s:.0f} s: {', '.join(remaining)}")
        else:
            self.say(f"nothing of {name} is left in {resource_group}")

    def clean_up(self) -> None:
        env_name = self.settings.env_name
        if self.cluster_posted and not self.cluster_deleted and self.api is not None:
            # Deleting through the API first exercises the product's own cleanup; azd down below removes the whole
            # resource group in any case.
            try:
                self.delete_and_wait()
            except Exception as error:  # cleanup goes on: azd down still removes the cluster's resource group
                self.say(f"cleanup: deleting the cluster through the API failed ({error}); azd down removes it")
        if not self.environment_created:
            return
        started = self.ports.clock()
        result = self.azd("down", "--force", "--purge", "--no-prompt", "-e", env_name, timeout_s=3600.0, echo=True)
        self.report.azd_down_s = round(self.ports.clock() - started, 1)
        if result.exit_code != 0:
            clusters_group = self.deployment.clusters_resource_group if self.deployment else f"rg-{env_name}-clusters"
            self.report.not_removed.append(
                f"azd down exited {result.exit_code}: resource groups rg-{env_name} and {clusters_group} may remain "
                f"(and keep billing); run `azd down --force --purge -e {env_name}`, or `az group delete` each of them"
            )
            self.say(f"CLEANUP FAILED: {self.report.not_removed[-1]}")
            return
        self.say(f"azd down finished in {self.report.azd_down_s:.0f} s")
        try:
            roles = self.ports.arm.custom_roles_of_environment(env_name)
        except Exception as error:  # a listing that fails must not hide the run's outcome
            self.say(f"cleanup: could not list custom role definitions ({error})")
            return
        self.report.orphaned_role_definitions = roles
        for role in roles:
            self.say(f"custom role left (costs nothing; remove with `az role definition delete --name '{role}'`)")


def run_and_report(settings: SmokeSettings, ports: SmokePorts, out: IO[str]) -> int:
    """Run the smoke test; the report is the last line written to `out`. Returns the exit code."""
    report = SmokeRun(settings, ports, out).execute()
    out.write(report.to_json() + "\n")
    out.flush()
    if report.ok:
        return EXIT_OK
    return EXIT_INTERRUPTED if report.interrupted else EXIT_FAILED


def main(environ: Mapping[str, str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        settings = SmokeSettings.from_environment(environ)
    except SmokeRefused as refusal:
        err.write(f"{refusal}\n")
        return EXIT_REFUSED
    if shutil.which("azd") is None:
        err.write("azure-smoke: refusing to run: azd is not on PATH (install the Azure Developer CLI, log in)\n")
        return EXIT_REFUSED
    return run_and_report(settings, build_azure_ports(settings, out), out)


if __name__ == "__main__":
    sys.exit(main())
