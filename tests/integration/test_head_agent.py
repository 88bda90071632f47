"""The head agent against a real Ray cluster on 127.0.0.1 (token auth on), read through HttpRayStateReader.

One Ray cluster (a head with no CPUs, one 1-CPU worker started with RAY_CLOUD_INSTANCE_ID) and one agent process
serve the whole module; each test leaves no demand behind. The tests run in file order: the drain-accepted test
adds (and kills) its own node so the shared worker stays usable.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml

from autoscaler.model import GangDemand, GangStrategy, RayNode, RayNodeStatus, RayState, ShapeDemand
from autoscaler.ray_state import (
    BootPhase,
    DrainResult,
    HeadAuthError,
    HeadUnreachableError,
    HttpRayStateReader,
    parse_boot_phases,
    parse_state,
)
from autoscaler.tokens import cluster_token
from provisioning.azure.cloud_init import NodeBootSpec, render_cloud_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_NAME = "agent-test"
TOKEN = cluster_token(b"head-agent-test-key", CLUSTER_NAME, 1)
WORKER_INSTANCE_ID = "instance-worker-1"
POLL_INTERVAL_S = 0.2
WAKE_DEBOUNCE_S = 1.5
CPU1 = (("CPU", 1.0),)

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout_s: float = 15.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------------------------
# A loopback control plane that records wake-ups
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WakeUp:
    received_at: float  # time.monotonic()
    path: str
    authorization: str
    body: dict[str, Any]


@dataclass
class WakeUpReceiver:
    url: str
    received: list[WakeUp] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[WakeUp]:
        with self.lock:
            return list(self.received)

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


@pytest.fixture(scope="module")
def wake_receiver() -> Iterator[WakeUpReceiver]:
    receiver = WakeUpReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with receiver.lock:
                receiver.received.append(
                    WakeUp(time.monotonic(), self.path, self.headers.get("Authorization", ""), body)
                )
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# Ray and the agent
# --------------------------------------------------------------------------------------------


@dataclass
class RayCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    gcs_address: str


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        env.setenv("RAY_enable_autoscaler_v2", "1")  # else request_resources never reaches the GCS state
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no traffic beyond loopback
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", TOKEN)
        env.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        import ray
        from ray._private.authentication_test_utils import reset_auth_token_state
        from ray.cluster_utils import Cluster

        # Ray caches its auth config per process; make it see the token mode set just above.
        reset_auth_token_state()
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False, "env_vars": {"RAY_NODE_TYPE_NAME": "head"}},
        )
        try:
            cluster.add_node(
                num_cpus=1,
                env_vars={"RAY_CLOUD_INSTANCE_ID": WORKER_INSTANCE_ID, "RAY_NODE_TYPE_NAME": "cpu-worker"},
            )
            ray.init(address=cluster.address, logging_level=logging.WARNING)
            yield RayCluster(cluster=cluster, gcs_address=cluster.gcs_address)
        finally:
            ray.shutdown()
            cluster.shutdown()
    reset_auth_token_state()


@dataclass
class AgentProcess:
    process: subprocess.Popen[str]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_agent(
    tmp_path: Path,
    gcs_address: str,
    extra_args: list[str],
    token: str = TOKEN,
    extra_env: dict[str, str] | None = None,
) -> AgentProcess:
    token_file = tmp_path / "cluster-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    log_path = tmp_path / "agent.log"
    # The agent must put the token in Ray's environment itself: none of Ray's auth variables reach it from here.
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    env.update(extra_env or {})
    command = [sys.executable, "-m", "provisioning.head.agent", "--gcs-address", gcs_address]
    command += ["--host", "127.0.0.1", "--port", "0", "--cluster-name", CLUSTER_NAME, "--token-file", str(token_file)]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command + extra_args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log_file, text=True
        )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def forward_stdout() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=forward_stdout, daemon=True).start()
    try:
        first_line = lines.get(timeout=30)
    except queue.Empty:
        process.kill()
        pytest.fail(f"head agent did not report listening:\n{log_path.read_text()}")
    assert first_line.startswith("head agent listening on http://127.0.0.1:"), first_line
    return AgentProcess(process=process, url=first_line.split(" on ")[1].strip(), log_path=log_path)


def stop_agent(agent: AgentProcess) -> None:
    agent.process.terminate()
    try:
        agent.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        agent.process.kill()
        agent.process.wait()


@pytest.fixture(scope="module")
def agent(
    ray_cluster: RayCluster, wake_receiver: WakeUpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    started = start_agent(
        tmp_path_factory.mktemp("agent"),
        ray_cluster.gcs_address,
        [
            *("--control-plane-url", wake_receiver.url),
            *("--poll-interval-s", str(POLL_INTERVAL_S), "--wake-debounce-s", str(WAKE_DEBOUNCE_S)),
        ],
    )
    try:
        yield started
    finally:
        stop_agent(started)
    assert started.process.returncode == 0, started.log()


@pytest.fixture(scope="module")
def reader() -> HttpRayStateReader:
    return HttpRayStateReader()


def read_state_when(
    reader: HttpRayStateReader, agent: AgentProcess, accept: Callable[[RayState], bool], what: str
) -> RayState:
    """The first state `accept` likes (the agent answers 503 until it has connected to the GCS)."""

    def probe() -> RayState | None:
        try:
            state = reader.read_state(agent.url, TOKEN)
        except HeadUnreachableError:
            return None
        return state if accept(state) else None

    return wait_for(probe, what=what)


def node_with_instance(state: RayState, instance_id: str) -> RayNode | None:
    return next((node for node in state.nodes if node.instance_id == instance_id), None)


def has_no_demand(state: RayState) -> bool:
    return not state.pending and not state.gangs and not state.constraints


# --------------------------------------------------------------------------------------------
# Tests against the running agent
# --------------------------------------------------------------------------------------------


@pytest.mark.ray
def test_healthz_answers_without_a_token(agent: AgentProcess) -> None:
    response = requests.get(f"{agent.url}/v1/healthz", timeout=5)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.ray
@pytest.mark.parametrize(
    ("authorization", "expected_status"),
    [
        pytest.param(None, 401, id="missing"),
        pytest.param("Basic dXNlcjpwYXNz", 401, id="other-scheme"),
        pytest.param("Bearer not-the-cluster-token", 403, id="wrong"),
        pytest.param(f"Bearer {TOKEN}", 200, id="right"),
    ],
)
def test_state_requires_the_cluster_token(
    agent: AgentProcess, reader: HttpRayStateReader, authorization: str | None, expected_status: int
) -> None:
    read_state_when(reader, agent, lambda state: True, "the agent to reach the GCS")
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.get(f"{agent.url}/v1/state", headers=headers, timeout=5)
    assert response.status_code == expected_status
    if expected_status != 200:
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json()["field"] == "Authorization"


@pytest.mark.ray
def test_reader_raises_head_auth_error_on_a_wrong_token(agent: AgentProcess, reader: HttpRayStateReader) -> None:
    with pytest.raises(HeadAuthError):
        reader.read_state(agent.url, "not-the-cluster-token")


@pytest.mark.ray
def test_worker_shows_its_instance_id_and_node_type_and_its_idle_time_grows(
    agent: AgentProcess, reader: HttpRayStateReader
) -> None:
    def worker_idle(state: RayState) -> bool:
        worker = node_with_instance(state, WORKER_INSTANCE_ID)
        return worker is not None and worker.status == RayNodeStatus.IDLE and worker.idle_duration_s > 0

    first = read_state_when(reader, agent, worker_idle, "the worker to be idle")
    time.sleep(1.0)
    second = reader.read_state(agent.url, TOKEN)

    worker_then, worker_now = (
        node_with_instance(first, WORKER_INSTANCE_ID),
        node_with_instance(second, WORKER_INSTANCE_ID),
    )
    assert worker_then is not None
    assert worker_now is not None
    assert worker_now.idle_duration_s >= worker_then.idle_duration_s + 0.5
    assert (worker_now.node_type, worker_now.is_head, worker_now.total_resources["CPU"]) == ("cpu-worker", False, 1.0)
    assert len(worker_now.ray_node_id) == 56
    (head,) = [node for node in second.nodes if node.is_head]
    assert (head.node_type, head.instance_id) == ("head", "")


@pytest.mark.ray
def test_tasks_needing_more_cpus_than_exist_show_as_pending_shape_counts(
    agent: AgentProcess, reader: HttpRayStateReader
) -> None:
    import ray

    @ray.remote(num_cpus=3)
    def needs_three_cpus() -> None:
        pass

    refs = [needs_three_cpus.remote() for _ in range(3)]
    try:
        state = read_state_when(reader, agent, lambda state: bool(state.pending), "pending demand")
        assert state.pending == (ShapeDemand(shape=(("CPU", 3.0),), count=3),)
    finally:
        for ref in refs:
            ray.cancel(ref)
    read_state_when(reader, agent, has_no_demand, "the cancelled tasks to leave the demand")


@pytest.mark.ray
def test_the_state_counts_running_ray_jobs_this_tests_driver_included(
    agent: AgentProcess, reader: HttpRayStateReader
) -> None:
    # This module's ray.init is a driver: a job Ray lists as running, with no submitted job behind it.
    state = read_state_when(reader, agent, lambda state: state.jobs_running is not None, "Ray's jobs to be read")
    assert state.jobs_running is not None
    assert state.jobs_running >= 1
    raw = requests.get(f"{agent.url}/v1/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
    assert isinstance(raw["jobs_running"], int)


@pytest.mark.ray
def test_strict_spread_placement_group_shows_as_gang_with_its_strategy(
    agent: AgentProcess, reader: HttpRayStateReader
) -> None:
    from ray.util.placement_group import placement_group, remove_placement_group

    # Two bundles on two different nodes: only one node has a CPU, so the group waits.
    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    try:
        state = read_state_when(reader, agent, lambda state: bool(state.gangs), "the placement group's demand")
        assert state.gangs == (GangDemand(strategy=GangStrategy.STRICT_SPREAD, bundles=(CPU1, CPU1), count=1),)
        assert state.pending == ()
    finally:
        remove_placement_group(group)
    read_state_when(reader, agent, has_no_demand, "the removed placement group to leave the demand")


@pytest.mark.ray
def test_request_resources_shows_as_a_constraint(agent: AgentProcess, reader: HttpRayStateReader) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"CPU": 1}] * 3)
    try:
        state = read_state_when(reader, agent, lambda state: bool(state.constraints), "the resource constraint")
        assert state.constraints == (ShapeDemand(shape=CPU1, count=3),)
    finally:
        request_resources(bundles=[])
    read_state_when(reader, agent, has_no_demand, "the constraint to be cleared")


@pytest.mark.ray
def test_idle_drain_of_a_busy_node_is_refused(agent: AgentProcess, reader: HttpRayStateReader) -> None:
    import ray

    @ray.remote(num_cpus=1)
    def keep_busy() -> None:
        time.sleep(60)

    ref = keep_busy.remote()
    try:

        def worker_busy(state: RayState) -> bool:
            worker = node_with_instance(state, WORKER_INSTANCE_ID)
            return worker is not None and worker.status == RayNodeStatus.RUNNING

        worker = node_with_instance(read_state_when(reader, agent, worker_busy, "a busy worker"), WORKER_INSTANCE_ID)
        assert worker is not None
        result = reader.drain(agent.url, TOKEN, worker.ray_node_id, "idle", "scale down: idle 300 s")
        assert result == DrainResult(
            accepted=False, rejection_reason="The node to be idle terminated is no longer idle."
        )
    finally:
        ray.cancel(ref, force=True)


@pytest.mark.ray
def test_drain_of_a_node_ray_does_not_know_is_404(agent: AgentProcess, reader: HttpRayStateReader) -> None:
    read_state_when(reader, agent, lambda state: True, "the agent to reach the GCS")
    unknown_node_id = "ab" * 28
    response = requests.post(
        f"{agent.url}/v1/drain",
        json={"ray_node_id": unknown_node_id, "reason": "idle", "message": "gone?"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert (response.status_code, response.json()["field"]) == (404, "ray_node_id")
    assert reader.drain(agent.url, TOKEN, unknown_node_id, "idle", "gone?") == DrainResult(
        accepted=True, rejection_reason="", node_known=False
    )


@pytest.mark.ray
@pytest.mark.parametrize(
    ("body", "failing_field"),
    [
        pytest.param({"ray_node_id": "not-hex", "reason": "idle"}, "ray_node_id", id="bad-node-id"),
        pytest.param({"reason": "idle"}, "ray_node_id", id="missing-node-id"),
        pytest.param({"ray_node_id": "ab" * 28, "reason": "bored"}, "reason", id="unknown-reason"),
        pytest.param({"ray_node_id": "ab" * 28, "message": 7}, "message", id="message-not-text"),
    ],
)
def test_drain_refuses_a_malformed_request(agent: AgentProcess, body: dict[str, Any], failing_field: str) -> None:
    response = requests.post(
        f"{agent.url}/v1/drain", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert (response.status_code, response.json()["field"]) == (400, failing_field)


@pytest.mark.ray
def test_idle_drain_of_an_idle_node_is_accepted_and_its_death_wakes_the_control_plane(
    ray_cluster: RayCluster, agent: AgentProcess, reader: HttpRayStateReader, wake_receiver: WakeUpReceiver
) -> None:
    # A node of its own (no CPU: nothing lands there), so the shared worker survives this test.
    ray_cluster.cluster.add_node(
        num_cpus=0, resources={"drain_me": 1}, env_vars={"RAY_CLOUD_INSTANCE_ID": "instance-to-drain"}
    )

    def idle_node(state: RayState) -> bool:
        node = node_with_instance(state, "instance-to-drain")
        return node is not None and node.status == RayNodeStatus.IDLE

    node = node_with_instance(read_state_when(reader, agent, idle_node, "the new node idle"), "instance-to-drain")
    assert node is not None
    wake_receiver.clear()

    assert reader.drain(agent.url, TOKEN, node.ray_node_id, "idle", "scale down") == DrainResult(True, "")

    def drained_node_gone(state: RayState) -> bool:
        gone = node_with_instance(state, "instance-to-drain")
        return gone is not None and gone.status in (RayNodeStatus.DRAINING, RayNodeStatus.DEAD)

    read_state_when(reader, agent, drained_node_gone, "the drained node to drain or die")
    wake_ups = wait_for(
        lambda: [w for w in wake_receiver.snapshot() if "instance-to-drain" in w.body["reason"]],
        what="a wake-up naming the dead node",
    )
    assert "nodes died" in wake_ups[0].body["reason"]


def post_preempt(agent: AgentProcess, body: dict[str, Any], token: str = TOKEN) -> requests.Response:
    return requests.post(f"{agent.url}/v1/preempt", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.mark.ray
def test_a_preemption_notice_drains_a_busy_node_with_its_deadline_and_wakes_the_control_plane_at_once(
    ray_cluster: RayCluster, agent: AgentProcess, reader: HttpRayStateReader, wake_receiver: WakeUpReceiver
) -> None:
    import ray

    ray_cluster.cluster.add_node(
        num_cpus=0, resources={"preempt_me": 1}, env_vars={"RAY_CLOUD_INSTANCE_ID": "instance-preempted"}
    )

    @ray.remote(num_cpus=0, resources={"preempt_me": 1}, max_retries=0)  # cancelled below: never to be retried
    def keeps_the_node_busy() -> None:
        time.sleep(120)

    busy = keeps_the_node_busy.remote()
    try:

        def busy_node(state: RayState) -> bool:
            node = node_with_instance(state, "instance-preempted")
            return node is not None and node.status == RayNodeStatus.RUNNING

        read_state_when(reader, agent, busy_node, "the new node busy")
        # A wake-up just went out (the new node's demand): the notice must not wait out the debounce window.
        time.sleep(WAKE_DEBOUNCE_S + 2 * POLL_INTERVAL_S)
        wake_receiver.clear()
        not_before = datetime.fromtimestamp(int(time.time()) + 30, tz=UTC)
        body = {"instance_id": "instance-preempted", "event_id": "E-7", "not_before": not_before.isoformat()}
        noticed_at = time.monotonic()
        answer = post_preempt(agent, body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] is True
        assert answer.json()["left_ray"] is False

        def preempted(state: RayState) -> bool:
            node = node_with_instance(state, "instance-preempted")
            # Ray never refuses a preemption drain, busy or not; its node status says so a moment after the drain.
            return node is not None and node.preempt_deadline is not None and node.status == RayNodeStatus.DRAINING

        state = read_state_when(reader, agent, preempted, "the node draining with its preempt deadline")
        node = node_with_instance(state, "instance-preempted")
        assert node is not None
        assert node.preempt_deadline == not_before
        wake_up = wait_for(
            lambda: [w for w in wake_receiver.snapshot() if "instance-preempted" in w.body["reason"]],
            timeout_s=5,
            what="a wake-up naming the preempted instance",
        )[0]
        assert "nodes preempted" in wake_up.body["reason"]
        assert wake_up.received_at - noticed_at < 1.0 + POLL_INTERVAL_S

        # The watch asks again every poll: nothing changes, and the node is still in Ray while its task runs.
        again = post_preempt(agent, body).json()
        assert (again["accepted"], again["left_ray"]) == (True, False)
    finally:
        ray.cancel(busy, force=True)

    # Idle now, the drained node ends itself: the instance has left Ray, which the watch waits for to acknowledge.
    wait_for(lambda: post_preempt(agent, body).json()["left_ray"], timeout_s=30, what="the drained node to leave")
    state = reader.read_state(agent.url, TOKEN)
    gone = node_with_instance(state, "instance-preempted")
    assert gone is None or (gone.status == RayNodeStatus.DEAD and gone.preempt_deadline is None)
    read_state_when(reader, agent, has_no_demand, "no demand left behind")


@pytest.mark.ray
@pytest.mark.parametrize(
    ("body", "token", "status", "failing_field"),
    [
        ({"instance_id": "i", "not_before": "2026-11-30T12:00:30+00:00"}, "wrong", 403, "Authorization"),
        ({"instance_id": "a b", "not_before": "2026-11-30T12:00:30+00:00"}, TOKEN, 400, "instance_id"),
        ({"instance_id": "i", "not_before": "Mon, 30 Nov 2026 12:00:30 GMT"}, TOKEN, 400, "not_before"),
    ],
)
def test_a_preemption_notice_needs_the_token_and_a_valid_body(
    agent: AgentProcess, body: dict[str, Any], token: str, status: int, failing_field: str
) -> None:
    answer = post_preempt(agent, body, token)
    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["field"] == failing_field


@pytest.mark.ray
def test_demand_wakes_the_control_plane_at_once_then_debounced(
    agent: AgentProcess, reader: HttpRayStateReader, wake_receiver: WakeUpReceiver
) -> None:
    import ray

    # Let any wake-up held back by an earlier test go out first.
    time.sleep(WAKE_DEBOUNCE_S + 2 * POLL_INTERVAL_S)
    wake_receiver.clear()

    @ray.remote
    def waits_for_resources() -> None:
        pass

    first_refs = [waits_for_resources.options(num_cpus=5).remote()]
    asked_at = time.monotonic()
    refs = list(first_refs)
    try:
        (first,) = wait_for(wake_receiver.snapshot, timeout_s=5, what="the first wake-up")
        assert first.received_at - asked_at < 1.0 + POLL_INTERVAL_S
        assert first.path == f"/api/clusters/{CLUSTER_NAME}/reconcile"
        assert first.authorization == f"Bearer {TOKEN}"
        assert "{CPU: 5}" in first.body["reason"]

        # Inside the debounce window: held back, then sent when the window closes.
        refs.append(waits_for_resources.options(num_cpus=6).remote())
        wake_ups = wait_for(lambda: wake_receiver.snapshot()[1:], timeout_s=5, what="the debounced wake-up")
        second = wake_ups[0]
        assert second.received_at - first.received_at >= WAKE_DEBOUNCE_S - 0.1
        assert second.received_at - first.received_at < WAKE_DEBOUNCE_S + 1.0
        assert "{CPU: 6}" in second.body["reason"]
        time.sleep(WAKE_DEBOUNCE_S)
        assert len(wake_receiver.snapshot()) == 2, "no further wake-up while demand stays as it is"
    finally:
        for ref in refs:
            ray.cancel(ref)
    read_state_when(reader, agent, has_no_demand, "the cancelled tasks to leave the demand")


@pytest.mark.ray
def test_a_boot_phase_reported_by_the_boot_script_shows_in_the_state(
    agent: AgentProcess, reader: HttpRayStateReader, tmp_path: Path
) -> None:
    read_state_when(reader, agent, lambda state: True, "the agent to reach the GCS")
    token_file = tmp_path / "cluster-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    finished = subprocess.run(
        [
            "bash",
            "-c",
            'source "$0"; report_boot_phase ray_started "ray-node.service started"',
            boot_functions(tmp_path),
        ],
        env={
            "PATH": os.environ["PATH"],
            "TOKEN_FILE": str(token_file),
            "INSTANCE_ID": "worker-booting-1",
            "BOOT_PHASE_URL": f"{agent.url}/v1/boot-phase",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "not reported" not in finished.stdout

    state = requests.get(f"{agent.url}/v1/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
    report = parse_boot_phases(state)["worker-booting-1"]
    assert (report.phase, report.detail) == (BootPhase.RAY_STARTED, "ray-node.service started")
    assert abs((datetime.now(UTC) - report.at).total_seconds()) < 60
    assert parse_state(state).nodes, "the state of Ray is unchanged by the boot phases beside it"


def boot_functions(directory: Path) -> str:
    """The boot functions as cloud-init writes them to a worker, in `directory`."""
    spec = NodeBootSpec(
        cluster_name=CLUSTER_NAME,
        instance_id="worker-booting-1",
        node_type="cpu-worker",
        is_head=False,
        resources={"CPU": 1},
        cluster_token=TOKEN,
        ssh_user="ubuntu",
        head_address="10.100.0.4:6379",
    )
    document = yaml.safe_load(render_cloud_config(spec))
    (content,) = [entry["content"] for entry in document["write_files"] if entry["path"].endswith("boot-functions.sh")]
    path = directory / "boot-functions.sh"
    path.write_text(content)
    return str(path)


# --------------------------------------------------------------------------------------------
# The agent without a reachable GCS, without a token, without Ray
# --------------------------------------------------------------------------------------------


@pytest.mark.ray
def test_agent_answers_503_at_once_while_the_gcs_is_unreachable(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    started = start_agent(tmp_path, f"127.0.0.1:{free_loopback_port()}", [])
    try:
        assert requests.get(f"{started.url}/v1/healthz", timeout=5).status_code == 200
        asked_at = time.monotonic()
        response = requests.get(f"{started.url}/v1/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert response.status_code == 503
        assert time.monotonic() - asked_at < 1.0
        assert "GCS" in response.json()["detail"]
    finally:
        stop_agent(started)


@pytest.mark.ray
def test_agent_holding_a_token_ray_refuses_answers_503(ray_cluster: RayCluster, tmp_path: Path) -> None:
    other_token = cluster_token(b"head-agent-test-key", CLUSTER_NAME, 2)
    started = start_agent(tmp_path, ray_cluster.gcs_address, [], token=other_token)
    try:
        time.sleep(1.0)  # time enough to connect, were the token accepted
        response = requests.get(
            f"{started.url}/v1/state", headers={"Authorization": f"Bearer {other_token}"}, timeout=5
        )
        assert response.status_code == 503
        assert "Authentication token is missing or incorrect" in started.log()
    finally:
        stop_agent(started)


def run_agent_until_it_exits(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "provisioning.head.agent", "--gcs-address", "127.0.0.1:6379", "--port", "0"]
    return subprocess.run(
        [*command, "--cluster-name", CLUSTER_NAME],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_agent_without_a_token_exits_non_zero_with_a_clear_message() -> None:
    finished = run_agent_until_it_exits({key: value for key, value in os.environ.items() if key != "AGENT_TOKEN"})
    assert finished.returncode != 0
    assert "no cluster token" in finished.stderr


@pytest.fixture(scope="module")
def agent_without_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """An agent whose Python cannot import Ray: a `ray` package with nothing in it is ahead of the real one."""
    empty_ray = tmp_path_factory.mktemp("no-ray")
    (empty_ray / "ray").mkdir()
    (empty_ray / "ray" / "__init__.py").write_text("")
    started = start_agent(
        tmp_path_factory.mktemp("agent-without-ray"),
        f"127.0.0.1:{free_loopback_port()}",
        [],
        extra_env={"PYTHONPATH": f"{empty_ray}{os.pathsep}{REPO_ROOT}"},
    )
    try:
        yield started
    finally:
        stop_agent(started)


def test_agent_without_ray_still_serves_and_answers_state_503_saying_ray_is_missing(
    agent_without_ray: AgentProcess,
) -> None:
    assert requests.get(f"{agent_without_ray.url}/v1/healthz", timeout=5).status_code == 200
    response = requests.get(
        f"{agent_without_ray.url}/v1/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert response.status_code == 503
    assert "Ray is not installed" in response.json()["detail"]


@pytest.mark.parametrize(
    ("authorization", "expected_status"),
    [pytest.param(None, 401, id="missing"), pytest.param("Bearer not-the-cluster-token", 403, id="wrong")],
)
def test_boot_phase_reports_need_the_cluster_token(
    agent_without_ray: AgentProcess, authorization: str | None, expected_status: int
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"instance_id": "worker-1", "phase": "cloud_init_running"}
    response = requests.post(f"{agent_without_ray.url}/v1/boot-phase", json=body, headers=headers, timeout=5)
    assert (response.status_code, response.json()["field"]) == (expected_status, "Authorization")


def test_a_boot_phase_is_taken_while_ray_cannot_be_read(agent_without_ray: AgentProcess) -> None:
    response = requests.post(
        f"{agent_without_ray.url}/v1/boot-phase",
        json={"instance_id": "worker-1", "phase": "cloud_init_running", "detail": "bootstrap started"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200
    answer = response.json()
    assert (answer["instance_id"], answer["phase"], answer["detail"]) == (
        "worker-1",
        "cloud_init_running",
        "bootstrap started",
    )
    assert datetime.fromisoformat(answer["at"].replace("Z", "+00:00")).tzinfo is not None


@pytest.mark.parametrize(
    ("body", "failing_field"),
    [
        pytest.param({"instance_id": "../etc", "phase": "ray_started"}, "instance_id", id="bad-instance-id"),
        pytest.param({"instance_id": "worker-1", "phase": "joined"}, "phase", id="phase-not-reportable"),
        pytest.param({"instance_id": "worker-1", "phase": "ray_started", "detail": ["x"]}, "detail", id="detail-list"),
    ],
)
def test_boot_phase_report_refuses_a_malformed_body(
    agent_without_ray: AgentProcess, body: dict[str, Any], failing_field: str
) -> None:
    response = requests.post(
        f"{agent_without_ray.url}/v1/boot-phase", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert (response.status_code, response.json()["field"]) == (400, failing_field)


# --------------------------------------------------------------------------------------------
# The reader against what is not a healthy agent
# --------------------------------------------------------------------------------------------


def test_reader_drains_a_node_that_never_joined_ray_without_asking() -> None:
    dead_url = f"http://127.0.0.1:{free_loopback_port()}"
    result = HttpRayStateReader().drain(dead_url, TOKEN, "", "idle", "scale down")
    assert result == DrainResult(accepted=True, rejection_reason="", node_known=False)


def test_reader_against_a_dead_port_fails_fast() -> None:
    dead_url = f"http://127.0.0.1:{free_loopback_port()}"
    asked_at = time.monotonic()
    with pytest.raises(HeadUnreachableError):
        HttpRayStateReader().read_state(dead_url, TOKEN)
    assert time.monotonic() - asked_at < 1.0


@dataclass
class StubAnswer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


@pytest.fixture(scope="module")
def stub_agent() -> Iterator[tuple[str, StubAnswer]]:
    """A loopback server that answers whatever the test puts in the StubAnswer."""
    answer = StubAnswer()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = _reply
        do_POST = _reply

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", answer
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "body", "expected_error"),
    [
        pytest.param(500, b'{"detail": "boom"}', HeadUnreachableError, id="5xx"),
        pytest.param(502, b"<html>Bad Gateway</html>", HeadUnreachableError, id="proxy-error-page"),
        pytest.param(200, b"<html>not json</html>", HeadUnreachableError, id="garbage-200"),
        pytest.param(200, b'{"nodes": "none"}', HeadUnreachableError, id="contract-broken"),
        pytest.param(302, b"", HeadUnreachableError, id="redirect-not-followed"),
        pytest.param(401, b"{}", HeadAuthError, id="401"),
        pytest.param(403, b"{}", HeadAuthError, id="403"),
    ],
)
def test_reader_turns_an_unusable_state_answer_into_head_unreachable(
    stub_agent: tuple[str, StubAnswer], status: int, body: bytes, expected_error: type[Exception]
) -> None:
    url, answer = stub_agent
    answer.status, answer.body = status, body
    with pytest.raises(expected_error):
        HttpRayStateReader().read_state(url, TOKEN)


@pytest.mark.parametrize(
    ("status", "body", "expected_error"),
    [
        pytest.param(404, b"<html>no such route</html>", HeadUnreachableError, id="404-of-a-wrong-url"),
        pytest.param(400, b'{"field": "ray_node_id"}', HeadUnreachableError, id="400-contract-mismatch"),
        pytest.param(503, b'{"detail": "not connected to the GCS"}', HeadUnreachableError, id="gcs-away"),
        pytest.param(200, b'{"accepted": "perhaps"}', HeadUnreachableError, id="contract-broken"),
        pytest.param(403, b"{}", HeadAuthError, id="403"),
    ],
)
def test_reader_turns_an_unusable_drain_answer_into_head_unreachable(
    stub_agent: tuple[str, StubAnswer], status: int, body: bytes, expected_error: type[Exception]
) -> None:
    url, answer = stub_agent
    answer.status, answer.body = status, body
    with pytest.raises(expected_error):
        HttpRayStateReader().drain(url, TOKEN, "ab" * 28, "idle", "scale down")
