"""The write budget a burst is paced by (provisioning/azure/write_budget.py): what Azure's headers say is left, and
what may be sent now."""

from __future__ import annotations

import pytest

from provisioning.azure.write_budget import (
    ARM_WRITES,
    PUT_VM,
    WriteBudget,
    policy_kind,
    remaining_by_kind,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("policy", "kind"),
    [
        ("Microsoft.Compute/PutVM3Min", "PutVM"),
        ("Microsoft.Compute/PutVM30Min", "PutVM"),
        ("Microsoft.Compute/VMScaleSetBatchedVMRequests5Min", "VMScaleSetBatchedVMRequests"),
        ("Microsoft.Compute/VmssQueuedVMOperations", "VmssQueuedVMOperations"),
    ],
)
def test_a_policy_names_its_operation_group_and_its_window(policy: str, kind: str) -> None:
    assert policy_kind(policy) == kind


def test_the_smallest_remaining_count_of_a_group_is_its_budget() -> None:
    headers = {
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;239,Microsoft.Compute/PutVM30Min;1199",
        "x-ms-ratelimit-remaining-subscription-writes": "198",
    }
    assert remaining_by_kind(headers) == {PUT_VM: 239, ARM_WRITES: 198}


def test_before_any_answer_one_request_probes_the_budget() -> None:
    budget = WriteBudget(Clock())
    assert budget.try_acquire((PUT_VM,))
    assert not budget.try_acquire((PUT_VM,))
    assert budget.waiting_for_answer((PUT_VM,))


def test_after_an_answer_as_many_requests_as_remain_are_lent_and_no_more() -> None:
    budget = WriteBudget(Clock())
    assert budget.try_acquire((PUT_VM,))
    budget.record(201, {"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;3"})
    budget.release((PUT_VM,))
    lent = sum(budget.try_acquire((PUT_VM,)) for _ in range(10))
    assert lent == 3


def test_an_exhausted_budget_lets_one_probe_go_after_the_probe_delay() -> None:
    clock = Clock()
    budget = WriteBudget(clock, probe_after_s=15)
    budget.record(201, {"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;0"})
    assert not budget.try_acquire((PUT_VM,))
    assert budget.retry_after_s((PUT_VM,)) == pytest.approx(15)
    clock.now = 15
    assert budget.try_acquire((PUT_VM,))
    assert not budget.try_acquire((PUT_VM,))


def test_a_429_blocks_its_group_until_retry_after_then_one_probe() -> None:
    clock = Clock()
    budget = WriteBudget(clock)
    headers = {
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;0,Microsoft.Compute/PutVM30Min;900",
        "Retry-After": "120",
    }
    budget.record(429, headers)
    clock.now = 119
    assert not budget.try_acquire((PUT_VM,))
    clock.now = 120
    assert budget.try_acquire((PUT_VM,))
    assert not budget.try_acquire((PUT_VM,))  # the probe's answer tells the new window's budget


def test_a_request_needs_every_kind_it_is_charged_to() -> None:
    budget = WriteBudget(Clock())
    budget.record(201, {"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;5"})
    budget.record(201, {"x-ms-ratelimit-remaining-subscription-writes": "0"})
    assert not budget.try_acquire((PUT_VM, ARM_WRITES))
    assert budget.remaining(PUT_VM) == 5  # nothing taken from one kind when another refuses
