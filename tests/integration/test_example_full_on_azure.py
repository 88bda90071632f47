"""Ray's example-full.yaml, unchanged, through the service against the strict ARM emulator with the infra's roles.

The emulator runs strict: long-running operations that take real time, references to resources still updating
refused, lists paged, RBAC enforced with the app's two custom roles (infra/roles/*.json) granted where infra grants
them (the clusters' resource group, the app's VNet), and request bodies checked against Azure's REST definitions.
The config names `resource_group: ray-cluster`, where the app has no rights: the cluster goes to the clusters'
resource group and the create answer says so.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from autoscaler.model import InstanceStatus, RayNodeStatus, ShapeDemand, shape_of
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import Service
from autoscaler.settings import Settings
from autoscaler.state import TableStateStore
from autoscaler.tokens import cluster_token
from autoscaler.views import ClusterView, ReconcileMessage
from autoscaler.wiring import ProviderFactory
from provisioning.azure.network import MANAGED_BY, TAG_CLUSTER, TAG_MANAGED_BY
from provisioning.azure.ssh import generate_ssh_keypair
from tests.support.arm_emulator import ArmEmulator
from tests.support.arm_rules import validate_request
from tests.support.azurite import Azurite
from tests.support.fakes import FakeRayReader

pytestmark = pytest.mark.azurite

EXAMPLE_FULL = Path(__file__).resolve().parents[1] / "data" / "example-full.yaml"
CLUSTER = "default"  # example-full.yaml's cluster_name
HEAD_TYPE = "ray.head.default"
WORKER_TYPE = "ray.worker.default"
APP_RESOURCE_GROUP = "rg-dev"
CLUSTERS_RESOURCE_GROUP = "rg-dev-clusters"
TOKEN_KEY = b"example-full-test-cluster-token-key-0123456789"
S = InstanceStatus


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    with ArmEmulator(strict=True, request_validator=validate_request) as emulator:
        yield emulator


@pytest.fixture
def store(azurite: Azurite) -> Iterator[TableStateStore]:
    table_store = TableStateStore.from_connection_string(azurite.connection_string, f"exf{uuid.uuid4().hex[:10]}")
    yield table_store
    for name in table_store.table_names:
        table_store.table_service.delete_table(name)
    table_store.close()


def test_example_full_yaml_unchanged_runs_a_spot_worker_and_is_destroyed_with_nothing_left(
    arm: ArmEmulator, store: TableStateStore
) -> None:
    function_subnet_id = arm.seed_subnet(APP_RESOURCE_GROUP, "vnet-app", "functions", "10.250.0.0/26")
    app_vnet_id = function_subnet_id.split("/subnets/")[0]
    arm.grant_app_roles(CLUSTERS_RESOURCE_GROUP, app_vnet_id)
    settings = Settings.from_environment(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "CLUSTER_TOKEN_KEY": TOKEN_KEY.decode(),
            "CLUSTERS_SUBSCRIPTION_ID": arm.subscription_id,
            "CLUSTERS_RESOURCE_GROUP": CLUSTERS_RESOURCE_GROUP,
            "FUNCTION_SUBNET_ID": function_subnet_id,
        }
    )
    providers = ProviderFactory(
        settings,
        credential_factory=arm.credential,
        azure_overrides={
            "base_url": arm.base_url,
            "connection_verify": arm.ca_path,
            "retry_backoff_factor_s": 0.01,
            "retry_backoff_max_s": 0.05,
            "delete_retry_backoff_s": 0.05,
            "network_poll_interval_s": 0.05,
        },
    )
    ray = FakeRayReader()
    clock = Clock()
    queue = InMemoryReconcileQueue()
    deps = ReconcileDeps(
        store=store,
        provider_for=providers,
        ray_reader=ray,
        token_for=partial(cluster_token, TOKEN_KEY),
        clock=clock,
        control_plane_url="https://func-dev.azurewebsites.net",
    )
    service = Service(
        deps=deps,
        queue=queue,
        allow_local_provider=False,
        ssh_keygen=generate_ssh_keypair,
        clusters_resource_group=settings.clusters_resource_group,
    )

    def tick_until(done: Callable[[ClusterView], bool], what: str, timeout_s: float = 20.0) -> ClusterView:
        """Tick (a message if one is queued, else the timer) until `done`; ARM operations take real time here."""
        deadline = time.monotonic() + timeout_s
        while True:
            clock.now += timedelta(seconds=15)
            queued = queue.drain()
            service.tick(queued[0] if queued else ReconcileMessage(cluster_name=CLUSTER, reason="timer"))
            view = service.get_cluster(CLUSTER)
            if done(view):
                return view
            assert time.monotonic() < deadline, f"not {what} after {timeout_s} s: {view.status} {view.nodes}"
            time.sleep(0.1)

    created = service.create_cluster(EXAMPLE_FULL.read_bytes(), "application/yaml")

    assert created.created
    assert [(a.path, a.given, a.used) for a in created.adjusted_fields] == [
        ("provider.resource_group", "ray-cluster", CLUSTERS_RESOURCE_GROUP)
    ]

    # The head: its network, then its VM; the head agent answers once the VM runs.
    view = tick_until(lambda v: any(n.is_head and n.status == S.ALLOCATED for n in v.nodes), "head allocated")
    head = next(n for n in view.nodes if n.is_head)
    ray.register(head.instance_id, HEAD_TYPE, cpus=2, head=True)
    tick_until(lambda v: v.status == "running", "running")

    # One task of a worker's size waits: one spot worker.
    ray.state = replace(ray.state, pending=(ShapeDemand(shape_of({"CPU": 2}), 1),))
    view = tick_until(lambda v: any(not n.is_head and n.status == S.ALLOCATED for n in v.nodes), "worker allocated")
    (worker,) = [n for n in view.nodes if not n.is_head and n.status == S.ALLOCATED]
    ray.register(worker.instance_id, WORKER_TYPE, cpus=2)
    ray.state = replace(ray.state, pending=())
    tick_until(lambda v: any(n.instance_id == worker.instance_id and n.status == S.RAY_RUNNING for n in v.nodes), "ray")

    vms = arm.resources("Microsoft.Compute/virtualMachines")
    assert {vm["id"].split("/")[4] for vm in vms} == {CLUSTERS_RESOURCE_GROUP}
    (spot,) = [vm for vm in vms if vm["tags"]["ray-node-type"] == WORKER_TYPE]
    assert spot["properties"]["priority"] == "Spot"
    assert spot["properties"]["evictionPolicy"] == "Delete"

    # Destroy: nothing tagged for the cluster remains, and the app VNet keeps no peering towards it.
    service.destroy_cluster(CLUSTER)
    ray.state = replace(ray.state, nodes=tuple(replace(node, status=RayNodeStatus.DEAD) for node in ray.state.nodes))
    tick_until(lambda v: v.status == "deleted", "deleted", timeout_s=30.0)
    assert arm.settle()
    leftovers = [
        resource["id"]
        for resource in arm.resources()
        if (resource.get("tags") or {}).get(TAG_CLUSTER) == CLUSTER
        and (resource.get("tags") or {}).get(TAG_MANAGED_BY) == MANAGED_BY
    ]
    assert leftovers == []
    assert arm.peerings(app_vnet_id) == []
