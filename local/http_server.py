"""The HTTP side of the local host: one threaded server on loopback serving every httpTrigger route.

Each request becomes a `func.HttpRequest`, runs the user function through the Invoker, and the `func.HttpResponse`
it returns is written back as is. Anything the host itself answers (400, 404, 405, 500, ...) is problem JSON
(RFC 9457), whatever the method: a method no function accepts gets 405 with `Allow` on a known path, 404 elsewhere.
Connections close after each response: a local developer tool gains nothing from keep-alive, and it lets
stop() finish without waiting for idle clients.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from local.functions import RETURN_BINDING_NAME, FunctionSpec, HttpTriggerSpec, Invoker
from local.routes import RouteTable

__all__ = ["FunctionHttpServer"]

logger = logging.getLogger("local.http")

PROBLEM_JSON = "application/problem+json"
# Set by the server, never copied from a function's response.
_HOP_BY_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class FunctionHttpServer:
    def __init__(
        self, functions: Sequence[FunctionSpec], route_prefix: str, invoker: Invoker, host: str, port: int
    ) -> None:
        http_functions = [spec for spec in functions if isinstance(spec.trigger, HttpTriggerSpec)]
        self.route_prefix = route_prefix.strip("/")
        self._routes = RouteTable(
            (spec.trigger.route, spec.trigger.methods, spec)
            for spec in http_functions
            if isinstance(spec.trigger, HttpTriggerSpec)
        )
        self._invoker = invoker
        self._server = _Server((host, port), _RequestHandler, self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-host-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, wait for requests in progress, release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    # ---- dispatch, called on the request's thread ----

    def handle(self, request: _RequestHandler) -> None:
        started = time.monotonic()
        path, query = _path_and_query(request.path)
        status = self._dispatch(request, path, query)
        elapsed_ms = (time.monotonic() - started) * 1000
        # The query string is left out: function keys and tokens travel there.
        logger.info("%s %s %d %.1f ms", request.command, path, status, elapsed_ms)

    def _dispatch(self, request: _RequestHandler, path: str, query: str) -> int:
        relative_path = self._strip_prefix(path)
        match = self._routes.resolve(request.command, relative_path) if relative_path is not None else None
        if match is None:
            return request.send_problem(HTTPStatus.NOT_FOUND, f"No function serves {path}.")
        if match.target is None:
            return request.send_problem(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{path} does not accept {request.command}; it accepts {', '.join(match.allowed_methods)}.",
                extra_headers={"Allow": ", ".join(match.allowed_methods)},
            )
        spec = match.target
        try:
            body = request.read_body()
        except ValueError as error:
            return request.send_problem(HTTPStatus.BAD_REQUEST, f"Unreadable request body: {error}.")
        http_request = func.HttpRequest(
            method=request.command,
            url=f"http://{request.headers.get('Host') or self.base_url.removeprefix('http://')}{request.path}",
            headers=_merged_headers(request),
            params=dict(parse_qsl(query, keep_blank_values=True)),
            route_params=match.route_params,
            body=body,
        )
        try:
            result = self._invoker.invoke(spec, http_request)
            if spec.http_output_arg in (None, RETURN_BINDING_NAME):
                response = _as_http_response(result.return_value, spec.name)
            else:
                response = _as_http_response(result.outputs.get(str(spec.http_output_arg)), spec.name)
        except Exception:
            logger.exception("function %r failed on %s %s", spec.name, request.command, path)
            return request.send_problem(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"Function {spec.name!r} raised an exception; the local host log has the traceback.",
            )
        return request.send_function_response(response)

    def _strip_prefix(self, path: str) -> str | None:
        if not self.route_prefix:
            return path
        prefix = "/" + self.route_prefix.lower()
        lowered = path.lower()
        if lowered == prefix or lowered.startswith(prefix + "/"):
            return path[len(prefix) :]
        return None


def _path_and_query(request_target: str) -> tuple[str, str]:
    if request_target.startswith("/") or "://" in request_target:
        target = urlsplit(request_target)  # origin form, or absolute form (`http://host/path`)
        return target.path, target.query
    # Authority form (`CONNECT example.com:443`) or asterisk form (`OPTIONS *`): no function serves these; the
    # target is shown as sent rather than as urlsplit would misread it (`example.com:443` as a scheme and a path).
    return request_target, ""


def _merged_headers(request: BaseHTTPRequestHandler) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in request.headers.items():
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def _as_http_response(value: Any, function_name: str) -> func.HttpResponse:
    if isinstance(value, func.HttpResponse):
        return value
    if isinstance(value, str | bytes):
        return func.HttpResponse(value)
    if value is None:
        return func.HttpResponse(status_code=HTTPStatus.NO_CONTENT)
    raise TypeError(f"function {function_name!r} returned a {type(value).__name__}; expected func.HttpResponse")


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() waits for requests in progress
    # socketserver's default listen backlog is 5: a burst of parallel requests (a client fanning out, a benchmark)
    # overflows it, and the kernel drops the extra connection attempts (seconds of SYN retries, or resets).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_RequestHandler], owner: FunctionHttpServer) -> None:
        self.owner = owner
        super().__init__(address, handler)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops sending mid-request does not hold a thread for ever

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler runs `do_<METHOD>` and answers 501 in HTML when there is none (TRACE, CONNECT, ...).
        # Every method goes to the route table instead, which answers 405 problem JSON with `Allow` on a known
        # path and 404 on an unknown one, as for any other method no function accepts.
        if name.startswith("do_"):
            return self._handle_request
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _handle_request(self) -> None:
        self.server.owner.handle(self)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the HTTP parser itself (bad request line, headers too long, ...), as problem JSON."""
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        detail = f"{message or status.phrase}: {explain}" if explain else (message or status.phrase)
        logger.info("request rejected before routing: %d %s", status.value, detail)
        self.send_problem(status, f"{detail}.")

    def log_message(self, format: str, *args: Any) -> None:  # BaseHTTPRequestHandler's signature
        logger.debug(format, *args)  # FunctionHttpServer logs one line per request itself

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        if not length_text.isdigit():
            raise ValueError(f"Content-Length {length_text!r} is not a number")
        return self.rfile.read(int(length_text))

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError as error:
                raise ValueError(f"bad chunk size {size_line!r}") from error
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, up to the blank line
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF after each chunk

    def send_function_response(self, response: func.HttpResponse) -> int:
        headers = [(name, value) for name, value in response.headers.items() if name.lower() not in _HOP_BY_HOP_HEADERS]
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", f"{response.mimetype}; charset={response.charset}"))
        self._send(response.status_code, headers, response.get_body())
        return int(response.status_code)

    def send_problem(self, status: HTTPStatus, detail: str, extra_headers: dict[str, str] | None = None) -> int:
        problem = {"type": "about:blank", "title": status.phrase, "status": status.value, "detail": detail}
        headers = [("Content-Type", PROBLEM_JSON), *(extra_headers or {}).items()]
        self._send(status.value, headers, json.dumps(problem).encode("utf-8"))
        return status.value

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and status not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            self.wfile.write(body)
        self.close_connection = True
