"""LocalCloudProvider against real Ray nodes on 127.0.0.1.

One cluster (a head with CPU 0 and five workers) is started once for the module and shared: every Ray node
costs seconds on a small machine. The tests that change it (terminate, evict, destroy) come last, in file order.
The provider contract checks run on a provider whose launch delay outlasts each check, so they exercise the
bookkeeping (list, idempotent launch, terminate) without starting Ray at all.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from autoscaler.model import CloudInstance, CloudState, LaunchRequest
from provisioning.cloud import CloudProvider, InvalidRequestError, NotFoundError
from provisioning.local import LocalCloudProvider, cluster_processes
from tests.support.provider_contract import CONTRACT_CHECKS, ProviderHarness, eventually

CLUSTER = "local-test"
TOKEN = "local-test-token-0123456789abcdef"
HEAD_ID = "head-0001"
WORKER_ID = "worker-0001"
TERMINATED_WORKER_ID = "worker-0002"
EVICTED_WORKER_ID = "worker-0003"
CRASHED_WORKER_ID = "worker-0004"
PREEMPTED_WORKER_ID = "worker-0005"
START_TIMEOUT_S = 90.0


WORKER_LABELS = {"zone": "a", "team.example/accelerator": "none"}


def launch_request(
    instance_id: str,
    *,
    cluster_name: str = CLUSTER,
    request_id: str = "",
    is_head: bool = False,
    head_address: str = "",
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
) -> LaunchRequest:
    return LaunchRequest(
        cluster_name=cluster_name,
        instance_id=instance_id,
        request_id=request_id or f"request-{instance_id}",
        node_type="ray.head.default" if is_head else "ray.worker.cpu",
        is_head=is_head,
        resources=resources if resources is not None else {"CPU": 1},
        node_config={},
        cluster_token=TOKEN,
        config_hash="config-hash",
        head_address=head_address,
        labels=labels or {},
    )


def wait_until_running(provider: LocalCloudProvider, cluster_name: str, *instance_ids: str) -> list[CloudInstance]:
    def all_running(instances: list[CloudInstance]) -> bool:
        states = {instance.instance_id: instance.state for instance in instances}
        failed = [instance for instance in instances if instance.state is CloudState.FAILED]
        assert not failed, f"instances failed to start: {failed}"
        return all(states.get(instance_id) is CloudState.RUNNING for instance_id in instance_ids)

    return eventually(lambda: provider.list_instances(cluster_name), all_running, START_TIMEOUT_S)


def group_members(group_id: int) -> set[int]:
    """Live pids in a process group (zombies excluded), read from /proc."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields_after_name = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields_after_name[0] != "Z" and int(fields_after_name[2]) == group_id:
            members.add(int(entry.name))
    return members


def launchers_of(data_dir: Path, instance_id: str) -> list[int]:
    """Pids of the live launchers (`python -m provisioning.local_node`) of one instance, found by their marker."""
    marker = f"RAY_CLOUD_INSTANCE_ID={instance_id}".encode()
    launchers = []
    for pid in cluster_processes(data_dir, CLUSTER):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"provisioning.local_node" in command and marker in environment:
            launchers.append(pid)
    return sorted(launchers)


def raylets_of(data_dir: Path, instance_id: str) -> list[int]:
    marker = f"RAY_CLOUD_INSTANCE_ID={instance_id}".encode()
    raylets = []
    for pid in cluster_processes(data_dir, CLUSTER):
        try:
            if Path(f"/proc/{pid}/comm").read_text() != "raylet\n":
                continue
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environment:
            raylets.append(pid)
    return sorted(raylets)


# A host that launches one instance and dies by SIGKILL at one step of the launch (what kill -9 of the local host
# does at that moment): the request comes pickled on stdin.
DYING_HOST_SCRIPT = """
import os, pickle, signal, sys
import provisioning.local as local
data_dir, crash_step, launch_delay_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
def checkpoint(step):
    if step == crash_step:
        os.kill(os.getpid(), signal.SIGKILL)
local._checkpoint = checkpoint
local.LocalCloudProvider(data_dir, launch_delay_s=launch_delay_s).launch(pickle.load(sys.stdin.buffer))
"""


def launch_in_a_host_killed_at(data_dir: Path, step: str, request: LaunchRequest, launch_delay_s: float) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", DYING_HOST_SCRIPT, str(data_dir), step, repr(launch_delay_s)],
        input=pickle.dumps(request),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr.decode(errors="replace")[-3000:]


def describe_process(pid: int) -> str:
    """Its command line and /proc stat (state, parent, group, session), for a failure message."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as error:
        return f"gone ({error.strerror})"
    return f"{command[:300]} | stat: {stat[:120]}"


def run_driver(provider: LocalCloudProvider, ray_address: str, script: str) -> str:
    """Run a Ray driver in a subprocess (a driver in the pytest process would leak Ray state into other tests)."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    environment.update(provider.driver_environment(CLUSTER))
    environment["RAY_ADDRESS"] = ray_address
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@dataclass
class LocalCluster:
    provider: LocalCloudProvider
    data_dir: Path
    head: CloudInstance
    pids_by_instance: dict[str, int] = field(default_factory=dict)  # launcher pid = process group id


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data_dir = tmp_path_factory.mktemp("local-provider")
    provider = LocalCloudProvider(data_dir)
    try:
        provider.launch(launch_request(HEAD_ID, is_head=True, resources={"CPU": 0}))
        (head,) = wait_until_running(provider, CLUSTER, HEAD_ID)
        worker_ids = (WORKER_ID, TERMINATED_WORKER_ID, EVICTED_WORKER_ID, CRASHED_WORKER_ID, PREEMPTED_WORKER_ID)
        for instance_id, cpus in zip(worker_ids, (2, 1, 1, 1, 0), strict=True):
            labels = WORKER_LABELS if instance_id == WORKER_ID else None
            provider.launch(
                launch_request(instance_id, head_address=head.ray_address, resources={"CPU": cpus}, labels=labels)
            )
        instances = wait_until_running(provider, CLUSTER, *worker_ids)
        yield LocalCluster(
            provider=provider,
            data_dir=data_dir,
            head=head,
            pids_by_instance={instance.instance_id: int(instance.cloud_instance_id) for instance in instances},
        )
    finally:
        provider.destroy_cluster(CLUSTER)


# --------------------------------------------------------------------------------------------
# Checks that need no Ray
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_change", "expected_message"),
    [
        ({"cluster_name": "../escape"}, "cluster_name"),
        ({"cluster_name": ".hidden"}, "cluster_name"),
        ({"instance_id": "a/b"}, "instance_id"),
        ({"instance_id": "with.dot"}, "instance_id"),
        ({"instance_id": ""}, "instance_id"),
        ({"is_head": False, "head_address": ""}, "head_address"),
        ({"resources": {"CPU": -1}}, "CPU"),
        ({"cluster_token": ""}, "token"),
    ],
)
def test_launch_rejects_an_invalid_request_without_starting_anything(
    tmp_path: Path, request_change: dict[str, Any], expected_message: str
) -> None:
    provider = LocalCloudProvider(tmp_path)
    with pytest.raises(InvalidRequestError, match=expected_message):
        provider.launch(replace(launch_request("valid-1", is_head=True), **request_change))
    assert list(tmp_path.iterdir()) == []


def test_evicting_an_unknown_instance_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        LocalCloudProvider(tmp_path).evict(CLUSTER, "never-launched")


@dataclass
class DelayedLaunchHarness:
    """A provider whose instances stay in their launch delay: what the contract checks see is its bookkeeping."""

    provider: CloudProvider
    cluster_name: str
    settle_timeout_s: float = 10.0

    def launch_request(self, *, instance_id: str, request_id: str) -> LaunchRequest:
        return launch_request(instance_id, cluster_name=self.cluster_name, request_id=request_id, is_head=True)


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__)
def test_provider_contract(check: Callable[[ProviderHarness], None], tmp_path: Path) -> None:
    provider = LocalCloudProvider(tmp_path, launch_delay_s=600.0)
    check(DelayedLaunchHarness(provider, "contract"))
    assert cluster_processes(tmp_path, "contract") == []


def test_instance_is_pending_during_its_launch_delay_and_launch_returns_at_once(tmp_path: Path) -> None:
    provider = LocalCloudProvider(tmp_path, launch_delay_s=600.0)
    started_at = time.monotonic()
    provider.launch(launch_request("delayed-1", is_head=True))
    launch_duration_s = time.monotonic() - started_at
    try:
        assert launch_duration_s < 1.0
        (instance,) = provider.list_instances(CLUSTER)
        assert instance.state is CloudState.PENDING
        assert instance.detail == "simulated provisioning"
        assert instance.ray_address == ""
    finally:
        provider.destroy_cluster(CLUSTER)


@pytest.mark.parametrize(
    "second_request",
    [
        launch_request("same-1", is_head=True),  # the very same request, retried
        launch_request("other-id", request_id="request-same-1", is_head=True),  # same request id
        launch_request("same-1", request_id="another-request", is_head=True),  # same instance id
    ],
    ids=["same-request", "same-request-id", "same-instance-id"],
)
def test_launching_again_starts_no_second_instance(tmp_path: Path, second_request: LaunchRequest) -> None:
    provider = LocalCloudProvider(tmp_path, launch_delay_s=600.0)
    try:
        provider.launch(launch_request("same-1", is_head=True))
        provider.launch(second_request)
        instances = provider.list_instances(CLUSTER)
        assert [instance.instance_id for instance in instances] == ["same-1"]
        assert len(cluster_processes(tmp_path, CLUSTER)) == 1  # one launcher, in its delay
    finally:
        provider.destroy_cluster(CLUSTER)


def test_terminate_during_the_launch_delay_leaves_no_process(tmp_path: Path) -> None:
    provider = LocalCloudProvider(tmp_path, launch_delay_s=600.0)
    provider.launch(launch_request("delayed-2", is_head=True))
    provider.terminate(CLUSTER, "delayed-2")
    assert provider.list_instances(CLUSTER) == []
    assert cluster_processes(tmp_path, CLUSTER) == []
    provider.destroy_cluster(CLUSTER)


def test_the_instance_file_is_written_before_the_launcher_starts(tmp_path: Path) -> None:
    launch_in_a_host_killed_at(tmp_path, "record-written", launch_request("crash-1", is_head=True), 600.0)
    try:
        record = json.loads((tmp_path / "clusters" / CLUSTER / "instances" / "crash-1.json").read_text())
        assert record["instance_id"] == "crash-1"
        assert record["launcher_pid"] == 0
        assert launchers_of(tmp_path, "crash-1") == []
        assert LocalCloudProvider(tmp_path).list_instances(CLUSTER) == []  # nothing runs: nothing is listed
    finally:
        LocalCloudProvider(tmp_path).destroy_cluster(CLUSTER)


@pytest.mark.parametrize("crash_step", ["record-written", "launcher-started"])
def test_a_host_killed_during_a_launch_then_restarted_runs_one_launcher_for_the_instance(
    tmp_path: Path, crash_step: str
) -> None:
    request = launch_request("crash-2", is_head=True)
    launch_in_a_host_killed_at(tmp_path, crash_step, request, 600.0)
    started_before_crash = launchers_of(tmp_path, "crash-2")
    assert len(started_before_crash) == (1 if crash_step == "launcher-started" else 0)
    restarted = LocalCloudProvider(tmp_path, launch_delay_s=600.0)
    try:
        if started_before_crash:  # listed from the start: the launcher is found by its marker
            (instance,) = restarted.list_instances(CLUSTER)
            assert instance.cloud_instance_id == str(started_before_crash[0])

        restarted.launch(request)  # the reconciler's retry of a launch whose outcome it never saved
        (launcher,) = launchers_of(tmp_path, "crash-2")
        if started_before_crash:
            assert [launcher] == started_before_crash  # adopted, not started again
        restarted.launch(request)
        LocalCloudProvider(tmp_path, launch_delay_s=600.0).launch(request)
        assert launchers_of(tmp_path, "crash-2") == [launcher]
        (instance,) = restarted.list_instances(CLUSTER)
        assert (instance.instance_id, instance.state, instance.cloud_instance_id) == (
            "crash-2",
            CloudState.PENDING,
            str(launcher),
        )
        record = json.loads((tmp_path / "clusters" / CLUSTER / "instances" / "crash-2.json").read_text())
        assert record["launcher_pid"] == launcher

        restarted.terminate(CLUSTER, "crash-2")
        assert cluster_processes(tmp_path, CLUSTER) == []
        assert restarted.list_instances(CLUSTER) == []
    finally:
        restarted.destroy_cluster(CLUSTER)


def test_terminate_of_a_launcher_that_never_reached_the_instance_file_stops_it_and_is_idempotent(
    tmp_path: Path,
) -> None:
    launch_in_a_host_killed_at(tmp_path, "launcher-started", launch_request("crash-3", is_head=True), 600.0)
    (launcher,) = launchers_of(tmp_path, "crash-3")
    provider = LocalCloudProvider(tmp_path)
    try:
        started_at = time.monotonic()
        provider.terminate(CLUSTER, "crash-3")
        assert time.monotonic() - started_at < provider.terminate_grace_s + 5.0
        assert launchers_of(tmp_path, "crash-3") == []
        assert group_members(launcher) == set()
        assert provider.list_instances(CLUSTER) == []
        provider.terminate(CLUSTER, "crash-3")  # again: success, nothing to do
        provider.terminate(CLUSTER, "never-launched")
        provider.terminate("no-such-cluster", "never-launched")
        assert not (tmp_path / "clusters" / "no-such-cluster").exists()
    finally:
        provider.destroy_cluster(CLUSTER)


def test_instance_files_are_complete_json_written_without_leftovers(tmp_path: Path) -> None:
    provider = LocalCloudProvider(tmp_path, launch_delay_s=600.0)
    try:
        provider.launch(launch_request("durable-1", is_head=True))
        instances_dir = tmp_path / "clusters" / CLUSTER / "instances"
        assert sorted(path.name for path in instances_dir.iterdir()) == ["durable-1.json"]
        record = json.loads((instances_dir / "durable-1.json").read_text())
        assert record["launcher_pid"] == launchers_of(tmp_path, "durable-1")[0]
        assert record["launch_id"]
        assert stat.S_IMODE((instances_dir / "durable-1.json").stat().st_mode) == 0o600
    finally:
        provider.destroy_cluster(CLUSTER)


def test_a_launcher_whose_cluster_folder_was_removed_stops_by_itself(tmp_path: Path) -> None:
    # E.g. a test session's temporary folder pruned under it: its node must not start 10 minutes later, unknown.
    provider = LocalCloudProvider(tmp_path, launch_delay_s=600.0)
    try:
        provider.launch(launch_request("lease-1", is_head=True))
        (launcher,) = launchers_of(tmp_path, "lease-1")
        shutil.rmtree(tmp_path / "clusters" / CLUSTER)
        deadline = time.monotonic() + 10.0
        while group_members(launcher) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group_members(launcher) == set()
    finally:
        provider.destroy_cluster(CLUSTER)


def test_no_secret_of_the_control_plane_reaches_a_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTER_TOKEN_KEY", "key-0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountKey=c2VjcmV0")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "client-secret")
    provider = LocalCloudProvider(tmp_path, launch_delay_s=600.0)
    try:
        provider.launch(launch_request("secrets-1", is_head=True))
        (launcher,) = launchers_of(tmp_path, "secrets-1")
        environment = Path(f"/proc/{launcher}/environ").read_bytes()
        for secret in (b"key-0123456789abcdef", b"c2VjcmV0", b"client-secret", TOKEN.encode()):
            assert secret not in environment
    finally:
        provider.destroy_cluster(CLUSTER)


# --------------------------------------------------------------------------------------------
# The shared Ray cluster
# --------------------------------------------------------------------------------------------


@pytest.mark.ray
def test_head_is_running_with_loopback_endpoints_and_an_answering_agent(local_cluster: LocalCluster) -> None:
    head = local_cluster.head
    assert head.is_head
    assert re.fullmatch(r"127\.0\.0\.1:\d+", head.ray_address)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", head.dashboard_url)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", head.agent_url)
    assert requests.get(f"{head.agent_url}/v1/healthz", timeout=5).status_code == 200
    assert requests.get(f"{head.dashboard_url}/api/gcs_healthz", timeout=5).status_code == 200


@pytest.mark.ray
def test_auth_token_file_holds_the_cluster_token_and_only_its_owner_can_read_it(local_cluster: LocalCluster) -> None:
    token_path = local_cluster.provider.auth_token_path(CLUSTER)
    assert token_path.read_text() == TOKEN
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert token_path.is_relative_to(local_cluster.data_dir)


@pytest.mark.ray
def test_driver_with_the_token_file_runs_tasks_on_a_worker_that_ray_knows_by_instance_id(
    local_cluster: LocalCluster,
) -> None:
    script = """
import json, os, ray
from ray.autoscaler.v2.sdk import get_cluster_status
ray.init()
assert ray.get([ray.remote(lambda: 1).remote() for _ in range(2)]) == [1, 1]
status = get_cluster_status(os.environ["RAY_ADDRESS"])
print(json.dumps({
    node.instance_id: {"node_type": node.ray_node_type_name, "resources": node.total_resources()}
    for node in status.active_nodes + status.idle_nodes
}))
"""
    nodes = json.loads(run_driver(local_cluster.provider, local_cluster.head.ray_address, script).splitlines()[-1])
    assert nodes[WORKER_ID]["node_type"] == "ray.worker.cpu"
    assert nodes[WORKER_ID]["resources"]["CPU"] == 2
    assert nodes[HEAD_ID]["node_type"] == "ray.head.default"
    assert "CPU" not in nodes[HEAD_ID]["resources"] or nodes[HEAD_ID]["resources"]["CPU"] == 0


@pytest.mark.ray
def test_workers_started_at_once_each_have_their_own_raylet_and_object_store_sockets(
    local_cluster: LocalCluster,
) -> None:
    # The fixture launches its workers together, so they start concurrently and all came up.
    socket_arguments = re.compile(r"--(raylet_socket_name|store_socket_name)=(\S+)")
    sockets_by_kind: dict[str, list[str]] = {"raylet_socket_name": [], "store_socket_name": []}
    for pid in cluster_processes(local_cluster.data_dir, CLUSTER):
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if Path(f"/proc/{pid}/comm").read_text() == "raylet\n":
            for kind, path in socket_arguments.findall(command_line):
                sockets_by_kind[kind].append(path)
    for paths in sockets_by_kind.values():
        assert len(paths) == 6  # the head and five workers
        assert len(set(paths)) == len(paths)


@pytest.mark.ray
def test_a_worker_starts_with_its_node_types_labels(local_cluster: LocalCluster) -> None:
    script = "import json, ray; ray.init(); print(json.dumps([n.get('Labels', {}) for n in ray.nodes() if n['Alive']]))"
    labels_by_node = json.loads(
        run_driver(local_cluster.provider, local_cluster.head.ray_address, script).splitlines()[-1]
    )

    assert any(WORKER_LABELS.items() <= labels.items() for labels in labels_by_node), labels_by_node


@pytest.mark.ray
def test_every_socket_of_the_cluster_listens_on_loopback_only(local_cluster: LocalCluster) -> None:
    pids = set(cluster_processes(local_cluster.data_dir, CLUSTER))
    # -l: listening TCP and bound UDP sockets; -p: owning processes.
    listing = subprocess.run(["ss", "-H", "-l", "-n", "-p", "-t", "-u"], capture_output=True, text=True, check=True)
    sockets_of_cluster = [
        line.split()[4]
        for line in listing.stdout.splitlines()
        if {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & pids
    ]
    assert len(sockets_of_cluster) >= 10  # GCS, dashboard, agent, raylets, object managers, agents...
    loopback = re.compile(r"(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+")
    assert [address for address in sockets_of_cluster if not loopback.fullmatch(address)] == []


@pytest.mark.ray
def test_every_process_of_the_cluster_is_in_an_instance_process_group_or_below_one(local_cluster: LocalCluster) -> None:
    # Ray 2.60 starts each worker process (ray::IDLE, ray::<task>) in a process group of its own, so that its raylet
    # can kill the worker's children with it; such a worker descends from its instance's raylet, which is in the
    # instance's group and reaps it. Anything else outside every group would outlive its instance.
    in_groups = set().union(*(group_members(pid) for pid in local_cluster.pids_by_instance.values()))
    outside = set(cluster_processes(local_cluster.data_dir, CLUSTER)) - in_groups
    orphans = {pid for pid in outside if not (ancestors(pid) & in_groups)}
    assert not orphans, {pid: describe_process(pid) for pid in orphans}


def ancestors(pid: int) -> set[int]:
    """The pids above `pid` up to init, from /proc (empty once it is gone)."""
    found: set[int] = set()
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
        found.add(pid)
    return found


@pytest.mark.ray
def test_a_new_provider_on_the_same_data_dir_lists_the_same_instances(local_cluster: LocalCluster) -> None:
    restarted = LocalCloudProvider(local_cluster.data_dir)
    assert restarted.list_instances(CLUSTER) == local_cluster.provider.list_instances(CLUSTER)
    assert len(restarted.list_instances(CLUSTER)) == 6


@pytest.mark.ray
def test_a_worker_whose_host_was_killed_after_starting_its_launcher_runs_one_raylet_after_the_retry(
    local_cluster: LocalCluster,
) -> None:
    request = launch_request("crash-ray-1", head_address=local_cluster.head.ray_address, resources={"CPU": 1})
    launch_in_a_host_killed_at(local_cluster.data_dir, "launcher-started", request, 0.0)
    restarted = LocalCloudProvider(local_cluster.data_dir)
    try:
        restarted.launch(request)
        wait_until_running(restarted, CLUSTER, "crash-ray-1")
        # Ray is up: had a second launcher been started, its raylet would be up by now too.
        time.sleep(2.0)
        assert len(launchers_of(local_cluster.data_dir, "crash-ray-1")) == 1
        assert len(raylets_of(local_cluster.data_dir, "crash-ray-1")) == 1
    finally:
        restarted.terminate(CLUSTER, "crash-ray-1")
    assert launchers_of(local_cluster.data_dir, "crash-ray-1") == []
    assert raylets_of(local_cluster.data_dir, "crash-ray-1") == []


@pytest.mark.ray
def test_instance_whose_raylet_died_stops_and_vanishes_from_the_list(local_cluster: LocalCluster) -> None:
    provider = local_cluster.provider
    crashed_group = local_cluster.pids_by_instance[CRASHED_WORKER_ID]
    (raylet_pid,) = [pid for pid in group_members(crashed_group) if Path(f"/proc/{pid}/comm").read_text() == "raylet\n"]

    os.kill(raylet_pid, signal.SIGKILL)

    eventually(
        lambda: provider.list_instances(CLUSTER),
        lambda instances: CRASHED_WORKER_ID not in {instance.instance_id for instance in instances},
        timeout_s=30.0,
    )
    assert group_members(crashed_group) == set()
    provider.terminate(CLUSTER, CRASHED_WORKER_ID)  # forgets it, as the reconciler would


@pytest.mark.ray
def test_terminate_stops_exactly_that_node(local_cluster: LocalCluster) -> None:
    provider = local_cluster.provider
    terminated_group = local_cluster.pids_by_instance[TERMINATED_WORKER_ID]
    assert group_members(terminated_group)
    other_pids = set(cluster_processes(local_cluster.data_dir, CLUSTER)) - group_members(terminated_group)

    provider.terminate(CLUSTER, TERMINATED_WORKER_ID)

    assert group_members(terminated_group) == set()
    assert other_pids <= set(cluster_processes(local_cluster.data_dir, CLUSTER))
    assert TERMINATED_WORKER_ID not in {instance.instance_id for instance in provider.list_instances(CLUSTER)}


@pytest.mark.ray
def test_evicted_instance_dies_at_once_and_vanishes_from_the_list(local_cluster: LocalCluster) -> None:
    provider = local_cluster.provider
    evicted_group = local_cluster.pids_by_instance[EVICTED_WORKER_ID]
    other_pids = set(cluster_processes(local_cluster.data_dir, CLUSTER)) - group_members(evicted_group)

    provider.evict(CLUSTER, EVICTED_WORKER_ID)

    assert group_members(evicted_group) == set()
    assert other_pids <= set(cluster_processes(local_cluster.data_dir, CLUSTER))
    listed = {instance.instance_id: instance.state for instance in provider.list_instances(CLUSTER)}
    assert EVICTED_WORKER_ID not in listed
    assert listed[HEAD_ID] is CloudState.RUNNING
    assert listed[WORKER_ID] is CloudState.RUNNING
    assert LocalCloudProvider(local_cluster.data_dir).list_instances(CLUSTER) == provider.list_instances(CLUSTER)


def test_evicting_with_a_notice_refuses_a_bad_notice_period(tmp_path: Path) -> None:
    provider = LocalCloudProvider(tmp_path, launch_delay_s=60.0)
    provider.launch(launch_request("worker-9", head_address="127.0.0.1:1"))
    try:
        for notice_s in (-1.0, float("nan"), 7200.0):
            with pytest.raises(InvalidRequestError, match="notice_s"):
                provider.evict(CLUSTER, "worker-9", notice_s=notice_s)
    finally:
        provider.terminate(CLUSTER, "worker-9")


@pytest.mark.ray
def test_an_idle_worker_given_notice_is_drained_acknowledges_and_is_evicted_before_not_before(
    local_cluster: LocalCluster,
) -> None:
    provider = local_cluster.provider
    group = local_cluster.pids_by_instance[PREEMPTED_WORKER_ID]
    other_pids = set(cluster_processes(local_cluster.data_dir, CLUSTER)) - group_members(group)

    notice = provider.evict(CLUSTER, PREEMPTED_WORKER_ID, notice_s=60.0)
    assert notice is not None
    assert provider.evict(CLUSTER, PREEMPTED_WORKER_ID, notice_s=5.0) == notice  # one notice per VM

    # Its preempt watch reads the notice, the head agent drains the idle node (Ray ends it at once), the watch
    # acknowledges the event, and the VM goes then: long before NotBefore.
    eventually(
        lambda: provider.list_instances(CLUSTER),
        lambda instances: PREEMPTED_WORKER_ID not in {instance.instance_id for instance in instances},
        timeout_s=30.0,
    )
    assert datetime.now(UTC) < notice.not_before - timedelta(seconds=20)
    assert group_members(group) == set()
    assert other_pids <= set(cluster_processes(local_cluster.data_dir, CLUSTER))
    log = (local_cluster.data_dir / "clusters" / CLUSTER / "logs" / f"{PREEMPTED_WORKER_ID}.log").read_text()
    assert "acknowledged preemption" in log
    assert "(the node has left Ray)" in log
    assert "evicted (event acknowledged)" in log


@pytest.mark.ray
def test_destroy_leaves_no_process_and_no_folder(local_cluster: LocalCluster) -> None:
    provider = local_cluster.provider
    assert cluster_processes(local_cluster.data_dir, CLUSTER)

    report = provider.destroy_cluster(CLUSTER)

    assert report.complete
    assert cluster_processes(local_cluster.data_dir, CLUSTER) == []
    assert not (local_cluster.data_dir / "clusters" / CLUSTER).exists()
    assert provider.list_instances(CLUSTER) == []
    assert any(HEAD_ID in removed for removed in report.removed)
