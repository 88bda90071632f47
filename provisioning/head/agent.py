"""The head agent: a small HTTP service beside Ray on the head node, the control plane's only window on Ray.

    python -m provisioning.head.agent --gcs-address HOST:PORT --host 127.0.0.1 --port PORT --cluster-name NAME
        --token-file PATH [--control-plane-url URL] [--poll-interval-s 0.25] [--wake-debounce-s 2.0]

(the token may come from the `AGENT_TOKEN` environment variable instead). Endpoints (boot phases:
docs/decisions/boot-phases.md):
- `GET /v1/healthz`: no auth; answers as soon as the agent listens, whether or not the GCS is reachable.
- `GET /v1/state`: Ray's demand and nodes, from the GCS autoscaler state (JSON: see agent_gcs.py), plus
  `"boot_phases"`: the last boot phase each VM reported (agent_boot.py). 503 while the GCS cannot be read.
- `POST /v1/boot-phase` `{"instance_id", "phase": "cloud_init_running" | "ray_started" | "boot_failed", "detail"}`:
  a VM's boot script reporting how far it got -> `{"instance_id", "phase", "at", "detail"}`; answered with or
  without Ray.
- `POST /v1/drain` `{"ray_node_id", "reason": "idle" | "preemption", "message"}`: GCS DrainNode ->
  `{"accepted", "rejection_reason"}`; an idle drain of a busy node is refused; an unknown node is 404.
- `POST /v1/preempt` `{"instance_id", "event_id", "not_before"}`: a VM's preempt watch saying Azure evicts it at
  `not_before`: its Ray node is drained for preemption with that deadline -> `{"instance_id", "ray_node_id",
  "accepted", "rejection_reason", "left_ray", "preempt_deadline"}` (agent_preempt.py); `/v1/state` then shows the
  node's `preempt_deadline`, and the watcher wakes the control plane at once.
`/v1/*` other than healthz needs `Authorization: Bearer <cluster token>`: missing -> 401, wrong -> 403.
Errors are `application/problem+json`.

With `--control-plane-url`, a watcher thread posts debounced wake-ups to `{url}/api/clusters/{name}/reconcile`
when demand appears or grows or a node dies, and at once, without waiting out the debounce, when a node is
preempted (agent_wakeup.py).

The agent runs on the head image's python3 (3.10 on Ubuntu 22.04) or Ray's venv Python, with only the files
cloud_init.agent_source_files() finds by walking its imports: `autoscaler.tokens` (the one constant-time comparison)
and `autoscaler.shapes` are shared with the control plane; nothing here may need Python 3.11 or a package beyond the
standard library. Ray itself is imported only after the token is in the environment, because Ray reads
`RAY_AUTH_MODE` / `RAY_AUTH_TOKEN` when its client starts, and the agent serves even while Ray cannot be imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from autoscaler.tokens import bearer_token, tokens_match
from provisioning.head.agent_boot import BootPhaseBook, BootPhaseRefusedError, checked_report
from provisioning.head.agent_gcs import (
    DRAIN_REASONS,
    GcsUnavailableError,
    RayGcs,
    is_ray_node_id,
)
from provisioning.head.agent_preempt import PreemptRefusedError, checked_notice, handle_notice
from provisioning.head.agent_wakeup import ControlPlaneWakeUp, DemandWatcher

logger = logging.getLogger("provisioning.head.agent")

MAX_BODY_BYTES = 64 * 1024
MAX_DRAIN_MESSAGE_CHARS = 1024
EXIT_USAGE = 2


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentConfig:
    gcs_address: str
    host: str
    port: int
    cluster_name: str
    token: str
    control_plane_url: str
    poll_interval_s: float
    wake_debounce_s: float


class ConfigError(Exception):
    pass


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> AgentConfig:
    parser = argparse.ArgumentParser(prog="python -m provisioning.head.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--gcs-address", required=True, help="Ray GCS address, HOST:PORT")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--token-file", help="file holding the cluster token (else env AGENT_TOKEN)")
    parser.add_argument("--control-plane-url", default="", help="base URL for wake-ups; none sent when absent")
    # Demand is noticed within this period: it bounds how fast scale-up starts (a GCS read is cheap).
    parser.add_argument("--poll-interval-s", type=float, default=0.25)
    parser.add_argument("--wake-debounce-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.poll_interval_s <= 0 or args.wake_debounce_s < 0:
        raise ConfigError("--poll-interval-s must be > 0 and --wake-debounce-s >= 0")
    return AgentConfig(
        gcs_address=args.gcs_address,
        host=args.host,
        port=args.port,
        cluster_name=args.cluster_name,
        token=_read_token(args.token_file, environ),
        control_plane_url=args.control_plane_url,
        poll_interval_s=args.poll_interval_s,
        wake_debounce_s=args.wake_debounce_s,
    )


def _read_token(token_file: str | None, environ: Mapping[str, str]) -> str:
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as error:
            raise ConfigError(f"cannot read --token-file {token_file}: {error.strerror}") from error
    else:
        token = environ.get("AGENT_TOKEN", "").strip()
    if not token:
        raise ConfigError("no cluster token: pass --token-file PATH or set AGENT_TOKEN")
    return token


def enable_ray_token_auth(token: str, environ: MutableMapping[str, str]) -> None:
    """Make this process's Ray client present the cluster token (the head runs Ray with RAY_AUTH_MODE=token).

    RAY_AUTH_TOKEN wins over RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token in Ray's loader; the path is dropped anyway so
    no stale file can be read in its place.
    """
    environ["RAY_AUTH_MODE"] = "token"
    environ["RAY_AUTH_TOKEN"] = token
    environ.pop("RAY_AUTH_TOKEN_PATH", None)


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


class AgentHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gcs: RayGcs, token: str, boot_phases: BootPhaseBook) -> None:
        super().__init__(address, AgentRequestHandler)
        self.gcs = gcs
        self.token = token
        self.boot_phases = boot_phases


class ProblemError(Exception):
    """An error answered as application/problem+json."""

    def __init__(self, status: HTTPStatus, detail: str, field_name: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field_name = field_name


class AgentRequestHandler(BaseHTTPRequestHandler):
    server: AgentHttpServer
    server_version = "ray-head-agent/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch({"/v1/healthz": self._healthz, "/v1/state": self._state})

    def do_POST(self) -> None:
        self._dispatch({"/v1/drain": self._drain, "/v1/boot-phase": self._boot_phase, "/v1/preempt": self._preempt})

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # ---- routing and the answer ---------------------------------------------------------------

    def _dispatch(self, routes: dict[str, Callable[[], tuple[HTTPStatus, object]]]) -> None:
        path = self.path.partition("?")[0]
        try:
            route = routes.get(path)
            if route is None:
                known_elsewhere = path in {"/v1/healthz", "/v1/state", "/v1/drain", "/v1/boot-phase", "/v1/preempt"}
                raise ProblemError(
                    HTTPStatus.METHOD_NOT_ALLOWED if known_elsewhere else HTTPStatus.NOT_FOUND,
                    f"{self.command} {path} is not served here",
                )
            if path != "/v1/healthz":
                self._authenticate()
            status, body = route()
            self._answer(status, body, "application/json")
        except ProblemError as problem:
            self._answer_problem(problem)
        except Exception:
            logger.exception("%s %s failed", self.command, path)
            self._answer_problem(ProblemError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the agent log"))

    def _authenticate(self) -> None:
        presented = bearer_token(self.headers.get("Authorization"))
        if presented is None:
            raise ProblemError(
                HTTPStatus.UNAUTHORIZED, "missing Authorization: Bearer <cluster token>", "Authorization"
            )
        if not tokens_match(presented, self.server.token):
            raise ProblemError(HTTPStatus.FORBIDDEN, "wrong cluster token", "Authorization")

    def _answer_problem(self, problem: ProblemError) -> None:
        body: dict[str, object] = {
            "type": "about:blank",
            "title": problem.status.phrase,
            "status": int(problem.status),
            "detail": problem.detail,
        }
        if problem.field_name:
            body["field"] = problem.field_name
        # The request body may be unread (e.g. refused before reading it): closing keeps it from being taken
        # for the next request on a kept-alive connection.
        self.close_connection = True
        extra_headers = {"Connection": "close"}
        if problem.status == HTTPStatus.UNAUTHORIZED:
            extra_headers["WWW-Authenticate"] = "Bearer"
        self._answer(problem.status, body, "application/problem+json", extra_headers)

    def _answer(
        self, status: HTTPStatus, body: object, content_type: str, extra_headers: dict[str, str] | None = None
    ) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(encoded)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(encoded)

    # ---- endpoints ----------------------------------------------------------------------------

    def _healthz(self) -> tuple[HTTPStatus, object]:
        return HTTPStatus.OK, {"status": "ok"}

    def _state(self) -> tuple[HTTPStatus, object]:
        try:
            payload = self.server.gcs.read_state_payload()
        except GcsUnavailableError as error:
            raise ProblemError(HTTPStatus.SERVICE_UNAVAILABLE, str(error)) from error
        # jobs_running is null when Ray's jobs cannot be read: the state of Ray is still worth answering.
        return HTTPStatus.OK, {
            **payload,
            "jobs_running": self.server.gcs.jobs_running(),
            "boot_phases": self.server.boot_phases.snapshot(),
        }

    def _boot_phase(self) -> tuple[HTTPStatus, object]:
        try:
            instance_id, phase, detail = checked_report(self._json_body())
        except BootPhaseRefusedError as error:
            raise ProblemError(HTTPStatus.BAD_REQUEST, str(error), error.field_name) from error
        report = self.server.boot_phases.record(instance_id, phase, detail)
        logger.info("boot phase of %s: %s %r", instance_id, phase, detail)
        return HTTPStatus.OK, {"instance_id": instance_id, **report.as_json()}

    def _preempt(self) -> tuple[HTTPStatus, object]:
        try:
            notice = checked_notice(self._json_body())
        except PreemptRefusedError as error:
            raise ProblemError(HTTPStatus.BAD_REQUEST, str(error), error.field_name) from error
        try:
            answer = handle_notice(self.server.gcs, notice)
        except GcsUnavailableError as error:
            raise ProblemError(HTTPStatus.SERVICE_UNAVAILABLE, str(error)) from error
        logger.info("preemption notice %s of %s: %s", notice.event_id, notice.instance_id, answer)
        return HTTPStatus.OK, answer

    def _drain(self) -> tuple[HTTPStatus, object]:
        ray_node_id, reason, message = self._drain_request()
        try:
            # GCS accepts a drain of a node it never heard of; a caller asking for one has the wrong id.
            if ray_node_id not in self.server.gcs.ray_node_ids():
                raise ProblemError(HTTPStatus.NOT_FOUND, f"Ray knows no node {ray_node_id}", "ray_node_id")
            accepted, rejection_reason = self.server.gcs.drain(ray_node_id, reason, message)
        except GcsUnavailableError as error:
            raise ProblemError(HTTPStatus.SERVICE_UNAVAILABLE, str(error)) from error
        logger.info("drain %s (%s): accepted=%s %s", ray_node_id, reason, accepted, rejection_reason)
        return HTTPStatus.OK, {"accepted": accepted, "rejection_reason": rejection_reason}

    def _drain_request(self) -> tuple[str, str, str]:
        body = self._json_body()
        ray_node_id = body.get("ray_node_id")
        if not isinstance(ray_node_id, str) or not is_ray_node_id(ray_node_id):
            raise ProblemError(
                HTTPStatus.BAD_REQUEST, "ray_node_id must be a 56-character hex Ray node id", "ray_node_id"
            )
        reason = body.get("reason", "idle")
        if not isinstance(reason, str) or reason not in DRAIN_REASONS:
            raise ProblemError(HTTPStatus.BAD_REQUEST, f"reason must be one of {sorted(DRAIN_REASONS)}", "reason")
        message = body.get("message", "")
        if not isinstance(message, str) or len(message) > MAX_DRAIN_MESSAGE_CHARS:
            raise ProblemError(
                HTTPStatus.BAD_REQUEST,
                f"message must be a string of at most {MAX_DRAIN_MESSAGE_CHARS} characters",
                "message",
            )
        return ray_node_id.lower(), reason, message

    def _json_body(self) -> dict[str, object]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError as error:
            raise ProblemError(HTTPStatus.BAD_REQUEST, "bad Content-Length", "Content-Length") from error
        if length < 0:
            raise ProblemError(HTTPStatus.BAD_REQUEST, "bad Content-Length", "Content-Length")
        if length > MAX_BODY_BYTES:
            raise ProblemError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError as error:
            raise ProblemError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise ProblemError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return body


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as error:
        print(f"head agent: {error}", file=sys.stderr)
        return EXIT_USAGE
    # Before Ray is imported (by the GCS connecting thread): Ray reads its auth settings when it first initializes.
    enable_ray_token_auth(config.token, os.environ)
    return serve(config, RayGcs(config.gcs_address, config.cluster_name))


def serve(config: AgentConfig, gcs: RayGcs) -> int:
    stop = threading.Event()
    try:
        server = AgentHttpServer((config.host, config.port), gcs, config.token, BootPhaseBook())
    except OSError as error:
        print(f"head agent: cannot listen on {config.host}:{config.port}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    gcs.start_connecting(stop)
    if config.control_plane_url:
        wake_up = ControlPlaneWakeUp(config.control_plane_url, config.cluster_name, config.token)
        DemandWatcher(gcs.read_state_payload, wake_up, config.poll_interval_s, config.wake_debounce_s).start(stop)
        logger.info("wake-ups go to %s", wake_up.url)
    else:
        logger.info("no --control-plane-url: wake-ups are off")

    def shut_down(signal_number: int, frame: FrameType | None) -> None:
        # serve_forever runs in this (main) thread; shutdown() waits for it, so it must be called from another.
        threading.Thread(target=server.shutdown, name="shutdown").start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    # One line on stdout that launchers wait for; the port is the real one when --port 0 was given.
    print(f"head agent listening on http://{config.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        server.server_close()
    logger.info("head agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
