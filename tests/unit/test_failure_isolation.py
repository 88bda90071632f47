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
    assert app.service.get_cluster("iso").last_error.startswith("ConfigError"), "the status page still answers"


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


# -- every cluster can be deleted ----------------------------------------------------------------------------------


def test_the_finding_ends_deleted_at_once_without_building_its_provider():
    app = azure_defaults_app()
    app.tick("default", reason="create")
    app.tick("default", after_s=15)
    built = app.providers.calls
    accepted = app.service.destroy_cluster("default")
    assert accepted.status == ClusterStatus.DELETED
    assert app.cluster("default").status == ClusterStatus.DELETED
    assert app.providers.calls == built
    assert app.service.get_cluster("default").status_reason.startswith("deleted without calling the cloud")


def test_launch_intents_of_a_cluster_that_never_launched_are_cancelled_by_the_delete():
    # A crash after the intent was committed and before the cluster row was marked: nothing was launched.
    from autoscaler.model import InstanceRecord, InstanceStatus

    app = azure_defaults_app()
    queued = InstanceRecord("default", "i-head", "ray.head.default", InstanceStatus.QUEUED, "r-1", T0, T0, is_head=True)
    app.store.commit_instances("default", "", [queued])
    app.service.destroy_cluster("default")
    [record] = app.store.list_instances("default")
    assert record.status == InstanceStatus.TERMINATED
    assert app.cluster("default").status == ClusterStatus.DELETED
    assert app.providers.calls == 0


def test_the_cluster_is_marked_touched_before_its_first_launch_call():
    seen_at_launch: list[bool] = []

    @dataclass
    class Recording(FakeCloudProvider):
        def launch(self, request: Any) -> None:
            seen_at_launch.append(app.cluster("iso").cloud_touched)
            super().launch(request)

    cloud = Recording()
    app = local_app(lambda config: cloud)
    assert app.cluster("iso").cloud_touched is False
    app.tick("iso")
    assert seen_at_launch == [True]


def test_a_delete_racing_a_tick_that_is_about_to_launch_stops_the_launch():
    cloud = FakeCloudProvider()
    app = local_app(lambda config: cloud)

    def delete_now() -> None:
        cloud.before_list = None  # the DELETE's own tick lists no cloud, but be sure it cannot recurse
        app.service.destroy_cluster("iso")

    # The tick has read the cluster (creating, nothing launched) when the DELETE arrives.
    cloud.before_list = delete_now
    result = app.tick("iso")
    assert result.outcome == "conflict"
    assert not any(call.startswith("launch") for call in cloud.calls)
    assert app.store.list_instances("iso") == [], "no launch intent is left behind in the deleted cluster"
    app.tick("iso", reason="destroy")
    assert app.cluster("iso").status == ClusterStatus.DELETED


def test_a_launched_cluster_whose_provider_fails_keeps_retrying_the_delete_with_backoff_and_says_why():
    cloud = FakeCloudProvider()
    working = {"yes": True}

    def provider_for(config: ClusterConfig) -> CloudProvider:
        if not working["yes"]:
            raise RuntimeError("credential expired")
        return cloud

    app = local_app(provider_for)
    app.tick("iso")  # launches the head: something exists in the cloud now
    working["yes"] = False
    assert app.service.destroy_cluster("iso").status == ClusterStatus.DELETING
    assert app.tick("iso", reason="destroy").outcome == "failed"
    view = app.service.get_cluster("iso")
    assert view.status == ClusterStatus.DELETING
    assert view.status_reason.startswith("deleting, but what was created in the cloud cannot be removed yet")
    assert "credential expired" in view.status_reason
    assert app.tick("iso", after_s=5).outcome == "backing-off"
    working["yes"] = True
    for _ in range(3):
        app.tick("iso", after_s=30)
    assert app.cluster("iso").status == ClusterStatus.DELETED
    assert cloud.destroyed == ["iso"]
    assert cloud.instances == {}
