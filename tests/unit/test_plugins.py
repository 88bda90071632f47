"""The provider registry and the built-in plugins: what each cloud decides (prices, placement, SSH, checks), and the
ports' SDK-free outage classification that the storage adapters plug into."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

import autoscaler.adapters.azure_storage  # noqa: F401 (the adapter loaded, as the app's wiring loads it)
from autoscaler.adapters.entity_store import InMemoryStateStore
from autoscaler.config import ClusterConfig, NodeTypeConfig, parse_cluster_config
from autoscaler.plugins import ProviderRegistry, prices_for, providers
from autoscaler.ports import StorageUnavailableError, storage_errors
from autoscaler.service import GuardedStore
from autoscaler.settings import Settings
from provisioning.azure.plugin import AZURE, AzureProviderConfig, azure_node_price, vm_size_price
from provisioning.local_plugin import LOCAL, LocalProviderConfig
from provisioning.registry import PLUGINS

AZURE_YAML = """
cluster_name: demo
provider: {type: azure, location: westus2, resource_group: ray-cluster}
available_node_types:
  head: {resources: {CPU: 2}, node_config: {azure_arm_parameters: {vmSize: Standard_D2s_v3, imageId: %s}}}
  spot:
    resources: {CPU: 8, GPU: 1}
    node_config: {azure_arm_parameters: {vmSize: Standard_NC8as_T4_v3, imageId: %s, priority: Low}}
head_node_type: head
""" % (
    ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/img/providers/Microsoft.Compute/images/r",) * 2
)


def azure_config() -> ClusterConfig:
    return parse_cluster_config(AZURE_YAML).config


def settings(**values: str) -> Settings:
    return Settings.from_environment(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "CLUSTER_TOKEN_KEY": "k" * 40, **values}
    )


def test_the_built_in_plugins_are_azure_then_local_and_the_registry_finds_them_by_type():
    assert PLUGINS == (AZURE, LOCAL)
    assert providers().types()[:2] == ("azure", "local")
    assert providers().default() is AZURE
    assert providers()["local"] is LOCAL
    assert isinstance(azure_config().provider, AzureProviderConfig)
    assert isinstance(
        parse_cluster_config("cluster_name: l\nprovider: {type: local}\n").config.provider, LocalProviderConfig
    )


def test_a_registry_refuses_a_second_plugin_for_a_taken_type_and_names_the_registered_ones():
    registry = ProviderRegistry([AZURE])
    registry.register(AZURE)  # the same plugin again: nothing changes
    with pytest.raises(ValueError, match="'azure' is already registered"):
        registry.register(LOCAL.__class__(**{**LOCAL.__dict__, "type": "azure"}))
    with pytest.raises(KeyError, match="registered: azure"):
        registry["gcp"]
    assert "gcp" not in registry


@pytest.mark.parametrize(
    ("vm_size", "cpus", "gpus", "is_spot", "expected"),
    [
        ("Standard_D2s_v3", 2, 0, False, 0.096),
        ("Standard_D2s_v3", 2, 0, True, 0.0288),
        ("Standard_E8s_v5", 8, 0, False, 0.504),
        ("Standard_NC24ads_A100_v4", 24, 1, False, 3.88),
        ("Standard_NC4as_T4_v3", 4, 1, False, 0.53),
        ("Standard_Q4_v9", 4, 0, False, 0.2),  # unknown family: the default rate per vCPU
    ],
)
def test_azure_prices_a_vm_size_as_the_planner_always_has(vm_size: str, cpus: float, gpus: float, is_spot: bool,
                                                          expected: float):  # fmt: skip
    assert vm_size_price(vm_size, cpus=cpus, gpus=gpus, is_spot=is_spot) == pytest.approx(expected)


def test_the_price_hook_prices_node_types_by_their_vm_size_and_says_so():
    config = azure_config()
    price, basis = azure_node_price(config.available_node_types["spot"]) or (0.0, "")
    assert price == pytest.approx(vm_size_price("Standard_NC8as_T4_v3", cpus=8, gpus=1, is_spot=True))
    assert basis == "price class of Standard_NC8as_T4_v3 (spot)"
    # Without the cluster's region the hook can only give the static price class (retail prices are per region).
    assert prices_for("azure")(config.available_node_types["spot"]) == azure_node_price(
        config.available_node_types["spot"]
    )
    no_size = NodeTypeConfig(resources={"CPU": 2}, max_workers=1, node_config={})
    assert azure_node_price(no_size) is None  # the planner prices it by its resources
    assert prices_for("local")(no_size) is None
    assert prices_for("gcp")(no_size) is None


def test_azure_places_clusters_in_the_deployments_group_and_sends_low_as_spot():
    placed, adjustments = AZURE.place(azure_config(), "rg-clusters")
    assert placed.provider.resource_group == "rg-clusters"
    assert [(a.path, a.given, a.used) for a in adjustments] == [
        ("provider.resource_group", "ray-cluster", "rg-clusters"),
        ("available_node_types.spot.node_config.azure_arm_parameters.priority", "Low", "Spot"),
    ]
    assert LOCAL.place(placed, "rg-clusters") == (placed, [])


def test_azure_checks_what_this_deployment_needs_and_local_needs_nothing():
    assert [e.path for e in AZURE.check(azure_config(), settings())] == ["provider.subscription_id"]
    assert AZURE.check(azure_config(), settings(CLUSTERS_SUBSCRIPTION_ID="00000000-0000-0000-0000-000000000001")) == []
    local = parse_cluster_config("cluster_name: l\nprovider: {type: local}\n").config
    assert LOCAL.check(local, settings()) == []


def test_ssh_policies_and_where_nodes_run():
    assert AZURE.ssh.generates_key_pair
    assert not LOCAL.ssh.generates_key_pair
    assert LOCAL.runs_on_this_machine
    assert not AZURE.runs_on_this_machine


def test_the_storage_adapters_teach_the_core_their_sdks_outages():
    # autoscaler.adapters.azure_storage registered azure-core's classifier when it was imported (above; in the app,
    # by the wiring's Table store and queue): the core knows no SDK, the adapter tells it what an outage looks like.
    with pytest.raises(StorageUnavailableError, match="storage did not answer: ServiceRequestError"), storage_errors():
        raise ServiceRequestError("connection refused")
    answered_404 = HttpResponseError(message="not found")
    answered_404.status_code = 404
    with pytest.raises(HttpResponseError), storage_errors():
        raise answered_404
    with pytest.raises(KeyError), storage_errors():
        raise KeyError("a bug is no outage")


def test_the_services_guard_turns_an_sdk_outage_of_any_store_into_storage_unavailable():
    class Unreachable(InMemoryStateStore):
        def list_clusters(self) -> list:  # type: ignore[type-arg]
            raise ServiceRequestError("connection refused")

    with pytest.raises(StorageUnavailableError):
        GuardedStore(Unreachable()).list_clusters()
