"""`node_config.azure_scale_set` (provisioning/azure/plugin.py): its rules, reported with the config's other field
errors, each naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.config import ConfigError, parse_cluster_config
from autoscaler.settings import Settings
from provisioning.azure.plugin import AZURE, STANDBY_POOL_NOT_SUPPORTED

WORKER = "ray.worker.pool"
NODE_CONFIG_PATH = f"available_node_types['{WORKER}'].node_config.azure_scale_set"
IMAGE = {"imagePublisher": "Canonical", "imageOffer": "ubuntu-24_04-lts", "imageSku": "server"}


def document(scale_set: Any, *, priority: str = "Spot", head_scale_set: Any = None) -> dict[str, Any]:
    head_config: dict[str, Any] = {"azure_arm_parameters": {"vmSize": "Standard_D2s_v3", **IMAGE}}
    if head_scale_set is not None:
        head_config["azure_scale_set"] = head_scale_set
    return {
        "cluster_name": "pools",
        "provider": {"type": "azure", "location": "eastus", "resource_group": "rg", "subscription_id": None},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": head_config},
            WORKER: {
                "resources": {"CPU": 4},
                "max_workers": 10,
                "node_config": {
                    "azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **IMAGE, "priority": priority},
                    "azure_scale_set": scale_set,
                },
            },
        },
        "head_node_type": "ray.head.default",
    }


def errors_of(config: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as raised:
        parse_cluster_config(config)
    return {error.path: error.message for error in raised.value.errors}


@pytest.mark.parametrize(
    "scale_set",
    [
        {},
        {"platform_fault_domain_count": 3},
        {"priority_mix": {"base_regular_count": 2, "regular_percentage_above_base": 25}},
        {"priority_mix": {}},
    ],
)
def test_a_valid_scale_set_is_accepted(scale_set: dict[str, Any]) -> None:
    parse_cluster_config(document(scale_set))


@pytest.mark.parametrize(
    ("scale_set", "priority", "path", "says"),
    [
        ({"platform_fault_domain_count": 0}, "Spot", ".platform_fault_domain_count", "greater than or equal to 1"),
        ({"platform_fault_domain_count": 4}, "Spot", ".platform_fault_domain_count", "less than or equal to 3"),
        ({"priority_mix": {"base_regular_count": -1}}, "Spot", ".priority_mix.base_regular_count", "greater"),
        (
            {"priority_mix": {"regular_percentage_above_base": 101}},
            "Spot",
            ".priority_mix.regular_percentage_above_base",
            "less than or equal to 100",
        ),
        ({"priority_mix": {}}, "Regular", ".priority_mix", "priority Spot"),
        ({"capacity": 3}, "Spot", ".capacity", "unknown field"),
        ({"standby_pool": {"max_ready_capacity": 5}}, "Spot", ".standby_pool", STANDBY_POOL_NOT_SUPPORTED),
        ("yes", "Spot", "", "mapping"),
    ],
)
def test_an_invalid_scale_set_is_refused_naming_the_field(scale_set: Any, priority: str, path: str, says: str) -> None:
    errors = errors_of(document(scale_set, priority=priority))
    assert NODE_CONFIG_PATH + path in errors, errors
    assert says in errors[NODE_CONFIG_PATH + path]


def test_the_head_node_type_cannot_be_a_scale_set() -> None:
    config = parse_cluster_config(document({}, head_scale_set={})).config
    settings = Settings.from_environment(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "CLUSTER_TOKEN_KEY": "k" * 32,
            "CLUSTERS_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
        }
    )
    problems = {error.path: error.message for error in AZURE.check(config, settings)}
    path = "available_node_types['ray.head.default'].node_config.azure_scale_set"
    assert "the head node type cannot be a scale set" in problems[path]
