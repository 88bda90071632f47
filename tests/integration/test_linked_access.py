"""A subnet or an image in another resource group needs a role there (docs/deploy.md, "Subnets and images in
another resource group"): without it Azure answers 403 LinkedAuthorizationFailed, which fails the launch as an
invalid request with Azure's message; with exactly the documented action granted there, the launch goes through.

Runs against the strict emulator with the app's two roles granted where infra grants them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from autoscaler.config import ClusterConfig, parse_cluster_config
from provisioning.azure.provider import AzureCloudProvider, AzureSettings
from provisioning.cloud import InvalidRequestError
from tests.support.arm_emulator import ArmEmulator
from tests.support.arm_rules import validate_request
from tests.support.provider_contract import launch_request_for

CLUSTERS_RESOURCE_GROUP = "rg-dev-clusters"
NETWORK_RESOURCE_GROUP = "rg-network"
IMAGES_RESOURCE_GROUP = "rg-images"
IMAGE = {"imagePublisher": "Canonical", "imageOffer": "ubuntu-24_04-lts", "imageSku": "server"}
SUBNET_JOIN = "Microsoft.Network/virtualNetworks/subnets/join/action"
GALLERY_IMAGE_VERSION_READ = "Microsoft.Compute/galleries/images/versions/read"


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    with ArmEmulator(strict=True, request_validator=validate_request) as emulator:
        function_subnet_id = emulator.seed_subnet("rg-dev", "vnet-app", "functions", "10.250.0.0/26")
        emulator.grant_app_roles(CLUSTERS_RESOURCE_GROUP, function_subnet_id.split("/subnets/")[0])
        yield emulator


def config_with(arm: ArmEmulator, *, provider: dict[str, Any], head_parameters: dict[str, Any]) -> ClusterConfig:
    document = {
        "cluster_name": "linked",
        "max_workers": 1,
        "provider": {
            "type": "azure",
            "location": "eastus",
            "resource_group": CLUSTERS_RESOURCE_GROUP,
            "subscription_id": arm.subscription_id,
            **provider,
        },
        "available_node_types": {
            "head": {"resources": {"CPU": 2}, "node_config": {"azure_arm_parameters": head_parameters}},
        },
        "head_node_type": "head",
    }
    return parse_cluster_config(document).config


def launch_head(arm: ArmEmulator, config: ClusterConfig) -> None:
    settings = AzureSettings(
        subscription_id=arm.subscription_id,
        base_url=arm.base_url,
        connection_verify=arm.ca_path,
        retry_backoff_factor_s=0.01,
        network_poll_interval_s=0.02,
    )
    provider = AzureCloudProvider(config, arm.credential(), settings)
    provider.launch(launch_request_for(config, "head0001", "head", cluster_token="t" * 43, head_address=""))


def test_a_subnet_in_another_group_without_join_rights_fails_the_launch_as_invalid(arm: ArmEmulator) -> None:
    subnet_id = arm.seed_subnet(NETWORK_RESOURCE_GROUP, "vnet-shared", "ray", "10.40.0.0/24")
    config = config_with(arm, provider={"subnet_id": subnet_id}, head_parameters={"vmSize": "Standard_D2s_v3", **IMAGE})

    with pytest.raises(InvalidRequestError, match="LinkedAuthorizationFailed") as raised:
        launch_head(arm, config)

    assert SUBNET_JOIN in str(raised.value)
    assert arm.resources("Microsoft.Compute/virtualMachines") == []


def test_a_subnet_in_another_group_works_with_the_documented_join_right_there(arm: ArmEmulator) -> None:
    subnet_id = arm.seed_subnet(NETWORK_RESOURCE_GROUP, "vnet-shared", "ray", "10.40.0.0/24")
    arm.grant([SUBNET_JOIN], subnet_id)
    config = config_with(arm, provider={"subnet_id": subnet_id}, head_parameters={"vmSize": "Standard_D2s_v3", **IMAGE})

    launch_head(arm, config)

    assert [vm["name"] for vm in arm.resources("Microsoft.Compute/virtualMachines")] == ["ray-linked-head0001"]


def gallery_image_version_id(arm: ArmEmulator) -> str:
    return (
        f"/subscriptions/{arm.subscription_id}/resourceGroups/{IMAGES_RESOURCE_GROUP}/providers/Microsoft.Compute"
        "/galleries/raygallery/images/ray-node/versions/2.60.0"
    )


def test_a_gallery_image_in_another_group_without_read_rights_fails_the_launch_as_invalid(arm: ArmEmulator) -> None:
    config = config_with(
        arm, provider={}, head_parameters={"vmSize": "Standard_D2s_v3", "imageId": gallery_image_version_id(arm)}
    )

    with pytest.raises(InvalidRequestError, match="LinkedAuthorizationFailed") as raised:
        launch_head(arm, config)

    assert GALLERY_IMAGE_VERSION_READ in str(raised.value)


def test_a_gallery_image_in_another_group_works_with_the_documented_read_right_on_the_gallery(
    arm: ArmEmulator,
) -> None:
    image_id = gallery_image_version_id(arm)
    arm.grant([GALLERY_IMAGE_VERSION_READ], image_id.split("/images/")[0])  # the gallery
    config = config_with(arm, provider={}, head_parameters={"vmSize": "Standard_D2s_v3", "imageId": image_id})

    launch_head(arm, config)

    (vm,) = arm.resources("Microsoft.Compute/virtualMachines")
    assert vm["properties"]["storageProfile"]["imageReference"]["id"] == image_id
