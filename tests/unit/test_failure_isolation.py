"""Failure isolation: one cluster's failing tick is recorded on that cluster and backed off, never raised.

The finding behind it (issue 10): Ray's own azure/defaults.yaml, posted where no subscription is configured, made every
tick raise InvalidRequestError while building the provider; the queue retried and poisoned each message, forever.
Here the real Service and the real ProviderFactory run on the in-memory store and queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import ClusterConfig, parse_cluster_config
from autoscaler.model import ClusterRecord, ClusterStatus
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import BACKOFF_MAX_S, ReconcileDeps, failure_backoff
from autoscaler.service import Service
from autoscaler.settings import Settings
from autoscaler.state import InMemoryStateStore
from autoscaler.views import ReconcileMessage
from autoscaler.wiring import ProviderFactory
from provisioning.cloud import CloudProvider, ThrottledError
from tests.support.fakes import FakeCloudProvider, FakeRayReader

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
RAY_AZURE_DEFAULTS = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/ray/autoscaler/azure"
LOCAL_CONFIG = """
cluster_name: iso
provider: {type: local}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
head_node_type: head
"""


def settings_without_subscription() -> Settings:
    return Settings.from_environment(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "CLUSTER_TOKEN_KEY": "k" * 40}
    )


@dataclass
class CountingProviders:
    """`provider_for` that counts its calls and delegates to `build`."""

    build: Any
    calls: int = 0

    def __call__(self, config: ClusterConfig) -> CloudProvider:
        self.calls += 1
        provider: CloudProvider = self.build(config)
        return provider


@dataclass
class App:
    providers: CountingProviders
    store: InMemoryStateStore = field(default_factory=InMemoryStateStore)
    queue: InMemoryReconcileQueue = field(default_factory=InMemoryReconcileQueue)
    now: datetime = T0

    def __post_init__(self) -> None:
        deps = ReconcileDeps(
            store=self.store,
            provider_for=self.providers,
            ray_reader=FakeRayReader(),
            token_for=lambda name, generation: "token",
            clock=lambda: self.now,
        )
        self.service = Service(deps=deps, queue=self.queue, allow_local_provider=True)

    def tick(self, name: str, *, after_s: float = 0.0, reason: str = "timer") -> Any:
        self.now += timedelta(seconds=after_s)
        return self.service.tick(ReconcileMessage(cluster_name=name, reason=reason))

    def cluster(self, name: str) -> ClusterRecord:
        record = self.store.get_cluster(name)
        assert record is not None
        return record

    def event_kinds(self, name: str) -> list[str]:
        return [event.kind for event in self.store.list_events(name, limit=100)]


def azure_defaults_app() -> App:
    """Ray's azure/defaults.yaml posted to a deployment with no subscription (the finding of issue 10)."""
    app = App(CountingProviders(ProviderFactory(settings_without_subscription())))
    body = (RAY_AZURE_DEFAULTS / "defaults.yaml").read_bytes()
    assert app.service.create_cluster(body, "application/yaml").status == ClusterStatus.CREATING
    app.queue.drain()
    return app


def local_app(provider_for: Any) -> App:
    app = App(CountingProviders(provider_for))
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    app.queue.drain()
    return app


def test_a_provider_that_cannot_be_built_fails_the_tick_with_an_event_instead_of_raising():
    app = azure_defaults_app()
    result = app.tick("default", reason="create")
    assert result.outcome == "failed"
    assert "subscription" in result.detail
    [failed] = [event for event in app.store.list_events("default") if event.kind == "tick-failed"]
    assert "InvalidRequestError" in failed.message
    assert "subscription" in failed.message


def test_a_failed_tick_backs_the_cluster_off_on_its_row():
    app = azure_defaults_app()
    app.tick("default")
    cluster = app.cluster("default")
    assert cluster.consecutive_failures == 1
    assert cluster.backoff_until == T0 + timedelta(seconds=15)
    assert cluster.last_error.startswith("InvalidRequestError: no subscription")
    assert cluster.last_error_at == T0


def test_the_cluster_view_says_why_its_ticks_fail_and_until_when_it_waits():
    app = azure_defaults_app()
    app.tick("default")
    view = app.service.get_cluster("default")
    assert view.consecutive_failures == 1
    assert view.last_error.startswith("InvalidRequestError: no subscription")
    assert view.backoff_until == T0 + timedelta(seconds=15)
    assert "no subscription" in view.status_reason
    assert view.backoff_until.isoformat() in view.status_reason


def test_a_tick_during_the_backoff_returns_at_once_without_building_the_provider():
    app = azure_defaults_app()
    app.tick("default")
    built = app.providers.calls
    result = app.tick("default", after_s=10)
    assert result.outcome == "backing-off"
    assert app.providers.calls == built
    assert app.cluster("default").consecutive_failures == 1
    assert app.event_kinds("default").count("tick-failed") == 1


def test_each_failure_in_a_row_doubles_the_backoff():
    app = azure_defaults_app()
    waited = []
    for _ in range(4):
        before = app.now
        app.tick("default")
        until = app.cluster("default").backoff_until
        assert until is not None
        waited.append((until - before).total_seconds())
        app.now = until
    assert waited == [15, 30, 60, 120]


def test_the_backoff_is_capped_at_fifteen_minutes():
    assert [failure_backoff(n).total_seconds() for n in (1, 2, 6, 7, 8, 1000)] == [15, 30, 480, 900, 900, 900]
    assert BACKOFF_MAX_S == 900


def test_a_successful_tick_resets_the_failures_and_says_so():
    cloud = FakeCloudProvider()
    broken = {"yes": True}

    def provider_for(config: ClusterConfig) -> CloudProvider:
        if broken["yes"]:
            raise RuntimeError("credentials not there yet")
        return cloud

    app = local_app(provider_for)
    assert app.tick("iso").outcome == "failed"
    broken["yes"] = False
    assert app.tick("iso", after_s=15).outcome == "reconciled"
    cluster = app.cluster("iso")
    assert (cluster.consecutive_failures, cluster.backoff_until, cluster.last_error) == (0, None, "")
    assert "recovered" in app.event_kinds("iso")


def test_a_stored_config_that_does_not_parse_fails_its_tick_with_a_backoff():
    app = local_app(lambda config: FakeCloudProvider())
    app.store.update_cluster(replace(app.cluster("iso"), config_json="{not json"))
    result = app.tick("iso")
    assert result.outcome == "failed"
    assert app.cluster("iso").last_error.startswith("ConfigError")
    assert app.providers.calls == 0


def test_an_unexpected_error_of_the_cloud_list_is_recorded_not_raised():
    @dataclass
    class ListRaises(FakeCloudProvider):
        def list_instances(self, cluster_name: str) -> Any:
            raise KeyError("a bug in a provider")

    app = local_app(lambda config: ListRaises())
    assert app.tick("iso").outcome == "failed"
    assert app.cluster("iso").last_error.startswith("KeyError")


def test_a_throttled_cloud_list_backs_off_at_least_for_its_retry_after():
    @dataclass
    class Throttled(FakeCloudProvider):
        def list_instances(self, cluster_name: str) -> Any:
            raise ThrottledError("429", retry_after_s=600)

    app = local_app(lambda config: Throttled())
    assert app.tick("iso").outcome == "cloud-unavailable"
    assert app.cluster("iso").backoff_until == T0 + timedelta(seconds=600)


def test_the_timer_queues_no_message_for_a_cluster_that_is_backing_off():
    app = azure_defaults_app()
    app.tick("default")
    assert app.service.enqueue_active() == 0
    app.now += timedelta(seconds=15)
    assert app.service.enqueue_active() == 1


@pytest.mark.parametrize("reason", ["create", "wake", "follow-up"])
def test_a_failed_tick_starts_no_follow_up(reason: str):
    app = azure_defaults_app()
    app.tick("default", reason=reason)
    assert app.queue.drain() == []


def test_one_clusters_failure_does_not_stop_another_clusters_tick():
    cloud = FakeCloudProvider()

    def provider_for(config: ClusterConfig) -> CloudProvider:
        if config.cluster_name == "iso":
            raise RuntimeError("only this one is broken")
        return cloud

    app = local_app(provider_for)
    other = parse_cluster_config(LOCAL_CONFIG.replace("cluster_name: iso", "cluster_name: fine")).config
    app.service.create_cluster(other.to_json().encode(), "application/json")
    assert app.tick("iso").outcome == "failed"
    assert app.tick("fine").outcome == "reconciled"
    assert any(call.startswith("launch head") for call in cloud.calls)
