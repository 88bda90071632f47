"""Helpers of the end-to-end tests: one cluster under test behind the real HTTP API, Ray drivers in subprocesses.

Everything runs on 127.0.0.1: Azurite, the function app under the local host (`local.stack.LocalStack`) and the
cluster's Ray nodes (the local provider). Every wait is bounded and fails with the cluster's last status, so a
red test says what the autoscaler was doing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from azure.storage.queue import QueueClient

from autoscaler.settings import RECONCILE_QUEUE
from local.stack import LocalStack
from provisioning.local import CLUSTER_DIR_ENV, LocalCloudProvider, cluster_processes

POLL_S = 0.5
HTTP_TIMEOUT_S = 10.0
HEAD_START_TIMEOUT_S = 90.0
DELETE_TIMEOUT_S = 90.0
DRIVER_STOP_TIMEOUT_S = 20.0
DRIVER_SCRIPT = Path(__file__).resolve().with_name("driver.py")
EVERY_5_S = "*/5 * * * * *"  # NCRONTAB, seconds first
NEVER = "0 0 0 1 1 *"  # once a year: every tick comes from a queue message (create, wake-up, follow-up)
# A worker counts towards the cluster's size in every status but the final ones.
LIVE_STATUSES = frozenset(
    {"queued", "requested", "allocated", "ray_running", "draining", "terminating", "termination_failed"}
)
FINAL_STATUSES = frozenset({"terminated", "allocation_failed"})

View = dict[str, Any]


def describe(view: View | None, events: int = 12) -> str:
    """A few lines saying what the autoscaler sees and did: the body of every timeout message."""
    if view is None:
        return "(no status could be read)"
    lines = [f"cluster {view['name']}: {view['status']} ({view.get('status_reason', '')})"]
    for node in view["nodes"]:
        role = "head" if node["is_head"] else node["node_type"]
        error = f" error={node['last_error']}" if node.get("last_error") else ""
        lines.append(f"  {role:<10} {node['instance_id']} {node['status']}{error}")
    lines.append(f"  pending_demand: {view.get('pending_demand')}")
    lines.append(f"  infeasible: {view.get('infeasible')}")
    lines.append(f"  last decision: {view['last_decision']['reasons']}")
    lines.extend(f"  event {e['at']} {e['kind']}: {e['message']}" for e in view["events"][:events])
    return "\n".join(lines)


def workers(view: View, node_type: str | None = None, statuses: Iterable[str] = LIVE_STATUSES) -> list[View]:
    wanted = set(statuses)
    return [
        node
        for node in view["nodes"]
        if not node["is_head"] and node["status"] in wanted and (node_type is None or node["node_type"] == node_type)
    ]


def instance_ids(nodes: Iterable[View]) -> set[str]:
    return {node["instance_id"] for node in nodes}


def events(view: View, kind: str, instance_id: str = "") -> list[View]:
    return [e for e in view["events"] if e["kind"] == kind and (not instance_id or e["instance_id"] == instance_id)]


# --------------------------------------------------------------------------------------------
# Ray drivers
# --------------------------------------------------------------------------------------------


@dataclass
class Driver:
    """A driver process started by `ClusterUnderTest.driver`; files in `signal_dir` are its conversation."""

    process: subprocess.Popen[bytes]
    signal_dir: Path
    log_path: Path

    def started_tasks(self) -> list[Path]:
        return sorted(p for p in self.signal_dir.glob("started-*") if not p.name.endswith(".partial"))

    def has_written(self, name: str) -> bool:
        return (self.signal_dir / name).exists()

    def read(self, name: str) -> str:
        return (self.signal_dir / name).read_text()

    def signal(self, name: str) -> None:
        (self.signal_dir / name).touch()

    def release(self) -> None:
        self.signal("release")

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no driver log)"

    def check_alive(self) -> None:
        """A driver that died early makes every later wait pointless: fail with its output instead."""
        exit_code = self.process.poll()
        if exit_code is not None and exit_code != 0:
            raise AssertionError(f"the Ray driver exited with code {exit_code}:\n{self.log_tail()}")

    def finish(self, timeout_s: float = DRIVER_STOP_TIMEOUT_S) -> None:
        """Release the driver's work and check that it all completed (exit code 0)."""
        self.release()
        try:
            exit_code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)
            raise AssertionError(f"the Ray driver did not finish within {timeout_s:g} s:\n{self.log_tail()}") from None
        assert exit_code == 0, f"the Ray driver exited with code {exit_code}:\n{self.log_tail()}"

    def kill(self) -> None:
        """For a driver whose work can never finish (infeasible demand, a deleted cluster)."""
        self.process.kill()
        self.process.wait(DRIVER_STOP_TIMEOUT_S)

    def stop(self, timeout_s: float = DRIVER_STOP_TIMEOUT_S) -> int:
        """Let its work finish; kill it if it does not end in time. Returns its exit code."""
        self.release()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout_s)


def driver_environment(view: View) -> dict[str, str]:
    environment = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # without it the driver's tasks never reach the worker nodes
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": view["head"]["auth_token_path"],
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    environment.pop("RAY_AUTH_TOKEN", None)  # it would win over the cluster's token file
    environment.pop("RAY_ADDRESS", None)
    return environment


# --------------------------------------------------------------------------------------------
# The cluster under test
# --------------------------------------------------------------------------------------------


@dataclass
class ClusterUnderTest:
    stack: LocalStack
    name: str
    work_dir: Path  # drivers' signal folders and logs
    _drivers: int = field(default=0)

    @property
    def provider_dir(self) -> Path:
        return self.stack.data_dir / "provider"

    @property
    def provider(self) -> LocalCloudProvider:
        return LocalCloudProvider(self.provider_dir)

    # ---- the HTTP API ------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.stack.api_url}{path}", timeout=HTTP_TIMEOUT_S, **kwargs)

    def status(self) -> View:
        response = self.api("GET", f"/clusters/{self.name}")
        response.raise_for_status()
        body: View = response.json()
        return body

    def create(self, config_yaml: str) -> View:
        response = self.api("POST", "/clusters", data=config_yaml, headers={"content-type": "application/yaml"})
        assert response.status_code == 202, f"create answered {response.status_code}: {response.text}"
        return self.wait_for(
            lambda view: view["status"] == "running", what="the head to run Ray", timeout_s=HEAD_START_TIMEOUT_S
        )

    def delete(self) -> None:
        response = self.api("DELETE", f"/clusters/{self.name}")
        assert response.status_code == 202, f"delete answered {response.status_code}: {response.text}"

    def wait_for(
        self,
        predicate: Callable[[View], object],
        *,
        what: str,
        timeout_s: float,
        also_check: Callable[[], None] | None = None,
    ) -> View:
        """Poll GET /clusters/{name} until `predicate(view)` is truthy; fail with the last status after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        view: View | None = None
        while True:
            if also_check is not None:
                also_check()
            with contextlib.suppress(requests.RequestException):
                view = self.status()
                if predicate(view):
                    return view
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{describe(view)}")
            time.sleep(POLL_S)

    def hold_for(
        self,
        predicate: Callable[[View], object],
        *,
        what: str,
        duration_s: float,
        also_check: Callable[[], None] | None = None,
    ) -> View:
        """Check that `predicate(view)` stays truthy for `duration_s`; fail at the first view where it does not."""
        deadline = time.monotonic() + duration_s
        while True:
            if also_check is not None:
                also_check()
            view = self.status()
            if not predicate(view):
                raise AssertionError(f"{what} stopped holding\n{describe(view)}")
            if time.monotonic() > deadline:
                return view
            time.sleep(POLL_S)

    # ---- what the tests act on -----------------------------------------------------------------

    @contextlib.contextmanager
    def driver(self, *mode_args: str) -> Iterator[Driver]:
        """Run tests/e2e/driver.py against the cluster; it is released and stopped (killed if need be) on exit."""
        self._drivers += 1
        signal_dir = self.work_dir / f"driver-{self._drivers}"
        signal_dir.mkdir(parents=True)
        log_path = signal_dir / "driver.log"
        view = self.status()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(DRIVER_SCRIPT), view["head"]["ray_address"], str(signal_dir), *mode_args],
                env=driver_environment(view),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        driver = Driver(process, signal_dir, log_path)
        try:
            yield driver
        finally:
            driver.stop()

    def evict(self, instance_id: str) -> None:
        self.provider.evict(self.name, instance_id)

    def processes(self) -> list[int]:
        return cluster_processes(self.provider_dir, self.name)

    def head_agent_url(self) -> str:
        heads = [instance for instance in self.provider.list_instances(self.name) if instance.is_head]
        agent_urls = [head.agent_url for head in heads if head.agent_url]
        assert agent_urls, f"the head has no agent URL yet: {heads}"
        return agent_urls[0]

    def head_agent_pid(self) -> int:
        """The head agent process: the one process of this cluster running `provisioning.head.agent`."""
        marker = f"{CLUSTER_DIR_ENV}={self.provider_dir.resolve() / 'clusters' / self.name}".encode()
        found = []
        for pid in self.processes():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"provisioning.head.agent" in command and marker in environment:
                found.append(pid)
        assert len(found) == 1, f"expected one head agent process, found {found}"
        return found[0]

    def cluster_token(self) -> str:
        import function_app

        service = function_app._service()
        record = service.store.get_cluster(self.name)
        assert record is not None
        return service.deps.token_for(self.name, record.generation)

    def queue_backlog(self) -> int:
        assert self.stack.azurite is not None
        queue = QueueClient.from_connection_string(self.stack.azurite.connection_string, RECONCILE_QUEUE)
        # Azure counts invisible messages too, so a delayed follow-up still shows here.
        return queue.get_queue_properties().approximate_message_count or 0

    def wait_for_empty_queue(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        backlog = self.queue_backlog()
        while backlog:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the {RECONCILE_QUEUE} queue still holds {backlog} message(s) after {timeout_s:g} s\n"
                    f"{describe(self.status())}"
                )
            time.sleep(POLL_S)
            backlog = self.queue_backlog()

    # ---- teardown ----------------------------------------------------------------------------

    def destroy(self) -> None:
        """Delete through the API and wait; whatever that leaves, the provider kills. Never raises."""
        with contextlib.suppress(Exception):
            if self.status()["status"] not in ("deleting", "deleted"):
                self.delete()
            self.wait_for(lambda view: view["status"] == "deleted", what="deletion", timeout_s=DELETE_TIMEOUT_S)
        self.provider.destroy_cluster(self.name)


@contextlib.contextmanager
def cluster_under_test(work_dir: Path, config_yaml: str, *, name: str, schedule: str) -> Iterator[ClusterUnderTest]:
    """A fresh control plane with one running cluster; at exit, the cluster is destroyed and no process of it may
    remain, whatever happened in between."""
    data_dir = work_dir / "stack"
    stack = LocalStack(data_dir=data_dir, port=0, settings={"RECONCILE_SCHEDULE": schedule})
    try:
        stack.start()
        cluster = ClusterUnderTest(stack, name, work_dir / "drivers")
        try:
            cluster.create(config_yaml)
            yield cluster
        finally:
            cluster.destroy()
    finally:
        stack.stop()
        # The host is gone: anything still alive now was left behind by the product or by the tests.
        provider = LocalCloudProvider(data_dir / "provider")
        leftovers = cluster_processes(data_dir / "provider", name)
        if leftovers:
            provider.destroy_cluster(name)
    assert not leftovers, f"processes of cluster {name} outlived its destruction: {leftovers}"


def pause_process(pid: int) -> Callable[[], None]:
    """SIGSTOP `pid`; returns the function that resumes it (SIGCONT), safe to call more than once."""
    os.kill(pid, signal.SIGSTOP)

    def resume() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    return resume
