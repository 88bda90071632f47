"""The imperative shell for one cluster tick: the six steps of docs/architecture.md ("One tick"), in order.

    1 read     state (Table Storage, with ETags)
    2 observe  the cloud: ONE list call, by tags
    3 observe  Ray: the head agent's GET /v1/state
    4 decide   sync what we saw into instance statuses (passive), then plan(...) (pure)
    5 save     the intent, guarded by the cluster's instance fence (a conflict ends the tick)
    6 act      launch / drain / terminate, idempotent by request id, then save what happened

The tick is level-triggered: it recomputes everything from what it observes, so a duplicate, late or lost message,
an overlapping tick or a crash between two steps is harmless. It never waits on a long-running cloud operation.

Failure isolation (docs/decisions/failure-isolation.md): whatever one cluster's tick raises (its stored config does
not parse, its provider cannot be built, the cloud list fails, a bug) ends that tick with a `tick-failed` event and a
per-cluster backoff recorded on the cluster row (15 s, doubling, at most 15 min). Ticks before the backoff ends return
at once without building the provider. Only an unavailable store escapes: nothing can be recorded then.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from autoscaler import lifecycle, offerings
from autoscaler.config import ClusterConfig, ConfigError
from autoscaler.model import (
    CloudInstance,
    CloudState,
    ClusterRecord,
    ClusterStatus,
    Event,
    HeadInfo,
    InstanceRecord,
    InstanceStatus,
    LabelSelector,
    LaunchRequest,
    RayNode,
    RayNodeStatus,
    RayState,
    ScalingPlan,
    ShapeDemand,
    Termination,
    format_shape,
)
from autoscaler.planner import DEFAULT_LAUNCH_TIMEOUT_S, plan
from autoscaler.ports import (
    CapacityError,
    CloudError,
    CloudProvider,
    ConflictError,
    HeadAuthError,
    HeadUnreachableError,
    LaunchesInBatches,
    NotFoundError,
    QuotaError,
    RayStateReader,
    RemembersHeadAddress,
    StateStore,
    StorageUnavailableError,
    ThrottledError,
)
from autoscaler.timeline import DEMAND_EVENT, demand_message
from autoscaler.views import boot_phases_observation

log = logging.getLogger(__name__)

S = InstanceStatus
# A running head whose VM is listed but whose agent has not answered for this long fails the cluster: a deallocated
# (spot-evicted or stopped outside) head is still listed as running, and workers without a head only cost money.
HEAD_UNREACHABLE_TIMEOUT_S = 600.0
PREEMPTED_GRACE_S = 60.0  # after a preemption deadline, a node still listed is deleted (a Deallocate eviction's VM)
HEAD_LAUNCH_ATTEMPTS = 3  # a head that fails this many times fails the cluster (with the reasons in its events)
FINAL_RECORD_RETENTION = timedelta(minutes=30)  # terminated rows stay visible in the status for a while, then go
BACKOFF_FIRST_S = 15.0  # one timer period: a single failure costs at most the next timer tick
BACKOFF_MAX_S = 15 * 60.0  # a cluster that keeps failing is still retried four times an hour
MAX_ERROR_CHARS = 1000  # of an error's text kept on the cluster row and in its event


@dataclass(frozen=True)
class ReconcileDeps:
    """What a tick needs from the outside world; wired once in service.py."""

    store: StateStore
    provider_for: Callable[[ClusterConfig], CloudProvider]
    ray_reader: RayStateReader
    token_for: Callable[[str, int], str]  # (cluster name, generation) -> cluster token
    clock: Callable[[], datetime]
    control_plane_url: str = ""
    head_info_extra: Callable[[ClusterConfig, str], HeadInfo] | None = None  # e.g. the local auth token path
    head_unreachable_timeout_s: float = HEAD_UNREACHABLE_TIMEOUT_S  # app setting HEAD_UNREACHABLE_TIMEOUT_S


@dataclass
class TickResult:
    cluster_name: str
    # reconciled | conflict | not-found | inactive | backing-off | failed | cloud-unavailable
    outcome: str
    plan: ScalingPlan | None = None
    actions: list[str] = field(default_factory=list)
    head_reachable: bool = False
    detail: str = ""
    settled: bool = True  # False while something is in flight (launching, draining, terminating, creating, deleting)


@dataclass
class _Tick:
    """The mutable working set of one tick (local to `reconcile`)."""

    cluster: ClusterRecord
    config: ClusterConfig
    now: datetime
    records: dict[str, InstanceRecord]
    original: dict[str, InstanceRecord]
    fence_etag: str
    stored_cluster: ClusterRecord  # the cluster row as last read or written: a save writes only what differs from it
    inserted: set[str] = field(default_factory=set)
    terminate_now: set[str] = field(default_factory=set)  # moved to terminating this tick: call terminate in step 6
    failure: str = ""  # set when the cluster can no longer run (its head is gone for good)
    events: list[Event] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def event(self, kind: str, message: str, instance_id: str = "") -> None:
        self.events.append(Event(self.cluster.name, self.now, kind, message, instance_id))

    def move(self, instance_id: str, to_status: InstanceStatus, why: str, *, error: str = "") -> None:
        record = self.records[instance_id]
        if record.status == to_status:
            return
        self.records[instance_id] = lifecycle.transition(record, to_status, self.now, error=error)
        if to_status == S.TERMINATING:
            self.terminate_now.add(instance_id)
        self.event("status", f"{record.node_type} {record.status} -> {to_status}: {why}", instance_id)

    def changed(self) -> list[InstanceRecord]:
        return [r for key, r in self.records.items() if key in self.inserted or r != self.original.get(key)]


def failure_backoff(consecutive_failures: int) -> timedelta:
    """How long a cluster waits after its n-th failed tick in a row: 15 s, 30 s, 60 s, ... at most 15 min."""
    doublings = min(max(consecutive_failures - 1, 0), 32)  # bounded, so a huge count cannot overflow the float
    return timedelta(seconds=min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0**doublings))


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


def reconcile(cluster_name: str, deps: ReconcileDeps) -> TickResult:
    """One tick of one cluster. Raises only `StorageUnavailableError` (and the store's decoding errors of the cluster
    row itself); every other failure is recorded on the cluster and answered with outcome "failed"."""
    now = deps.clock()

    # -- 1 read state ---------------------------------------------------------------------------------------------
    cluster = deps.store.get_cluster(cluster_name)
    if cluster is None:
        return TickResult(cluster_name, "not-found")
    if not cluster.status.is_active:
        return TickResult(cluster_name, "inactive", detail=f"cluster is {cluster.status}")
    if cluster.status == ClusterStatus.DELETING and not cluster.cloud_touched:
        deleted = _delete_untouched(cluster, now, deps)
        if deleted is not None:
            return deleted
    if cluster.backoff_until is not None and now < cluster.backoff_until:
        # A cheap no-op: no config parse, no provider, no cloud call until the backoff ends.
        return TickResult(
            cluster_name,
            "backing-off",
            detail=f"backing off until {cluster.backoff_until.isoformat()} after "
            f"{cluster.consecutive_failures} failed tick(s): {cluster.last_error}",
        )
    try:
        return _reconcile_active(cluster, now, deps)
    except StorageUnavailableError:
        raise  # nothing can be recorded: the caller answers 503 or lets the timer bring the next tick
    except Exception as error:
        # Isolation: whatever this cluster's tick raised stays with this cluster, as an event and a backoff.
        if isinstance(error, CloudError | ConfigError):
            log.warning("cluster %s: tick failed: %s", cluster_name, describe_error(error))
        else:
            log.exception("cluster %s: tick failed", cluster_name)  # a bug: keep the traceback
        return record_failure(cluster_name, deps, error, now=now)


def record_failure(
    cluster_name: str,
    deps: ReconcileDeps,
    error: BaseException,
    *,
    now: datetime,
    outcome: str = "failed",
    retry_after_s: float = 0.0,
) -> TickResult:
    """Count one more failed tick on the cluster row, back it off, and record why (row and event)."""
    text = describe_error(error)
    current = deps.store.get_cluster(cluster_name)  # re-read: the failed tick may have written the row already
    if current is None or not current.status.is_active:
        return TickResult(cluster_name, outcome, detail=text)
    failures = current.consecutive_failures + 1
    until = now + max(failure_backoff(failures), timedelta(seconds=retry_after_s))
    try:
        deps.store.update_cluster(
            replace(
                current,
                consecutive_failures=failures,
                last_error=text,
                last_error_at=now,
                backoff_until=until,
                updated_at=now,
            )
        )
    except ConflictError:
        # Another tick wrote the row meanwhile; if this cluster keeps failing, the next failure is counted.
        return TickResult(cluster_name, outcome, detail=text)
    message = f"{text} (failure {failures} in a row; next attempt after {until.isoformat()})"
    deps.store.append_event(Event(cluster_name, now, "tick-failed", message))
    return TickResult(cluster_name, outcome, detail=text)


def _delete_untouched(cluster: ClusterRecord, now: datetime, deps: ReconcileDeps) -> TickResult | None:
    """Delete a cluster for which nothing was ever created in the cloud, without its config or its provider (either
    may be what keeps failing). None when a record shows otherwise: then it is deleted through the provider."""
    snapshot = deps.store.read_instances(cluster.name)
    if any(r.status.is_live and r.status != S.QUEUED for r in snapshot.records):
        return None  # cannot happen by construction (launching sets cloud_touched first); never guess
    why = "deleted before any launch was issued"
    cancelled = [lifecycle.transition(r, S.TERMINATED, now) for r in snapshot.records if r.status == S.QUEUED]
    events = [
        Event(cluster.name, now, "status", f"{r.node_type} queued -> terminated: {why}", r.instance_id)
        for r in cancelled
    ]
    reason = "deleted without calling the cloud: nothing was ever created there"
    try:
        # The fence moves even when nothing is cancelled: a tick that read this cluster before the DELETE can then
        # commit no launch intent after it.
        deps.store.commit_instances(cluster.name, snapshot.fence_etag, cancelled)
        deps.store.update_cluster(
            replace(
                cluster,
                status=ClusterStatus.DELETED,
                status_reason=reason,
                consecutive_failures=0,
                last_error="",
                last_error_at=None,
                backoff_until=None,
                updated_at=now,
            )
        )
    except ConflictError as error:
        return TickResult(cluster.name, "conflict", detail=str(error))
    for event in [*events, Event(cluster.name, now, "status", f"cluster {reason}")]:
        deps.store.append_event(event)
    return TickResult(cluster.name, "reconciled", actions=["cluster deleted"], detail=reason)


def _reconcile_active(cluster: ClusterRecord, now: datetime, deps: ReconcileDeps) -> TickResult:
    cluster_name = cluster.name
    config = ClusterConfig.from_json(cluster.config_json)
    snapshot = deps.store.read_instances(cluster_name)
    by_id = {r.instance_id: r for r in snapshot.records}
    tick = _Tick(cluster, config, now, dict(by_id), dict(by_id), snapshot.fence_etag, cluster)
    provider = deps.provider_for(config)
    _seed_head_address(provider, cluster, tick.records.values())
    token = deps.token_for(cluster.name, cluster.generation)

    # -- 2 observe the cloud (one list call) ------------------------------------------------------------------------
    try:
        cloud = {ci.instance_id: ci for ci in provider.list_instances(cluster_name)}
    except CloudError as error:
        # Deciding on a partial picture is worse than not deciding: skip the tick and back off (at least as long as
        # a throttling cloud asked), so a cloud that keeps refusing is not asked every few seconds.
        log.warning("cluster %s: cloud list failed, skipping this tick: %s", cluster_name, error)
        retry_after_s = error.retry_after_s if isinstance(error, ThrottledError) else 0.0
        return record_failure(
            cluster_name, deps, error, now=now, outcome="cloud-unavailable", retry_after_s=retry_after_s
        )

    # -- 3 observe Ray (the head agent) -----------------------------------------------------------------------------
    head_cloud = next((ci for ci in cloud.values() if ci.is_head), None)
    ray: RayState | None = None
    head_auth_error = cluster.head_auth_error  # unchanged unless the agent answers this tick
    if head_cloud is not None and head_cloud.agent_url and head_cloud.state == CloudState.RUNNING:
        try:
            ray = deps.ray_reader.read_state(head_cloud.agent_url, token)
            head_auth_error = ""
        except HeadAuthError as error:
            # The agent is up and refuses our token (a generation or key mix-up): not an agent that is down, and
            # waiting will not fix it. Ray's state stays unknown (no scale-down), and the status says why.
            log.warning("cluster %s: the head agent refuses the cluster token: %s", cluster_name, error)
            head_auth_error = str(error)[:MAX_ERROR_CHARS]
        except HeadUnreachableError as error:
            log.info("cluster %s: head agent unreachable (%s): no new information from Ray", cluster_name, error)
            _note_head_unreachable(tick, str(error))
    if ray is not None or head_auth_error:
        tick.cluster = replace(tick.cluster, head_unreachable_since=None)  # the agent answered

    # -- 4 decide ---------------------------------------------------------------------------------------------------
    _sync(tick, cloud, ray)
    _fail_a_silent_head(tick, deps.head_unreachable_timeout_s)
    _autostop(tick, ray)
    decided = _decide(tick, ray)
    new_cluster = _next_cluster_record(
        tick, ray=ray, head_cloud=head_cloud, decided=decided, deps=deps, head_auth_error=head_auth_error
    )

    # -- 5 save intent (the fence: one of two racing ticks wins, the other stops here) -------------------------------
    try:
        _save(deps.store, tick, new_cluster)
    except ConflictError as error:
        return TickResult(cluster_name, "conflict", decided, detail=str(error))
    tick.original = dict(tick.records)
    tick.inserted.clear()

    # -- 6 act, then save what happened -----------------------------------------------------------------------------
    if tick.cluster.status != ClusterStatus.DELETED:
        _act(tick, provider=provider, deps=deps, token=token, head_cloud=head_cloud, ray=ray)
        try:
            _save(deps.store, tick, tick.cluster)
        except ConflictError as error:
            # The cloud calls were made and are idempotent; the next tick observes their effect.
            return TickResult(cluster_name, "conflict", decided, tick.actions, ray is not None, str(error))
    for event in tick.events:
        deps.store.append_event(event)
    return TickResult(cluster_name, "reconciled", decided, tick.actions, ray is not None, settled=_settled(tick))


IN_FLIGHT = frozenset({S.QUEUED, S.REQUESTED, S.ALLOCATED, S.DRAINING, S.TERMINATING, S.TERMINATION_FAILED})


def _settled(tick: _Tick) -> bool:
    if tick.cluster.status in (ClusterStatus.CREATING, ClusterStatus.DELETING, ClusterStatus.STOPPING):
        return False
    return not any(r.status in IN_FLIGHT for r in tick.records.values())


# ------------------------------------------------------------------------------------------------------------------
# 4a sync: fold what the cloud and Ray show into instance statuses (passive; no decisions about size)
# ------------------------------------------------------------------------------------------------------------------
# What to do with a worker that Ray reports dead, one that never registers, or one of an outdated config is decided
# by the planner's scale-down rules (autoscaler/planner/scale_down.py), not here: this only records what was seen.


def _sync(tick: _Tick, cloud: dict[str, CloudInstance], ray: RayState | None) -> None:  # noqa: C901,PLR0912 -- the instance state machine's sync step, one branch per observed transition, read as one table
    ray_by_instance = {node.instance_id: node for node in (ray.nodes if ray else ()) if node.instance_id}
    _bind_pool_vms(tick, cloud)
    _notice_preemptions(tick, cloud, ray_by_instance)
    for instance_id, record in list(tick.records.items()):
        seen = cloud.get(instance_id)
        node = ray_by_instance.get(instance_id)
        status = record.status
        if status in (S.REQUESTED, S.ALLOCATED) and seen is not None and seen.state == CloudState.FAILED:
            # Azure usually reports capacity errors this way: the PUT was accepted, provisioning failed later.
            _provisioning_failed(tick, record, seen)
            continue
        if status == S.REQUESTED:
            if seen is not None:
                tick.records[instance_id] = replace(tick.records[instance_id], cloud_instance_id=seen.cloud_instance_id)
                tick.move(instance_id, S.ALLOCATED, "the cloud lists it")
            elif lifecycle.is_stuck(record, tick.now):
                tick.move(instance_id, S.ALLOCATION_FAILED, "never listed by the cloud within the request timeout")
        status = tick.records[instance_id].status
        if status in (S.ALLOCATED, S.RAY_RUNNING, S.DRAINING):
            if seen is None:
                tick.move(instance_id, S.TERMINATED, "vanished from the cloud (spot eviction or deleted outside)")
                continue
            if seen.state == CloudState.STOPPED:
                tick.move(instance_id, S.TERMINATING, "stopped or deallocated in the cloud (spot eviction)")
                continue
        if status == S.ALLOCATED and node is not None and node.status != RayNodeStatus.DEAD:
            tick.records[instance_id] = replace(tick.records[instance_id], ray_node_id=node.ray_node_id)
            tick.move(instance_id, S.RAY_RUNNING, f"Ray node {node.ray_node_id[:12]} registered")
        elif status == S.ALLOCATED and record.is_head and ray is not None:
            tick.move(instance_id, S.RAY_RUNNING, "the head agent answers")
        elif status == S.DRAINING and record.preempt_deadline is not None:
            if tick.now > record.preempt_deadline + timedelta(seconds=PREEMPTED_GRACE_S):
                # Evicted with Deallocate, the VM stays (and keeps its disk); Azure's list shows it as before.
                tick.move(instance_id, S.TERMINATING, "past its preemption deadline: remove what the eviction left")
        elif status == S.DRAINING and lifecycle.is_stuck(record, tick.now):
            tick.move(instance_id, S.RAY_RUNNING, "the drain was never answered: keep the node")
        elif status in (S.TERMINATING, S.TERMINATION_FAILED) and seen is None:
            tick.move(instance_id, S.TERMINATED, "the cloud no longer lists it")
        elif status == S.TERMINATING and lifecycle.is_stuck(record, tick.now):
            tick.move(instance_id, S.TERMINATION_FAILED, "still listed after the terminate timeout")
        elif status == S.TERMINATING and seen is not None and seen.state != CloudState.TERMINATING:
            # Saved as terminating but the cloud is not deleting it: the terminate call never went out (a crash
            # between saving the intent and acting) or the instance failed. Terminate is idempotent: call it again
            # now rather than wait out the terminate timeout with the node alive.
            tick.terminate_now.add(instance_id)
        elif status == S.ALLOCATION_FAILED and seen is not None:
            tick.move(instance_id, S.TERMINATING, "a failed launch left an instance behind")
    # Instances the cloud shows under our tags with no record (a crash before the intent was saved cannot produce
    # them, but a manual launch or an old generation can): they are terminated, never adopted silently.
    for instance_id, seen in cloud.items():
        if instance_id not in tick.records and seen.state != CloudState.TERMINATING:
            tick.actions.append(f"terminate orphan {instance_id}")
            tick.event("orphan", f"{seen.node_type} {instance_id} is tagged for this cluster but unknown: terminating")
            tick.records[instance_id] = InstanceRecord(
                cluster_name=tick.cluster.name,
                instance_id=instance_id,
                node_type=seen.node_type,
                status=S.TERMINATING,
                request_id=seen.request_id,
                status_since=tick.now,
                created_at=tick.now,
                is_head=seen.is_head,
                cloud_instance_id=seen.cloud_instance_id,
            )
            tick.inserted.add(instance_id)
            tick.terminate_now.add(instance_id)  # stopped in this tick's act step, not after the terminate timeout


def _bind_pool_vms(tick: _Tick, cloud: dict[str, CloudInstance]) -> None:
    """Bind each new VM of a scale-set node type to one of the type's launches (docs/decisions/scale-sets.md).

    A scale set creates VMs by a capacity change, so no VM carries a launch's id: each is listed under its own name
    (what it reports to Ray). A listed pool VM without a record takes the oldest launch of its node type that is not
    bound yet: that launch's record ends (`terminated`, "bound to ...") and a record keyed by the VM's name carries
    on, both written in this tick's fenced commit, so two racing ticks cannot bind one VM twice, and a VM's record
    can never be lost to a crash (its name is its key). A VM no launch waits for is an orphan, terminated below."""
    slots: dict[str, list[InstanceRecord]] = {}
    for record in sorted(tick.records.values(), key=lambda r: r.created_at):
        if record.status in (S.QUEUED, S.REQUESTED) and not record.is_head:
            slots.setdefault(record.node_type, []).append(record)
    for vm_name, seen in sorted(cloud.items()):
        if not seen.pool or vm_name in tick.records or seen.state == CloudState.TERMINATING or not slots.get(seen.pool):
            continue
        slot = slots[seen.pool].pop(0)
        tick.move(slot.instance_id, S.TERMINATED, f"bound to scale-set VM {vm_name}")
        tick.records[vm_name] = InstanceRecord(
            cluster_name=tick.cluster.name,
            instance_id=vm_name,
            node_type=seen.pool,
            status=S.ALLOCATED,
            request_id=slot.request_id,
            status_since=tick.now,
            created_at=slot.created_at,
            launched_at=slot.launched_at or tick.now,
            cloud_instance_id=seen.cloud_instance_id,
            config_hash=slot.config_hash,
            availability_zone=seen.availability_zone,
            priority=seen.priority or slot.priority,
        )
        tick.inserted.add(vm_name)
        tick.event("status", f"{seen.pool} scale-set VM {vm_name} bound to launch {slot.instance_id}", vm_name)


def _notice_preemptions(tick: _Tick, cloud: dict[str, CloudInstance], ray_nodes: dict[str, RayNode]) -> None:
    """A node whose VM got a spot preemption notice (its node agent saw Azure's Scheduled Event `Preempt` and asked
    Ray to drain it) is leaving: it is marked draining with the deadline, stops counting as capacity or against
    max_workers, so the planner replaces it in this very tick, and its (size, zone, spot) offering is avoided for a
    while when another zone can take the replacement."""
    for instance_id, record in list(tick.records.items()):
        node = ray_nodes.get(instance_id)
        if node is None or node.preempt_deadline is None or record.preempt_deadline is not None:
            continue
        if record.status not in (S.RAY_RUNNING, S.DRAINING) or record.is_head or instance_id not in cloud:
            continue
        deadline = node.preempt_deadline
        tick.records[instance_id] = replace(record, preempt_deadline=deadline)
        if record.status == S.RAY_RUNNING:
            tick.move(instance_id, S.DRAINING, f"spot preemption notice: Azure stops it at {deadline.isoformat()}")
        tick.event("preempted", f"{record.node_type} {instance_id}: preemption notice, deadline {deadline.isoformat()}")
        if offerings.eviction_avoidable(tick.config):
            _mark_unavailable(tick, record, "eviction", offerings.EVICTION_AVOID_S, "spot preemption notice")


def _provisioning_failed(tick: _Tick, record: InstanceRecord, seen: CloudInstance) -> None:
    what = f"{seen.failure_kind or 'provisioning'} failure {seen.failure_code}".strip()
    tick.move(record.instance_id, S.ALLOCATION_FAILED, f"the cloud reports a {what}", error=seen.detail)
    if seen.failure_kind in ("capacity", "quota") and seen.failure_ttl_s > 0:
        reason = f"{seen.failure_kind}: {seen.failure_code}"
        _mark_unavailable(tick, record, seen.failure_kind, seen.failure_ttl_s, reason)
    # The failed VM still exists (and may hold a NIC and a disk): remove it.
    tick.move(record.instance_id, S.TERMINATING, "clean up the failed instance")


def _mark_unavailable(tick: _Tick, record: InstanceRecord, kind: str, ttl_s: float, reason: str) -> None:
    """Avoid the offering `record` was launched as (its size, zone and priority; autoscaler/offerings.py)."""
    if record.node_type not in tick.config.available_node_types:
        return
    unavailable, entry = offerings.record_failure(
        tick.cluster.unavailable, tick.config, record, kind=kind, ttl_s=ttl_s, reason=reason, now=tick.now
    )
    tick.cluster = replace(tick.cluster, unavailable=unavailable)
    what = offerings.describe(entry)
    tick.event("unavailable", f"{record.node_type} avoided until {entry.until.isoformat()}: {what}", record.instance_id)


# ------------------------------------------------------------------------------------------------------------------
# 4b decide: the head (shell), the workers (planner), deletion
# ------------------------------------------------------------------------------------------------------------------


def _decide(tick: _Tick, ray: RayState | None) -> ScalingPlan:
    live = [r for r in tick.records.values() if r.status.is_live]
    if tick.cluster.status == ClusterStatus.STOPPING:
        _terminate_all(tick, live, "autostop: the cluster is stopping")
        return ScalingPlan(notes=("autostop: terminating every instance, head included",))
    if tick.cluster.status in (ClusterStatus.DELETING, ClusterStatus.FAILED):
        why = "cluster deleted" if tick.cluster.status == ClusterStatus.DELETING else "cluster failed"
        _terminate_all(tick, live, why)
        return ScalingPlan(notes=(f"{why}: terminating every instance",))
    head_plan = _decide_head(tick, live)
    if head_plan is not None:
        return head_plan
    unavailable = offerings.unavailable_types(
        tick.config, tick.config.worker_node_types(), offerings.in_force(tick.cluster.unavailable, tick.now)
    )
    decided = plan(
        config=tick.config, instances=list(tick.records.values()), ray=ray, unavailable=unavailable, now=tick.now
    )
    for launch in decided.launches:
        for _ in range(launch.count):
            _queue(tick, launch.node_type, is_head=False, reason=launch.reason)
    for termination in decided.terminations:
        _apply_termination(tick, termination)
    return decided


def _decide_head(tick: _Tick, live: Sequence[InstanceRecord]) -> ScalingPlan | None:
    """What the head needs before any worker is decided: None once it runs Ray (the planner decides the workers)."""
    head = next((r for r in live if r.is_head), None)
    if head is not None and tick.failure:  # a head that no longer answers (_fail_a_silent_head)
        _terminate_all(tick, live, tick.failure)
        return ScalingPlan(notes=(f"cluster failed: {tick.failure}",))
    if head is None:
        # Heads whose launch failed, whatever became of their VM since (a failed launch's VM is terminated).
        failed = [r for r in tick.records.values() if r.is_head and not r.status.is_live and r.last_error]
        failed.sort(key=lambda r: r.created_at)
        if tick.cluster.status == ClusterStatus.RUNNING:
            tick.failure = "the head instance is gone"
        elif len(failed) >= HEAD_LAUNCH_ATTEMPTS:
            tick.failure = f"the head failed to launch {len(failed)} times; last error: {failed[-1].last_error}"
        if tick.failure:
            _terminate_all(tick, live, tick.failure)
            return ScalingPlan(notes=(f"cluster failed: {tick.failure}",))
        _queue(tick, tick.config.head_node_type, is_head=True, reason="every cluster has one head")
        return ScalingPlan(notes=(f"launch head {tick.config.head_node_type}",))
    if head.status != S.RAY_RUNNING:
        _fail_a_head_that_never_ran_ray(tick, head)
        return ScalingPlan(notes=(f"waiting for the head ({head.status})",))
    return None


def _note_head_unreachable(tick: _Tick, error: str) -> None:
    """Remember since when a running cluster's head has been silent: written once (the first silent tick), so the
    timeout counts from the first miss, not the last."""
    if tick.cluster.status != ClusterStatus.RUNNING or tick.cluster.head_unreachable_since is not None:
        return
    tick.cluster = replace(tick.cluster, head_unreachable_since=tick.now)
    tick.event("head-unreachable", f"the head agent does not answer: {error[:MAX_ERROR_CHARS]}")


def _fail_a_silent_head(tick: _Tick, timeout_s: float) -> None:
    """A running head listed by the cloud but silent for longer than `timeout_s` will not come back by itself (a
    deallocated VM stays deallocated; Azure's list shows it as running): the cluster fails, which terminates every
    instance, so its workers stop costing money. Its user sees why and can delete or re-create it."""
    since = tick.cluster.head_unreachable_since
    if tick.cluster.status != ClusterStatus.RUNNING or since is None:
        return
    silent_s = (tick.now - since).total_seconds()
    if silent_s > timeout_s:
        tick.failure = (
            f"the head agent has not answered since {since.isoformat()} ({silent_s:.0f} s, more than the "
            f"{timeout_s:g} s allowed): its VM is presumably deallocated or broken"
        )


def _fail_a_head_that_never_ran_ray(tick: _Tick, head: InstanceRecord) -> None:
    """A launched head whose agent has not answered within its type's launch timeout (a boot that failed, a VM that
    never started) would keep the cluster `creating` forever: its launch counts as failed, the VM goes, and the head
    is launched again, up to HEAD_LAUNCH_ATTEMPTS."""
    if head.status not in (S.REQUESTED, S.ALLOCATED):
        return
    node_type = tick.config.available_node_types.get(head.node_type)
    timeout_s = (node_type.launch_timeout_s if node_type else None) or DEFAULT_LAUNCH_TIMEOUT_S
    age_s = (tick.now - (head.launched_at or head.created_at)).total_seconds()
    if age_s > timeout_s:
        why = f"the head did not run Ray within {timeout_s:g} s of its launch"
        tick.move(head.instance_id, S.ALLOCATION_FAILED, why, error=why)


def _terminate_all(tick: _Tick, live: Sequence[InstanceRecord], why: str) -> None:
    for record in live:
        if record.status == S.QUEUED:
            tick.move(record.instance_id, S.TERMINATED, f"{why} before the launch was issued")
        elif record.status not in (S.TERMINATING, S.TERMINATION_FAILED):
            tick.move(record.instance_id, S.TERMINATING, why)


def _queue(tick: _Tick, node_type: str, *, is_head: bool, reason: str = "") -> None:
    instance_id = uuid.uuid4().hex[:16]
    live = [r for r in tick.records.values() if r.status.is_live]
    placement = offerings.place(
        tick.config, node_type, live=live, unavailable=offerings.in_force(tick.cluster.unavailable, tick.now)
    )
    if placement is None:
        # Every offering is avoided, yet the planner chose the type (the head, or no other type fits): its own
        # priority, spread over the zones as usual; a failure is recorded again.
        zones = tick.config.provider.zones()
        same_type = sum(1 for r in live if r.node_type == node_type)
        zone = zones[same_type % len(zones)] if zones else ""
        placement = offerings.Placement(zone, offerings.own_priority(tick.config, node_type), "")
    tick.records[instance_id] = InstanceRecord(
        cluster_name=tick.cluster.name,
        instance_id=instance_id,
        node_type=node_type,
        status=S.QUEUED,
        request_id=uuid.uuid4().hex,
        status_since=tick.now,
        created_at=tick.now,
        is_head=is_head,
        config_hash=tick.config.node_hash(node_type, is_head=is_head),
        availability_zone=placement.zone,
        priority="" if is_head else placement.priority,  # a head's priority is its node config's, never a fallback
    )
    tick.inserted.add(instance_id)
    where = " ".join(part for part in (placement.priority, f"zone {placement.zone}" if placement.zone else "") if part)
    tick.event(
        "launch",
        f"queued {'head ' if is_head else ''}{node_type} ({where})" + (f": {reason}" if reason else ""),
        instance_id,
    )


def _apply_termination(tick: _Tick, termination: Termination) -> None:
    record = tick.records.get(termination.instance_id)
    if record is None or record.is_head or not record.status.is_live:
        return
    if termination.drain and record.status == S.RAY_RUNNING and record.ray_node_id:
        tick.move(record.instance_id, S.DRAINING, termination.reason)
    elif lifecycle.can_transition(record.status, S.TERMINATING):
        tick.move(record.instance_id, S.TERMINATING, termination.reason)


def _next_cluster_record(
    tick: _Tick,
    *,
    ray: RayState | None,
    head_cloud: CloudInstance | None,
    decided: ScalingPlan,
    deps: ReconcileDeps,
    head_auth_error: str = "",
) -> ClusterRecord:
    cluster = tick.cluster
    status, reason = cluster.status, cluster.status_reason
    head = next((r for r in tick.records.values() if r.is_head and r.status.is_live), None)
    if status == ClusterStatus.CREATING and head is not None and head.status == S.RAY_RUNNING:
        status, reason = ClusterStatus.RUNNING, "head is running Ray"
    elif tick.failure:
        status, reason = ClusterStatus.FAILED, tick.failure
    head_info = cluster.head
    if head_cloud is not None and head_cloud.ray_address and _head_moved(head_info, head_cloud):
        extra = deps.head_info_extra(tick.config, cluster.name) if deps.head_info_extra else HeadInfo()
        head_info = HeadInfo(
            instance_id=head_cloud.instance_id,
            ray_address=head_cloud.ray_address,
            dashboard_url=head_cloud.dashboard_url,
            agent_url=head_cloud.agent_url,
            auth_token_path=extra.auth_token_path,
            public_ip=head_cloud.public_ip,
            vm_id=head_cloud.cloud_instance_id,
        )
    # The last decision changes only when its reasons do, so a steady state writes nothing.
    decision = cluster.last_decision
    # "no change" notes would bury the last real decision (a launch, a scale-down, why a type is avoided).
    reasons = [reason for reason in decided.reasons() if not reason.startswith("no change")]
    stored_reasons = json.loads(decision).get("reasons") if decision else None
    if reasons and reasons != stored_reasons:
        decision = json.dumps({"at": tick.now.isoformat(), "reasons": reasons})
    observation = cluster.last_observation if ray is None else _observation_json(ray, decided, tick.records.values())
    if ray is not None and ray.pending_bundles != pending_bundles_of(cluster.last_observation):
        # What the timeline draws pending demand from: one event when the count changes, none while it holds.
        tick.event(DEMAND_EVENT, demand_message(ray.pending_bundles))
    unavailable = tuple(u for u in cluster.unavailable if u.until > tick.now)
    if cluster.consecutive_failures:
        tick.event("recovered", f"tick succeeded after {cluster.consecutive_failures} failed in a row")
    if head_auth_error and not cluster.head_auth_error:
        tick.event("head-auth", f"the head agent refuses the cluster token: {head_auth_error}")
    elif cluster.head_auth_error and not head_auth_error:
        tick.event("head-auth", "the head agent accepts the cluster token again")
    return replace(
        cluster,
        status=status,
        status_reason=reason,
        head=head_info,
        last_decision=decision,
        last_observation=observation,
        unavailable=unavailable,
        # A tick that got this far succeeded: the failure count and backoff start over.
        consecutive_failures=0,
        last_error="",
        last_error_at=None,
        backoff_until=None,
        # Saved in step 5, before step 6 makes the first call that could create anything: any live record is
        # launched, or being terminated, in the cloud from now on.
        cloud_touched=cluster.cloud_touched or any(r.status.is_live for r in tick.records.values()),
        head_auth_error=head_auth_error,
    )


def pending_bundles_of(observation_json: str) -> int:
    """The pending bundles (tasks, actors, placement group bundles) of a stored observation; 0 when there is none."""
    try:
        observation = json.loads(observation_json) if observation_json else {}
        pending = sum(int(d.get("count", 0)) for d in observation.get("pending", []))
        gangs = sum(len(g.get("bundles", [])) * int(g.get("count", 1)) for g in observation.get("gangs", []))
    except (ValueError, TypeError, AttributeError):
        return 0
    return pending + gangs


def _head_moved(stored: HeadInfo, seen: CloudInstance) -> bool:
    """Whether the cloud shows the head elsewhere than the row says (a new head, or an address it did not have)."""
    return (stored.instance_id, stored.ray_address, stored.public_ip, stored.vm_id) != (
        seen.instance_id,
        seen.ray_address,
        seen.public_ip,
        seen.cloud_instance_id,
    )


def _observation_json(ray: RayState, decided: ScalingPlan, records: Iterable[InstanceRecord]) -> str:
    """What GET /api/clusters/{name} shows of Ray: stable between ticks unless Ray's demand changes (no timestamp).
    Label selectors appear only on demand that has them, so the observation of demand without is unchanged."""
    return json.dumps(
        {
            "pending": [_demand_json(d) for d in ray.pending],
            "gangs": [
                {"strategy": str(g.strategy), "bundles": [dict(b) for b in g.bundles], "count": g.count}
                | (
                    {"bundle_label_selectors": [_selectors_json(s) for s in g.bundle_selectors]}
                    if g.bundle_selectors
                    else {}
                )
                for g in ray.gangs
            ],
            "constraints": [_demand_json(d) for d in ray.constraints],
            "infeasible": [
                {"shape": format_shape(i.shape), "count": i.count, "reason": i.reason} for i in decided.infeasible
            ],
            # Feasible demand the plan launches nothing for, and why (max_workers, unavailable types, a full node).
            "waiting": [
                {
                    "shape": dict(w.shape),
                    "count": w.count,
                    "source": w.source,
                    "cause": str(w.cause),
                    "node_types": list(w.node_types),
                    "reason": w.reason,
                }
                for w in decided.waiting
            ],
            # What booting VMs reported to the head agent (their "at" is the agent's: stable between ticks).
            "boot_phases": boot_phases_observation(ray.boot_phases, records),
        },
        sort_keys=True,
    )


def _demand_json(demand: ShapeDemand) -> dict[str, object]:
    shown: dict[str, object] = {"shape": dict(demand.shape), "count": demand.count}
    if demand.selectors:
        shown["label_selectors"] = _selectors_json(demand.selectors)
    return shown


def _selectors_json(selectors: Sequence[LabelSelector]) -> list[list[dict[str, object]]]:
    """Ray's label selectors as [[{key, operator, values}]]: one list per alternative, every constraint must hold."""
    return [[{"key": k, "operator": op, "values": list(values)} for k, op, values in one] for one in selectors]


# ------------------------------------------------------------------------------------------------------------------
# 5 save
# ------------------------------------------------------------------------------------------------------------------


def _save(store: StateStore, tick: _Tick, new_cluster: ClusterRecord) -> None:
    """Write only what changed: a steady-state tick makes zero writes.

    The instance rows are committed together with the cluster's fence (one Table transaction in one partition), so
    two ticks that read the same state cannot both insert launches: the second commit fails on the fence's ETag.
    """
    changed = tick.changed()
    if changed:
        committed = store.commit_instances(tick.cluster.name, tick.fence_etag, changed)
        tick.fence_etag = committed.fence_etag
        for record in committed.records:
            tick.records[record.instance_id] = record
    # Final rows are pruned once they are old, so the instances partition does not grow forever.
    for record in list(tick.records.values()):
        if record.status.is_final and tick.now - record.status_since > FINAL_RECORD_RETENTION:
            store.delete_instance(record)
            del tick.records[record.instance_id]
    if new_cluster != tick.stored_cluster:
        tick.cluster = tick.stored_cluster = store.update_cluster(replace(new_cluster, updated_at=tick.now))
    else:
        tick.cluster = new_cluster


# ------------------------------------------------------------------------------------------------------------------
# 6 act
# ------------------------------------------------------------------------------------------------------------------


def _act(
    tick: _Tick,
    *,
    provider: CloudProvider,
    deps: ReconcileDeps,
    token: str,
    head_cloud: CloudInstance | None,
    ray: RayState | None,
) -> None:
    _launch_queued(tick, provider=provider, deps=deps, token=token, head_cloud=head_cloud)
    for record in list(tick.records.values()):
        # A node with a preemption notice drains itself in Ray (its node agent asked, with Azure's deadline).
        if record.status == S.DRAINING and record.preempt_deadline is None and head_cloud is not None and ray:
            _drain(tick, deps, token, record, head_cloud)
    for record in list(tick.records.values()):
        if record.status == S.TERMINATION_FAILED:
            tick.move(record.instance_id, S.TERMINATING, "retrying terminate")
    _terminate_doomed(tick, provider)
    if tick.cluster.status == ClusterStatus.DELETING:
        _finish_delete(tick, provider)
    elif tick.cluster.status == ClusterStatus.STOPPING:
        _finish_stop(tick)


def _terminate_doomed(tick: _Tick, provider: CloudProvider) -> None:
    """Call terminate for every instance moved to terminating this tick: all at once to a provider that terminates in
    batches (a scale set deletes the chosen VMs in one call), else one by one."""
    doomed = [tick.records[i] for i in sorted(tick.terminate_now) if tick.records[i].status == S.TERMINATING]
    tick.terminate_now.clear()
    if isinstance(provider, LaunchesInBatches) and doomed:
        outcomes = provider.terminate_many(tick.cluster.name, [record.instance_id for record in doomed])
        for record, error in zip(doomed, outcomes, strict=True):
            _terminated(tick, record, error)
    else:
        for record in doomed:
            try:
                provider.terminate(tick.cluster.name, record.instance_id)
            except CloudError as error:
                _terminated(tick, record, error)
            else:
                _terminated(tick, record, None)


def _launch_queued(
    tick: _Tick, *, provider: CloudProvider, deps: ReconcileDeps, token: str, head_cloud: CloudInstance | None
) -> None:
    """Issue every queued launch, the head first, oldest first: all at once to a provider that launches in batches
    (within the cloud's write budget), else one by one until the cloud throttles."""
    paused_until = tick.cluster.launches_paused_until
    if paused_until is not None and paused_until > tick.now:
        return
    queued = sorted(
        (r for r in tick.records.values() if r.status == S.QUEUED), key=lambda r: (not r.is_head, r.created_at)
    )
    launches: list[tuple[InstanceRecord, LaunchRequest]] = []
    for record in queued:
        request = _launch_request(tick, deps=deps, token=token, record=record, head_cloud=head_cloud)
        if request is not None:
            launches.append((record, request))
    if isinstance(provider, LaunchesInBatches) and launches:
        outcomes = provider.launch_many([request for _, request in launches])
        for (record, _), error in zip(launches, outcomes, strict=True):
            _launched(tick, record, error)
        return
    for record, request in launches:
        try:
            provider.launch(request)
        except CloudError as error:
            if _launched(tick, record, error):
                return  # throttled: the rest stay queued until Retry-After
        else:
            _launched(tick, record, None)


def _launch_request(
    tick: _Tick, *, deps: ReconcileDeps, token: str, record: InstanceRecord, head_cloud: CloudInstance | None
) -> LaunchRequest | None:
    """The request for one queued record; None when it cannot be issued yet (or ever: then it failed)."""
    node_type = tick.config.available_node_types.get(record.node_type)
    if node_type is None:
        tick.move(record.instance_id, S.ALLOCATION_FAILED, f"node type {record.node_type} is not in the config")
        return None
    if not record.is_head and (head_cloud is None or not head_cloud.ray_address):
        return None  # workers need the head's address; they stay queued until it is known
    return LaunchRequest(
        cluster_name=tick.cluster.name,
        instance_id=record.instance_id,
        request_id=record.request_id,
        node_type=record.node_type,
        is_head=record.is_head,
        resources=dict(node_type.resources),
        node_config=dict(node_type.node_config),
        cluster_token=token,
        config_hash=record.config_hash,
        head_address=head_cloud.ray_address if head_cloud is not None and not record.is_head else "",
        control_plane_url=deps.control_plane_url,
        availability_zone=record.availability_zone,
        labels=dict(node_type.labels),
        pool_target=_pool_target(tick, record.node_type),
        priority=record.priority,
    )


def _pool_target(tick: _Tick, node_type: str) -> int:
    """The capacity a scale-set node type should have: its live records, but not those being terminated (a scale set
    lowers its capacity when it accepts their deletion; counting them would make it create one VM too many each)."""
    return sum(
        1 for r in tick.records.values() if r.node_type == node_type and r.status.is_live and r.status != S.TERMINATING
    )


def _launched(tick: _Tick, record: InstanceRecord, error: CloudError | None) -> bool:
    """Record what became of one launch. Returns True when the cloud throttles us (stop launching this tick)."""
    if isinstance(error, ThrottledError):
        # Launches wait for the Retry-After the cloud asked for; the instance stays queued until then.
        until = tick.now + timedelta(seconds=error.retry_after_s)
        paused = tick.cluster.launches_paused_until
        if paused is None or paused <= tick.now or until > paused:
            tick.cluster = replace(tick.cluster, launches_paused_until=until)
            message = f"launch of {record.node_type} throttled: launches paused until {until.isoformat()}"
            tick.event("throttled", message)
        return True
    if isinstance(error, (CapacityError, QuotaError)):
        kind = "capacity" if isinstance(error, CapacityError) else "quota"
        _mark_unavailable(tick, record, kind, error.ttl_s, f"{kind}: {error.code or error}")
        tick.move(record.instance_id, S.ALLOCATION_FAILED, f"{kind} error {error.code}", error=str(error))
        return False
    if error is not None:
        if error.retryable and not lifecycle.is_stuck(record, tick.now):
            tick.event("launch-retry", f"launch of {record.node_type} failed, retrying next tick: {error}")
        else:
            tick.move(record.instance_id, S.ALLOCATION_FAILED, "launch failed", error=str(error))
        return False
    tick.actions.append(f"launch {record.node_type} {record.instance_id}")
    tick.move(record.instance_id, S.REQUESTED, "launch accepted by the cloud")
    tick.records[record.instance_id] = replace(tick.records[record.instance_id], launched_at=tick.now)
    return False


def _drain(tick: _Tick, deps: ReconcileDeps, token: str, record: InstanceRecord, head_cloud: CloudInstance) -> None:
    try:
        result = deps.ray_reader.drain(
            head_cloud.agent_url, token, record.ray_node_id, "idle", f"scale-down of {record.instance_id}"
        )
    except HeadAuthError as error:
        tick.event("head-auth", f"drain of {record.instance_id} refused the cluster token: {error}", record.instance_id)
        return
    except HeadUnreachableError as error:
        tick.event("drain-unanswered", f"drain of {record.instance_id} not answered: {error}", record.instance_id)
        return
    if result.accepted:
        tick.move(record.instance_id, S.TERMINATING, "Ray accepted the drain")
        tick.actions.append(f"drain {record.instance_id}")
    else:
        tick.move(record.instance_id, S.RAY_RUNNING, f"Ray refused the drain: {result.rejection_reason}")
        tick.event("drain-refused", f"{record.instance_id} kept: {result.rejection_reason}", record.instance_id)


def _terminated(tick: _Tick, record: InstanceRecord, error: CloudError | None) -> None:
    """Record what became of one terminate call."""
    if isinstance(error, NotFoundError):
        tick.move(record.instance_id, S.TERMINATED, "already gone")
    elif error is not None:
        tick.move(record.instance_id, S.TERMINATION_FAILED, "terminate failed", error=str(error))
    else:
        tick.actions.append(f"terminate {record.node_type} {record.instance_id}")


def _finish_delete(tick: _Tick, provider: CloudProvider) -> None:
    if any(r.status.is_live for r in tick.records.values()):
        return
    try:
        report = provider.destroy_cluster(tick.cluster.name)
    except CloudError as error:
        tick.event("destroy-retry", f"cleaning up the cluster's resources failed, retrying: {error}")
        return
    for removed in report.removed:
        tick.event("removed", removed)
    if report.complete:
        tick.cluster = replace(tick.cluster, status=ClusterStatus.DELETED, status_reason="every resource removed")
        tick.event("status", "cluster deleted")
        tick.actions.append("cluster deleted")


def _finish_stop(tick: _Tick) -> None:
    """A stopping cluster whose every instance is gone is stopped: its network, row and config stay."""
    if any(r.status.is_live for r in tick.records.values()):
        return
    tick.cluster = replace(
        tick.cluster,
        status=ClusterStatus.STOPPED,
        status_reason=f"stopped by autostop at {tick.now.isoformat()}: every instance removed, network and config "
        "kept; POST /api/clusters/{name}/start (or `azray up`) starts it again",
        head=HeadInfo(),
        idle_since=None,
    )
    tick.event("status", "cluster stopped: every instance removed (network and config kept)")
    tick.actions.append("cluster stopped")


# ------------------------------------------------------------------------------------------------------------------
# Autostop: a running cluster idle for `autostop.idle_minutes` is stopped (or deleted with `down: true`)
# ------------------------------------------------------------------------------------------------------------------

LAUNCHING = frozenset({S.QUEUED, S.REQUESTED, S.ALLOCATED})


def autostop_busy(ray: RayState, records: Iterable[InstanceRecord]) -> str:
    """Why the cluster is not idle for autostop ("" when it is): pending demand, a busy node, a running Ray job, a
    launching worker, or jobs the head agent cannot report (then a job might run: the cluster is kept)."""
    if ray.pending_bundles or ray.constraints:
        return "pending demand"
    busy = [node for node in ray.nodes if node.status == RayNodeStatus.RUNNING]
    if busy:
        return f"{len(busy)} busy Ray node(s)"
    if ray.jobs_running is None:
        return "the head agent does not report Ray jobs"
    if ray.jobs_running:
        return f"{ray.jobs_running} running Ray job(s)"
    launching = [r for r in records if not r.is_head and r.status in LAUNCHING]
    if launching:
        return f"{len(launching)} worker(s) launching"
    return ""


def _autostop(tick: _Tick, ray: RayState | None) -> None:
    """Track since when the cluster is idle, and stop (or delete) it once that lasted `autostop.idle_minutes`.

    Only a running cluster whose head agent answered this tick is judged: without Ray's view nothing is known, and
    the idle period neither starts nor ends."""
    autostop = tick.config.autostop
    cluster = tick.cluster
    if autostop is None or cluster.status != ClusterStatus.RUNNING:
        if cluster.idle_since is not None:
            tick.cluster = replace(cluster, idle_since=None)
        return
    if ray is None:
        return
    busy = autostop_busy(ray, tick.records.values())
    if busy:
        if cluster.idle_since is not None:
            tick.cluster = replace(cluster, idle_since=None)
        return
    limit = timedelta(minutes=autostop.idle_minutes)
    if cluster.idle_since is None:
        tick.cluster = replace(cluster, idle_since=tick.now)
        tick.event(
            "autostop",
            f"idle (no pending demand, no busy node, no running Ray job): the cluster "
            f"{'is deleted' if autostop.down else 'stops'} at {(tick.now + limit).isoformat()} unless work arrives",
        )
        return
    if tick.now - cluster.idle_since < limit:
        return
    why = (
        f"autostop: idle since {cluster.idle_since.isoformat()} ({autostop.idle_minutes:g} min without pending "
        "demand, busy nodes or running Ray jobs)"
    )
    if autostop.down:
        tick.cluster = replace(cluster, status=ClusterStatus.DELETING, status_reason=f"{why}; down: true deletes it")
        tick.event("autostop", f"{why}: deleting the cluster (down: true)")
    else:
        tick.cluster = replace(cluster, status=ClusterStatus.STOPPING, status_reason=f"{why}; stopping")
        tick.event("autostop", f"{why}: stopping every instance, head included; network and config stay")
    tick.actions.append("autostop")


def _seed_head_address(provider: CloudProvider, cluster: ClusterRecord, records: Iterable[InstanceRecord]) -> None:
    """Hand the stored head address to a provider that would otherwise read it from the cloud again."""
    if not isinstance(provider, RemembersHeadAddress) or not cluster.head.ray_address:
        return
    head = next((r for r in records if r.is_head and r.status.is_live and r.cloud_instance_id), None)
    if head is not None and cluster.head.instance_id == head.instance_id:
        provider.remember_address(head.cloud_instance_id, cluster.head.ray_address.rpartition(":")[0])


def summarize_instances(records: Sequence[InstanceRecord]) -> dict[str, int]:
    """Counts by status, for status lines and logs."""
    counts: dict[str, int] = {}
    for record in records:
        counts[str(record.status)] = counts.get(str(record.status), 0) + 1
    return counts
