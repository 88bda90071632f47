"""A toy third cloud (tests/support/toy_provider.py), registered with the registry: parsing, prices, the OpenAPI
document, the service, the wiring's ProviderFactory and a reconcile tick take it with no other change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from autoscaler.adapters.entity_store import InMemoryStateStore
from autoscaler.adapters.storage_queue import InMemoryReconcileQueue
from autoscaler.config import ConfigError, parse_cluster_config
from autoscaler.model import InstanceStatus
from autoscaler.openapi import openapi_document
from autoscaler.plugins import prices_for, providers
from autoscaler.ports import ProviderPlugin
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import Service
from autoscaler.settings import Settings
from autoscaler.views import ReconcileMessage
from autoscaler.wiring import ProviderFactory
from tests.support.fakes import FakeRayReader
from tests.support.toy_provider import CLOUD, TOY, ToyProviderConfig


@pytest.fixture
def toy() -> Iterator[ProviderPlugin]:
    providers().register(TOY)
    openapi_document.cache_clear()
    yield TOY
    providers().unregister(TOY.type)
    openapi_document.cache_clear()


def test_a_toy_config_parses_with_its_defaults_prices_and_schema(toy: ProviderPlugin) -> None:
    config = parse_cluster_config("cluster_name: toy-one\nprovider: {type: toy, region: north}\n").config
    assert config.provider == ToyProviderConfig(type="toy", region="north")
    assert config.head_node_type == "head"
    assert prices_for("toy")(config.available_node_types["head"]) == (1.0, "toy price per CPU")
    with pytest.raises(ConfigError, match="'azure', 'local' or 'toy'"):
        parse_cluster_config("cluster_name: toy-one\nprovider: {type: toys}\n")
    schema = openapi_document()["components"]["schemas"]["ClusterConfig"]["properties"]["provider"]
    assert schema["discriminator"]["mapping"]["toy"] == "#/components/schemas/ToyProviderConfig"


def test_the_service_and_a_tick_run_a_toy_cluster(toy: ProviderPlugin) -> None:
    settings = Settings.from_environment(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "CLUSTER_TOKEN_KEY": "k" * 40}
    )
    providers_for = ProviderFactory(settings)
    deps = ReconcileDeps(
        store=InMemoryStateStore(),
        provider_for=providers_for,
        ray_reader=FakeRayReader(),
        token_for=lambda name, generation: "token",
        clock=lambda: datetime(2026, 12, 2, tzinfo=UTC),
    )
    service = Service(
        deps=deps, queue=InMemoryReconcileQueue(), allow_local_provider=False, provider_check=providers_for.check
    )
    assert service.create_cluster(b"cluster_name: toy-one\nprovider: {type: toy}\n", "application/yaml").created
    service.tick(ReconcileMessage(cluster_name="toy-one", reason="create"))
    view = service.get_cluster("toy-one")
    assert (view.provider, [node.status for node in view.nodes]) == ("toy", [InstanceStatus.REQUESTED])
    assert [key for key in CLOUD.instances if key[0] == "toy-one"], "the head was launched on the toy cloud"


def test_without_registration_the_toy_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="'azure' or 'local'"):
        parse_cluster_config("cluster_name: toy-one\nprovider: {type: toy}\n")
