"""The service layer on fakes: create-time checks, the follow-up chain and its cap, the poison path, wake-ups.

The real `Service`, reconcile shell and planner, on the in-memory store and queue, the fake cloud and Ray reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import ClusterConfig
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import InvalidRequest, Service, StorageUnavailable
from autoscaler.settings import Settings
from autoscaler.state import (
    EntityStateStore,
    InMemoryEntityTables,
    InMemoryStateStore,
    StateStore,
    StorageUnavailableError,
)
from autoscaler.views import ReconcileMessage
from autoscaler.wiring import ProviderFactory
from provisioning.cloud import CloudProvider
from tests.support.fakes import FakeCloudProvider, FakeRayReader

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
RAY_AZURE_DEFAULTS = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/ray/autoscaler/azure"
LOCAL_CONFIG = """
cluster_name: svc
provider: {type: local}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
head_node_type: head
"""


def settings(**values: str) -> Settings:
    return Settings.from_environment(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "CLUSTER_TOKEN_KEY": "k" * 40, **values}
    )


@dataclass
class App:
    provider_for: Any = field(default_factory=FakeCloudProvider)
    provider_check: Any = None
    store: StateStore = field(default_factory=InMemoryStateStore)
    queue: InMemoryReconcileQueue = field(default_factory=InMemoryReconcileQueue)
    ray: FakeRayReader = field(default_factory=FakeRayReader)
    now: datetime = T0

    def __post_init__(self) -> None:
        provider_for = self.provider_for
        if isinstance(provider_for, FakeCloudProvider):
            cloud = provider_for

            def provider_for(config: ClusterConfig) -> CloudProvider:
                return cloud

        deps = ReconcileDeps(
            store=self.store,
            provider_for=provider_for,
            ray_reader=self.ray,
            token_for=lambda name, generation: f"token-{name}-{generation}",
            clock=lambda: self.now,
        )
        self.service = Service(
            deps=deps, queue=self.queue, allow_local_provider=True, provider_check=self.provider_check
        )


def ray_azure_defaults() -> bytes:
    return (RAY_AZURE_DEFAULTS / "defaults.yaml").read_bytes()


# -- create-time check of the provider -------------------------------------------------------------------------------


def test_an_azure_config_without_any_subscription_is_refused_naming_provider_subscription_id():
    app = App(provider_check=ProviderFactory(settings()).check)
    with pytest.raises(InvalidRequest) as refused:
        app.service.create_cluster(ray_azure_defaults(), "application/yaml")
    assert [error.path for error in refused.value.errors] == ["provider.subscription_id"]
    assert app.store.list_clusters() == []
    assert app.queue.drain() == []


def test_the_deployments_subscription_setting_makes_the_same_config_acceptable():
    app = App(provider_check=ProviderFactory(settings(CLUSTERS_SUBSCRIPTION_ID=SUBSCRIPTION)).check)
    assert app.service.create_cluster(ray_azure_defaults(), "application/yaml").created


def test_a_subscription_in_the_config_makes_it_acceptable():
    app = App(provider_check=ProviderFactory(settings()).check)
    body = (
        ray_azure_defaults()
        .decode()
        .replace("# subscription_id: 00000000-0000-0000-0000-000000000000", f"subscription_id: {SUBSCRIPTION}")
    )
    assert SUBSCRIPTION in body
    assert app.service.create_cluster(body.encode(), "application/yaml").created


def test_a_local_config_needs_no_subscription():
    app = App(provider_check=ProviderFactory(settings()).check)
    assert app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml").created


def test_the_app_wires_the_provider_factorys_check_into_the_service():
    from autoscaler import wiring

    service = wiring.build_service(settings(), clock=lambda: T0)
    assert service.provider_check is not None
    with pytest.raises(InvalidRequest) as refused:
        service.create_cluster(ray_azure_defaults(), "application/yaml")
    assert [error.path for error in refused.value.errors] == ["provider.subscription_id"]


# -- storage outages -------------------------------------------------------------------------------------------------


class FlakyTables(InMemoryEntityTables):
    """The in-memory tables, which stop answering (as a frozen storage account would) while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailableError("storage did not answer: ServiceResponseError: read timed out")

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().get(*args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().query(*args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().insert(*args, **kwargs)

    def replace(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().replace(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().delete(*args, **kwargs)

    def transact(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().transact(*args, **kwargs)


def flaky_app() -> tuple[App, FlakyTables]:
    tables = FlakyTables()
    app = App(store=EntityStateStore(tables))
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    app.queue.drain()
    return app, tables


USE_CASES = {
    "create": lambda service: service.create_cluster(LOCAL_CONFIG.replace("svc", "svc2").encode(), "application/yaml"),
    "get": lambda service: service.get_cluster("svc"),
    "list": lambda service: service.list_clusters(),
    "destroy": lambda service: service.destroy_cluster("svc"),
    "wake": lambda service: service.request_reconcile("svc", "Bearer token-svc-1", ""),
}


@pytest.mark.parametrize("use_case", sorted(USE_CASES))
def test_an_http_use_case_raises_storage_unavailable_when_storage_does_not_answer(use_case: str):
    app, tables = flaky_app()
    tables.down = True
    with pytest.raises(StorageUnavailable) as unavailable:
        USE_CASES[use_case](app.service)
    assert unavailable.value.status == 503
    assert unavailable.value.retry_after_s > 0


def test_a_tick_while_storage_does_not_answer_returns_instead_of_raising():
    app, tables = flaky_app()
    tables.down = True
    result = app.service.tick(ReconcileMessage(cluster_name="svc", reason="create"))
    assert result.outcome == "storage-unavailable"
    assert app.queue.drain() == []


def test_the_same_use_cases_work_again_once_storage_answers():
    app, tables = flaky_app()
    tables.down = True
    with pytest.raises(StorageUnavailable):
        app.service.get_cluster("svc")
    tables.down = False
    assert app.service.get_cluster("svc").name == "svc"
