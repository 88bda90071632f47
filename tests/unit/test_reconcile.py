"""The reconcile shell, one tick at a time, on the in-memory store and fakes of our own protocols."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autoscaler.config import parse_cluster_config
from autoscaler.model import (
    CloudInstance,
    CloudState,
    ClusterRecord,
    ClusterStatus,
    InstanceStatus,
    RayState,
    ShapeDemand,
    shape_of,
)
from autoscaler.ray_state import HeadAuthError
from autoscaler.reconcile import ReconcileDeps, TickResult, reconcile
from autoscaler.state import InMemoryStateStore
from autoscaler.views import status_reason_of
from provisioning.cloud import CapacityError, ThrottledError
from tests.support.fakes import FakeCloudProvider, FakeRayReader

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CONFIG = """
cluster_name: unit
max_workers: 4
idle_timeout_minutes: 1
provider: {type: local}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
  cpu: {resources: {CPU: 2}, min_workers: 0, max_workers: 3, node_config: {}}
head_node_type: head
"""
S = InstanceStatus


class CountingStore(InMemoryStateStore):
    """The in-memory store, counting writes (a steady-state tick must make none)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def update_cluster(self, record: ClusterRecord) -> ClusterRecord:
        self.writes += 1
        return super().update_cluster(record)

    def commit_instances(self, cluster_name: str, fence_etag: str, records: Any) -> Any:
        self.writes += 1
        return super().commit_instances(cluster_name, fence_etag, records)


@dataclass
class World:
    store: CountingStore = field(default_factory=CountingStore)
    cloud: FakeCloudProvider = field(default_factory=FakeCloudProvider)
    ray: FakeRayReader = field(default_factory=FakeRayReader)
    now: datetime = T0

    def deps(self) -> ReconcileDeps:
        return ReconcileDeps(
            store=self.store,
            provider_for=lambda config: self.cloud,
            ray_reader=self.ray,
            token_for=lambda name, generation: f"token-{name}-{generation}",
            clock=lambda: self.now,
        )

    def tick(self, advance_s: float = 5.0) -> TickResult:
        self.now += timedelta(seconds=advance_s)
        return reconcile("unit", self.deps())

    def nodes(self, *, head: bool | None = None) -> list[Any]:
        return [r for r in self.store.list_instances("unit") if head is None or r.is_head == head]

    def live_workers(self) -> list[Any]:
        return [r for r in self.nodes(head=False) if r.status.is_live]

    def cluster(self) -> ClusterRecord:
        record = self.store.get_cluster("unit")
        assert record is not None
        return record


def new_world(config: str = CONFIG) -> World:
    world = World()
    parsed = parse_cluster_config(config)
    world.store.insert_cluster(
        ClusterRecord(
            name="unit",
            status=ClusterStatus.CREATING,
            config_json=parsed.config.to_json(),
            config_hash=parsed.config.config_hash(),
            generation=1,
            created_at=T0,
            updated_at=T0,
        )
    )
    return world


def running_world() -> World:
    """A cluster whose head runs Ray and answers."""
    world = new_world()
    world.tick()
    head = world.nodes(head=True)[0]
    world.ray.register(head.instance_id, "head", cpus=0, head=True, idle_s=1)
    world.tick()
    assert world.cluster().status == ClusterStatus.RUNNING
    return world


def demand(cpus: float, count: int) -> RayState:
    return RayState(pending=(ShapeDemand(shape_of({"CPU": cpus}), count),))


def world_with_one_running_worker() -> tuple[World, Any]:
    """A running cluster with one cpu worker that registered with Ray and is not yet idle for long."""
    world = running_world()
    world.ray.state = replace(world.ray.state, pending=demand(2, 1).pending)
    world.tick()
    [worker] = world.live_workers()
    world.ray.state = replace(world.ray.state, pending=())
    world.ray.register(worker.instance_id, "cpu", idle_s=1, cpus=2)
    world.tick()
    return world, worker


def test_first_tick_of_a_new_cluster_launches_its_head():
    world = new_world()
    result = world.tick()
    assert result.outcome == "reconciled"
    [head] = world.nodes()
    assert (head.is_head, head.node_type, head.status) == (True, "head", S.REQUESTED)
    assert world.cloud.calls.count(f"launch head {head.instance_id}") == 1


def test_cluster_turns_running_when_the_head_agent_answers():
    world = running_world()
    assert world.nodes(head=True)[0].status == S.RAY_RUNNING
    assert world.cluster().head.ray_address == "127.0.0.1:6379"


def test_pending_demand_launches_workers_with_a_reason():
    world = running_world()
    world.ray.state = replace(world.ray.state, pending=demand(1, 4).pending)
    world.tick()
    workers = world.live_workers()
    assert len(workers) == 2  # 4 x {CPU: 1} on 2-CPU workers
    assert {w.status for w in workers} == {S.REQUESTED}
    decision = json.loads(world.cluster().last_decision)
    assert any(reason.startswith("launch 2 x cpu") for reason in decision["reasons"]), decision


def test_a_steady_state_tick_makes_no_writes_and_one_list_call():
    world = running_world()
    world.tick()
    writes, lists = world.store.writes, world.cloud.calls.count("list unit")
    world.tick()
    assert world.store.writes == writes
    assert world.cloud.calls.count("list unit") == lists + 1


def test_registered_worker_becomes_ray_running_and_idle_one_is_drained_then_terminated():
    world, worker = world_with_one_running_worker()
    assert world.live_workers()[0].status == S.RAY_RUNNING
    world.ray.register(worker.instance_id, "cpu", idle_s=120, cpus=2)
    world.tick()
    assert world.ray.drains == [f"node-{worker.instance_id}"]
    assert world.live_workers()[0].status == S.TERMINATING
    world.tick()
    assert world.live_workers() == []


def test_a_node_busy_when_its_drain_is_attempted_is_kept():
    world, worker = world_with_one_running_worker()
    world.ray.register(worker.instance_id, "cpu", idle_s=120, cpus=2)
    world.ray.refuse_drain = "The node to be idle terminated is no longer idle."
    world.tick()
    assert [w.status for w in world.live_workers()] == [S.RAY_RUNNING]
    assert f"terminate {worker.instance_id}" not in world.cloud.calls
    assert any(e.kind == "drain-refused" for e in world.store.list_events("unit"))


def test_an_unreachable_head_causes_no_scale_down():
    world, worker = world_with_one_running_worker()
    world.ray.register(worker.instance_id, "cpu", idle_s=600, cpus=2)
    world.ray.reachable = False
    for _ in range(5):
        world.tick(advance_s=60)
    assert [w.status for w in world.live_workers()] == [S.RAY_RUNNING]


def test_an_evicted_worker_is_noticed_and_replaced_while_demand_remains():
    world = running_world()
    world.ray.state = replace(world.ray.state, pending=demand(2, 1).pending)
    world.tick()
    world.tick()  # the cloud lists it: allocated
    [worker] = world.live_workers()
    world.cloud.evict("unit", worker.instance_id)
    world.tick()
    statuses = {r.instance_id: r.status for r in world.nodes(head=False)}
    assert statuses[worker.instance_id] == S.TERMINATED
    assert [s for i, s in statuses.items() if i != worker.instance_id] == [S.REQUESTED]


def test_a_capacity_error_fails_the_launch_and_marks_the_type_unavailable():
    world = running_world()
    world.cloud.launch_errors.append(CapacityError("no spot capacity", code="AllocationFailed", ttl_s=3600))
    world.ray.state = replace(world.ray.state, pending=demand(2, 1).pending)
    world.tick()
    [failed] = world.nodes(head=False)
    assert failed.status == S.ALLOCATION_FAILED
    [unavailable] = world.cluster().unavailable
    assert unavailable.node_type == "cpu"
    assert unavailable.until == world.now + timedelta(seconds=3600)


def test_a_throttled_launch_waits_for_retry_after_then_launches():
    world = running_world()
    world.cloud.launch_errors.append(ThrottledError("429", retry_after_s=20))
    world.ray.state = replace(world.ray.state, pending=demand(2, 1).pending)
    world.tick()
    [worker] = world.live_workers()
    assert worker.status == S.QUEUED
    world.tick(advance_s=10)  # still inside Retry-After: no launch call
    assert world.live_workers()[0].status == S.QUEUED
    assert world.cloud.calls.count(f"launch cpu {worker.instance_id}") == 1
    world.tick(advance_s=15)
    assert world.live_workers()[0].status == S.REQUESTED


def test_deleting_terminates_every_instance_then_removes_the_network_and_ends_deleted():
    world = running_world()
    world.store.update_cluster(replace(world.cluster(), status=ClusterStatus.DELETING))
    world.tick()
    world.tick()
    assert world.cluster().status == ClusterStatus.DELETED
    assert world.cloud.destroyed == ["unit"]
    assert all(not r.status.is_live for r in world.nodes())


def test_a_vanished_running_head_fails_the_cluster():
    world = running_world()
    head = world.nodes(head=True)[0]
    world.cloud.evict("unit", head.instance_id)
    world.tick()
    world.tick()
    assert world.cluster().status == ClusterStatus.FAILED


def test_a_deallocated_worker_is_terminated():
    world = running_world()
    world.ray.state = replace(world.ray.state, pending=demand(2, 1).pending)
    world.tick()
    [worker] = world.live_workers()
    world.cloud.set_state("unit", worker.instance_id, CloudState.STOPPED)
    world.tick()
    assert f"terminate {worker.instance_id}" in world.cloud.calls


@pytest.mark.parametrize("status", [ClusterStatus.DELETED])
def test_an_inactive_cluster_is_not_reconciled(status: ClusterStatus):
    world = new_world()
    world.store.update_cluster(replace(world.cluster(), status=status))
    assert world.tick().outcome == "inactive"
    assert world.cloud.calls == []


def test_a_booting_workers_reported_phase_shows_in_the_cluster_view_then_joined():
    from autoscaler.model import BootPhase, BootPhaseReport
    from autoscaler.views import ClusterView

    world = running_world()
    world.ray.state = replace(world.ray.state, pending=demand(2, 1).pending)
    world.tick()
    world.tick()  # the cloud lists it: allocated
    [worker] = world.live_workers()
    reported_at = T0 + timedelta(seconds=30)

    def view_of_worker() -> Any:
        view = ClusterView.build(world.cluster(), "local", world.nodes(), [])
        return next(node for node in view.nodes if node.instance_id == worker.instance_id)

    assert view_of_worker().boot_phase == BootPhase.VM_CREATED
    booting = {worker.instance_id: BootPhaseReport(BootPhase.CLOUD_INIT_RUNNING, reported_at, "bootstrap started")}
    world.ray.state = replace(world.ray.state, boot_phases=booting)
    world.tick()
    shown = view_of_worker()
    assert (shown.boot_phase, shown.boot_phase_at, shown.boot_phase_detail) == (
        BootPhase.CLOUD_INIT_RUNNING,
        reported_at,
        "bootstrap started",
    )
    writes = world.store.writes
    world.tick()
    assert world.store.writes == writes, "the same report again writes nothing"
    world.ray.register(worker.instance_id, "cpu", idle_s=1, cpus=2)
    world.tick()
    assert view_of_worker().boot_phase == BootPhase.JOINED


@dataclass
class TokenRefusingRayReader(FakeRayReader):
    """A head agent that is up and answers 403 to our token while `refusing` is set."""

    refusing: bool = False

    def read_state(self, agent_url: str, token: str) -> RayState:
        if self.refusing:
            raise HeadAuthError("head agent at http://127.0.0.1:8270 refused the cluster token (403)")
        return super().read_state(agent_url, token)

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> Any:
        if self.refusing:
            raise HeadAuthError("head agent at http://127.0.0.1:8270 refused the cluster token (403)")
        return super().drain(agent_url, token, ray_node_id, reason, message)


def test_a_head_refusing_the_token_is_recorded_once_shown_in_the_status_and_scales_nothing_down():
    from autoscaler.views import ClusterView

    world, worker = world_with_one_running_worker()
    world.ray = TokenRefusingRayReader(state=world.ray.state, refusing=True)
    world.ray.register(worker.instance_id, "cpu", idle_s=600, cpus=2)
    for _ in range(3):
        assert world.tick(advance_s=60).outcome == "reconciled"
    assert [w.status for w in world.live_workers()] == [S.RAY_RUNNING]
    auth_events = [e for e in world.store.list_events("unit", limit=200) if e.kind == "head-auth"]
    assert len(auth_events) == 1
    assert "refuses the cluster token" in auth_events[0].message
    view = ClusterView.build(world.cluster(), "local", world.nodes(), [])
    assert "refused the cluster token (403)" in view.head_auth_error
    assert "the head agent refuses the cluster token" in view.status_reason


def test_a_head_that_accepts_the_token_again_clears_the_auth_error():
    world, _ = world_with_one_running_worker()
    world.ray = TokenRefusingRayReader(state=world.ray.state, refusing=True)
    world.tick()
    world.ray.refusing = False
    world.tick()
    assert world.cluster().head_auth_error == ""
    messages = [e.message for e in world.store.list_events("unit", limit=200) if e.kind == "head-auth"]
    assert messages[0] == "the head agent accepts the cluster token again"


def test_an_unreachable_head_is_not_reported_as_an_auth_error():
    world, _ = world_with_one_running_worker()
    world.ray.reachable = False
    world.tick()
    assert world.cluster().head_auth_error == ""
    assert not any(e.kind == "head-auth" for e in world.store.list_events("unit", limit=200))


def test_a_drain_refused_for_the_token_is_an_auth_event_not_an_unanswered_drain():
    world, worker = world_with_one_running_worker()
    reader = TokenRefusingRayReader(state=world.ray.state)
    world.ray = reader
    world.ray.register(worker.instance_id, "cpu", idle_s=600, cpus=2)
    original_drain = reader.drain

    def refuse_drain(*args: Any) -> Any:
        reader.refusing = True
        try:
            return original_drain(*args)
        finally:
            reader.refusing = False

    reader.drain = refuse_drain  # type: ignore[method-assign, assignment]
    world.tick()
    kinds = [e.kind for e in world.store.list_events("unit", limit=200)]
    assert "head-auth" in kinds
    assert "drain-unanswered" not in kinds


def test_an_instance_tagged_for_the_cluster_but_unknown_is_terminated_in_the_same_tick():
    world = running_world()
    orphan = CloudInstance(
        instance_id="orphan01",
        cluster_name="unit",
        node_type="cpu",
        request_id="r-orphan",
        state=CloudState.RUNNING,
        cloud_instance_id="fake-orphan01",
    )
    world.cloud.instances[("unit", "orphan01")] = orphan

    world.tick()

    assert "terminate orphan01" in world.cloud.calls


def test_a_saved_termination_whose_call_never_went_out_is_made_at_the_next_tick():
    # A crash between saving the intent (terminating) and acting: the cloud still runs the instance.
    world, worker = world_with_one_running_worker()
    record = next(r for r in world.nodes(head=False) if r.instance_id == worker.instance_id)
    snapshot = world.store.read_instances("unit")
    world.store.commit_instances(
        "unit", snapshot.fence_etag, [replace(record, status=InstanceStatus.TERMINATING, status_since=world.now)]
    )
    world.cloud.calls.clear()

    world.tick()

    assert f"terminate {worker.instance_id}" in world.cloud.calls


def test_a_head_that_never_runs_ray_is_relaunched_then_fails_the_cluster_after_three_attempts():
    # The head agent never answers (a boot that failed): without a bound the cluster would wait forever.
    world = new_world()
    world.ray.reachable = False
    heads_launched = set()
    for _ in range(200):
        world.tick(advance_s=60)
        heads_launched |= {r.instance_id for r in world.nodes(head=True)}
        if world.cluster().status == ClusterStatus.FAILED:
            break

    assert world.cluster().status == ClusterStatus.FAILED
    assert "the head failed to launch 3 times" in world.cluster().status_reason
    assert "did not run Ray within 600 s" in world.cluster().status_reason
    assert len(heads_launched) == 3
    assert not [r for r in world.nodes() if r.status.is_live]


def test_a_silent_head_is_recorded_once_then_fails_the_cluster_after_the_timeout():
    world, worker = world_with_one_running_worker()
    world.ray.reachable = False  # a deallocated head VM: still listed as running, its agent silent
    world.tick()
    since = world.cluster().head_unreachable_since
    assert since == world.now
    assert "has not answered since" in status_reason_of(world.cluster())
    for _ in range(9):
        world.tick(advance_s=60)
    assert world.cluster().head_unreachable_since == since  # written once: the timeout counts from the first miss
    assert world.cluster().status == ClusterStatus.RUNNING
    assert [e.kind for e in world.store.list_events("unit")].count("head-unreachable") == 1
    world.tick(advance_s=61)  # 601 s of silence
    cluster = world.cluster()
    assert cluster.status == ClusterStatus.FAILED
    assert "has not answered since" in cluster.status_reason
    assert all(r.status in (S.TERMINATING, S.TERMINATED) for r in world.nodes())
    assert f"terminate {worker.instance_id}" in world.cloud.calls


def test_a_head_that_answers_again_clears_its_silence_and_the_timeout_starts_over():
    world = running_world()
    world.ray.reachable = False
    world.tick()
    world.tick(advance_s=500)
    world.ray.reachable = True
    world.tick()
    assert world.cluster().head_unreachable_since is None
    world.ray.reachable = False
    world.tick()
    world.tick(advance_s=500)
    assert world.cluster().status == ClusterStatus.RUNNING


def test_the_head_unreachable_timeout_is_the_deps_setting():
    world = running_world()
    world.ray.reachable = False
    deps = replace(world.deps(), head_unreachable_timeout_s=30.0)
    world.now += timedelta(seconds=5)
    reconcile("unit", deps)
    world.now += timedelta(seconds=31)
    reconcile("unit", deps)
    assert world.cluster().status == ClusterStatus.FAILED
