"""The shell's offerings, preemption notices, batch launches and scale-set binding, on the fakes.

See autoscaler/offerings.py and autoscaler/reconcile.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autoscaler.config import ConfigError, parse_cluster_config
from autoscaler.model import (
    CloudInstance,
    CloudState,
    ClusterRecord,
    ClusterStatus,
    InstanceStatus,
    LaunchRequest,
    RayNodeStatus,
    ShapeDemand,
    Unavailability,
    shape_of,
)
from autoscaler.offerings import describe, place, unavailable_types
from autoscaler.ports import CapacityError, CloudError, QuotaError, ThrottledError
from autoscaler.reconcile import ReconcileDeps, TickResult, reconcile
from autoscaler.state import InMemoryStateStore
from autoscaler.views import ClusterView
from tests.support.fakes import FakeCloudProvider, FakeRayReader

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
S = InstanceStatus
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"


def azure_config(*, zones: str = "1,2", spot_fallback: bool = False, max_workers: int = 4) -> str:
    fallback = "spot_fallback: regular" if spot_fallback else ""
    return f"""
cluster_name: unit
max_workers: {max_workers}
idle_timeout_minutes: 5
provider: {{type: azure, location: westus2, resource_group: rg, subscription_id: {SUBSCRIPTION},
            availability_zone: "{zones}"}}
auth: {{ssh_user: ray}}
available_node_types:
  head:
    resources: {{CPU: 0}}
    max_workers: 0
    node_config: {{azure_arm_parameters: {{vmSize: Standard_D2s_v3, imagePublisher: canonical,
                   imageOffer: ubuntu-24_04-lts, imageSku: server, imageVersion: latest}}}}
  spot:
    resources: {{CPU: 2}}
    max_workers: {max_workers}
    {fallback}
    node_config: {{azure_arm_parameters: {{vmSize: Standard_D2s_v3, imagePublisher: canonical,
                   imageOffer: ubuntu-24_04-lts, imageSku: server, imageVersion: latest, priority: Spot}}}}
head_node_type: head
"""


@dataclass
class RecordingCloud(FakeCloudProvider):
    """The fake cloud, keeping every launch request (its zone and priority are what these tests are about)."""

    requests: list[LaunchRequest] = field(default_factory=list)

    def launch(self, request: LaunchRequest) -> None:
        self.requests.append(request)
        super().launch(request)


@dataclass
class World:
    config_text: str
    store: InMemoryStateStore = field(default_factory=InMemoryStateStore)
    cloud: Any = field(default_factory=RecordingCloud)
    ray: FakeRayReader = field(default_factory=FakeRayReader)
    now: datetime = T0

    def __post_init__(self) -> None:
        parsed = parse_cluster_config(self.config_text).config
        self.store.insert_cluster(
            ClusterRecord(
                name="unit",
                status=ClusterStatus.CREATING,
                config_json=parsed.to_json(),
                config_hash=parsed.config_hash(),
                generation=1,
                created_at=T0,
                updated_at=T0,
            )
        )

    def tick(self, advance_s: float = 5.0) -> TickResult:
        self.now += timedelta(seconds=advance_s)
        deps = ReconcileDeps(
            store=self.store,
            provider_for=lambda config: self.cloud,
            ray_reader=self.ray,
            token_for=lambda name, generation: "token",
            clock=lambda: self.now,
        )
        return reconcile("unit", deps)

    def start(self) -> World:
        self.tick()
        head = next(r for r in self.store.list_instances("unit") if r.is_head)
        self.ray.register(head.instance_id, "head", cpus=0, head=True, idle_s=1)
        self.tick()
        assert self.cluster().status == ClusterStatus.RUNNING
        return self

    def workers(self) -> list[Any]:
        return sorted(
            (r for r in self.store.list_instances("unit") if not r.is_head and r.status.is_live),
            key=lambda r: r.created_at,
        )

    def cluster(self) -> ClusterRecord:
        record = self.store.get_cluster("unit")
        assert record is not None
        return record

    def want(self, cpus: float, count: int) -> None:
        self.ray.state = replace(self.ray.state, pending=(ShapeDemand(shape_of({"CPU": cpus}), count),))


def worker_launches(world: World) -> list[LaunchRequest]:
    return [request for request in world.cloud.requests if not request.is_head]


# -- offerings: zones, then regular priority, then nothing ------------------------------------------------------------


def test_a_spot_capacity_error_in_zone_1_moves_the_next_launch_to_zone_2():
    world = World(azure_config()).start()
    world.cloud.launch_errors.append(CapacityError("no spot D2s_v3", code="ZonalAllocationFailed", ttl_s=600))
    world.want(2, 1)
    world.tick()
    first = worker_launches(world)[0]
    assert (first.availability_zone, first.priority) == ("1", "spot")
    world.tick()  # the planner asks again: the launch goes elsewhere
    second = worker_launches(world)[1]
    assert (second.availability_zone, second.priority) == ("2", "spot")
    [entry] = world.cluster().unavailable
    assert (entry.size, entry.zone, entry.priority, entry.kind) == ("Standard_D2s_v3", "1", "spot", "capacity")


def test_with_every_zone_refused_a_type_that_allows_it_launches_at_regular_priority():
    world = World(azure_config(spot_fallback=True)).start()
    for _ in range(2):
        world.cloud.launch_errors.append(CapacityError("no spot", code="ZonalAllocationFailed", ttl_s=600))
    world.want(2, 1)
    for _ in range(3):
        world.tick()
    launches = [(r.availability_zone, r.priority) for r in worker_launches(world)]
    assert launches == [("1", "spot"), ("2", "spot"), ("1", "regular")]
    assert [w.priority for w in world.workers()] == ["regular"]


def test_without_spot_fallback_a_refused_spot_type_is_unavailable_to_the_planner():
    world = World(azure_config()).start()
    for _ in range(2):
        world.cloud.launch_errors.append(CapacityError("no spot", code="ZonalAllocationFailed", ttl_s=600))
    world.want(2, 1)
    for _ in range(4):
        world.tick()
    assert len(worker_launches(world)) == 2  # zone 1, zone 2, then nothing until an entry expires
    reasons = " ".join(json.loads(world.cluster().last_decision)["reasons"])
    assert "Standard_D2s_v3 spot in zone 1" in reasons
    assert "Standard_D2s_v3 spot in zone 2" in reasons
    world.tick(advance_s=600)  # zone 1's entry expired
    assert worker_launches(world)[-1].availability_zone == "1"


def test_a_spot_quota_error_avoids_every_zone_at_once():
    world = World(azure_config(spot_fallback=True)).start()
    world.cloud.launch_errors.append(QuotaError("LowPriorityCores", code="OperationNotAllowed", ttl_s=3600))
    world.want(2, 1)
    world.tick()
    world.tick()
    assert [(r.availability_zone, r.priority) for r in worker_launches(world)] == [("1", "spot"), ("1", "regular")]


def test_spot_workers_are_spread_over_the_allowed_zones():
    world = World(azure_config(zones="1,2,3", max_workers=6)).start()
    world.want(2, 5)  # Ray's upscaling: at most 5 nodes in the first launch
    world.tick()
    zones = [r.availability_zone for r in worker_launches(world)]
    assert sorted(zones) == ["1", "1", "2", "2", "3"]


def test_the_cluster_view_shows_what_is_avoided_where_and_until_when():
    world = World(azure_config()).start()
    world.cloud.launch_errors.append(CapacityError("no spot", code="ZonalAllocationFailed", ttl_s=600))
    world.want(2, 1)
    world.tick()
    view = ClusterView.build(world.cluster(), "azure", world.store.list_instances("unit"), [])
    [avoided] = view.unavailable_node_types
    assert (avoided.node_type, avoided.size, avoided.zone, avoided.priority) == ("spot", "Standard_D2s_v3", "1", "spot")
    assert avoided.until == world.now + timedelta(seconds=600)


def test_spot_fallback_on_a_regular_node_type_is_refused_naming_the_field():
    text = azure_config(spot_fallback=True).replace(", priority: Spot", "")
    with pytest.raises(ConfigError) as raised:
        parse_cluster_config(text)
    assert "available_node_types.spot.spot_fallback" in str(raised.value)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], None),
        ([("1", "spot")], None),
        ([("1", "spot"), ("2", "spot")], "Standard_D2s_v3 spot in zone 1: capacity; Standard_D2s_v3 spot in zone 2"),
        ([("", "spot")], "Standard_D2s_v3 spot in every zone"),
        ([("1", "")], None),
        ([("1", ""), ("2", "")], "Standard_D2s_v3 any priority in zone 1"),
    ],
)
def test_a_node_type_is_unavailable_only_when_every_allowed_offering_is_avoided(
    entries: Sequence[tuple[str, str]], expected: str | None
):
    config = parse_cluster_config(azure_config()).config
    unavailable = [
        Unavailability("spot", T0, "capacity", size="Standard_D2s_v3", zone=zone, priority=priority)
        for zone, priority in entries
    ]
    found = unavailable_types(config, ["spot"], unavailable)
    if expected is None:
        assert found == []
        assert place(config, "spot", live=[], unavailable=unavailable) is not None
    else:
        [entry] = found
        assert entry.reason.startswith(expected)
        assert place(config, "spot", live=[], unavailable=unavailable) is None


def test_an_entry_written_before_offerings_existed_avoids_its_whole_node_type():
    config = parse_cluster_config(azure_config()).config
    legacy = Unavailability("spot", T0, "capacity: AllocationFailed")
    assert describe(legacy) == "capacity: AllocationFailed"
    assert [u.node_type for u in unavailable_types(config, ["spot"], [legacy])] == ["spot"]


# -- preemption notices ----------------------------------------------------------------------------------------------


def preempt(world: World, instance_id: str, deadline: datetime) -> None:
    nodes = tuple(
        replace(node, preempt_deadline=deadline, status=RayNodeStatus.DRAINING)
        if node.instance_id == instance_id
        else node
        for node in world.ray.state.nodes
    )
    world.ray.state = replace(world.ray.state, nodes=nodes)


def running_spot_workers(world: World, count: int) -> list[Any]:
    world.want(2, count)
    world.tick()
    world.ray.state = replace(world.ray.state, pending=())
    for worker in world.workers():
        world.ray.register(worker.instance_id, "spot", cpus=2, idle_s=0)
        world.ray.state = replace(
            world.ray.state,
            nodes=tuple(
                replace(n, status=RayNodeStatus.RUNNING, available_resources={})
                if n.instance_id == worker.instance_id
                else n
                for n in world.ray.state.nodes
            ),
        )
    world.tick()
    world.tick()
    assert [w.status for w in world.workers()] == [S.RAY_RUNNING] * count
    return world.workers()


def test_a_preemption_notice_drains_the_node_and_launches_its_replacement_at_once_even_at_max_workers():
    world = World(azure_config(max_workers=2)).start()
    doomed, other = running_spot_workers(world, 2)
    deadline = world.now + timedelta(seconds=30)
    preempt(world, doomed.instance_id, deadline)
    world.want(2, 1)  # its task is back in Ray's queue
    world.tick()
    record = next(r for r in world.store.list_instances("unit") if r.instance_id == doomed.instance_id)
    assert record.status == S.DRAINING
    assert record.preempt_deadline == deadline
    replacement = worker_launches(world)[-1]
    assert replacement.instance_id not in {doomed.instance_id, other.instance_id}
    assert replacement.availability_zone != doomed.availability_zone  # the evicted zone is avoided for a while
    assert doomed.ray_node_id not in world.ray.drains  # the node drains itself: the shell does not ask again
    kinds = [e.kind for e in world.store.list_events("unit")]
    assert "preempted" in kinds


def test_a_preempted_node_still_listed_after_its_deadline_is_deleted():
    world = World(azure_config(max_workers=2)).start()
    [doomed] = running_spot_workers(world, 1)
    preempt(world, doomed.instance_id, world.now + timedelta(seconds=30))
    world.tick()
    world.tick(advance_s=100)  # deallocated, still listed: past deadline + grace
    assert f"terminate {doomed.instance_id}" in world.cloud.calls


def test_a_preemption_notice_for_the_only_zone_does_not_block_the_replacement():
    world = World(azure_config(zones="1", max_workers=2)).start()
    [doomed] = running_spot_workers(world, 1)
    preempt(world, doomed.instance_id, world.now + timedelta(seconds=30))
    world.want(2, 1)
    world.tick()
    assert worker_launches(world)[-1].availability_zone == "1"
    assert world.cluster().unavailable == ()


# -- batches and scale-set pools -------------------------------------------------------------------------------------


@dataclass
class BatchCloud(RecordingCloud):
    """A fake cloud that launches and terminates in batches, one call each; the first `throttle_after` items of a
    batch are accepted and the rest refused with 429 (a write budget that runs out)."""

    batches: list[int] = field(default_factory=list)
    terminate_batches: list[list[str]] = field(default_factory=list)
    throttle_after: int | None = None

    def launch_many(self, requests: Sequence[LaunchRequest]) -> list[CloudError | None]:
        self.batches.append(len(requests))
        outcomes: list[CloudError | None] = []
        for index, request in enumerate(requests):
            if self.throttle_after is not None and index >= self.throttle_after:
                outcomes.append(ThrottledError("budget", retry_after_s=20))
                continue
            self.requests.append(request)
            FakeCloudProvider.launch(self, request)
            outcomes.append(None)
        return outcomes

    def terminate_many(self, cluster_name: str, instance_ids: Sequence[str]) -> list[CloudError | None]:
        self.terminate_batches.append(list(instance_ids))
        for instance_id in instance_ids:
            self.instances.pop((cluster_name, instance_id), None)
        return [None] * len(instance_ids)


def test_a_batch_provider_gets_every_launch_of_a_tick_in_one_call_and_a_partial_429_keeps_the_rest_queued():
    world = World(azure_config(zones="", max_workers=6))
    world.cloud = BatchCloud()
    world.start()
    world.cloud.throttle_after = 3
    world.want(2, 5)
    world.tick()
    assert world.cloud.batches[-1] == 5
    statuses = sorted(str(w.status) for w in world.workers())
    assert statuses == ["queued", "queued", "requested", "requested", "requested"]
    assert world.cluster().launches_paused_until == world.now + timedelta(seconds=20)
    world.cloud.throttle_after = None
    world.tick(advance_s=21)
    assert world.cloud.batches[-1] == 2


def pool_vm(name: str, *, zone: str = "1", priority: str = "spot") -> CloudInstance:
    return CloudInstance(
        instance_id=name,
        cluster_name="unit",
        node_type="spot",
        request_id="",
        state=CloudState.RUNNING,
        cloud_instance_id=f"/subscriptions/x/virtualMachines/{name}",
        pool="spot",
        availability_zone=zone,
        priority=priority,
    )


@dataclass
class PoolCloud(BatchCloud):
    """A scale set: launches only raise the capacity; VMs appear later, under their own names."""

    capacity: int = 0

    def launch_many(self, requests: Sequence[LaunchRequest]) -> list[CloudError | None]:
        self.batches.append(len(requests))
        for request in requests:
            if request.is_head:
                FakeCloudProvider.launch(self, request)
            else:
                self.capacity = max(self.capacity, request.pool_target)
            self.requests.append(request)
        return [None] * len(requests)

    def grow(self, *names: str) -> None:
        for name in names:
            self.instances[("unit", name)] = pool_vm(name)


def test_scale_set_vms_are_bound_to_launches_once_each_and_an_unwanted_one_is_terminated():
    world = World(azure_config(zones="", max_workers=3))
    world.cloud = PoolCloud()
    world.start()
    world.want(2, 2)
    world.tick()
    assert world.cloud.capacity == 2
    slots = [w.instance_id for w in world.workers()]
    world.cloud.grow("spot_a1", "spot_b2", "spot_c3")  # one more VM than launches: an orphan
    world.tick()
    records = {r.instance_id: r for r in world.store.list_instances("unit")}
    assert records["spot_a1"].status == S.ALLOCATED
    assert records["spot_b2"].status == S.ALLOCATED
    assert {records[slot].status for slot in slots} == {S.TERMINATED}
    assert {records["spot_a1"].request_id, records["spot_b2"].request_id} == {records[s].request_id for s in slots}
    assert records["spot_c3"].status in (S.TERMINATING, S.TERMINATED)
    assert ["spot_c3"] in world.cloud.terminate_batches
    world.tick()  # listed again: bound already, never a second record
    assert sorted(
        r.instance_id for r in world.store.list_instances("unit") if r.node_type == "spot" and r.status.is_live
    ) == [
        "spot_a1",
        "spot_b2",
    ]


def test_ray_registers_a_bound_scale_set_vm_under_its_name():
    world = World(azure_config(zones="", max_workers=3))
    world.cloud = PoolCloud()
    world.start()
    world.want(2, 1)
    world.tick()
    world.cloud.grow("spot_a1")
    world.tick()
    world.ray.register("spot_a1", "spot", cpus=2)
    world.tick()
    assert next(r for r in world.store.list_instances("unit") if r.instance_id == "spot_a1").status == S.RAY_RUNNING


@dataclass
class DeletingPoolCloud(PoolCloud):
    """A scale set whose deleted VMs stay listed as deleting for a while (as Azure's do)."""

    def terminate_many(self, cluster_name: str, instance_ids: Sequence[str]) -> list[CloudError | None]:
        self.terminate_batches.append(list(instance_ids))
        for instance_id in instance_ids:
            key = (cluster_name, instance_id)
            if key in self.instances:
                self.instances[key] = replace(self.instances[key], state=CloudState.TERMINATING)
        return [None] * len(instance_ids)


def test_a_scale_set_is_grown_to_its_live_vms_plus_new_launches_not_counting_those_being_deleted():
    world = World(azure_config(zones="", max_workers=4))
    world.cloud = DeletingPoolCloud()
    world.start()
    world.want(2, 2)
    world.tick()
    world.cloud.grow("spot_a1", "spot_b2", "spot_c3")  # c3 is an orphan: deleted, listed as deleting for a while
    world.tick()
    world.ray.register("spot_a1", "spot", cpus=2)
    world.ray.register("spot_b2", "spot", cpus=2)
    world.want(2, 1)
    world.tick()
    assert world.cloud.requests[-1].pool_target == 3  # a1, b2 and the new launch; not c3, whose delete went out
