"""What an Azure node type launches as, for the unavailable-offerings cache (autoscaler/ports.py `NodeOffering`).

Azure refuses capacity per VM size, zone and priority: `ZonalAllocationFailed` is one zone's, `SkuNotAvailable` one
size's in a zone or region, a spot quota (`LowPriorityCores`) is regional for every spot size of the family. The
control plane keeps what failed per (vmSize, zone, priority) and tries the next zone, then regular priority where a
node type allows it (`spot_fallback: regular`), then the node type's `fallback`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoscaler.ports import NodeOffering

SPOT_PRIORITIES = frozenset({"Spot", "Low"})  # Ray's legacy `Low` is sent as Spot (plugin.place says so)


def azure_offering(node_type_name: str, node_config: Mapping[str, Any]) -> NodeOffering:
    """`azure_arm_parameters.vmSize` and `.priority` of a node type (raw or parsed); its name when it has no size
    (a config the rules refuse anyway)."""
    parameters = node_config.get("azure_arm_parameters")
    if not isinstance(parameters, Mapping):
        return NodeOffering(size=node_type_name)
    size = parameters.get("vmSize")
    return NodeOffering(
        size=size if isinstance(size, str) and size else node_type_name,
        spot=parameters.get("priority") in SPOT_PRIORITIES,
    )
