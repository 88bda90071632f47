"""The `RayStateReader` port over HTTP: the head agent's `GET /v1/state` and `POST /v1/drain`.

Runs inside the Functions app, so it speaks HTTP only and never imports Ray. Anything short of a valid answer
(connection refused, timeout, 5xx, a body that is not the contract) is `HeadUnreachableError`; a 401/403 is
`HeadAuthError`, a separate type: the agent is up and refuses the token, which waiting will not fix and which the
status must show. The JSON is validated by autoscaler/agent_contract.py.
"""

from __future__ import annotations

import requests
from pydantic import ValidationError

from autoscaler.agent_contract import DrainAnswer, parse_state
from autoscaler.model import RayState
from autoscaler.ports import DRAIN_REASONS, DrainResult, HeadAuthError, HeadUnreachableError

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0


class HttpRayStateReader:
    """`RayStateReader` over HTTP with short timeouts: a tick must not wait long on a head that is not there."""

    def __init__(
        self,
        session: requests.Session | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._session = session or requests.Session()
        # No proxy or .netrc from the environment: the token goes to the head and nowhere else.
        self._session.trust_env = False
        self._timeouts_s = (connect_timeout_s, read_timeout_s)

    def read_state(self, agent_url: str, token: str) -> RayState:
        response = self._call("GET", agent_url, "/v1/state", token)
        if response.status_code != 200:
            raise HeadUnreachableError(f"head agent answered {response.status_code} to GET /v1/state")
        return parse_state(self._json(response))

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        if reason not in DRAIN_REASONS:
            raise ValueError(f"drain reason must be one of {DRAIN_REASONS}, not {reason!r}")
        if not ray_node_id:
            return DrainResult(accepted=True, rejection_reason="", node_known=False)
        body = {"ray_node_id": ray_node_id, "reason": reason, "message": message}
        response = self._call("POST", agent_url, "/v1/drain", token, body)
        if response.status_code == 404 and self._problem_field(response) == "ray_node_id":
            return DrainResult(accepted=True, rejection_reason="", node_known=False)
        if response.status_code != 200:  # a 400 too: the agent and this client disagree on the contract
            raise HeadUnreachableError(f"head agent answered {response.status_code} to POST /v1/drain")
        try:
            answer = DrainAnswer.model_validate(self._json(response))
        except ValidationError as error:
            raise HeadUnreachableError(f"head agent drain answer does not match the contract: {error}") from error
        return DrainResult(accepted=answer.accepted, rejection_reason=answer.rejection_reason)

    def _call(
        self, method: str, agent_url: str, path: str, token: str, body: object | None = None
    ) -> requests.Response:
        url = agent_url.rstrip("/") + path
        try:
            response = self._session.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeouts_s,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise HeadUnreachableError(f"head agent at {agent_url} unreachable: {type(error).__name__}") from error
        if response.status_code in (401, 403):
            raise HeadAuthError(f"head agent at {agent_url} refused the cluster token ({response.status_code})")
        return response

    @staticmethod
    def _problem_field(response: requests.Response) -> str:
        """The failing field of a problem+json answer; "" for anything else (e.g. a 404 from a wrong URL)."""
        try:
            problem = response.json()
        except ValueError:
            return ""
        return str(problem.get("field", "")) if isinstance(problem, dict) else ""

    @staticmethod
    def _json(response: requests.Response) -> object:
        try:
            return response.json()
        except ValueError as error:  # requests' JSONDecodeError is a ValueError
            raise HeadUnreachableError(f"head agent answered a body that is not JSON: {error}") from error
