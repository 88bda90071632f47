"""The simulated cluster: one Azure cluster config for every trace, its prices, and the luck of each VM.

The config is a Ray cluster YAML for Azure, parsed by our own parser (`autoscaler.config`), so both policies read
the same `max_workers`, `upscaling_speed`, `idle_timeout_minutes` and node types. Each node type's `cost` is set to
the Azure plugin's static price class of its VM size (provisioning/azure/plugin.py `vm_size_price`: pay-as-you-go
Linux list prices per vCPU-hour by family, East US 2024-2025, plus a rate per GPU by accelerator; spot at 0.3 of
that), so our planner ranks types by the very prices the simulator bills, and no price is ever fetched:
D8s_v5 $0.384/h regular, $0.115/h spot; NC24ads_A100_v4 $3.88/h regular (Azure's list: $3.67), $1.16/h spot. Ray's
scheduler reads no price.

Luck. Boot times and spot lifetimes are drawn per VM from a stream keyed by (seed, node type, the VM's sequence
number among that type's launches), not from one shared stream: the third spot CPU VM of either policy boots in the
same time and lives as long as the other policy's third. A shared stream would hand a policy that launches one more
VM early on different luck for every later VM, and the comparison would measure luck instead of policy (common
random numbers).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from functools import cache

from autoscaler.config import ClusterConfig, parse_cluster_config
from autoscaler.planner import PlannerConfig
from provisioning.azure.plugin import vm_size_price

CLUSTER_NAME = "sim"
HEAD_TYPE = "head"
IMAGE = {
    "imagePublisher": "microsoft-dsvm",
    "imageOffer": "ubuntu-2204",
    "imageSku": "2204-gen2",
    "imageVersion": "latest",
}
SPOT = {"priority": "Spot", "evictionPolicy": "Delete", "billingProfile": {"maxPrice": -1}}


def _node(vm_size: str, resources: dict[str, float], max_workers: int, *, spot: bool) -> dict[str, object]:
    arm = {**IMAGE, "vmSize": vm_size, **(SPOT if spot else {})}
    price = vm_size_price(vm_size, gpus=resources.get("GPU", 0.0), cpus=resources.get("CPU", 0.0), is_spot=spot)
    return {
        "resources": resources,
        "cost": round(price, 4),
        "min_workers": 0,
        "max_workers": max_workers,
        "node_config": {"azure_arm_parameters": arm},
    }


CONFIG: dict[str, object] = {
    "cluster_name": CLUSTER_NAME,
    "max_workers": 48,
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 5,  # Ray's default
    "provider": {
        "type": "azure",
        "location": "eastus",
        "resource_group": "ray-sim",
        "subscription_id": "00000000-0000-0000-0000-000000000000",
    },
    "auth": {"ssh_user": "ray"},
    # The head has no CPUs for tasks (as in examples/local-demo.yaml): every task needs a worker.
    "head_node_type": HEAD_TYPE,
    "available_node_types": {
        HEAD_TYPE: {**_node("Standard_D4s_v5", {"CPU": 0}, 0, spot=False)},
        "cpu.spot": _node("Standard_D8s_v5", {"CPU": 8}, 40, spot=True),
        "cpu.regular": _node("Standard_D8s_v5", {"CPU": 8}, 40, spot=False),
        "gpu.spot": _node("Standard_NC24ads_A100_v4", {"CPU": 24, "GPU": 1}, 8, spot=True),
        "gpu.regular": _node("Standard_NC24ads_A100_v4", {"CPU": 24, "GPU": 1}, 8, spot=False),
    },
}


@cache
def cluster_config() -> ClusterConfig:
    return parse_cluster_config(json.dumps(CONFIG)).config


@cache
def planner_config() -> PlannerConfig:
    return PlannerConfig.from_cluster_config(cluster_config())


def price_per_hour(node_type: str) -> float:
    """What one VM of the type costs per hour: the planner's own price of the type (see the module docstring)."""
    return next(worker.cost for worker in planner_config().worker_types if worker.name == node_type)


def vm_size(node_type: str) -> str:
    arm = cluster_config().available_node_types[node_type].node_config.get("azure_arm_parameters", {})
    return str(arm.get("vmSize", "")) if isinstance(arm, dict) else ""


def is_spot(node_type: str) -> bool:
    arm = cluster_config().available_node_types[node_type].node_config.get("azure_arm_parameters", {})
    return isinstance(arm, dict) and arm.get("priority") in ("Spot", "Low")


def is_gpu(node_type: str) -> bool:
    return cluster_config().available_node_types[node_type].resources.get("GPU", 0.0) > 0


@dataclass(frozen=True)
class Distributions:
    """The stated distributions of the run (printed with the results)."""

    cpu_boot_median_s: float = 90.0  # VM allocation, cloud-init, Ray start: lognormal
    gpu_boot_median_s: float = 240.0  # bigger image, GPU driver load
    boot_sigma: float = 0.3  # lognormal sigma of both (p95 = median x 1.64)
    boot_min_s: float = 40.0
    boot_max_s: float = 540.0  # below the 600 s launch timeout of both policies
    cpu_spot_mean_life_h: float = 12.0  # exponential lifetime of a spot VM
    gpu_spot_mean_life_h: float = 4.0  # GPU spot capacity is scarcer
    eviction_notice_s: float = 30.0  # Azure Scheduled Events Preempt: at least 30 s before the eviction

    def describe(self) -> str:
        return (
            f"boot: lognormal, median {self.cpu_boot_median_s:g} s (CPU) / {self.gpu_boot_median_s:g} s (GPU), "
            f"sigma {self.boot_sigma:g}, clipped to [{self.boot_min_s:g}, {self.boot_max_s:g}] s; spot lifetime: "
            f"exponential, mean {self.cpu_spot_mean_life_h:g} h (CPU) / {self.gpu_spot_mean_life_h:g} h (GPU), "
            f"notice {self.eviction_notice_s:g} s; regular VMs are never evicted"
        )


@dataclass(frozen=True)
class Luck:
    boot_s: float
    life_s: float  # from launch to eviction; math.inf for regular VMs


def luck(seed: int, trace: str, node_type: str, sequence: int, distributions: Distributions) -> Luck:
    """The boot time and lifetime of the `sequence`-th VM of `node_type` launched in `trace` (see the docstring)."""
    rng = random.Random(f"{seed}:{trace}:{node_type}:{sequence}")
    gpu = is_gpu(node_type)
    median_s = distributions.gpu_boot_median_s if gpu else distributions.cpu_boot_median_s
    boot_s = median_s * math.exp(rng.gauss(0.0, distributions.boot_sigma))
    boot_s = min(distributions.boot_max_s, max(distributions.boot_min_s, boot_s))
    life_draw = rng.expovariate(1.0)  # drawn for every VM, so the stream is the same whatever the type's priority
    if not is_spot(node_type):
        return Luck(boot_s, math.inf)
    mean_h = distributions.gpu_spot_mean_life_h if gpu else distributions.cpu_spot_mean_life_h
    return Luck(boot_s, life_draw * mean_h * 3600.0)
