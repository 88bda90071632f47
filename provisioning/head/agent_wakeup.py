"""Event-driven wake-ups: the head agent tells the control plane when Ray's demand appears or grows.

The control plane reconciles on a timer anyway; a wake-up only shortens the time from "tasks are waiting" to
"a launch is decided" from a timer period to about a second. So a wake-up is best effort: it is debounced (at most
one call per `debounce_s`; what changes inside the window is sent when it ends), a failed call is logged and
forgotten (the next change calls again), and nothing here may stop the agent.

A node newly preempted (Ray drains it with a deadline: a spot eviction notice, agent_preempt.py) is the one change
sent at once, debounce or not, naming its instance: its replacement has only the notice period (30 s on Azure) to
start before the node goes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoscaler.shapes import Shape, format_shape, shape_of
from provisioning.head.agent_gcs import GcsUnavailableError

logger = logging.getLogger(__name__)

WAKE_UP_TIMEOUT_S = 5.0
MAX_REASON_CHARS = 1000


# --------------------------------------------------------------------------------------------
# What counts as a change (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemandSummary:
    """The parts of a `/v1/state` payload whose growth deserves a wake-up."""

    pending_bundles: int = 0  # task/actor bundles plus every bundle of every waiting placement group
    constraint_bundles: int = 0  # request_resources bundles
    shapes: frozenset[Shape] = frozenset()  # every shape asked for, pending or constrained
    dead_nodes: Mapping[str, str] = field(default_factory=dict)  # ray node id -> instance id
    # ray node id -> (instance id, preempt deadline as the payload says it)
    preempted_nodes: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def summarize(payload: Mapping[str, Any]) -> DemandSummary:
    """Summarize the agent's own `/v1/state` JSON (see agent_gcs.cluster_state_payload)."""
    pending = payload["pending"]
    gangs = payload["gangs"]
    constraints = payload["constraints"]
    shapes = {shape_of(item["shape"]) for item in [*pending, *constraints]}
    shapes |= {shape_of(bundle) for gang in gangs for bundle in gang["bundles"]}
    return DemandSummary(
        pending_bundles=sum(item["count"] for item in pending)
        + sum(len(gang["bundles"]) * gang["count"] for gang in gangs),
        constraint_bundles=sum(item["count"] for item in constraints),
        shapes=frozenset(shapes),
        dead_nodes={node["ray_node_id"]: node["instance_id"] for node in payload["nodes"] if node["status"] == "dead"},
        preempted_nodes={
            node["ray_node_id"]: (node["instance_id"], node["preempt_deadline"])
            for node in payload["nodes"]
            if node.get("preempt_deadline") and node["status"] != "dead"
        },
    )


def describe_change(previous: DemandSummary, current: DemandSummary) -> str | None:
    """Why the control plane should look now, or None when nothing grew and no node died."""
    reasons: list[str] = []
    if current.pending_bundles > previous.pending_bundles:
        reasons.append(f"pending bundles grew from {previous.pending_bundles} to {current.pending_bundles}")
    if current.constraint_bundles > previous.constraint_bundles:
        reasons.append(
            f"requested resources grew from {previous.constraint_bundles} to {current.constraint_bundles} bundles"
        )
    new_shapes = sorted(current.shapes - previous.shapes)
    if new_shapes:
        reasons.append("new shapes " + ", ".join(format_shape(shape) for shape in new_shapes))
    newly_preempted = newly_preempted_nodes(previous, current)
    if newly_preempted:
        described = ", ".join(
            f"{_describe_node(node_id, current.preempted_nodes[node_id][0])} by {current.preempted_nodes[node_id][1]}"
            for node_id in newly_preempted
        )
        reasons.append(f"nodes preempted: {described}")
    newly_dead = sorted(set(current.dead_nodes) - set(previous.dead_nodes))
    if newly_dead:
        described = ", ".join(_describe_node(node_id, current.dead_nodes[node_id]) for node_id in newly_dead)
        reasons.append(f"nodes died: {described}")
    return "; ".join(reasons) or None


def newly_preempted_nodes(previous: DemandSummary, current: DemandSummary) -> list[str]:
    """Ray node ids preempted since `previous`: a change worth a wake-up at once, whatever the debounce."""
    return sorted(set(current.preempted_nodes) - set(previous.preempted_nodes))


def _describe_node(ray_node_id: str, instance_id: str) -> str:
    return f"{ray_node_id[:12]} ({instance_id})" if instance_id else ray_node_id[:12]


# --------------------------------------------------------------------------------------------
# Sending a wake-up
# --------------------------------------------------------------------------------------------


class WakeUpFailedError(Exception):
    pass


def reconcile_url(control_plane_url: str, cluster_name: str) -> str:
    """`{control_plane_url}/api/clusters/{name}/reconcile`, keeping a query string (e.g. a Functions `code=` key)."""
    parts = urllib.parse.urlsplit(control_plane_url)
    path = parts.path.rstrip("/") + f"/api/clusters/{urllib.parse.quote(cluster_name, safe='')}/reconcile"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would replay the Authorization header to wherever a redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ControlPlaneWakeUp:
    """`POST .../reconcile` with the cluster token, straight to the control plane (no proxy, no redirect)."""

    def __init__(self, control_plane_url: str, cluster_name: str, token: str) -> None:
        self.url = reconcile_url(control_plane_url, cluster_name)
        self._token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirects())

    def __call__(self, reason: str) -> None:
        request = urllib.request.Request(  # noqa: S310 -- the URL is the operator's control plane, http(s) only
            self.url,
            data=json.dumps({"reason": reason[:MAX_REASON_CHARS]}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=WAKE_UP_TIMEOUT_S) as response:
                response.read()
        except (urllib.error.URLError, OSError) as error:  # HTTPError (any status >= 300) is a URLError
            raise WakeUpFailedError(f"wake-up POST {self.url} failed: {error}") from error


# --------------------------------------------------------------------------------------------
# The watcher thread
# --------------------------------------------------------------------------------------------


class DemandWatcher:
    """Polls Ray's state and sends a debounced wake-up when `describe_change` finds something."""

    def __init__(
        self,
        read_payload: Callable[[], Mapping[str, Any]],
        send_wake_up: Callable[[str], None],
        poll_interval_s: float,
        debounce_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_payload = read_payload
        self._send_wake_up = send_wake_up
        self._poll_interval_s = poll_interval_s
        self._debounce_s = debounce_s
        self._clock = clock

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="demand-watcher", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        previous = DemandSummary()
        unsent_reasons: list[str] = []
        last_sent_at = float("-inf")
        while not stop.is_set():
            current = self._observe()
            urgent = False
            if current is not None:
                change = describe_change(previous, current)
                urgent = bool(newly_preempted_nodes(previous, current))
                previous = current
                if change:
                    unsent_reasons.append(change)
            if unsent_reasons and (urgent or self._clock() - last_sent_at >= self._debounce_s):
                last_sent_at = self._clock()
                self._send(unsent_reasons)
                unsent_reasons = []
            stop.wait(self._next_wait_s(unsent_reasons, last_sent_at))

    def _observe(self) -> DemandSummary | None:
        try:
            return summarize(self._read_payload())
        except GcsUnavailableError as error:
            # The GCS being away is not a change; the dead nodes it reports once back are.
            logger.debug("demand watcher: %s", error)
            return None
        except Exception:
            logger.exception("demand watcher: could not read Ray's state")
            return None

    def _send(self, reasons: Sequence[str]) -> None:
        reason = "; ".join(reasons)
        try:
            self._send_wake_up(reason)
            logger.info("wake-up sent: %s", reason)
        except WakeUpFailedError as error:
            logger.warning("%s (next change will call again)", error)
        except Exception:
            logger.exception("wake-up failed unexpectedly")

    def _next_wait_s(self, unsent_reasons: Sequence[str], last_sent_at: float) -> float:
        if not unsent_reasons:
            return self._poll_interval_s
        # Wake exactly when the debounce window closes, so a held-back change is not late by a poll interval.
        until_window_closes_s = last_sent_at + self._debounce_s - self._clock()
        return max(0.0, min(self._poll_interval_s, until_window_closes_s))
