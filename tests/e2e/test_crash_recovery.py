"""kill -9 of the control plane (the local host of `make run`, not Ray) during scale-up and scale-down of a real Ray
cluster, restarted on the same data folder each time.

The moments are random but seeded (the seed is printed; E2E_CRASH_SEED=<seed> replays them):
- scale-up: the first host dies by SIGKILL at a step of the k-th worker launch of the local provider (after the
  instance file is written, or after the launcher started but before its pid is recorded: the window where a crash
  used to leave two raylets for one instance); the next host is killed a random time after it serves;
- scale-down: a host dies by SIGKILL as the k-th terminate call starts (the rows say `terminating`, nothing was
  signalled yet); the next host is killed a random time after it serves.
After the recoveries: one raylet (and one Ray node) per instance, no process of an instance the table does not
count as live, no instance the table does not know, never more than max_workers workers, no row lost across a kill;
the demand is met, the idle workers go; DELETE leaves no process and no live row.

A second test starts, next to a running cluster, an instance its table does not know (what lost rows leave): it
must be stopped as soon as a tick finds it, and must not hold a DELETE.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from pathlib import Path

import pytest

from autoscaler.model import LaunchRequest
from provisioning.local import LocalCloudProvider, cluster_processes
from tests.e2e.chaos import (
    check_one_node_per_instance_and_no_orphan,
    live_workers,
    processes_by_instance,
    running_workers,
    start_driver,
    try_status,
    wait_for,
)
from tests.e2e.host_process import HostProcess, azurites_on, is_alive
from tests.e2e.support import FINAL_STATUSES, Driver, View, describe, instance_ids
from tests.support.azurite import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]


NAME = "e2e-crash"
WORKERS = 3
IDLE_TIMEOUT_S = 3
CONFIG = f"""
cluster_name: {NAME}
max_workers: {WORKERS}
idle_timeout_minutes: 1
provider: {{type: local, launch_delay_s: 0}}
auth: {{ssh_user: ray}}
available_node_types:
  head: {{resources: {{CPU: 0}}, min_workers: 0, max_workers: 0, node_config: {{}}}}
  cpu: {{resources: {{CPU: 1}}, min_workers: 0, max_workers: {WORKERS}, idle_timeout_s: {IDLE_TIMEOUT_S},
         node_config: {{}}}}
head_node_type: head
"""
SCHEDULE = "*/3 * * * * *"  # NCRONTAB, seconds first
HEAD_TIMEOUT_S = 90.0
CRASH_POINT_TIMEOUT_S = 60.0
CONVERGE_TIMEOUT_S = 120.0
DELETE_TIMEOUT_S = 90.0


def new_host(work_dir: Path) -> HostProcess:
    return HostProcess(
        work_dir / "stack",
        work_dir / "logs",
        port=free_port(),
        azurite_ports=(free_port(), free_port(), free_port()),
        settings={
            "RECONCILE_SCHEDULE": SCHEDULE,
            "CLUSTER_TOKEN_KEY": secrets.token_hex(32),  # the same for every host on this data folder
            "ALLOW_LOCAL_PROVIDER": "true",
        },
    )


def tasks_started(driver: Driver) -> int:
    """How many of the driver's tasks have started (a task retried after its node died counts once)."""
    return len({path.name.split("-")[1] for path in driver.started_tasks()})


def kill_and_restart(host: HostProcess, name: str, phase: str, *, crash_at: str = "", context: str = "") -> None:
    """kill -9 the host now, start the next one; what the API showed before the kill must still be there after it
    (rows the store acknowledged are not lost by a crash of the host)."""
    before = try_status(host, name)
    host.kill9()
    statuses = sorted(node["status"] for node in live_workers(before)) if before is not None else "(no status)"
    print(f"{phase}: host {host.generation} killed with workers {statuses}", flush=True)
    host.start(crash_at=crash_at)
    if before is None:
        return
    after = wait_for(host, name, lambda _: True, what="a status", timeout_s=30.0, context=context)
    lost = instance_ids(before["nodes"]) - instance_ids(after["nodes"])
    assert not lost, (
        f"{context}instance rows shown before the kill are gone after the restart: {sorted(lost)} (the storage "
        f"lost acknowledged writes)\nbefore:\n{describe(before)}\nafter:\n{describe(after)}"
    )


def test_kill_9_of_the_host_during_scale_up_and_scale_down_leaves_no_duplicate_and_no_orphan(work_dir: Path):  # noqa: PLR0915 -- one scenario end to end, its steps in order
    seed = int(os.environ.get("E2E_CRASH_SEED") or secrets.randbelow(2**31))
    print(f"crash-recovery seed: {seed} (replay with E2E_CRASH_SEED={seed})", flush=True)
    rng = random.Random(seed)
    launch_crash = f"{rng.choice(['record-written', 'launcher-started'])}:{1 + rng.randint(1, WORKERS)}"  # 1: head
    up_delay_s = rng.uniform(0.5, 4.0)
    terminate_crash = f"terminate-started:{rng.randint(1, WORKERS)}"
    down_delay_s = rng.uniform(0.0, 3.0)
    plan = (
        f"seed {seed}: scale-up kills at {launch_crash} then {up_delay_s:.2f} s after the restart; "
        f"scale-down kills at {terminate_crash} then {down_delay_s:.2f} s after the restart"
    )
    print(plan, flush=True)
    context = f"[{plan}] "

    host = new_host(work_dir)

    def invariants(view: View) -> None:
        """Checked on every status read while the cluster recovers."""
        # No orphan, ever: the provider writes an instance only for a row already committed, so a restarted host
        # must never find an instance its table does not know. If it does, the store lost rows it had acknowledged
        # (or a launch ran without its row), and that instance runs outside the autoscaler's count.
        orphans = [event["message"] for event in view["events"] if event["kind"] == "orphan"]
        assert not orphans, (
            f"{context}a restarted host found instances its table does not know: {orphans}; rows acknowledged "
            f"before the kill were lost\n{describe(view, 40)}"
        )
        # Launching, running and draining workers (what the planner counts) never exceed max_workers.
        counted = [node for node in live_workers(view) if node["status"] not in ("terminating", "termination_failed")]
        assert len(counted) <= WORKERS, f"{context}more than max_workers workers:\n{describe(view, 40)}"

    try:
        host.start(crash_at=launch_crash)
        response = host.api("POST", "/clusters", data=CONFIG, headers={"content-type": "application/yaml"})
        assert response.status_code == 202, response.text
        view = wait_for(
            host, NAME, lambda v: v["status"] == "running", what="the head", timeout_s=HEAD_TIMEOUT_S, context=context
        )
        driver = start_driver(view, work_dir / "driver", "tasks", "--count", str(WORKERS))
        try:
            # ---- scale-up: the host dies inside a launch, then at a random moment --------------------------------
            assert host.wait_for_crash(CRASH_POINT_TIMEOUT_S), f"{context}the crash point was never reached"
            host.start()
            time.sleep(up_delay_s)
            kill_and_restart(host, NAME, "scale-up", crash_at=terminate_crash, context=context)  # armed: scale-down
            view = wait_for(
                host,
                NAME,
                lambda v: len(running_workers(v, "cpu")) == WORKERS and tasks_started(driver) == WORKERS,
                what=f"{WORKERS} cpu workers running the {WORKERS} tasks",
                timeout_s=CONVERGE_TIMEOUT_S,
                context=context,
                also_check=invariants,
            )
            driver.check_alive()
            view = check_one_node_per_instance_and_no_orphan(host, NAME, context + "after scale-up: ")
            assert len(live_workers(view, "cpu")) == WORKERS
            driver.finish()  # every task completed: the demand was met
        finally:
            driver.stop()

        # ---- scale-down: the host dies as a terminate starts, then at a random moment -----------------------------
        if host.crash_at:  # (a terminate during the scale-up would have used the crash point already)
            assert host.wait_for_crash(CRASH_POINT_TIMEOUT_S), f"{context}the terminate crash point was never reached"
            host.start()
        time.sleep(down_delay_s)
        kill_and_restart(host, NAME, "scale-down", context=context)
        wait_for(
            host,
            NAME,
            lambda v: not live_workers(v),
            what="every idle worker removed",
            timeout_s=CONVERGE_TIMEOUT_S,
            context=context,
            also_check=invariants,
        )
        view = check_one_node_per_instance_and_no_orphan(host, NAME, context + "after scale-down: ")
        [head] = [node for node in view["nodes"] if node["is_head"] and node["status"] == "ray_running"]
        assert set(processes_by_instance(host.provider_dir, NAME)) == {head["instance_id"]}, context

        # ---- DELETE leaves nothing ---------------------------------------------------------------------------------
        assert host.api("DELETE", f"/clusters/{NAME}").status_code == 202
        view = wait_for(
            host,
            NAME,
            lambda v: v["status"] == "deleted",
            what="deletion",
            timeout_s=DELETE_TIMEOUT_S,
            context=context,
            also_check=invariants,
        )
        assert all(node["status"] in FINAL_STATUSES for node in view["nodes"]), f"{context}{view['nodes']}"
        assert processes_by_instance(host.provider_dir, NAME) == {}, context
        assert cluster_processes(host.provider_dir, NAME) == [], context
        print(f"{plan}: passed after {host.crashes} crashes of the host", flush=True)
    finally:
        host.stop()
        leftovers = cluster_processes(host.provider_dir, NAME)
        LocalCloudProvider(host.provider_dir).destroy_cluster(NAME)  # kills leftovers, removes Ray's temp folder
        azurites = azurites_on(host.data_dir / "azurite")
        assert host.process is None or not is_alive(host.process.pid)
    assert not leftovers, f"{context}processes of {NAME} outlived the test: {leftovers}"
    assert not azurites, f"{context}Azurite outlived the host: {azurites}"


ORPHAN_NAME = "e2e-orphan"
ORPHAN_CONFIG = CONFIG.replace(f"cluster_name: {NAME}", f"cluster_name: {ORPHAN_NAME}")
ORPHAN_STOP_TIMEOUT_S = 30.0  # a few ticks


def test_an_instance_the_table_does_not_know_is_stopped_at_once_and_does_not_hold_a_delete(work_dir: Path):
    """What a crash leaves when rows are lost (or an old generation leaves): a Ray worker tagged for the cluster, with
    no row. The tick finds it ("orphan"), marks it terminating, and must stop it then, not after the 300 s terminate
    timeout; a DELETE meanwhile must not wait for that timeout with a raylet alive."""
    host = new_host(work_dir)
    provider = LocalCloudProvider(host.provider_dir)
    try:
        host.start()
        response = host.api("POST", "/clusters", data=ORPHAN_CONFIG, headers={"content-type": "application/yaml"})
        assert response.status_code == 202, response.text
        view = wait_for(
            host, ORPHAN_NAME, lambda v: v["status"] == "running", what="the head", timeout_s=HEAD_TIMEOUT_S
        )
        orphan_id = secrets.token_hex(8)
        provider.launch(
            LaunchRequest(
                cluster_name=ORPHAN_NAME,
                instance_id=orphan_id,
                request_id=secrets.token_hex(16),
                node_type="cpu",
                is_head=False,
                resources={"CPU": 1},
                node_config={},
                cluster_token=provider.auth_token_path(ORPHAN_NAME).read_text(),
                config_hash="",
                head_address=view["head"]["ray_address"],
            )
        )
        # The next tick may find it while it is still starting: it is terminated in that tick either way.
        found = wait_for(
            host,
            ORPHAN_NAME,
            lambda v: any(e["kind"] == "orphan" and orphan_id in e["message"] for e in v["events"]),
            what=f"the tick to find the unknown instance {orphan_id}",
            timeout_s=ORPHAN_STOP_TIMEOUT_S,
        )
        deadline = time.monotonic() + ORPHAN_STOP_TIMEOUT_S
        while orphan_id in processes_by_instance(host.provider_dir, ORPHAN_NAME) and time.monotonic() < deadline:
            time.sleep(0.5)
        alive = processes_by_instance(host.provider_dir, ORPHAN_NAME).get(orphan_id)
        assert not alive, (
            f"the unknown instance {orphan_id} still runs ({alive}) {ORPHAN_STOP_TIMEOUT_S:g} s after the tick found "
            f"it and marked it terminating\n{describe(try_status(host, ORPHAN_NAME) or found)}"
        )
        assert host.api("DELETE", f"/clusters/{ORPHAN_NAME}").status_code == 202
        view = wait_for(
            host,
            ORPHAN_NAME,
            lambda v: v["status"] == "deleted",
            what="deletion with an unknown instance found",
            timeout_s=DELETE_TIMEOUT_S,
        )
        assert processes_by_instance(host.provider_dir, ORPHAN_NAME) == {}
    finally:
        host.stop()
        leftovers = cluster_processes(host.provider_dir, ORPHAN_NAME)
        provider.destroy_cluster(ORPHAN_NAME)  # kills leftovers, removes Ray's temp folder
        azurites = azurites_on(host.data_dir / "azurite")
    assert not leftovers, f"processes of {ORPHAN_NAME} outlived the test: {leftovers}"
    assert not azurites, f"Azurite outlived the host: {azurites}"
