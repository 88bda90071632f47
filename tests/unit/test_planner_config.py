"""The planner reads the real ClusterConfig: costs, the cloud's prices, timeouts, labels, and `plan(config=...)`."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.config import ClusterConfig, NodeTypeConfig, parse_cluster_config
from autoscaler.model import InstanceRecord, InstanceStatus, RayState, ShapeDemand, Unavailability
from autoscaler.planner import DEFAULT_LAUNCH_TIMEOUT_S, PlannerConfig, plan, resources_price
from provisioning.azure.plugin import vm_size_price
from tests.unit.test_planner_support import NOW

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example-full.yaml"


def example_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return document


def with_worker(document: dict[str, Any], name: str, vm_size: str, *, priority: str = "Regular", **fields: Any) -> None:
    arm = copy.deepcopy(document["available_node_types"]["ray.worker.default"]["node_config"]["azure_arm_parameters"])
    arm.update(vmSize=vm_size, priority=priority)
    document["available_node_types"][name] = {"node_config": {"azure_arm_parameters": arm}, **fields}


def cluster_config(document: dict[str, Any]) -> ClusterConfig:
    return parse_cluster_config(document).config


@pytest.mark.parametrize(
    ("vm_size", "cpus", "gpus", "is_spot", "expected"),
    [
        ("Standard_D2s_v3", 2, 0, False, 0.096),
        ("Standard_D2s_v3", 2, 0, True, 0.0288),
        ("Standard_E8s_v5", 8, 0, False, 0.504),
        ("Standard_NC24ads_A100_v4", 24, 1, False, 3.88),
        ("Standard_NC4as_T4_v3", 4, 1, False, 0.53),
        ("Standard_Q4_v9", 4, 0, False, 0.2),  # unknown family: the default rate per vCPU
        ("", 8, 0, False, 0.4),  # no size at all: priced from the resources
    ],
)
def test_price_class_of_a_vm_size(vm_size: str, cpus: float, gpus: float, is_spot: bool, expected: float) -> None:
    assert vm_size_price(vm_size, cpus=cpus, gpus=gpus, is_spot=is_spot) == pytest.approx(expected)


def test_a_type_its_cloud_cannot_price_is_priced_by_its_resources() -> None:
    document = example_document()
    with_worker(document, "gpu", "Standard_NC24ads_A100_v4", resources={"CPU": 24, "GPU": 1}, max_workers=2)

    def cloud_knows_nothing(node_type: NodeTypeConfig) -> tuple[float, str] | None:
        return None

    planner_config = PlannerConfig.from_cluster_config(cluster_config(document), prices=cloud_knows_nothing)
    gpu = next(worker for worker in planner_config.worker_types if worker.name == "gpu")
    assert gpu.cost == pytest.approx(24 * 0.05 + 2.8)
    assert gpu.cost_basis == "price class of its resources"
    assert resources_price(cluster_config(document).available_node_types["gpu"]) == pytest.approx(4.0)


def test_planner_config_takes_labels_from_the_cluster_config() -> None:
    document = example_document()
    with_worker(document, "gpu", "Standard_NC4as_T4_v3", resources={"CPU": 4, "GPU": 1}, max_workers=2,
                labels={"accelerator": "T4", "zone": "1"})  # fmt: skip
    planner_config = PlannerConfig.from_cluster_config(cluster_config(document))
    gpu = next(worker for worker in planner_config.worker_types if worker.name == "gpu")
    assert dict(gpu.labels) == {"accelerator": "T4", "zone": "1"}
    assert planner_config.conserve_gpu_nodes is True  # Ray's default until the config says otherwise


def test_the_gpu_switch_is_read_from_the_cluster_config_once_it_has_the_field() -> None:
    config = cluster_config(example_document())
    switched_off = config.model_copy(update={"conserve_gpu_nodes": False})  # as `conserve_gpu_nodes: false` will
    assert PlannerConfig.from_cluster_config(switched_off).conserve_gpu_nodes is False
    assert PlannerConfig.from_cluster_config(config).conserve_gpu_nodes is True


def test_planner_config_takes_costs_timeouts_and_worker_types_from_the_cluster_config() -> None:
    document = example_document()
    document["idle_timeout_minutes"] = 7
    with_worker(document, "gpu", "Standard_NC24ads_A100_v4", resources={"CPU": 24, "GPU": 1}, max_workers=2,
                idle_timeout_s=60, launch_timeout_s=900, cost=2.5)  # fmt: skip
    planner_config = PlannerConfig.from_cluster_config(cluster_config(document))
    workers = {worker.name: worker for worker in planner_config.worker_types}
    assert set(workers) == {"ray.worker.default", "gpu"}  # the head type has max_workers 0
    assert (workers["gpu"].cost, workers["gpu"].cost_basis) == (2.5, "cost from the config")
    assert workers["ray.worker.default"].cost_basis == "price class of Standard_D2s_v3 (spot)"
    assert (workers["gpu"].idle_timeout_s, workers["gpu"].launch_timeout_s) == (60.0, 900.0)
    assert workers["ray.worker.default"].idle_timeout_s == 7 * 60.0
    assert workers["ray.worker.default"].launch_timeout_s == DEFAULT_LAUNCH_TIMEOUT_S


def head_only() -> list[InstanceRecord]:
    since = NOW - timedelta(hours=1)
    return [InstanceRecord("c", "head-1", "ray.head.default", InstanceStatus.RAY_RUNNING, "r", since, since,
                           is_head=True)]  # fmt: skip


def test_plan_accepts_a_cluster_config_and_prefers_the_cheaper_spot_size() -> None:
    document = example_document()
    document["max_workers"] = 10
    document["available_node_types"]["ray.worker.default"]["max_workers"] = 10
    with_worker(document, "regular", "Standard_D2s_v3", resources={"CPU": 2}, max_workers=10)
    config = cluster_config(document)
    state = RayState(pending=(ShapeDemand((("CPU", 2.0),), 3),))
    result = plan(config=config, instances=head_only(), ray=state, unavailable=(), now=NOW)
    assert [(launch.node_type, launch.count) for launch in result.launches] == [("ray.worker.default", 3)]
    [launch] = result.launches
    assert "cheapest fit at" in launch.reason  # the reason says what the cost scorer priced it at, and from where
    assert "spot" in launch.reason


def test_an_unavailable_spot_type_falls_back_through_the_real_config() -> None:
    document = example_document()
    document["max_workers"] = 10
    document["available_node_types"]["ray.worker.default"].update(max_workers=10, fallback="regular")
    with_worker(document, "regular", "Standard_D2s_v3", resources={"CPU": 2}, max_workers=10)
    config = cluster_config(document)
    state = RayState(pending=(ShapeDemand((("CPU", 2.0),), 2),))
    blocked = Unavailability("ray.worker.default", NOW + timedelta(hours=1), "spot quota exhausted")
    result = plan(config=config, instances=head_only(), ray=state, unavailable=[blocked], now=NOW)
    assert [(launch.node_type, launch.count) for launch in result.launches] == [("regular", 2)]
    assert "ray.worker.default unavailable until 13:00:00Z (spot quota exhausted)" in "\n".join(result.reasons())
