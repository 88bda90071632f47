"""Price classes (ours): a relative hourly price per node type, used only when the type gives no `cost`.

Only ratios between node types matter: the cost scorer ranks types by price per unit of demand served. The tables are
Azure's (VM size names, pay-as-you-go list prices); `node_type_cost` is what `PlannerConfig.from_cluster_config`
calls by default, and a caller may pass another pricing function (one per cloud).
"""

from __future__ import annotations

import re

from autoscaler.config import NodeTypeConfig

SPOT_PRICE_FACTOR = 0.3  # Azure spot is typically 60-90% cheaper; 0.3 ranks spot below regular without guessing low

# Pay-as-you-go Linux list prices per vCPU-hour by VM family (rounded, East US, 2024-2025). Relative, not a bill.
# GPU families carry most of their price in the accelerator, below.
_FAMILY_PRICE_PER_VCPU_HOUR: dict[str, float] = {
    "A": 0.045,
    "B": 0.021,
    "D": 0.048,
    "DC": 0.1,
    "E": 0.063,
    "EC": 0.075,
    "F": 0.043,
    "FX": 0.09,
    "H": 0.03,
    "HB": 0.03,
    "HC": 0.072,
    "L": 0.078,
    "M": 0.27,
    "NC": 0.02,
    "ND": 0.02,
    "NG": 0.02,
    "NV": 0.02,
}
# Price per GPU-hour by accelerator named in the size (NC24ads_A100_v4); "" is the default for older GPU sizes.
_ACCELERATOR_PRICE_PER_GPU_HOUR: dict[str, float] = {
    "H200": 8.0,
    "H100": 6.5,
    "MI300X": 6.0,
    "A100": 3.4,
    "A10": 1.0,
    "T4": 0.45,
    "": 2.8,
}
_DEFAULT_PRICE_PER_VCPU_HOUR = 0.05
_VM_SIZE_PARTS = re.compile(r"^(?:Standard|Basic)_([A-Z]+)(\d+)")


def vm_size_price(vm_size: str, *, gpus: float, cpus: float, is_spot: bool) -> float:
    """A relative hourly price for an Azure VM size: family rate x vCPUs (from the name) + GPUs x accelerator rate."""
    parts = _VM_SIZE_PARTS.match(vm_size)
    family, vcpus = (parts.group(1), float(parts.group(2))) if parts else ("", cpus)
    per_vcpu = next(
        (
            _FAMILY_PRICE_PER_VCPU_HOUR[family[:length]]
            for length in (2, 1)
            if family[:length] in _FAMILY_PRICE_PER_VCPU_HOUR
        ),
        _DEFAULT_PRICE_PER_VCPU_HOUR,
    )
    accelerator = next((name for name in _ACCELERATOR_PRICE_PER_GPU_HOUR if name and name in vm_size.upper()), "")
    price = per_vcpu * max(vcpus, 1.0) + gpus * _ACCELERATOR_PRICE_PER_GPU_HOUR[accelerator]
    return price * (SPOT_PRICE_FACTOR if is_spot else 1.0)


def node_type_cost(node_type: NodeTypeConfig) -> tuple[float, str]:
    """The type's `cost`, else a price class from its VM size, else one from its resources; with where it came from."""
    if node_type.cost is not None:
        return node_type.cost, "cost from the config"
    cpus = float(node_type.resources.get("CPU", 0.0))
    gpus = float(node_type.resources.get("GPU", 0.0))
    arm = node_type.azure_arm_parameters()
    if arm is not None:
        price = vm_size_price(arm.vmSize, gpus=gpus, cpus=cpus, is_spot=arm.is_spot)
        return price, f"price class of {arm.vmSize}{' (spot)' if arm.is_spot else ''}"
    price = vm_size_price("", gpus=gpus, cpus=cpus, is_spot=False)
    return price, "price class of its resources"
