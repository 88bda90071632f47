"""Offerings: where a launch of a node type goes (zone, priority), and what the planner must treat as unavailable.

A node type launches as an offering: its instance size (the plugin says which: Azure's vmSize) in an availability zone
at a priority (spot or regular). The cloud refuses offerings, not node types: a zone runs out of a size's spot capacity
(`ZonalAllocationFailed`), a region's spot quota is used up (`LowPriorityCores`), spot VMs of a size keep being
evicted in one zone. So what failed is recorded per (size, zone, priority), for a time that depends on what failed
(the provider's TTL per error code; `EVICTION_AVOID_S` after a preemption notice), and each launch picks, in order:

1. the node type's own priority, in the allowed zone that holds fewest of its live nodes (spreading them) and is not
   avoided;
2. regular priority, the same way, when the node type allows it (`spot_fallback: regular`, off by default: a regular
   VM costs several times a spot one);
3. nothing: the whole node type is unavailable, the planner is told so, and it falls back to the type's `fallback`
   chain or the next best type (autoscaler/planner), as it did when unavailability was per type.

A quota is regional: it avoids the (size, priority) in every zone. Entries written before offerings existed name only
a node type and avoid all of it. Karpenter's Azure provider keys its unavailable-offerings cache the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from autoscaler.config import ClusterConfig
from autoscaler.model import InstanceRecord, Unavailability
from autoscaler.plugins import offering_for

SPOT = "spot"
REGULAR = "regular"
# After a preemption notice, the (size, zone, spot) offering is avoided this long, so the replacement goes to another
# zone (Karpenter marks an interrupted spot offering unavailable for a few minutes too). Only when another zone is
# allowed: with one zone the replacement would otherwise wait out the whole TTL.
EVICTION_AVOID_S = 300.0


@dataclass(frozen=True)
class Placement:
    """Where one launch goes."""

    zone: str  # "" lets the cloud choose (no zones configured)
    priority: str  # SPOT | REGULAR
    size: str


def own_priority(config: ClusterConfig, node_type: str) -> str:
    """The priority a node type asks for in its node config."""
    node = config.available_node_types[node_type]
    return SPOT if offering_for(config.provider.type, node_type, node.node_config).spot else REGULAR


def size_of(config: ClusterConfig, node_type: str) -> str:
    node = config.available_node_types[node_type]
    return offering_for(config.provider.type, node_type, node.node_config).size


def priorities_of(config: ClusterConfig, node_type: str) -> tuple[str, ...]:
    """The priorities a launch of this node type may use, preferred first."""
    own = own_priority(config, node_type)
    if own == SPOT and config.available_node_types[node_type].spot_fallback == REGULAR:
        return (SPOT, REGULAR)
    return (own,)


def in_force(unavailable: Iterable[Unavailability], now: datetime) -> list[Unavailability]:
    return [entry for entry in unavailable if entry.until > now]


def place(
    config: ClusterConfig,
    node_type: str,
    *,
    live: Sequence[InstanceRecord],
    unavailable: Sequence[Unavailability],
) -> Placement | None:
    """The offering for the next launch of `node_type` (see the module docstring), or None when every one allowed
    is avoided. `live` are the cluster's live records (for spreading); `unavailable` the entries still in force."""
    size = size_of(config, node_type)
    zones = config.provider.zones() or [""]
    for priority in priorities_of(config, node_type):
        open_zones = [zone for zone in zones if not any(u.covers(size, zone, priority, node_type) for u in unavailable)]
        if open_zones:
            held = dict.fromkeys(open_zones, 0)
            for record in live:
                if record.node_type == node_type and record.availability_zone in held:
                    held[record.availability_zone] += 1
            # Fewest first; among equals, the configured order (stable min).
            return Placement(zone=min(open_zones, key=lambda zone: held[zone]), priority=priority, size=size)
    return None


def unavailable_types(
    config: ClusterConfig, node_types: Iterable[str], unavailable: Sequence[Unavailability]
) -> list[Unavailability]:
    """What the planner sees: one entry per node type none of whose allowed offerings is open, until the first of
    its blocking entries ends, with their reasons."""
    types = []
    for node_type in node_types:
        blocking = _blocking(config, node_type, unavailable)
        if blocking:
            reason = "; ".join(dict.fromkeys(describe(u) for u in blocking))
            types.append(Unavailability(node_type, min(u.until for u in blocking), reason))
    return types


def _blocking(config: ClusterConfig, node_type: str, unavailable: Sequence[Unavailability]) -> list[Unavailability]:
    """The entries that close every offering of `node_type`; [] when one is open."""
    size = size_of(config, node_type)
    blocking: list[Unavailability] = []
    for priority in priorities_of(config, node_type):
        for zone in config.provider.zones() or [""]:
            covering = [u for u in unavailable if u.covers(size, zone, priority, node_type)]
            if not covering:
                return []
            blocking.extend(u for u in covering if u not in blocking)
    return blocking


def record_failure(
    unavailable: Sequence[Unavailability],
    config: ClusterConfig,
    record: InstanceRecord,
    *,
    kind: str,
    ttl_s: float,
    reason: str,
    now: datetime,
) -> tuple[tuple[Unavailability, ...], Unavailability]:
    """The entries after `record`'s launch failed with `kind` ("capacity" | "quota" | "eviction"): its offering is
    avoided for `ttl_s`, replacing an older entry for the same offering. A quota is regional (every zone)."""
    entry = Unavailability(
        node_type=record.node_type,
        until=now + timedelta(seconds=ttl_s),
        reason=reason,
        size=size_of(config, record.node_type),
        zone="" if kind == "quota" else record.availability_zone,
        priority=record.priority or own_priority(config, record.node_type),
        kind=kind,
    )
    key = (entry.size, entry.zone, entry.priority)
    kept = tuple(u for u in in_force(unavailable, now) if (u.size, u.zone, u.priority) != key)
    return (*kept, entry), entry


def eviction_avoidable(config: ClusterConfig) -> bool:
    """Whether avoiding an evicted zone leaves another to launch in (see EVICTION_AVOID_S)."""
    return len(config.provider.zones()) > 1


def describe(entry: Unavailability) -> str:
    """One line for events and the status page: what is avoided, where, why."""
    if not entry.size:
        return entry.reason
    where = f"zone {entry.zone}" if entry.zone else "every zone"
    return f"{entry.size} {entry.priority or 'any priority'} in {where}: {entry.reason}"
