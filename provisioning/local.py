"""`LocalCloudProvider`: instances are real Ray nodes running as processes on this machine, on 127.0.0.1 only.

Each instance is one launcher process (`python -m provisioning.local_node`, see that module) that leads its own
process group; every Ray process of the node stays in that group, so signalling the group stops exactly that node.
What a cloud would remember lives on disk, so a restarted local host lists the same instances:

    <data_dir>/clusters/<cluster name>/
        auth_token                     the cluster token, 0600 (RAY_AUTH_TOKEN_PATH of every node and local driver)
        instances/<instance id>.json   written by `launch` BEFORE the launcher starts (request id, node type, launch
                                       id), then again with the launcher's pid and start time
        instances/<id>.endpoints.json  written by the launcher once Ray is up: ports, Ray node id
        instances/<id>.failed.json     written by the launcher when the node could not start
        instances/<id>.preempt.json    a spot eviction notice, written by `evict(..., notice_s=N)` and served to the
                                       node as Azure's Scheduled Events (provisioning/local_events.py)
        logs/<instance id>.log         the launcher's output

Ray's own temp folder (sessions, logs, unix sockets) is a short path under the system temp folder, because unix
socket paths are limited to about 100 bytes and a data folder can be deep.

Every process of a cluster also carries `RAY_LOCAL_CLUSTER_DIR=<cluster folder>` in its environment, so whatever
escaped its group (or a launcher started just before the local host crashed) is still found and killed by
`destroy_cluster`, and `cluster_processes` can prove that nothing is left.

A launch survives a crash of the host at any point (kill -9 included): the instance file is written (temp file,
fsync, rename, fsync of the folder) before the launcher starts, and every launcher carries its launch id in its
environment (RAY_LOCAL_LAUNCH_ID). A restarted host that launches the same instance again either finds the launcher
that is already running (its pid, start time, command line and launch id all match) and adopts it, or starts it if
it never started; it never starts a second one.

Linux only: liveness and the environment marker are read from /proc.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoscaler.model import CloudInstance, CloudState, LaunchRequest
from provisioning.cloud import DestroyReport, InvalidRequestError, NotFoundError
from provisioning.local_events import PreemptNotice, notice_path, write_notice

LOOPBACK = "127.0.0.1"
CLUSTER_DIR_ENV = "RAY_LOCAL_CLUSTER_DIR"
LAUNCH_ID_ENV = "RAY_LOCAL_LAUNCH_ID"  # ties a launcher (and every process of its node) to one instance file
LAUNCHER_MODULE = "provisioning.local_node"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Names become file and folder names: no separators, no leading dot; an instance id has no dot at all, because
# its files are told apart by their suffixes (<id>.json, <id>.endpoints.json...).
_SAFE_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SAFE_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_NOT_FOR_NODES = frozenset({"RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_NODE_TYPE_NAME", "CLUSTER_TOKEN_KEY"})
_NOT_FOR_NODES_PREFIXES = ("RAY_LOCAL_", "AzureWebJobs", "AZURE_")
_POLL_INTERVAL_S = 0.05
_KILL_WAIT_S = 5.0  # how long a SIGKILLed group may take to vanish from /proc
MAX_NOTICE_S = 3600.0

__all__ = ["LocalCloudProvider", "cluster_processes"]


class LocalCloudProvider:
    """A `CloudProvider` whose instances are Ray nodes on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        launch_delay_s: float = 0.0,
        python_executable: str = sys.executable,
        control_plane_url: str = "",
        terminate_grace_s: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.launch_delay_s = launch_delay_s
        self.python_executable = python_executable
        self.control_plane_url = control_plane_url
        self.terminate_grace_s = terminate_grace_s
        # Launchers started by this object, kept only to reap them once they exit (no zombies in a long-lived host).
        self._launchers: dict[int, subprocess.Popen[bytes]] = {}
        self._launchers_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------
    # CloudProvider
    # ----------------------------------------------------------------------------------------

    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        """Every instance of the cluster whose process group lives, plus those whose node failed to start.

        An instance whose processes are gone without a failure report (evicted, crashed) is not listed, as a
        deleted spot VM is not.
        """
        self._reap_launchers()
        layout = _ClusterLayout(self.data_dir, _checked_cluster_name(cluster_name))
        processes = _ProcessTable.read()
        instances = []
        for recorded in layout.records():
            # An instance file without a pid: a launch in progress, or one cut short by a crash of the host.
            record = recorded if recorded.launcher_pid else _find_launcher(layout, recorded)
            if record is None:
                continue  # its launcher never started: nothing runs (the next launch of it starts it)
            instance = _observe(layout, record, processes)
            if instance is not None:
                instances.append(instance)
        return sorted(instances, key=lambda instance: instance.instance_id)

    def launch(self, request: LaunchRequest) -> None:
        """Start the instance's launcher and return; the node comes up (after the launch delay) in the background.

        Idempotent: an instance with the same instance id or request id that was launched before is left alone,
        whether its node still runs or not (a launch that ran is never run twice). The instance file is on disk
        before the launcher starts, so a crash between the two steps is finished by the next launch: it adopts the
        launcher if one started, and starts it otherwise.
        """
        layout = _ClusterLayout(self.data_dir, _checked_cluster_name(request.cluster_name))
        _checked_instance_id(request.instance_id)
        if not request.is_head and not request.head_address:
            raise InvalidRequestError("a worker instance needs the head's address (head_address)", code="NoHead")
        resources_json = _resources_json(request.resources)
        if not request.cluster_token:
            raise InvalidRequestError("the cluster token is empty", code="NoToken")

        layout.create()
        with layout.locked():
            existing = next(
                (
                    record
                    for record in layout.records()
                    if record.instance_id == request.instance_id or record.request_id == request.request_id
                ),
                None,
            )
            if existing is not None:
                if existing.launcher_pid or existing.instance_id != request.instance_id:
                    return  # launched: its launcher runs (nothing to do) or is gone (list_instances says so)
                # The instance file was written but not the launcher's pid: the launcher may have started or not.
                found = _find_launcher(layout, existing)
                if found is not None:
                    _write_json_atomically(layout.record_path(existing.instance_id), found.to_json())
                    return
                record = existing
            else:
                record = _InstanceRecord(
                    instance_id=request.instance_id,
                    cluster_name=request.cluster_name,
                    request_id=request.request_id,
                    node_type=request.node_type,
                    is_head=request.is_head,
                    launcher_pid=0,  # not started yet
                    launcher_start_ticks=0,
                    launched_at=time.time(),
                    launch_delay_s=self.launch_delay_s,
                    launch_id=uuid.uuid4().hex,
                )
                _write_json_atomically(layout.record_path(record.instance_id), record.to_json())
            _checkpoint("record-written")
            _write_secret_atomically(layout.token_path, request.cluster_token)
            launcher = self._start_launcher(layout, request, resources_json, record.launch_id)
            _checkpoint("launcher-started")
            started = replace(
                record,
                launcher_pid=launcher.pid,
                launcher_start_ticks=_start_ticks(launcher.pid),
                launched_at=time.time(),
                launch_delay_s=self.launch_delay_s,
            )
            try:
                _write_json_atomically(layout.record_path(record.instance_id), started.to_json())
            except OSError:
                _kill_group(launcher.pid, signal.SIGKILL)
                layout.forget(record.instance_id)
                raise
        with self._launchers_lock:
            self._launchers[launcher.pid] = launcher

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        """Stop the node now: SIGTERM its process group, SIGKILL it after `terminate_grace_s`, then forget it.

        Idempotent: an unknown or already stopped instance is success. Whatever carries the instance's marker is
        killed too (a launcher whose pid never reached the instance file), and no launch of this cluster can start
        the instance again while it is being stopped.
        """
        layout = _ClusterLayout(self.data_dir, _checked_cluster_name(cluster_name))
        _checked_instance_id(instance_id)
        _checkpoint("terminate-started")
        if not layout.cluster_dir.is_dir():
            _kill_processes(_marked_processes(layout.cluster_dir, instance_id=instance_id))
            return
        with layout.locked():
            record = layout.record(instance_id)
            if record is not None:
                _stop_groups([record], grace_s=self.terminate_grace_s)
            _kill_processes(_marked_processes(layout.cluster_dir, instance_id=instance_id))
            self._reap_launchers()
            layout.forget(instance_id)

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        """Kill whatever is left of the cluster and remove its folders. Idempotent."""
        layout = _ClusterLayout(self.data_dir, _checked_cluster_name(cluster_name))
        removed: list[str] = []
        records = layout.records()
        if records:
            _stop_groups(records, grace_s=self.terminate_grace_s)
            removed += [
                f"instance {record.instance_id} (process group {record.launcher_pid})"
                if record.launcher_pid
                else f"instance {record.instance_id} (launcher never recorded)"
                for record in records
            ]
        stragglers = _marked_processes(layout.cluster_dir)
        if stragglers:
            _kill_processes(stragglers)
            removed.append(f"processes {sorted(stragglers)}")
        self._reap_launchers()
        remaining = cluster_processes(self.data_dir, cluster_name)
        if remaining:
            return DestroyReport(removed=tuple(removed), remaining=(f"processes {remaining}",))
        for folder in (layout.ray_temp_dir, layout.cluster_dir):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(f"folder {folder}")
        return DestroyReport(removed=tuple(removed))

    # ----------------------------------------------------------------------------------------
    # Local extras
    # ----------------------------------------------------------------------------------------

    def evict(self, cluster_name: str, instance_id: str, notice_s: float = 0.0) -> PreemptNotice | None:
        """Simulate a spot eviction.

        `notice_s=0`: the node dies at once (SIGKILL, no drain) and vanishes from the list; returns None.
        `notice_s > 0`: as Azure evicts a spot VM. A `Preempt` Scheduled Event with `NotBefore` `notice_s` from now is
        served to the node (provisioning/local_events.py), whose preempt watch drains it through the head agent and
        acknowledges the event; the node's launcher kills every process of the node once the event is acknowledged
        or NotBefore has passed, and the instance vanishes from the list. Returns at once with the notice (the
        same notice again for an instance already given one).
        """
        layout = _ClusterLayout(self.data_dir, _checked_cluster_name(cluster_name))
        record = layout.record(_checked_instance_id(instance_id))
        if record is None:
            raise NotFoundError(f"no instance {instance_id!r} in cluster {cluster_name!r}", code="NotFound")
        if not 0 <= notice_s <= MAX_NOTICE_S:  # also refuses NaN
            raise InvalidRequestError(f"notice_s must be 0 to {MAX_NOTICE_S:g} seconds, not {notice_s!r}")
        if notice_s > 0:
            if not _live_groups([(record.launcher_pid, record.launcher_start_ticks)]):
                raise NotFoundError(
                    f"instance {instance_id!r} of cluster {cluster_name!r} does not run", code="NotFound"
                )
            return write_notice(layout.instances_dir, instance_id, notice_s)
        _kill_group_now(record)
        _kill_processes(_marked_processes(layout.cluster_dir, instance_id=instance_id))
        self._reap_launchers()
        layout.forget(instance_id)
        return None

    def auth_token_path(self, cluster_name: str) -> Path:
        """The 0600 file holding the cluster token: set RAY_AUTH_TOKEN_PATH to it to connect a local driver."""
        return _ClusterLayout(self.data_dir, _checked_cluster_name(cluster_name)).token_path

    def driver_environment(self, cluster_name: str) -> dict[str, str]:
        """What a Ray driver on this machine adds to its environment to connect to the cluster.

        Without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 a driver takes 127.0.0.1 for a one-machine cluster and its tasks
        never reach the worker nodes.
        """
        return {
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.auth_token_path(cluster_name)),
        }

    # ----------------------------------------------------------------------------------------

    def _start_launcher(
        self, layout: _ClusterLayout, request: LaunchRequest, resources_json: str, launch_id: str
    ) -> subprocess.Popen[bytes]:
        command = [
            self.python_executable,
            "-m",
            LAUNCHER_MODULE,
            "--instance-dir",
            str(layout.instances_dir),
            "--instance-id",
            request.instance_id,
            "--cluster-name",
            request.cluster_name,
            "--resources-json",
            resources_json,
            "--launch-delay-s",
            repr(self.launch_delay_s),
            "--ray-temp-dir",
            str(layout.ray_temp_dir),
            "--token-file",
            str(layout.token_path),
        ]
        if request.labels:
            command += ["--labels-json", json.dumps(dict(request.labels), sort_keys=True)]
        if request.is_head:
            command.append("--head")
            control_plane_url = request.control_plane_url or self.control_plane_url
            if control_plane_url:
                command += ["--control-plane-url", control_plane_url]
        else:
            command += ["--head-address", request.head_address]
            head_agent_url = _head_agent_url(layout)
            if head_agent_url:
                command += ["--head-agent-url", head_agent_url]
        with layout.log_path(request.instance_id).open("ab") as log:
            return subprocess.Popen(
                command,
                env=_node_environment(layout, request, launch_id),
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session, hence its own process group: the group is the instance.
                start_new_session=True,
            )

    def _reap_launchers(self) -> None:
        with self._launchers_lock:
            for pid, launcher in list(self._launchers.items()):
                if launcher.poll() is not None:
                    del self._launchers[pid]


def _head_agent_url(layout: _ClusterLayout) -> str:
    """The running head's agent, which a worker's preempt watch reports to; "" before the head is up."""
    for record in layout.records():
        endpoints = _read_json(layout.endpoints_path(record.instance_id)) if record.is_head else None
        if endpoints and endpoints.get("agent_port"):
            return f"http://{LOOPBACK}:{int(endpoints['agent_port'])}"
    return ""


def cluster_processes(data_dir: Path, cluster_name: str) -> list[int]:
    """The pids of every live process of the cluster: in an instance's process group or marked as the cluster's."""
    layout = _ClusterLayout(Path(data_dir).resolve(), _checked_cluster_name(cluster_name))
    processes = _ProcessTable.read()
    group_ids = {record.launcher_pid for record in layout.records() if record.launcher_pid > 0}
    in_groups = {pid for pid, group_id in processes.group_of.items() if group_id in group_ids}
    return sorted(in_groups | set(_marked_processes(layout.cluster_dir)))


# --------------------------------------------------------------------------------------------
# Observing one instance
# --------------------------------------------------------------------------------------------


def _observe(layout: _ClusterLayout, record: _InstanceRecord, processes: _ProcessTable) -> CloudInstance | None:
    base = CloudInstance(
        instance_id=record.instance_id,
        cluster_name=record.cluster_name,
        node_type=record.node_type,
        request_id=record.request_id,
        state=CloudState.PENDING,
        cloud_instance_id=str(record.launcher_pid),
        private_ip=LOOPBACK,
        is_head=record.is_head,
    )
    if not processes.group_alive(record.launcher_pid, record.launcher_start_ticks):
        failure = _read_json(layout.failure_path(record.instance_id))
        if failure is None:
            return None  # evicted or crashed: gone, as a deleted VM is
        return replace(base, state=CloudState.FAILED, detail=str(failure.get("error", "the node failed to start")))
    endpoints = _read_json(layout.endpoints_path(record.instance_id))
    if endpoints is None:
        in_launch_delay = time.time() < record.launched_at + record.launch_delay_s
        return replace(base, detail="simulated provisioning" if in_launch_delay else "starting Ray")
    if not record.is_head:
        return replace(base, state=CloudState.RUNNING)
    return replace(
        base,
        state=CloudState.RUNNING,
        ray_address=f"{LOOPBACK}:{endpoints['gcs_port']}",
        dashboard_url=f"http://{LOOPBACK}:{endpoints['dashboard_port']}",
        agent_url=f"http://{LOOPBACK}:{endpoints['agent_port']}",
    )


# --------------------------------------------------------------------------------------------
# On-disk state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InstanceRecord:
    instance_id: str
    cluster_name: str
    request_id: str
    node_type: str
    is_head: bool
    launcher_pid: int  # also the process group id: the launcher leads its group; 0 until the launcher started
    launcher_start_ticks: int  # tells the launcher from a later process that reused its pid
    launched_at: float  # epoch seconds
    launch_delay_s: float
    launch_id: str = ""  # in the launcher's environment (LAUNCH_ID_ENV); "" in files of earlier versions

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, content: Mapping[str, Any]) -> _InstanceRecord:
        return cls(
            instance_id=str(content["instance_id"]),
            cluster_name=str(content["cluster_name"]),
            request_id=str(content["request_id"]),
            node_type=str(content["node_type"]),
            is_head=bool(content["is_head"]),
            launcher_pid=int(content["launcher_pid"]),
            launcher_start_ticks=int(content["launcher_start_ticks"]),
            launched_at=float(content["launched_at"]),
            launch_delay_s=float(content["launch_delay_s"]),
            launch_id=str(content.get("launch_id", "")),
        )


class _ClusterLayout:
    """Where one cluster's files live (see the module docstring)."""

    def __init__(self, data_dir: Path, cluster_name: str) -> None:
        self.cluster_dir = data_dir / "clusters" / cluster_name
        self.instances_dir = self.cluster_dir / "instances"
        self.logs_dir = self.cluster_dir / "logs"
        self.token_path = self.cluster_dir / "auth_token"
        folder_hash = hashlib.sha256(str(self.cluster_dir).encode()).hexdigest()[:12]
        self.ray_temp_dir = Path(tempfile.gettempdir()) / f"ray-local-{folder_hash}"

    def create(self) -> None:
        for folder in (self.cluster_dir, self.instances_dir, self.logs_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises launches of this cluster across threads and processes (check-then-start must be atomic)."""
        with (self.cluster_dir / ".lock").open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def record_path(self, instance_id: str) -> Path:
        return self.instances_dir / f"{instance_id}.json"

    def endpoints_path(self, instance_id: str) -> Path:
        return self.instances_dir / f"{instance_id}.endpoints.json"

    def failure_path(self, instance_id: str) -> Path:
        return self.instances_dir / f"{instance_id}.failed.json"

    def log_path(self, instance_id: str) -> Path:
        return self.logs_dir / f"{instance_id}.log"

    def record(self, instance_id: str) -> _InstanceRecord | None:
        content = _read_json(self.record_path(instance_id))
        return None if content is None else _InstanceRecord.from_json(content)

    def records(self) -> list[_InstanceRecord]:
        if not self.instances_dir.is_dir():
            return []
        records = []
        for path in sorted(self.instances_dir.glob("*.json")):
            if "." in path.name.removesuffix(".json"):
                continue  # endpoints and failure files
            content = _read_json(path)
            if content is not None:
                records.append(_InstanceRecord.from_json(content))
        return records

    def forget(self, instance_id: str) -> None:
        for path in (
            self.record_path(instance_id),
            self.endpoints_path(instance_id),
            self.failure_path(instance_id),
            notice_path(self.instances_dir, instance_id),
        ):
            path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return content if isinstance(content, dict) else None


def _write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    """A reader sees the old file or the new one, never a part, and the new one survives a crash once this returns."""
    _write_durably(path, json.dumps(content, indent=2, sort_keys=True).encode(), mode=0o600)


def _write_secret_atomically(path: Path, secret: str) -> None:
    """Write `secret` to a file only its owner can read; created 0600, never readable by others for a moment."""
    _write_durably(path, secret.encode(), mode=0o600)


def _write_durably(path: Path, content: bytes, *, mode: int) -> None:
    """Temp file in the same folder (created with `mode`), fsync, rename over `path`, fsync the folder."""
    descriptor, partial_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    partial_path = Path(partial_name)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as partial_file:
            partial_file.write(content)
            partial_file.flush()
            os.fsync(partial_file.fileno())
        os.replace(partial_path, path)
    except BaseException:
        partial_path.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _checkpoint(step: str) -> None:
    """Called between the steps of a launch ("record-written", "launcher-started") and when a terminate starts
    ("terminate-started"); tests make the host die there."""


# --------------------------------------------------------------------------------------------
# Launch inputs
# --------------------------------------------------------------------------------------------


def _checked_cluster_name(cluster_name: str) -> str:
    if not _SAFE_CLUSTER_NAME.fullmatch(cluster_name) or ".." in cluster_name:
        raise InvalidRequestError(
            f"cluster_name {cluster_name!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            code="InvalidName",
        )
    return cluster_name


def _checked_instance_id(instance_id: str) -> str:
    if not _SAFE_INSTANCE_ID.fullmatch(instance_id):
        raise InvalidRequestError(
            f"instance_id {instance_id!r} must be 1-128 letters, digits, '_' or '-', starting with a letter or digit",
            code="InvalidName",
        )
    return instance_id


def _resources_json(resources: Mapping[str, float]) -> str:
    for name, amount in resources.items():
        if not isinstance(amount, int | float) or amount < 0:
            raise InvalidRequestError(f"resource {name!r} has an invalid amount {amount!r}", code="InvalidResources")
    return json.dumps({name: float(amount) for name, amount in resources.items()}, sort_keys=True)


def _node_environment(layout: _ClusterLayout, request: LaunchRequest, launch_id: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        # A driver's settings in the caller's environment must not leak into the node, nor the control plane's
        # secrets (the key every cluster token derives from, the storage connection string): a node runs user code.
        if name not in _NOT_FOR_NODES and not name.startswith(_NOT_FOR_NODES_PREFIXES)
    }
    python_path = [str(PROJECT_ROOT), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment.update(
        {
            "PYTHONPATH": os.pathsep.join(python_path),
            "PYTHONUNBUFFERED": "1",
            # Without this Ray treats 127.0.0.1-only clusters as a single-machine special case.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            # request_resources reaches the GCS (and the head agent) only under autoscaler v2.
            "RAY_enable_autoscaler_v2": "1",
            # Local clusters talk to nothing beyond loopback: no usage report to Ray's servers.
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_NODE_TYPE_NAME": request.node_type,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(layout.token_path),
        }
    )
    # The markers come last: a process that sets its title (Ray's agents and dashboard modules do) may overwrite
    # the start of the memory /proc/<pid>/environ shows; what comes last survives longest.
    markers = {
        "RAY_CLOUD_INSTANCE_ID": request.instance_id,
        CLUSTER_DIR_ENV: str(layout.cluster_dir),
        LAUNCH_ID_ENV: launch_id,
    }
    for name in markers:
        environment.pop(name, None)
    return {**environment, **markers}


# --------------------------------------------------------------------------------------------
# Processes (/proc)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ProcessTable:
    """A snapshot of every live (non-zombie) process: its process group and start time."""

    group_of: Mapping[int, int]
    start_ticks_of: Mapping[int, int]

    @classmethod
    def read(cls) -> _ProcessTable:
        group_of: dict[int, int] = {}
        start_ticks_of: dict[int, int] = {}
        for pid in _all_pids():
            stat = _stat_fields(pid)
            # A zombie has exited; it only waits for its parent to reap it.
            if stat is None or stat[0] in ("Z", "X"):
                continue
            group_of[pid] = int(stat[2])
            start_ticks_of[pid] = int(stat[19])
        return cls(group_of=group_of, start_ticks_of=start_ticks_of)

    def group_alive(self, group_id: int, leader_start_ticks: int) -> bool:
        leader_ticks = self.start_ticks_of.get(group_id)
        if leader_ticks is not None and leader_ticks != leader_start_ticks:
            return False  # the pid now belongs to another process: our group is long gone
        return any(member_group == group_id for member_group in self.group_of.values())


def _all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def _start_ticks(pid: int) -> int:
    stat = _stat_fields(pid)
    return int(stat[19]) if stat is not None else 0


def _marked_processes(cluster_dir: Path, *, instance_id: str = "", launch_id: str = "") -> list[int]:
    """Live processes whose environment marks them as the cluster's (and the instance's, the launch's, when given)."""
    wanted = {f"{CLUSTER_DIR_ENV}={cluster_dir}".encode()}
    if instance_id:
        wanted.add(f"RAY_CLOUD_INSTANCE_ID={instance_id}".encode())
    if launch_id:
        wanted.add(f"{LAUNCH_ID_ENV}={launch_id}".encode())
    marked = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        try:
            environment = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue  # gone, or another user's
        if wanted <= environment:
            stat = _stat_fields(pid)
            if stat is not None and stat[0] not in ("Z", "X"):
                marked.append(pid)
    return marked


def _find_launcher(layout: _ClusterLayout, record: _InstanceRecord) -> _InstanceRecord | None:
    """The record with the pid of the instance's running launcher filled in, or None if no launcher of it runs.

    A launcher is the leader of its own process group, runs LAUNCHER_MODULE for this instance id, and carries the
    cluster's folder, the instance id and the record's launch id in its environment.
    """
    if not record.launch_id:
        return None  # written by an earlier version, which recorded the pid with the file
    for pid in _marked_processes(layout.cluster_dir, instance_id=record.instance_id, launch_id=record.launch_id):
        stat = _stat_fields(pid)
        if stat is not None and int(stat[2]) == pid and _runs_launcher_of(pid, record.instance_id):
            return replace(record, launcher_pid=pid, launcher_start_ticks=int(stat[19]))
    return None


def _runs_launcher_of(pid: int, instance_id: str) -> bool:
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        LAUNCHER_MODULE.encode() in arguments
        and b"--instance-id" in arguments[:-1]
        and (arguments[arguments.index(b"--instance-id") + 1] == instance_id.encode())
    )


def _kill_group(group_id: int, signal_number: signal.Signals) -> None:
    if group_id <= 0:
        raise ValueError(f"refusing to signal process group {group_id}")  # killpg(0) would hit the caller's own group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group_id, signal_number)


def _kill_processes(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _live_groups(groups: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (group id, leader start ticks) pairs whose group still has a live member and was not reused."""
    processes = _ProcessTable.read()
    return {group for group in groups if processes.group_alive(*group)}


def _wait_until_gone(groups: Iterable[tuple[int, int]], timeout_s: float) -> set[tuple[int, int]]:
    """Wait for the groups to empty; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    alive = _live_groups(groups)
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL_S)
        alive = _live_groups(alive)
    return alive


def _stop_groups(records: Iterable[_InstanceRecord], *, grace_s: float) -> None:
    """SIGTERM every group at once (the launchers stop their nodes cleanly), SIGKILL what outlives the grace.

    Only groups that are still the instances' own are signalled, never a stranger that reused a pid.
    """
    alive = _live_groups(
        (record.launcher_pid, record.launcher_start_ticks) for record in records if record.launcher_pid > 0
    )
    for group_id, _ in alive:
        _kill_group(group_id, signal.SIGTERM)
    alive = _wait_until_gone(alive, grace_s)
    for group_id, _ in alive:
        _kill_group(group_id, signal.SIGKILL)
    _wait_until_gone(alive, _KILL_WAIT_S)


def _kill_group_now(record: _InstanceRecord) -> None:
    if record.launcher_pid <= 0:
        return  # no group was recorded: the marker scan of the caller finds its processes
    alive = _live_groups([(record.launcher_pid, record.launcher_start_ticks)])
    for group_id, _ in alive:
        _kill_group(group_id, signal.SIGKILL)
    _wait_until_gone(alive, _KILL_WAIT_S)
