"""Scale-up latency on this machine: our control plane (15 s timer + head-agent wake-ups) versus Ray's own autoscaler.

Workload, identical on both sides: a head with 0 CPUs, one worker type of {CPU: 1} with at most 3 nodes (object
store 128 MiB per node), and a driver that submits 3 tasks of 1 CPU. Each task holds its CPU until all 3 have
started (a barrier, see bench/support_latency.py), so every task needs a node of its own.

Ours (`--runs` times, 5 by default): Azurite + the real function app under the local host (LocalStack), the reconcile
timer at its default 15 s, the local provider (real Ray nodes on 127.0.0.1, launch_delay_s 0 like Ray's fake
provider). One cluster serves every run: between runs its workers idle out (idle_timeout_s 2; the bench then POSTs
the reconcile endpoint so the scale-down does not wait for the timer), and the next run starts once every worker is
gone and no follow-up tick chain is left running, so each scale-up starts from 0 workers with only the timer and the
head agent's wake-up to trigger it.
Ray's (same count): Ray's autoscaler v1 (the monitor) with its fake multi-node provider, started as
`ray.cluster_utils.AutoscalingCluster` starts it (RAY_FAKE_CLUSTER=1, AUTOSCALER_UPDATE_INTERVAL_S=1), with a
config written here after the example.yaml the wheel lacks; a fresh cluster per run, every port on 127.0.0.1.

Definitions (all wall-clock epoch seconds of this machine: time.time() in every process, UTC datetimes in the store):
- demand time: when the driver (a subprocess) submits the 3 tasks; it prints time.time() right before submitting.
- demand_to_launch_s (ours): demand -> our provider's launch call for the first worker. The local provider records
  the call's time.time() as `launched_at` in its instance file; the stored transition to `requested` (the status
  event's `at`) carries the clock of the tick that made the call, read when the tick starts, so it comes a little
  earlier and is reported beside it as `demand_to_requested_recorded_s`.
- demand_to_running_s: demand -> the LAST of the 3 tasks starts running (each task returns time.time() at its start).
- demand_to_first_node_s: demand -> the first worker node registers with Ray's GCS (its GcsNodeInfo.start_time_ms).
- demand_to_wake_up_s: demand -> the local host receives the head agent's POST .../reconcile (its HTTP log line).
Medians over the runs. Target: demand_to_launch_s <= 2 s, and demand_to_running_s <= ray_demand_to_running_s.

Run: `.venv/bin/python bench/latency_local.py [--runs N] [--only ours|ray]` (a few minutes). One progress line per
run and side; the last line is JSON:
{"demand_to_launch_s": m, "demand_to_running_s": m, "timer_period_s": 15, "ray_demand_to_running_s": m, ...extras}.
Everything started here (Azurite, the local host, every Ray process of both sides) is stopped on exit, failures and
Ctrl-C included; the bench fails if a Ray process outlives its cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from support_latency import DriverResult

    from autoscaler.state import StateStore
    from local.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
TIMER_PERIOD_S = 15
TIMER_SCHEDULE = "*/15 * * * * *"  # NCRONTAB with seconds: the default, set explicitly against local.settings.json
CLUSTER_NAME = "latency-bench"
WORKER_TYPE = "cpu-worker"
IDLE_TIMEOUT_S = 2.0
LAUNCH_TARGET_S = 2.0
HEAD_READY_TIMEOUT_S = 180.0
SCALE_DOWN_TIMEOUT_S = 90.0
DELETE_TIMEOUT_S = 60.0
NUDGE_INTERVAL_S = 3.0
POLL_S = 0.5
HTTP_TIMEOUT_S = 10.0
BENCH_ENVIRONMENT = dict(os.environ)  # as the bench started, before LocalStack applies the app settings


class BenchFailedError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# One run's numbers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OurRun:
    driver: DriverResult
    requested_recorded_at: float  # the stored transition of the first worker to `requested` (the tick's clock)
    launch_called_at: float | None  # the local provider's own record of the launch call
    launcher_nodes_ready_at: tuple[float, ...]  # when each launcher had its Ray node started (Node() returned)
    launching_tick_reason: str  # what queued the tick that launched: wake, timer, follow-up
    wake_up_received_at: float | None  # the first POST .../reconcile after the demand, as the local host saw it

    @property
    def demand_to_launch_s(self) -> float:
        launched_at = self.launch_called_at if self.launch_called_at is not None else self.requested_recorded_at
        return launched_at - self.driver.demand_at

    @property
    def demand_to_requested_recorded_s(self) -> float:
        return self.requested_recorded_at - self.driver.demand_at

    @property
    def demand_to_wake_up_s(self) -> float | None:
        return None if self.wake_up_received_at is None else self.wake_up_received_at - self.driver.demand_at


def describe_tasks(driver: DriverResult) -> str:
    def since_demand(times: Sequence[float]) -> str:
        return ", ".join(f"+{moment - driver.demand_at:.2f}" for moment in sorted(times)) or "-"

    return (
        f"worker nodes up at {since_demand(driver.worker_nodes_started_at)} s, "
        f"tasks started at {since_demand(driver.task_started_at)} s -> all running +{driver.demand_to_running_s:.2f} s"
    )


def load_note() -> str:
    return "load {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 3) if present else None


def rounded(values: Sequence[float | None]) -> list[float | None]:
    return [None if value is None else round(value, 3) for value in values]


# --------------------------------------------------------------------------------------------
# Log records of the local host, for the wake-up and the reason of the launching tick
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturedRecord:
    created_at: float
    logger_name: str
    args: tuple[Any, ...]


class LogCapture(logging.Handler):
    """Keeps the local host's request lines and the service's tick lines; shows their warnings on stderr.

    The loggers stop propagating while captured, so their INFO lines (one per HTTP request) stay out of the output.
    """

    LOGGERS = ("local.http", "autoscaler.service")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[CapturedRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        with self._lock_records:
            self.records.append(CapturedRecord(record.created, record.name, args))
        if record.levelno >= logging.WARNING:
            print(f"{record.name}: {record.getMessage()}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def installed(self) -> Iterator[LogCapture]:
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        saved = [(logger.level, logger.propagate) for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.addHandler(self)
        try:
            yield self
        finally:
            for logger, (level, propagate) in zip(loggers, saved, strict=True):
                logger.removeHandler(self)
                logger.setLevel(level)
                logger.propagate = propagate

    def snapshot(self) -> list[CapturedRecord]:
        with self._lock_records:
            return list(self.records)

    def first_wake_up_after(self, since: float, cluster_name: str) -> float | None:
        """When the first POST .../reconcile after `since` arrived (its log line comes after the handler ran)."""
        path = f"/api/clusters/{cluster_name}/reconcile"
        arrivals = [
            record.created_at - float(record.args[3]) / 1000.0
            for record in self.snapshot()
            if record.logger_name == "local.http" and len(record.args) == 4 and record.args[:2] == ("POST", path)
        ]
        later = [arrived for arrived in arrivals if arrived >= since]
        return min(later) if later else None

    def reason_of_launching_tick(self, since: float, instance_id: str) -> str:
        """The queue message reason of the tick whose actions launched `instance_id`."""
        for record in self.snapshot():
            if (
                record.logger_name == "autoscaler.service"
                and record.created_at >= since
                and len(record.args) == 4
                and f"launch {WORKER_TYPE} {instance_id}" in str(record.args[3])
            ):
                return str(record.args[1])
        return "?"


# --------------------------------------------------------------------------------------------
# Our side
# --------------------------------------------------------------------------------------------


def cluster_config() -> dict[str, Any]:
    return {
        "cluster_name": CLUSTER_NAME,
        "max_workers": 3,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 1,
        "provider": {"type": "local", "launch_delay_s": 0.0},
        "auth": {"ssh_user": "ray"},
        "available_node_types": {
            "head": {"resources": {"CPU": 0}, "min_workers": 0, "max_workers": 0, "node_config": {}},
            WORKER_TYPE: {
                "resources": {"CPU": 1},
                "min_workers": 0,
                "max_workers": 3,
                "idle_timeout_s": IDLE_TIMEOUT_S,
                "node_config": {},
            },
        },
        "head_node_type": "head",
    }


class OurCluster:
    """The control plane's HTTP API and its store, for one cluster."""

    def __init__(self, stack: LocalStack, store: StateStore) -> None:
        self.stack = stack
        self.store = store
        self.url = f"{stack.api_url}/clusters/{CLUSTER_NAME}"

    def create(self) -> dict[str, Any]:
        response = requests.post(f"{self.stack.api_url}/clusters", json=cluster_config(), timeout=HTTP_TIMEOUT_S)
        if response.status_code != 202:
            raise BenchFailedError(f"POST /api/clusters answered {response.status_code}: {response.text}")
        return self.wait_for(lambda view: view["status"] == "running", HEAD_READY_TIMEOUT_S, "the head")

    def view(self) -> dict[str, Any]:
        response = requests.get(self.url, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_for(self, done: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.view()
            if done(view):
                return view
            if view["status"] == "failed":
                raise BenchFailedError(f"the cluster failed: {view['status_reason']}")
            if time.monotonic() > deadline:
                raise BenchFailedError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(POLL_S)

    def live_worker_ids(self) -> set[str]:
        return {
            record.instance_id
            for record in self.store.list_instances(CLUSTER_NAME)
            if not record.is_head and record.status.is_live
        }

    def worker_ids(self) -> set[str]:
        return {record.instance_id for record in self.store.list_instances(CLUSTER_NAME) if not record.is_head}

    def nudge(self, token: str) -> None:
        """A reconcile now (as the head agent would ask), so a scale-down between runs does not wait for the timer."""
        requests.post(
            f"{self.url}/reconcile",
            json={"reason": "latency bench: scale-down between runs"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=HTTP_TIMEOUT_S,
        ).raise_for_status()

    def delete(self) -> None:
        requests.delete(self.url, timeout=HTTP_TIMEOUT_S).raise_for_status()
        self.wait_for(lambda view: view["status"] == "deleted", DELETE_TIMEOUT_S, "the deletion")

    def requested_at(self, instance_ids: set[str]) -> dict[str, float]:
        """Epoch seconds of each instance's stored transition to `requested`, from the cluster's events."""
        found: dict[str, float] = {}
        for event in self.store.list_events(CLUSTER_NAME, limit=1000):
            if event.instance_id in instance_ids and event.kind == "status" and "-> requested" in event.message:
                found[event.instance_id] = event.at.timestamp()
        return found


def provider_times(provider_dir: Path, instance_ids: set[str], file_suffix: str, key: str) -> list[float]:
    """A time from the local provider's instance files (gone once the instance is terminated): `launched_at` of
    `<id>.json` (written by `launch`), `ray_started_at` of `<id>.endpoints.json` (the launcher's node is up)."""
    found = []
    for instance_id in instance_ids:
        path = provider_dir / "clusters" / CLUSTER_NAME / "instances" / f"{instance_id}{file_suffix}"
        with contextlib.suppress(OSError, ValueError, KeyError):
            found.append(float(json.loads(path.read_text())[key]))
    return sorted(found)


def driver_environment(token_path: str) -> dict[str, str]:
    # The environment from before LocalStack added the app settings: the driver needs none of them (nor the token key).
    environment = {name: value for name, value in BENCH_ENVIRONMENT.items() if not name.startswith("RAY_")}
    environment.update(
        {
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else a loopback driver never reaches the worker nodes
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": token_path,
        }
    )
    return environment


def run_ours(runs: int) -> list[OurRun]:
    from local.stack import LocalStack
    from provisioning.local import LocalCloudProvider, cluster_processes

    data_dir = Path(tempfile.mkdtemp(prefix="latency-ours-"))
    provider_dir = data_dir / "provider"
    capture = LogCapture()
    try:
        with (
            capture.installed(),
            LocalStack(data_dir=data_dir, port=0, settings={"RECONCILE_SCHEDULE": TIMER_SCHEDULE}) as stack,
        ):
            from autoscaler.settings import Settings
            from autoscaler.state import TableStateStore

            settings = Settings.from_environment()
            store = TableStateStore.from_connection_string(settings.storage_connection_string, settings.table_prefix)
            cluster = OurCluster(stack, store)
            try:
                return run_our_workloads(cluster, capture, provider_dir, runs)
            finally:
                with contextlib.suppress(Exception):
                    cluster.delete()
    finally:
        # Whatever happened above, no Ray process of the cluster may survive the bench.
        LocalCloudProvider(provider_dir).destroy_cluster(CLUSTER_NAME)
        leftovers = cluster_processes(provider_dir, CLUSTER_NAME)
        shutil.rmtree(data_dir, ignore_errors=True)
        if leftovers:
            raise BenchFailedError(f"Ray processes of our cluster outlived it: {leftovers}")


def run_our_workloads(cluster: OurCluster, capture: LogCapture, provider_dir: Path, runs: int) -> list[OurRun]:
    from support_latency import non_loopback_listeners, run_driver

    from autoscaler.service import FOLLOW_UP_DELAY_S
    from provisioning.local import cluster_processes

    started = time.monotonic()
    view = cluster.create()
    print(f"ours: head running after {time.monotonic() - started:.1f} s at {view['head']['ray_address']}", flush=True)
    token_path = view["head"]["auth_token_path"]
    token = Path(token_path).read_text().strip()
    # A follow-up chain still running would scale up faster than the timer and the wake-up alone: let it end.
    quiet_s = FOLLOW_UP_DELAY_S + 2.0
    results: list[OurRun] = []
    for run in range(1, runs + 1):
        time.sleep(quiet_s)
        known_workers = cluster.worker_ids()
        driver = run_driver(view["head"]["ray_address"], driver_environment(token_path))
        new_workers = cluster.worker_ids() - known_workers
        launch_calls = provider_times(provider_dir, new_workers, ".json", "launched_at")
        nodes_ready = provider_times(provider_dir, new_workers, ".endpoints.json", "ray_started_at")
        if run == 1:
            exposed = non_loopback_listeners(cluster_processes(provider_dir, CLUSTER_NAME))
            if exposed:
                raise BenchFailedError(f"our Ray nodes listen beyond loopback: {exposed}")
        requested = cluster.requested_at(new_workers)
        if not requested:
            raise BenchFailedError(f"run {run}: no worker was launched ({sorted(new_workers)})")
        first_worker = min(requested, key=lambda instance_id: requested[instance_id])
        result = OurRun(
            driver=driver,
            requested_recorded_at=min(requested.values()),
            launch_called_at=min(launch_calls) if launch_calls else None,
            launcher_nodes_ready_at=tuple(nodes_ready),
            launching_tick_reason=capture.reason_of_launching_tick(driver.demand_at - 1.0, first_worker),
            wake_up_received_at=capture.first_wake_up_after(driver.demand_at, CLUSTER_NAME),
        )
        results.append(result)
        wake = result.demand_to_wake_up_s
        print(
            f"ours run {run}/{runs}: wake-up +{wake:.2f} s, " if wake is not None else f"ours run {run}/{runs}: ",
            f"launch +{result.demand_to_launch_s:.2f} s ({len(new_workers)} workers, tick queued by "
            f"{result.launching_tick_reason}), {describe_tasks(driver)}; launchers done at "
            f"{', '.join(f'+{ready - driver.demand_at:.2f}' for ready in nodes_ready)} s [{load_note()}]",
            sep="",
            flush=True,
        )
        scale_down(cluster, token)
    return results


def scale_down(cluster: OurCluster, token: str) -> None:
    time.sleep(IDLE_TIMEOUT_S + 1.0)  # Ray reports idle time in whole seconds; be past the timeout for sure
    deadline = time.monotonic() + SCALE_DOWN_TIMEOUT_S
    next_nudge = 0.0
    while cluster.live_worker_ids():
        if time.monotonic() > deadline:
            raise BenchFailedError(f"the workers were not scaled down within {SCALE_DOWN_TIMEOUT_S:g} s")
        if time.monotonic() >= next_nudge:
            cluster.nudge(token)
            next_nudge = time.monotonic() + NUDGE_INTERVAL_S
        time.sleep(POLL_S)


# --------------------------------------------------------------------------------------------
# Ray's side
# --------------------------------------------------------------------------------------------


def run_ray(runs: int) -> list[DriverResult]:
    from support_latency import RayAutoscalingCluster, non_loopback_listeners, run_driver

    environment = {name: value for name, value in BENCH_ENVIRONMENT.items() if not name.startswith("RAY_")}
    environment.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})
    results: list[DriverResult] = []
    for run in range(1, runs + 1):
        with RayAutoscalingCluster() as cluster:
            driver = run_driver(cluster.gcs_address, environment)
            if run == 1:
                exposed = non_loopback_listeners(cluster.pids())
                if exposed:
                    raise BenchFailedError(f"Ray's cluster listens beyond loopback: {exposed}")
        results.append(driver)
        print(f"ray  run {run}/{runs}: {describe_tasks(driver)} [{load_note()}]", flush=True)
    return results


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def summarize(ours: list[OurRun], ray: list[DriverResult], runs: int) -> dict[str, Any]:
    demand_to_launch_s = median_or_none([run.demand_to_launch_s for run in ours])
    demand_to_running_s = median_or_none([run.driver.demand_to_running_s for run in ours])
    ray_demand_to_running_s = median_or_none([run.demand_to_running_s for run in ray])
    reasons: dict[str, int] = {}
    for run in ours:
        reasons[run.launching_tick_reason] = reasons.get(run.launching_tick_reason, 0) + 1
    return {
        "demand_to_launch_s": demand_to_launch_s,
        "demand_to_running_s": demand_to_running_s,
        "timer_period_s": TIMER_PERIOD_S,
        "ray_demand_to_running_s": ray_demand_to_running_s,
        "ray_demand_to_first_node_s": median_or_none([run.demand_to_first_node_s for run in ray]),
        "ray_demand_to_first_task_s": median_or_none([run.demand_to_first_task_s for run in ray]),
        "demand_to_first_node_s": median_or_none([run.driver.demand_to_first_node_s for run in ours]),
        "demand_to_first_task_s": median_or_none([run.driver.demand_to_first_task_s for run in ours]),
        "demand_to_wake_up_s": median_or_none([run.demand_to_wake_up_s for run in ours]),
        "demand_to_requested_recorded_s": median_or_none([run.demand_to_requested_recorded_s for run in ours]),
        "launching_tick_reasons": reasons,
        "launch_target_met": None if demand_to_launch_s is None else demand_to_launch_s <= LAUNCH_TARGET_S,
        "running_target_met": (
            None
            if demand_to_running_s is None or ray_demand_to_running_s is None
            else demand_to_running_s <= ray_demand_to_running_s
        ),
        "runs": runs,
        "per_run": {
            "demand_to_launch_s": rounded([run.demand_to_launch_s for run in ours]),
            "demand_to_running_s": rounded([run.driver.demand_to_running_s for run in ours]),
            "demand_to_first_node_s": rounded([run.driver.demand_to_first_node_s for run in ours]),
            "ray_demand_to_running_s": rounded([run.demand_to_running_s for run in ray]),
            "ray_demand_to_first_node_s": rounded([run.demand_to_first_node_s for run in ray]),
        },
    }


def print_summary(summary: dict[str, Any]) -> None:
    def shown(key: str) -> str:
        value = summary[key]
        return "-" if value is None else f"{value:.2f} s"

    print("\nmedians (demand = the driver submitting 3 tasks of 1 CPU to a head with 0 CPUs)")
    print(f"  ours: wake-up received   {shown('demand_to_wake_up_s')}")
    print(f"  ours: launch call        {shown('demand_to_launch_s')} (target <= {LAUNCH_TARGET_S:g} s)")
    print(f"  ours: first worker node  {shown('demand_to_first_node_s')}")
    print(f"  ours: all tasks running  {shown('demand_to_running_s')}")
    print(f"  ray:  first worker node  {shown('ray_demand_to_first_node_s')}")
    print(f"  ray:  all tasks running  {shown('ray_demand_to_running_s')}")
    print(f"  launching ticks queued by: {summary['launching_tick_reasons']}", flush=True)


# --------------------------------------------------------------------------------------------


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwinds through every cleanup below; a second signal must not interrupt that cleanup (SIGKILL still works).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs per side (default 5)")
    parser.add_argument("--only", choices=("ours", "ray"), help="measure one side only")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # `python bench/latency_local.py` (make bench) puts bench/ on the path, `-m bench.latency_local` the root: the
    # project's packages need the root, the helper module (imported as `support_latency`) needs bench/.
    for folder in (ROOT, ROOT / "bench"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    started = time.monotonic()
    ours = run_ours(args.runs) if args.only in (None, "ours") else []
    ray = run_ray(args.runs) if args.only in (None, "ray") else []
    summary = summarize(ours, ray, args.runs)
    print_summary(summary)
    print(f"total {time.monotonic() - started:.0f} s", flush=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchFailedError as failure:
        print(f"latency bench failed: {failure}", file=sys.stderr)
        sys.exit(1)
