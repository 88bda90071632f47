"""Write previous-release-rows.json: the Table rows a release of this control plane wrote for a running cluster.

Run it with the code of that release first on the path, against a throwaway Azurite (README.md here says how):

    git worktree add /tmp/prev <commit>
    PYTHONPATH=/tmp/prev .venv/bin/python tests/data/upgrade/make_previous_release_rows.py /tmp/prev
    git worktree remove /tmp/prev

The cluster is created through that release's `Service.create_cluster` (so the row holds what the API stored: the
generated SSH key, the ignored fields, the config hash) and ticked by its `reconcile` with the fake cloud and the
fake Ray reader of its tests/support/fakes.py until the head and two workers (one of each worker type) are
ray_running. Every entity of the clusters, instances and events tables is then dumped with its Table types
(datetimes as ISO 8601 text tagged Edm.DateTime), so a test can write the very same rows into a fresh Table store.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables import EdmType, EntityProperty, TableServiceClient

# The release's modules: PYTHONPATH puts its worktree first (main() checks that it did).
import autoscaler
from autoscaler.model import InstanceStatus
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import ReconcileDeps, reconcile
from autoscaler.service import Service
from autoscaler.state import TableStateStore
from provisioning.azure.ssh import generate_ssh_keypair
from tests.support.fakes import FakeCloudProvider, FakeRayReader

HERE = Path(__file__).resolve().parent
MAIN_REPOSITORY = HERE.parents[2]
OUTPUT = HERE / "previous-release-rows.json"
CLUSTER = "upgrade-demo"
T0 = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
TABLES = ("clusters", "instances", "events")
CONFIG = """
cluster_name: upgrade-demo
max_workers: 4
idle_timeout_minutes: 5
provider:
  type: azure
  location: westus2
  resource_group: ray-upgrade
  availability_zone: "1,2"
auth:
  ssh_user: ubuntu
available_node_types:
  ray.head.default:
    resources: {CPU: 2}
    node_config:
      azure_arm_parameters:
        {vmSize: Standard_D2s_v3, imagePublisher: microsoft-dsvm, imageOffer: ubuntu-2204, imageSku: 2204-gen2,
         imageVersion: latest}
  ray.worker.cpu:
    min_workers: 1
    max_workers: 3
    resources: {CPU: 4}
    idle_timeout_s: 600
    node_config:
      azure_arm_parameters:
        {vmSize: Standard_D4s_v3, imagePublisher: microsoft-dsvm, imageOffer: ubuntu-2204, imageSku: 2204-gen2,
         imageVersion: latest, priority: Spot, billingProfile: {maxPrice: -1}}
  ray.worker.gpu:
    min_workers: 1
    max_workers: 1
    resources: {CPU: 6, GPU: 1}
    fallback: ray.worker.cpu
    worker_setup_commands: [pip install torch]
    node_config:
      azure_arm_parameters:
        {vmSize: Standard_NC6s_v3, imagePublisher: microsoft-dsvm, imageOffer: ubuntu-2204, imageSku: 2204-gen2,
         imageVersion: latest}
head_node_type: ray.head.default
setup_commands: [echo setup]
file_mounts: {/tmp/a: /tmp/b}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path, help="the worktree of the release whose rows to write (on PYTHONPATH)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    release = args.release.resolve()

    imported_from = Path(autoscaler.__file__).resolve().parent.parent
    if imported_from != release:
        sys.exit(f"autoscaler is imported from {imported_from}, not {release}: put the release first on PYTHONPATH")
    commit = subprocess.run(
        ["git", "-C", str(release), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()

    azurite = _main_repository_azurite().start_azurite()
    try:
        _run_release(azurite.connection_string)
        tables = _dump(azurite.connection_string)
    finally:
        azurite.stop()
    document = {
        "made_by": "tests/data/upgrade/make_previous_release_rows.py",
        "release_commit": commit,
        "cluster_name": CLUSTER,
        "tables": tables,
    }
    args.output.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    counts = {name: len(rows) for name, rows in tables.items()}
    print(f"wrote {args.output} from {commit}: {counts}")


def _main_repository_azurite() -> Any:
    """local/azurite.py of this repository (its node_modules hold Azurite), loaded by path: the release's own
    `local` package is the one on the path."""
    spec = importlib.util.spec_from_file_location("main_local_azurite", MAIN_REPOSITORY / "local" / "azurite.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _run_release(connection_string: str) -> None:
    store = TableStateStore.from_connection_string(connection_string)
    cloud = FakeCloudProvider()
    ray = FakeRayReader()
    now = [T0]
    deps = ReconcileDeps(
        store=store,
        provider_for=lambda config: cloud,
        ray_reader=ray,
        token_for=lambda name, generation: f"token-{name}-{generation}",
        clock=lambda: now[0],
    )
    service = Service(
        deps=deps, queue=InMemoryReconcileQueue(), allow_local_provider=False, ssh_keygen=generate_ssh_keypair
    )
    service.create_cluster(CONFIG.encode(), "application/yaml")

    for _ in range(20):
        now[0] += timedelta(seconds=5)
        result = reconcile(CLUSTER, deps)
        if result.outcome != "reconciled":
            raise SystemExit(f"tick ended {result.outcome}: {result.detail}")
        # Ray registers whatever the cloud runs: the head, then each worker (idle for a little while).
        for record in store.list_instances(CLUSTER):
            if record.status == InstanceStatus.ALLOCATED:
                cpus = {"ray.head.default": 2.0, "ray.worker.cpu": 4.0, "ray.worker.gpu": 6.0}[record.node_type]
                ray.register(record.instance_id, record.node_type, idle_s=30.0, cpus=cpus, head=record.is_head)
        running = [r for r in store.list_instances(CLUSTER) if r.status == InstanceStatus.RAY_RUNNING]
        if sum(1 for r in running if not r.is_head) == 2 and any(r.is_head for r in running):
            break
    else:
        raise SystemExit("the cluster did not reach a head and two ray_running workers in 20 ticks")
    # One more tick in the steady state, as a deployment would have run before the upgrade.
    now[0] += timedelta(seconds=5)
    reconcile(CLUSTER, deps)


def _dump(connection_string: str) -> dict[str, list[dict[str, Any]]]:
    service = TableServiceClient.from_connection_string(connection_string)
    tables: dict[str, list[dict[str, Any]]] = {}
    for name in TABLES:
        entities = service.get_table_client(name).list_entities()
        rows = [{key: _typed(value) for key, value in entity.items()} for entity in entities]
        tables[name] = sorted(rows, key=lambda row: (row["PartitionKey"]["value"], row["RowKey"]["value"]))
    return tables


def _typed(value: object) -> dict[str, Any]:
    """A property as Table Storage types it (what the SDK reads back), JSON-safe."""
    if isinstance(value, EntityProperty):
        return {"type": EdmType(value.edm_type).value, "value": value.value}
    if isinstance(value, bool):
        return {"type": "Edm.Boolean", "value": value}
    if isinstance(value, int):
        return {"type": "Edm.Int32", "value": value}
    if isinstance(value, float):
        return {"type": "Edm.Double", "value": value}
    if isinstance(value, datetime):
        return {"type": "Edm.DateTime", "value": value.astimezone(UTC).isoformat()}
    if isinstance(value, str):
        return {"type": "Edm.String", "value": value}
    raise TypeError(f"unexpected Table property value {value!r}")


if __name__ == "__main__":
    main()
