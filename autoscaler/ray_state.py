"""Client of the head agent: what Ray sees (`GET /v1/state`) and graceful drains (`POST /v1/drain`).

`GET /v1/state` also carries the boot phases the VMs reported to the agent (`parse_boot_phases`): they are read
leniently, entry by entry, because they only inform the status page and must never cost a tick its view of Ray.

Runs inside the Functions app, so it speaks HTTP only and never imports Ray. The agent's JSON is validated here,
at the edge, by pydantic models and turned into `autoscaler.model.RayState`. Anything short of a valid answer
(connection refused, timeout, 5xx, a body that is not the contract) is `HeadUnreachableError`: the reconcile shell
reads it as "no new information about Ray this tick", never as "Ray has no nodes". A 401/403 is `HeadAuthError`, a
separate type: the agent is up and refuses the token, which waiting will not fix and which the status must show.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import requests
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from autoscaler.model import (
    BootPhase,
    BootPhaseReport,
    GangDemand,
    GangStrategy,
    RayNode,
    RayNodeStatus,
    RayState,
    Shape,
    ShapeDemand,
    shape_of,
)

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0
DRAIN_REASONS = ("idle", "preemption")


# What a VM's boot script reports to the head agent (provisioning/head/agent_boot.py); the other phases the control
# plane sees for itself.
REPORTED_BOOT_PHASES = frozenset({BootPhase.CLOUD_INIT_RUNNING, BootPhase.RAY_STARTED, BootPhase.BOOT_FAILED})
MAX_BOOT_DETAIL_CHARS = 300


__all__ = ["BootPhase", "BootPhaseReport"]  # re-exported: the boot phases are read here


class HeadAgentError(Exception):
    """Base of the two ways a call to the head agent gives no information about Ray."""


class HeadUnreachableError(HeadAgentError):
    """The head agent gave no usable answer: connection refused, timeout, 5xx or a malformed body."""


class HeadAuthError(HeadAgentError):
    """The head agent answered and refused the cluster token (401/403): a token, key or generation mix-up.

    Not a kind of `HeadUnreachableError`: the agent is up, and retrying with the same token cannot help."""


@dataclass(frozen=True)
class DrainResult:
    accepted: bool
    rejection_reason: str
    # False when Ray does not know the node (never joined, or long gone). The drain is then vacuously done,
    # as NotFound on terminate is success: there is nothing in Ray to drain, and `accepted` is True.
    node_known: bool = True


class RayStateReader(Protocol):
    def read_state(self, agent_url: str, token: str) -> RayState:
        """Ray's current view of the cluster. Raises HeadUnreachableError, or HeadAuthError on 401/403."""
        ...

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        """Ask Ray to drain one node; `reason` is "idle" (a busy node refuses) or "preemption" (never refused).

        An empty `ray_node_id` (the instance never joined Ray) or a node Ray does not know is vacuously drained:
        `DrainResult(accepted=True, node_known=False)`. Raises HeadUnreachableError, or HeadAuthError on 401/403;
        ValueError for a reason outside DRAIN_REASONS.
        """
        ...


# --------------------------------------------------------------------------------------------
# The wire format (see provisioning/head/agent_gcs.py for the producer)
# --------------------------------------------------------------------------------------------


def _check_resources(resources: dict[str, float]) -> dict[str, float]:
    for name, amount in resources.items():
        if not name or not math.isfinite(amount) or amount < 0:
            raise ValueError(f"resource {name!r} has amount {amount}; expected a finite amount >= 0")
    return resources


class _WireModel(BaseModel):
    # Unknown fields are ignored so that a newer agent can add some without breaking an older control plane.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _NodePayload(_WireModel):
    ray_node_id: str = Field(min_length=1)
    instance_id: str = ""
    node_type: str = ""
    status: RayNodeStatus
    idle_duration_s: float = Field(ge=0, allow_inf_nan=False)
    total_resources: dict[str, float] = Field(default_factory=dict)
    available_resources: dict[str, float] = Field(default_factory=dict)
    is_head: bool = False

    _resources_are_amounts = field_validator("total_resources", "available_resources")(_check_resources)


class _ShapeCountPayload(_WireModel):
    shape: dict[str, float]
    count: int = Field(ge=1)

    _shape_is_amounts = field_validator("shape")(_check_resources)


class _GangPayload(_WireModel):
    strategy: GangStrategy
    bundles: list[dict[str, float]] = Field(min_length=1)
    count: int = Field(default=1, ge=1)

    @field_validator("bundles")
    @classmethod
    def _bundles_are_amounts(cls, bundles: list[dict[str, float]]) -> list[dict[str, float]]:
        return [_check_resources(bundle) for bundle in bundles]


class _StatePayload(_WireModel):
    nodes: list[_NodePayload]
    pending: list[_ShapeCountPayload] = Field(default_factory=list)
    gangs: list[_GangPayload] = Field(default_factory=list)
    constraints: list[_ShapeCountPayload] = Field(default_factory=list)


def parse_state(payload: object) -> RayState:
    """Validate the agent's `/v1/state` JSON and build a RayState; identical shapes and gangs are folded."""
    try:
        state = _StatePayload.model_validate(payload)
    except ValidationError as error:
        raise HeadUnreachableError(f"head agent state does not match the contract: {error}") from error
    return RayState(
        nodes=tuple(
            RayNode(
                ray_node_id=node.ray_node_id,
                instance_id=node.instance_id,
                node_type=node.node_type,
                status=node.status,
                idle_duration_s=node.idle_duration_s,
                total_resources=node.total_resources,
                available_resources=node.available_resources,
                is_head=node.is_head,
            )
            for node in state.nodes
        ),
        pending=_fold_shapes((item.shape, item.count) for item in state.pending),
        gangs=_fold_gangs(state.gangs),
        constraints=_fold_shapes((item.shape, item.count) for item in state.constraints),
        boot_phases=parse_boot_phases(payload),
    )


def _fold_shapes(shapes_with_counts: Iterable[tuple[Mapping[str, float], int]]) -> tuple[ShapeDemand, ...]:
    counts: Counter[Shape] = Counter()
    for resources, count in shapes_with_counts:
        shape = shape_of(resources)
        if shape:  # a shape of nothing needs no node
            counts[shape] += count
    return tuple(ShapeDemand(shape=shape, count=count) for shape, count in sorted(counts.items()))


def _fold_gangs(gangs: Iterable[_GangPayload]) -> tuple[GangDemand, ...]:
    counts: Counter[tuple[GangStrategy, tuple[Shape, ...]]] = Counter()
    for gang in gangs:
        bundles = tuple(sorted(shape for shape in map(shape_of, gang.bundles) if shape))
        if bundles:
            counts[(gang.strategy, bundles)] += gang.count
    return tuple(
        GangDemand(strategy=strategy, bundles=bundles, count=count)
        for (strategy, bundles), count in sorted(counts.items())
    )


class _BootPhasePayload(_WireModel):
    phase: BootPhase
    at: AwareDatetime
    detail: str = ""


def parse_boot_phases(payload: object) -> dict[str, BootPhaseReport]:
    """The `boot_phases` of the agent's `/v1/state` JSON, by instance id.

    An entry that does not fit (a phase this version does not know, a bad timestamp) is left out, and an agent
    without boot phases gives none: the state of Ray is usable either way.
    """
    entries = payload.get("boot_phases") if isinstance(payload, dict) else None
    if not isinstance(entries, dict):
        return {}
    reports: dict[str, BootPhaseReport] = {}
    for instance_id, entry in entries.items():
        try:
            parsed = _BootPhasePayload.model_validate(entry)
        except ValidationError:
            continue
        if instance_id and parsed.phase in REPORTED_BOOT_PHASES:
            reports[instance_id] = BootPhaseReport(parsed.phase, parsed.at, parsed.detail[:MAX_BOOT_DETAIL_CHARS])
    return reports


class _DrainAnswer(_WireModel):
    accepted: bool
    rejection_reason: str = ""


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


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
            answer = _DrainAnswer.model_validate(self._json(response))
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
