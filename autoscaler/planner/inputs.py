"""The config as the planner reads it: worker types and cluster-wide settings, precomputed once per config.

Tests and the benchmark build these directly; the control plane builds them from a ClusterConfig.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autoscaler.config import ClusterConfig
from autoscaler.model import Shape, shape_of
from autoscaler.planner.prices import cloud_prices, priced_by
from autoscaler.ports import NodePrices

DEFAULT_LAUNCH_TIMEOUT_S = 600.0
UPSCALING_INITIAL_NUM_NODES = 5  # Ray's AUTOSCALER_UPSCALING_INITIAL_NUM_NODES
# Ray's AUTOSCALER_CONSERVE_GPU_NODES (default 1): prefer non-GPU node types for demand that asks for no GPU. GPU nodes
# still take CPU-only work when no other type fits: it is the first criterion of the score, not a filter.
DEFAULT_CONSERVE_GPU_NODES = True

Labels = tuple[tuple[str, str], ...]
"""A node's labels as a sorted tuple of (key, value), so that a node type stays hashable."""


def labels_of(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted((str(key), str(value)) for key, value in labels.items()))


@dataclass(frozen=True)
class WorkerType:
    name: str
    resources: Shape
    min_workers: int
    max_workers: int
    idle_timeout_s: float
    launch_timeout_s: float
    cost: float  # relative price per hour; only ratios between types matter
    cost_basis: str  # where `cost` came from, for reasons and the status page
    fallback: str | None = None
    # ClusterConfig.node_hash of this type as a worker: its instances launched with another are outdated.
    # "" (configs built by hand) falls back to PlannerConfig.config_hash.
    config_hash: str = ""
    labels: Labels = ()  # the type's `labels`: what a new node of this type offers to label selectors


@dataclass(frozen=True)
class PlannerConfig:
    """What `plan` reads from a ClusterConfig, precomputed once (tests and the benchmark build it directly)."""

    worker_types: tuple[WorkerType, ...]  # in config order
    head_node_type: str
    head_resources: Shape
    max_workers: int  # global, workers only
    upscaling_speed: float
    config_hash: str
    head_labels: Labels = ()
    conserve_gpu_nodes: bool = DEFAULT_CONSERVE_GPU_NODES

    @classmethod
    def from_cluster_config(cls, config: ClusterConfig, *, prices: NodePrices | None = None) -> PlannerConfig:
        """`prices` is the cloud's price hook for node types without `cost` (by default that of the plugin of the
        config's `provider.type`); a type it cannot price is priced by its resources."""
        price_of = priced_by(cloud_prices(config.provider, prices))
        workers = []
        for name, node_type in config.worker_node_types().items():
            cost, basis = price_of(node_type)
            workers.append(
                WorkerType(
                    name=name,
                    resources=shape_of(node_type.resources),
                    min_workers=node_type.min_workers,
                    max_workers=node_type.max_workers,
                    idle_timeout_s=config.idle_timeout_s_for(name),
                    launch_timeout_s=node_type.launch_timeout_s or DEFAULT_LAUNCH_TIMEOUT_S,
                    cost=cost,
                    cost_basis=basis,
                    fallback=node_type.fallback,
                    config_hash=config.node_hash(name, is_head=False),
                    labels=labels_of(node_type.labels),
                )
            )
        head = config.available_node_types[config.head_node_type]
        return cls(
            worker_types=tuple(workers),
            head_node_type=config.head_node_type,
            head_resources=shape_of(head.resources),
            max_workers=config.max_workers,
            upscaling_speed=config.upscaling_speed,
            config_hash=config.config_hash(),
            head_labels=labels_of(head.labels),
            # A per-cluster switch once ClusterConfig has the field (docs/decisions/planner.md); Ray's default until.
            conserve_gpu_nodes=bool(getattr(config, "conserve_gpu_nodes", DEFAULT_CONSERVE_GPU_NODES)),
        )
