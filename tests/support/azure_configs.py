"""The Azure cluster config the provider tests and benchmarks build on: a head of Ray's default type in the given
resource group, spread over zones 1-3 in eastus, plus the worker types each test is about."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoscaler.config import ClusterConfig, parse_cluster_config

HEAD_TYPE = "ray.head.default"
IMAGE = {"imagePublisher": "Canonical", "imageOffer": "ubuntu-24_04-lts", "imageSku": "server"}


def azure_cluster_config(
    subscription_id: str,
    *,
    cluster_name: str,
    resource_group: str,
    max_workers: int,
    workers: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
    **provider: Any,
) -> ClusterConfig:
    """`workers` are the worker node types as Ray's YAML has them; `extra` adds top-level fields (setup_commands)."""
    document = {
        "cluster_name": cluster_name,
        "max_workers": max_workers,
        "provider": {
            "type": "azure",
            "location": "eastus",
            "resource_group": resource_group,
            "subscription_id": subscription_id,
            "availability_zone": "1,2,3",
            **provider,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            HEAD_TYPE: {
                "resources": {"CPU": 2},
                "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D2s_v3", **IMAGE}},
            },
            **workers,
        },
        "head_node_type": HEAD_TYPE,
        **(extra or {}),
    }
    return parse_cluster_config(document).config
