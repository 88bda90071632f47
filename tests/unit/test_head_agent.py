"""The head agent's pure parts: what wakes the control plane, where wake-ups go, gang strategies, its token, the
boot phases it keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.model import GangStrategy
from provisioning.head.agent import ConfigError, enable_ray_token_auth, parse_config
from provisioning.head.agent_boot import MAX_DETAIL_CHARS, BootPhaseBook, BootPhaseRefusedError, checked_report
from provisioning.head.agent_gcs import gang_strategy, is_ray_node_id
from provisioning.head.agent_wakeup import DemandSummary, describe_change, reconcile_url, summarize

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
