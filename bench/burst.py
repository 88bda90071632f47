"""A cluster asked for 50, 500 and 1,000 workers at once: single VMs versus a scale-set node type.

Each run starts a fresh strict ARM emulator (tests/support/arm_emulator.py: timed operations, request bodies held to
Azure's REST definitions, ARM's per-subscription token buckets and Compute's throttling policies with Azure's
headers, see tests/support/arm/throttling.py), launches the head (so the cluster's network exists), then hands the
provider every worker launch at once with `launch_many`, as the reconcile shell does in one tick. What the provider
does not issue (its write budget, tracked from Azure's `x-ms-ratelimit-remaining-*` headers, has no room) comes back
as ThrottledError and is handed over again at the next tick, every 15 s (RECONCILE_SCHEDULE) on a simulated clock
that the emulator's budgets and the provider's budget share, until every launch is accepted.

Measured per run: ARM `writes` of the burst (the head's launch and the network are not counted), `throttled` (429
answers Azure gave), `seconds` (simulated seconds between the burst's first tick and the tick that got its last launch
accepted, plus the real time the calls took) and `ticks` (launch_many calls). The per-tick VM list is left out:
its cost is docs/decisions/arm-call-budget.md's.

Budgets are Azure's defaults in the emulator: ARM writes 200 per subscription and principal, refilled 10/s; Compute
PutVM 240 per 3 minutes and 1,200 per 30 minutes; PutVMScaleSet 60 per 3 minutes. A budget window is the Compute
policy's window (3 minutes), or one refill second of ARM's bucket.

Run: `.venv/bin/python bench/burst.py`. The last line is JSON:
{"scale_set": {"50": R, "500": R, "1000": R}, "single_vm": {...}}, each R {"writes", "throttled", "seconds", "ticks"}.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any

from autoscaler.config import ClusterConfig
from autoscaler.model import LaunchRequest
from autoscaler.ports import InvalidRequestError
from provisioning.azure.provider import AzureCloudProvider, AzureSettings
from tests.support.arm_emulator import ArmEmulator
from tests.support.arm_rules import validate_request
from tests.support.azure_configs import HEAD_TYPE, IMAGE, azure_cluster_config
from tests.support.provider_contract import launch_request_for

WORKER_COUNTS = (50, 500, 1000)
TICK_S = 15.0
MAX_TICKS = 400
VM_LIST_PAGE_SIZE = 50
RESOURCE_GROUP = "rg-burst"
SINGLE_TYPE = "ray.worker.single"
POOL_TYPE = "ray.worker.pool"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
CLUSTER_TOKEN = secrets.token_urlsafe(32)  # one per run, as a cluster has one: the VM bodies of a run are alike


def refuse_non_loopback_connections(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: any socket connection to an address other than loopback is an error."""
    if event != "socket.connect":
        return
    address = args[1]
    if isinstance(address, tuple) and address and str(address[0]) not in LOOPBACK_HOSTS:
        raise RuntimeError(f"benchmark tried to connect to {address[0]}: only loopback is allowed")


class SimulatedClock:
    """Real time plus what the bench skipped: operations still take their real (short) emulated time, while the
    waits between ticks cost nothing."""

    def __init__(self) -> None:
        self.skipped_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped_s

    def skip(self, seconds: float) -> None:
        self.skipped_s += seconds


def bench_config(subscription_id: str) -> ClusterConfig:
    worker = {"vmSize": "Standard_D4s_v3", **IMAGE, "priority": "Spot", "evictionPolicy": "Delete"}
    return azure_cluster_config(
        subscription_id,
        cluster_name="burst",
        resource_group=RESOURCE_GROUP,
        max_workers=1000,
        workers={
            SINGLE_TYPE: {
                "resources": {"CPU": 4},
                "max_workers": 1000,
                "node_config": {"azure_arm_parameters": worker},
            },
            POOL_TYPE: {
                "resources": {"CPU": 4},
                "max_workers": 1000,
                "node_config": {
                    "azure_arm_parameters": worker,
                    "azure_scale_set": {
                        "priority_mix": {"base_regular_count": 0, "regular_percentage_above_base": 10},
                    },
                },
            },
        },
    )


def requests_for(config: ClusterConfig, node_type: str, workers: int) -> list[LaunchRequest]:
    pool = node_type == POOL_TYPE
    return [
        launch_request_for(
            config,
            f"w{index:04d}",
            node_type,
            cluster_token=CLUSTER_TOKEN,
            head_address="10.100.0.4:6379",
            pool_target=index + 1 if pool else 0,
        )
        for index in range(workers)
    ]


def run(node_type: str, workers: int) -> dict[str, float | int]:
    clock = SimulatedClock()
    with ArmEmulator(strict=True, request_validator=validate_request, page_size=VM_LIST_PAGE_SIZE, clock=clock) as arm:
        config = bench_config(arm.subscription_id)
        settings = AzureSettings(
            subscription_id=arm.subscription_id,
            base_url=arm.base_url,
            connection_verify=arm.ca_path,
            network_poll_interval_s=0.02,
            clock=clock,
        )
        provider = AzureCloudProvider(config, arm.credential(), settings)
        head = launch_request_for(config, "head", HEAD_TYPE, cluster_token=CLUSTER_TOKEN, head_address="")
        provider.launch(head)
        clock.skip(TICK_S)
        arm.reset_counts()
        return burst(arm, provider, clock, requests_for(config, node_type, workers))


def burst(
    arm: ArmEmulator, provider: AzureCloudProvider, clock: SimulatedClock, requests: Sequence[LaunchRequest]
) -> dict[str, float | int]:
    pending = list(requests)
    started = clock()
    ticks = 0
    while pending:
        ticks += 1
        if ticks > MAX_TICKS:
            raise RuntimeError(f"{len(pending)} launches still not accepted after {MAX_TICKS} ticks")
        outcomes = provider.launch_many(pending)
        refused = [outcome for outcome in outcomes if isinstance(outcome, InvalidRequestError)]
        if refused:
            raise RuntimeError(f"a launch was refused: {refused[0]}")
        pending = [request for request, outcome in zip(pending, outcomes, strict=True) if outcome is not None]
        if pending:
            clock.skip(TICK_S)
    seconds = clock() - started
    throttled = sum(1 for _, _, status in arm.request_log if status == 429)
    return {"writes": arm.writes, "throttled": throttled, "seconds": round(seconds, 1), "ticks": ticks}


def main() -> None:
    sys.addaudithook(refuse_non_loopback_connections)
    results: dict[str, dict[str, dict[str, float | int]]] = {"scale_set": {}, "single_vm": {}}
    for mode, node_type in (("scale_set", POOL_TYPE), ("single_vm", SINGLE_TYPE)):
        for workers in WORKER_COUNTS:
            result = run(node_type, workers)
            results[mode][str(workers)] = result
            windows = max(1, int(-(-float(result["seconds"]) // 180)))
            print(
                f"{mode:>9}: {workers:>4} workers -> {result['writes']} ARM write(s), {result['throttled']} 429(s) "
                f"over {windows} 3-minute budget window(s), {result['seconds']} s, {result['ticks']} tick(s)",
                flush=True,
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
