"""The local Functions host against real Azurite and real HTTP over loopback, running the sample function app."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from uuid import uuid4

import azure.functions as func
import pytest
import requests
from azure.storage.queue import QueueClient

from local.config import HostConfig, QueueOptions
from local.functions import UnsupportedFunctionError
from local.host import LocalHost
from local.queues import MissingConnectionError
from tests.support.azurite import Azurite, free_port
from tests.support.sample_function_app import ALWAYS_FAILING_BODY, RECORDER
from tests.support.sample_function_app import app as sample_app

pytestmark = pytest.mark.azurite

REPO_ROOT = Path(__file__).resolve().parents[2]
NEVER_IN_A_TEST = "0 0 0 1 1 *"  # once a year, at New Year
FAST_QUEUES = QueueOptions(
    batch_size=4,
    max_dequeue_count=3,
    visibility_timeout=timedelta(0),
    max_polling_interval=timedelta(milliseconds=200),
)


@pytest.fixture(autouse=True)
def fresh_recorder() -> Iterator[None]:
    RECORDER.reset()
    yield
    RECORDER.reset()


@pytest.fixture
def settings(azurite: Azurite) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "WORK_QUEUE": f"work-{uuid4().hex[:12]}",  # fresh queues per test in the session's one Azurite
        "SAMPLE_SCHEDULE": NEVER_IN_A_TEST,
        "STARTUP_SCHEDULE": NEVER_IN_A_TEST,
    }


StartHost = Callable[..., LocalHost]


@pytest.fixture
def start_host(settings: dict[str, str]) -> Iterator[StartHost]:
    started: list[LocalHost] = []

    def start(extra_settings: dict[str, str] | None = None, host_config: HostConfig | Path | None = None) -> LocalHost:
        host = LocalHost(
            sample_app,
            {**settings, **(extra_settings or {})},
            port=0,
            host_config=host_config or HostConfig(queues=FAST_QUEUES),
        )
        started.append(host)
        host.start()
        return host

    yield start
    for host in started:
        host.stop()


def work_queue(settings: dict[str, str], suffix: str = "") -> QueueClient:
    return QueueClient.from_connection_string(settings["AzureWebJobsStorage"], settings["WORK_QUEUE"] + suffix)


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def message_count(client: QueueClient) -> int:
    return int(client.get_queue_properties().approximate_message_count or 0)


# ---- HTTP ----


def test_route_parameters_and_query_reach_the_function(start_host):
    host = start_host()
    response = requests.get(f"{host.base_url}/api/items/alpha%20one?verbose=1", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"name": "alpha one", "method": "GET", "query": {"verbose": "1"}}


def test_function_response_status_location_and_body_are_returned(start_host):
    host = start_host()
    response = requests.post(
        f"{host.base_url}/api/items/alpha/actions", data=b"payload", headers={"Content-Type": "text/plain"}, timeout=5
    )
    assert response.status_code == 202
    assert response.headers["Location"] == "/api/items/alpha"
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {"received": "payload", "content_type": "text/plain"}


def test_chunked_request_body_reaches_the_function(start_host):
    host = start_host()
    response = requests.post(f"{host.base_url}/api/async-echo", data=iter([b"first ", b"second"]), timeout=5)
    assert response.status_code == 200
    assert response.content == b"first second"


def test_literal_route_wins_over_a_parameter_route(start_host):
    host = start_host()
    response = requests.get(f"{host.base_url}/api/items/special", timeout=5)
    assert response.text == "the literal route wins over items/{name}"


def test_method_the_binding_does_not_allow_gets_405_problem_listing_the_allowed(start_host):
    host = start_host()
    response = requests.put(f"{host.base_url}/api/items/alpha", timeout=5)
    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Allow"] == "GET, DELETE"
    assert response.json()["status"] == 405


@pytest.mark.parametrize("path", ["/api/nothing-here", "/api/items/alpha/unknown", "/items/alpha", "/"])
def test_path_no_function_serves_gets_404_problem(start_host, path):
    host = start_host()
    response = requests.get(f"{host.base_url}{path}", timeout=5)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Not Found"


def listening_address(host: LocalHost) -> tuple[str, int]:
    address, port = urlsplit(host.base_url).netloc.rsplit(":", 1)
    return address, int(port)


def send_as_is(host: LocalHost, method: str, target: str) -> tuple[http.client.HTTPResponse, bytes]:
    """Send exactly `method target` (http.client, unlike requests, sends any method and request target as given)."""
    connection = http.client.HTTPConnection(*listening_address(host), timeout=5)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND"])
def test_method_no_function_accepts_on_a_known_path_gets_405_problem_with_allow(start_host, method):
    response, body = send_as_is(start_host(), method, "/api/items/alpha")
    assert response.status == 405
    assert response.getheader("Content-Type") == "application/problem+json"
    assert response.getheader("Allow") == "GET, DELETE"
    problem = json.loads(body)
    assert (problem["type"], problem["title"], problem["status"]) == ("about:blank", "Method Not Allowed", 405)
    assert method in problem["detail"]


@pytest.mark.parametrize(("method", "target"), [("TRACE", "/api/nothing-here"), ("CONNECT", "example.com:443")])
def test_method_no_function_accepts_on_an_unknown_path_gets_404_problem(start_host, method, target):
    response, body = send_as_is(start_host(), method, target)
    assert response.status == 404
    assert response.getheader("Content-Type") == "application/problem+json"
    assert json.loads(body)["detail"] == f"No function serves {target}."


def test_request_the_http_parser_rejects_gets_problem_json(start_host):
    host = start_host()
    with socket.create_connection(listening_address(host), timeout=5) as client:
        oversized_header = b"X-Padding: " + b"a" * 70_000  # over the 64 KiB line limit of http.server
        client.sendall(b"GET /api/items/alpha HTTP/1.1\r\nHost: x\r\n" + oversized_header + b"\r\n\r\n")
        answer = read_until_closed(client)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"Content-Type: application/problem+json" in head
    assert json.loads(body)["status"] == 431


def read_until_closed(client: socket.socket) -> bytes:
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    return answer


def test_fifty_parallel_requests_all_connect_at_once_and_get_answers(start_host):
    host = start_host()
    address = listening_address(host)
    request = b"POST /api/items/alpha/actions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    all_ready = threading.Barrier(50)
    outcomes: queue.Queue[tuple[float, bytes] | BaseException] = queue.Queue()

    def send_one() -> None:
        all_ready.wait(timeout=10)
        try:
            started = time.monotonic()
            with socket.create_connection(address, timeout=10) as client:
                connect_s = time.monotonic() - started
                client.sendall(request)
                outcomes.put((connect_s, read_until_closed(client)))
        except OSError as error:
            outcomes.put(error)

    clients = [threading.Thread(target=send_one) for _ in range(50)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=30)
    results = [outcomes.get_nowait() for _ in range(outcomes.qsize())]
    failures = [result for result in results if isinstance(result, BaseException)]
    assert failures == []
    answers = [result for result in results if not isinstance(result, BaseException)]
    assert [answer.split(b" ", 2)[1] for _, answer in answers] == [b"202"] * 50
    # Loopback connects complete in the kernel; only a connection attempt dropped by a full listen backlog waits,
    # and the client's first SYN retransmission comes after 1 s.
    assert max(connect_s for connect_s, _ in answers) < 0.9


def test_exception_in_function_gives_500_problem_and_logs_the_traceback_only(start_host, caplog):
    host = start_host()
    response = requests.get(f"{host.base_url}/api/boom", timeout=5)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "secret detail" not in response.text
    assert "Traceback" not in response.text
    failures = [record for record in caplog.records if record.exc_info and "boom" in record.getMessage()]
    assert failures
    assert "secret detail" in str(failures[0].exc_info[1])


def test_async_function_is_awaited(start_host):
    host = start_host()
    response = requests.post(f"{host.base_url}/api/async-echo", data=b"\x00\x01binary", timeout=5)
    assert response.content == b"\x00\x01binary"
    assert response.headers["Content-Type"].startswith("application/octet-stream")


def test_each_request_is_logged_with_method_path_status_and_duration(start_host, caplog):
    caplog.set_level("INFO", logger="local.http")
    host = start_host()
    requests.delete(f"{host.base_url}/api/items/alpha?code=secret-key", timeout=5)

    # The server thread logs the request once the response is written: the client may read it a moment before.
    def logged() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.name == "local.http"]

    deadline = time.monotonic() + 5
    while not any(line.startswith("DELETE /api/items/alpha 200 ") for line in logged()) and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = logged()
    assert any(line.startswith("DELETE /api/items/alpha 200 ") and line.endswith(" ms") for line in lines)
    assert not any("secret-key" in line for line in lines)


def test_route_prefix_and_queue_settings_come_from_the_host_json_file(start_host, tmp_path):
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}}))
    host = start_host(host_config=host_json)
    assert requests.get(f"{host.base_url}/v1/items/alpha", timeout=5).status_code == 200
    assert requests.get(f"{host.base_url}/api/items/alpha", timeout=5).status_code == 404


# ---- timers ----


def test_timer_fires_every_second_on_the_schedule_named_by_an_app_setting(start_host):
    start_host({"SAMPLE_SCHEDULE": "*/1 * * * * *"})
    first, second = RECORDER.wait_for("sample_timer", count=2, timeout_s=4)
    assert 0.5 < second.started_monotonic - first.started_monotonic < 1.5
    assert first.detail["past_due"] is False


def test_timer_never_overlaps_itself_and_marks_the_late_run_past_due(start_host):
    RECORDER.timer_run_s = 1.5  # longer than the one-second period
    start_host({"SAMPLE_SCHEDULE": "*/1 * * * * *"})
    first, second = RECORDER.wait_for("sample_timer", count=2, timeout_s=6)
    assert RECORDER.most_timers_running_at_once == 1
    assert second.started_monotonic - first.started_monotonic >= 1.5
    assert (first.detail["past_due"], second.detail["past_due"]) == (False, True)


def test_run_on_startup_timer_fires_once_at_start(start_host):
    start_host()
    (invocation,) = RECORDER.wait_for("startup_timer", timeout_s=2)
    assert invocation.detail["past_due"] is False
    time.sleep(0.3)
    assert len(RECORDER.of("startup_timer")) == 1
    assert RECORDER.of("sample_timer") == []  # run_on_startup=False


# ---- queues ----


def test_queue_message_is_delivered_decoded_and_then_deleted(start_host, settings):
    start_host()
    queue_client = work_queue(settings)
    queue_client.send_message(base64.b64encode(b'{"cluster": "alpha"}').decode("ascii"))
    (invocation,) = RECORDER.wait_for("work")
    assert invocation.detail["body"] == '{"cluster": "alpha"}'
    assert invocation.detail["dequeue_count"] == 1
    wait_until(lambda: message_count(queue_client) == 0)


def test_queue_output_binding_enqueues_a_message_the_queue_trigger_receives(start_host):
    host = start_host()
    response = requests.post(f"{host.base_url}/api/enqueue", data=b"from-http", timeout=5)
    assert response.status_code == 202
    (invocation,) = RECORDER.wait_for("work")
    assert invocation.detail["body"] == "from-http"


def test_plain_text_messages_are_delivered_when_message_encoding_is_none(start_host, settings):
    start_host(
        host_config=HostConfig(
            queues=QueueOptions(message_encoding="none", max_polling_interval=timedelta(milliseconds=200))
        )
    )
    work_queue(settings).send_message("plain text, not base64")
    (invocation,) = RECORDER.wait_for("work")
    assert invocation.detail["body"] == "plain text, not base64"


def test_message_that_always_fails_moves_to_the_poison_queue_after_max_dequeue_count(start_host, settings):
    start_host()
    queue_client = work_queue(settings)
    queue_client.send_message(base64.b64encode(ALWAYS_FAILING_BODY.encode()).decode("ascii"))
    (poisoned,) = RECORDER.wait_for("work_poison", timeout_s=10)
    attempts = RECORDER.of("work")
    assert [attempt.detail["dequeue_count"] for attempt in attempts] == [1, 2, 3]  # maxDequeueCount 3
    assert poisoned.detail["body"] == ALWAYS_FAILING_BODY  # the poison queue's own trigger got the same body
    wait_until(lambda: message_count(queue_client) == 0)
    wait_until(lambda: message_count(work_queue(settings, "-poison")) == 0)  # deleted after its trigger succeeded


# An app whose one queue function outlives the message lease, to see the lease renewed while it runs.
long_running_app = func.FunctionApp()
LONG_RUN_S = 3.0
SHORT_LEASE = timedelta(seconds=2)  # renewed every second while the function runs
long_runs: queue.Queue[int] = queue.Queue()  # the dequeue count of each run


@long_running_app.queue_trigger(arg_name="message", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def outlives_its_lease(message: func.QueueMessage) -> None:
    long_runs.put(int(message.dequeue_count or 0))
    time.sleep(LONG_RUN_S)


def test_message_whose_function_outlives_the_lease_runs_once_and_is_deleted(settings):
    queue_client = work_queue(settings)
    host_config = HostConfig(queues=replace(FAST_QUEUES, message_lease=SHORT_LEASE))
    with LocalHost(long_running_app, settings, port=0, host_config=host_config):
        queue_client.send_message(base64.b64encode(b"long job").decode("ascii"))
        assert long_runs.get(timeout=10) == 1
        # Unrenewed, the message would be visible again after 2 s and handed to a second run while the first goes on.
        time.sleep(LONG_RUN_S + 1)
        assert long_runs.empty()
        wait_until(lambda: message_count(queue_client) == 0)  # deleted with the pop receipt of the last renewal


# ---- start-up checks and shutdown ----


def test_unsupported_trigger_fails_at_start_up_naming_it(settings):
    blob_app = func.FunctionApp()

    @blob_app.blob_trigger(arg_name="blob", path="uploads/{name}", connection="AzureWebJobsStorage")
    def on_upload(blob: func.InputStream) -> None:
        pass

    with pytest.raises(UnsupportedFunctionError, match=r"on_upload.*'blobTrigger'"):
        LocalHost(blob_app, settings, port=0)


def test_unset_queue_connection_setting_fails_at_start_up_naming_it(settings):
    without_storage = {name: value for name, value in settings.items() if name != "AzureWebJobsStorage"}
    with pytest.raises(MissingConnectionError, match="AzureWebJobsStorage"):
        LocalHost(sample_app, without_storage, port=0)


def test_non_loopback_address_is_refused(settings):
    with pytest.raises(ValueError, match="loopback"):
        LocalHost(sample_app, settings, host="0.0.0.0", port=0)


def test_stop_ends_every_thread_it_started_and_closes_the_port(settings):
    threads_before = set(threading.enumerate())
    with LocalHost(sample_app, settings, port=0, host_config=HostConfig(queues=FAST_QUEUES)) as host:
        port = int(host.base_url.rsplit(":", 1)[1])
        assert requests.get(f"{host.base_url}/api/items/alpha", timeout=5).status_code == 200
    wait_until(lambda: not (set(threading.enumerate()) - threads_before), timeout_s=2)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_command_line_host_serves_the_app_and_stops_on_sigterm(settings, tmp_path):
    port = free_port()
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {**settings, "WORK_QUEUE": "from-file"}}))
    environment = {**os.environ, "WORK_QUEUE": settings["WORK_QUEUE"]}  # already set: wins over the file
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "local", "--app", "tests.support.sample_function_app:app", "--port", str(port)),
            *("--settings", str(settings_file), "--host-json", str(tmp_path / "no-host.json")),
        ],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        output = OutputReader(process)
        banner = output.read_until("Functions:", timeout_s=20) + output.read_available(idle_s=0.5)
        assert f"http://127.0.0.1:{port}/api" in banner
        assert "http   GET,DELETE /api/items/{name}" in banner
        assert f"queue  {settings['WORK_QUEUE']} (connection AzureWebJobsStorage)" in banner
        assert "not enforced" in banner
        assert requests.get(f"http://127.0.0.1:{port}/api/items/alpha", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class OutputReader:
    """Collects a process's stdout lines on a thread, so the test can wait for a line with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._stdout = process.stdout
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self._stdout:
            self._lines.put(line)

    def read_until(self, marker: str, timeout_s: float) -> str:
        seen = ""
        deadline = time.monotonic() + timeout_s
        while marker not in seen:
            try:
                seen += self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {marker!r} in the output so far: {seen!r}") from None
        return seen

    def read_available(self, idle_s: float) -> str:
        text = ""
        while True:
            try:
                text += self._lines.get(timeout=idle_s)
            except queue.Empty:
                return text
