"""The head agent's pure parts: what wakes the control plane, where wake-ups go, gang strategies, its token, the
boot phases it keeps."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from autoscaler.model import GangStrategy
from provisioning.head.agent import ConfigError, enable_ray_token_auth, parse_config
from provisioning.head.agent_boot import MAX_DETAIL_CHARS, BootPhaseBook, BootPhaseRefusedError, checked_report
from provisioning.head.agent_gcs import gang_strategy, is_ray_node_id
from provisioning.head.agent_preempt import PreemptNotice, PreemptRefusedError, checked_notice, handle_notice
from provisioning.head.agent_wakeup import DemandSummary, DemandWatcher, describe_change, reconcile_url, summarize

CPU1 = (("CPU", 1.0),)
GPU1 = (("GPU", 1.0),)
NODE_A = "a" * 56


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        pytest.param(DemandSummary(), DemandSummary(), None, id="nothing"),
        pytest.param(
            DemandSummary(pending_bundles=3, shapes=frozenset({CPU1})),
            DemandSummary(pending_bundles=3, shapes=frozenset({CPU1})),
            None,
            id="same-demand",
        ),
        pytest.param(
            DemandSummary(pending_bundles=5, shapes=frozenset({CPU1})),
            DemandSummary(pending_bundles=2, shapes=frozenset({CPU1})),
            None,
            id="demand-shrank",
        ),
        pytest.param(
            DemandSummary(pending_bundles=2, shapes=frozenset({CPU1})),
            DemandSummary(pending_bundles=5, shapes=frozenset({CPU1})),
            "pending bundles grew from 2 to 5",
            id="demand-grew",
        ),
        pytest.param(
            DemandSummary(pending_bundles=2, shapes=frozenset({CPU1})),
            DemandSummary(pending_bundles=2, shapes=frozenset({CPU1, GPU1})),
            "new shapes {GPU: 1}",
            id="new-shape-same-count",
        ),
        pytest.param(
            DemandSummary(constraint_bundles=1),
            DemandSummary(constraint_bundles=4),
            "requested resources grew from 1 to 4 bundles",
            id="constraint-grew",
        ),
        pytest.param(
            DemandSummary(),
            DemandSummary(dead_nodes={NODE_A: "instance-7"}),
            "nodes died: aaaaaaaaaaaa (instance-7)",
            id="node-died",
        ),
        pytest.param(
            DemandSummary(dead_nodes={NODE_A: "instance-7"}),
            DemandSummary(dead_nodes={NODE_A: "instance-7"}),
            None,
            id="node-still-dead",
        ),
        pytest.param(
            DemandSummary(),
            DemandSummary(pending_bundles=1, shapes=frozenset({CPU1})),
            "pending bundles grew from 0 to 1; new shapes {CPU: 1}",
            id="reasons-joined",
        ),
        pytest.param(
            DemandSummary(),
            DemandSummary(preempted_nodes={NODE_A: ("instance-7", "2026-11-30T12:00:30.000+00:00")}),
            "nodes preempted: aaaaaaaaaaaa (instance-7) by 2026-11-30T12:00:30.000+00:00",
            id="node-preempted",
        ),
        pytest.param(
            DemandSummary(preempted_nodes={NODE_A: ("instance-7", "2026-11-30T12:00:30.000+00:00")}),
            DemandSummary(preempted_nodes={NODE_A: ("instance-7", "2026-11-30T12:00:30.000+00:00")}),
            None,
            id="node-still-preempted",
        ),
    ],
)
def test_describe_change_names_what_grew(previous: DemandSummary, current: DemandSummary, expected: str | None) -> None:
    assert describe_change(previous, current) == expected


def test_summarize_counts_every_gang_bundle_and_each_dead_node() -> None:
    payload = {
        "nodes": [
            {"ray_node_id": NODE_A, "instance_id": "instance-7", "status": "dead"},
            {"ray_node_id": "b" * 56, "instance_id": "", "status": "idle"},
        ],
        "pending": [{"shape": {"CPU": 1}, "count": 3}],
        "gangs": [{"strategy": "PACK", "bundles": [{"GPU": 1}, {"GPU": 1}], "count": 2}],
        "constraints": [{"shape": {"CPU": 1}, "count": 4}],
    }
    assert summarize(payload) == DemandSummary(
        pending_bundles=7, constraint_bundles=4, shapes=frozenset({CPU1, GPU1}), dead_nodes={NODE_A: "instance-7"}
    )


@pytest.mark.parametrize(
    ("control_plane_url", "cluster_name", "expected"),
    [
        ("http://127.0.0.1:7071", "demo", "http://127.0.0.1:7071/api/clusters/demo/reconcile"),
        ("http://127.0.0.1:7071/", "demo", "http://127.0.0.1:7071/api/clusters/demo/reconcile"),
        ("https://fn.example/base", "a b/c", "https://fn.example/base/api/clusters/a%20b%2Fc/reconcile"),
        ("https://fn.example?code=k3y", "demo", "https://fn.example/api/clusters/demo/reconcile?code=k3y"),
    ],
)
def test_reconcile_url_appends_the_cluster_route(control_plane_url: str, cluster_name: str, expected: str) -> None:
    assert reconcile_url(control_plane_url, cluster_name) == expected


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ("1bbf462e22aadb2a076b597fdac801000000:STRICT_SPREAD|PENDING", GangStrategy.STRICT_SPREAD),
        ("969a6f123a42ac1d8efddab2caa001000000:PACK|PENDING", GangStrategy.PACK),
        ("969a6f123a42ac1d8efddab2caa001000000:STRICT_PACK|RESCHEDULING", GangStrategy.STRICT_PACK),
        ("969a6f123a42ac1d8efddab2caa001000000:SPREAD|PENDING", GangStrategy.SPREAD),
        ("", GangStrategy.PACK),  # no details and no placement constraints
    ],
)
def test_gang_strategy_is_read_from_the_gcs_details(details: str, expected: GangStrategy) -> None:
    assert gang_strategy(details, []) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ab" * 28, True), ("AB" * 28, True), ("ab" * 27, False), ("zz" * 28, False), ("", False)],
)
def test_is_ray_node_id_wants_56_hex_characters(text: str, expected: bool) -> None:
    assert is_ray_node_id(text) == expected


REQUIRED_ARGS = ["--gcs-address", "127.0.0.1:6379", "--port", "0", "--cluster-name", "demo"]


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    config = parse_config([*REQUIRED_ARGS, "--token-file", str(token_file)], {"AGENT_TOKEN": "ignored"})
    assert config.token == "s3cret"


def test_token_comes_from_agent_token_without_a_file() -> None:
    assert parse_config(REQUIRED_ARGS, {"AGENT_TOKEN": "s3cret"}).token == "s3cret"


@pytest.mark.parametrize(
    ("extra_args", "environ", "message"),
    [
        ([], {}, "no cluster token"),
        ([], {"AGENT_TOKEN": "  "}, "no cluster token"),
        (["--token-file", "/nonexistent/token"], {}, "cannot read --token-file"),
        (["--poll-interval-s", "0"], {"AGENT_TOKEN": "t"}, "--poll-interval-s must be > 0"),
    ],
)
def test_parse_config_refuses_what_cannot_work(extra_args: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config([*REQUIRED_ARGS, *extra_args], environ)


def test_ray_token_auth_uses_the_cluster_token_and_drops_a_token_path() -> None:
    environ = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": "/home/ray/.ray/auth_token", "PATH": "/bin"}
    enable_ray_token_auth("s3cret", environ)
    assert environ == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "s3cret", "PATH": "/bin"}


# --------------------------------------------------------------------------------------------
# Boot phases reported by the VMs
# --------------------------------------------------------------------------------------------


def test_boot_phase_book_keeps_the_last_report_per_instance_with_the_agents_time() -> None:
    book = BootPhaseBook(clock_s=lambda: 1_700_000_000.0)
    book.record("worker-1", "cloud_init_running")
    book.record("worker-1", "ray_started", "ray-node.service active")
    assert book.snapshot() == {
        "worker-1": {"phase": "ray_started", "at": "2023-11-14T22:13:20Z", "detail": "ray-node.service active"}
    }


def test_boot_phase_book_forgets_the_least_recently_reported_instance_beyond_its_capacity() -> None:
    book = BootPhaseBook(capacity=2)
    book.record("first", "cloud_init_running")
    book.record("second", "cloud_init_running")
    book.record("first", "ray_started")  # reported again: now the most recent
    book.record("third", "cloud_init_running")
    assert sorted(book.snapshot()) == ["first", "third"]


@pytest.mark.parametrize(
    ("body", "failing_field"),
    [
        pytest.param({"phase": "ray_started"}, "instance_id", id="no-instance-id"),
        pytest.param({"instance_id": "", "phase": "ray_started"}, "instance_id", id="empty-instance-id"),
        pytest.param({"instance_id": "a b", "phase": "ray_started"}, "instance_id", id="space-in-instance-id"),
        pytest.param({"instance_id": "i" * 65, "phase": "ray_started"}, "instance_id", id="instance-id-too-long"),
        pytest.param({"instance_id": "w1", "phase": "joined"}, "phase", id="phase-not-reportable"),
        pytest.param({"instance_id": "w1"}, "phase", id="no-phase"),
        pytest.param({"instance_id": "w1", "phase": "ray_started", "detail": 3}, "detail", id="detail-not-text"),
    ],
)
def test_boot_phase_report_refuses_what_does_not_fit(body: dict[str, object], failing_field: str) -> None:
    with pytest.raises(BootPhaseRefusedError) as refused:
        checked_report(body)
    assert refused.value.field_name == failing_field


def test_boot_phase_report_keeps_a_long_detail_cut_to_its_limit() -> None:
    _, _, detail = checked_report({"instance_id": "w1", "phase": "boot_failed", "detail": "x" * 5000})
    assert detail == "x" * MAX_DETAIL_CHARS


# -- jobs_running: what autostop reads from the agent ------------------------------------------------------------------


def _driver(*, dead: bool = False, namespace: str = "", submission_id: str = "") -> object:
    from types import SimpleNamespace

    metadata = {"job_submission_id": submission_id} if submission_id else {}
    return SimpleNamespace(is_dead=dead, config=SimpleNamespace(ray_namespace=namespace, metadata=metadata))


def test_running_jobs_count_unfinished_submitted_jobs_and_loose_drivers_once() -> None:
    from provisioning.head.agent_gcs import count_running_jobs

    drivers = [
        _driver(),  # a script's ray.init
        _driver(dead=True),  # finished
        _driver(namespace="_ray_internal_dashboard"),  # Ray's own
        _driver(submission_id="raysubmit_1"),  # counted with its submitted job
    ]
    infos = [b'{"status": "RUNNING"}', b'{"status": "PENDING"}', b'{"status": "SUCCEEDED"}', None]
    assert count_running_jobs(drivers, infos) == 3
    assert count_running_jobs([], []) == 0


def test_jobs_running_is_none_when_the_gcs_cannot_be_read() -> None:
    from provisioning.head.agent_gcs import RayGcs

    gcs = RayGcs("127.0.0.1:1", "c")  # never connected
    assert gcs.jobs_running() is None


# --------------------------------------------------------------------------------------------
# Preemption notices (POST /v1/preempt) and the wake-up they cause
# --------------------------------------------------------------------------------------------

NODE_B = "b" * 56
DEADLINE = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)
DEADLINE_MS = 1_796_040_030_000


def test_a_notice_reads_its_iso_deadline_with_offset_or_z() -> None:
    body = {"instance_id": "worker0001", "event_id": "E-1", "not_before": "2026-11-30T12:00:30+00:00"}
    assert checked_notice(body) == PreemptNotice("worker0001", "E-1", DEADLINE)
    assert checked_notice({**body, "not_before": "2026-11-30T12:00:30Z"}).deadline == DEADLINE
    assert checked_notice({**body, "not_before": "2026-11-30T13:00:30+01:00"}).deadline_ms == DEADLINE_MS


@pytest.mark.parametrize(
    ("changes", "failing_field"),
    [
        ({"instance_id": ""}, "instance_id"),
        ({"instance_id": "a/b"}, "instance_id"),
        ({"instance_id": 7}, "instance_id"),
        ({"event_id": 7}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"event_id": "line\nbreak"}, "event_id"),
        ({"not_before": None}, "not_before"),
        ({"not_before": "Mon, 30 Nov 2026 12:00:30 GMT"}, "not_before"),  # RFC 1123 is the watch's to convert
        ({"not_before": "2026-11-30T12:00:30"}, "not_before"),  # no offset: ambiguous
    ],
)
def test_a_notice_that_does_not_fit_is_refused_naming_the_field(changes: dict[str, object], failing_field: str) -> None:
    body = {"instance_id": "worker0001", "event_id": "E-1", "not_before": "2026-11-30T12:00:30+00:00", **changes}
    with pytest.raises(PreemptRefusedError) as refused:
        checked_notice(body)
    assert refused.value.field_name == failing_field


@dataclass
class FakeRayGcs:
    """Ray as agent_preempt sees it: the nodes of /v1/state and DrainNode."""

    nodes: list[dict[str, Any]]
    drains: list[tuple[str, str, int]] = field(default_factory=list)

    def read_state_payload(self) -> dict[str, object]:
        return {"nodes": self.nodes}

    def drain(self, ray_node_id: str, reason: str, message: str, deadline_ms: int = 0) -> tuple[bool, str]:
        self.drains.append((ray_node_id, reason, deadline_ms))
        return True, ""


def ray_node(ray_node_id: str, instance_id: str, status: str = "running", **extra: object) -> dict[str, Any]:
    return {"ray_node_id": ray_node_id, "instance_id": instance_id, "status": status, **extra}


NOTICE = PreemptNotice("worker0001", "E-1", DEADLINE)


def test_a_notice_drains_the_instances_node_for_preemption_with_the_deadline() -> None:
    gcs = FakeRayGcs([ray_node(NODE_A, "worker0001"), ray_node(NODE_B, "worker0002")])
    answer = handle_notice(gcs, NOTICE)
    assert gcs.drains == [(NODE_A, "preemption", DEADLINE_MS)]
    assert answer == {
        "instance_id": "worker0001",
        "ray_node_id": NODE_A,
        "accepted": True,
        "rejection_reason": "",
        "left_ray": False,
        "preempt_deadline": "2026-11-30T12:00:30+00:00",
    }


def test_a_repeated_notice_does_not_drain_again() -> None:
    gcs = FakeRayGcs([ray_node(NODE_A, "worker0001", "draining", preempt_deadline="2026-11-30T12:00:30.000+00:00")])
    answer = handle_notice(gcs, NOTICE)
    assert (gcs.drains, answer["accepted"], answer["left_ray"]) == ([], True, False)


@pytest.mark.parametrize(
    "nodes",
    [
        pytest.param([ray_node(NODE_A, "worker0001", "dead")], id="drained-and-gone"),
        pytest.param([], id="never-joined"),
        pytest.param([ray_node(NODE_B, "worker0002")], id="other-instances-only"),
    ],
)
def test_an_instance_without_a_live_node_has_left_ray(nodes: list[dict[str, Any]]) -> None:
    gcs = FakeRayGcs(nodes)
    answer = handle_notice(gcs, NOTICE)
    assert (gcs.drains, answer["left_ray"], answer["accepted"]) == ([], True, False)


def payload_with(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"pending": [], "gangs": [], "constraints": [], "nodes": nodes}


def test_summarize_counts_live_preempted_nodes_only() -> None:
    summary = summarize(
        payload_with(
            [
                ray_node(NODE_A, "worker0001", "draining", preempt_deadline="2026-11-30T12:00:30.000+00:00"),
                ray_node(NODE_B, "worker0002", "draining"),  # an idle drain: no deadline
            ]
        )
    )
    assert summary.preempted_nodes == {NODE_A: ("worker0001", "2026-11-30T12:00:30.000+00:00")}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_preempted_node_wakes_the_control_plane_at_once_inside_the_debounce_window() -> None:
    payloads = [
        payload_with([ray_node(NODE_A, "worker0001"), ray_node(NODE_B, "worker0002", "dead")]),
        payload_with(
            [
                ray_node(NODE_A, "worker0001", "draining", preempt_deadline="2026-11-30T12:00:30.000+00:00"),
                ray_node(NODE_B, "worker0002", "dead"),
            ]
        ),
    ]
    sent: list[str] = []
    stop = threading.Event()
    clock = FakeClock()

    def read_payload() -> Mapping[str, Any]:
        return payloads.pop(0) if len(payloads) > 1 else payloads[0]

    def send(reason: str) -> None:
        sent.append(reason)
        if len(sent) == 2:
            stop.set()

    # The clock stands still: every poll is inside the 60 s debounce window of the first wake-up.
    watcher = DemandWatcher(read_payload, send, poll_interval_s=0.001, debounce_s=60.0, clock=clock)
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    thread.join(5.0)
    stop.set()
    assert sent == [
        "nodes died: bbbbbbbbbbbb (worker0002)",  # the first change goes at once: nothing was sent before
        "nodes preempted: aaaaaaaaaaaa (worker0001) by 2026-11-30T12:00:30.000+00:00",
    ]
