"""A storage outage, for real: the stack's own Azurite is frozen (SIGSTOP) while requests come in.

Every request that needs storage answers within 10 s with 503 application/problem+json and a Retry-After; requests
that do not need it still answer; once Azurite runs again (SIGCONT) everything works without a restart.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from local.stack import LocalStack

pytestmark = pytest.mark.azurite

NEVER = "0 0 0 1 1 *"  # no timer during the test: every storage call here comes from the requests below
ANSWER_WITHIN_S = 10.0
CONFIG = """
cluster_name: outage
provider: {type: local, launch_delay_s: 600}
auth: {ssh_user: ray}
available_node_types:
  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}
head_node_type: head
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir = tmp_path_factory.mktemp("outage-stack")
    with LocalStack(data_dir=data_dir, port=0, settings={"RECONCILE_SCHEDULE": NEVER}) as started:
        yield started
        from provisioning.local import LocalCloudProvider

        LocalCloudProvider(Path(data_dir) / "provider").destroy_cluster("outage")


def azurite_pid(stack: LocalStack) -> int:
    assert stack.azurite is not None
    assert stack.azurite.process is not None
    return stack.azurite.process.pid


def timed(method: str, url: str, **kwargs: object) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.request(method, url, timeout=30, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - started


def test_requests_answer_503_with_retry_after_within_10_s_while_storage_is_frozen_then_work_again(stack: LocalStack):
    api = stack.api_url
    created = requests.post(f"{api}/clusters", data=CONFIG, headers={"content-type": "application/yaml"}, timeout=10)
    assert created.status_code == 202, created.text
    import function_app

    token = function_app._service().deps.token_for("outage", 1)
    needs_storage = [
        ("GET", f"{api}/clusters", {}),
        ("GET", f"{api}/clusters/outage", {}),
        ("POST", f"{api}/clusters", {"data": CONFIG.replace("outage", "other"), "headers": {"content-type": "x-yaml"}}),
        ("DELETE", f"{api}/clusters/outage", {}),
        ("POST", f"{api}/clusters/outage/reconcile", {"headers": {"Authorization": f"Bearer {token}"}}),
    ]
    pid = azurite_pid(stack)
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=len(needs_storage) + 1) as pool:
            answers = list(pool.map(lambda call: timed(call[0], call[1], **call[2]), needs_storage))
            health, health_s = pool.submit(timed, "GET", f"{api}/health").result()
    finally:
        os.kill(pid, signal.SIGCONT)
    for (method, url, _), (response, elapsed_s) in zip(needs_storage, answers, strict=True):
        assert elapsed_s < ANSWER_WITHIN_S, f"{method} {url} took {elapsed_s:.1f} s"
        assert response.status_code == 503, (method, url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["status"] == 503
    assert (health.status_code, health_s < ANSWER_WITHIN_S) == (200, True)

    # Storage is back: the same requests work, with nothing restarted.
    view = requests.get(f"{api}/clusters/outage", timeout=10)
    assert view.status_code == 200, view.text
    assert view.json()["status"] == "creating"
    assert requests.delete(f"{api}/clusters/outage", timeout=10).status_code == 202
