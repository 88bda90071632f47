"""Preemption notices: a VM's preempt watch (preempt_watch.py) tells the head agent that Azure evicts it, the agent
drains its Ray node for preemption with the eviction time as deadline.

`POST /v1/preempt` `{"instance_id", "event_id", "not_before": ISO 8601 with offset}` (cluster token) answers
`{"instance_id", "ray_node_id", "accepted", "rejection_reason", "left_ray", "preempt_deadline"}`:
- the instance's live Ray node is drained with `DRAIN_NODE_REASON_PREEMPTION` (Ray never refuses one) and the
  deadline, unless Ray already drains it with a deadline (the watch repeats its call every poll: it is idempotent);
- `left_ray` is true once the instance has no live Ray node: its raylet exited once idle (Ray ends a drained node
  itself), or it never joined. The watch then acknowledges the event.

The control plane learns of the notice from `/v1/state`, where the node now carries `preempt_deadline` (read back
from Ray's draining nodes, so an agent restart forgets nothing), and the demand watcher wakes it at once naming the
instance (agent_wakeup.py). Standard library only and Python 3.10: this module runs on the head VM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from provisioning.head.agent_boot import INSTANCE_ID_CHARACTERS, MAX_INSTANCE_ID_CHARS

MAX_EVENT_ID_CHARS = 128


class PreemptRefusedError(ValueError):
    """A notice that does not fit the contract; `field_name` names the failing field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


@dataclass(frozen=True)
class PreemptNotice:
    instance_id: str
    event_id: str
    deadline: datetime  # timezone-aware

    @property
    def deadline_ms(self) -> int:
        return int(self.deadline.timestamp() * 1000)


class DrainsNodes(Protocol):
    """What this module needs of agent_gcs.RayGcs."""

    def read_state_payload(self) -> dict[str, object]: ...

    def drain(self, ray_node_id: str, reason: str, message: str, deadline_ms: int = 0) -> tuple[bool, str]: ...


def checked_notice(body: Mapping[str, object]) -> PreemptNotice:
    """The notice of a `POST /v1/preempt` body, or PreemptRefusedError naming the field."""
    instance_id = body.get("instance_id")
    if (
        not isinstance(instance_id, str)
        or not 0 < len(instance_id) <= MAX_INSTANCE_ID_CHARS
        or not set(instance_id) <= INSTANCE_ID_CHARACTERS
    ):
        raise PreemptRefusedError(
            "instance_id", f"instance_id must be 1 to {MAX_INSTANCE_ID_CHARS} letters, digits, '-', '_' or '.'"
        )
    event_id = body.get("event_id", "")
    if not isinstance(event_id, str) or len(event_id) > MAX_EVENT_ID_CHARS or not event_id.isprintable():
        raise PreemptRefusedError("event_id", f"event_id must be a printable string of at most {MAX_EVENT_ID_CHARS}")
    return PreemptNotice(instance_id=instance_id, event_id=event_id, deadline=_checked_deadline(body.get("not_before")))


def _checked_deadline(value: object) -> datetime:
    if not isinstance(value, str):
        raise PreemptRefusedError("not_before", "not_before must be an ISO 8601 time with a UTC offset")
    try:
        # Python 3.10's fromisoformat does not read a "Z" suffix; the offset it stands for is +00:00.
        deadline = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError as error:
        raise PreemptRefusedError("not_before", f"not_before is not an ISO 8601 time: {value!r}") from error
    if deadline.tzinfo is None:
        raise PreemptRefusedError("not_before", f"not_before must carry a UTC offset: {value!r}")
    return deadline


def handle_notice(gcs: DrainsNodes, notice: PreemptNotice) -> dict[str, object]:
    """Drain the instance's live Ray nodes for preemption (once), and say whether any is left in Ray."""
    nodes = [node for node in _nodes(gcs.read_state_payload()) if node.get("instance_id") == notice.instance_id]
    live = [node for node in nodes if node.get("status") != "dead"]
    if not live:
        return {
            "instance_id": notice.instance_id,
            "ray_node_id": str(nodes[0]["ray_node_id"]) if nodes else None,
            "accepted": False,
            "rejection_reason": "Ray has no live node of this instance",
            "left_ray": True,
            "preempt_deadline": None,
        }
    accepted, rejection_reason = True, ""
    for node in live:
        if node.get("preempt_deadline"):
            continue  # Ray already drains it with a deadline: asked before
        message = f"spot preemption notice {notice.event_id}: Azure evicts the VM at {notice.deadline.isoformat()}"
        node_accepted, node_rejection = gcs.drain(str(node["ray_node_id"]), "preemption", message, notice.deadline_ms)
        accepted = accepted and node_accepted
        rejection_reason = rejection_reason or node_rejection
    return {
        "instance_id": notice.instance_id,
        "ray_node_id": str(live[0]["ray_node_id"]),
        "accepted": accepted,
        "rejection_reason": rejection_reason,
        "left_ray": False,
        "preempt_deadline": notice.deadline.isoformat(),
    }


def _nodes(payload: Mapping[str, object]) -> list[Mapping[str, Any]]:
    nodes = payload.get("nodes")
    return [node for node in nodes if isinstance(node, Mapping)] if isinstance(nodes, list) else []
