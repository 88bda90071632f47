"""A seeded fault campaign: the real reconcile shell, the real Table store on Azurite and the queue, under faults.

Each schedule (one seed) creates 1-3 clusters through `Service.create_cluster` on a table prefix of its own in ONE
Azurite for the whole run, then runs a fault phase of simulated time: the timer (`Service.enqueue_active`, every
15 s), the queue worker (`Service.tick` per message; a message whose tick raised or whose process died comes back
after the visibility timeout or the trigger's 10-minute lease, and after 5 attempts goes to
`Service.record_poison`), demand changes, and faults mixed at random: 429 with Retry-After, 5xx and timeouts (before
or after the call took effect) on every cloud call; capacity and quota errors at launch (sync) and as instances
listed `failed` (async); spot evictions (the VM vanishes; it stays listed as running with its Ray node dead; it is
listed stopped); the head agent down or slow; Ray refusing drains, or not answering them; queue messages lost,
duplicated and reordered; two ticks racing in two threads; a crash (`SimulatedCrash`) at a random checkpoint of a
tick (before or after any store, cloud or Ray call); the store unavailable for a while (azure-core
`ServiceRequestError`), a write whose answer times out after it took effect; deletes (also in the middle of a tick,
between its reads and its cloud list), head wake-ups and config updates (a POST of another config under the same
name: the service refuses those with 409, which is checked and counted, so no update is ever in force; after a
delete it re-creates the cluster, a new generation, which must converge too).

Then the faults stop, failed clusters are deleted (what a user would do) and ticks run fault-free until every
cluster converges. Invariants:
- max_workers: after EVERY tick (crashed ones too), the worker records that run or may still run Ray work
  (queued, requested, allocated, ray_running, draining) are at most the cluster's `max_workers` (and each type's),
  and so are the workers live in the cloud (pending or running, Ray alive) whose record does not say they are
  being terminated (`max_violations_without_draining` counts the ticks still over the limit without the draining
  ones: over max_workers even if every drain in flight is accepted);
- records: no instance record vanishes unless it was final (terminated, allocation_failed), at most one live head,
  one request id per instance, no accepted cluster row lost;
- convergence: within QUIET_TIME_LIMIT_S of fault-free simulated time (and QUIET_TICK_LIMIT ticks of the cluster),
  demand is met (the cluster is running, no launch, drain or terminate in flight, Ray has nothing pending or the
  workers are at max_workers, min_workers met, every record's VM runs Ray) or, once deleted, the cluster is
  `deleted` with nothing left in the cloud;
- leaks: after one more (settled) tick per cluster, every instance in the cloud has a record, and a deleted
  cluster has no instance and no network left.

Run from the repository root: `.venv/bin/python bench/faults.py [--schedules 1000] [--first-seed 1]`, or replay one
seed with its schedule and a trace of every tick: `.venv/bin/python bench/faults.py --seed N`. The last line is JSON:
{"schedules", "faults_injected", "leaks", "max_violations", "lost_records", "not_converged",
 "ticks_to_converge": {"p50", "p99"}, "failing_seeds", ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.data.tables import TableServiceClient

from autoscaler.config import ClusterConfig
from autoscaler.model import CloudState, ClusterStatus, InstanceRecord, InstanceStatus
from autoscaler.reconcile import ReconcileDeps, TickResult
from autoscaler.service import ClusterConflict, Conflict, Service, ServiceError
from autoscaler.state import StorageUnavailableError, TableStateStore
from autoscaler.views import ReconcileMessage
from provisioning.cloud import CapacityError, QuotaError, ThrottledError, TransientError
from tests.support.fault_injection import (
    SIM_EPOCH,
    AsyncFailure,
    Envelope,
    FaultInjector,
    FaultyCloudProvider,
    FaultyQueue,
    FaultyRayReader,
    FaultyStore,
    PlannedCloudError,
    SimClock,
    SimCloud,
    SimRay,
    SimulatedCrash,
)

S = InstanceStatus
TIMER_PERIOD_S = 15  # RECONCILE_SCHEDULE's default
VISIBILITY_TIMEOUT_S = 5  # host.json: a failed message is visible again after this
CRASH_LEASE_S = 600  # a message whose process died comes back when the trigger's lease (10 min) runs out
MAX_DEQUEUE_COUNT = 5  # host.json: then the poison queue
MESSAGES_PER_STEP = 24  # the queue trigger's share of one step (batchSize 16 + newBatchThreshold 8)
FAULT_STEPS = (10, 24)  # steps of the fault phase (each 1-15 simulated seconds)
QUIET_STEP_S = 3  # FOLLOW_UP_DELAY_S: the pace of fault-free ticks
# Bounds of the quiet phase: simulated time beyond the core's longest timeout (requested, 600 s), and ticks per
# cluster (duplicated messages leave several follow-up chains per cluster, so ticks come faster than every 3 s).
QUIET_TIME_LIMIT_S = 900
QUIET_TICK_LIMIT = 3000
MAX_TICKS_PER_SCHEDULE = 8000  # and, whatever happens, a schedule ends
MAX_SCHEDULE_WALL_S = 120.0
RACE_BARRIER_S = 0.3  # real time two racing ticks wait for each other before the cloud list
# Statuses whose worker may run (or come back to run) Ray work: what max_workers bounds.
COUNTED = frozenset({S.QUEUED, S.REQUESTED, S.ALLOCATED, S.RAY_RUNNING, S.DRAINING})
IN_FLIGHT = frozenset({S.QUEUED, S.REQUESTED, S.ALLOCATED, S.DRAINING, S.TERMINATING, S.TERMINATION_FAILED})
STORAGE_ERRORS = (ServiceRequestError, ServiceResponseError, StorageUnavailableError)
# What a tick answers instead of raising (Service.tick records failures). A failure is expected when an injected
# fault caused it: every injected error says "(injected" and the simulated Ray's refusals say "(simulated)", also
# when the service wraps them (its message then quotes them).
FAILED_OUTCOMES = frozenset({"failed", "error", "cloud-unavailable", "storage-unavailable"})
INJECTED_MARKERS = ("(injected", "(simulated)")

WINDOWS = (
    "head_down",
    "head_slow",
    "drain_refused",
    "drain_unanswered",
    "queue_lost",
    "queue_duplicated",
    "queue_reordered",
)
SCALE_PROFILE_SHARE = 0.35
SCALE_STEPS = (14, 30)
SCALE_WEIGHTS: dict[str, int] = {
    "throttle": 3,
    "5xx": 3,
    "timeout": 3,
    "capacity_sync": 1,
    "quota_sync": 1,
    "capacity_async": 1,
    "quota_async": 1,
    "evict": 6,
    "head_down": 1,
    "head_slow": 3,
    "drain_refused": 6,
    "drain_unanswered": 10,
    "queue_lost": 2,
    "queue_duplicated": 2,
    "queue_reordered": 2,
    "race": 4,
    "crash": 8,
    "storage_outage": 1,
    "storage_timeout": 3,
    "delete": 1,
    "delete_mid_tick": 1,
    "wake": 2,
    "config_update": 1,
}
FAULT_WEIGHTS: dict[str, int] = {
    "throttle": 6,
    "5xx": 5,
    "timeout": 5,
    "capacity_sync": 3,
    "quota_sync": 2,
    "capacity_async": 3,
    "quota_async": 2,
    "evict": 10,
    "head_down": 3,
    "head_slow": 2,
    "drain_refused": 3,
    "drain_unanswered": 3,
    "queue_lost": 3,
    "queue_duplicated": 3,
    "queue_reordered": 3,
    "race": 4,
    "crash": 8,
    "storage_outage": 3,
    "storage_timeout": 3,
    "delete": 2,
    "delete_mid_tick": 2,
    "wake": 3,
    "config_update": 1,
}


# ----------------------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    cpus: int
    min_workers: int
    max_workers: int
    cost: float
    fallback: str = ""
    idle_timeout_s: int = 30  # short, so scale-downs (drains) happen while faults are still injected


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    max_workers: int
    workers: tuple[WorkerSpec, ...]

    @property
    def cap(self) -> int:
        """The most workers the cluster may run."""
        return min(self.max_workers, sum(worker.max_workers for worker in self.workers))

    @property
    def min_workers(self) -> int:
        return sum(worker.min_workers for worker in self.workers)

    def updated(self, variant: str) -> ClusterSpec:
        """The config after an update: "raise" (every limit + 1), "lower" (max_workers - 1) or "node" (the small
        type's CPUs change: its workers are outdated and replaced once idle)."""
        if variant == "raise":
            workers = tuple(replace(w, max_workers=w.max_workers + 1) for w in self.workers)
            return replace(self, max_workers=self.max_workers + 1, workers=workers)
        if variant == "lower":
            limit = max(1, self.max_workers - 1, self.min_workers)
            workers = tuple(replace(w, max_workers=max(w.min_workers, min(w.max_workers, limit))) for w in self.workers)
            return replace(self, max_workers=limit, workers=workers)
        if variant == "node":
            workers = tuple(replace(w, cpus=5 - w.cpus) if w.name == "small" else w for w in self.workers)
            return replace(self, workers=workers)
        raise ValueError(f"unknown update {variant!r}")

    def yaml(self, *, max_workers: int | None = None) -> str:
        lines = [
            f"cluster_name: {self.name}",
            f"max_workers: {self.max_workers if max_workers is None else max_workers}",
            "idle_timeout_minutes: 1",
            "provider: {type: local}",
            "auth: {ssh_user: ray}",
            "available_node_types:",
            "  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}",
        ]
        for worker in self.workers:
            fallback = f", fallback: {worker.fallback}" if worker.fallback else ""
            lines.append(
                f"  {worker.name}: {{resources: {{CPU: {worker.cpus}}}, min_workers: {worker.min_workers}, "
                f"max_workers: {worker.max_workers}, launch_timeout_s: 120, idle_timeout_s: {worker.idle_timeout_s}, "
                f"cost: {worker.cost}{fallback}, "
                "node_config: {}}"
            )
        lines.append("head_node_type: head")
        return "\n".join(lines) + "\n"


Event = tuple[Any, ...]  # (kind, *arguments): see `Run.apply`


@dataclass(frozen=True)
class Step:
    dt_s: float
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Schedule:
    seed: int
    profile: str  # "mixed" | "scale" (see make_schedule)
    clusters: tuple[ClusterSpec, ...]
    steps: tuple[Step, ...]  # the fault phase
    final_demand: tuple[int, ...]  # per cluster, from the quiet phase on

    def describe(self) -> str:
        lines = [f"seed {self.seed} ({self.profile}): {len(self.clusters)} cluster(s), {len(self.steps)} fault steps"]
        for spec in self.clusters:
            workers = ", ".join(
                f"{w.name} CPU {w.cpus} min {w.min_workers} max {w.max_workers} idle {w.idle_timeout_s}s"
                + (f" fallback {w.fallback}" if w.fallback else "")
                for w in spec.workers
            )
            lines.append(f"  {spec.name}: max_workers {spec.max_workers}; {workers}")
        elapsed = 0.0
        for index, step in enumerate(self.steps):
            elapsed += step.dt_s
            if step.events:
                lines.append(f"  step {index} t+{elapsed:g}s: " + "; ".join(_event_text(e) for e in step.events))
        lines.append(f"  quiet phase demand: {list(self.final_demand)}")
        return "\n".join(lines)


def _event_text(event: Event) -> str:
    return " ".join(str(part) for part in event)


def make_schedule(seed: int) -> Schedule:
    """Everything random about a schedule is drawn here, up front, from the seed.

    Two profiles: "mixed" (every kind of fault, demand moving at random) and "scale" (demand swinging between none
    and more than the cluster holds, so workers go idle, are drained and are needed again while drains are refused,
    unanswered or cut by crashes).
    """
    rng = random.Random(seed)
    profile = "scale" if rng.random() < SCALE_PROFILE_SHARE else "mixed"
    weights_by_kind = SCALE_WEIGHTS if profile == "scale" else FAULT_WEIGHTS
    clusters = tuple(_cluster_spec(rng, f"s{seed}-c{index}") for index in range(rng.choice((1, 1, 2, 2, 3))))
    step_count = rng.randint(*(SCALE_STEPS if profile == "scale" else FAULT_STEPS))
    creates = {index: 0 if rng.random() < 0.8 else rng.randint(1, step_count // 2) for index in range(len(clusters))}
    kinds, weights = list(weights_by_kind), list(weights_by_kind.values())
    busy = [True] * len(clusters)
    steps: list[Step] = []
    for step_index in range(step_count):
        events: list[Event] = [("create", index) for index, at in creates.items() if at == step_index]
        if step_index == 0:
            events += [("demand", index, _demand(rng, spec)) for index, spec in enumerate(clusters)]
        elif profile == "scale" and rng.random() < 0.35:
            index = rng.randrange(len(clusters))
            busy[index] = not busy[index]
            spec = clusters[index]
            events.append(("demand", index, _demand(rng, spec, low=_capacity(spec) // 2) if busy[index] else 0))
        elif profile == "mixed" and rng.random() < 0.5:
            index = rng.randrange(len(clusters))
            events.append(("demand", index, _demand(rng, clusters[index])))
        if step_index > 0:
            for kind in rng.choices(kinds, weights, k=rng.choice((0, 1, 1, 2, 2, 3))):
                events.append(_fault_event(rng, kind, len(clusters)))
        steps.append(Step(float(rng.choice((1, 2, 3, 3, 5, 5, 8, 15))), tuple(events)))
    final_demand = tuple(_demand(rng, spec) for spec in clusters)
    return Schedule(seed, profile, clusters, tuple(steps), final_demand)


def _cluster_spec(rng: random.Random, name: str) -> ClusterSpec:
    max_workers = rng.randint(1, 4)
    small_max = rng.randint(1, max_workers + 1)
    small_min = rng.choice((0, 0, 0, 1)) if max_workers > 1 else 0
    idle_timeout_s = rng.choice((10, 20, 30))
    small = WorkerSpec("small", 2, min(small_min, small_max), small_max, 1.0, idle_timeout_s=idle_timeout_s)
    if rng.random() < 0.5:
        large = WorkerSpec("large", 4, 0, rng.randint(1, max_workers), 2.5, idle_timeout_s=idle_timeout_s)
        return ClusterSpec(name, max_workers, (replace(small, fallback="large"), large))
    return ClusterSpec(name, max_workers, (small,))


def _capacity(spec: ClusterSpec) -> int:
    """{CPU: 1} tasks the cluster can run at most, and two more."""
    return spec.cap * max(worker.cpus for worker in spec.workers) + 2


def _demand(rng: random.Random, spec: ClusterSpec, *, low: int = 0) -> int:
    """Tasks of {CPU: 1}: none (idle workers get drained) or up to more than the cluster can hold."""
    if not low and rng.random() < 0.4:
        return 0
    return rng.randint(max(1, low), _capacity(spec))


def _fault_event(rng: random.Random, kind: str, clusters: int) -> Event:  # noqa: PLR0911 -- one return per kind of fault the campaign draws
    cluster = rng.randrange(clusters)
    if kind in ("throttle", "5xx", "timeout"):
        operation = rng.choice(("launch", "launch", "list", "list", "terminate", "destroy"))
        applied = kind == "timeout" and operation != "list" and rng.random() < 0.5
        return (kind, operation, rng.choice((1, 5, 20, 60)), rng.randint(1, 3), applied)
    if kind in ("capacity_sync", "quota_sync", "capacity_async", "quota_async"):
        return (kind, rng.choice((20, 60, 120)), rng.randint(1, 2))
    if kind == "evict":
        target = "head" if rng.random() < 0.08 else "worker"
        return (kind, cluster, target, rng.randrange(8), rng.choice(("delete", "delete", "deallocate", "stopped")))
    if kind in WINDOWS:
        return ("window", kind, rng.choice((5, 15, 30, 60)))
    if kind == "storage_outage":
        return ("window", kind, rng.choice((3, 10, 20, 40)))
    if kind == "crash":
        return (kind, rng.randint(1, 16))
    if kind == "storage_timeout":
        return (kind,)
    if kind == "config_update":
        return (kind, cluster, rng.choice(("raise", "lower", "node", "post")))
    return (kind, cluster)  # race, delete, delete_mid_tick, wake


# ----------------------------------------------------------------------------------------------------------------------
# One schedule against the real service
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ScheduleResult:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)
    max_violations: list[str] = field(default_factory=list)
    max_violations_without_draining: int = 0
    lost_records: list[str] = field(default_factory=list)
    not_converged: list[str] = field(default_factory=list)
    unexpected_errors: list[str] = field(default_factory=list)
    ticks_to_converge: list[int] = field(default_factory=list)
    seconds_to_converge: list[float] = field(default_factory=list)
    ticks: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    config_updates_refused: int = 0  # PUT answered 409 (the cluster is deleting or deleted)
    config_updates_accepted: int = 0
    post_conflicts: int = 0  # POST of another config under a name in use: 409
    recreated: int = 0
    relaunched_after_termination: int = 0  # a queued launch re-issued after its VM was evicted: a new VM (fine)
    failed_clusters_deleted: int = 0
    runtime_s: float = 0.0
    trace: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.leaks or self.max_violations or self.lost_records or self.not_converged)

    def problems(self) -> list[str]:
        return [
            *(f"leak: {text}" for text in self.leaks),
            *(f"max_workers: {text}" for text in self.max_violations),
            *(f"record: {text}" for text in self.lost_records),
            *(f"not converged: {text}" for text in self.not_converged),
            *(f"unexpected error: {text}" for text in self.unexpected_errors),
        ]


def token_for(name: str, generation: int) -> str:
    return f"sim-token-{name}-{generation}"


class Run:
    """One schedule: its tables, simulated cloud and Ray, the real Service over fault-injecting wrappers."""

    def __init__(self, schedule: Schedule, connection_string: str, *, trace: bool = False) -> None:
        self.schedule = schedule
        self.specs = {spec.name: spec for spec in schedule.clusters}
        self.result = ScheduleResult(schedule.seed)
        self.tracing = trace
        seed = schedule.seed
        prefix = f"f{seed}x{uuid.uuid4().hex[:6]}"
        self.raw = TableStateStore(TableServiceClient.from_connection_string(connection_string), table_prefix=prefix)
        self.raw.ensure_tables()
        self.clock = SimClock()
        self.injector = FaultInjector(self.clock, rng=random.Random(seed * 7 + 1))
        self.cloud = SimCloud(
            self.clock,
            rng=random.Random(seed * 7 + 2),
            boot_delay_s=(2.0, 10.0),
            ray_join_delay_s=(1.0, 8.0),
            terminate_delay_s=(0.0, 8.0),
            log=self.injector.log,
        )
        self.ray = SimRay(self.cloud, self.clock)
        self.provider = FaultyCloudProvider(self.cloud, self.injector)
        self.store = FaultyStore(self.raw, self.injector)
        self.queue = FaultyQueue(self.injector, self.clock)
        deps = ReconcileDeps(
            store=self.store,
            provider_for=lambda config: self.provider,
            ray_reader=FaultyRayReader(self.ray, self.injector),
            token_for=token_for,
            clock=self.clock,
        )
        self.service = Service(deps=deps, queue=self.queue, allow_local_provider=True)
        self.accepted: set[str] = set()  # create answered
        self.generations: dict[str, int] = {}  # the generation a create answered for
        self.delete_requested: set[str] = set()  # delete answered
        self.pending_posts: list[ClusterSpec] = []  # POSTs still without an answer
        self.pending_puts: list[tuple[ClusterSpec, str]] = []  # PUTs (config, update variant) without an answer
        self.current = dict(self.specs)  # each cluster's config as last accepted
        self.lowered_at: dict[str, datetime] = {}  # when max_workers was last lowered by an update
        self.pending_deletes: list[str] = []
        self.pending_crash: int | None = None
        self.last_seen: dict[str, dict[str, InstanceStatus]] = {}
        self.next_timer_at = self.clock()
        self.quiet = False
        self.quiet_started = self.clock()
        self.quiet_ticks: Counter[str] = Counter()
        self.converged: dict[str, int] = {}
        self._config_cache: dict[str, ClusterConfig] = {}
        self.reported: set[str] = set()
        self.started = time.perf_counter()

    # -- the whole schedule --------------------------------------------------------------------------------------------

    def run(self) -> ScheduleResult:
        started = self.started = time.perf_counter()
        try:
            for index, step in enumerate(self.schedule.steps):
                self.clock.advance(step.dt_s)
                self.note(f"-- step {index} at +{self.elapsed():g}s")
                for event in step.events:
                    self.apply(event)
                self.step()
            self.quiet_phase()
            self.final_checks()
        finally:
            self.result.faults.update(self.injector.log.counts)
            self.result.relaunched_after_termination = len(self.cloud.relaunched_after_termination)
            self.result.runtime_s = time.perf_counter() - started
            self.close()
        return self.result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for name in self.raw.table_names:
                self.raw.table_service.delete_table(name)
        with contextlib.suppress(Exception):
            self.raw.close()

    def elapsed(self) -> float:
        return (self.clock() - self.schedule_start).total_seconds()

    @property
    def schedule_start(self) -> datetime:
        return SIM_EPOCH

    def note(self, text: str) -> None:
        if self.tracing:
            self.result.trace.append(text)

    def step(self) -> None:
        self.retry_api_calls()
        if self.clock() >= self.next_timer_at:
            self.timer()
        self.deliver()

    # -- events --------------------------------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:  # noqa: C901,PLR0912 -- one branch per kind of fault the schedule applies
        kind = event[0]
        self.note(f"event {_event_text(event)}")
        if kind == "create":
            self.pending_posts.append(self.schedule.clusters[event[1]])
        elif kind == "demand":
            self.ray.set_demand(self.schedule.clusters[event[1]].name, event[2])
        elif kind in ("throttle", "5xx", "timeout"):
            _, operation, retry_after_s, count, applied = event
            for _ in range(count):
                self.injector.plan_cloud_error(operation, _cloud_error(kind, retry_after_s, applied))
        elif kind in ("capacity_sync", "quota_sync"):
            _, ttl_s, count = event
            for _ in range(count):
                error = (
                    CapacityError("no capacity (injected)", code="ZonalAllocationFailed", ttl_s=ttl_s)
                    if kind == "capacity_sync"
                    else QuotaError("quota exceeded (injected)", code="OperationNotAllowed", ttl_s=ttl_s)
                )
                self.injector.plan_cloud_error("launch", PlannedCloudError(kind, error))
        elif kind in ("capacity_async", "quota_async"):
            _, ttl_s, count = event
            failure_kind = kind.removesuffix("_async")
            code = "ZonalAllocationFailed" if failure_kind == "capacity" else "OperationNotAllowed"
            self.cloud.async_failures.extend(AsyncFailure(failure_kind, code, ttl_s) for _ in range(count))
        elif kind == "evict":
            self.evict(*event[1:])
        elif kind == "window":
            self.injector.open_window(event[1], event[2])
        elif kind == "crash":
            self.pending_crash = event[1]
        elif kind == "storage_timeout":
            self.injector.plan_storage_write_timeout()
        elif kind == "race":
            self.race(self.name_of(event[1]))
        elif kind == "delete":
            name = self.name_of(event[1])
            if name not in self.pending_deletes and name not in self.delete_requested:
                self.pending_deletes.append(name)
        elif kind == "delete_mid_tick":
            self.delete_mid_tick(self.name_of(event[1]))
        elif kind == "wake":
            self.wake(self.name_of(event[1]))
        elif kind == "config_update":
            self.config_update(self.name_of(event[1]), event[2])
        else:
            raise ValueError(f"unknown event {event!r}")

    def name_of(self, index: int) -> str:
        return self.schedule.clusters[index].name

    def evict(self, index: int, target: str, pick: int, mode: str) -> None:
        name = self.name_of(index)
        candidates = [
            instance
            for instance in self.cloud.current(name)
            if instance.is_head == (target == "head") and instance.state == CloudState.RUNNING and not instance.ray_dead
        ]
        if not candidates:
            return
        victim = candidates[pick % len(candidates)]
        self.cloud.evict(name, victim.instance_id, mode)
        self.injector.log.add(f"evict_{target}_{mode}")
        self.note(f"evicted {target} {victim.instance_id} of {name} ({mode})")

    # -- API calls (clients retry until they get an answer) ------------------------------------------------------------

    def retry_api_calls(self) -> None:
        for spec in list(self.pending_posts):
            self.pending_posts.remove(spec)
            self.post(spec)
        for spec, variant in list(self.pending_puts):
            self.pending_puts.remove((spec, variant))
            self.put(spec, variant)
        for name in list(self.pending_deletes):
            if name not in self.accepted:
                continue
            try:
                answer = self.service.destroy_cluster(name)
            except Exception as error:
                self.expect_storage_error(error, f"delete {name}")
                continue
            self.pending_deletes.remove(name)
            self.delete_requested.add(name)
            self.note(f"delete {name}: {answer.status}")

    def delete_mid_tick(self, name: str) -> None:
        """DELETE arrives while a tick of the cluster has read its state and not yet listed the cloud."""
        if name not in self.accepted or name in self.delete_requested:
            return
        done = threading.Event()

        def delete_now() -> None:
            if done.is_set():
                return
            done.set()
            try:
                self.service.destroy_cluster(name)
            except Exception as error:
                self.expect_storage_error(error, f"delete {name} mid-tick")
                if name not in self.pending_deletes:
                    self.pending_deletes.append(name)
                return
            self.delete_requested.add(name)

        self.injector.log.add("delete_mid_tick")
        self.provider.before_list = delete_now
        try:
            self.tick(ReconcileMessage(cluster_name=name, reason="wake"), crash=None)
        finally:
            self.provider.before_list = None
        if not done.is_set() and name not in self.pending_deletes:
            self.pending_deletes.append(name)  # the tick never reached the cloud list: the client still deletes

    def wake(self, name: str) -> None:
        record = self.raw.get_cluster(name)
        if record is None:
            return
        self.injector.log.add("wake")
        try:
            self.service.request_reconcile(name, f"Bearer {token_for(name, record.generation)}", "pending demand")
        except SimulatedCrash:
            pass
        except Exception as error:
            self.expect_storage_error(error, f"wake {name}")
        self.check_cluster(name)

    def config_update(self, name: str, variant: str) -> None:
        """PUT another config (PUT /api/clusters/{name}), or POST one under the name in use (409)."""
        if name not in self.accepted:
            return
        current = self.current[name]
        if variant == "post" or not callable(getattr(self.service, "update_cluster", None)):
            self.post(replace(current, max_workers=current.max_workers + 1))
        else:
            self.put(current.updated(variant), variant)

    def put(self, spec: ClusterSpec, variant: str) -> None:
        """PUT /api/clusters/{name}; without an answer the client sends it again at the next step."""
        try:
            response = self.service.update_cluster(spec.name, spec.yaml().encode(), "application/yaml")
        except Conflict:
            self.result.config_updates_refused += 1  # deleting or deleted, or a head change: 409
            return
        except ServiceError:
            return  # not found (not created yet): nothing to update
        except Exception as error:
            self.expect_storage_error(error, f"update {spec.name}")
            self.pending_puts.append((spec, variant))
            return
        self.note(f"update {spec.name} ({variant}): {response.detail}")
        self.current[spec.name] = spec
        self.result.config_updates_accepted += 1
        self.injector.log.add(f"config_update_{variant}")
        if variant == "lower":
            self.lowered_at[spec.name] = self.clock()

    def post(self, spec: ClusterSpec) -> None:
        """POST /api/clusters; without an answer (storage down, or the answer lost after the write) the client sends
        the same request again at the next step."""
        name = spec.name
        try:
            response = self.service.create_cluster(spec.yaml().encode(), "application/yaml")
        except ClusterConflict:
            self.result.post_conflicts += 1  # another config under a name in use: 409
            return
        except Exception as error:
            self.expect_storage_error(error, f"create {name}")
            self.pending_posts.append(spec)
            return
        self.note(f"create {name}: {response.status} created={response.created}")
        row = self.raw.get_cluster(name)
        generation = row.generation if row is not None else 0
        if name not in self.accepted:
            self.accepted.add(name)
            self.generations[name] = generation
            self.current[name] = spec
            return
        if name in self.delete_requested and generation > self.generations[name]:
            # The cluster had been deleted: its name is reused, a new generation (with this config). Told by the
            # generation, not by `created` (that answer may have been lost, and a retry answers created=False).
            self.generations[name] = generation
            self.current[name] = spec
            self.delete_requested.discard(name)
            if name in self.pending_deletes:
                self.pending_deletes.remove(name)
            self.lowered_at.pop(name, None)
            self.result.recreated += 1
            self.injector.log.add("recreate_after_delete")

    def expect_storage_error(self, error: BaseException, what: str) -> None:
        """An API call or trigger failed: fine if an injected fault caused it (a storage outage, a write timeout)."""
        chain: list[BaseException] = []
        cause: BaseException | None = error
        while cause is not None and len(chain) < 10:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        if not any(isinstance(e, STORAGE_ERRORS) or any(m in str(e) for m in INJECTED_MARKERS) for e in chain):
            self.unexpected(error, what)

    def unexpected(self, error: BaseException, what: str) -> None:
        frames = traceback.extract_tb(error.__traceback__)
        where = next(
            (f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames) if "/autoscaler/" in f.filename),
            "",
        )
        text = f"{what}: {type(error).__name__}: {str(error)[:200]} ({where})"
        self.result.unexpected_errors.append(text)
        self.note(f"UNEXPECTED {text}")

    # -- the triggers --------------------------------------------------------------------------------------------------

    def timer(self) -> None:
        now = self.clock()
        period = TIMER_PERIOD_S
        seconds = (now - self.schedule_start).total_seconds()
        self.next_timer_at = self.schedule_start + timedelta(seconds=(int(seconds // period) + 1) * period)
        try:
            count = self.service.enqueue_active()
        except Exception as error:
            self.expect_storage_error(error, "timer")
            return
        self.note(f"timer: {count} message(s)")

    def deliver(self) -> None:
        for envelope in self.queue.receive(MESSAGES_PER_STEP):
            crash, self.pending_crash = self.pending_crash, None
            self.tick(envelope.message, crash=crash, envelope=envelope)

    def tick(self, message: ReconcileMessage, *, crash: int | None, envelope: Envelope | None = None) -> None:
        name = message.cluster_name
        if crash is not None:
            self.injector.arm_crash(crash)
        result: TickResult | None = None
        try:
            result = self.service.tick(message)
        except SimulatedCrash as died:
            self.result.outcomes["crashed"] += 1
            self.note(f"tick {name} ({message.reason}): CRASH {died}")
            if envelope is not None:
                self.failed_message(envelope, CRASH_LEASE_S)
        except Exception as error:
            self.result.outcomes["raised"] += 1
            self.expect_storage_error(error, f"tick of {name}")
            self.note(f"tick {name} ({message.reason}): raised {type(error).__name__}: {error}")
            if envelope is not None:
                self.failed_message(envelope, VISIBILITY_TIMEOUT_S)
        finally:
            if crash is not None and self.injector.disarm_crash():
                self.injector.log.add("crash_not_reached")
        self.result.ticks += 1
        if self.quiet:
            self.quiet_ticks[name] += 1
        if result is not None:
            self.count_outcome(result, f"tick of {name} ({message.reason})")
        self.check_cluster(name)

    def count_outcome(self, result: TickResult, what: str) -> None:
        self.result.outcomes[result.outcome] += 1
        detail = f" [{result.detail}]" if result.outcome in FAILED_OUTCOMES else ""
        self.note(f"{what}: {result.outcome} {'; '.join(result.actions)}{detail}")
        if result.outcome in FAILED_OUTCOMES and not any(marker in result.detail for marker in INJECTED_MARKERS):
            # Service.tick records failures instead of raising: one not caused by an injected fault is a finding.
            self.result.unexpected_errors.append(f"{what}: {result.outcome}: {result.detail[:300]}")

    def failed_message(self, envelope: Envelope, visible_after_s: float) -> None:
        if envelope.dequeue_count < MAX_DEQUEUE_COUNT:
            self.queue.retry(envelope, visible_after_s)
            return
        self.result.outcomes["poisoned"] += 1
        try:
            self.service.record_poison(envelope.message.model_dump_json())
        except Exception as error:
            self.expect_storage_error(error, "poison")

    def race(self, name: str) -> None:
        """Two ticks of one cluster in two threads, both past their reads before either lists the cloud."""
        barrier = threading.Barrier(2)

        def hold() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=RACE_BARRIER_S)

        errors: list[BaseException] = []

        results: list[TickResult] = []

        def run_one() -> None:
            try:
                results.append(self.service.tick(ReconcileMessage(cluster_name=name, reason="wake")))
            except BaseException as error:
                errors.append(error)

        self.injector.log.add("race")
        self.provider.before_list = hold
        threads = [threading.Thread(target=run_one, daemon=True) for _ in range(2)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        finally:
            self.provider.before_list = None
        for error in errors:
            if not isinstance(error, SimulatedCrash):
                self.expect_storage_error(error, f"racing tick of {name}")
        self.result.ticks += len(threads)
        for result in results:
            self.count_outcome(result, f"racing tick of {name}")
        self.note(f"race {name}: {[type(e).__name__ for e in errors]}")
        self.check_cluster(name)

    # -- the quiet phase -----------------------------------------------------------------------------------------------

    def quiet_phase(self) -> None:
        self.injector.quiet()
        self.cloud.async_failures.clear()  # launches planned to fail later are faults too
        self.provider.before_list = None
        self.pending_crash = None
        self.quiet = True
        self.quiet_started = self.clock()
        for spec, demand in zip(self.schedule.clusters, self.schedule.final_demand, strict=True):
            self.ray.set_demand(spec.name, demand)
        self.note("-- quiet phase")
        self.retry_api_calls()
        names = [spec.name for spec in self.schedule.clusters]
        for name in names:
            self.consider(name)
        while len(self.converged) < len(names):
            spent = (self.clock() - self.quiet_started).total_seconds()
            if spent > QUIET_TIME_LIMIT_S or all(self.quiet_ticks[n] > QUIET_TICK_LIMIT for n in self.unsettled()):
                break
            if self.result.ticks > MAX_TICKS_PER_SCHEDULE or time.perf_counter() - self.started > MAX_SCHEDULE_WALL_S:
                self.note("-- schedule stopped: tick or wall-time budget spent")
                break
            self.clock.advance(QUIET_STEP_S)
            self.step()

    def unsettled(self) -> list[str]:
        return [spec.name for spec in self.schedule.clusters if spec.name not in self.converged]

    def consider(self, name: str) -> None:
        """In the quiet phase, after each tick: a failed cluster is deleted (as its user would); converged?"""
        if name in self.converged:
            return
        row = self.raw.get_cluster(name)
        if row is not None and row.status == ClusterStatus.FAILED and name not in self.delete_requested:
            if name not in self.pending_deletes:
                self.pending_deletes.append(name)
                self.result.failed_clusters_deleted += 1
                self.note(f"{name} failed ({row.status_reason}): deleting it")
            return
        if self.is_converged(name):
            self.converged[name] = self.quiet_ticks[name]
            self.result.ticks_to_converge.append(self.quiet_ticks[name])
            self.result.seconds_to_converge.append((self.clock() - self.quiet_started).total_seconds())
            self.note(f"{name} converged after {self.quiet_ticks[name]} fault-free tick(s)")

    def is_converged(self, name: str) -> bool:  # noqa: PLR0911 -- one return per way a cluster can be unsettled
        row = self.raw.get_cluster(name)
        if name in self.delete_requested:
            return (
                row is not None
                and row.status == ClusterStatus.DELETED
                and not self.cloud.current(name)
                and name not in self.cloud.networks
            )
        if row is None or row.status != ClusterStatus.RUNNING or name in self.pending_deletes:
            return False
        records = self.raw.list_instances(name)
        heads = [r for r in records if r.is_head and r.status.is_live]
        workers = [r for r in records if not r.is_head and r.status.is_live]
        if len(heads) != 1 or heads[0].status != S.RAY_RUNNING:
            return False
        if any(r.status != S.RAY_RUNNING for r in workers):
            return False
        known = {r.instance_id for r in records}
        in_cloud = self.cloud.current(name)
        if any(i.instance_id not in known for i in in_cloud if i.state != CloudState.TERMINATING):
            return False
        running_ray = {i.instance_id for i in in_cloud if i.runs_ray}
        if any(r.instance_id not in running_ray for r in [*heads, *workers]):
            return False
        config = self.config_of(row.config_json)
        cap = min(config.max_workers, sum(t.max_workers for t in config.worker_node_types().values()))
        minimum = sum(t.min_workers for t in config.worker_node_types().values())
        if len(workers) < minimum:
            return False
        return self.ray.pending(name) == 0 or len(workers) >= cap

    def final_checks(self) -> None:
        for spec in self.schedule.clusters:
            name = spec.name
            if name not in self.converged:
                row = self.raw.get_cluster(name)
                state = "no row" if row is None else f"{row.status} ({row.status_reason})"
                records = Counter(str(r.status) for r in self.raw.list_instances(name))
                self.result.not_converged.append(
                    f"{name}: {state} after {self.quiet_ticks[name]} fault-free ticks; records {dict(records)}; "
                    f"cloud {[(i.instance_id, str(i.state), i.ray_dead) for i in self.cloud.current(name)]}; "
                    f"Ray pending {self.ray.pending(name)}"
                    + ("; delete requested" if name in self.delete_requested else "")
                )
            row = self.raw.get_cluster(name)
            if row is not None and row.status.is_active:
                self.tick(ReconcileMessage(cluster_name=name, reason="timer"), crash=None)  # the settled tick
            self.check_leaks(name)
        for name in sorted(self.cloud.cluster_names() - set(self.specs)):
            self.result.leaks.append(f"cloud resources of a cluster never created: {name}")

    # -- invariants ----------------------------------------------------------------------------------------------------

    def config_of(self, config_json: str) -> ClusterConfig:
        config = self._config_cache.get(config_json)
        if config is None:
            config = self._config_cache[config_json] = ClusterConfig.from_json(config_json)
        return config

    def check_cluster(self, name: str) -> None:  # noqa: C901,PLR0912 -- one branch per invariant checked
        """After every tick: max_workers (store and cloud), records lost or doubled."""
        row = self.raw.get_cluster(name)
        records = self.raw.list_instances(name)
        at = f"+{self.elapsed():g}s"
        if row is None:
            if name in self.accepted:
                self.result.lost_records.append(f"{name}: the cluster row is gone at {at}")
            return
        config = self.config_of(row.config_json)
        by_id = {r.instance_id: r for r in records}
        if self.tracing:
            live = sorted(f"{r.instance_id[:6]}{'(head)' if r.is_head else ''}={r.status}" for r in records)
            self.note(f"   {name} {row.status}: {' '.join(live)}")
        counted = [r for r in records if not r.is_head and r.status in COUNTED]
        lowered_at = self.lowered_at.get(name)
        if lowered_at is not None and all(r.created_at < lowered_at for r in counted):
            # max_workers was lowered by an update: busy workers above it stay by design (the planner never cuts a
            # busy node); a violation is a launch that goes over the new limit.
            counted = []
        over: list[str] = []  # one violation per tick and cluster, with every way it shows
        if len(counted) > config.max_workers:
            over.append(f"{len(counted)} workers {_statuses(counted)} > max_workers {config.max_workers}")
        for node_type, node in config.worker_node_types().items():
            of_type = [r for r in counted if r.node_type == node_type]
            if len(of_type) > node.max_workers:
                over.append(f"{len(of_type)} {node_type} workers > its max_workers {node.max_workers}")
        leaving = {S.TERMINATING, S.TERMINATION_FAILED, S.TERMINATED, S.ALLOCATION_FAILED}
        live_in_cloud = [
            i
            for i in self.cloud.current(name)
            if not i.is_head
            and i.state in (CloudState.PENDING, CloudState.RUNNING)
            and not i.ray_dead
            and (i.instance_id not in by_id or by_id[i.instance_id].status not in leaving)
        ]
        if len(live_in_cloud) > config.max_workers and (lowered_at is None or counted):
            over.append(f"{len(live_in_cloud)} live workers in the cloud > max_workers {config.max_workers}")
        if over:
            self.result.max_violations.append(f"{name} at {at}: " + "; ".join(over))
            # Without the draining ones: what is over max_workers even if every drain in flight is accepted.
            if sum(1 for r in counted if r.status != S.DRAINING) > config.max_workers:
                self.result.max_violations_without_draining += 1
        previous = self.last_seen.get(name, {})
        for instance_id, status in previous.items():
            if instance_id not in by_id and not status.is_final:
                self.result.lost_records.append(f"{name} at {at}: record {instance_id} ({status}) vanished")
        self.last_seen[name] = {r.instance_id: r.status for r in records}
        live_heads = [r for r in records if r.is_head and r.status.is_live]
        if len(live_heads) > 1:
            self.result.lost_records.append(f"{name} at {at}: {len(live_heads)} live heads {_statuses(live_heads)}")
        for (cluster, instance_id), request_ids in self.cloud.launch_request_ids.items():
            if cluster == name and len(request_ids) > 1 and instance_id not in self.reported:
                self.reported.add(instance_id)
                self.result.lost_records.append(f"{name}: instance {instance_id} launched under {len(request_ids)} ids")
        if self.quiet:
            self.consider(name)

    def check_leaks(self, name: str) -> None:
        row = self.raw.get_cluster(name)
        in_cloud = self.cloud.current(name)
        if (row is not None and row.status == ClusterStatus.DELETED) or (row is None and name in self.delete_requested):
            if in_cloud or name in self.cloud.networks:
                left = [f"{i.instance_id} ({i.state})" for i in in_cloud]
                network = " and its network" if name in self.cloud.networks else ""
                self.result.leaks.append(f"deleted cluster {name} left instances {left}{network}")
            return
        known = {r.instance_id for r in self.raw.list_instances(name)}
        for instance in in_cloud:
            if instance.state != CloudState.TERMINATING and instance.instance_id not in known:
                self.result.leaks.append(f"{name}: {instance.instance_id} ({instance.state}) in the cloud, no record")


def _statuses(records: Iterable[InstanceRecord]) -> str:
    return str(dict(Counter(str(r.status) for r in records)))


def _cloud_error(kind: str, retry_after_s: float, applied: bool) -> PlannedCloudError:
    if kind == "throttle":
        return PlannedCloudError(
            kind,
            ThrottledError("429 Too Many Requests (injected)", code="TooManyRequests", retry_after_s=retry_after_s),
        )
    if kind == "5xx":
        return PlannedCloudError(kind, TransientError("503 Service Unavailable (injected)", code="ServerBusy"))
    what = "after the call took effect" if applied else "before the call reached the cloud"
    return PlannedCloudError(kind, TransientError(f"timed out {what} (injected)", code="Timeout"), applied=applied)


# ----------------------------------------------------------------------------------------------------------------------
# The campaign
# ----------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The service logs every failed tick; thousands of injected failures would bury the figures."""
    loggers = [logging.getLogger(name) for name in ("autoscaler", "azure", "provisioning")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_schedule(seed: int, connection_string: str, *, trace: bool = False) -> ScheduleResult:
    with quiet_logs():
        return Run(make_schedule(seed), connection_string, trace=trace).run()


def percentile(values: list[int] | list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))])


def summarize(results: list[ScheduleResult], runtime_s: float) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
        outcomes.update(result.outcomes)
    ticks = [t for result in results for t in result.ticks_to_converge]
    seconds = [s for result in results for s in result.seconds_to_converge]
    # A fault is counted when it hit something: a call that failed, a crash that fired, a message lost... A window
    # (window_*) is only the time during which calls fail, and an armed crash that was never reached is none.
    fired = {
        kind: count for kind, count in faults.items() if not kind.startswith("window_") and kind != "crash_not_reached"
    }
    return {
        "schedules": len(results),
        "faults_injected": sum(fired.values()),
        "leaks": sum(len(r.leaks) for r in results),
        "max_violations": sum(len(r.max_violations) for r in results),
        "max_violations_without_draining": sum(r.max_violations_without_draining for r in results),
        "lost_records": sum(len(r.lost_records) for r in results),
        "not_converged": sum(len(r.not_converged) for r in results),
        "unexpected_errors": sum(len(r.unexpected_errors) for r in results),
        "ticks_to_converge": {"p50": percentile(ticks, 0.5), "p99": percentile(ticks, 0.99), "max": max(ticks or [0])},
        "sim_seconds_to_converge": {"p50": percentile(seconds, 0.5), "p99": percentile(seconds, 0.99)},
        "failing_seeds": sorted(r.seed for r in results if r.failed),
        "failing_seeds_by_invariant": {
            "leaks": sorted(r.seed for r in results if r.leaks),
            "max_workers": sorted(r.seed for r in results if r.max_violations),
            "max_workers_without_draining": sorted(r.seed for r in results if r.max_violations_without_draining),
            "lost_records": sorted(r.seed for r in results if r.lost_records),
            "not_converged": sorted(r.seed for r in results if r.not_converged),
        },
        "error_seeds": sorted(r.seed for r in results if r.unexpected_errors),
        "clusters": sum(len(r.ticks_to_converge) + len(r.not_converged) for r in results),
        "ticks": sum(r.ticks for r in results),
        "tick_outcomes": dict(sorted(outcomes.items())),
        "faults_by_kind": dict(sorted(fired.items())),
        "fault_windows_opened": {
            k.removeprefix("window_"): v for k, v in sorted(faults.items()) if k.startswith("window_")
        },
        "config_updates": {
            "accepted": sum(r.config_updates_accepted for r in results),
            "refused_409": sum(r.config_updates_refused for r in results),
            "post_other_config_409": sum(r.post_conflicts for r in results),
            "recreated_after_delete": sum(r.recreated for r in results),
        },
        "failed_clusters_deleted": sum(r.failed_clusters_deleted for r in results),
        "relaunched_after_termination": sum(r.relaunched_after_termination for r in results),
        "runtime_s": round(runtime_s, 1),
        "schedule_runtime_s": {
            "p50": round(percentile([r.runtime_s for r in results], 0.5), 3),
            "max": round(max((r.runtime_s for r in results), default=0.0), 3),
        },
    }


def run_campaign(
    seeds: Iterable[int],
    connection_string: str,
    *,
    progress: Callable[[ScheduleResult, int], None] | None = None,
) -> tuple[list[ScheduleResult], float]:
    started = time.perf_counter()
    results: list[ScheduleResult] = []
    for seed in seeds:
        result = run_schedule(seed, connection_string)
        results.append(result)
        if progress is not None:
            progress(result, len(results))
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000, help="how many seeded schedules (default 1000)")
    parser.add_argument("--first-seed", type=int, default=1, help="seeds first-seed .. first-seed+schedules-1")
    parser.add_argument("--seed", type=int, help="replay this one seed, printing its schedule and every tick")
    arguments = parser.parse_args()
    if arguments.schedules < 1:
        parser.error("--schedules must be at least 1")

    from tests.support.azurite import start_azurite

    azurite = start_azurite()
    try:
        if arguments.seed is not None:
            print(make_schedule(arguments.seed).describe())
            with quiet_logs():
                result = Run(make_schedule(arguments.seed), azurite.connection_string, trace=True).run()
            print("\n".join(result.trace))
            for problem in result.problems():
                print(f"  {problem}")
            print(json.dumps(summarize([result], result.runtime_s)))
            return

        def progress(result: ScheduleResult, done: int) -> None:
            if result.failed or result.unexpected_errors:
                print(f"FAIL seed {result.seed} (replay: .venv/bin/python bench/faults.py --seed {result.seed})")
                for problem in result.problems()[:8]:
                    print(f"  {problem}")
            if done % 50 == 0:
                print(f"{done} schedules", file=sys.stderr, flush=True)

        seeds = range(arguments.first_seed, arguments.first_seed + arguments.schedules)
        results, runtime_s = run_campaign(seeds, azurite.connection_string, progress=progress)
    finally:
        azurite.stop()
    summary = summarize(results, runtime_s)
    print(f"{summary['schedules']} schedules in {runtime_s:.0f} s; {summary['faults_injected']} faults injected")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
