"""The preemption watch: a small unit on every VM of a cluster that turns Azure's spot eviction notice into a Ray drain.

    python3 -m provisioning.head.preempt_watch --scheduled-events-url URL --vm-name NAME --instance-id ID
        --agent-url http://HEAD:8270 [--token-file PATH] [--poll-interval-s 1] [--ack-margin-s 5]

(the token file defaults to `$CREDENTIALS_DIRECTORY/cluster-token`, where systemd's `LoadCredential=` puts it). It
polls the VM's Scheduled Events document and, when a `Preempt` event names this VM:

1. tells the head agent, `POST {agent}/v1/preempt` `{"instance_id", "event_id", "not_before"}` with the cluster
   token; the agent asks Ray to drain the node (reason preemption, deadline `NotBefore`) and wakes the control plane
   naming the instance, which launches the replacement at once. The call is repeated every poll: it is idempotent,
   and its answer says whether the node has left Ray (drained: its raylet exited once idle);
2. acknowledges the event (`StartRequests`) once the node has left Ray, or when `NotBefore` is `--ack-margin-s`
   away, whichever comes first. Acknowledging lets Azure evict sooner, so it waits for the drain to finish: the
   tasks still running keep all of the notice period. Whatever happens to step 1 (head unreachable), the event is
   acknowledged near the deadline: Azure evicts at `NotBefore` anyway.

Azure facts relied on (learn.microsoft.com/azure/virtual-machines/linux/scheduled-events, api-version 2020-07-01):
- `GET http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01` with the header `Metadata: true`
  (requests without it are refused; IMDS must be reached without a proxy) answers
  `{"DocumentIncarnation": int, "Events": [{"EventId", "EventType": "Reboot" | "Redeploy" | "Freeze" | "Preempt" |
  "Terminate", "ResourceType": "VirtualMachine", "Resources": [VM names], "EventStatus": "Scheduled" | "Started",
  "NotBefore": RFC 1123 time such as "Mon, 19 Sep 2016 18:29:47 GMT" (blank once started), "Description",
  "EventSource": "Platform" | "User", "DurationInSeconds": int}]}`;
- a `Preempt` (spot eviction) is scheduled at least 30 seconds ahead;
- `POST` to the same URL, same header, `{"StartRequests": [{"EventId": ...}]}` approves an event: it "allows the
  event to proceed for all Resources in the event", so only an event naming this VM alone is acknowledged;
- the first request after a VM starts turns Scheduled Events on and may take up to two minutes to answer.

The URL is an argument with no default: cloud-init passes the metadata address on Azure, the local provider a
loopback emulator (provisioning/local_events.py), and tests a loopback fake; nothing else is ever contacted.

Standard library only, Python 3.10 (the python3 of Ubuntu 22.04): this module is shipped alone to every VM, head and
workers, by provisioning/azure/cloud_init.py; it imports nothing of this project. No identity: the only credential
is the cluster token the VM already holds for Ray (docs/decisions/preemption-notice.md).
"""

from __future__ import annotations

import argparse
import email.utils
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger("provisioning.head.preempt_watch")

PREEMPT_EVENT_TYPE = "Preempt"
SCHEDULED = "Scheduled"
# Azure schedules a Preempt at least 30 s ahead; a Started event has a blank NotBefore: it is happening now.
MIN_PREEMPT_NOTICE_S = 30.0
# The first Scheduled Events request of a VM may take up to two minutes (Azure turns the service on then); later ones
# are answered at once, and a poll stuck longer would eat into the 30 s notice.
FIRST_SCHEDULED_EVENTS_TIMEOUT_S = 120.0
SCHEDULED_EVENTS_TIMEOUT_S = 10.0
AGENT_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024
EXIT_USAGE = 2
# datetime.UTC came with Python 3.11; this module runs on 3.10.
UTC = timezone(timedelta(0))


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchConfig:
    scheduled_events_url: str
    vm_name: str  # as Azure names the VM in an event's Resources
    instance_id: str  # as Ray knows the node (RAY_CLOUD_INSTANCE_ID) and the control plane the instance
    agent_url: str  # the head agent's base URL
    token: str
    poll_interval_s: float
    ack_margin_s: float


class ConfigError(Exception):
    pass


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> WatchConfig:
    parser = argparse.ArgumentParser(
        prog="python3 -m provisioning.head.preempt_watch", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--scheduled-events-url", required=True, help="the Scheduled Events document to poll")
    parser.add_argument("--vm-name", required=True, help="this VM's name, as Scheduled Events lists it")
    parser.add_argument("--instance-id", required=True, help="this node's instance id (RAY_CLOUD_INSTANCE_ID)")
    parser.add_argument("--agent-url", required=True, help="the head agent, e.g. http://10.0.0.4:8270")
    parser.add_argument("--token-file", help="the cluster token (default: $CREDENTIALS_DIRECTORY/cluster-token)")
    # Azure recommends polling often: the notice is 30 s, and every second polled late is a second of drain lost.
    parser.add_argument("--poll-interval-s", type=float, default=1.0)
    parser.add_argument("--ack-margin-s", type=float, default=5.0, help="acknowledge this long before NotBefore")
    args = parser.parse_args(argv)
    if args.poll_interval_s <= 0 or args.ack_margin_s < 0:
        raise ConfigError("--poll-interval-s must be > 0 and --ack-margin-s >= 0")
    for name, url in (("--scheduled-events-url", args.scheduled_events_url), ("--agent-url", args.agent_url)):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL, not {url!r}")
    if not args.vm_name.strip() or not args.instance_id.strip():
        raise ConfigError("--vm-name and --instance-id must not be empty")
    return WatchConfig(
        scheduled_events_url=args.scheduled_events_url,
        vm_name=args.vm_name.strip(),
        instance_id=args.instance_id.strip(),
        agent_url=args.agent_url.rstrip("/"),
        token=_read_token(args.token_file, environ),
        poll_interval_s=args.poll_interval_s,
        ack_margin_s=args.ack_margin_s,
    )


def _read_token(token_file: str | None, environ: Mapping[str, str]) -> str:
    if not token_file:
        credentials_directory = environ.get("CREDENTIALS_DIRECTORY", "")
        if not credentials_directory:
            raise ConfigError("no cluster token: pass --token-file PATH or run under systemd's LoadCredential=")
        token_file = str(Path(credentials_directory) / "cluster-token")
    try:
        token = Path(token_file).read_text().strip()
    except OSError as error:
        raise ConfigError(f"cannot read the token file {token_file}: {error.strerror}") from error
    if not token:
        raise ConfigError(f"the token file {token_file} is empty")
    return token


# --------------------------------------------------------------------------------------------
# The Scheduled Events document (pure)
# --------------------------------------------------------------------------------------------


class DocumentError(ValueError):
    """A Scheduled Events document this unit cannot read."""


@dataclass(frozen=True)
class ScheduledEvent:
    event_id: str
    event_type: str
    resources: tuple[str, ...]
    event_status: str
    not_before: str  # as Azure wrote it: RFC 1123, or "" once started


def parse_document(document: object) -> list[ScheduledEvent]:
    """The events of a Scheduled Events document; DocumentError names what is wrong with it."""
    if not isinstance(document, dict) or not isinstance(document.get("Events"), list):
        raise DocumentError("the document is not an object with an Events list")
    events = []
    for index, raw in enumerate(document["Events"]):
        if not isinstance(raw, dict):
            raise DocumentError(f"Events[{index}] is not an object")
        event_id, resources = raw.get("EventId"), raw.get("Resources", [])
        if not isinstance(event_id, str) or not event_id:
            raise DocumentError(f"Events[{index}].EventId is not a non-empty string")
        if not isinstance(resources, list) or not all(isinstance(name, str) for name in resources):
            raise DocumentError(f"Events[{index}].Resources is not a list of names")
        events.append(
            ScheduledEvent(
                event_id=event_id,
                event_type=str(raw.get("EventType", "")),
                resources=tuple(resources),
                event_status=str(raw.get("EventStatus", "")),
                not_before=str(raw.get("NotBefore") or ""),
            )
        )
    return events


def preemption_of(events: Sequence[ScheduledEvent], vm_name: str) -> ScheduledEvent | None:
    """The Preempt event that names this VM, if any (Azure's VM names are case-insensitive)."""
    for event in events:
        if event.event_type == PREEMPT_EVENT_TYPE and vm_name.lower() in (name.lower() for name in event.resources):
            return event
    return None


def preempt_deadline(event: ScheduledEvent, noticed_at: datetime) -> datetime:
    """When Azure evicts the VM: NotBefore; when it is blank (the event started) or unreadable, the shortest notice
    Azure gives counted from when the event was first seen, which is the latest the VM can still be running."""
    if event.not_before:
        try:
            parsed = email.utils.parsedate_to_datetime(event.not_before)
        except (TypeError, ValueError):
            logger.warning("unreadable NotBefore %r of event %s", event.not_before, event.event_id)
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return noticed_at + timedelta(seconds=MIN_PREEMPT_NOTICE_S if event.event_status == SCHEDULED else 0)


def may_acknowledge(event: ScheduledEvent, vm_name: str) -> bool:
    """Only a Scheduled event naming this VM alone: acknowledging lets the event proceed for every VM it names."""
    return event.event_status == SCHEDULED and [name.lower() for name in event.resources] == [vm_name.lower()]


def should_acknowledge(left_ray: bool, deadline: datetime, now: datetime, ack_margin_s: float) -> bool:
    return left_ray or now >= deadline - timedelta(seconds=ack_margin_s)


# --------------------------------------------------------------------------------------------
# Talking to Scheduled Events and to the head agent
# --------------------------------------------------------------------------------------------


class CallFailedError(Exception):
    pass


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would replay the Authorization header to wherever a redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxy (IMDS must be reached directly, and the head agent is inside the cluster's network), no redirect.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirects())


def _call_json(request: urllib.request.Request, timeout_s: float) -> object:
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except (urllib.error.URLError, OSError) as error:  # HTTPError (any status >= 300) is a URLError
        raise CallFailedError(f"{request.get_method()} {request.full_url} failed: {error}") from error
    if len(body) > MAX_DOCUMENT_BYTES:
        raise CallFailedError(f"{request.full_url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise CallFailedError(f"{request.full_url} did not answer JSON: {error}") from error


class ScheduledEventsClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self._answered = False

    def events(self) -> list[ScheduledEvent]:
        request = urllib.request.Request(self.url, headers={"Metadata": "true"})  # noqa: S310 -- http(s) checked
        timeout_s = SCHEDULED_EVENTS_TIMEOUT_S if self._answered else FIRST_SCHEDULED_EVENTS_TIMEOUT_S
        try:
            events = parse_document(_call_json(request, timeout_s))
        except DocumentError as error:
            raise CallFailedError(f"{self.url}: {error}") from error
        self._answered = True
        return events

    def acknowledge(self, event_id: str) -> None:
        request = urllib.request.Request(  # noqa: S310 -- http(s) checked
            self.url,
            data=json.dumps({"StartRequests": [{"EventId": event_id}]}).encode(),
            method="POST",
            headers={"Metadata": "true", "Content-Type": "application/json"},
        )
        _call_json(request, SCHEDULED_EVENTS_TIMEOUT_S)


@dataclass(frozen=True)
class AgentAnswer:
    accepted: bool  # Ray took the drain (a preemption drain is never refused by a live node)
    left_ray: bool  # the node is no longer alive in Ray: drained, or never joined
    detail: str


class HeadAgentClient:
    def __init__(self, agent_url: str, token: str) -> None:
        self.url = f"{agent_url}/v1/preempt"
        self._token = token

    def report(self, instance_id: str, event_id: str, deadline: datetime) -> AgentAnswer:
        body = {"instance_id": instance_id, "event_id": event_id, "not_before": deadline.isoformat()}
        request = urllib.request.Request(  # noqa: S310 -- http(s) checked
            self.url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        answer = _call_json(request, AGENT_TIMEOUT_S)
        if not isinstance(answer, dict):
            raise CallFailedError(f"{self.url} answered {answer!r}, not an object")
        return AgentAnswer(
            accepted=bool(answer.get("accepted")),
            left_ray=bool(answer.get("left_ray")),
            detail=str(answer.get("rejection_reason") or ""),
        )


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class _Notice:
    """What this unit has done about one Preempt event."""

    event: ScheduledEvent
    deadline: datetime
    reported: bool = False
    left_ray: bool = False
    acknowledged: bool = False


class PreemptWatch:
    def __init__(
        self,
        config: WatchConfig,
        scheduled_events: ScheduledEventsClient,
        agent: HeadAgentClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._scheduled_events = scheduled_events
        self._agent = agent
        self._clock = clock
        self._notices: dict[str, _Notice] = {}
        self._last_failure = ""

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once()
            stop.wait(self._config.poll_interval_s)

    def poll_once(self) -> None:
        try:
            event = preemption_of(self._scheduled_events.events(), self._config.vm_name)
        except CallFailedError as error:
            self._log_failure_once(str(error))
            return
        if event is None:
            return
        notice = self._notices.get(event.event_id)
        if notice is None:
            notice = _Notice(event=event, deadline=preempt_deadline(event, self._clock()))
            self._notices[event.event_id] = notice
            logger.warning(
                "preemption notice %s for VM %s: evicted at %s", event.event_id, self._config.vm_name, notice.deadline
            )
        if notice.acknowledged:
            return  # done: the VM goes at Azure's pace now
        if not notice.left_ray:
            self._report(notice)
        if should_acknowledge(notice.left_ray, notice.deadline, self._clock(), self._config.ack_margin_s):
            self._acknowledge(notice)

    def _report(self, notice: _Notice) -> None:
        try:
            answer = self._agent.report(self._config.instance_id, notice.event.event_id, notice.deadline)
        except CallFailedError as error:
            self._log_failure_once(f"drain not asked yet: {error}")
            return
        if not notice.reported:
            logger.info(
                "the head agent asked Ray to drain %s: accepted=%s %s",
                self._config.instance_id,
                answer.accepted,
                answer.detail,
            )
            notice.reported = True
        if answer.left_ray:
            logger.info("node %s has left Ray: drained", self._config.instance_id)
            notice.left_ray = True

    def _acknowledge(self, notice: _Notice) -> None:
        if not may_acknowledge(notice.event, self._config.vm_name):
            logger.info(
                "event %s is %s for %s: not acknowledged (Azure evicts at NotBefore)",
                notice.event.event_id,
                notice.event.event_status,
                list(notice.event.resources),
            )
            notice.acknowledged = True
            return
        try:
            self._scheduled_events.acknowledge(notice.event.event_id)
        except CallFailedError as error:
            self._log_failure_once(f"acknowledging {notice.event.event_id}: {error}")
            return
        notice.acknowledged = True
        reason = "the node has left Ray" if notice.left_ray else "the deadline is near"
        logger.warning("acknowledged preemption %s (%s)", notice.event.event_id, reason)

    def _log_failure_once(self, message: str) -> None:
        if message != self._last_failure:  # once per distinct failure, not once a second
            logger.warning("%s", message)
            self._last_failure = message


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as error:
        print(f"preempt watch: {error}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    watch = PreemptWatch(
        config, ScheduledEventsClient(config.scheduled_events_url), HeadAgentClient(config.agent_url, config.token)
    )
    logger.info("watching %s for VM %s (instance %s)", config.scheduled_events_url, config.vm_name, config.instance_id)
    watch.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
