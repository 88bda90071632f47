"""What the crash and outage tests check on a local cluster, read from the outside: the HTTP API (which may be down
while the host is dead), /proc (every process of a cluster carries its cluster folder and instance id in its
environment, see provisioning/local.py) and Ray's own view through the head agent."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from provisioning.local import LocalCloudProvider, cluster_processes
from tests.e2e.host_process import HostProcess
from tests.e2e.support import DRIVER_SCRIPT, LIVE_STATUSES, Driver, View, describe, driver_environment

POLL_S = 0.25
RAY_PROCESS_NAMES = ("raylet", "gcs_server")


@contextlib.contextmanager
def private_work_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """For a test's `work_dir` fixture: a folder of this test only, outside pytest's numbered temporary folders
    (those of the last three sessions are kept and older ones pruned, so another session running meanwhile on this
    machine may prune this one's under it). Removed after a passing test, kept (and named) after a failing one or
    when E2E_KEEP_WORK_DIR is set."""
    failed_before = request.session.testsfailed
    folder = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-"))
    yield folder
    if request.session.testsfailed > failed_before or os.environ.get("E2E_KEEP_WORK_DIR"):
        print(f"kept for inspection: {folder}", flush=True)  # (a failed call is counted before teardown)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def try_status(host: HostProcess, name: str, timeout_s: float = 5.0) -> View | None:
    """GET /clusters/{name}, or None while the host is down or does not answer."""
    with contextlib.suppress(requests.RequestException, ValueError):
        response = host.api("GET", f"/clusters/{name}", timeout_s=timeout_s)
        if response.status_code == 200:
            body: View = response.json()
            return body
    return None


def wait_for(
    host: HostProcess,
    name: str,
    predicate: Callable[[View], object],
    *,
    what: str,
    timeout_s: float,
    context: str = "",
    also_check: Callable[[View], None] | None = None,
) -> View:
    """Poll the cluster until `predicate(view)` holds; `also_check` runs on every view read (invariants)."""
    deadline = time.monotonic() + timeout_s
    view: View | None = None
    while True:
        host.restart_if_crashed()
        current = try_status(host, name)
        if current is not None:
            view = current
            if also_check is not None:
                also_check(view)
            if predicate(view):
                return view
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{context}timed out after {timeout_s:g} s waiting for {what}\n{describe(view)}\n"
                f"host log:\n{host.log_tail(2000)}"
            )
        time.sleep(POLL_S)


def live_workers(view: View, node_type: str | None = None) -> list[View]:
    return [
        node
        for node in view["nodes"]
        if not node["is_head"]
        and node["status"] in LIVE_STATUSES
        and (node_type is None or node["node_type"] == node_type)
    ]


def running_workers(view: View, node_type: str) -> list[View]:
    return [node for node in live_workers(view, node_type) if node["status"] == "ray_running"]


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def processes_by_instance(provider_dir: Path, cluster_name: str) -> dict[str, list[tuple[int, str]]]:
    """Every live process of the cluster (`cluster_processes`: in an instance's process group, or marked), as
    (pid, command name) by instance id; "" for a process that cannot be told apart.

    The instance id is the one in the environment of the process's group leader (the instance's launcher), else in
    its own environment: a process that sets its title (Ray's agents, the dashboard's modules) may overwrite what
    /proc shows of its own environment.
    """
    found: dict[str, list[tuple[int, str]]] = {}
    for pid in cluster_processes(provider_dir, cluster_name):
        try:
            group = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[2])
            command = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue  # gone meanwhile
        instance_id = _instance_id_in_environment(group) or _instance_id_in_environment(pid)
        found.setdefault(instance_id, []).append((pid, command))
    return found


def _instance_id_in_environment(pid: int) -> str:
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    prefix = b"RAY_CLOUD_INSTANCE_ID="
    return next((item[len(prefix) :].decode() for item in environment if item.startswith(prefix)), "")


def ray_processes_by_instance(provider_dir: Path, cluster_name: str) -> dict[str, Counter[str]]:
    """Per instance id: how many raylet and gcs_server processes run."""
    return {
        instance_id: Counter(command for _, command in processes if command in RAY_PROCESS_NAMES)
        for instance_id, processes in processes_by_instance(provider_dir, cluster_name).items()
    }


def ray_nodes_by_instance(provider_dir: Path, cluster_name: str) -> Counter[str]:
    """Ray's own view, through the head agent's GET /v1/state: non-dead Ray nodes per instance id."""
    provider = LocalCloudProvider(provider_dir)
    heads = [instance for instance in provider.list_instances(cluster_name) if instance.is_head and instance.agent_url]
    assert heads, "no head with an agent to ask"
    token = provider.auth_token_path(cluster_name).read_text().strip()
    response = requests.get(
        f"{heads[0].agent_url}/v1/state", headers={"Authorization": f"Bearer {token}"}, timeout=10.0
    )
    response.raise_for_status()
    return Counter(node["instance_id"] for node in response.json()["nodes"] if node["status"] != "dead")


def check_one_node_per_instance_and_no_orphan(host: HostProcess, name: str, context: str = "") -> View:
    """No duplicate Ray node (at most one raylet, one GCS and one live Ray node per instance id, exactly one raylet
    per worker the table says runs Ray) and no orphan (no process of an instance the table does not count as live).

    Processes are read before the table: a process of a launch is always preceded by its row, so a process whose
    instance is not live in a later view is an orphan, never a launch caught in the middle.
    """
    all_processes = processes_by_instance(host.provider_dir, name)
    ray_processes = ray_processes_by_instance(host.provider_dir, name)
    ray_nodes = ray_nodes_by_instance(host.provider_dir, name)
    view = wait_for(host, name, lambda _: True, what="a status", timeout_s=30.0, context=context)
    live = {node["instance_id"] for node in view["nodes"] if node["status"] in LIVE_STATUSES}
    where = f"{context}\n{describe(view)}\nRay processes: {ray_processes}\nRay nodes: {dict(ray_nodes)}"
    duplicated = {
        instance_id: dict(counts)
        for instance_id, counts in ray_processes.items()
        if any(count > 1 for count in counts.values())
    }
    assert not duplicated, f"{context}instances with more than one raylet or GCS: {duplicated}{where}"
    assert all(count == 1 for count in ray_nodes.values()), f"{context}duplicate Ray nodes{where}"
    orphans = {instance_id: all_processes[instance_id] for instance_id in set(all_processes) - live}
    assert not orphans, f"{context}processes of instances the table does not count as live: {orphans}{where}"
    for node in view["nodes"]:
        if node["status"] == "ray_running":
            assert ray_processes.get(node["instance_id"], Counter())["raylet"] == 1, f"{context}no raylet{where}"
    return view


# --------------------------------------------------------------------------------------------
# Ray drivers (tests/e2e/driver.py), outside of ClusterUnderTest
# --------------------------------------------------------------------------------------------


def start_driver(view: View, signal_dir: Path, *mode_args: str) -> Driver:
    signal_dir.mkdir(parents=True)
    log_path = signal_dir / "driver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(DRIVER_SCRIPT), view["head"]["ray_address"], str(signal_dir), *mode_args],
            env=driver_environment(view),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Driver(process, signal_dir, log_path)
