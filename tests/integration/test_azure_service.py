"""A cluster's whole life through the Service (issue 5): create -> scale up -> spot eviction -> replacement -> destroy.

Real parts: `Service`, the reconcile shell and planner, `AzureCloudProvider` with the Azure SDK against the loopback
ARM emulator (static credential, the emulator's test CA), `TableStateStore` on Azurite. Fakes: the in-memory queue,
and Ray's view (`FakeRayReader`), because the emulated VMs run no Ray: the test plays the head agent and registers
Ray nodes by instance id. The clock is the test's: every tick moves it 15 s, as the timer would.
"""

from __future__ import annotations

import enum
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from cryptography.hazmat.primitives import serialization

from autoscaler.model import InstanceStatus, RayNodeStatus, ShapeDemand, shape_of
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import ReconcileDeps, TickResult
from autoscaler.service import Service
from autoscaler.settings import Settings
from autoscaler.state import TableStateStore
from autoscaler.tokens import cluster_token
from autoscaler.views import ClusterView, NodeView, ReconcileMessage
from autoscaler.wiring import ProviderFactory
from provisioning.azure.network import MANAGED_BY, TAG_CLUSTER
from provisioning.azure.provider import vm_name_for
from provisioning.azure.ssh import generate_ssh_keypair
from tests.support.arm_emulator import ArmEmulator, Fault, FaultKind, iter_allow_rules
from tests.support.arm_rules import validate_request
from tests.support.azurite import Azurite
from tests.support.fakes import FakeRayReader

pytestmark = pytest.mark.azurite

CLUSTER = "demo"
RESOURCE_GROUP = "ray-cluster"
HEAD_TYPE = "ray.head.default"
SPOT_TYPE = "ray.worker.default"
ON_DEMAND_TYPE = "ray.worker.ondemand"
WORKER_CPUS = 2
TOKEN_KEY = b"service-test-cluster-token-key-0123456789"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TICK_INTERVAL = timedelta(seconds=15)  # the timer's default schedule
VM_TYPE = "Microsoft.Compute/virtualMachines"
NSG_TYPE = "Microsoft.Network/networkSecurityGroups"
FUNCTION_SUBNET_PREFIX = "10.250.0.0/24"
CLUSTER_TYPES = {  # what a running cluster is made of (the subnet lives inside the VNet)
    VM_TYPE,
    "Microsoft.Compute/disks",
    "Microsoft.Network/networkInterfaces",
    "Microsoft.Network/publicIPAddresses",
    "Microsoft.Network/networkSecurityGroups",
    "Microsoft.Network/virtualNetworks",
}
OPEN_TO_THE_INTERNET = {"*", "internet", "0.0.0.0/0", "any"}  # source prefixes, lower-cased
S = InstanceStatus


def cluster_yaml(
    subscription_id: str, *, ssh_allowed_cidrs: tuple[str, ...] = (), on_demand_fallback: bool = True
) -> str:
    """Ray's example-full.yaml for Azure (docker section and all), with spot workers, our subscription and, when
    asked, an on-demand worker type that the spot type falls back to."""
    ssh = f"    ssh_allowed_cidrs: {json.dumps(list(ssh_allowed_cidrs))}\n" if ssh_allowed_cidrs else ""
    image = "imagePublisher: microsoft-dsvm, imageOffer: ubuntu-2204, imageSku: 2204-gen2, imageVersion: latest"
    fallback = f"        fallback: {ON_DEMAND_TYPE}\n" if on_demand_fallback else ""
    on_demand = (
        f"""    {ON_DEMAND_TYPE}:
        min_workers: 0
        max_workers: 4
        resources: {{"CPU": {WORKER_CPUS}}}
        node_config:
            azure_arm_parameters: {{vmSize: Standard_D2s_v3, {image}}}
"""
        if on_demand_fallback
        else ""
    )
    return f"""
cluster_name: {CLUSTER}
max_workers: 4
upscaling_speed: 1.0
docker:
    image: "rayproject/ray-ml:latest-gpu"
    container_name: "ray_container"
    pull_before_run: True
    run_options:
        - --ulimit nofile=65536:65536
idle_timeout_minutes: 5
provider:
    type: azure
    location: eastus
    resource_group: {RESOURCE_GROUP}
    subscription_id: {subscription_id}
{ssh}auth:
    ssh_user: ubuntu
available_node_types:
    {HEAD_TYPE}:
        resources: {{"CPU": 2}}
        node_config:
            azure_arm_parameters: {{vmSize: Standard_D2s_v3, {image}}}
    {SPOT_TYPE}:
        min_workers: 0
        max_workers: 4
        resources: {{"CPU": {WORKER_CPUS}}}
{fallback}        node_config:
            azure_arm_parameters: {{vmSize: Standard_D2s_v3, {image}, priority: Spot}}
{on_demand}head_node_type: {HEAD_TYPE}
file_mounts: {{}}
cluster_synced_files: []
file_mounts_sync_continuously: False
rsync_exclude:
    - "**/.git"
    - "**/.git/**"
rsync_filter:
    - ".gitignore"
initialization_commands:
    - touch ~/.sudo_as_admin_successful
setup_commands: []
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands:
    - ray stop
    - ray start --head --port=6379 --object-manager-port=8076 --autoscaling-config=~/ray_bootstrap_config.yaml
worker_start_ray_commands:
    - ray stop
    - ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076
head_node: {{}}
worker_nodes: {{}}
"""


# ------------------------------------------------------------------------------------------ harness


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta = TICK_INTERVAL) -> None:
        self.now += by

    def seconds(self) -> float:
        """The same clock in seconds, for the provider's write budget (AzureSettings.clock)."""
        return self.now.timestamp()


def emulator_providers(
    arm: ArmEmulator, function_subnet_id: str, clusters_resource_group: str = "", clock: Clock | None = None
) -> ProviderFactory:
    """`provider_for` as the app wires it (wiring.ProviderFactory, app settings), pointed at the emulator with the
    emulator's static test credential. A new factory is a fresh process: nothing remembered. With `clock`, the
    provider's write budget runs on the test's clock too (a Retry-After is waited out on it, as the shell does)."""
    settings = Settings.from_environment(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "CLUSTER_TOKEN_KEY": TOKEN_KEY.decode(),
            "CLUSTERS_SUBSCRIPTION_ID": arm.subscription_id,
            "CLUSTERS_RESOURCE_GROUP": clusters_resource_group,
            "FUNCTION_SUBNET_ID": function_subnet_id,
        }
    )
    return ProviderFactory(
        settings,
        credential_factory=arm.credential,
        azure_overrides={
            "base_url": arm.base_url,
            "connection_verify": arm.ca_path,
            "retry_backoff_factor_s": 0.01,
            "retry_backoff_max_s": 0.05,
            "delete_retry_backoff_s": 0.01,
            "network_poll_interval_s": 0.02,
            **({"clock": clock.seconds} if clock is not None else {}),
        },
    )


@dataclass
class Harness:
    arm: ArmEmulator
    store: TableStateStore
    ray: FakeRayReader
    clock: Clock
    queue: InMemoryReconcileQueue
    service: Service
    app_vnet_id: str  # the function app's VNet, which each cluster VNet is peered with
    results: list[TickResult] = field(default_factory=list)

    # -- driving

    def create(self, *, ssh_allowed_cidrs: tuple[str, ...] = (), on_demand_fallback: bool = True) -> str | None:
        body = cluster_yaml(
            self.arm.subscription_id, ssh_allowed_cidrs=ssh_allowed_cidrs, on_demand_fallback=on_demand_fallback
        )
        response = self.service.create_cluster(body.encode(), "application/yaml")
        assert response.created
        return response.ssh_private_key

    def tick(self) -> TickResult:
        """One reconcile: the message the service queued (create, destroy, follow-up), else the timer's.

        Ticks are 15 s apart and ARM's operations here take well under a second (real time, strict emulator), so
        what the last tick started has finished by the next one: the harness waits for that, as time would."""
        assert self.arm.settle(), "ARM operations still in progress"
        self.clock.advance()
        queued = self.queue.drain()
        message = queued[0] if queued else ReconcileMessage(cluster_name=CLUSTER, reason="timer")
        result = self.service.tick(message)
        assert result.outcome == "reconciled", result
        self.results.append(result)
        return result

    def bring_up(self, **create: Any) -> str | None:
        """Create the cluster and tick until its head runs Ray (the test's head agent answers at once)."""
        private_key = self.create(**create)
        self.tick()  # queues and launches the head (and starts the network)
        self.tick()  # the head VM is listed, its agent answers: running
        head = self.head()
        self.ray.register(head.instance_id, HEAD_TYPE, cpus=2, head=True)
        assert self.view().status == "running"
        return private_key

    def demand(self, bundles: int) -> None:
        """Ray's pending demand: `bundles` tasks of one worker's size that fit on no node."""
        pending = (ShapeDemand(shape_of({"CPU": WORKER_CPUS}), bundles),) if bundles else ()
        self.ray.state = replace(self.ray.state, pending=pending)

    def join_ray(self) -> None:
        """Every allocated worker's Ray node registers, busy (its tasks took the pending demand)."""
        for node in self.nodes(status=S.ALLOCATED, workers_only=True):
            self.ray.register(node.instance_id, node.node_type, cpus=WORKER_CPUS)

    def leave_ray(self, instance_id: str) -> None:
        nodes = tuple(node for node in self.ray.state.nodes if node.instance_id != instance_id)
        self.ray.state = replace(self.ray.state, nodes=nodes)

    def ray_node_dies(self, instance_id: str) -> None:
        """Ray's view of a node whose VM stopped: its raylet stops heartbeating and GCS marks the node dead (it is
        kept in the state for a while, as dead)."""
        nodes = tuple(
            replace(node, status=RayNodeStatus.DEAD, available_resources={})
            if node.instance_id == instance_id
            else node
            for node in self.ray.state.nodes
        )
        self.ray.state = replace(self.ray.state, nodes=nodes)

    def scale_up(self, workers: int) -> list[NodeView]:
        """Ray waits for `workers` nodes' worth of tasks; two ticks later they run Ray and the demand is served."""
        self.demand(workers)
        self.tick()  # plans and launches
        self.tick()  # the VMs are listed: allocated
        self.join_ray()
        self.demand(0)
        self.tick()  # their Ray nodes registered: ray_running
        running = self.nodes(status=S.RAY_RUNNING, workers_only=True)
        assert len(running) == workers, self.view().nodes
        return running

    # -- observing

    def view(self) -> ClusterView:
        return self.service.get_cluster(CLUSTER)

    def head(self) -> NodeView:
        (head,) = [node for node in self.view().nodes if node.is_head and node.status != S.TERMINATED]
        return head

    def nodes(self, *, status: InstanceStatus | None = None, workers_only: bool = False) -> list[NodeView]:
        return [
            node
            for node in self.view().nodes
            if (status is None or node.status == status) and not (workers_only and node.is_head)
        ]

    def vms(self, node_type: str | None = None) -> list[dict[str, Any]]:
        return [
            vm
            for vm in self.arm.resources(VM_TYPE)
            if vm["tags"].get(TAG_CLUSTER) == CLUSTER
            and (node_type is None or vm["tags"].get("ray-node-type") == node_type)
        ]

    def vm_puts(self, instance_id: str) -> int:
        name = vm_name_for(CLUSTER, instance_id)
        return sum(1 for method, path, _ in self.arm.request_log if method == "PUT" and path.endswith(f"/{name}"))


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    # Strict: timed operations, references to resources still updating refused, paged lists (Azure's 50 VMs per
    # page for the VM list by resource group), request bodies held to Azure's REST definitions.
    with ArmEmulator(strict=True, request_validator=validate_request, page_size=50) as emulator:
        yield emulator


@pytest.fixture
def store(azurite: Azurite) -> Iterator[TableStateStore]:
    table_store = TableStateStore.from_connection_string(azurite.connection_string, f"svc{uuid.uuid4().hex[:10]}")
    yield table_store
    for name in table_store.table_names:
        table_store.table_service.delete_table(name)
    table_store.close()


@pytest.fixture
def harness(arm: ArmEmulator, store: TableStateStore) -> Harness:
    function_subnet_id = arm.seed_subnet("rg-platform", "functions-vnet", "functions", FUNCTION_SUBNET_PREFIX)
    clock = Clock()
    ray = FakeRayReader()
    queue = InMemoryReconcileQueue()
    deps = ReconcileDeps(
        store=store,
        provider_for=emulator_providers(arm, function_subnet_id, clock=clock),
        ray_reader=ray,
        token_for=partial(cluster_token, TOKEN_KEY),
        clock=clock,
        control_plane_url="http://127.0.0.1:7071",
    )
    service = Service(deps=deps, queue=queue, allow_local_provider=False, ssh_keygen=generate_ssh_keypair)
    return Harness(arm, store, ray, clock, queue, service, app_vnet_id=function_subnet_id.split("/subnets/")[0])


def seed_bystanders(arm: ArmEmulator) -> None:
    """Things in the cluster's resource group that are not the cluster's: someone else's VM with its NIC, public IP,
    disk and network, and a VM of another cluster of ours."""
    subnet_id = arm.seed_subnet(RESOURCE_GROUP, "team-vnet", "default", "10.30.0.0/24")
    arm.seed_vm(RESOURCE_GROUP, "team-build-agent", subnet_id, tags={"owner": "team"})
    arm.seed_vm(RESOURCE_GROUP, "ray-other-head", subnet_id, tags={TAG_CLUSTER: "other", "managed-by": MANAGED_BY})


def without_peerings(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Resource snapshots with VNets' peerings left out (the app's VNet holds one per cluster while it lives)."""
    return [
        {**resource, "properties": {k: v for k, v in resource["properties"].items() if k != "virtualNetworkPeerings"}}
        for resource in resources
    ]


def is_the_clusters(resource: dict[str, Any]) -> bool:
    # OS disks carry no tags; their names derive from the VM's.
    return (resource.get("tags") or {}).get(TAG_CLUSTER) == CLUSTER or resource["name"].startswith(f"ray-{CLUSTER}-")


# ------------------------------------------------------------------------------------------ the lifecycle


@pytest.mark.parametrize(
    ("eviction", "evicted_status"),
    [
        ("delete", S.TERMINATED),  # the VM is gone: nothing to do but notice
        # The VM stays, deallocated; the resource-group list shows no power state (it still reads Succeeded), but
        # Ray reports the node dead: we delete the VM.
        ("deallocate", S.TERMINATING),
    ],
)
def test_lifecycle_through_the_service_evicted_spot_worker_is_replaced_and_destroy_leaves_nothing(
    harness: Harness, eviction: str, evicted_status: InstanceStatus
) -> None:
    seed_bystanders(harness.arm)
    harness.bring_up(ssh_allowed_cidrs=("203.0.113.0/24",))  # so the head has a public IP to clean up too
    # Taken once the bystanders were listed (the emulator finishes a seeded VM's creation when it is first seen).
    bystanders = [resource for resource in harness.arm.resources() if not is_the_clusters(resource)]
    assert [peering["properties"]["peeringState"] for peering in harness.arm.peerings(harness.app_vnet_id)] == [
        "Connected"
    ]
    workers = harness.scale_up(2)
    assert len(harness.vms(SPOT_TYPE)) == 2
    assert all(vm["properties"]["priority"] == "Spot" for vm in harness.vms(SPOT_TYPE))

    evicted = workers[0].instance_id
    harness.arm.evict(vm_name_for(CLUSTER, evicted), mode=eviction)
    if eviction == "delete":
        harness.leave_ray(evicted)
    else:
        harness.ray_node_dies(evicted)
    harness.demand(1)  # the evicted node's tasks wait again
    harness.tick()

    statuses = {node.instance_id: node.status for node in harness.nodes(workers_only=True)}
    assert statuses[evicted] == evicted_status
    known = {worker.instance_id for worker in workers}
    replacement = [node for node in harness.nodes(workers_only=True) if node.instance_id not in known]
    assert [(node.node_type, node.status) for node in replacement] == [(SPOT_TYPE, S.REQUESTED)]
    harness.tick()
    (terminated,) = harness.nodes(status=S.TERMINATED, workers_only=True)
    assert terminated.instance_id == evicted
    harness.join_ray()
    harness.demand(0)
    harness.tick()
    assert {node.instance_id for node in harness.nodes(status=S.RAY_RUNNING, workers_only=True)} == {
        workers[1].instance_id,
        replacement[0].instance_id,
    }
    assert sorted(vm["tags"]["ray-instance-id"] for vm in harness.vms()) == sorted(
        [harness.head().instance_id, workers[1].instance_id, replacement[0].instance_id]
    )

    assert {resource["type"] for resource in harness.arm.resources() if is_the_clusters(resource)} == CLUSTER_TYPES

    harness.service.destroy_cluster(CLUSTER)
    harness.tick()  # every VM is deleted (with its NIC, disk and public IP)
    # None is listed any more: the peerings, the VNet and the NSG go. Azure refuses the NSG while the VNet that
    # uses it is still being deleted (InUse), so that may take one more tick.
    for _ in range(3):
        harness.tick()
        if harness.view().status == "deleted":
            break
    assert harness.view().status == "deleted"
    assert harness.arm.settle()  # the deletions it started finish
    assert [resource["id"] for resource in harness.arm.resources() if is_the_clusters(resource)] == []
    # The app's VNet stays, without its peering to the cluster; everything else is as it was.
    assert harness.arm.peerings(harness.app_vnet_id) == []
    assert without_peerings(harness.arm.resources()) == without_peerings(bystanders)


# ------------------------------------------------------------------------------------------ security


@pytest.mark.parametrize(
    ("ssh_allowed_cidrs", "expected_ssh_sources"),
    [
        ((), None),  # no SSH rule at all
        (("203.0.113.0/24", "198.51.100.7/32"), {"203.0.113.0/24", "198.51.100.7/32"}),
    ],
    ids=["no-cidrs", "two-cidrs"],
)
def test_cluster_nsg_admits_nothing_from_the_internet_and_ssh_only_from_the_given_cidrs(
    harness: Harness, ssh_allowed_cidrs: tuple[str, ...], expected_ssh_sources: set[str] | None
) -> None:
    harness.bring_up(ssh_allowed_cidrs=ssh_allowed_cidrs)
    harness.scale_up(1)

    (nsg,) = harness.arm.resources(NSG_TYPE)
    ssh_sources: set[str] | None = None
    for rule in iter_allow_rules(nsg):
        sources = set(rule.get("sourceAddressPrefixes") or [rule["sourceAddressPrefix"]])
        ports = set(rule.get("destinationPortRanges") or [rule["destinationPortRange"]])
        assert not OPEN_TO_THE_INTERNET & {source.lower() for source in sources}, rule
        if "22" in ports:
            assert ports == {"22"}, rule
            ssh_sources = (ssh_sources or set()) | sources
    assert ssh_sources == expected_ssh_sources
    # Only the head may face the internet, and only when SSH is allowed.
    public_ips = harness.arm.resources("Microsoft.Network/publicIPAddresses")
    assert len(public_ips) == (1 if ssh_allowed_cidrs else 0)


def test_no_cluster_vm_has_a_managed_identity(harness: Harness) -> None:
    harness.bring_up()
    harness.scale_up(2)

    vms = harness.vms()

    assert len(vms) == 3
    assert [vm["name"] for vm in vms if "identity" in vm] == []


# ------------------------------------------------------------------------------------------ faults


class Answer(enum.Enum):
    UNAVAILABLE = "the instance fails and its type is marked unavailable for the TTL; the fallback type launches"
    STAYS_QUEUED = "the instance stays queued and is launched on a later tick"


@dataclass(frozen=True)
class FaultCase:
    name: str
    fault: Fault
    answer: Answer
    ttl_s: float = 0.0
    reason: str = ""  # how GET's unavailable_node_types explains it


WORKER_VM_PUT = rf"/virtualMachines/ray-{CLUSTER}-[^/]+$"
QUOTA_MESSAGE = "Operation could not be completed as it results in exceeding approved Total Regional Cores quota."
HOUR_S = 3600.0

# One row per row of provisioning/azure/errors.py's table that a launch can meet, plus the HTTP status rules.
FAULT_CASES = [
    FaultCase(
        "sku-not-available-spot",
        Fault("PUT", WORKER_VM_PUT, status=409, code="SkuNotAvailable"),
        Answer.UNAVAILABLE,
        HOUR_S,
        "capacity: SkuNotAvailable",
    ),
    FaultCase(
        "allocation-failed",
        Fault("PUT", WORKER_VM_PUT, status=409, code="AllocationFailed"),
        Answer.UNAVAILABLE,
        HOUR_S,
        "capacity: AllocationFailed",
    ),
    FaultCase(
        "zonal-allocation-failed",
        Fault("PUT", WORKER_VM_PUT, status=409, code="ZonalAllocationFailed"),
        Answer.UNAVAILABLE,
        HOUR_S,
        "capacity: ZonalAllocationFailed",
    ),
    FaultCase(
        "overconstrained",
        Fault("PUT", WORKER_VM_PUT, status=409, code="OverconstrainedAllocationRequest"),
        Answer.UNAVAILABLE,
        HOUR_S,
        "capacity: OverconstrainedAllocationRequest",
    ),
    FaultCase(
        "spot-price-above-max",
        Fault("PUT", WORKER_VM_PUT, status=409, code="SpotPriceGreaterThanProvidedMaxPrice"),
        Answer.UNAVAILABLE,
        HOUR_S,
        "capacity: SpotPriceGreaterThanProvidedMaxPrice",
    ),
    FaultCase(
        "spot-quota",
        Fault("PUT", WORKER_VM_PUT, status=409, code="LowPriorityQuota"),
        Answer.UNAVAILABLE,
        HOUR_S,
        "quota: LowPriorityQuota",
    ),
    FaultCase(
        "regional-quota",
        Fault("PUT", WORKER_VM_PUT, status=409, code="OperationNotAllowed", message=QUOTA_MESSAGE),
        Answer.UNAVAILABLE,
        15 * 60.0,
        "quota: OperationNotAllowed",
    ),
    FaultCase(
        "quota-exceeded",
        Fault("PUT", WORKER_VM_PUT, status=409, code="QuotaExceeded"),
        Answer.UNAVAILABLE,
        15 * 60.0,
        "quota: QuotaExceeded",
    ),
    # A Retry-After longer than the SDK may sleep (AzureSettings.max_retry_after_s) comes back as ThrottledError.
    FaultCase(
        "throttled-with-retry-after",
        Fault("PUT", WORKER_VM_PUT, status=429, code="TooManyRequests", retry_after_s=1200),
        Answer.STAYS_QUEUED,
    ),
    # Three answers: the SDK's own retries (retry_total=2) are used up too.
    FaultCase(
        "internal-server-error",
        Fault("PUT", WORKER_VM_PUT, status=500, code="InternalServerError", times=3),
        Answer.STAYS_QUEUED,
    ),
    FaultCase(
        "service-unavailable",
        Fault("PUT", WORKER_VM_PUT, status=503, code="ServiceUnavailable", times=3),
        Answer.STAYS_QUEUED,
    ),
]


@pytest.mark.parametrize("case", FAULT_CASES, ids=lambda case: case.name)
def test_each_launch_fault_is_answered_as_its_error_table_row_says(harness: Harness, case: FaultCase) -> None:
    harness.bring_up()
    harness.arm.inject(replace(case.fault))  # a copy: the emulator counts its uses down
    harness.demand(1)

    harness.tick()
    failed_at = harness.clock.now
    (worker,) = harness.nodes(workers_only=True)
    view = harness.view()
    assert not harness.arm.pending_faults()

    if case.answer is Answer.UNAVAILABLE:
        assert (worker.node_type, worker.status) == (SPOT_TYPE, S.ALLOCATION_FAILED)
        assert case.fault.code in worker.last_error
        (unavailable,) = view.unavailable_node_types
        assert unavailable.node_type == SPOT_TYPE
        assert unavailable.until == failed_at + timedelta(seconds=case.ttl_s)
        assert unavailable.reason.startswith(case.reason)
        harness.tick()  # the demand is still there: the fallback type takes it
        assert [vm["tags"]["ray-node-type"] for vm in harness.vms(SPOT_TYPE) + harness.vms(ON_DEMAND_TYPE)] == [
            ON_DEMAND_TYPE
        ]
    else:
        assert (worker.node_type, worker.status) == (SPOT_TYPE, S.QUEUED)
        assert view.unavailable_node_types == []
        assert harness.vms(SPOT_TYPE) == []
        if case.fault.retry_after_s:
            # Launches wait out the Retry-After: the next tick makes no launch call at all.
            harness.tick()
            assert harness.vm_puts(worker.instance_id) == case.fault.times
            harness.clock.now += timedelta(seconds=case.fault.retry_after_s)
        harness.tick()
        (launched,) = harness.nodes(workers_only=True)
        assert (launched.instance_id, launched.status) == (worker.instance_id, S.REQUESTED)
        # The retried launch PUT the same VM name: one VM, however many attempts it took.
        assert [vm["tags"]["ray-instance-id"] for vm in harness.vms(SPOT_TYPE)] == [worker.instance_id]
        assert harness.vm_puts(worker.instance_id) == case.fault.times + 1
    harness.tick()
    assert len(harness.vms()) == 2  # the head and exactly one worker


def test_a_type_without_fallback_is_not_launched_until_its_unavailability_expires(harness: Harness) -> None:
    harness.bring_up(on_demand_fallback=False)
    harness.arm.inject(Fault("PUT", WORKER_VM_PUT, status=409, code="ZonalAllocationFailed"))
    harness.demand(1)
    harness.tick()
    (unavailable,) = harness.view().unavailable_node_types

    waiting = harness.tick()
    assert harness.vms(SPOT_TYPE) == []
    assert waiting.plan is not None
    assert any(f"{SPOT_TYPE} unavailable" in note for note in waiting.plan.notes)
    assert harness.view().pending_demand == [{"shape": {"CPU": WORKER_CPUS}, "count": 1}]

    harness.clock.now = unavailable.until
    harness.tick()
    assert len(harness.vms(SPOT_TYPE)) == 1
    assert harness.view().unavailable_node_types == []


def test_asynchronous_capacity_failure_marks_the_type_unavailable_and_falls_back(harness: Harness) -> None:
    harness.bring_up()
    harness.arm.inject(
        Fault("PUT", WORKER_VM_PUT, kind=FaultKind.ASYNC_FAILURE, code="ZonalAllocationFailed", message="no room")
    )
    harness.demand(1)
    harness.tick()  # the PUT is accepted
    harness.tick()  # the list shows the VM failed: it is deleted, and the demand is still there

    failed = [node for node in harness.nodes(workers_only=True) if "ZonalAllocationFailed" in node.last_error]
    assert [node.node_type for node in failed] == [SPOT_TYPE]
    assert [u.node_type for u in harness.view().unavailable_node_types] == [SPOT_TYPE]
    harness.tick()
    assert sorted(vm["tags"]["ray-node-type"] for vm in harness.vms() if vm["tags"]["ray-node-kind"] == "worker") == [
        ON_DEMAND_TYPE
    ]


# ------------------------------------------------------------------------------------------ secrets


def every_stored_entity(table_service: TableServiceClient) -> Iterator[tuple[str, str]]:
    """(table name, entity as text) for every entity of every table in the storage account."""
    for table in table_service.list_tables():
        for entity in table_service.get_table_client(table.name).list_entities():
            yield table.name, json.dumps(dict(entity), default=str)


def pem_body_lines(private_key: str) -> list[str]:
    """The base64 lines of a PEM: any one of them found somewhere means the key leaked there."""
    return [line for line in private_key.splitlines() if line and not line.startswith("-----")]


def test_generated_private_key_is_returned_once_trusted_by_the_vms_and_kept_in_no_table_and_no_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    private_key = harness.bring_up()
    harness.scale_up(1)

    assert private_key is not None
    assert private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    loaded = serialization.load_ssh_private_key(private_key.encode(), password=None)
    public_key = loaded.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    for vm in harness.vms():
        (authorized,) = vm["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"]
        assert authorized["keyData"].split()[:2] == public_key.decode().split()[:2], vm["name"]
    again = harness.service.create_cluster(cluster_yaml(harness.arm.subscription_id).encode(), "application/yaml")
    assert (again.created, again.ssh_private_key) == (False, None)
    fragments = pem_body_lines(private_key)
    leaks = [
        table for table, text in every_stored_entity(harness.store.table_service) if any(f in text for f in fragments)
    ]
    assert leaks == []
    assert [fragment for fragment in fragments if fragment in caplog.text] == []


def test_cluster_token_is_in_no_table_and_no_log(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    harness.bring_up()
    harness.scale_up(1)
    harness.service.destroy_cluster(CLUSTER)
    harness.tick()

    token = cluster_token(TOKEN_KEY, CLUSTER, 1)

    assert [table for table, text in every_stored_entity(harness.store.table_service) if token in text] == []
    assert token not in caplog.text


# ------------------------------------------------------------------------------------------ ARM budget


def test_steady_state_tick_through_the_service_costs_one_arm_read_and_no_write(harness: Harness) -> None:
    harness.bring_up()
    harness.scale_up(2)
    harness.tick()
    harness.arm.reset_counts()

    result = harness.tick()

    assert (result.actions, result.settled) == ([], True)
    assert (harness.arm.reads, harness.arm.writes) == (1, 0)
    assert dict(harness.arm.requests_by_route) == {
        ("GET", "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines"): 1
    }


def test_a_fresh_process_takes_the_head_address_from_stored_state_instead_of_reading_the_nic(harness: Harness) -> None:
    harness.bring_up()
    harness.tick()
    function_subnet_id = f"{harness.app_vnet_id}/subnets/functions"
    harness.service.deps = replace(
        harness.service.deps, provider_for=emulator_providers(harness.arm, function_subnet_id, clock=harness.clock)
    )
    harness.arm.reset_counts()

    result = harness.tick()

    assert result.settled
    assert dict(harness.arm.requests_by_route) == {
        ("GET", "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines"): 1
    }
    assert harness.view().head.ray_address.endswith(":6379")


def test_a_config_naming_another_resource_group_goes_to_the_clusters_group_and_the_answer_says_so(
    harness: Harness,
) -> None:
    function_subnet_id = f"{harness.app_vnet_id}/subnets/functions"
    harness.service.deps = replace(
        harness.service.deps,
        provider_for=emulator_providers(harness.arm, function_subnet_id, "rg-dev-clusters", clock=harness.clock),
    )
    harness.service.clusters_resource_group = "rg-dev-clusters"
    body = cluster_yaml(harness.arm.subscription_id).replace("Spot}", "Low}")

    response = harness.service.create_cluster(body.encode(), "application/yaml")
    harness.tick()

    assert [(a.path, a.given, a.used) for a in response.adjusted_fields] == [
        ("provider.resource_group", RESOURCE_GROUP, "rg-dev-clusters"),
        (f"available_node_types.{SPOT_TYPE}.node_config.azure_arm_parameters.priority", "Low", "Spot"),
    ]
    assert [vm["id"].split("/")[4] for vm in harness.vms()] == ["rg-dev-clusters"]
    assert any(event.kind == "adjusted" and "rg-dev-clusters" in event.message for event in harness.view().events)
    again = harness.service.create_cluster(body.encode(), "application/yaml")
    assert not again.created  # the same config again is the same cluster, not a conflict
