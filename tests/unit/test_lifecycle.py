"""The instance state machine: allowed edges, refused edges, and the per-status stuck timeouts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from autoscaler import lifecycle
from autoscaler.model import InstanceRecord
from autoscaler.model import InstanceStatus as S

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(status: S, *, since_s: float = 0.0) -> InstanceRecord:
    since = T0 - timedelta(seconds=since_s)
    return InstanceRecord("c", "i1", "cpu", status, "r", since, since)


def test_every_status_has_a_row_and_every_edge_a_reason() -> None:
    assert set(lifecycle.ALLOWED) == set(S)
    for edges in lifecycle.ALLOWED.values():
        assert all(reason for reason in edges.values())


def test_final_statuses_lead_nowhere_but_a_failed_launch_may_still_need_its_leftover_removed() -> None:
    assert lifecycle.ALLOWED[S.TERMINATED] == {}
    assert set(lifecycle.ALLOWED[S.ALLOCATION_FAILED]) == {S.TERMINATING}


@pytest.mark.parametrize(
    ("start", "end", "allowed"),
    [
        (S.QUEUED, S.REQUESTED, True),
        (S.REQUESTED, S.ALLOCATED, True),
        (S.ALLOCATED, S.RAY_RUNNING, True),
        (S.RAY_RUNNING, S.DRAINING, True),
        (S.DRAINING, S.RAY_RUNNING, True),
        (S.TERMINATING, S.TERMINATED, True),
        (S.QUEUED, S.RAY_RUNNING, False),
        (S.TERMINATED, S.RAY_RUNNING, False),
        (S.RAY_RUNNING, S.ALLOCATION_FAILED, False),
    ],
)
def test_transition_follows_the_table(start: S, end: S, allowed: bool) -> None:
    assert lifecycle.can_transition(start, end) is allowed
    if allowed:
        moved = lifecycle.transition(record(start), end, T0, error="why")
        assert (moved.status, moved.status_since, moved.last_error) == (end, T0, "why")
    else:
        with pytest.raises(lifecycle.TransitionError):
            lifecycle.transition(record(start), end, T0)


def test_a_transition_to_the_same_status_changes_nothing() -> None:
    same = record(S.RAY_RUNNING, since_s=50)
    assert lifecycle.transition(same, S.RAY_RUNNING, T0) is same


@pytest.mark.parametrize(
    ("status", "seconds_in_status", "stuck"),
    [
        (S.QUEUED, 120, False),
        (S.QUEUED, 121, True),
        (S.REQUESTED, 600, False),
        (S.REQUESTED, 601, True),
        (S.DRAINING, 121, True),
        (S.TERMINATING, 301, True),
        # No stuck timeout: an allocated instance that never runs Ray is the planner's launch timeout, a running or
        # final one is not waiting for any answer.
        (S.ALLOCATED, 100_000, False),
        (S.RAY_RUNNING, 100_000, False),
        (S.TERMINATED, 100_000, False),
    ],
)
def test_stuck_timeouts_are_per_status(status: S, seconds_in_status: float, stuck: bool) -> None:
    assert lifecycle.is_stuck(record(status, since_s=seconds_in_status), T0) is stuck


def test_stuck_counts_from_the_status_not_from_the_creation() -> None:
    old_but_recently_requested = replace(record(S.REQUESTED, since_s=10), created_at=T0 - timedelta(hours=5))
    assert not lifecycle.is_stuck(old_but_recently_requested, T0)
