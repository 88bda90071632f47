"""What a node type costs, for the cost scorer: relative hourly prices, of which only ratios between types matter.

A node type's own `cost` wins. Otherwise its cloud prices it (the plugin's `prices` hook, autoscaler/ports.py: Azure's
price classes by VM size live with the Azure plugin), and when the cloud cannot tell, it is priced by its resources.
The planner knows no cloud: it gets the cloud's hook from the plugin registry or from its caller.
"""

from __future__ import annotations

from collections.abc import Callable

from autoscaler.config import NodeTypeConfig
from autoscaler.ports import NodePrices

PRICE_PER_CPU_HOUR = 0.05  # a general-purpose vCPU, pay-as-you-go
PRICE_PER_GPU_HOUR = 2.8  # an older data-centre GPU
PriceOf = Callable[[NodeTypeConfig], tuple[float, str]]


def resources_price(node_type: NodeTypeConfig) -> float:
    """A price from the resources alone: per CPU (at least one) and per GPU."""
    cpus = float(node_type.resources.get("CPU", 0.0))
    gpus = float(node_type.resources.get("GPU", 0.0))
    return PRICE_PER_CPU_HOUR * max(cpus, 1.0) + PRICE_PER_GPU_HOUR * gpus


def priced_by(cloud: NodePrices) -> PriceOf:
    """The price of a node type and where it came from: its `cost`, else its cloud's price, else its resources'."""

    def price_of(node_type: NodeTypeConfig) -> tuple[float, str]:
        if node_type.cost is not None:
            return node_type.cost, "cost from the config"
        priced = cloud(node_type)
        if priced is not None:
            return priced
        return resources_price(node_type), "price class of its resources"

    return price_of
