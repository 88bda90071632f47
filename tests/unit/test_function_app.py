"""The function metadata the Azure host indexes: every trigger, with its binding, route, auth level and queue."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest

import function_app
from autoscaler.model import ClusterStatus
from autoscaler.queueing import InMemoryReconcileQueue
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import Service
from autoscaler.state import (
    ConflictError,
    EntityStateStore,
    InMemoryEntityTables,
    InMemoryStateStore,
    StorageUnavailableError,
)
from tests.support.fakes import FakeCloudProvider, FakeRayReader

EXPECTED: dict[str, dict[str, Any]] = {
    "create_cluster": {"type": "httpTrigger", "route": "clusters", "methods": ["POST"], "authLevel": "FUNCTION"},
    "list_clusters": {"type": "httpTrigger", "route": "clusters", "methods": ["GET"], "authLevel": "FUNCTION"},
    "get_cluster": {"type": "httpTrigger", "route": "clusters/{name}", "methods": ["GET"], "authLevel": "FUNCTION"},
    "update_cluster": {"type": "httpTrigger", "route": "clusters/{name}", "methods": ["PUT"], "authLevel": "FUNCTION"},
    "cluster_timeline": {
        "type": "httpTrigger",
        "route": "clusters/{name}/timeline.svg",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "start_cluster": {
        "type": "httpTrigger",
        "route": "clusters/{name}/start",
        "methods": ["POST"],
        "authLevel": "FUNCTION",
    },
    "destroy_cluster": {
        "type": "httpTrigger",
        "route": "clusters/{name}",
        "methods": ["DELETE"],
        "authLevel": "FUNCTION",
    },
    "request_reconcile": {
        "type": "httpTrigger",
        "route": "clusters/{name}/reconcile",
        "methods": ["POST"],
        "authLevel": "ANONYMOUS",
    },
    "health": {"type": "httpTrigger", "route": "health", "methods": ["GET"], "authLevel": "ANONYMOUS"},
    "openapi": {"type": "httpTrigger", "route": "openapi.json", "methods": ["GET"], "authLevel": "ANONYMOUS"},
    "reconcile_timer": {"type": "timerTrigger", "schedule": "%RECONCILE_SCHEDULE%", "runOnStartup": False},
    "reconcile_worker": {"type": "queueTrigger", "queueName": "reconcile", "connection": "AzureWebJobsStorage"},
    "reconcile_poison": {"type": "queueTrigger", "queueName": "reconcile-poison", "connection": "AzureWebJobsStorage"},
}


def _triggers() -> dict[str, dict[str, Any]]:
    # A fresh interpreter: get_functions() validates names and may be called once per app object.
    code = (
        "import json, function_app\n"
        "out = {}\n"
        "for f in function_app.app.get_functions():\n"
        "    t = json.loads(f.get_function_json())\n"
        "    out[f.get_function_name()] = [b for b in t['bindings'] if b['type'].endswith('Trigger')][0]\n"
        "print(json.dumps(out))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    triggers: dict[str, dict[str, Any]] = json.loads(output)
    return triggers


@pytest.fixture(scope="module")
def triggers() -> dict[str, dict[str, Any]]:
    return _triggers()


def test_every_function_is_indexed(triggers: dict[str, dict[str, Any]]):
    assert set(triggers) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trigger_binding_is_as_designed(triggers: dict[str, dict[str, Any]], name: str):
    binding = triggers[name]
    for key, value in EXPECTED[name].items():
        actual = binding.get(key)
        if key == "authLevel":
            actual = str(actual).upper()
        if key == "methods":
            actual = [str(m).upper() for m in actual or []]
        assert actual == value, f"{name}.{key}: {actual!r} != {value!r}"


def test_importing_the_app_does_not_import_the_management_sdks():
    heavy = "('azure.mgmt', 'azure.identity', 'azure.data', 'azure.storage', 'ray')"
    code = f"import sys, function_app; print([m for m in sys.modules if m.startswith({heavy})])"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert output == "[]"


def test_app_object_is_the_v2_programming_model():
    assert function_app.app.__class__.__name__ == "FunctionApp"


# -- what the handlers answer, on a service over the in-memory store --------------------------------------------------


LOCAL_CONFIG = b"""
cluster_name: demo
provider: {type: local}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
head_node_type: head
"""


class _DownTables(InMemoryEntityTables):
    """Tables that do not answer at all: every call is a storage outage."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailableError("storage did not answer: ServiceResponseError: read timed out")

    query = insert = replace = delete = transact = get


def _service_on(store: Any) -> Service:
    deps = ReconcileDeps(
        store=store,
        provider_for=lambda config: FakeCloudProvider(),
        ray_reader=FakeRayReader(),
        token_for=lambda name, generation: f"token-{name}-{generation}",
        clock=lambda: datetime(2026, 12, 3, tzinfo=UTC),
    )
    return Service(deps=deps, queue=InMemoryReconcileQueue(), allow_local_provider=True)


def _request(method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None, **route: str) -> Any:
    return func.HttpRequest(method, url, headers=headers or {}, route_params=route, body=body)


@pytest.fixture
def storage_down(monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service_on(EntityStateStore(_DownTables()))
    monkeypatch.setattr(function_app, "_service", lambda: service)


@pytest.mark.usefixtures("storage_down")
@pytest.mark.parametrize(
    "call",
    [
        lambda: function_app.list_clusters(_request("GET", "/api/clusters")),
        lambda: function_app.get_cluster(_request("GET", "/api/clusters/demo", name="demo")),
        lambda: function_app.destroy_cluster(_request("DELETE", "/api/clusters/demo", name="demo")),
        lambda: function_app.create_cluster(
            _request("POST", "/api/clusters", body=LOCAL_CONFIG, headers={"content-type": "application/yaml"})
        ),
        lambda: function_app.request_reconcile(
            _request("POST", "/api/clusters/demo/reconcile", headers={"authorization": "Bearer t"}, name="demo")
        ),
    ],
    ids=["list", "get", "delete", "create", "wake"],
)
def test_a_storage_outage_answers_503_problem_json_with_retry_after(call: Any):
    response = call()
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    assert json.loads(response.get_body())["title"] == "Storage unavailable"


def test_an_unexpected_error_answers_500_problem_json_without_its_detail(monkeypatch: pytest.MonkeyPatch):
    class Broken:
        def list_clusters(self) -> None:
            raise RuntimeError("secret detail")

    monkeypatch.setattr(function_app, "_service", Broken)
    response = function_app.list_clusters(_request("GET", "/api/clusters"))
    assert (response.status_code, response.mimetype) == (500, "application/problem+json")
    assert "secret detail" not in response.get_body().decode()


@pytest.mark.usefixtures("storage_down")
def test_the_timer_logs_a_storage_outage_instead_of_failing():
    @dataclass
    class Timer:
        past_due: bool = False

    function_app.reconcile_timer(Timer())  # must not raise: the next run fans out again


# -- every status each route answers, and the OpenAPI document lists exactly those ------------------------------------


class _AlwaysConflicting(InMemoryStateStore):
    """A store on which every cluster update loses its race (someone always wrote first)."""

    def update_cluster(self, record: Any) -> Any:
        raise ConflictError("changed since it was read")


class _Broken:
    """A service with a bug in every use case."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        return fail


def _answered(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], set[int]]:
    """(path, method) -> the statuses provoked through the handlers."""
    statuses: dict[tuple[str, str], set[int]] = {}

    def on(service: Any, key: tuple[str, str], call: Any) -> None:
        monkeypatch.setattr(function_app, "_service", lambda: service)
        statuses.setdefault(key, set()).add(call().status_code)

    healthy = _service_on(InMemoryStateStore())
    healthy.create_cluster(LOCAL_CONFIG, "application/yaml")
    down = _service_on(EntityStateStore(_DownTables()))
    conflicting_store = _AlwaysConflicting()
    conflicting = _service_on(conflicting_store)
    conflicting.create_cluster(LOCAL_CONFIG, "application/yaml")
    yaml = {"content-type": "application/yaml"}
    token = {"authorization": "Bearer token-demo-1"}

    create = ("/clusters", "post")
    for service, body in [
        (healthy, LOCAL_CONFIG.replace(b"demo", b"fresh")),
        (healthy, b"cluster_name: [not, a, name]"),
        (healthy, LOCAL_CONFIG.replace(b"CPU: 0", b"CPU: 1")),  # another config under the name
        (healthy, b"x" * (2 * 1024 * 1024)),
        (down, LOCAL_CONFIG),
        (_Broken(), LOCAL_CONFIG),
    ]:
        on(
            service,
            create,
            lambda body=body: function_app.create_cluster(_request("POST", "/", body=body, headers=yaml)),
        )
    for service in (healthy, down, _Broken()):
        on(service, ("/clusters", "get"), lambda: function_app.list_clusters(_request("GET", "/")))
    for service, name in [
        (healthy, "demo"),
        (healthy, "nope"),
        (healthy, "Not_A_Name"),
        (down, "demo"),
        (_Broken(), "demo"),
    ]:
        on(
            service,
            ("/clusters/{name}", "get"),
            lambda name=name: function_app.get_cluster(_request("GET", "/", name=name)),
        )
    for service, name, body in [
        (healthy, "demo", LOCAL_CONFIG + b"max_workers: 2\n"),
        (healthy, "demo", b"cluster_name: [not, a, name]"),
        (healthy, "nope", LOCAL_CONFIG.replace(b"demo", b"nope")),
        (healthy, "demo", LOCAL_CONFIG.replace(b"CPU: 0", b"CPU: 1")),  # changes the head
        (healthy, "demo", b"x" * (2 * 1024 * 1024)),
        (down, "demo", LOCAL_CONFIG),
        (_Broken(), "demo", LOCAL_CONFIG),
    ]:
        on(
            service,
            ("/clusters/{name}", "put"),
            lambda name=name, body=body: function_app.update_cluster(
                _request("PUT", "/", name=name, body=body, headers=yaml)
            ),
        )
    for service, name in [
        (healthy, "nope"),
        (conflicting, "demo"),
        (down, "demo"),
        (_Broken(), "demo"),
        (healthy, "demo"),
    ]:
        on(
            service,
            ("/clusters/{name}", "delete"),
            lambda name=name: function_app.destroy_cluster(_request("DELETE", "/", name=name)),
        )
    for service, name, params in [
        (healthy, "demo", {}),
        (healthy, "demo", {"hours": "soon"}),
        (healthy, "nope", {}),
        (down, "demo", {}),
        (_Broken(), "demo", {}),
    ]:
        on(
            service,
            ("/clusters/{name}/timeline.svg", "get"),
            lambda name=name, params=params: function_app.cluster_timeline(
                func.HttpRequest("GET", "/", headers={}, route_params={"name": name}, params=params, body=b"")
            ),
        )
    stopped = _service_on(InMemoryStateStore())
    stopped.create_cluster(LOCAL_CONFIG, "application/yaml")
    record = stopped.store.get_cluster("demo")
    assert record is not None
    stopped.store.update_cluster(replace(record, status=ClusterStatus.STOPPED))
    for service, name in [
        (stopped, "demo"),  # 202: starting
        (healthy, "nope"),
        (down, "demo"),
        (_Broken(), "demo"),
        (healthy, "fresh"),  # 202: nothing to do (creating)
    ]:
        on(
            service,
            ("/clusters/{name}/start", "post"),
            lambda name=name: function_app.start_cluster(_request("POST", "/", name=name)),
        )
    deleting = _service_on(InMemoryStateStore())
    deleting.create_cluster(LOCAL_CONFIG, "application/yaml")
    record = deleting.store.get_cluster("demo")
    assert record is not None
    deleting.store.update_cluster(replace(record, status=ClusterStatus.DELETING))
    on(
        deleting,
        ("/clusters/{name}/start", "post"),
        lambda: function_app.start_cluster(_request("POST", "/", name="demo")),
    )
    wake = ("/clusters/{name}/reconcile", "post")
    for service, name, headers, body in [
        (healthy, "demo", {}, b"{not json"),
        (healthy, "demo", {"authorization": "Bearer wrong"}, b"{not json"),
        (healthy, "demo", token, b'{"reason": 5}'),
        (healthy, "Not_A_Name", token, b""),
        (down, "demo", token, b""),
        (_Broken(), "demo", token, b""),
        (healthy, "fresh", {"authorization": "Bearer token-fresh-1"}, b'{"reason": "demand"}'),
    ]:
        on(
            service,
            wake,
            lambda name=name, headers=headers, body=body: function_app.request_reconcile(
                _request("POST", "/", name=name, headers=headers, body=body)
            ),
        )
    on(healthy, ("/health", "get"), lambda: function_app.health(_request("GET", "/")))
    on(healthy, ("/openapi.json", "get"), lambda: function_app.openapi(_request("GET", "/")))
    return statuses


def test_every_route_answers_exactly_the_statuses_its_openapi_entry_lists(monkeypatch: pytest.MonkeyPatch):
    from autoscaler.openapi import openapi_document

    answered = _answered(monkeypatch)
    document = openapi_document()
    for (path, method), statuses in answered.items():
        operation = document["paths"][path][method]
        # A route under the function key (no security of its own) lists the host's 401 for a missing key.
        by_host = {401} if "security" not in operation else set()
        listed = {int(status) for status in operation["responses"]} - by_host
        assert statuses == listed, f"{method.upper()} {path}: answered {sorted(statuses)}, listed {sorted(listed)}"


def test_a_wake_up_without_a_token_is_401_even_with_a_malformed_body(monkeypatch: pytest.MonkeyPatch):
    service = _service_on(InMemoryStateStore())
    service.create_cluster(LOCAL_CONFIG, "application/yaml")
    monkeypatch.setattr(function_app, "_service", lambda: service)
    without = function_app.request_reconcile(_request("POST", "/", name="demo", body=b"{not json"))
    wrong = function_app.request_reconcile(
        _request("POST", "/", name="demo", headers={"authorization": "Bearer wrong"}, body=b"{not json")
    )
    assert (without.status_code, wrong.status_code) == (401, 403)
