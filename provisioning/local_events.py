"""Spot eviction notices for local instances: what `LocalCloudProvider.evict(..., notice_s=N)` writes and what each
local node serves in place of Azure's Instance Metadata Service, on 127.0.0.1 only.

Azure announces a spot eviction with a `Preempt` Scheduled Event at least 30 s ahead, and evicts the VM at the event's
`NotBefore` or as soon as the event is acknowledged, whichever comes first (learn.microsoft.com/azure/
virtual-machines/linux/scheduled-events: an event "will move into the started state after it is either approved or
the not before time passes"). Locally:

- `evict(notice_s=N)` writes `<instance id>.preempt.json` beside the instance file (`write_notice`);
- the instance's launcher (local_node.py) serves `GET/POST /metadata/scheduledevents` on a loopback port
  (`ScheduledEventsServer`): the notice as Azure's document, and acknowledgements (`StartRequests`);
- the same preempt watch that cloud-init installs on Azure VMs (provisioning/head/preempt_watch.py) polls it and
  drains the node through the head agent;
- the launcher ends its node at once, as an evicted VM ends, when the event is acknowledged or NotBefore has passed
  (`eviction_due`).

The document's shape is Azure's (api-version 2020-07-01): `{"DocumentIncarnation", "Events": [{"EventId",
"EventType": "Preempt", "ResourceType": "VirtualMachine", "Resources": [VM name], "EventStatus": "Scheduled",
"NotBefore": RFC 1123, "Description", "EventSource": "Platform", "DurationInSeconds"}]}`; requests without the header
`Metadata: true` are refused with 400, as IMDS refuses them. A local VM is named after its instance id.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
SCHEDULED_EVENTS_PATH = "/metadata/scheduledevents"
API_VERSION = "2020-07-01"
MAX_BODY_BYTES = 64 * 1024
UTC = timezone(timedelta(0))


@dataclass(frozen=True)
class PreemptNotice:
    """One eviction notice of a local instance, as `evict` wrote it."""

    event_id: str
    not_before: datetime  # timezone-aware: when the instance is evicted at the latest
    noticed_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "not_before": self.not_before.isoformat(),
            "noticed_at": self.noticed_at.isoformat(),
        }

    @classmethod
    def from_json(cls, content: Mapping[str, Any]) -> PreemptNotice:
        return cls(
            event_id=str(content["event_id"]),
            not_before=datetime.fromisoformat(str(content["not_before"])),
            noticed_at=datetime.fromisoformat(str(content["noticed_at"])),
        )

    def as_scheduled_event(self, vm_name: str) -> dict[str, Any]:
        return {
            "EventId": self.event_id,
            "EventType": "Preempt",
            "ResourceType": "VirtualMachine",
            "Resources": [vm_name],
            "EventStatus": "Scheduled",
            "NotBefore": email.utils.format_datetime(self.not_before.astimezone(UTC), usegmt=True),
            "Description": "Virtual machine is being preempted (local provider).",
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        }


def notice_path(instances_dir: Path, instance_id: str) -> Path:
    return instances_dir / f"{instance_id}.preempt.json"


def write_notice(instances_dir: Path, instance_id: str, notice_s: float, now: datetime | None = None) -> PreemptNotice:
    """Announce the instance's eviction `notice_s` from now; an instance already given notice keeps its notice."""
    existing = read_notice(instances_dir, instance_id)
    if existing is not None:
        return existing
    noticed_at = now or datetime.now(UTC)
    # NotBefore is RFC 1123, whole seconds: rounded up, so the notice is never shorter than asked.
    not_before = noticed_at + timedelta(seconds=notice_s)
    if not_before.microsecond:
        not_before = not_before.replace(microsecond=0) + timedelta(seconds=1)
    notice = PreemptNotice(event_id=str(uuid.uuid4()), not_before=not_before, noticed_at=noticed_at)
    path = notice_path(instances_dir, instance_id)
    descriptor, partial_name = tempfile.mkstemp(dir=instances_dir, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "w") as partial_file:
            json.dump(notice.to_json(), partial_file)
        os.replace(partial_name, path)
    except BaseException:
        Path(partial_name).unlink(missing_ok=True)
        raise
    return notice


def read_notice(instances_dir: Path, instance_id: str) -> PreemptNotice | None:
    try:
        content = json.loads(notice_path(instances_dir, instance_id).read_text())
    except FileNotFoundError:
        return None
    return PreemptNotice.from_json(content)


def eviction_due(notice: PreemptNotice | None, acknowledged: bool, now: datetime) -> bool:
    """Azure's rule: the eviction starts once the event is approved or its NotBefore has passed."""
    return notice is not None and (acknowledged or now >= notice.not_before)


# --------------------------------------------------------------------------------------------
# The loopback Scheduled Events endpoint of one local node
# --------------------------------------------------------------------------------------------


class ScheduledEventsServer(ThreadingHTTPServer):
    """Scheduled Events for one local VM, served on 127.0.0.1 from its notice file."""

    daemon_threads = True

    def __init__(self, instances_dir: Path, instance_id: str) -> None:
        super().__init__((LOOPBACK, 0), _ScheduledEventsHandler)
        self.instances_dir = instances_dir
        self.instance_id = instance_id
        self.acknowledged = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_port}{SCHEDULED_EVENTS_PATH}?api-version={API_VERSION}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.shutdown()
        self.server_close()

    def notice(self) -> PreemptNotice | None:
        return read_notice(self.instances_dir, self.instance_id)

    def document(self) -> dict[str, Any]:
        notice = self.notice()
        events = [] if notice is None else [notice.as_scheduled_event(self.instance_id)]
        # Azure's DocumentIncarnation changes whenever the events do: one notice, one step.
        return {"DocumentIncarnation": len(events) + (1 if self.acknowledged.is_set() else 0), "Events": events}

    def acknowledge(self, event_ids: list[str]) -> bool:
        notice = self.notice()
        if notice is None or notice.event_id not in event_ids:
            return False
        self.acknowledged.set()
        return True


class _ScheduledEventsHandler(BaseHTTPRequestHandler):
    server: ScheduledEventsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self._refused():
            return
        self._answer(HTTPStatus.OK, self.server.document())

    def do_POST(self) -> None:
        if self._refused():
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            event_ids = [str(request["EventId"]) for request in body["StartRequests"]]
        except (ValueError, KeyError, TypeError):
            self._answer(HTTPStatus.BAD_REQUEST, {"error": 'the body must be {"StartRequests": [{"EventId": ...}]}'})
            return
        if not self.server.acknowledge(event_ids):
            self._answer(HTTPStatus.BAD_REQUEST, {"error": f"no such event: {event_ids}"})
            return
        self._answer(HTTPStatus.OK, {})

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the watch polls often."""

    def _refused(self) -> bool:
        if self.path.partition("?")[0] != SCHEDULED_EVENTS_PATH:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"{self.path} is not served here"})
            return True
        if self.headers.get("Metadata", "").lower() != "true":
            self._answer(HTTPStatus.BAD_REQUEST, {"error": "Required metadata header not specified"})
            return True
        return False

    def _answer(self, status: HTTPStatus, body: object) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)
