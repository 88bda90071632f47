"""A loopback stand-in for the control plane's HTTP API, for the azray CLI tests; and the tests of the stand-in.

`FakeApi` answers from a script: for each (method, path), a list of answers given in turn, the last one repeated.
It records every request (method, path, headers, body), so a test can check what azray sent, the key included.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None  # a dict/list is sent as JSON; bytes as they are
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def problem(status: int, title: str, detail: str = "", errors: list[dict[str, str]] | None = None) -> Reply:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "errors": errors or []}
    return Reply(status, body, PROBLEM_JSON)


def cluster_not_found(name: str) -> Reply:
    return problem(404, "Cluster not found", f"no cluster named {name!r}")


def missing_route(method: str, path: str) -> Reply:
    """What the local host answers for a method its functions do not accept on a known path."""
    return problem(405, "Method Not Allowed", f"{method} is not allowed on {path}")


class FakeApi:
    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A short poll interval: shutdown() waits for the loop's next look, 0.5 s by default, at every test's end.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def on(self, method: str, path: str, *replies: Reply) -> FakeApi:
        """Answer `method /api{path}` with `replies` in turn; the last one repeats."""
        with self._lock:
            self.script[(method, f"/api{path}")] = list(replies)
        return self

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == f"/api{path}")
            ]

    def _reply_for(self, method: str, path: str) -> Reply:
        with self._lock:
            replies = self.script.get((method, path))
            if not replies:
                known = any(p == path for _, p in self.script)
                return (
                    missing_route(method, path) if known else problem(404, "Not Found", f"No function serves {path}.")
                )
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    fake.requests.append(
                        Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                reply = fake._reply_for(self.command, path)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                self.send_header("content-length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        return Handler

    def start(self) -> FakeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextlib.contextmanager
def serving() -> Iterator[FakeApi]:
    api = FakeApi().start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    with serving() as api:
        yield api


# -- cluster views as the API returns them -------------------------------------------------------------------------

STAMP = "2026-01-01T12:00:00Z"


def node(instance_id: str, node_type: str, status: str, *, is_head: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "node_type": node_type,
        "status": status,
        "is_head": is_head,
        "status_since": STAMP,
        "ray_node_id": "",
        "availability_zone": "",
        "last_error": "",
        "boot_phase": extra.pop("boot_phase", "joined" if status == "ray_running" else None),
        "boot_phase_at": None,
        "boot_phase_detail": "",
        **extra,
    }


def event(kind: str, message: str, at: str = STAMP, instance_id: str = "") -> dict[str, Any]:
    return {"at": at, "kind": kind, "message": message, "instance_id": instance_id}


def cluster_view(
    name: str = "demo",
    status: str = "running",
    *,
    provider: str = "local",
    nodes: list[dict[str, Any]] | None = None,
    head: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    running_head = status == "running"
    return {
        "name": name,
        "status": status,
        "status_reason": extra.pop("status_reason", "head is running Ray" if running_head else ""),
        "consecutive_failures": 0,
        "last_error": "",
        "last_error_at": None,
        "backoff_until": None,
        "head_auth_error": "",
        "provider": provider,
        "created_at": STAMP,
        "updated_at": STAMP,
        "head": head
        if head is not None
        else {
            "instance_id": "h1",
            "ray_address": "127.0.0.1:6379" if running_head else "",
            "dashboard_url": "http://127.0.0.1:8265" if running_head else "",
            "auth_token_path": "/nonexistent/auth_token" if running_head else "",
        },
        "nodes": nodes if nodes is not None else [node("h1", "head", "ray_running", is_head=True)],
        "nodes_by_status": {},
        "pending_demand": extra.pop("pending_demand", []),
        "infeasible": extra.pop("infeasible", []),
        "last_decision": extra.pop("last_decision", {"at": STAMP, "reasons": ["nothing to do"]}),
        "unavailable_node_types": [],
        "ignored_fields": extra.pop("ignored_fields", []),
        "events": events if events is not None else [event("status", "cluster accepted (generation 1)")],
        **extra,
    }


# -- the stand-in's own behaviour -----------------------------------------------------------------------------------


def test_replies_are_given_in_turn_and_the_last_one_repeats(fake_api):
    fake_api.on("GET", "/clusters/demo", Reply(200, {"n": 1}), Reply(200, {"n": 2}))
    answers = [requests.get(f"{fake_api.url}/api/clusters/demo", timeout=5).json()["n"] for _ in range(3)]
    assert answers == [1, 2, 2]


def test_requests_are_recorded_with_their_headers_and_body(fake_api):
    fake_api.on("POST", "/clusters", Reply(202, {}))
    requests.post(f"{fake_api.url}/api/clusters", data=b"x: 1", headers={"x-functions-key": "k"}, timeout=5)
    (seen,) = fake_api.seen("POST", "/clusters")
    assert (seen.body, seen.headers["x-functions-key"]) == (b"x: 1", "k")


def test_an_unscripted_method_on_a_scripted_path_is_405_like_the_local_host(fake_api):
    fake_api.on("GET", "/clusters/demo", Reply(200, {}))
    assert requests.put(f"{fake_api.url}/api/clusters/demo", timeout=5).status_code == 405


def test_an_unscripted_path_is_a_404_that_names_no_cluster(fake_api):
    answer = requests.get(f"{fake_api.url}/api/clusters/demo/timeline.svg", timeout=5)
    assert (answer.status_code, answer.json()["title"]) == (404, "Not Found")
