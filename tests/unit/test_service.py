"""The service layer on fakes: create-time checks, the follow-up chain and its cap, the poison path, wake-ups.

The real `Service`, reconcile shell and planner, on the in-memory store and queue, the fake cloud and Ray reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import ClusterConfig
from autoscaler.model import ClusterStatus
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import (
    FOLLOW_UP_DELAY_S,
    MAX_BODY_BYTES,
    MAX_FOLLOW_UPS,
    ClusterConflict,
    ClusterNotFound,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    Service,
    StorageUnavailable,
    Unauthorized,
)
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
    assert unavailable.value.retry_after_s == 10  # the service says when to come back; function_app makes it a 503
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


# -- the follow-up chain ---------------------------------------------------------------------------------------------


@dataclass
class RecordingQueue:
    """The reconcile queue, recording each message with its delay."""

    sent: list[tuple[ReconcileMessage, int]] = field(default_factory=list)

    def send(self, message: ReconcileMessage, *, delay_s: int = 0) -> None:
        self.sent.append((message, delay_s))

    def take(self) -> list[tuple[ReconcileMessage, int]]:
        taken, self.sent = self.sent, []
        return taken


def chain_app() -> tuple[App, RecordingQueue]:
    """A cluster whose head launches but never joins Ray: every tick leaves work in flight."""
    queue = RecordingQueue()
    app = App(queue=queue, ray=FakeRayReader(reachable=False))  # type: ignore[arg-type]
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    queue.take()
    return app, queue


@pytest.mark.parametrize("reason", ["create", "destroy", "wake", "manual", "follow-up"])
def test_a_tick_that_leaves_work_in_flight_queues_one_follow_up_a_few_seconds_later(reason: str):
    app, queue = chain_app()
    app.service.tick(ReconcileMessage(cluster_name="svc", reason=reason))
    [(follow_up, delay_s)] = queue.take()
    assert (follow_up.reason, follow_up.follow_ups, delay_s) == ("follow-up", 1, FOLLOW_UP_DELAY_S)


def test_the_timer_starts_no_chain():
    app, queue = chain_app()
    result = app.service.tick(ReconcileMessage(cluster_name="svc", reason="timer"))
    assert (result.outcome, result.settled) == ("reconciled", False)
    assert queue.take() == []


def test_each_follow_up_counts_one_more_and_the_chain_stops_at_the_cap():
    app, queue = chain_app()
    message = ReconcileMessage(cluster_name="svc", reason="wake")
    counts = []
    for _ in range(MAX_FOLLOW_UPS + 5):
        app.now += timedelta(seconds=FOLLOW_UP_DELAY_S)
        assert not app.service.tick(message).settled
        sent = queue.take()
        if not sent:
            break
        [(message, _)] = sent
        counts.append(message.follow_ups)
    assert counts == list(range(1, MAX_FOLLOW_UPS + 1))


def test_a_chain_ends_when_the_cluster_settles():
    app, queue = chain_app()
    app.service.tick(ReconcileMessage(cluster_name="svc", reason="create"))  # launches the head
    [(message, _)] = queue.take()
    head = app.store.list_instances("svc")[0]
    app.ray.reachable = True
    app.ray.register(head.instance_id, "head", cpus=0, head=True, idle_s=1)
    app.now += timedelta(seconds=FOLLOW_UP_DELAY_S)
    result = app.service.tick(message)
    assert (result.outcome, result.settled) == ("reconciled", True)
    assert queue.take() == []


# -- create, read, destroy, wake ---------------------------------------------------------------------------------------


def test_create_queues_the_first_tick_and_the_same_config_again_is_the_same_cluster():
    queue = RecordingQueue()
    app = App(queue=queue)  # type: ignore[arg-type]
    first = app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    again = app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    assert (first.created, again.created) == (True, False)
    assert [(message.cluster_name, message.reason) for message, _ in queue.take()] == [("svc", "create")]
    assert [record.name for record in app.store.list_clusters()] == ["svc"]


def test_another_config_under_a_used_name_is_a_conflict_naming_cluster_name():
    app = App()
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    with pytest.raises(ClusterConflict) as conflict:
        app.service.create_cluster(LOCAL_CONFIG.replace("CPU: 0", "CPU: 1").encode(), "application/yaml")
    assert [error.path for error in conflict.value.errors] == ["cluster_name"]


def test_a_body_over_the_limit_is_refused_before_it_is_parsed():
    with pytest.raises(PayloadTooLarge):
        App().service.create_cluster(b"#" * (MAX_BODY_BYTES + 1), "application/yaml")


def test_a_local_cluster_is_refused_where_local_clusters_are_not_allowed():
    app = App()
    app.service.allow_local_provider = False
    with pytest.raises(InvalidRequest) as refused:
        app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    assert [error.path for error in refused.value.errors] == ["provider.type"]


def test_a_generated_ssh_key_is_answered_once_and_stored_nowhere():
    app = App(provider_check=ProviderFactory(settings(CLUSTERS_SUBSCRIPTION_ID=SUBSCRIPTION)).check)
    app.service.ssh_keygen = lambda: ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUBLIC test", "PRIVATE KEY MATERIAL")
    created = app.service.create_cluster(ray_azure_defaults(), "application/yaml")
    assert created.ssh_private_key == "PRIVATE KEY MATERIAL"
    stored = app.store.get_cluster("default")
    assert stored is not None
    assert "PRIVATE KEY MATERIAL" not in stored.config_json
    assert "AAAAC3NzaC1lZDI1NTE5AAAAIPUBLIC" in stored.config_json


def test_reading_or_destroying_an_unknown_cluster_is_not_found():
    app = App()
    with pytest.raises(ClusterNotFound):
        app.service.get_cluster("nope")
    with pytest.raises(ClusterNotFound):
        app.service.destroy_cluster("nope")


def test_destroying_a_launched_cluster_queues_its_destroy_tick_and_a_second_destroy_changes_nothing():
    app, queue = chain_app()
    app.service.tick(ReconcileMessage(cluster_name="svc", reason="create"))  # launches the head
    queue.take()
    accepted = app.service.destroy_cluster("svc")
    assert accepted.status == ClusterStatus.DELETING
    assert [(message.reason) for message, _ in queue.take()] == ["destroy"]
    assert app.service.destroy_cluster("svc").detail == "already being deleted"
    assert queue.take() == []


@pytest.mark.parametrize(
    ("authorization", "error"),
    [(None, Unauthorized), ("Basic abc", Unauthorized), ("Bearer wrong", Forbidden), ("Bearer token-svc-2", Forbidden)],
)
def test_a_wake_up_needs_this_generations_cluster_token(authorization: str | None, error: type[Exception]):
    app = App()
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    with pytest.raises(error):
        app.service.request_reconcile("svc", authorization, "demand")


def test_a_wake_up_for_an_unknown_cluster_answers_like_a_wrong_token():
    with pytest.raises(Forbidden):
        App().service.request_reconcile("nobody", "Bearer token-nobody-1", "demand")


def test_a_wake_up_runs_the_tick_at_once():
    app = App()
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    accepted = app.service.request_reconcile("svc", "Bearer token-svc-1", "demand")
    assert accepted.detail == "reconciled: reconciled"
    assert [record.is_head for record in app.store.list_instances("svc")] == [True]


def test_a_wake_up_with_a_malformed_body_names_the_field_after_the_token_is_checked():
    app = App()
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    with pytest.raises(InvalidRequest) as refused:
        app.service.request_reconcile("svc", "Bearer token-svc-1", body=b'{"reason": 7}')
    assert [error.path for error in refused.value.errors] == ["reason"]
    with pytest.raises(Unauthorized):
        app.service.request_reconcile("svc", None, body=b'{"reason": 7}')


def test_a_wake_up_of_a_deleted_cluster_is_accepted_without_a_tick():
    app = App()
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    app.service.destroy_cluster("svc")
    accepted = app.service.request_reconcile("svc", "Bearer token-svc-1", "demand")
    assert (accepted.status, accepted.detail) == (ClusterStatus.DELETED, "cluster is not active")


# -- the poison path -------------------------------------------------------------------------------------------------


def test_a_poisoned_message_becomes_an_event_of_its_cluster_quoting_the_message():
    app = App()
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    app.service.record_poison('{"cluster_name": "svc", "reason": "bogus"}')
    [poison] = [event for event in app.store.list_events("svc") if event.kind == "poison"]
    assert '"reason": "bogus"' in poison.message


def test_a_storm_of_poisoned_messages_is_one_event_per_window():
    app = App()
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    for _ in range(50):
        app.service.record_poison('{"cluster_name": "svc"}')
        app.now += timedelta(seconds=10)
    assert [event.kind for event in app.store.list_events("svc", limit=100)].count("poison") == 1


@pytest.mark.parametrize("body", ["", "not json", "[1, 2]", '{"cluster_name": 5}', '{"cluster_name": "../etc"}'])
def test_a_poisoned_message_naming_no_valid_cluster_is_only_logged(body: str):
    app = App()
    app.service.create_cluster(LOCAL_CONFIG.encode(), "application/yaml")
    app.service.record_poison(body)
    assert not any(event.kind == "poison" for event in app.store.list_events("svc"))
