"""The fault-injection kit of the fault campaign: the simulated cloud keeps the provider contract, the simulated Ray
behaves as Ray does where the shell depends on it, and every wrapper injects exactly what was planned."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from autoscaler.config import parse_cluster_config
from autoscaler.model import CloudState, ClusterRecord, ClusterStatus, LaunchRequest, RayNodeStatus
from autoscaler.ray_state import HeadUnreachableError
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import Service
from autoscaler.state import InMemoryStateStore
from autoscaler.views import ReconcileMessage
from provisioning.cloud import ThrottledError, TransientError
from tests.support.fakes import ContractHarness
from tests.support.fault_injection import (
    AsyncFailure,
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
from tests.support.provider_contract import CONTRACT_CHECKS, ProviderHarness

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def request(instance_id: str, *, cluster: str = "c", head: bool = False, cpus: float = 2.0) -> LaunchRequest:
    return LaunchRequest(
        cluster_name=cluster,
        instance_id=instance_id,
        request_id=f"req-{instance_id}",
        node_type="head" if head else "small",
        is_head=head,
        resources={"CPU": 0.0 if head else cpus},
        node_config={},
        cluster_token="token",
        config_hash="hash",
    )


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__)
def test_the_simulated_cloud_keeps_the_provider_contract(check: Callable[[ProviderHarness], None]):
    check(ContractHarness(SimCloud(SimClock(NOW))))


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__)
def test_the_faulty_provider_with_nothing_planned_keeps_the_provider_contract(
    check: Callable[[ProviderHarness], None],
):
    clock = SimClock(NOW)
    check(ContractHarness(FaultyCloudProvider(SimCloud(clock), FaultInjector(clock))))


# -- the simulated cloud -----------------------------------------------------------------------------------------------


@dataclass
class Sim:
    clock: SimClock = field(default_factory=lambda: SimClock(NOW))
    cloud: SimCloud = field(init=False)
    ray: SimRay = field(init=False)

    def __post_init__(self) -> None:
        self.cloud = SimCloud(
            self.clock, boot_delay_s=(10, 10), ray_join_delay_s=(5, 5), terminate_delay_s=(8, 8), rng=random.Random(1)
        )
        self.ray = SimRay(self.cloud, self.clock)

    def states(self, cluster: str = "c") -> dict[str, CloudState]:
        return {i.instance_id: i.state for i in self.cloud.list_instances(cluster)}

    def running_head(self) -> None:
        self.cloud.launch(request("h", head=True))
        self.clock.advance(15)


def test_an_instance_is_pending_for_its_boot_delay_then_running():
    sim = Sim()
    sim.cloud.launch(request("a"))
    assert sim.states() == {"a": CloudState.PENDING}
    sim.clock.advance(10)
    assert sim.states() == {"a": CloudState.RUNNING}


def test_a_terminated_instance_is_listed_terminating_for_a_while_then_gone():
    sim = Sim()
    sim.cloud.launch(request("a"))
    sim.clock.advance(10)
    sim.cloud.terminate("c", "a")
    assert sim.states() == {"a": CloudState.TERMINATING}
    sim.clock.advance(8)
    assert sim.states() == {}


def test_an_async_capacity_failure_lists_the_instance_failed_with_its_kind():
    sim = Sim()
    sim.cloud.async_failures.append(AsyncFailure("capacity", "ZonalAllocationFailed", 60))
    sim.cloud.launch(request("a"))
    sim.clock.advance(10)
    [listed] = sim.cloud.list_instances("c")
    assert (listed.state, listed.failure_kind, listed.failure_code, listed.failure_ttl_s) == (
        CloudState.FAILED,
        "capacity",
        "ZonalAllocationFailed",
        60,
    )


def test_launch_is_idempotent_and_a_launch_after_termination_is_recorded_as_a_new_vm():
    sim = Sim()
    sim.cloud.launch(request("a"))
    sim.cloud.launch(request("a"))
    assert len(sim.cloud.list_instances("c")) == 1
    sim.cloud.terminate("c", "a")
    sim.clock.advance(8)
    sim.cloud.launch(request("a"))
    assert sim.cloud.relaunched_after_termination == [("c", "a")]


def test_destroy_is_incomplete_while_instances_are_deleting_then_removes_the_network():
    sim = Sim()
    sim.cloud.launch(request("a"))
    first = sim.cloud.destroy_cluster("c")
    assert not first.complete
    assert "c" in sim.cloud.networks
    sim.clock.advance(8)
    second = sim.cloud.destroy_cluster("c")
    assert second.complete
    assert sim.cloud.current("c") == []
    assert "c" not in sim.cloud.networks


@pytest.mark.parametrize(
    ("mode", "listed"), [("delete", None), ("deallocate", CloudState.RUNNING), ("stopped", CloudState.STOPPED)]
)
def test_an_eviction_deletes_or_deallocates_and_ray_reports_the_node_dead(mode: str, listed: CloudState | None):
    sim = Sim()
    sim.running_head()
    sim.cloud.launch(request("w"))
    sim.clock.advance(15)
    sim.cloud.evict("c", "w", mode)
    assert sim.states().get("w") == listed
    nodes = {n.instance_id: n.status for n in sim.ray.state_of("c").nodes}
    assert nodes.get("w") in (None, RayNodeStatus.DEAD)
    if listed is not None:
        assert nodes["w"] == RayNodeStatus.DEAD


# -- the simulated Ray -------------------------------------------------------------------------------------------------


def test_demand_is_packed_on_joined_workers_and_the_rest_is_pending():
    sim = Sim()
    sim.running_head()
    sim.cloud.launch(request("w", cpus=2))
    sim.ray.set_demand("c", 3)
    assert sim.ray.pending("c") == 3  # not joined yet
    sim.clock.advance(15)
    state = sim.ray.state_of("c")
    assert sim.ray.pending("c") == 1
    worker = next(n for n in state.nodes if n.instance_id == "w")
    assert worker.status == RayNodeStatus.RUNNING


def test_an_idle_worker_reports_how_long_it_is_idle_and_a_busy_one_refuses_an_idle_drain():
    sim = Sim()
    sim.running_head()
    sim.cloud.launch(request("w"))
    sim.clock.advance(15)
    sim.ray.state_of("c")
    sim.clock.advance(30)
    worker = next(n for n in sim.ray.state_of("c").nodes if n.instance_id == "w")
    assert (worker.status, worker.idle_duration_s) == (RayNodeStatus.IDLE, 30.0)
    sim.ray.set_demand("c", 1)
    refused = sim.ray.drain("http://127.0.0.1:8270/sim/c", "t", "node-w", "idle", "scale-down")
    assert not refused.accepted
    sim.ray.set_demand("c", 0)
    accepted = sim.ray.drain("http://127.0.0.1:8270/sim/c", "t", "node-w", "idle", "scale-down")
    assert accepted.accepted
    assert next(n for n in sim.ray.state_of("c").nodes if n.instance_id == "w").status == RayNodeStatus.DRAINING


def test_a_head_that_does_not_run_ray_does_not_answer():
    sim = Sim()
    sim.cloud.launch(request("h", head=True))
    with pytest.raises(HeadUnreachableError):
        sim.ray.read_state("http://127.0.0.1:8270/sim/c", "t")  # still booting
    sim.clock.advance(15)
    assert sim.ray.read_state("http://127.0.0.1:8270/sim/c", "t").nodes
    sim.cloud.evict("c", "h", "deallocate")
    with pytest.raises(HeadUnreachableError):
        sim.ray.read_state("http://127.0.0.1:8270/sim/c", "t")


# -- the injector and the wrappers -------------------------------------------------------------------------------------


def faulty_cloud() -> tuple[SimClock, FaultInjector, SimCloud, FaultyCloudProvider]:
    clock = SimClock(NOW)
    injector = FaultInjector(clock)
    cloud = SimCloud(clock)
    return clock, injector, cloud, FaultyCloudProvider(cloud, injector)


def test_a_planned_cloud_error_fails_one_call_of_its_kind_and_is_counted():
    _, injector, cloud, provider = faulty_cloud()
    injector.plan_cloud_error("launch", PlannedCloudError("throttle", ThrottledError("429", retry_after_s=20)))
    provider.list_instances("c")
    with pytest.raises(ThrottledError):
        provider.launch(request("a"))
    assert cloud.current("c") == []
    provider.launch(request("a"))
    assert [i.instance_id for i in cloud.current("c")] == ["a"]
    assert injector.log.counts == {"throttle": 1}


def test_a_timeout_after_the_call_took_effect_raises_with_the_instance_created():
    _, injector, cloud, provider = faulty_cloud()
    injector.plan_cloud_error("launch", PlannedCloudError("timeout", TransientError("timed out"), applied=True))
    with pytest.raises(TransientError):
        provider.launch(request("a"))
    assert [i.instance_id for i in cloud.current("c")] == ["a"]


def test_a_crash_fires_at_the_armed_checkpoint_only():
    _, injector, cloud, provider = faulty_cloud()
    injector.arm_crash(3, targets=("cloud",))
    provider.list_instances("c")  # checkpoints 1 and 2
    with pytest.raises(SimulatedCrash, match=r"before cloud\.launch"):
        provider.launch(request("a"))
    assert cloud.current("c") == []
    provider.launch(request("a"))  # fired once, then disarmed
    injector.arm_crash(2, targets=("cloud",))
    with pytest.raises(SimulatedCrash, match=r"after cloud\.launch"):
        provider.launch(request("b"))
    assert {i.instance_id for i in cloud.current("c")} == {"a", "b"}
    injector.arm_crash(5)
    assert injector.disarm_crash() is True
    assert injector.log.counts["crash"] == 2


def test_quiet_forgets_every_plan_and_window():
    clock, injector, _, provider = faulty_cloud()
    injector.plan_cloud_error("list", PlannedCloudError("5xx", TransientError("503")))
    injector.open_window("head_down", 60)
    injector.arm_crash(1)
    injector.quiet()
    provider.list_instances("c")
    assert not injector.active("head_down")
    clock.advance(1)
    assert injector.log.counts == {"window_head_down": 1}


def cluster_record(name: str = "c") -> ClusterRecord:
    return ClusterRecord(
        name=name,
        status=ClusterStatus.CREATING,
        config_json="{}",
        config_hash="h",
        generation=1,
        created_at=NOW,
        updated_at=NOW,
    )


def test_the_store_is_unavailable_during_an_outage_window_and_writes_nothing():
    clock = SimClock(NOW)
    injector = FaultInjector(clock)
    inner = InMemoryStateStore()
    store = FaultyStore(inner, injector)
    injector.open_window("storage_outage", 10)
    with pytest.raises(ServiceRequestError):
        store.insert_cluster(cluster_record())
    assert inner.get_cluster("c") is None
    clock.advance(10)
    store.insert_cluster(cluster_record())
    assert inner.get_cluster("c") is not None


def test_a_planned_write_timeout_raises_after_the_write_took_effect():
    injector = FaultInjector(SimClock(NOW))
    inner = InMemoryStateStore()
    store = FaultyStore(inner, injector)
    injector.plan_storage_write_timeout()
    store.get_cluster("c")  # reads are not affected
    with pytest.raises(ServiceResponseError):
        store.insert_cluster(cluster_record())
    assert inner.get_cluster("c") is not None


def test_store_methods_beyond_the_protocol_are_wrapped_too():
    clock = SimClock(NOW)
    injector = FaultInjector(clock)

    class Extended(InMemoryStateStore):
        def prune(self) -> str:
            return "pruned"

    store = FaultyStore(Extended(), injector)
    assert store.prune() == "pruned"
    injector.open_window("storage_outage", 5)
    with pytest.raises(ServiceRequestError):
        store.prune()


def test_the_faulty_ray_reader_is_down_or_refuses_or_ignores_drains_while_its_window_is_open():
    sim = Sim()
    sim.running_head()
    injector = FaultInjector(sim.clock)
    reader = FaultyRayReader(sim.ray, injector)
    url = "http://127.0.0.1:8270/sim/c"
    assert reader.read_state(url, "t").nodes
    injector.open_window("head_down", 5)
    with pytest.raises(HeadUnreachableError):
        reader.read_state(url, "t")
    sim.clock.advance(5)
    injector.open_window("drain_refused", 5)
    assert not reader.drain(url, "t", "node-h", "idle", "").accepted
    sim.clock.advance(5)
    injector.open_window("drain_unanswered", 5)
    assert reader.read_state(url, "t").nodes  # the agent answers reads, while its drains time out
    with pytest.raises(HeadUnreachableError):
        reader.drain(url, "t", "node-h", "idle", "")


def test_a_store_call_is_a_crash_point_before_and_after_it():
    injector = FaultInjector(SimClock(NOW))
    inner = InMemoryStateStore()
    store = FaultyStore(inner, injector)
    injector.arm_crash(2, targets=("store",))
    with pytest.raises(SimulatedCrash, match=r"after store\.insert_cluster"):
        store.insert_cluster(cluster_record())
    assert inner.get_cluster("c") is not None


def message(name: str = "c") -> ReconcileMessage:
    return ReconcileMessage(cluster_name=name, reason="follow-up")


def test_the_queue_holds_delayed_messages_until_visible_and_brings_failed_ones_back():
    clock = SimClock(NOW)
    queue = FaultyQueue(FaultInjector(clock), clock)
    queue.send(message("now"))
    queue.send(message("later"), delay_s=3)
    assert [e.message.cluster_name for e in queue.receive(10)] == ["now"]
    clock.advance(3)
    [later] = queue.receive(10)
    assert (later.message.cluster_name, later.dequeue_count) == ("later", 1)
    queue.retry(later, 5)
    clock.advance(5)
    [again] = queue.receive(10)
    assert again.dequeue_count == 2
    assert queue.pending() == 0


def test_the_queue_loses_duplicates_and_reorders_messages_while_its_windows_are_open():
    clock = SimClock(NOW)
    injector = FaultInjector(clock, rng=random.Random(3))
    queue = FaultyQueue(injector, clock)
    injector.open_window("queue_duplicated", 60)
    for index in range(20):
        queue.send(message(f"d{index}"))
    duplicated = queue.receive(100)
    assert len(duplicated) == 20 + injector.log.counts["queue_message_duplicated"] > 20
    injector.quiet()
    injector.enabled = True
    injector.open_window("queue_lost", 60)
    for index in range(20):
        queue.send(message(f"l{index}"))
    assert len(queue.receive(100)) == 20 - injector.log.counts["queue_message_lost"] < 20
    injector.quiet()
    injector.enabled = True
    injector.open_window("queue_reordered", 60)
    for index in range(20):
        queue.send(message(f"r{index:02d}"))
    names = [e.message.cluster_name for e in queue.receive(100)]
    assert sorted(names) == [f"r{index:02d}" for index in range(20)] != names


# -- the kit around the real service -----------------------------------------------------------------------------------

CONFIG = """
cluster_name: kit
max_workers: 2
idle_timeout_minutes: 1
provider: {type: local}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
  small: {resources: {CPU: 2}, min_workers: 0, max_workers: 2, launch_timeout_s: 120, node_config: {}}
head_node_type: head
"""


def test_a_crash_right_after_the_launch_call_leaves_one_instance_which_the_next_tick_adopts():
    clock = SimClock(NOW)
    injector = FaultInjector(clock)
    cloud = SimCloud(clock, boot_delay_s=(5, 5), ray_join_delay_s=(5, 5))
    ray = SimRay(cloud, clock)
    store = InMemoryStateStore()
    queue = FaultyQueue(injector, clock)
    deps = ReconcileDeps(
        store=FaultyStore(store, injector),
        provider_for=lambda config: FaultyCloudProvider(cloud, injector),
        ray_reader=FaultyRayReader(ray, injector),
        token_for=lambda name, generation: "token",
        clock=clock,
    )
    service = Service(deps=deps, queue=queue, allow_local_provider=True)
    service.create_cluster(CONFIG.encode(), "application/yaml")
    assert parse_cluster_config(CONFIG).config.cluster_name == "kit"
    # Checkpoints of the first tick's cloud calls: list (before, after), launch (before, after).
    injector.arm_crash(4, targets=("cloud",))
    with pytest.raises(SimulatedCrash, match=r"after cloud\.launch"):
        service.tick(ReconcileMessage(cluster_name="kit", reason="create"))
    [queued] = store.list_instances("kit")
    assert queued.status == "queued"
    assert [i.instance_id for i in cloud.current("kit")] == [queued.instance_id]
    for _ in range(6):
        clock.advance(5)
        service.tick(ReconcileMessage(cluster_name="kit", reason="timer"))
    [head] = store.list_instances("kit")
    assert head.status == "ray_running"
    assert len(cloud.current("kit")) == 1
    cluster = store.get_cluster("kit")
    assert cluster is not None
    assert cluster.status == ClusterStatus.RUNNING
