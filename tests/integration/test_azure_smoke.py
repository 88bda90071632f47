"""`make azure-smoke` (infra/smoke/azure_smoke.py) run here against loopback stand-ins for Azure.

Real parts: the runner itself; the function app (function_app.py) under the local Functions host with its timer and
queue triggers on a real Azurite, the reconcile loop and `AzureCloudProvider`; the Azure SDK clients of both the
provider and the runner, talking HTTPS to the loopback ARM emulator (tests/support/smoke_arm_emulator.py adds the
resource listing, listKeys, role definitions and Run Command). Stand-ins: `azd` (a scripted command runner that
records what it is asked and answers with the deployment's outputs), the Functions front end's key check (a small
gate in front of the local host, which checks no keys), and Ray on the emulated VMs (each VM that finished
provisioning reports one Ray node, and Run Command answers as the head's driver would). The driver script itself is
run once against a real two-node Ray cluster on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import requests

from autoscaler.config import ClusterConfig
from autoscaler.model import RayNode, RayNodeStatus, RayState
from autoscaler.queueing import StorageReconcileQueue
from autoscaler.ray_state import DrainResult
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import Service
from autoscaler.settings import DEFAULT_RECONCILE_SCHEDULE, RECONCILE_QUEUE
from autoscaler.state import TableStateStore
from autoscaler.tokens import cluster_token
from autoscaler.wiring import utc_now
from local.azurite import Azurite, start_azurite
from local.config import load_host_config
from local.host import LocalHost
from provisioning.azure.network import MANAGED_BY, TAG_CLUSTER, TAG_INSTANCE, TAG_MANAGED_BY, TAG_NODE_TYPE
from provisioning.azure.provider import AzureCloudProvider, AzureSettings
from provisioning.azure.ssh import generate_ssh_keypair
from provisioning.cloud import CloudProvider
from tests.support.arm_emulator import StaticTestCredential
from tests.support.smoke_arm_emulator import VM_TYPE, SmokeArmEmulator, run_command_output, snapshot

REPO_ROOT = Path(__file__).resolve().parents[2]
# The runner is a script under infra/smoke/ (infra/ is not a package); tests import it the way it runs.
sys.path.insert(0, str(REPO_ROOT / "infra" / "smoke"))

import azure_smoke  # noqa: E402
from azure_smoke import (  # noqa: E402
    TASK_EXPECTED_VALUE,
    TASK_RESULT_MARKER,
    AzureResourceManager,
    CommandResult,
    HttpControlPlaneApi,
    SmokePorts,
    SmokeSettings,
)

pytestmark = [pytest.mark.azurite, pytest.mark.slow]

ENV_NAME = "smoke-test"
APP_NAME = "func-smoketest"
APP_RESOURCE_GROUP = "rg-smoke-test"
CLUSTERS_RESOURCE_GROUP = "rg-smoke-test-clusters"
FUNCTION_KEY = "loopback-function-key"
USERS_DEFAULT_ENVIRONMENT = "dev"
WORKER_TYPE = "ray.worker.spot"  # infra/smoke/smoke-cluster.yaml
TOKEN_KEY = b"smoke-test-cluster-token-key-0123456789abcdef"
REPORT_KEYS = {
    "env_name",
    "cluster_name",
    "deploy_s",
    "app_ready_s",
    "create_to_head_running_s",
    "create_to_worker_running_s",
    "task_s",
    "delete_s",
    "azd_down_s",
    "leftovers",
    "not_removed",
    "orphaned_role_definitions",
    "error",
    "ok",
}
TIMING_KEYS = {key for key in REPORT_KEYS if key.endswith("_s")}


def settings_for(cluster_name: str) -> SmokeSettings:
    """The runner's settings with loopback-sized waits."""
    return SmokeSettings(
        subscription_id="00000000-0000-0000-0000-0000000000a1",
        location="eastus",
        env_name=ENV_NAME,
        cluster_name=cluster_name,
        poll_interval_s=0.2,
        app_ready_timeout_s=20,
        worker_running_timeout_s=90,
        task_timeout_s=30,
        delete_timeout_s=90,
        leftover_timeout_s=1,
        command_timeout_s=10,
    )


# ------------------------------------------------------------------------------------------ stand-ins


@dataclass
class ScriptedAzd:
    """`azd` as the runner sees it: records each command; `env list` and `env get-values` answer from the script;
    a subcommand in `failing` ("up", "down", "env new", ...) exits with that code."""

    outputs: dict[str, str]
    failing: dict[str, int] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)

    def run(self, arguments: Any, *, timeout_s: float, echo: bool = False) -> CommandResult:
        command = list(arguments)
        self.commands.append(command)
        subcommand = " ".join(command[1:3]) if command[1] == "env" else command[1]
        if subcommand in self.failing:
            return CommandResult(self.failing[subcommand], f"ERROR: azd {subcommand} failed (scripted)\n")
        if subcommand == "env list":
            return CommandResult(0, json.dumps([{"Name": USERS_DEFAULT_ENVIRONMENT, "IsDefault": True}]))
        if subcommand == "env get-values":
            return CommandResult(0, json.dumps(self.outputs))
        return CommandResult(0, "")

    def subcommands(self) -> list[str]:
        return [" ".join(command[1:3]) if command[1] == "env" else command[1] for command in self.commands]


def ray_node_id_of(instance_id: str) -> str:
    return f"ray-node-{instance_id}"


class RayOnEmulatedVms:
    """Ray as the head agent reports it: every VM of ours that finished provisioning runs one busy Ray node."""

    def __init__(self, arm: SmokeArmEmulator) -> None:
        self.arm = arm

    def read_state(self, agent_url: str, token: str) -> RayState:
        nodes = tuple(
            RayNode(
                ray_node_id=ray_node_id_of(vm["tags"][TAG_INSTANCE]),
                instance_id=vm["tags"][TAG_INSTANCE],
                node_type=vm["tags"][TAG_NODE_TYPE],
                status=RayNodeStatus.RUNNING,
                idle_duration_s=0.0,
                total_resources={"CPU": 2.0},
                available_resources={"CPU": 0.0},
                is_head=vm["tags"][TAG_NODE_TYPE] != WORKER_TYPE,
            )
            for vm in self.arm.resources(VM_TYPE)
            if vm["tags"].get(TAG_MANAGED_BY) == MANAGED_BY and vm["properties"]["provisioningState"] == "Succeeded"
        )
        return RayState(nodes=nodes)

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        return DrainResult(accepted=True, rejection_reason="")


def answer_as_the_heads_driver(arm: SmokeArmEmulator) -> Any:
    """Run Command's answer when the driver's task ran on the (one) worker."""

    def answer(vm_name: str, script: str) -> str:
        (worker,) = [vm for vm in arm.resources(VM_TYPE) if vm["tags"][TAG_NODE_TYPE] == WORKER_TYPE]
        result = {
            "node_id": ray_node_id_of(worker["tags"][TAG_INSTANCE]),
            "hostname": worker["name"],
            "value": TASK_EXPECTED_VALUE,
        }
        return run_command_output(TASK_RESULT_MARKER + json.dumps(result))

    return answer


class EmulatorProviders:
    """One AzureCloudProvider per config, pointed at the emulator with its static test credential."""

    def __init__(self, arm: SmokeArmEmulator, function_subnet_id: str) -> None:
        self.arm = arm
        self.function_subnet_id = function_subnet_id
        self.providers: dict[str, AzureCloudProvider] = {}
        self.lock = threading.Lock()

    def __call__(self, config: ClusterConfig) -> CloudProvider:
        with self.lock:
            key = config.config_hash()
            if key not in self.providers:
                settings = AzureSettings(
                    subscription_id=self.arm.subscription_id,
                    function_subnet_id=self.function_subnet_id,
                    base_url=self.arm.base_url,
                    connection_verify=self.arm.ca_path,
                    retry_backoff_factor_s=0.01,
                    delete_retry_backoff_s=0.01,
                )
                self.providers[key] = AzureCloudProvider(config, self.arm.credential(), settings)
            return self.providers[key]


class FunctionKeyGate:
    """The Functions front end's key check in front of the local host (which, like `func start`, checks none):
    every route but /api/health needs `x-functions-key`."""

    def __init__(self, upstream_url: str, function_key: str) -> None:
        self.upstream_url = upstream_url
        self.function_key = function_key
        self.refused: list[str] = []
        session = requests.Session()
        session.trust_env = False  # loopback only, whatever proxy the environment names
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/api/health" and self.headers.get("x-functions-key") != gate.function_key:
                    gate.refused.append(f"{self.command} {self.path}")
                    self._answer(401, "text/plain", b"missing or wrong function key")
                    return
                upstream = session.request(
                    self.command,
                    f"{gate.upstream_url}{self.path}",
                    data=body,
                    headers={"content-type": self.headers.get("content-type", "")},
                    timeout=30,
                )
                self._answer(upstream.status_code, upstream.headers.get("content-type", ""), upstream.content)

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# ------------------------------------------------------------------------------------------ the deployment


@dataclass
class SmokeOutcome:
    exit_code: int
    lines: list[str]
    report: dict[str, Any]
    azd: ScriptedAzd
    api_connections: list[tuple[str, str]]


class LoopbackDeployment:
    """What `azd up` would have deployed, on loopback: the function app (key-gated) on Azurite and the emulator."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.arm = SmokeArmEmulator()
        self.monkeypatch = pytest.MonkeyPatch()
        self.azurite: Azurite | None = None
        self.store: TableStateStore | None = None
        self.host: LocalHost | None = None
        self.gate: FunctionKeyGate | None = None
        self.session = requests.Session()
        self.session.trust_env = False

    def __enter__(self) -> LoopbackDeployment:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        import function_app

        arm = self.arm.start()
        arm.function_keys[(APP_RESOURCE_GROUP.lower(), APP_NAME.lower())] = FUNCTION_KEY
        arm.run_command_answer = answer_as_the_heads_driver(arm)
        function_subnet_id = arm.seed_subnet(APP_RESOURCE_GROUP, "vnet-app", "functions", "10.250.0.0/26")
        self.azurite = start_azurite(self.data_dir / "azurite")
        connection = self.azurite.connection_string
        self.store = TableStateStore.from_connection_string(connection, "smoke")
        deps = ReconcileDeps(
            store=self.store,
            provider_for=EmulatorProviders(arm, function_subnet_id),
            ray_reader=RayOnEmulatedVms(arm),
            token_for=partial(cluster_token, TOKEN_KEY),
            clock=utc_now,
            control_plane_url="http://127.0.0.1:7071",
        )
        service = Service(
            deps=deps,
            queue=StorageReconcileQueue.from_connection_string(connection, RECONCILE_QUEUE),
            allow_local_provider=False,
            ssh_keygen=generate_ssh_keypair,
        )
        # The app's triggers call function_app._service(); in Azure it is built from app settings and the managed
        # identity, here it is the service wired to the emulator above.
        self.monkeypatch.setattr(function_app, "_service", lambda: service)
        host_config = load_host_config(REPO_ROOT / "host.json")
        fast_queues = replace(host_config.queues, max_polling_interval=timedelta(milliseconds=200))
        self.host = LocalHost(
            function_app.app,
            # The deployed schedule: between timer ticks, each create and delete is driven by its follow-up messages.
            {"AzureWebJobsStorage": connection, "RECONCILE_SCHEDULE": DEFAULT_RECONCILE_SCHEDULE},
            port=0,
            host_config=replace(host_config, queues=fast_queues),
        )
        self.host.start()
        self.gate = FunctionKeyGate(self.host.base_url, FUNCTION_KEY)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.gate is not None:
            self.gate.stop()
        if self.host is not None:
            self.host.stop()
        if self.store is not None:
            self.store.close()
        if self.azurite is not None:
            self.azurite.stop()
        self.arm.stop()
        self.monkeypatch.undo()

    def azd_outputs(self) -> dict[str, str]:
        assert self.gate is not None
        return {
            "AZURE_ENV_NAME": ENV_NAME,
            "AZURE_LOCATION": self.arm.location,
            "AZURE_RESOURCE_GROUP": APP_RESOURCE_GROUP,
            "FUNCTION_APP_NAME": APP_NAME,
            "FUNCTION_APP_URL": self.gate.base_url,
            "CLUSTERS_RESOURCE_GROUP": CLUSTERS_RESOURCE_GROUP,
        }

    def run_smoke(self, settings: SmokeSettings, azd: ScriptedAzd | None = None) -> SmokeOutcome:
        azd = azd or ScriptedAzd(self.azd_outputs())
        return run_smoke(self.arm, settings, azd, self.session)

    def cluster_view(self, name: str) -> dict[str, Any]:
        assert self.gate is not None
        response = self.session.get(
            f"{self.gate.base_url}/api/clusters/{name}", headers={"x-functions-key": FUNCTION_KEY}, timeout=10
        )
        view: dict[str, Any] = response.json()
        return view

    def cluster_vms(self, name: str) -> list[dict[str, Any]]:
        return [vm for vm in self.arm.resources(VM_TYPE) if vm["tags"].get(TAG_CLUSTER) == name]


def run_smoke(
    arm: SmokeArmEmulator, settings: SmokeSettings, azd: ScriptedAzd, session: requests.Session
) -> SmokeOutcome:
    connections: list[tuple[str, str]] = []

    def connect_api(app_url: str, function_key: str) -> HttpControlPlaneApi:
        connections.append((app_url, function_key))
        return HttpControlPlaneApi(app_url, function_key, session=session)

    ports = SmokePorts(
        commands=azd,
        arm=AzureResourceManager(
            StaticTestCredential(),
            arm.subscription_id,
            base_url=arm.base_url,
            connection_verify=arm.ca_path,
            lro_polling_interval_s=0,
        ),
        connect_api=connect_api,
    )
    out = io.StringIO()
    exit_code = azure_smoke.run_and_report(settings, ports, out)
    lines = out.getvalue().splitlines()
    return SmokeOutcome(exit_code, lines, json.loads(lines[-1]), azd, connections)


@pytest.fixture(scope="module")
def happy_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SmokeOutcome, LoopbackDeployment]]:
    with LoopbackDeployment(tmp_path_factory.mktemp("smoke-happy")) as deployment:
        yield deployment.run_smoke(settings_for("smoke-happy")), deployment


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[LoopbackDeployment]:
    with LoopbackDeployment(tmp_path) as started:
        yield started


# ------------------------------------------------------------------------------------------ refusing to start


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, ["AZURE_SUBSCRIPTION_ID", "SMOKE_OK=1"]),
        ({"SMOKE_OK": "1"}, ["AZURE_SUBSCRIPTION_ID"]),
        ({"AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001"}, ["SMOKE_OK=1"]),
        ({"AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001", "SMOKE_OK": "yes"}, ["SMOKE_OK=1"]),
        ({"AZURE_SUBSCRIPTION_ID": "my-subscription", "SMOKE_OK": "1"}, ["AZURE_SUBSCRIPTION_ID"]),
    ],
    ids=["nothing", "no-subscription", "no-consent", "consent-not-1", "subscription-not-an-id"],
)
def test_refuses_with_one_line_naming_what_is_missing_and_runs_nothing(
    environ: dict[str, str], named: list[str]
) -> None:
    out, err = io.StringIO(), io.StringIO()

    exit_code = azure_smoke.main(environ, out=out, err=err)

    assert exit_code == azure_smoke.EXIT_REFUSED
    (line,) = err.getvalue().splitlines()
    assert line.startswith("azure-smoke: refusing to run")
    assert all(name in line for name in named), line
    assert out.getvalue() == ""


def test_make_target_refuses_without_consent() -> None:
    environment = {key: value for key, value in os.environ.items() if key not in ("SMOKE_OK", "AZURE_SUBSCRIPTION_ID")}

    finished = subprocess.run(
        ["make", "--no-print-directory", "-f", "infra/smoke.mk", "azure-smoke"],
        check=False,
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert finished.returncode != 0
    assert "azure-smoke: refusing to run" in finished.stderr
    assert "SMOKE_OK=1" in finished.stderr


# ------------------------------------------------------------------------------------------ the happy path


def test_happy_path_ends_with_a_json_report_of_every_timing_and_ok(
    happy_run: tuple[SmokeOutcome, LoopbackDeployment],
) -> None:
    outcome, _ = happy_run

    assert outcome.exit_code == azure_smoke.EXIT_OK, "\n".join(outcome.lines)
    assert set(outcome.report) == REPORT_KEYS
    assert outcome.report["ok"] is True
    assert (outcome.report["error"], outcome.report["leftovers"], outcome.report["not_removed"]) == ("", [], [])
    assert all(isinstance(outcome.report[key], int | float) for key in TIMING_KEYS), outcome.report
    assert outcome.report["create_to_head_running_s"] <= outcome.report["create_to_worker_running_s"]


def test_happy_path_deploys_a_fresh_environment_and_tears_it_down_last(
    happy_run: tuple[SmokeOutcome, LoopbackDeployment],
) -> None:
    outcome, _ = happy_run

    assert outcome.azd.commands[1][:3] == ["azd", "env", "new"]
    assert ["azd", "up", "--no-prompt", "-e", ENV_NAME] in outcome.azd.commands
    assert outcome.azd.commands[-1] == ["azd", "down", "--force", "--purge", "--no-prompt", "-e", ENV_NAME]


def test_happy_path_gives_the_developers_default_environment_back_right_after_creating_its_own(
    happy_run: tuple[SmokeOutcome, LoopbackDeployment],
) -> None:
    outcome, _ = happy_run

    new = outcome.azd.subcommands().index("env new")

    assert outcome.azd.commands[new + 1] == ["azd", "env", "select", USERS_DEFAULT_ENVIRONMENT]


def test_happy_path_calls_the_api_with_the_function_key_listed_by_arm(
    happy_run: tuple[SmokeOutcome, LoopbackDeployment],
) -> None:
    outcome, deployment = happy_run
    assert deployment.gate is not None

    assert outcome.api_connections == [(deployment.gate.base_url, FUNCTION_KEY)]
    assert deployment.gate.refused == []


def test_happy_path_runs_a_ray_task_from_the_head_pinned_to_the_worker(
    happy_run: tuple[SmokeOutcome, LoopbackDeployment],
) -> None:
    _, deployment = happy_run
    (call,) = deployment.arm.run_commands
    view = deployment.cluster_view("smoke-happy")
    (head,) = [node for node in view["nodes"] if node["is_head"]]
    (worker,) = [node for node in view["nodes"] if not node["is_head"]]

    assert call.resource_group == CLUSTERS_RESOURCE_GROUP
    assert call.vm_name.startswith("ray-smoke-happy-")
    assert head["instance_id"] in call.vm_name
    assert f"node_id={worker['ray_node_id']!r}" in call.script
    assert f"address={view['head']['ray_address']!r}" in call.script


def test_happy_path_deletes_the_cluster_through_the_api(happy_run: tuple[SmokeOutcome, LoopbackDeployment]) -> None:
    _, deployment = happy_run

    assert deployment.cluster_view("smoke-happy")["status"] == "deleted"
    assert deployment.cluster_vms("smoke-happy") == []


# ------------------------------------------------------------------------------------------ failures


def test_a_tagged_resource_left_after_the_delete_fails_the_run_and_is_reported(deployment: LoopbackDeployment) -> None:
    name = "smoke-leftover"
    leftover = snapshot(
        deployment.arm.subscription_id,
        CLUSTERS_RESOURCE_GROUP,
        "forgotten-snapshot",
        {TAG_CLUSTER: name, TAG_MANAGED_BY: MANAGED_BY},
    )
    someone_elses = snapshot(
        deployment.arm.subscription_id, CLUSTERS_RESOURCE_GROUP, "team-snapshot", {TAG_CLUSTER: name}
    )
    deployment.arm.other_resources += [leftover, someone_elses]

    outcome = deployment.run_smoke(settings_for(name))

    assert outcome.exit_code == azure_smoke.EXIT_FAILED
    assert (outcome.report["ok"], outcome.report["leftovers"]) == (False, [leftover["id"]])
    assert any("LEFT BEHIND" in line and leftover["id"] in line for line in outcome.lines)
    assert outcome.azd.subcommands()[-1] == "down"


def test_a_failed_ray_task_still_deletes_the_cluster_and_tears_the_environment_down(
    deployment: LoopbackDeployment,
) -> None:
    name = "smoke-task-fails"
    deployment.arm.run_command_answer = lambda vm_name, script: run_command_output(
        "", "ModuleNotFoundError: No module named 'ray'"
    )

    outcome = deployment.run_smoke(settings_for(name))

    assert outcome.exit_code == azure_smoke.EXIT_FAILED
    assert outcome.report["ok"] is False
    assert "printed no result" in outcome.report["error"]
    assert "No module named 'ray'" in outcome.report["error"]
    assert deployment.cluster_view(name)["status"] == "deleted"
    assert deployment.cluster_vms(name) == []
    assert outcome.azd.subcommands()[-1] == "down"


def test_a_failed_deploy_is_torn_down_and_no_cluster_is_created() -> None:
    azd = ScriptedAzd(outputs={}, failing={"up": 1})
    with SmokeArmEmulator() as arm:
        outcome = run_smoke(arm, settings_for("smoke-no-deploy"), azd, requests.Session())

    assert outcome.exit_code == azure_smoke.EXIT_FAILED
    assert "azd up" in outcome.report["error"]
    assert outcome.api_connections == []
    assert outcome.azd.subcommands()[-1] == "down"
    assert outcome.report["deploy_s"] is None
    assert isinstance(outcome.report["azd_down_s"], float)


def test_a_failed_azd_down_says_which_resource_groups_may_remain() -> None:
    azd = ScriptedAzd(outputs={}, failing={"up": 1, "down": 1})
    with SmokeArmEmulator() as arm:
        outcome = run_smoke(arm, settings_for("smoke-no-down"), azd, requests.Session())

    (not_removed,) = outcome.report["not_removed"]
    assert f"rg-{ENV_NAME}" in not_removed
    assert f"rg-{ENV_NAME}-clusters" in not_removed
    assert f"azd down --force --purge -e {ENV_NAME}" in not_removed


def test_custom_roles_the_deployment_leaves_behind_are_reported() -> None:
    azd = ScriptedAzd(outputs={}, failing={"up": 1})
    with SmokeArmEmulator() as arm:
        group_scope = f"/subscriptions/{arm.subscription_id}/resourceGroups/rg-{ENV_NAME}-clusters"
        orphan = f"Ray autoscaler clusters ({ENV_NAME}, abc123)"
        arm.role_definitions = [
            {
                "id": f"/subscriptions/{arm.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{name}",
                "name": name,
                "properties": {"roleName": role_name, "type": "CustomRole", "assignableScopes": [group_scope]},
            }
            for name, role_name in [("1", orphan), ("2", "Ray autoscaler clusters (dev, def456)")]
        ]
        outcome = run_smoke(arm, settings_for("smoke-roles"), azd, requests.Session())

    assert outcome.report["orphaned_role_definitions"] == [orphan]


# ------------------------------------------------------------------------------------------ the driver on real Ray


@pytest.mark.ray
def test_the_run_command_driver_runs_its_task_on_the_worker_of_a_real_ray_cluster(tmp_path: Path) -> None:
    token_file = tmp_path / "cluster-token"
    token_file.write_text(cluster_token(TOKEN_KEY, "smoke-driver", 1))
    token_file.chmod(0o600)
    ray_environment = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    cluster = subprocess.Popen(
        [sys.executable, "-m", "tests.support.two_node_ray"],
        cwd=REPO_ROOT,
        env=ray_environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert cluster.stdin is not None
    assert cluster.stdout is not None
    try:
        started = json.loads(cluster.stdout.readline())
        script = azure_smoke.ray_task_script(started["address"], started["worker_node_id"], "ubuntu", timeout_s=120)
        # The Python between the heredoc markers is what runs on the head; the shell around it needs root and the
        # head's files.
        driver = script.split("<<'SMOKE_DRIVER'\n", 1)[1].rsplit("SMOKE_DRIVER\n", 1)[0]
        finished = subprocess.run(
            [sys.executable, "-c", driver],
            check=False,
            env=ray_environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        cluster.stdin.close()  # the cluster shuts down
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()
            cluster.wait()

    result = azure_smoke.task_result_from(finished.stdout + finished.stderr)
    assert result["node_id"] == started["worker_node_id"]
    assert result["value"] == TASK_EXPECTED_VALUE
