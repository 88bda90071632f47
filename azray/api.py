"""The control plane's HTTP API as azray calls it: every failure becomes a `CliError` whose line says what to do.

The function key goes in the `x-functions-key` header only (never the URL, which error messages quote).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests

from azray.errors import CliError, ExitCode
from azray.target import Target

HTTP_TIMEOUT_S = 30.0
KEY_HEADER = "x-functions-key"
PROBLEM_JSON = "application/problem+json"
CLUSTER_NOT_FOUND_TITLE = "Cluster not found"

View = dict[str, Any]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    def problem(self) -> View:
        """The RFC 9457 problem body, or {} when the answer is not one."""
        try:
            body = self.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) and "status" in body else {}

    @property
    def is_cluster_not_found(self) -> bool:
        return self.status == 404 and self.problem().get("title") == CLUSTER_NOT_FOUND_TITLE

    @property
    def is_missing_route(self) -> bool:
        """The server has no function for this method and path: an older app. A 404 naming no cluster (the local
        host answers 'No function serves ...', Azure an empty 404) or a 405."""
        return self.status == 405 or (self.status == 404 and not self.is_cluster_not_found)


class Api:
    def __init__(self, target: Target, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def url(self, path: str) -> str:
        return f"{self.target.api_url}{path}"

    def send(self, method: str, path: str, *, body: bytes | None = None, content_type: str = "") -> Answer:
        """One request; only an unreachable server raises (UNREACHABLE). Every answer is returned as it is."""
        headers = {"accept": "application/json"}
        if content_type:
            headers["content-type"] = content_type
        if self.target.key is not None:
            headers[KEY_HEADER] = self.target.key.reveal()
        try:
            response = self.session.request(method, self.url(path), data=body, headers=headers, timeout=self.timeout_s)
        except requests.Timeout:
            raise CliError(
                f"no answer from {self.target.api_url} within {self.timeout_s:g} s "
                f"(URL from {self.target.url_source}); check that the app is running, "
                "or point azray elsewhere with --url or AZRAY_URL",
                ExitCode.UNREACHABLE,
            ) from None
        except requests.exceptions.InvalidHeader:
            # Its message quotes the header value: the key. Say which setting to fix instead.
            raise CliError(
                f"the function key (from {self.target.key_source}) contains characters an HTTP header cannot carry; "
                "set it again with only the key",
                ExitCode.USAGE,
            ) from None
        except requests.RequestException as error:
            raise CliError(
                f"cannot reach {self.target.api_url} (URL from {self.target.url_source}): {_reason(error)}; "
                + (
                    "start the local host with `make run`, or point azray elsewhere with --url or AZRAY_URL"
                    if self.target.is_loopback
                    else "check the URL and your network, or point azray elsewhere with --url or AZRAY_URL"
                ),
                ExitCode.UNREACHABLE,
            ) from None
        return Answer(
            status=response.status_code,
            body=response.content,
            content_type=response.headers.get("content-type", ""),
            headers={name.lower(): value for name, value in response.headers.items()},
        )

    def call(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str = "", ok: tuple[int, ...] = (200,)
    ) -> View:
        """A request whose answer must be one of `ok` with a JSON object; anything else raises its CliError."""
        answer = self.send(method, path, body=body, content_type=content_type)
        if answer.status not in ok:
            raise self.error_for(method, path, answer)
        return self.json_of(method, path, answer)

    def json_of(self, method: str, path: str, answer: Answer) -> View:
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CliError(
                f"{method} {self.url(path)} answered {answer.status} with something that is not the autoscaler's "
                f"JSON ({answer.content_type or 'no content type'}); is {self.target.base_url} "
                f"(from {self.target.url_source}) the autoscaler app?",
                ExitCode.SERVER,
            )
        return body

    def error_for(self, method: str, path: str, answer: Answer) -> CliError:  # noqa: PLR0911 -- one return per HTTP answer the CLI explains in its own line
        problem = answer.problem()
        detail = str(problem.get("detail") or problem.get("title") or "").strip()
        status = answer.status
        where = f"{method} {self.url(path)}"
        if status in (401, 403):
            if self.target.key is None:
                return CliError(
                    f"{self.target.base_url} refused the request ({status}): it needs a function key and none was "
                    f"sent; {self.target.key_hint}, or pass --key",
                    ExitCode.AUTH,
                )
            return CliError(
                f"{self.target.base_url} refused the function key ({status}; key from {self.target.key_source}): "
                f"it is wrong or was rotated; {self.target.key_hint}",
                ExitCode.AUTH,
            )
        if answer.is_cluster_not_found:
            return CliError(f"{detail}; `azray list` shows the clusters there are", ExitCode.NOT_FOUND)
        if status in (400, 413):
            fields = [
                f"{item.get('field') or '(the whole config)'}: {item.get('message', '')}"
                for item in problem.get("errors", [])
                if isinstance(item, dict)
            ]
            return CliError(
                f"the API rejected the request ({status}): {detail or 'no detail given'}"
                + ("; fix these fields and run the command again" if fields else ""),
                ExitCode.INVALID,
                fields,
            )
        if status == 409:
            return CliError(f"conflict (409): {detail or 'the cluster is in another state'}", ExitCode.CONFLICT)
        if answer.is_missing_route:
            return CliError(
                f"{self.target.base_url} (from {self.target.url_source}) has no {method} /api{path} ({status}): "
                "is it the autoscaler app, and up to date?",
                ExitCode.UNSUPPORTED,
            )
        if status == 503:
            retry = answer.headers.get("retry-after", "")
            return CliError(
                f"the API is unavailable right now (503): {detail or 'no detail given'}; "
                f"try again{f' in {retry} s' if retry else ' shortly'}",
                ExitCode.SERVER,
            )
        return CliError(
            f"{where} failed ({status}): {detail or answer.body[:200].decode('utf-8', 'replace') or 'no detail'}",
            ExitCode.SERVER,
        )

    # -- the routes ------------------------------------------------------------------------------------------------

    def clusters(self) -> list[View]:
        body = self.call("GET", "/clusters")
        clusters = body.get("clusters", [])
        return [c for c in clusters if isinstance(c, dict)]

    def cluster(self, name: str) -> View:
        return self.call("GET", f"/clusters/{name}")


def _reason(error: requests.RequestException) -> str:
    """The innermost cause, short: 'Connection refused', 'Name or service not known'..."""
    cause: BaseException = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = str(cause) or type(cause).__name__
    if "]" in text and text.startswith("[Errno"):
        text = text.split("]", 1)[1].strip()
    if "Failed to establish a new connection:" in text:
        text = text.rsplit("Failed to establish a new connection:", 1)[1].strip(" ')\"")
    return text[:200]
