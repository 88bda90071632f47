"""The preempt watch (provisioning/head/preempt_watch.py): reading Scheduled Events, when it drains and acknowledges.

The HTTP clients meet a real loopback Scheduled Events server and the real head agent in
tests/integration/test_agent_py310.py (on Python 3.10) and tests/e2e/test_preemption.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from provisioning.head.preempt_watch import (
    MIN_PREEMPT_NOTICE_S,
    AgentAnswer,
    CallFailedError,
    ConfigError,
    DocumentError,
    PreemptWatch,
    ScheduledEvent,
    WatchConfig,
    may_acknowledge,
    parse_config,
    parse_document,
    preempt_deadline,
    preemption_of,
    should_acknowledge,
)

VM = "ray-demo-worker0001"
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
# Azure's example document (learn.microsoft.com/azure/virtual-machines/linux/scheduled-events), for our VM.
AZURE_DOCUMENT: dict[str, Any] = {
    "DocumentIncarnation": 2,
    "Events": [
        {
            "EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123",
            "EventStatus": "Scheduled",
            "EventType": "Preempt",
            "ResourceType": "VirtualMachine",
            "Resources": [VM],
            "NotBefore": "Mon, 30 Nov 2026 12:00:30 GMT",
            "Description": "Virtual machine is being preempted.",
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        }
    ],
}


def event(**changes: Any) -> ScheduledEvent:
    values: dict[str, Any] = {
        "event_id": "e1",
        "event_type": "Preempt",
        "resources": (VM,),
        "event_status": "Scheduled",
        "not_before": "Mon, 30 Nov 2026 12:00:30 GMT",
    }
    values.update(changes)
    return ScheduledEvent(**values)


# --------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------


def test_azures_document_reads_as_one_preempt_event_for_the_vm() -> None:
    assert parse_document(AZURE_DOCUMENT) == [
        ScheduledEvent(
            event_id="C7061BAC-AFDC-4513-B24B-AA5F13A16123",
            event_type="Preempt",
            resources=(VM,),
            event_status="Scheduled",
            not_before="Mon, 30 Nov 2026 12:00:30 GMT",
        )
    ]


def test_a_document_without_events_has_none() -> None:
    assert parse_document({"DocumentIncarnation": 0, "Events": []}) == []


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ([], "not an object with an Events list"),
        ({"DocumentIncarnation": 1}, "not an object with an Events list"),
        ({"Events": ["x"]}, "Events[0] is not an object"),
        ({"Events": [{"EventType": "Preempt"}]}, "Events[0].EventId"),
        ({"Events": [{"EventId": "e", "Resources": "vm"}]}, "Events[0].Resources"),
        ({"Events": [{"EventId": "e", "Resources": [1]}]}, "Events[0].Resources"),
    ],
)
def test_a_malformed_document_is_refused_naming_what_is_wrong(document: object, complaint: str) -> None:
    with pytest.raises(DocumentError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        parse_document(document)


@pytest.mark.parametrize(
    ("events", "expected_id"),
    [
        ([event()], "e1"),
        ([event(resources=(VM.upper(),))], "e1"),  # Azure's names are case-insensitive
        ([event(event_type="Reboot")], None),
        ([event(event_type="Terminate")], None),
        ([event(resources=("ray-demo-worker0002",))], None),  # another VM of the availability set
        ([event(event_type="Freeze"), event(event_id="e2", resources=("other", VM))], "e2"),
        ([], None),
    ],
)
def test_only_a_preempt_naming_this_vm_is_its_preemption(events: list[ScheduledEvent], expected_id: str | None) -> None:
    found = preemption_of(events, VM)
    assert (found.event_id if found else None) == expected_id


@pytest.mark.parametrize(
    ("scheduled", "expected"),
    [
        (event(), datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)),
        (event(not_before="Mon, 30 Nov 2026 13:00:30 +0100"), datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)),
        (event(not_before=""), NOW + timedelta(seconds=MIN_PREEMPT_NOTICE_S)),
        (event(not_before="soon"), NOW + timedelta(seconds=MIN_PREEMPT_NOTICE_S)),
        (event(not_before="", event_status="Started"), NOW),  # happening now
    ],
)
def test_the_deadline_is_not_before_or_the_shortest_notice(scheduled: ScheduledEvent, expected: datetime) -> None:
    assert preempt_deadline(scheduled, noticed_at=NOW) == expected


@pytest.mark.parametrize(
    ("scheduled", "expected"),
    [
        (event(), True),
        (event(resources=(VM.upper(),)), True),
        (event(event_status="Started"), False),  # nothing left to approve
        (event(resources=(VM, "ray-demo-worker0002")), False),  # approving would hurry the other VM's eviction
    ],
)
def test_only_a_scheduled_event_naming_this_vm_alone_is_acknowledged(scheduled: ScheduledEvent, expected: bool) -> None:
    assert may_acknowledge(scheduled, VM) is expected


@pytest.mark.parametrize(
    ("left_ray", "seconds_before_deadline", "expected"),
    [
        (True, 25.0, True),  # drained: nothing is lost by letting Azure go now
        (False, 25.0, False),  # tasks still run: keep the notice period for them
        (False, 5.0, True),  # the margin is reached
        (False, -1.0, True),
    ],
)
def test_acknowledged_once_drained_or_near_the_deadline(
    left_ray: bool, seconds_before_deadline: float, expected: bool
) -> None:
    deadline = NOW + timedelta(seconds=seconds_before_deadline)
    assert should_acknowledge(left_ray, deadline, NOW, ack_margin_s=5.0) is expected


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

BASE_ARGS = ["--scheduled-events-url", "http://127.0.0.1:9/se", "--vm-name", VM, "--instance-id", "worker0001"]


def test_the_token_comes_from_systemds_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "cluster-token").write_text("tok\n")
    config = parse_config(
        [*BASE_ARGS, "--agent-url", "http://10.0.0.4:8270/"], {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert (config.token, config.agent_url, config.poll_interval_s, config.ack_margin_s) == (
        "tok",
        "http://10.0.0.4:8270",
        1.0,
        5.0,
    )


@pytest.mark.parametrize(
    ("extra", "environ", "complaint"),
    [
        (["--agent-url", "http://h:1"], {}, "no cluster token"),
        (["--agent-url", "http://h:1", "--token-file", "/nonexistent/token"], {}, "cannot read the token file"),
        (["--agent-url", "h:1", "--token-file", "{token}"], {}, "--agent-url must be an http"),
        (["--agent-url", "http://h:1", "--token-file", "{token}", "--poll-interval-s", "0"], {}, "poll-interval"),
        (["--agent-url", "http://h:1", "--token-file", "{empty}"], {}, "is empty"),
    ],
)
def test_a_config_that_cannot_work_is_refused(
    tmp_path: Path, extra: list[str], environ: dict[str, str], complaint: str
) -> None:
    (tmp_path / "token").write_text("tok")
    (tmp_path / "empty").write_text("\n")
    args = [arg.format(token=tmp_path / "token", empty=tmp_path / "empty") for arg in extra]
    with pytest.raises(ConfigError, match=complaint):
        parse_config([*BASE_ARGS, *args], environ)


def test_the_scheduled_events_url_has_no_default() -> None:
    with pytest.raises(SystemExit):
        parse_config(["--vm-name", VM, "--instance-id", "w", "--agent-url", "http://h:1"], {"AGENT_TOKEN": "t"})


# --------------------------------------------------------------------------------------------
# The loop, with hand-written fakes of the two HTTP clients
# --------------------------------------------------------------------------------------------


@dataclass
class FakeScheduledEvents:
    events_now: list[ScheduledEvent] = field(default_factory=list)
    failing: bool = False
    acknowledged: list[str] = field(default_factory=list)

    def events(self) -> list[ScheduledEvent]:
        if self.failing:
            raise CallFailedError("IMDS did not answer")
        return list(self.events_now)

    def acknowledge(self, event_id: str) -> None:
        self.acknowledged.append(event_id)


@dataclass
class FakeAgent:
    left_ray: bool = False
    failing: bool = False
    reports: list[tuple[str, str, datetime]] = field(default_factory=list)

    def report(self, instance_id: str, event_id: str, deadline: datetime) -> AgentAnswer:
        if self.failing:
            raise CallFailedError("head agent unreachable")
        self.reports.append((instance_id, event_id, deadline))
        return AgentAnswer(accepted=True, left_ray=self.left_ray, detail="")


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def watch_with(scheduled_events: FakeScheduledEvents, agent: FakeAgent, clock: Clock) -> PreemptWatch:
    config = WatchConfig(
        scheduled_events_url="http://127.0.0.1:9/se",
        vm_name=VM,
        instance_id="worker0001",
        agent_url="http://127.0.0.1:8",
        token="t",
        poll_interval_s=1.0,
        ack_margin_s=5.0,
    )
    return PreemptWatch(config, scheduled_events, agent, clock)  # type: ignore[arg-type]


def test_no_preemption_no_call_to_the_agent() -> None:
    scheduled_events, agent = FakeScheduledEvents([event(event_type="Reboot")]), FakeAgent()
    watch_with(scheduled_events, agent, Clock()).poll_once()
    assert (agent.reports, scheduled_events.acknowledged) == ([], [])


def test_a_notice_is_reported_with_its_deadline_and_acknowledged_once_the_node_left_ray() -> None:
    scheduled_events, agent, clock = FakeScheduledEvents([event()]), FakeAgent(), Clock()
    watch = watch_with(scheduled_events, agent, clock)
    watch.poll_once()
    assert agent.reports == [("worker0001", "e1", datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC))]
    assert scheduled_events.acknowledged == []  # the node still runs tasks: they keep the notice period
    clock.now += timedelta(seconds=3)
    agent.left_ray = True
    watch.poll_once()
    assert scheduled_events.acknowledged == ["e1"]
    watch.poll_once()
    assert scheduled_events.acknowledged == ["e1"]  # once
    assert len(agent.reports) == 2


def test_a_busy_node_is_acknowledged_when_the_deadline_is_near() -> None:
    scheduled_events, agent, clock = FakeScheduledEvents([event()]), FakeAgent(), Clock()
    watch = watch_with(scheduled_events, agent, clock)
    while not scheduled_events.acknowledged:
        watch.poll_once()
        clock.now += timedelta(seconds=1)
    # Polled each second from 12:00:00; NotBefore 12:00:30 less the 5 s margin.
    assert clock.now - timedelta(seconds=1) == datetime(2026, 11, 30, 12, 0, 25, tzinfo=UTC)
    assert len(agent.reports) == 26  # reported every poll until then (the call is idempotent)


def test_an_unreachable_head_agent_still_lets_the_event_be_acknowledged_near_the_deadline() -> None:
    scheduled_events, agent, clock = FakeScheduledEvents([event()]), FakeAgent(failing=True), Clock()
    watch = watch_with(scheduled_events, agent, clock)
    watch.poll_once()
    assert scheduled_events.acknowledged == []
    clock.now += timedelta(seconds=26)
    watch.poll_once()
    assert scheduled_events.acknowledged == ["e1"]


def test_an_event_shared_with_another_vm_is_drained_but_never_acknowledged() -> None:
    shared = event(resources=(VM, "ray-demo-worker0002"))
    scheduled_events, agent, clock = FakeScheduledEvents([shared]), FakeAgent(left_ray=True), Clock()
    watch_with(scheduled_events, agent, clock).poll_once()
    assert len(agent.reports) == 1
    assert scheduled_events.acknowledged == []


def test_scheduled_events_failing_is_survived() -> None:
    scheduled_events, agent = FakeScheduledEvents(failing=True), FakeAgent()
    watch = watch_with(scheduled_events, agent, Clock())
    watch.poll_once()
    scheduled_events.failing = False
    scheduled_events.events_now = [event()]
    watch.poll_once()
    assert len(agent.reports) == 1
