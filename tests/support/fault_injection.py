"""Fault injection around the reconcile shell: a simulated cloud and Ray, and wrappers that inject faults.

Used by the fault campaign (`bench/faults.py`, `tests/integration/test_fault_campaign.py`); unit-tested in
`tests/unit/test_fault_injection.py`.

- `SimClock`: the simulated time every part reads (the service's clock too), so minutes of cloud time cost nothing.
- `SimCloud`: a `CloudProvider` with cloud timings in simulated time: an instance is `pending` for its boot delay,
  then `running` (or `failed` with a `failure_kind`, an asynchronous capacity or quota error), a terminated one is
  listed `terminating` for a while, then gone; spot evictions either delete the VM (it vanishes) or deallocate it
  (still listed, as Azure's resource-group list shows it, or listed `stopped`; Ray reports its node dead);
  `destroy_cluster` sweeps what is left of the cluster (as the Azure and local providers do) and then removes its
  network. With zero delays it keeps the provider contract (`tests/support/provider_contract.py`).
- `SimRay`: a `RayStateReader` whose nodes are the cluster's running instances (after a join delay) and whose
  demand is a number of `{CPU: 1}` tasks, packed onto the workers; idle nodes report how long they have been idle;
  a drain with reason "idle" is refused when the node is busy, as Ray does.
- `FaultInjector`: what is planned and what fired. Cloud errors (429 with Retry-After, 5xx, timeouts before or after
  the call took effect, capacity and quota), windows of simulated time (storage unavailable, head agent down or slow,
  drains refused or unanswered, queue messages lost, duplicated or reordered) and crash points: `SimulatedCrash`
  raised at the n-th checkpoint (before or after a cloud, Ray or store call), so a tick dies between two of its steps
  as a killed process would, and the next one starts from storage.
- `FaultyCloudProvider`, `FaultyRayReader`, `FaultyStore`, `FaultyQueue`: wrappers of the real protocols that consult
  the injector on every call.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from autoscaler.model import (
    CloudInstance,
    CloudState,
    ClusterRecord,
    Event,
    InstanceRecord,
    LaunchRequest,
    RayNode,
    RayNodeStatus,
    RayState,
    ShapeDemand,
    shape_of,
)
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.ray_state import DrainResult, HeadUnreachableError, RayStateReader
from autoscaler.state import InstanceSnapshot, StateStore
from autoscaler.views import ReconcileMessage
from provisioning.cloud import CloudError, CloudProvider, DestroyReport

T = TypeVar("T")

SIM_EPOCH = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
AGENT_URL_PREFIX = "http://127.0.0.1:8270/sim/"  # never dialed: SimRay reads the cluster name from it
REFUSED_DRAIN = "The node to be idle terminated is no longer idle."


class SimulatedCrash(BaseException):
    """The process dies at this point. A BaseException, so no `except Exception` in the code under test catches it."""


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------


class SimClock:
    """Simulated time: `clock()` reads it, `advance()` moves it. Thread-safe."""

    def __init__(self, start: datetime = SIM_EPOCH) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


# --------------------------------------------------------------------------------------------
# What fired
# --------------------------------------------------------------------------------------------


class FaultLog:
    """Counts of faults that fired, by kind. Thread-safe."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self.counts[kind] += count

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


# --------------------------------------------------------------------------------------------
# The simulated cloud
# --------------------------------------------------------------------------------------------


@dataclass
class SimInstance:
    """One instance as the simulated cloud holds it."""

    cluster_name: str
    instance_id: str
    request_id: str
    node_type: str
    is_head: bool
    cpus: float
    sequence: int  # launch order, for stable choices
    launched_at: datetime
    ready_at: datetime  # pending until then
    joins_ray_at: datetime  # its Ray node registers with the head from then on (if it runs)
    state: CloudState = CloudState.PENDING
    failure: tuple[str, str, float] | None = None  # (kind, code, ttl_s): provisioning fails at ready_at
    gone_at: datetime | None = None  # terminating: vanishes from the list then
    ray_dead: bool = False  # deallocated by an eviction: its raylet is gone, Ray reports the node dead

    @property
    def runs_ray(self) -> bool:
        return self.state == CloudState.RUNNING and not self.ray_dead


@dataclass(frozen=True)
class AsyncFailure:
    """A launch the cloud accepts and later lists as failed (Azure's usual way of reporting capacity and quota)."""

    kind: str  # "capacity" | "quota"
    code: str
    ttl_s: float


class SimCloud:
    """A `CloudProvider` in simulated time (see the module docstring). Thread-safe."""

    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        rng: random.Random | None = None,
        boot_delay_s: tuple[float, float] = (0.0, 0.0),
        ray_join_delay_s: tuple[float, float] = (0.0, 0.0),
        terminate_delay_s: tuple[float, float] = (0.0, 0.0),
        log: FaultLog | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random(0)
        self.boot_delay_s = boot_delay_s
        self.ray_join_delay_s = ray_join_delay_s
        self.terminate_delay_s = terminate_delay_s
        self.log = log or FaultLog()
        self.instances: dict[tuple[str, str], SimInstance] = {}
        self.networks: set[str] = set()
        self.async_failures: list[AsyncFailure] = []  # the next launches fail this way, in order
        self.calls: Counter[str] = Counter()
        self.relaunched_after_termination: list[tuple[str, str]] = []
        self.launch_request_ids: dict[tuple[str, str], set[str]] = {}
        self._sequence = 0
        self._lock = threading.RLock()

    # -- the protocol --------------------------------------------------------------------------------------------------

    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        with self._lock:
            self.calls["list"] += 1
            return [self._view(instance) for instance in self._current(cluster_name)]

    def launch(self, request: LaunchRequest) -> None:
        with self._lock:
            self.calls["launch"] += 1
            key = (request.cluster_name, request.instance_id)
            self.launch_request_ids.setdefault(key, set()).add(request.request_id)
            existing = self.instances.get(key)
            if existing is not None and existing.gone_at is None:
                return  # idempotent: the same request again makes nothing new
            if existing is not None:
                # A PUT of a deleted VM's name creates a new VM, in Azure as here.
                self.relaunched_after_termination.append(key)
            now = self.clock()
            self._sequence += 1
            ready_at = now + timedelta(seconds=self._delay(self.boot_delay_s))
            instance = SimInstance(
                cluster_name=request.cluster_name,
                instance_id=request.instance_id,
                request_id=request.request_id,
                node_type=request.node_type,
                is_head=request.is_head,
                cpus=float(request.resources.get("CPU", 0.0)),
                sequence=self._sequence,
                launched_at=now,
                ready_at=ready_at,
                joins_ray_at=ready_at + timedelta(seconds=self._delay(self.ray_join_delay_s)),
            )
            if self.async_failures:
                failure = self.async_failures.pop(0)
                instance.failure = (failure.kind, failure.code, failure.ttl_s)
                self.log.add(f"{failure.kind}_async")
            self.instances[key] = instance
            self.networks.add(request.cluster_name)
            self._advance(instance, now)

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        with self._lock:
            self.calls["terminate"] += 1
            instance = self.instances.get((cluster_name, instance_id))
            if instance is not None and instance.gone_at is None:
                self._start_deleting(instance)

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        with self._lock:
            self.calls["destroy"] += 1
            removed: list[str] = []
            for instance in self._current(cluster_name):
                if instance.state != CloudState.TERMINATING:
                    self._start_deleting(instance)
                    removed.append(f"instance {instance.instance_id}")
            left = [instance.instance_id for instance in self._current(cluster_name)]
            if left:
                return DestroyReport(removed=tuple(removed), remaining=tuple(f"instance {i} (deleting)" for i in left))
            if cluster_name in self.networks:
                self.networks.discard(cluster_name)
                removed.append(f"network of {cluster_name}")
            return DestroyReport(removed=tuple(removed))

    # -- what the campaign does to the cloud ---------------------------------------------------------------------------

    def evict(self, cluster_name: str, instance_id: str, mode: str = "delete") -> None:
        """A spot eviction. `delete`: the VM vanishes. `deallocate`: still listed as running (Azure's list has no
        power state), its Ray node dead. `stopped`: listed stopped, its Ray node dead."""
        with self._lock:
            instance = self.instances[(cluster_name, instance_id)]
            if mode == "delete":
                instance.state = CloudState.TERMINATING
                instance.gone_at = self.clock()
            elif mode == "deallocate":
                instance.ray_dead = True
            elif mode == "stopped":
                instance.ray_dead = True
                instance.state = CloudState.STOPPED
            else:
                raise ValueError(f"unknown eviction mode {mode!r}")

    def current(self, cluster_name: str) -> list[SimInstance]:
        """The cluster's instances still in the cloud (any state, terminating included), in launch order."""
        with self._lock:
            return sorted(self._current(cluster_name), key=lambda instance: instance.sequence)

    def cluster_names(self) -> set[str]:
        with self._lock:
            now = self.clock()
            names = {key[0] for key, instance in self.instances.items() if self._advance(instance, now)}
            return names | set(self.networks)

    # -- internals -----------------------------------------------------------------------------------------------------

    def _delay(self, bounds: tuple[float, float]) -> float:
        low, high = bounds
        return low if high <= low else self.rng.uniform(low, high)

    def _start_deleting(self, instance: SimInstance) -> None:
        instance.state = CloudState.TERMINATING
        instance.gone_at = self.clock() + timedelta(seconds=self._delay(self.terminate_delay_s))

    def _advance(self, instance: SimInstance, now: datetime) -> bool:
        """Move the instance along in time; False once it is gone."""
        if instance.gone_at is not None:
            return now < instance.gone_at
        if instance.state == CloudState.PENDING and now >= instance.ready_at:
            instance.state = CloudState.FAILED if instance.failure else CloudState.RUNNING
        return True

    def _current(self, cluster_name: str) -> list[SimInstance]:
        now = self.clock()
        return [
            instance
            for (cluster, _), instance in self.instances.items()
            if cluster == cluster_name and self._advance(instance, now)
        ]

    def _view(self, instance: SimInstance) -> CloudInstance:
        kind, code, ttl_s = instance.failure or ("", "", 0.0)
        failed = instance.state == CloudState.FAILED
        head = instance.is_head
        return CloudInstance(
            instance_id=instance.instance_id,
            cluster_name=instance.cluster_name,
            node_type=instance.node_type,
            request_id=instance.request_id,
            state=instance.state,
            cloud_instance_id=f"sim-{instance.cluster_name}-{instance.instance_id}",
            private_ip="127.0.0.1",
            is_head=head,
            ray_address="127.0.0.1:6379" if head else "",
            dashboard_url="http://127.0.0.1:8265" if head else "",
            agent_url=f"{AGENT_URL_PREFIX}{instance.cluster_name}" if head else "",
            detail=f"provisioning failed: {code}" if failed else "",
            failure_kind=kind if failed else "",
            failure_code=code if failed else "",
            failure_ttl_s=ttl_s if failed else 0.0,
        )


# --------------------------------------------------------------------------------------------
# The simulated Ray
# --------------------------------------------------------------------------------------------


@dataclass
class _RayCluster:
    demand: int = 0  # {CPU: 1} tasks that want to run
    draining: set[str] = field(default_factory=set)
    idle_since: dict[str, datetime] = field(default_factory=dict)


class SimRay:
    """A `RayStateReader` over a `SimCloud` (see the module docstring). Thread-safe."""

    def __init__(self, cloud: SimCloud, clock: Callable[[], datetime]) -> None:
        self.cloud = cloud
        self.clock = clock
        self.clusters: dict[str, _RayCluster] = {}
        self.drains: list[str] = []
        self._lock = threading.RLock()

    def set_demand(self, cluster_name: str, tasks: int) -> None:
        with self._lock:
            self._cluster(cluster_name).demand = max(0, tasks)

    def demand(self, cluster_name: str) -> int:
        with self._lock:
            return self._cluster(cluster_name).demand

    def read_state(self, agent_url: str, token: str) -> RayState:
        with self._lock:
            name = self._agent_cluster(agent_url)
            return self.state_of(name)

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        with self._lock:
            name = self._agent_cluster(agent_url)
            instance_id = ray_node_id.removeprefix("node-")
            nodes = {node.instance_id: node for node in self.state_of(name).nodes}
            node = nodes.get(instance_id)
            self.drains.append(instance_id)
            if node is None or node.status == RayNodeStatus.DEAD:
                return DrainResult(accepted=True, rejection_reason="", node_known=False)
            if reason == "idle" and node.status == RayNodeStatus.RUNNING:
                return DrainResult(accepted=False, rejection_reason=REFUSED_DRAIN)
            self._cluster(name).draining.add(instance_id)
            return DrainResult(accepted=True, rejection_reason="")

    def state_of(self, cluster_name: str) -> RayState:
        """What the head agent of the cluster would answer now (whether or not the head is reachable)."""
        with self._lock:
            now = self.clock()
            cluster = self._cluster(cluster_name)
            remaining = cluster.demand
            nodes: list[RayNode] = []
            if not self.head_answers(cluster_name):
                pending = (ShapeDemand(shape_of({"CPU": 1.0}), remaining),) if remaining > 0 else ()
                return RayState(pending=pending)  # no GCS: no node is part of the Ray cluster
            for instance in self.cloud.current(cluster_name):
                if now < instance.joins_ray_at or instance.state not in (CloudState.RUNNING, CloudState.STOPPED):
                    continue
                total = {"CPU": instance.cpus}
                if instance.is_head:
                    nodes.append(_ray_node(instance, RayNodeStatus.IDLE, 0.0, total))
                elif not instance.runs_ray:
                    nodes.append(_ray_node(instance, RayNodeStatus.DEAD, 0.0, {}))
                elif instance.instance_id in cluster.draining:
                    nodes.append(_ray_node(instance, RayNodeStatus.DRAINING, 0.0, total))
                else:
                    used = min(int(instance.cpus), remaining)
                    remaining -= used
                    if used:
                        cluster.idle_since.pop(instance.instance_id, None)
                        status, idle_s = RayNodeStatus.RUNNING, 0.0
                    else:
                        since = cluster.idle_since.setdefault(instance.instance_id, now)
                        status, idle_s = RayNodeStatus.IDLE, (now - since).total_seconds()
                    nodes.append(_ray_node(instance, status, idle_s, {"CPU": instance.cpus - used}))
            pending = (ShapeDemand(shape_of({"CPU": 1.0}), remaining),) if remaining > 0 else ()
            return RayState(nodes=tuple(nodes), pending=pending)

    def pending(self, cluster_name: str) -> int:
        """Tasks of the cluster that no Ray node runs now."""
        return sum(demand.count for demand in self.state_of(cluster_name).pending)

    def _cluster(self, name: str) -> _RayCluster:
        return self.clusters.setdefault(name, _RayCluster())

    def head_answers(self, cluster_name: str) -> bool:
        """Whether the head agent is up: the head VM runs and its Ray has started (a deallocated head is silent)."""
        now = self.clock()
        head = next((i for i in self.cloud.current(cluster_name) if i.is_head), None)
        return head is not None and head.runs_ray and now >= head.joins_ray_at

    def _agent_cluster(self, agent_url: str) -> str:
        if not agent_url.startswith(AGENT_URL_PREFIX):
            raise HeadUnreachableError(f"no simulated head agent at {agent_url!r}")
        name = agent_url.removeprefix(AGENT_URL_PREFIX)
        if not self.head_answers(name):
            raise HeadUnreachableError(f"connection refused: the head of {name} does not run (simulated)")
        return name


def _ray_node(instance: SimInstance, status: RayNodeStatus, idle_s: float, available: dict[str, float]) -> RayNode:
    return RayNode(
        ray_node_id=f"node-{instance.instance_id}",
        instance_id=instance.instance_id,
        node_type=instance.node_type,
        status=status,
        idle_duration_s=idle_s,
        total_resources={"CPU": instance.cpus},
        available_resources=available,
        is_head=instance.is_head,
    )


# --------------------------------------------------------------------------------------------
# The injector
# --------------------------------------------------------------------------------------------


@dataclass
class PlannedCloudError:
    """One cloud call that fails. `applied`: the call took effect first (the answer was lost: a timeout)."""

    kind: str  # what FaultLog counts: "throttle", "5xx", "timeout", "capacity", "quota"
    error: CloudError
    applied: bool = False


@dataclass
class _Crash:
    countdown: int
    targets: frozenset[str]
    when: frozenset[str]


WINDOW_KINDS = (
    "storage_outage",
    "head_down",
    "head_slow",
    "drain_refused",
    "drain_unanswered",
    "queue_lost",
    "queue_duplicated",
    "queue_reordered",
)


class FaultInjector:
    """What is planned (cloud errors per call, windows of simulated time, a crash point) and what fired."""

    def __init__(self, clock: Callable[[], datetime], *, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random(0)
        self.log = FaultLog()
        self.enabled = True
        self.slow_head_s = 0.005  # real seconds a slow head agent takes before it times out
        self._cloud_errors: dict[str, list[PlannedCloudError]] = {}
        self._windows: dict[str, datetime] = {}
        self._storage_write_timeouts = 0
        self._crash: _Crash | None = None
        self._lock = threading.Lock()

    # -- planning ------------------------------------------------------------------------------------------------------

    def plan_cloud_error(self, operation: str, planned: PlannedCloudError) -> None:
        """The next call of `operation` ("list", "launch", "terminate", "destroy") fails with it."""
        with self._lock:
            self._cloud_errors.setdefault(operation, []).append(planned)

    def open_window(self, kind: str, seconds: float) -> None:
        if kind not in WINDOW_KINDS:
            raise ValueError(f"unknown window {kind!r}")
        with self._lock:
            until = self.clock() + timedelta(seconds=seconds)
            self._windows[kind] = max(until, self._windows.get(kind, until))
        self.log.add(f"window_{kind}")

    def plan_storage_write_timeout(self) -> None:
        """The next store write takes effect, and its caller gets a timeout (azure-core's ServiceResponseError)."""
        with self._lock:
            self._storage_write_timeouts += 1

    def arm_crash(
        self,
        countdown: int,
        *,
        targets: Sequence[str] = ("store", "cloud", "ray"),
        when: Sequence[str] = ("before", "after"),
    ) -> None:
        """Die at the `countdown`-th checkpoint from now (checkpoints come before and after every call)."""
        if countdown < 1:
            raise ValueError("countdown must be at least 1")
        with self._lock:
            self._crash = _Crash(countdown, frozenset(targets), frozenset(when))

    def disarm_crash(self) -> bool:
        """Forget an armed crash; True if it was still armed (it never fired)."""
        with self._lock:
            armed, self._crash = self._crash is not None, None
            return armed

    def quiet(self) -> None:
        """Faults stop: nothing planned is left, no window stays open, nothing fires any more."""
        with self._lock:
            self.enabled = False
            self._cloud_errors.clear()
            self._windows.clear()
            self._storage_write_timeouts = 0
            self._crash = None

    # -- consulted by the wrappers -------------------------------------------------------------------------------------

    def active(self, kind: str) -> bool:
        with self._lock:
            until = self._windows.get(kind)
            return self.enabled and until is not None and self.clock() < until

    def take_cloud_error(self, operation: str) -> PlannedCloudError | None:
        with self._lock:
            planned = self._cloud_errors.get(operation)
            if not self.enabled or not planned:
                return None
            taken = planned.pop(0)
        self.log.add(taken.kind)
        return taken

    def take_storage_write_timeout(self) -> bool:
        with self._lock:
            if not self.enabled or self._storage_write_timeouts <= 0:
                return False
            self._storage_write_timeouts -= 1
        self.log.add("storage_timeout")
        return True

    def checkpoint(self, target: str, operation: str, when: str) -> None:
        """Raise SimulatedCrash if this is the armed crash point."""
        with self._lock:
            crash = self._crash
            if not self.enabled or crash is None or target not in crash.targets or when not in crash.when:
                return
            crash.countdown -= 1
            if crash.countdown > 0:
                return
            self._crash = None
        self.log.add("crash")
        raise SimulatedCrash(f"crash {when} {target}.{operation}")


# --------------------------------------------------------------------------------------------
# The wrappers
# --------------------------------------------------------------------------------------------


class FaultyCloudProvider:
    """A `CloudProvider` that fails as planned in the injector. `before_list` runs before each list (a test hook:
    hold two racing ticks at a barrier, or run a request while a tick is between its reads)."""

    def __init__(self, inner: CloudProvider, injector: FaultInjector) -> None:
        self.inner = inner
        self.injector = injector
        self.before_list: Callable[[], None] | None = None

    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        hook = self.before_list
        if hook is not None:
            hook()
        return self._call("list", lambda: self.inner.list_instances(cluster_name))

    def launch(self, request: LaunchRequest) -> None:
        self._call("launch", lambda: self.inner.launch(request))

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        self._call("terminate", lambda: self.inner.terminate(cluster_name, instance_id))

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        return self._call("destroy", lambda: self.inner.destroy_cluster(cluster_name))

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        self.injector.checkpoint("cloud", operation, "before")
        planned = self.injector.take_cloud_error(operation)
        if planned is not None and not planned.applied:
            raise planned.error
        result = call()
        if planned is not None:
            raise planned.error
        self.injector.checkpoint("cloud", operation, "after")
        return result


class FaultyRayReader:
    """A `RayStateReader` whose head agent is down, slow or refusing drains while the injector says so."""

    def __init__(self, inner: RayStateReader, injector: FaultInjector) -> None:
        self.inner = inner
        self.injector = injector

    def read_state(self, agent_url: str, token: str) -> RayState:
        self.injector.checkpoint("ray", "read_state", "before")
        self._unreachable()
        state = self.inner.read_state(agent_url, token)
        self.injector.checkpoint("ray", "read_state", "after")
        return state

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        self.injector.checkpoint("ray", "drain", "before")
        self._unreachable()
        if self.injector.active("drain_unanswered"):
            # The agent answers GET /v1/state, but the drain RPC to the GCS does not come back in time.
            self.injector.log.add("drain_unanswered_call")
            raise HeadUnreachableError("POST /v1/drain timed out (injected)")
        if self.injector.active("drain_refused"):
            self.injector.log.add("drain_refused_call")
            return DrainResult(accepted=False, rejection_reason=f"{REFUSED_DRAIN} (injected)")
        result = self.inner.drain(agent_url, token, ray_node_id, reason, message)
        self.injector.checkpoint("ray", "drain", "after")
        return result

    def _unreachable(self) -> None:
        if self.injector.active("head_down"):
            self.injector.log.add("head_down_call")
            raise HeadUnreachableError("connection refused (injected)")
        if self.injector.active("head_slow"):
            self.injector.log.add("head_slow_call")
            time.sleep(self.injector.slow_head_s)
            if self.injector.rng.random() < 0.7:
                raise HeadUnreachableError("read timed out (injected)")


WRITES = frozenset(
    {
        "insert_cluster",
        "update_cluster",
        "insert_instance",
        "update_instance",
        "delete_instance",
        "commit_instances",
        "append_event",
    }
)


class FaultyStore:
    """A `StateStore` that is unavailable while the injector says so (every call raises azure-core's
    ServiceRequestError, as the SDK does when it cannot reach the service), whose planned writes time out after
    taking effect, and whose calls are crash points. Methods beyond the protocol are wrapped alike."""

    def __init__(self, inner: StateStore, injector: FaultInjector) -> None:
        self.inner = inner
        self.injector = injector
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get_cluster(self, name: str) -> ClusterRecord | None:
        return self._call("get_cluster", lambda: self.inner.get_cluster(name))

    def list_clusters(self) -> list[ClusterRecord]:
        return self._call("list_clusters", self.inner.list_clusters)

    def insert_cluster(self, record: ClusterRecord) -> ClusterRecord:
        return self._call("insert_cluster", lambda: self.inner.insert_cluster(record))

    def update_cluster(self, record: ClusterRecord) -> ClusterRecord:
        return self._call("update_cluster", lambda: self.inner.update_cluster(record))

    def list_instances(self, cluster_name: str) -> list[InstanceRecord]:
        return self._call("list_instances", lambda: self.inner.list_instances(cluster_name))

    def insert_instance(self, record: InstanceRecord) -> InstanceRecord:
        return self._call("insert_instance", lambda: self.inner.insert_instance(record))

    def update_instance(self, record: InstanceRecord) -> InstanceRecord:
        return self._call("update_instance", lambda: self.inner.update_instance(record))

    def delete_instance(self, record: InstanceRecord) -> None:
        self._call("delete_instance", lambda: self.inner.delete_instance(record))

    def read_instances(self, cluster_name: str) -> InstanceSnapshot:
        return self._call("read_instances", lambda: self.inner.read_instances(cluster_name))

    def commit_instances(
        self, cluster_name: str, fence_etag: str, records: Sequence[InstanceRecord]
    ) -> InstanceSnapshot:
        return self._call("commit_instances", lambda: self.inner.commit_instances(cluster_name, fence_etag, records))

    def append_event(self, event: Event) -> None:
        self._call("append_event", lambda: self.inner.append_event(event))

    def list_events(self, cluster_name: str, limit: int = 50) -> list[Event]:
        return self._call("list_events", lambda: self.inner.list_events(cluster_name, limit))

    def __getattr__(self, name: str) -> Any:
        # What the store grows beyond the protocol (retention, backoff...) is a crash point and fails in outages too.
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, lambda: attribute(*args, **kwargs))

        return wrapped

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        with self._lock:
            self.calls[operation] += 1
        self.injector.checkpoint("store", operation, "before")
        if self.injector.active("storage_outage"):
            self.injector.log.add("storage_refused_call")
            raise ServiceRequestError(f"storage unavailable (injected) during {operation}")
        result = call()
        if operation in WRITES and self.injector.take_storage_write_timeout():
            raise ServiceResponseError(f"the answer to {operation} timed out (injected; the write took effect)")
        self.injector.checkpoint("store", operation, "after")
        return result


@dataclass(eq=False)  # compared by identity: duplicated messages are equal, yet two deliveries
class Envelope:
    """A queue message as the queue holds it: visible from `visible_at`, delivered `dequeue_count` times."""

    message: ReconcileMessage
    visible_at: datetime
    dequeue_count: int = 0


class FaultyQueue:
    """The `reconcile` queue around `InMemoryReconcileQueue`, delivering as Storage Queues do: a message sent with
    `delay_s` becomes visible that much later (simulated time), a failed one comes back after the visibility timeout.
    While the injector says so, messages are lost, duplicated or delivered out of order."""

    def __init__(
        self,
        injector: FaultInjector,
        clock: Callable[[], datetime],
        inner: InMemoryReconcileQueue | None = None,
    ) -> None:
        self.inner = inner or InMemoryReconcileQueue()
        self.injector = injector
        self.clock = clock
        self.sent = 0
        self._visible_at: list[datetime] = []  # parallel to inner.messages
        self._waiting: list[Envelope] = []
        self._lock = threading.Lock()

    def send(self, message: ReconcileMessage, *, delay_s: int = 0) -> None:
        copies = 1
        if self.injector.active("queue_lost") and self.injector.rng.random() < 0.5:
            self.injector.log.add("queue_message_lost")
            return
        if self.injector.active("queue_duplicated") and self.injector.rng.random() < 0.5:
            self.injector.log.add("queue_message_duplicated")
            copies = 2
        visible_at = self.clock() + timedelta(seconds=delay_s)
        with self._lock:
            for _ in range(copies):
                self.sent += 1
                self._visible_at.append(visible_at)
                self.inner.send(message, delay_s=delay_s)

    def receive(self, limit: int) -> list[Envelope]:
        """Up to `limit` visible messages (oldest first, or shuffled while reordering), each delivered once more."""
        now = self.clock()
        with self._lock:
            self._pull()
            visible = [envelope for envelope in self._waiting if envelope.visible_at <= now]
            visible.sort(key=lambda envelope: envelope.visible_at)
        if len(visible) > 1 and self.injector.active("queue_reordered"):
            self.injector.log.add("queue_reordered_batch")
            self.injector.rng.shuffle(visible)
        taken = visible[:limit]
        with self._lock:
            for envelope in taken:
                self._waiting.remove(envelope)
                envelope.dequeue_count += 1
        return taken

    def retry(self, envelope: Envelope, after_s: float) -> None:
        """The function failed (or its process died): the message comes back after `after_s`."""
        with self._lock:
            envelope.visible_at = self.clock() + timedelta(seconds=after_s)
            self._waiting.append(envelope)

    def pending(self) -> int:
        with self._lock:
            self._pull()
            return len(self._waiting)

    def next_visible_at(self) -> datetime | None:
        with self._lock:
            self._pull()
            return min((envelope.visible_at for envelope in self._waiting), default=None)

    def _pull(self) -> None:
        messages = self.inner.drain()
        visible_at, self._visible_at = self._visible_at, []
        self._waiting.extend(Envelope(message, at) for message, at in zip(messages, visible_at, strict=True))
