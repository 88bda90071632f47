"""The launcher behind one local instance: `python -m provisioning.local_node ...`.

`LocalCloudProvider.launch` starts this process in a session of its own, so it leads a process group that holds
every process of the node (Ray's processes stay in their parent's group, and its reaper and kernel fate-sharing
take them down if the launcher dies). The launcher plays the part of a VM:

1. waits `--launch-delay-s` (simulated provisioning; the instance is PENDING meanwhile),
2. starts one Ray node on 127.0.0.1 through Ray's node API, as `ray.cluster_utils.Cluster.add_node` does,
   because `ray start` refuses a multi-node cluster on loopback; a head also gets the head agent,
3. writes the node's endpoints to `<instance id>.endpoints.json` (the provider reports RUNNING from then on),
   or the error to `<instance id>.failed.json`,
4. serves the node's Scheduled Events on a loopback port (provisioning/local_events.py) and runs the preempt watch
   that cloud-init installs on every Azure VM (provisioning/head/preempt_watch.py) against it and the head agent,
5. stays alive until SIGTERM, then stops its node's processes and exits. If the node dies under it (its raylet,
   GCS or head agent exits), it stops the rest too, so the instance disappears like a crashed VM. Once an eviction
   notice (`LocalCloudProvider.evict(..., notice_s=N)`) is due, acknowledged by the watch or past its NotBefore,
   every process of the node is killed at once, itself included, as an evicted VM goes.

Its instance file (`<instance id>.json`, written by the provider before this process starts) is its lease: once it
is gone (the instance was forgotten, or its cluster folder removed), the launcher starts nothing, or stops its node,
rather than live on as a node nobody knows.

Ray's settings come from the environment the provider gives this process (token auth, instance id, node type);
the launcher never sees the cluster token itself, only the path of the file holding it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import ray._private.node
import ray._private.parameter
from ray._private import ray_constants

from provisioning.local_events import UTC, ScheduledEventsServer, eviction_due

LOOPBACK = "127.0.0.1"
DEFAULT_OBJECT_STORE_MEMORY_BYTES = 128 * 1024 * 1024  # small: several nodes share this machine's memory
MAX_UNIX_SOCKET_PATH_BYTES = 107  # sun_path holds 108 bytes, one of them the terminating NUL
AGENT_READY_TIMEOUT_S = 60.0
NODE_WATCH_INTERVAL_S = 1.0
AGENT_STOP_GRACE_S = 5.0
PREEMPT_WATCH_MODULE = "provisioning.head.preempt_watch"
PREEMPT_WATCH_POLL_S = 0.25
# Every process of one launch carries this marker (LocalCloudProvider puts it in the launcher's environment).
LAUNCH_ID_ENV = "RAY_LOCAL_LAUNCH_ID"
# Without these the node is no node: the launcher then stops the rest, as a crashed VM would go away.
VITAL_PROCESS_TYPES = (ray_constants.PROCESS_TYPE_RAYLET, ray_constants.PROCESS_TYPE_GCS_SERVER)
# Every port a node listens on, chosen up front so that none is left to Ray's defaults (some bind all addresses).
PORT_NAMES = (
    "node_manager_port",
    "object_manager_port",
    "metrics_agent_port",
    "metrics_export_port",
    "dashboard_agent_listen_port",
    "runtime_env_agent_port",
    "gcs_server_port",
    "dashboard_port",
    "agent_port",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    instance_dir = Path(args.instance_dir)
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop_requested.set())

    record_path = instance_dir / f"{args.instance_id}.json"
    delay_ends = time.monotonic() + args.launch_delay_s
    while (remaining_s := delay_ends - time.monotonic()) > 0:
        if stop_requested.wait(min(remaining_s, NODE_WATCH_INTERVAL_S)):
            return 0  # terminated while still "provisioning": nothing was started
        if not record_path.exists():
            print(f"{record_path} is gone (the instance was forgotten): nothing to start", flush=True)
            return 0

    node: ray._private.node.Node | None = None
    agent: subprocess.Popen[bytes] | None = None
    scheduled_events = ScheduledEventsServer(instance_dir, args.instance_id)
    scheduled_events.start()
    watch: subprocess.Popen[bytes] | None = None
    try:
        ports = _free_loopback_ports(PORT_NAMES)
        node = _start_ray_node(args, ports)
        endpoints = _node_endpoints(node, is_head=args.head)
        agent_url = args.head_agent_url
        if args.head:
            agent = _start_head_agent(args, node.gcs_address, ports["agent_port"])
            endpoints["agent_port"] = ports["agent_port"]
            agent_url = f"http://{LOOPBACK}:{ports['agent_port']}"
        watch = _start_preempt_watch(args, scheduled_events.url, agent_url)
        _write_json_atomically(instance_dir / f"{args.instance_id}.endpoints.json", endpoints)
    except Exception as error:
        _write_json_atomically(
            instance_dir / f"{args.instance_id}.failed.json",
            {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()},
        )
        scheduled_events.stop()
        _stop(node, agent, watch)
        return 1

    while not stop_requested.wait(NODE_WATCH_INTERVAL_S):
        if eviction_due(scheduled_events.notice(), scheduled_events.acknowledged.is_set(), datetime.now(UTC)):
            acknowledged = scheduled_events.acknowledged.is_set()
            print(f"evicted ({'event acknowledged' if acknowledged else 'NotBefore passed'})", flush=True)
            _vanish()
        # A VM given notice stays up until it is evicted, whatever Ray does meanwhile (a drained node ends its raylet
        # once idle): the watch must still acknowledge the event.
        given_notice = scheduled_events.notice() is not None
        stopped_because = _why_the_node_stops(node, agent if not given_notice else None, record_path, given_notice)
        if stopped_because:
            print(stopped_because, flush=True)
            break
    scheduled_events.stop()
    _stop(node, agent, watch)
    return 0


def _why_the_node_stops(
    node: ray._private.node.Node, agent: subprocess.Popen[bytes] | None, record_path: Path, given_notice: bool
) -> str | None:
    dead = [
        process_type
        for process_type, _ in node.dead_processes()  # type: ignore[no-untyped-call]
        if process_type in VITAL_PROCESS_TYPES and not given_notice
    ]
    agent_exit_code = agent.poll() if agent is not None else None
    if dead or agent_exit_code is not None:
        return f"node stopped by itself (dead: {dead}, agent exit code: {agent_exit_code})"
    if not record_path.exists():
        # Nobody knows this instance any more (its cluster folder was removed under it): it must not live on.
        return f"{record_path} is gone (the instance was forgotten): stopping the node"
    return None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m provisioning.local_node", description=__doc__)
    parser.add_argument("--instance-dir", required=True, help="folder of the cluster's instance files")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--head", action="store_true", help="start a head node (GCS, dashboard, head agent)")
    parser.add_argument("--head-address", default="", help="GCS host:port of the head; required for workers")
    parser.add_argument("--resources-json", default="{}", help='the node type\'s resources, e.g. {"CPU": 2}')
    parser.add_argument("--labels-json", default="{}", help='the node type\'s labels, e.g. {"zone": "a"}')
    parser.add_argument("--launch-delay-s", type=float, default=0.0)
    parser.add_argument("--ray-temp-dir", required=True, help="Ray's temp folder (short: it holds unix sockets)")
    parser.add_argument("--token-file", required=True, help="the 0600 file holding the cluster token")
    parser.add_argument("--control-plane-url", default="")
    parser.add_argument("--head-agent-url", default="", help="the head agent, for a worker's preempt watch")
    parser.add_argument("--preempt-ack-margin-s", type=float, default=5.0, help="the preempt watch's --ack-margin-s")
    args = parser.parse_args(argv)
    if not args.head and not args.head_address:
        parser.error("a worker needs --head-address")
    return args


def _free_loopback_ports(names: Sequence[str]) -> dict[str, int]:
    """Ports free on 127.0.0.1 now; every socket stays open until all are chosen, so the ports differ."""
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


def _ray_params(
    args: argparse.Namespace, ports: Mapping[str, int], sockets_dir: Path
) -> ray._private.parameter.RayParams:
    """Every port Ray opens is given explicitly, on 127.0.0.1, so nothing listens beyond loopback."""
    resources = dict(json.loads(args.resources_json))
    num_cpus = resources.pop("CPU", 0)
    num_gpus = resources.pop("GPU", 0)
    memory_bytes = resources.pop("memory", None)
    object_store_memory_bytes = resources.pop("object_store_memory", DEFAULT_OBJECT_STORE_MEMORY_BYTES)
    params: dict[str, Any] = {
        "node_ip_address": LOOPBACK,
        "num_cpus": _whole_if_integral(num_cpus),
        "num_gpus": _whole_if_integral(num_gpus),
        "resources": resources,
        # The node type's labels, so that Ray places label-selector demand on this node.
        "labels": dict(json.loads(args.labels_json)),
        "object_store_memory": int(object_store_memory_bytes),
        "temp_dir": args.ray_temp_dir,
        "node_manager_port": ports["node_manager_port"],
        "object_manager_port": ports["object_manager_port"],
        "metrics_agent_port": ports["metrics_agent_port"],
        "metrics_export_port": ports["metrics_export_port"],
        "dashboard_agent_listen_port": ports["dashboard_agent_listen_port"],
        "runtime_env_agent_port": ports["runtime_env_agent_port"],
        # Worker processes take ports from the OS, on the node's (loopback) address.
        "min_worker_port": 0,
        "max_worker_port": 0,
        "dashboard_host": LOOPBACK,
        **_socket_paths(sockets_dir, args.instance_id),
    }
    if memory_bytes is not None:
        params["memory"] = int(memory_bytes)
    if args.head:
        params.update(
            gcs_server_port=ports["gcs_server_port"], include_dashboard=True, dashboard_port=ports["dashboard_port"]
        )
    else:
        # One log monitor per session folder is enough: the head's already forwards every node's logs to drivers.
        params.update(gcs_address=args.head_address, include_log_monitor=False)
    return ray._private.parameter.RayParams(**params)


def _whole_if_integral(amount: float) -> float | int:
    return int(amount) if float(amount).is_integer() else amount


def _start_ray_node(args: argparse.Namespace, ports: Mapping[str, int]) -> ray._private.node.Node:
    """Start the node, concurrently with the cluster's other nodes.

    Nodes of a cluster share one Ray session folder, where Ray would name each node's sockets by taking the next
    free suffix (raylet.1, raylet.2...): two nodes starting at once picked the same socket and one failed. Each
    node's sockets are therefore named after its instance, so no start waits for another.
    """
    sockets_dir = Path(args.ray_temp_dir) / "sockets"
    sockets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return ray._private.node.Node(
        _ray_params(args, ports, sockets_dir),
        head=args.head,
        # The launcher stops the node itself on SIGTERM; Ray's reaper covers a launcher killed outright.
        shutdown_at_exit=False,
        spawn_reaper=True,
    )


def _socket_paths(sockets_dir: Path, instance_id: str) -> dict[str, str]:
    """Per-instance socket paths, short whatever the instance id (a unix socket path has at most 107 bytes)."""
    instance_tag = hashlib.sha256(instance_id.encode()).hexdigest()[:16]
    paths = {
        "plasma_store_socket_name": str(sockets_dir / f"{instance_tag}.plasma"),
        "raylet_socket_name": str(sockets_dir / f"{instance_tag}.raylet"),
    }
    too_long = [path for path in paths.values() if len(os.fsencode(path)) > MAX_UNIX_SOCKET_PATH_BYTES]
    if too_long:
        raise ValueError(f"unix socket paths longer than {MAX_UNIX_SOCKET_PATH_BYTES} bytes: {too_long}")
    return paths


def _node_endpoints(node: ray._private.node.Node, *, is_head: bool) -> dict[str, Any]:
    endpoints: dict[str, Any] = {
        "ray_node_id": node.node_id,
        "node_manager_port": node.node_manager_port,
        "metrics_agent_port": node.metrics_agent_port,
        "metrics_export_port": node.metrics_export_port,
        "dashboard_agent_listen_port": node.dashboard_agent_listen_port,
        "runtime_env_agent_port": node.runtime_env_agent_port,
        "session_dir": node.get_session_dir_path(),  # type: ignore[no-untyped-call]
        "ray_started_at": time.time(),
    }
    if is_head:
        gcs_port = node.gcs_address.rpartition(":")[2]
        endpoints["gcs_port"] = int(gcs_port)
        dashboard_url = node.webui_url or ""
        endpoints["dashboard_port"] = int(dashboard_url.rpartition(":")[2]) if dashboard_url else 0
    return endpoints


def _start_head_agent(args: argparse.Namespace, gcs_address: str, agent_port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "provisioning.head.agent",
        "--gcs-address",
        gcs_address,
        "--host",
        LOOPBACK,
        "--port",
        str(agent_port),
        "--cluster-name",
        args.cluster_name,
        "--token-file",
        args.token_file,
    ]
    if args.control_plane_url:
        command += ["--control-plane-url", args.control_plane_url]
    # Output goes to the launcher's own log; the agent stays in the launcher's process group.
    agent = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    _wait_for_agent(agent, f"http://{LOOPBACK}:{agent_port}/v1/healthz")
    return agent


def _start_preempt_watch(
    args: argparse.Namespace, scheduled_events_url: str, agent_url: str
) -> subprocess.Popen[bytes] | None:
    """The preempt watch Azure VMs run (cloud-init), here against the node's loopback Scheduled Events."""
    if not agent_url:
        print("no head agent URL: this node runs no preempt watch", flush=True)
        return None
    command = [
        sys.executable,
        "-m",
        PREEMPT_WATCH_MODULE,
        "--scheduled-events-url",
        scheduled_events_url,
        "--vm-name",
        args.instance_id,  # a local VM is named after its instance
        "--instance-id",
        args.instance_id,
        "--agent-url",
        agent_url,
        "--token-file",
        args.token_file,
        "--poll-interval-s",
        str(PREEMPT_WATCH_POLL_S),
        "--ack-margin-s",
        str(args.preempt_ack_margin_s),
    ]
    # In the launcher's process group and log, like the head agent.
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def _vanish() -> None:
    """An evicted VM stops at once: SIGKILL every process of this launch (Ray's workers included, whatever their
    process group), then the launcher's own group, which holds this process."""
    marker = f"{LAUNCH_ID_ENV}={os.environ.get(LAUNCH_ID_ENV, '')}".encode()
    if os.environ.get(LAUNCH_ID_ENV):
        for pid in _processes_with_environment(marker):
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _processes_with_environment(entry: bytes) -> list[int]:
    found = []
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            if entry in (process / "environ").read_bytes().split(b"\0"):
                found.append(int(process.name))
        except OSError:
            continue  # gone, or another user's
    return found


def _wait_for_agent(agent: subprocess.Popen[bytes], healthz_url: str) -> None:
    deadline = time.monotonic() + AGENT_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        exit_code = agent.poll()
        if exit_code is not None:
            raise RuntimeError(f"the head agent exited with code {exit_code} before answering {healthz_url}")
        try:
            with urllib.request.urlopen(healthz_url, timeout=2.0) as response:  # noqa: S310 (our loopback URL)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the head agent did not answer {healthz_url} within {AGENT_READY_TIMEOUT_S:g} s")


def _stop(
    node: ray._private.node.Node | None,
    agent: subprocess.Popen[bytes] | None,
    watch: subprocess.Popen[bytes] | None = None,
) -> None:
    for helper in (watch, agent):
        if helper is not None and helper.poll() is None:
            helper.terminate()
            try:
                helper.wait(AGENT_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
    if node is not None:
        # The raylet first, gracefully, so it stops its workers; then GCS, dashboard and the rest.
        node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
    _kill_rest_of_process_group()


def _kill_rest_of_process_group() -> None:
    """Whatever of the node is still in the launcher's group (a worker the raylet left behind) goes now."""
    own_pid = os.getpid()
    own_group = os.getpgrp()
    for pid in _process_group_members(own_group):
        if pid != own_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _process_group_members(process_group_id: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields_after_name = stat.rpartition(")")[2].split()
        if int(fields_after_name[2]) == process_group_id:
            members.append(int(entry.name))
    return members


def _write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    """Temp file, fsync, rename, fsync of the folder: a reader (the provider) never sees half a file."""
    partial_path = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial_path.open("wb") as partial_file:
        partial_file.write(json.dumps(content, indent=2, sort_keys=True).encode())
        partial_file.flush()
        os.fsync(partial_file.fileno())
    os.replace(partial_path, path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


if __name__ == "__main__":
    sys.exit(main())
