"""Bursts of single VMs: many launches of one tick go out in parallel, within the subscription's write budget as
Azure's `x-ms-ratelimit-remaining-*` headers report it, and never in a 429 storm (strict ARM emulator, small
Compute budgets, a simulated clock shared by the emulator and the provider)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from autoscaler.config import ClusterConfig, parse_cluster_config
from autoscaler.model import LaunchRequest
from autoscaler.ports import ThrottledError
from provisioning.azure.provider import AzureCloudProvider, AzureSettings
from tests.support.arm.throttling import PUT_VM, ThrottleBudgets, Window
from tests.support.arm_emulator import ArmEmulator
from tests.support.arm_rules import validate_request
from tests.support.provider_contract import launch_request_for

WORKER_TYPE = "ray.worker.cpu"
PUT_VM_PER_WINDOW = 12
WINDOW_S = 180.0
TICK_S = 15.0


class Clock:
    """Real time plus skipped time: emulated operations still take their short real time, ticks cost nothing."""

    def __init__(self) -> None:
        self.skipped_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def arm(clock: Clock) -> Iterator[ArmEmulator]:
    defaults = ThrottleBudgets()
    compute = {**defaults.compute, PUT_VM: (Window("PutVM3Min", PUT_VM_PER_WINDOW, WINDOW_S),)}
    budgets = replace(defaults, compute=compute)
    with ArmEmulator(strict=True, request_validator=validate_request, budgets=budgets, clock=clock) as started:
        yield started


def make_config(arm: ArmEmulator) -> ClusterConfig:
    image = {"imagePublisher": "Canonical", "imageOffer": "ubuntu-24_04-lts", "imageSku": "server"}
    document = {
        "cluster_name": "burst",
        "max_workers": 100,
        "provider": {
            "type": "azure",
            "location": "eastus",
            "resource_group": "rg-burst",
            "subscription_id": arm.subscription_id,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": 2},
                "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D2s_v3", **image}},
            },
            WORKER_TYPE: {
                "resources": {"CPU": 4},
                "max_workers": 100,
                "node_config": {"azure_arm_parameters": {"vmSize": "Standard_D4s_v3", **image}},
            },
        },
        "head_node_type": "ray.head.default",
    }
    return parse_cluster_config(document).config


def provider_for(arm: ArmEmulator, config: ClusterConfig, clock: Clock) -> AzureCloudProvider:
    settings = AzureSettings(
        subscription_id=arm.subscription_id,
        base_url=arm.base_url,
        connection_verify=arm.ca_path,
        network_poll_interval_s=0.02,
        clock=clock,
    )
    return AzureCloudProvider(config, arm.credential(), settings)


def workers(config: ClusterConfig, count: int) -> list[LaunchRequest]:
    return [
        launch_request_for(config, f"w{index:03d}", WORKER_TYPE, cluster_token="t" * 32, head_address="10.0.0.4:6379")
        for index in range(count)
    ]


def throttled_answers(arm: ArmEmulator) -> int:
    return sum(1 for _, _, status in arm.request_log if status == 429)


def test_a_burst_sends_what_the_budget_holds_and_answers_the_rest_throttled_without_a_429(
    arm: ArmEmulator, clock: Clock
) -> None:
    config = make_config(arm)
    provider = provider_for(arm, config, clock)
    outcomes = provider.launch_many(workers(config, 30))
    accepted = [outcome for outcome in outcomes if outcome is None]
    held_back = [outcome for outcome in outcomes if isinstance(outcome, ThrottledError)]
    assert len(accepted) == PUT_VM_PER_WINDOW
    assert len(held_back) == 30 - PUT_VM_PER_WINDOW
    assert throttled_answers(arm) == 0
    assert all(error.retry_after_s > 0 for error in held_back)
    assert len([vm for vm in provider.list_instances("burst") if vm.node_type == WORKER_TYPE]) == PUT_VM_PER_WINDOW


def test_ticks_until_every_launch_is_accepted_get_at_most_one_429_per_budget_window(
    arm: ArmEmulator, clock: Clock
) -> None:
    config = make_config(arm)
    provider = provider_for(arm, config, clock)
    pending = workers(config, 40)
    started = clock()
    ticks = 0
    while pending and ticks < 100:
        ticks += 1
        outcomes = provider.launch_many(pending)
        assert all(outcome is None or isinstance(outcome, ThrottledError) for outcome in outcomes)
        pending = [request for request, outcome in zip(pending, outcomes, strict=True) if outcome is not None]
        if pending:
            clock.skipped_s += TICK_S
    windows = int((clock() - started) // WINDOW_S) + 1
    assert not pending
    assert windows == 4  # 40 launches at 12 per window
    assert throttled_answers(arm) <= windows
    names = [vm.instance_id for vm in provider.list_instances("burst") if vm.node_type == WORKER_TYPE]
    assert sorted(names) == [f"w{index:03d}" for index in range(40)]  # each once


def test_a_burst_runs_its_requests_in_parallel(arm: ArmEmulator, clock: Clock) -> None:
    config = make_config(arm)
    provider = provider_for(arm, config, clock)
    provider.launch_many(workers(config, 1))  # the network, and the budget's first answer
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    original = arm.handle

    def counting(
        method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        try:
            return original(method, raw_path, headers, body)
        finally:
            with lock:
                in_flight -= 1

    arm.handle = counting  # type: ignore[method-assign]
    outcomes = provider.launch_many(workers(config, PUT_VM_PER_WINDOW)[1:])
    assert outcomes == [None] * (PUT_VM_PER_WINDOW - 1)
    assert peak > 1
