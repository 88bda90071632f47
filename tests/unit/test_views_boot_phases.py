"""GET /api/clusters/{name}: each node's boot phase, from its status and what its VM reported to the head agent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from autoscaler.model import ClusterRecord, ClusterStatus, InstanceRecord, InstanceStatus
from autoscaler.ray_state import BootPhase, BootPhaseReport
from autoscaler.views import ClusterView, NodeView, boot_phases_observation

T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
REPORTED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
S = InstanceStatus


def instance(instance_id: str, status: InstanceStatus, *, ray_node_id: str = "", is_head: bool = False):
    return InstanceRecord(
        cluster_name="demo",
        instance_id=instance_id,
        node_type="head" if is_head else "cpu",
        status=status,
        request_id=f"request-{instance_id}",
        status_since=T0,
        created_at=T0,
        is_head=is_head,
        ray_node_id=ray_node_id,
    )


def cluster(observation: Mapping[str, object]) -> ClusterRecord:
    return ClusterRecord(
        name="demo",
        status=ClusterStatus.RUNNING,
        config_json="{}",
        config_hash="h",
        generation=1,
        created_at=T0,
        updated_at=T0,
        last_observation=json.dumps(observation),
    )


def node_view(record: InstanceRecord, reports: dict[str, BootPhaseReport]) -> NodeView:
    """The node as the API shows it after a tick stored what the reconcile shell observed."""
    observation = {"boot_phases": boot_phases_observation(reports, [record])}
    (node,) = ClusterView.build(cluster(observation), "azure", [record], []).nodes
    return node


@pytest.mark.parametrize(
    ("record", "reports", "expected_phase"),
    [
        pytest.param(instance("w", S.QUEUED), {}, None, id="queued-no-vm-yet"),
        pytest.param(instance("w", S.REQUESTED), {}, None, id="requested-no-vm-yet"),
        pytest.param(instance("w", S.ALLOCATED), {}, BootPhase.VM_CREATED, id="vm-listed-nothing-reported"),
        pytest.param(
            instance("w", S.ALLOCATED),
            {"w": BootPhaseReport(BootPhase.CLOUD_INIT_RUNNING, REPORTED_AT)},
            BootPhase.CLOUD_INIT_RUNNING,
            id="cloud-init-reported",
        ),
        pytest.param(
            instance("w", S.ALLOCATED),
            {"w": BootPhaseReport(BootPhase.RAY_STARTED, REPORTED_AT)},
            BootPhase.RAY_STARTED,
            id="ray-started-reported",
        ),
        pytest.param(
            instance("w", S.RAY_RUNNING, ray_node_id="ab" * 28),
            {"w": BootPhaseReport(BootPhase.RAY_STARTED, REPORTED_AT)},
            BootPhase.JOINED,
            id="ray-lists-it-whatever-was-reported",
        ),
        pytest.param(instance("h", S.RAY_RUNNING, is_head=True), {}, BootPhase.JOINED, id="head-agent-answers"),
        pytest.param(
            instance("w", S.TERMINATED, ray_node_id="ab" * 28), {}, BootPhase.JOINED, id="terminated-after-joining"
        ),
        pytest.param(
            instance("w", S.TERMINATED),
            {"w": BootPhaseReport(BootPhase.BOOT_FAILED, REPORTED_AT, "line 40 exited 1")},
            BootPhase.BOOT_FAILED,
            id="terminated-after-a-failed-boot",
        ),
        pytest.param(instance("w", S.TERMINATED), {}, None, id="terminated-never-heard-of"),
    ],
)
def test_node_shows_how_far_its_boot_got(
    record: InstanceRecord, reports: dict[str, BootPhaseReport], expected_phase: BootPhase | None
) -> None:
    assert node_view(record, reports).boot_phase == expected_phase


def test_a_failed_boot_shows_when_it_was_reported_and_what_failed() -> None:
    report = BootPhaseReport(BootPhase.BOOT_FAILED, REPORTED_AT, "setup command at bootstrap.sh line 40 exited 1")
    node = node_view(instance("w", S.ALLOCATED), {"w": report})
    assert (node.boot_phase_at, node.boot_phase_detail) == (REPORTED_AT, report.detail)


def test_the_observation_keeps_only_phases_of_this_clusters_nodes_that_have_not_joined() -> None:
    reports = {
        "booting": BootPhaseReport(BootPhase.CLOUD_INIT_RUNNING, REPORTED_AT),
        "joined": BootPhaseReport(BootPhase.RAY_STARTED, REPORTED_AT),
        "other-generation": BootPhaseReport(BootPhase.RAY_STARTED, REPORTED_AT),
    }
    records = [instance("booting", S.ALLOCATED), instance("joined", S.RAY_RUNNING, ray_node_id="ab" * 28)]
    assert boot_phases_observation(reports, records) == {
        "booting": {"phase": "cloud_init_running", "at": "2026-01-02T03:04:05+00:00", "detail": ""}
    }


def test_a_cluster_observed_before_boot_phases_existed_still_shows_its_nodes() -> None:
    record = instance("w", S.ALLOCATED)
    (node,) = ClusterView.build(cluster({"pending": []}), "azure", [record], []).nodes
    assert node.boot_phase == BootPhase.VM_CREATED
