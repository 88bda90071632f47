"""What a node type costs, for the cost scorer: relative hourly prices, of which only ratios between types matter.

A node type's own `cost` wins. Otherwise its cloud prices it (the plugin's `prices` hook, autoscaler/ports.py: Azure's
retail prices and price classes live with the Azure plugin), and when the cloud cannot tell, it is priced by its
resources. The planner knows no cloud: it gets the cloud's hook from the plugin registry or from its caller.

A cloud whose prices depend on where the cluster runs (Azure's retail prices are per region) gives a hook that is also
`LocatedPrices`: `cloud_prices(provider)` hands it the cluster's provider section first, and the hook reads what it
needs there (docs/decisions/prices.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from autoscaler.config import NodeTypeConfig, ProviderConfig
from autoscaler.plugins import prices_for
from autoscaler.ports import NodePrices

PRICE_PER_CPU_HOUR = 0.05  # a general-purpose vCPU, pay-as-you-go
PRICE_PER_GPU_HOUR = 2.8  # an older data-centre GPU
PriceOf = Callable[[NodeTypeConfig], tuple[float, str]]


def resources_price(node_type: NodeTypeConfig) -> float:
    """A price from the resources alone: per CPU (at least one) and per GPU."""
    cpus = float(node_type.resources.get("CPU", 0.0))
    gpus = float(node_type.resources.get("GPU", 0.0))
    return PRICE_PER_CPU_HOUR * max(cpus, 1.0) + PRICE_PER_GPU_HOUR * gpus


@runtime_checkable
class LocatedPrices(Protocol):
    """A price hook that can also price for one place: `located(provider)` is the hook for clusters of that
    provider section (its region, e.g.). Called on a node type alone it prices as if the place were unknown."""

    def __call__(self, node_type: NodeTypeConfig) -> tuple[float, str] | None: ...

    def located(self, provider: ProviderConfig) -> NodePrices: ...


def cloud_prices(provider: ProviderConfig, prices: NodePrices | None = None) -> NodePrices:
    """The price hook for a cluster of `provider`: `prices` (by default the hook of the plugin of `provider.type`),
    located at the cluster's provider section when the hook prices per place."""
    hook = prices if prices is not None else prices_for(provider.type)
    return hook.located(provider) if isinstance(hook, LocatedPrices) else hook


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
