"""Helpers of bench/latency_local.py: the Ray driver, Ray's own autoscaling cluster on loopback, process checks.

Two entry points run as subprocesses (`python -m bench.support_latency ...`, from the repository root):

    driver --address HOST:PORT --barrier-dir DIR [--tasks 3] [--timeout-s 120]
        connects to the cluster, prints `demand_at` (time.time()) right before submitting the tasks, waits for them
        and prints one JSON line: {"demand_at", "task_started_at": [...], "worker_nodes_started_at": [...]}.
    ray-head --state-dir DIR
        starts a Ray head with Ray's own autoscaler (monitor) driving the fake multi-node provider, the way
        `ray.cluster_utils.AutoscalingCluster.start` does, writes `ready.json` once the autoscaler has reported,
        and stops its node on SIGTERM.

Each task of 1 CPU records time.time() as it starts, then holds its CPU until all tasks have started (a barrier of
files in a folder every process on this machine sees). So a 1-CPU node can never run two of them one after the
other: every task needs a node of its own, and the run ends as soon as the last one starts.

Why not AutoscalingCluster itself: its `start` runs `ray stop --force` (killing every Ray process of this user,
other clusters included) and `ray start --head` (which binds the machine's address unless told otherwise); the
wheel also lacks the `example.yaml` it reads. `RayAutoscalingCluster` below starts the same head through Ray's node
API instead, with the same environment (RAY_FAKE_CLUSTER=1, AUTOSCALER_UPDATE_INTERVAL_S=1, the fixed fake head
node id) and a config written here after that example.yaml; every port of the head is chosen on 127.0.0.1. The
fake provider starts its worker nodes itself, inside the monitor process; with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
they take 127.0.0.1 as their address (`non_loopback_listeners` checks what they bind).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS = 3
WORKER_CPUS = 1
MAX_WORKERS = 3
# Both sides give every node the same small object store: several nodes share this machine's memory.
OBJECT_STORE_MEMORY_BYTES = 128 * 1024 * 1024
# The environment marker every process of a bench-started Ray cluster inherits, so stragglers are found by it.
MARKER_ENV = "LATENCY_BENCH_RAY_MARKER"
RAY_HEAD_READY_TIMEOUT_S = 90.0
RAY_HEAD_STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0
# Ray's fake multi-node provider names the head node with this id, and the monitor matches it (use_node_id_as_ip).
FAKE_HEAD_NODE_TYPE = "ray.head.default"
FAKE_WORKER_NODE_TYPE = "ray.worker.cpu"
HEAD_PORT_NAMES = (
    "gcs_server_port",
    "dashboard_port",
    "node_manager_port",
    "object_manager_port",
    "metrics_agent_port",
    "metrics_export_port",
    "dashboard_agent_listen_port",
    "runtime_env_agent_port",
)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverResult:
    """What one workload run saw, all in epoch seconds (time.time() of this machine)."""

    demand_at: float
    task_started_at: tuple[float, ...]
    worker_nodes_started_at: tuple[float, ...]  # GCS start times of the worker nodes alive at the end

    @property
    def demand_to_running_s(self) -> float:
        return max(self.task_started_at) - self.demand_at

    @property
    def demand_to_first_task_s(self) -> float:
        return min(self.task_started_at) - self.demand_at

    @property
    def demand_to_first_node_s(self) -> float | None:
        if not self.worker_nodes_started_at:
            return None
        return min(self.worker_nodes_started_at) - self.demand_at


class DriverFailedError(RuntimeError):
    pass


def run_driver(
    address: str, environment: Mapping[str, str], *, tasks: int = TASKS, timeout_s: float = 120.0
) -> DriverResult:
    """Run the driver subprocess against `address` and parse its last line."""
    with tempfile.TemporaryDirectory(prefix="latency-barrier-") as barrier_dir:
        command = [
            sys.executable,
            "-m",
            "bench.support_latency",
            "driver",
            "--address",
            address,
            "--barrier-dir",
            barrier_dir,
            "--tasks",
            str(tasks),
            "--timeout-s",
            repr(timeout_s),
        ]
        try:
            finished = subprocess.run(
                command,
                env=dict(environment),
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=timeout_s + 60,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise DriverFailedError(f"the driver did not finish within {timeout_s + 60:.0f} s") from error
    if finished.returncode != 0:
        raise DriverFailedError(f"the driver exited with {finished.returncode}: {finished.stderr[-2000:]}")
    return parse_driver_output(finished.stdout)


def parse_driver_output(stdout: str) -> DriverResult:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise DriverFailedError(f"the driver printed no result: {stdout[-2000:]!r}")
    content = json.loads(lines[-1])
    return DriverResult(
        demand_at=float(content["demand_at"]),
        task_started_at=tuple(float(t) for t in content["task_started_at"]),
        worker_nodes_started_at=tuple(float(t) for t in content["worker_nodes_started_at"]),
    )


def _driver_main(args: argparse.Namespace) -> int:
    import logging

    import ray

    @ray.remote(num_cpus=WORKER_CPUS)
    def hold_cpu_until_all_started(barrier_dir: str, index: int, tasks: int, timeout_s: float) -> float:
        started_at = time.time()
        Path(barrier_dir, f"started-{index}").write_text(repr(started_at))
        deadline = time.monotonic() + timeout_s
        while len(list(Path(barrier_dir).glob("started-*"))) < tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return started_at

    ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
    demand_at = time.time()
    print(f"demand_at {demand_at}", flush=True)
    refs = [
        hold_cpu_until_all_started.remote(args.barrier_dir, index, args.tasks, args.timeout_s)
        for index in range(args.tasks)
    ]
    task_started_at = ray.get(refs, timeout=args.timeout_s)
    if len(list(Path(args.barrier_dir).glob("started-*"))) < args.tasks:
        print(f"not every task started within {args.timeout_s:g} s", file=sys.stderr)
        return 1
    worker_nodes_started_at = _alive_worker_node_start_times()
    ray.shutdown()
    print(
        json.dumps(
            {
                "demand_at": demand_at,
                "task_started_at": task_started_at,
                "worker_nodes_started_at": worker_nodes_started_at,
            }
        ),
        flush=True,
    )
    return 0


def _alive_worker_node_start_times() -> list[float]:
    """When each live worker node registered with the GCS (its `start_time_ms`)."""
    import importlib

    import ray._private.worker

    # Neither has type stubs: the generated protobuf module, and the worker's GCS client attribute.
    gcs_pb2: Any = importlib.import_module("ray.core.generated.gcs_pb2")
    worker: Any = ray._private.worker.global_worker
    alive = gcs_pb2.GcsNodeInfo.GcsNodeState.Value("ALIVE")
    infos = worker.gcs_client.get_all_node_info(timeout=10).values()
    return sorted(info.start_time_ms / 1000.0 for info in infos if info.state == alive and not info.is_head_node)


# --------------------------------------------------------------------------------------------
# Ray's own autoscaler on loopback
# --------------------------------------------------------------------------------------------


def fake_autoscaling_config(gcs_address: str) -> dict[str, Any]:
    """The fake multi-node example.yaml of Ray's repository, with our workload's shape (absent from the wheel).

    Head: 0 CPUs; one worker type of 1 CPU, 0..3 nodes, the same object store as our local nodes.
    """
    return {
        "cluster_name": "latency-bench-ray",
        "max_workers": MAX_WORKERS,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            # Without it the fake provider points its nodes at <node ip>:6379, the default port.
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            FAKE_HEAD_NODE_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            FAKE_WORKER_NODE_TYPE: {
                "resources": {"CPU": WORKER_CPUS, "object_store_memory": OBJECT_STORE_MEMORY_BYTES},
                "node_config": {},
                "min_workers": 0,
                "max_workers": MAX_WORKERS,
            },
        },
        "head_node_type": FAKE_HEAD_NODE_TYPE,
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


def ray_cluster_environment(marker: str) -> dict[str, str]:
    """The head's environment, inherited by its monitor and by the worker nodes the fake provider starts there."""
    environment = {
        name: value
        for name, value in os.environ.items()
        # Nothing of a driver's or of our control plane's Ray settings may leak into Ray's own cluster.
        if not name.startswith(("RAY_", "AUTOSCALER_"))
    }
    environment.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            # What AutoscalingCluster.start sets: the fake provider refuses to run without the first, and the
            # second makes the monitor look every second (Ray's default is 5 s).
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            MARKER_ENV: marker,
        }
    )
    return environment


class RayClusterFailedError(RuntimeError):
    pass


class RayAutoscalingCluster:
    """One Ray cluster under Ray's own autoscaler: `with RayAutoscalingCluster() as cluster: cluster.gcs_address`."""

    def __init__(self) -> None:
        self.marker = secrets.token_hex(8)
        self.state_dir = Path(tempfile.mkdtemp(prefix="lbr-"))  # short: Ray's unix sockets live below it
        self.gcs_address = ""
        self._launcher: subprocess.Popen[bytes] | None = None

    def start(self) -> RayAutoscalingCluster:
        log = (self.state_dir / "head.log").open("ab")
        with log:
            self._launcher = subprocess.Popen(
                [sys.executable, "-m", "bench.support_latency", "ray-head", "--state-dir", str(self.state_dir)],
                env=ray_cluster_environment(self.marker),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the whole cluster, worker nodes included
            )
        ready_path = self.state_dir / "ready.json"
        deadline = time.monotonic() + RAY_HEAD_READY_TIMEOUT_S
        while not ready_path.exists():
            if self._launcher.poll() is not None:
                raise RayClusterFailedError(f"the Ray head exited early; see {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RayClusterFailedError(f"the Ray head was not ready in {RAY_HEAD_READY_TIMEOUT_S:g} s")
            time.sleep(0.1)
        self.gcs_address = json.loads(ready_path.read_text())["gcs_address"]
        return self

    def pids(self) -> list[int]:
        """Every live process of this cluster (its process group, or marked by its environment)."""
        group = {self._launcher.pid} if self._launcher is not None else set()
        return sorted(set(process_group_members(group)) | set(marked_processes(MARKER_ENV, self.marker)))

    def stop(self) -> list[int]:
        """SIGTERM the head's launcher, SIGKILL whatever remains; returns the pids that still live (should be [])."""
        if self._launcher is not None:
            if self._launcher.poll() is None:
                self._launcher.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._launcher.wait(RAY_HEAD_STOP_GRACE_S)
            # The fake provider's worker nodes are no children the head stops: they go with the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._launcher.pid, signal.SIGKILL)
            if self._launcher.poll() is None:
                self._launcher.wait(KILL_WAIT_S)
        kill_and_wait(self.pids())
        remaining = self.pids()
        if not remaining:
            import shutil

            shutil.rmtree(self.state_dir, ignore_errors=True)
        return remaining

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return (self.state_dir / "head.log").read_text(errors="replace")[-characters:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> RayAutoscalingCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        remaining = self.stop()
        if remaining:
            raise RayClusterFailedError(f"Ray processes outlived the cluster: {remaining}")


def _ray_head_main(args: argparse.Namespace) -> int:
    import ray._private.node
    import ray._private.parameter
    from ray._private import ray_constants
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop_requested.set())
    state_dir = Path(args.state_dir)
    ports = free_loopback_ports(HEAD_PORT_NAMES)
    gcs_address = f"{LOOPBACK}:{ports['gcs_server_port']}"
    config_path = state_dir / "autoscaling-config.json"
    config_path.write_text(json.dumps(fake_autoscaling_config(gcs_address)))
    settings: dict[str, Any] = dict(
        ports,
        node_ip_address=LOOPBACK,
        num_cpus=0,
        object_store_memory=OBJECT_STORE_MEMORY_BYTES,
        temp_dir=str(state_dir / "ray"),
        autoscaling_config=str(config_path),
        include_dashboard=True,
        dashboard_host=LOOPBACK,
        min_worker_port=0,
        max_worker_port=0,
        # `ray start --head` gives the head this id when RAY_FAKE_CLUSTER is set; the fake provider expects it.
        env_vars={"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID},
    )
    params = ray._private.parameter.RayParams(**settings)
    node = ray._private.node.Node(params, head=True, shutdown_at_exit=False, spawn_reaper=True)
    try:
        # Demand sent before the monitor's first round would count its start-up against Ray: wait for its report.
        gcs_client = node.get_gcs_client()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + RAY_HEAD_READY_TIMEOUT_S
        while not gcs_client.internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS.encode(), None):
            if time.monotonic() > deadline or stop_requested.wait(0.1):
                print("the autoscaler never reported its status", flush=True)
                return 1
        ready_path = state_dir / "ready.json"
        ready_path.with_suffix(".partial").write_text(json.dumps({"gcs_address": node.gcs_address}))
        ready_path.with_suffix(".partial").replace(ready_path)
        print(f"Ray head ready at {node.gcs_address}", flush=True)
        stop_requested.wait()
    finally:
        node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
    return 0


# --------------------------------------------------------------------------------------------
# Processes and sockets (/proc, Linux)
# --------------------------------------------------------------------------------------------


def free_loopback_ports(names: Sequence[str]) -> dict[str, int]:
    """Distinct ports free on 127.0.0.1 now (every socket stays open until all are chosen)."""
    sockets: dict[str, socket.socket] = {}
    try:
        for name in names:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets[name] = sock
        return {name: sock.getsockname()[1] for name, sock in sockets.items()}
    finally:
        for sock in sockets.values():
            sock.close()


def _live_pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def _stat_after_name(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _is_running(stat: Sequence[str] | None) -> bool:
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited already


def process_group_members(group_ids: Iterable[int]) -> list[int]:
    wanted = set(group_ids)
    members = []
    for pid in _live_pids():
        stat = _stat_after_name(pid)
        if _is_running(stat) and stat is not None and int(stat[2]) in wanted:
            members.append(pid)
    return members


def marked_processes(name: str, value: str) -> list[int]:
    """Live processes whose environment holds name=value."""
    wanted = f"{name}={value}".encode()
    marked = []
    for pid in _live_pids():
        if pid == os.getpid():
            continue
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environment and _is_running(_stat_after_name(pid)):
            marked.append(pid)
    return marked


def kill_and_wait(pids: Iterable[int]) -> None:
    pending = list(pids)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if _is_running(_stat_after_name(pid))]
        time.sleep(0.05)


def non_loopback_listeners(pids: Iterable[int]) -> list[str]:
    """`pid address:port` for every TCP listener or bound UDP socket of these processes outside 127.0.0.0/8 and ::1."""
    inode_owner: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for entry in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(entry.path)
                    if target.startswith("socket:["):
                        inode_owner[target[8:-1]] = pid
    found = []
    for table, listening_only in (("tcp", True), ("tcp6", True), ("udp", False), ("udp6", False)):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_address, state, inode = fields[1], fields[3], fields[9]
            if inode not in inode_owner or (listening_only and state != "0A"):  # 0A: TCP_LISTEN
                continue
            host, port = _decode_proc_address(local_address)
            if not _is_loopback(host):
                found.append(f"{inode_owner[inode]} {host}:{port}")
    return sorted(found)


def _decode_proc_address(hex_address: str) -> tuple[str, int]:
    """/proc/net/tcp writes addresses as little-endian 32-bit words in hex, then the port."""
    hex_host, hex_port = hex_address.split(":")
    words = [bytes.fromhex(hex_host[i : i + 8])[::-1] for i in range(0, len(hex_host), 8)]
    packed = b"".join(words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed), int(hex_port, 16)


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1") or host.startswith("::ffff:127.")


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.support_latency", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    driver = commands.add_parser("driver", help="submit the workload and print its timings")
    driver.add_argument("--address", required=True)
    driver.add_argument("--barrier-dir", required=True)
    driver.add_argument("--tasks", type=int, default=TASKS)
    driver.add_argument("--timeout-s", type=float, default=120.0)
    head = commands.add_parser("ray-head", help="a Ray head with Ray's own autoscaler and the fake provider")
    head.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "driver":
        return _driver_main(args)
    return _ray_head_main(args)


if __name__ == "__main__":
    sys.exit(main())
