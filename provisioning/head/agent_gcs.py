"""The head agent's window on Ray: the GCS autoscaler state, translated to the agent's JSON, and DrainNode.

Ray is imported here at run time only (`load_ray_api`, from the GCS connecting thread), after the agent has put its
token in the environment: Ray reads `RAY_AUTH_MODE` / `RAY_AUTH_TOKEN` when its client first initializes, and the
agent must start and answer (`/v1/healthz`, boot-phase reports, 503 for Ray's state) on a machine where Ray is still
starting or not importable by this Python at all. Ray ships no type stubs for `_raylet`, so the objects it returns are
handled as `Any` and checked where they are read.

The JSON built by `cluster_state_payload` is the wire contract of `GET /v1/state`, read back by
`autoscaler.ray_state.parse_state`:

    {"cluster_name": str, "cluster_resource_state_version": int,
     "nodes": [{"ray_node_id": hex, "instance_id": str, "node_type": str,
                "status": "running" | "idle" | "draining" | "dead", "idle_duration_s": float,
                "total_resources": {name: amount}, "available_resources": {name: amount},
                "is_head": bool, "node_ip_address": str, "labels": {key: value},
                "preempt_deadline"?: ISO 8601 UTC}],
     "pending": [{"shape": {name: amount}, "count": int, "label_selectors"?: SELECTORS}],
     "gangs": [{"strategy": "PACK" | "SPREAD" | "STRICT_PACK" | "STRICT_SPREAD",
                "bundles": [{name: amount}], "count": int, "bundle_label_selectors"?: [SELECTORS]}],
     "constraints": [{"shape": {name: amount}, "count": int, "label_selectors"?: SELECTORS}]}

    SELECTORS = [[{"key": str, "operator": "in" | "!in", "values": [str]}]]

SELECTORS are Ray 2.60's label selectors of a request (`ResourceRequest.label_selectors`), in Ray's order: the first
is preferred, the others are fallbacks, and a node must satisfy every constraint of one of them. The keys with a "?"
appear only when some request has selectors (an older control plane ignores them); `bundle_label_selectors` has one
entry per bundle, in the order of `bundles` ([] for a bundle without). `preempt_deadline` is on a live node that
Ray drains with a deadline: the head agent drains with one only on a spot preemption notice
(`POST /v1/preempt`, preempt_watch.py), so it is when Azure evicts the node's VM (docs/decisions/preemption-notice.md).

to which agent.py adds `"boot_phases": {instance_id: {"phase": str, "at": ISO 8601 UTC, "detail": str}}`
(agent_boot.py).
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from autoscaler.shapes import GangStrategy, Shape, shape_of

logger = logging.getLogger(__name__)

# One label constraint as (key, operator, values); a selector is a sorted tuple of them, and a request's selectors a
# tuple of selectors in Ray's order. Hashable, so that requests fold by (shape, selectors).
Constraint = tuple[str, str, tuple[str, ...]]
Selector = tuple[Constraint, ...]
Selectors = tuple[Selector, ...]
# Ray's LabelSelectorOperator (common.proto): LABEL_OPERATOR_IN = 1, LABEL_OPERATOR_NOT_IN = 2. Ray fails a constraint
# of any other operator; it is passed on as "op<n>", which the planner also never matches.
LABEL_OPERATORS = {1: "in", 2: "!in"}

# Ray marks the head with this implicit resource; it is the one signal that does not depend on how Ray was started.
HEAD_NODE_RESOURCE = "node:__internal_head__"
# Where Ray puts a node's type when `RAY_NODE_TYPE_NAME` was not in the raylet's environment but a label was set.
NODE_GROUP_LABEL = "ray.io/node-group"
RAY_NODE_ID_HEX_LENGTH = 56  # a NodeID is 28 bytes

GCS_CALL_TIMEOUT_S = 5.0
# datetime.UTC came with Python 3.11; the agent runs on 3.10.
UTC = timezone(timedelta(0))
GCS_CONNECT_RETRY_S = 1.0
# Ray missing is not fixed within a second (someone installs it): retrying the import less often keeps the log quiet.
RAY_IMPORT_RETRY_S = 10.0

# Ray's NodeStatus names -> the agent's statuses. UNSPECIFIED is a node still registering: calling it "running"
# keeps it from looking idle (and so from being scaled down) before Ray has said anything about it.
_NODE_STATUS_BY_RAY_NAME = {
    "RUNNING": "running",
    "IDLE": "idle",
    "DRAINING": "draining",
    "DEAD": "dead",
    "UNSPECIFIED": "running",
}

DRAIN_REASONS = {
    "idle": "DRAIN_NODE_REASON_IDLE_TERMINATION",  # rejectable: a busy raylet says no
    "preemption": "DRAIN_NODE_REASON_PREEMPTION",  # not rejectable: the VM is going away regardless
}


# Where Ray's job API keeps submitted jobs (ray.dashboard.modules.job.common.JobInfoStorageClient), and the metadata
# key that ties a driver to its submitted job (JOB_ID_METADATA_KEY).
JOB_INFO_KEY_PREFIX = b"_ray_internal_job_info_"
JOB_KV_NAMESPACE = b"job"
JOB_SUBMISSION_ID_METADATA_KEY = "job_submission_id"
RAY_INTERNAL_NAMESPACE_PREFIX = "_ray_internal"
UNFINISHED_JOB_STATUSES = frozenset({"PENDING", "RUNNING"})


def count_running_jobs(drivers: Iterable[Any], submitted_infos: Iterable[bytes | None]) -> int:
    """Unfinished submitted jobs plus live drivers that belong to no submitted job (Ray's internal ones left out).

    `drivers` are GCS JobTableData entries; `submitted_infos` the stored JobInfo JSON of each submitted job."""
    submitted = 0
    for raw in submitted_infos:
        if not raw:
            continue
        info = json.loads(raw)
        if isinstance(info, dict) and str(info.get("status", "")).upper() in UNFINISHED_JOB_STATUSES:
            submitted += 1
    loose_drivers = 0
    for driver in drivers:
        if driver.is_dead or str(driver.config.ray_namespace).startswith(RAY_INTERNAL_NAMESPACE_PREFIX):
            continue
        if JOB_SUBMISSION_ID_METADATA_KEY in dict(driver.config.metadata):
            continue  # counted with its submitted job
        loose_drivers += 1
    return submitted + loose_drivers


class RayUnavailableError(Exception):
    """Ray is not installed here, or is a version without the autoscaler v2 GCS API the agent needs."""


class GcsUnavailableError(Exception):
    """The GCS could not be reached (yet), refused the agent's token, or failed the call."""


@dataclass(frozen=True)
class RayApi:
    """The handful of Ray objects the agent uses, resolved once at start."""

    gcs_client_class: Any
    cluster_state_reply_class: Any  # GetClusterResourceStateReply
    node_status_name: Any  # NodeStatus.Name: int -> "RUNNING", ...
    drain_reason_values: Mapping[str, int]  # "idle" / "preemption" -> DrainNodeReason value

    def read_cluster_state(self, gcs_client: Any) -> Any:
        """The ClusterResourceState, as `ray.autoscaler.v2.sdk.get_cluster_resource_state` reads it, with a timeout."""
        reply = self.cluster_state_reply_class()
        reply.ParseFromString(gcs_client.get_cluster_resource_state(timeout_s=GCS_CALL_TIMEOUT_S))
        return reply.cluster_resource_state


def load_ray_api() -> RayApi:
    """Import the Ray API the agent needs, or explain in one line why it is not there."""
    try:
        raylet = importlib.import_module("ray._raylet")
        autoscaler_pb2 = importlib.import_module("ray.core.generated.autoscaler_pb2")
        return RayApi(
            gcs_client_class=raylet.GcsClient,
            cluster_state_reply_class=autoscaler_pb2.GetClusterResourceStateReply,
            node_status_name=autoscaler_pb2.NodeStatus.Name,
            drain_reason_values={
                reason: autoscaler_pb2.DrainNodeReason.Value(ray_name) for reason, ray_name in DRAIN_REASONS.items()
            },
        )
    except ImportError as error:
        raise RayUnavailableError(f"Ray is not installed for this Python ({error})") from error
    except (AttributeError, ValueError) as error:
        raise RayUnavailableError(
            f"the installed Ray lacks the autoscaler v2 GCS API (GetClusterResourceState, DrainNode): {error}"
        ) from error


class RayGcs:
    """One GCS client, shared by the HTTP threads and the wake-up watcher.

    Importing Ray and constructing its GcsClient (which blocks about 40 s while the GCS is down) happen in a
    background thread that retries until both succeed; until then every call raises `GcsUnavailableError` at once,
    saying what is missing, instead of hanging an HTTP request or stopping the agent. Calls are serialized by a lock:
    the agent makes a few a second, and it spares us relying on the thread safety of Ray's internal client.
    """

    def __init__(self, gcs_address: str, cluster_name: str, load_api: Callable[[], RayApi] = load_ray_api) -> None:
        self._gcs_address = gcs_address
        self._cluster_name = cluster_name
        self._load_api = load_api
        self._ray_api: RayApi | None = None
        self._client: Any = None
        self._not_connected_reason = "not tried yet"
        self._connected = threading.Event()
        self._call_lock = threading.Lock()

    def start_connecting(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self._connect_until_done, args=(stop,), name="gcs-connect", daemon=True)
        thread.start()
        return thread

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def read_state_payload(self) -> dict[str, object]:
        """The agent's `/v1/state` JSON, read from the GCS now."""
        ray_api, _ = self._connected_client()
        cluster_state = self._read_cluster_state()
        return cluster_state_payload(
            cluster_state, self._cluster_name, ray_api.node_status_name, self._drain_deadlines_ms()
        )

    def _drain_deadlines_ms(self) -> dict[str, int]:
        """Ray node id (hex) -> the deadline (epoch ms) its drain was given, for live draining nodes with one.

        GCS GetDrainingNodes (`GcsClient.get_draining_nodes`, which `ray._private.state.get_draining_nodes` wraps)
        answers {hex node id: deadline ms}, 0 for a drain without deadline; a node leaves it when it dies. Ray 2.60
        keeps no drain reason for a live node, so the deadline is the one sign of a preemption drain. Best effort:
        the rest of Ray's state is worth answering without it.
        """
        _, client = self._connected_client()
        try:
            with self._call_lock:
                deadlines = client.get_draining_nodes(timeout=GCS_CALL_TIMEOUT_S)
        except Exception as error:  # a Ray without the call, a failing GCS
            logger.info("cannot read Ray's draining nodes: %s", error)
            return {}
        return {str(node_id).lower(): int(deadline_ms) for node_id, deadline_ms in dict(deadlines).items()}

    def jobs_running(self) -> int | None:
        """Ray jobs not yet finished: submitted jobs (Ray Jobs API) pending or running, and drivers connected
        outside it (`ray.init` from a script), Ray's internal ones left out. None when they cannot be read (a Ray
        without these calls, a GCS that fails): /v1/state still answers, and the control plane keeps the cluster."""
        try:
            _, client = self._connected_client()
            with self._call_lock:
                drivers = client.get_all_job_info(
                    skip_submission_job_info_field=True, skip_is_running_tasks_field=True, timeout=GCS_CALL_TIMEOUT_S
                )
                keys = client.internal_kv_keys(
                    JOB_INFO_KEY_PREFIX, namespace=JOB_KV_NAMESPACE, timeout=GCS_CALL_TIMEOUT_S
                )
                infos = [
                    client.internal_kv_get(key, namespace=JOB_KV_NAMESPACE, timeout=GCS_CALL_TIMEOUT_S) for key in keys
                ]
            return count_running_jobs(drivers.values(), infos)
        except Exception as error:  # GcsUnavailableError, RpcError, AttributeError of another Ray...
            logger.info("cannot read Ray's jobs: %s", error)
            return None

    def ray_node_ids(self) -> set[str]:
        """Every node the GCS knows, dead ones included, as hex ids."""
        return {bytes(node.node_id).hex() for node in self._read_cluster_state().node_states}

    def drain(self, ray_node_id: str, reason: str, message: str, deadline_ms: int = 0) -> tuple[bool, str]:
        """GCS DrainNode. `(accepted, rejection_reason)`; an idle drain of a busy node is refused.

        `deadline_ms` (epoch ms, 0 = none) is when the node will be force-killed; Ray only passes it on as a hint
        and never kills the node itself (`ray drain-node --deadline-remaining-seconds` says so, ray/scripts/scripts.py).
        """
        ray_api, client = self._connected_client()
        reason_value = ray_api.drain_reason_values[reason]
        try:
            with self._call_lock:
                accepted, rejection_reason = client.drain_node(
                    ray_node_id, reason_value, message, deadline_ms, timeout=GCS_CALL_TIMEOUT_S
                )
        except Exception as error:
            raise GcsUnavailableError(f"GCS DrainNode failed: {error}") from error
        return bool(accepted), str(rejection_reason)

    def _read_cluster_state(self) -> Any:
        ray_api, client = self._connected_client()
        try:
            with self._call_lock:
                return ray_api.read_cluster_state(client)
        except Exception as error:  # Ray raises RpcError, AuthenticationError, GetTimeoutError...
            raise GcsUnavailableError(f"reading the GCS autoscaler state failed: {error}") from error

    def _connected_client(self) -> tuple[RayApi, Any]:
        ray_api = self._ray_api
        if ray_api is None or not self._connected.is_set():
            raise GcsUnavailableError(
                f"not connected to the GCS at {self._gcs_address} yet: {self._not_connected_reason}"
            )
        return ray_api, self._client

    def _connect_until_done(self, stop: threading.Event) -> None:
        ray_api = self._import_ray_until_done(stop)
        if ray_api is None:
            return
        last_failure = ""
        while not stop.is_set():
            try:
                client = ray_api.gcs_client_class(address=self._gcs_address)
                # Construction succeeds before the token is checked: one real call proves the token is accepted.
                ray_api.read_cluster_state(client)
            except Exception as error:
                self._not_connected_reason = str(error)
                if str(error) != last_failure:  # once per distinct failure, not once a second
                    logger.warning("cannot use the GCS at %s yet: %s", self._gcs_address, error)
                    last_failure = str(error)
                stop.wait(GCS_CONNECT_RETRY_S)
                continue
            self._ray_api, self._client = ray_api, client
            self._connected.set()
            logger.info("connected to the GCS at %s", self._gcs_address)
            return

    def _import_ray_until_done(self, stop: threading.Event) -> RayApi | None:
        """Ray's API once it imports; None when stopped first. The agent keeps serving meanwhile."""
        while not stop.is_set():
            try:
                return self._load_api()
            except RayUnavailableError as error:
                if str(error) != self._not_connected_reason:
                    logger.warning("cannot read Ray's state: %s (retrying every %.0f s)", error, RAY_IMPORT_RETRY_S)
                self._not_connected_reason = str(error)
            stop.wait(RAY_IMPORT_RETRY_S)
            importlib.invalidate_caches()  # a Ray installed meanwhile is only found with fresh path caches
        return None


# --------------------------------------------------------------------------------------------
# ClusterResourceState proto -> JSON
# --------------------------------------------------------------------------------------------


def cluster_state_payload(
    cluster_state: Any,
    cluster_name: str,
    node_status_name: Any,
    drain_deadlines_ms: Mapping[str, int] | None = None,
) -> dict[str, object]:
    """Translate Ray's ClusterResourceState into the agent's JSON, folding identical requests into counts.

    `drain_deadlines_ms`: Ray node id -> drain deadline (epoch ms), as `RayGcs._drain_deadlines_ms` reads them."""
    deadlines = drain_deadlines_ms or {}
    return {
        "cluster_name": cluster_name,
        "cluster_resource_state_version": int(cluster_state.cluster_resource_state_version),
        "nodes": [_node_payload(node, node_status_name, deadlines) for node in cluster_state.node_states],
        "pending": _shape_counts(_requests(cluster_state.pending_resource_requests)),
        "gangs": _gang_payloads(cluster_state.pending_gang_resource_requests),
        "constraints": _shape_counts(
            request
            for constraint in cluster_state.cluster_resource_constraints
            for request in _requests(constraint.resource_requests)
        ),
    }


def _requests(requests_by_count: Iterable[Any]) -> Iterable[tuple[Shape, Selectors, int]]:
    for request_by_count in requests_by_count:
        request = request_by_count.request
        yield shape_of(request.resources_bundle), request_selectors(request), int(request_by_count.count)


def request_selectors(request: Any) -> Selectors:
    """A ResourceRequest's label selectors, in Ray's order; () when it has none."""
    selectors = []
    for selector in getattr(request, "label_selectors", ()):  # a Ray without label selectors has no such field
        constraints = tuple(
            sorted(
                (
                    str(constraint.label_key),
                    LABEL_OPERATORS.get(int(constraint.operator), f"op{int(constraint.operator)}"),
                    tuple(str(value) for value in constraint.label_values),
                )
                for constraint in selector.label_constraints
            )
        )
        if constraints:
            selectors.append(constraints)
    return tuple(selectors)


def selectors_payload(selectors: Selectors) -> list[list[dict[str, object]]]:
    return [
        [{"key": key, "operator": operator, "values": list(values)} for key, operator, values in selector]
        for selector in selectors
    ]


def _node_payload(node: Any, node_status_name: Any, drain_deadlines_ms: Mapping[str, int]) -> dict[str, object]:
    total_resources = {name: float(amount) for name, amount in node.total_resources.items()}
    ray_node_id = bytes(node.node_id).hex()
    status = _NODE_STATUS_BY_RAY_NAME.get(str(node_status_name(node.status)), "running")
    payload: dict[str, object] = {
        "ray_node_id": ray_node_id,
        "instance_id": str(node.instance_id),
        "node_type": str(node.ray_node_type_name) or str(node.labels.get(NODE_GROUP_LABEL, "")),
        "status": status,
        "idle_duration_s": int(node.idle_duration_ms) / 1000.0,
        "total_resources": total_resources,
        "available_resources": {name: float(amount) for name, amount in node.available_resources.items()},
        "is_head": HEAD_NODE_RESOURCE in total_resources,
        "node_ip_address": str(node.node_ip_address),
        "labels": {str(key): str(value) for key, value in getattr(node, "labels", {}).items()},
    }
    deadline_ms = drain_deadlines_ms.get(ray_node_id, 0)
    if deadline_ms > 0 and status != "dead":
        payload["preempt_deadline"] = iso_utc_from_epoch_ms(deadline_ms)
    return payload


def iso_utc_from_epoch_ms(epoch_ms: int) -> str:
    """ISO 8601 with an explicit UTC offset, as the control plane's contract asks (agent_contract.py)."""
    return datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC).isoformat(timespec="milliseconds")


def _shape_counts(requests: Iterable[tuple[Shape, Selectors, int]]) -> list[dict[str, object]]:
    """Fold identical requests: same shape and same label selectors."""
    counts: Counter[tuple[Shape, Selectors]] = Counter()
    for shape, selectors, count in requests:
        if shape and count > 0:  # an empty shape needs no node
            counts[(shape, selectors)] += count
    payloads: list[dict[str, object]] = []
    for (shape, selectors), count in sorted(counts.items()):
        payload: dict[str, object] = {"shape": dict(shape), "count": count}
        if selectors:
            payload["label_selectors"] = selectors_payload(selectors)
        payloads.append(payload)
    return payloads


def _gang_payloads(gang_requests: Iterable[Any]) -> list[dict[str, object]]:
    counts: Counter[tuple[GangStrategy, tuple[tuple[Shape, Selectors], ...]]] = Counter()
    for gang_request in gang_requests:
        # Ray 2.60 fills `bundle_selectors` and keeps `requests` for older readers; its own scheduler prefers the first.
        requests = gang_request.bundle_selectors[0].resource_requests if gang_request.bundle_selectors else []
        requests = requests or gang_request.requests
        # A gang's bundles are placed together whatever their order, so sorting them lets identical gangs fold.
        bundles = tuple(
            sorted(
                (shape, request_selectors(request))
                for shape, request in ((shape_of(request.resources_bundle), request) for request in requests)
                if shape
            )
        )
        if bundles:
            counts[(gang_strategy(str(gang_request.details), requests), bundles)] += 1
    payloads: list[dict[str, object]] = []
    for (strategy, bundles), count in sorted(counts.items()):
        payload: dict[str, object] = {
            "strategy": strategy.value,
            "bundles": [dict(shape) for shape, _ in bundles],
            "count": count,
        }
        if any(selectors for _, selectors in bundles):
            payload["bundle_label_selectors"] = [selectors_payload(selectors) for _, selectors in bundles]
        payloads.append(payload)
    return payloads


def gang_strategy(details: str, requests: Iterable[Any]) -> GangStrategy:
    """The placement strategy of a pending placement group.

    GCS writes it in `details` as "<placement group id>:<STRATEGY>|<STATE>". Should that text change, the
    placement constraints still tell the strict strategies apart (anti-affinity = STRICT_SPREAD, affinity =
    STRICT_PACK); PACK is the safe reading of the rest, as it asks for the fewest nodes.
    """
    _, _, strategy_and_state = details.partition(":")
    strategy_name = strategy_and_state.partition("|")[0]
    if strategy_name in GangStrategy.__members__:
        return GangStrategy(strategy_name)
    constraints = [constraint for request in requests for constraint in request.placement_constraints]
    if any(constraint.HasField("anti_affinity") for constraint in constraints):
        return GangStrategy.STRICT_SPREAD
    if any(constraint.HasField("affinity") for constraint in constraints):
        return GangStrategy.STRICT_PACK
    return GangStrategy.PACK


def is_ray_node_id(text: str) -> bool:
    return len(text) == RAY_NODE_ID_HEX_LENGTH and all(char in "0123456789abcdef" for char in text.lower())
