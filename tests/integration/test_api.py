"""The HTTP API through the local host over real HTTP, with the real function app and Azurite.

Clusters here use the local provider with a long launch delay, so the head stays "pending" and no Ray starts:
these tests are about the control plane (routes, validation, idempotency, queues), not Ray.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from azure.storage.queue import QueueClient

from autoscaler.config import MAX_CONFIG_BYTES
from autoscaler.settings import POISON_QUEUE, RECONCILE_QUEUE
from local.stack import LocalStack
from tests.unit.test_config import INVALID_CASES

pytestmark = pytest.mark.azurite

# A schedule that never fires during a test: every reconcile seen here comes from a queue message.
NEVER = "0 0 0 1 1 *"


def cluster_yaml(name: str, *, max_workers: int = 2, launch_delay_s: float = 600.0) -> str:
    return f"""
cluster_name: {name}
max_workers: {max_workers}
provider: {{type: local, launch_delay_s: {launch_delay_s}}}
auth: {{ssh_user: ray}}
available_node_types:
  head: {{resources: {{CPU: 0}}, max_workers: 0, node_config: {{}}}}
  worker: {{resources: {{CPU: 1}}, min_workers: 0, max_workers: {max_workers}, node_config: {{}}}}
head_node_type: head
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir = tmp_path_factory.mktemp("api-stack")
    with LocalStack(data_dir=data_dir, port=0, settings={"RECONCILE_SCHEDULE": NEVER}) as started:
        yield started
        # Leave no launcher process behind, whatever the tests created.
        from provisioning.local import LocalCloudProvider

        provider = LocalCloudProvider(Path(data_dir) / "provider")
        clusters_dir = Path(data_dir) / "provider" / "clusters"
        for cluster_dir in clusters_dir.iterdir() if clusters_dir.exists() else []:
            provider.destroy_cluster(cluster_dir.name)


def post(stack: LocalStack, body: str | bytes, content_type: str = "application/yaml") -> requests.Response:
    return requests.post(f"{stack.api_url}/clusters", data=body, headers={"content-type": content_type}, timeout=10)


def get(stack: LocalStack, path: str) -> requests.Response:
    return requests.get(f"{stack.api_url}{path}", timeout=10)


def wait_until(predicate: Any, timeout_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_create_answers_202_with_location_and_its_queue_message_reconciles_the_cluster(stack: LocalStack):
    response = post(stack, cluster_yaml("api-create"))
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == "/api/clusters/api-create"
    assert response.json()["created"] is True
    # The timer never fires here: the head launch can only come from the message that create enqueued.
    view = wait_until(
        lambda: next(iter([v for v in [get(stack, "/clusters/api-create").json()] if v["nodes"]]), None),
        what="the head to be queued by the create message",
    )
    assert view["nodes"][0]["is_head"] is True
    assert view["status"] == "creating"


def test_same_config_twice_is_one_cluster(stack: LocalStack):
    first = post(stack, cluster_yaml("api-idem"))
    second = post(stack, cluster_yaml("api-idem"))
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["created"] is False
    names = [c["name"] for c in get(stack, "/clusters").json()["clusters"]]
    assert names.count("api-idem") == 1


def test_other_config_under_the_same_name_is_409_naming_cluster_name(stack: LocalStack):
    assert post(stack, cluster_yaml("api-conflict")).status_code == 202
    response = post(stack, cluster_yaml("api-conflict", max_workers=3))
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["cluster_name"]


def test_put_applies_a_new_config_and_refuses_a_head_change_with_409(stack: LocalStack):
    assert post(stack, cluster_yaml("api-update")).status_code == 202
    url = f"{stack.api_url}/clusters/api-update"
    yaml_type = {"content-type": "application/yaml"}
    response = requests.put(url, data=cluster_yaml("api-update", max_workers=1), headers=yaml_type, timeout=10)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) >= {"name", "status", "detail", "adjusted_fields", "ignored_fields"}
    assert "max_workers" in body["detail"]
    assert any(e["kind"] == "config" for e in get(stack, "/clusters/api-update").json()["events"])
    # Now the same as the stored one: POST says so instead of 409.
    assert post(stack, cluster_yaml("api-update", max_workers=1)).json()["created"] is False

    head_changed = cluster_yaml("api-update", max_workers=1).replace("CPU: 0", "CPU: 2")
    refused = requests.put(url, data=head_changed, headers=yaml_type, timeout=10)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "head" in refused.json()["detail"]
    assert [e["field"] for e in refused.json()["errors"]] == ["available_node_types.head.resources"]

    invalid = requests.put(url, data=b"max_workers: -1", headers=yaml_type, timeout=10)
    assert invalid.status_code == 400
    assert invalid.json()["errors"]
    missing = requests.put(
        f"{stack.api_url}/clusters/api-nope", data=cluster_yaml("api-nope"), headers=yaml_type, timeout=10
    )
    assert missing.status_code == 404
    assert missing.json()["title"] == "Cluster not found"


def test_the_timeline_is_an_svg_image_and_404_for_an_unknown_cluster(stack: LocalStack):
    from tests.unit.test_timeline import series_of

    assert post(stack, cluster_yaml("api-timeline")).status_code == 202
    wait_until(lambda: get(stack, "/clusters/api-timeline").json()["nodes"], what="the head queued")
    response = get(stack, "/clusters/api-timeline/timeline.svg?hours=1")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    series = set(series_of(response.text))
    assert "pending_demand" in series
    assert series & {"queued", "requested", "allocated"}
    missing = get(stack, "/clusters/api-nope/timeline.svg")
    assert missing.status_code == 404
    assert missing.json()["title"] == "Cluster not found"


def test_start_of_a_cluster_that_is_not_stopped_changes_nothing_and_of_an_unknown_one_is_404(stack: LocalStack):
    assert post(stack, cluster_yaml("api-start")).status_code == 202
    response = requests.post(f"{stack.api_url}/clusters/api-start/start", timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["detail"].startswith("nothing to do")
    missing = requests.post(f"{stack.api_url}/clusters/api-nope/start", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["title"] == "Cluster not found"


@pytest.mark.parametrize(("method", "path"), [("GET", "/clusters/nope"), ("DELETE", "/clusters/nope")])
def test_unknown_cluster_is_404_problem(stack: LocalStack, method: str, path: str):
    response = requests.request(method, f"{stack.api_url}{path}", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404


def test_delete_answers_202_and_the_cluster_ends_deleted(stack: LocalStack):
    assert post(stack, cluster_yaml("api-delete")).status_code == 202
    wait_until(lambda: get(stack, "/clusters/api-delete").json()["nodes"], what="the head to be queued")
    response = requests.delete(f"{stack.api_url}/clusters/api-delete", timeout=10)
    assert response.status_code == 202
    view = wait_until(
        lambda: (v := get(stack, "/clusters/api-delete").json())["status"] == "deleted" and v,
        what="the cluster to be deleted",
    )
    assert all(node["status"] in ("terminated", "allocation_failed") for node in view["nodes"])


def _as_http_body(body: object, content_type: str | None) -> tuple[bytes, str] | None:
    if isinstance(body, bytes):
        return body, content_type or "application/yaml"
    if isinstance(body, str):
        return body.encode(), content_type or "application/yaml"
    try:
        text = json.dumps(body, allow_nan=False)
    except (TypeError, ValueError):
        text = None
    if text is not None:
        return text.encode(), "application/json"
    try:
        return yaml.safe_dump(body).encode(), "application/yaml"
    except yaml.YAMLError:
        return None


def _has_nan(value: object) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


@pytest.mark.parametrize(("body", "content_type", "expected_paths"), INVALID_CASES)
def test_invalid_config_is_400_problem_naming_each_failing_field(
    stack: LocalStack, body: object, content_type: str | None, expected_paths: set[str]
):
    encoded = _as_http_body(body, content_type)
    if encoded is None or (not isinstance(body, str | bytes) and _has_nan(body)):
        pytest.skip("this case has no faithful HTTP encoding (covered by the parser's own table)")
    data, media = encoded
    response = post(stack, data, media)
    if len(data) > MAX_CONFIG_BYTES:
        assert response.status_code == 413
        return
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {e["field"] for e in response.json()["errors"]} == expected_paths


def test_rays_azure_defaults_without_a_subscription_is_refused_with_400_naming_the_field(stack: LocalStack):
    # The stack sets no CLUSTERS_SUBSCRIPTION_ID, and Ray's defaults name no subscription: no tick could ever run.
    defaults = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/ray/autoscaler/azure"
    response = post(stack, (defaults / "defaults.yaml").read_bytes())
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["provider.subscription_id"]
    assert get(stack, "/clusters/default").status_code == 404


def test_openapi_document_is_3_1_and_describes_every_route(stack: LocalStack):
    document = get(stack, "/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/clusters",
        "/clusters/{name}",
        "/clusters/{name}/reconcile",
        "/clusters/{name}/start",
        "/clusters/{name}/timeline.svg",
        "/health",
        "/openapi.json",
    }
    assert "ClusterConfig" in document["components"]["schemas"]


def test_wake_up_needs_the_cluster_token(stack: LocalStack):
    assert post(stack, cluster_yaml("api-wake")).status_code == 202
    url = f"{stack.api_url}/clusters/api-wake/reconcile"
    assert requests.post(url, timeout=10).status_code == 401
    assert requests.post(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 403
    # The token is checked before the body: without it, a malformed body is still 401, not 400.
    assert requests.post(url, data="{not json", timeout=10).status_code == 401
    assert requests.post(url, data="{not json", headers={"Authorization": "Bearer x"}, timeout=10).status_code == 403
    import function_app

    token = function_app._service().deps.token_for("api-wake", 1)
    malformed = requests.post(url, headers={"Authorization": f"Bearer {token}"}, data="{not json", timeout=10)
    assert malformed.status_code == 400
    assert malformed.headers["content-type"].startswith("application/problem+json")
    accepted = requests.post(url, headers={"Authorization": f"Bearer {token}"}, json={"reason": "test"}, timeout=10)
    assert accepted.status_code == 202
    # A token of one cluster does not wake another.
    assert post(stack, cluster_yaml("api-wake-other")).status_code == 202
    other = f"{stack.api_url}/clusters/api-wake-other/reconcile"
    assert requests.post(other, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 403


def test_a_message_that_always_fails_ends_in_the_poison_queue_and_as_an_event(stack: LocalStack):
    assert post(stack, cluster_yaml("api-poison")).status_code == 202
    assert stack.azurite is not None
    queue = QueueClient.from_connection_string(stack.azurite.connection_string, RECONCILE_QUEUE)
    # A reason outside the contract fails validation on every delivery.
    queue.send_message(json.dumps({"cluster_name": "api-poison", "reason": "not-a-reason"}))
    view = wait_until(
        lambda: next(
            (v for v in [get(stack, "/clusters/api-poison").json()] if any(e["kind"] == "poison" for e in v["events"])),
            None,
        ),
        timeout_s=60,
        what="the poison event",
    )
    poison = [e for e in view["events"] if e["kind"] == "poison"]
    assert "not-a-reason" in poison[0]["message"]
    # The poison trigger consumed it: recorded, not lost, and not left to pile up.
    poison_queue = QueueClient.from_connection_string(stack.azurite.connection_string, POISON_QUEUE)
    wait_until(lambda: poison_queue.get_queue_properties().approximate_message_count == 0, what="poison queue drained")
