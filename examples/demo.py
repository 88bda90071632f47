"""`make demo`: the autoscaler driving real Ray on 127.0.0.1, end to end, through the HTTP API.

1. start Azurite and the function app under the local host (timer, queue and HTTP triggers, as in Azure);
2. POST examples/local-demo.yaml and wait for the head;
3. run a Ray workload that needs more CPUs than the head has, printing one status line per change;
4. wait for the scale-down after the workload, then DELETE the cluster and check that no Ray process is left;
5. print a summary and write demo-out/timeline.png.
It ends by itself (hard limit: DEMO_DEADLINE_S).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from local.stack import REPO_ROOT, LocalStack

DEMO_DEADLINE_S = 290.0
POLL_S = 1.0
OUT = REPO_ROOT / "demo-out"
CONFIG = REPO_ROOT / "examples" / "local-demo.yaml"
WORKER_STATUSES = ("queued", "requested", "allocated", "ray_running", "draining", "terminating")


class DemoFailed(RuntimeError):
    pass


@dataclass
class Sample:
    t_s: float
    pending: int
    by_status: dict[str, int]


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    demand_at: float | None = None
    first_launch_at: float | None = None
    satisfied_at: float | None = None
    last_line: str = ""

    def now_s(self) -> float:
        return time.monotonic() - self.started


def api(stack: LocalStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{stack.api_url}{path}", timeout=10, **kwargs)


def azray(stack: LocalStack, *arguments: str) -> None:
    """Run the azray CLI against this stack, its output shown as it comes; a failure ends the demo."""
    command = [sys.executable, "-m", "azray", "--url", stack.api_url, *arguments]
    print(f"$ azray {' '.join(arguments)}", flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise DemoFailed(f"azray {arguments[0]} exited with {result.returncode}")


def status(stack: LocalStack, name: str) -> dict[str, Any]:
    response = api(stack, "GET", f"/clusters/{name}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def workers_by_status(view: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in view["nodes"]:
        if not node["is_head"] and node["status"] in WORKER_STATUSES:
            counts[node["status"]] = counts.get(node["status"], 0) + 1
    return counts


def observe(stack: LocalStack, name: str, timeline: Timeline) -> dict[str, Any]:
    view = status(stack, name)
    by_status = workers_by_status(view)
    pending = sum(int(p.get("count", 0)) for p in view.get("pending_demand", []))
    now = timeline.now_s()
    timeline.samples.append(Sample(now, pending, by_status))
    if timeline.demand_at is not None and timeline.first_launch_at is None and sum(by_status.values()) > 0:
        timeline.first_launch_at = now
    reasons = view["last_decision"]["reasons"]
    nodes = " ".join(f"{k}={v}" for k, v in sorted(by_status.items())) or "no workers"
    line = f"{view['status']:<8} workers: {nodes:<40} pending: {pending:<3} decision: {reasons[0] if reasons else '-'}"
    if line != timeline.last_line:
        print(f"[{now:6.1f}s] {line}", flush=True)
        timeline.last_line = line
    return view


def wait_for(
    stack: LocalStack, name: str, timeline: Timeline, *, what: str, done: Any, deadline: float
) -> dict[str, Any]:
    while True:
        view = observe(stack, name, timeline)
        if done(view):
            return view
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def run_workload(view: dict[str, Any], stack: LocalStack) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # without it a driver's tasks never reach the worker nodes
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": view["head"]["auth_token_path"],
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_AUTH_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "examples" / "demo_workload.py"), view["head"]["ray_address"]],
        env=env,
        text=True,
    )


def plot(timeline: Timeline, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s.t_s for s in timeline.samples]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    top.step(times, [s.pending for s in timeline.samples], where="post", color="tab:red")
    top.set_ylabel("pending tasks")
    top.set_title("Ray serverless autoscaler: local demo")
    bottom.stackplot(
        times,
        *[[s.by_status.get(status_name, 0) for s in timeline.samples] for status_name in WORKER_STATUSES],
        labels=WORKER_STATUSES,
        step="post",
    )
    bottom.set_ylabel("workers by status")
    bottom.set_xlabel("seconds since the cluster was created")
    bottom.legend(loc="upper right", fontsize="small")
    for axis in (top, bottom):
        for mark, label in ((timeline.demand_at, "demand"), (timeline.satisfied_at, "satisfied")):
            if mark is not None:
                axis.axvline(mark, color="grey", linestyle=":", linewidth=1)
                if axis is top:
                    axis.annotate(label, (mark, 0), fontsize="small", rotation=90, va="bottom")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def node_seconds(timeline: Timeline) -> float:
    total = 0.0
    for before, after in zip(timeline.samples, timeline.samples[1:], strict=False):
        alive = sum(before.by_status.get(s, 0) for s in ("allocated", "ray_running", "draining"))
        total += alive * (after.t_s - before.t_s)
    return total


def main() -> int:
    data_dir = OUT / "data"
    try:
        return run_demo(data_dir)
    except BaseException:
        # Whatever went wrong, leave no Ray process behind.
        from provisioning.local import LocalCloudProvider

        LocalCloudProvider(data_dir / "provider").destroy_cluster("local-demo")
        raise


def run_demo(data_dir: Path) -> int:
    from provisioning.local import cluster_processes

    deadline = time.monotonic() + DEMO_DEADLINE_S
    shutil.rmtree(OUT, ignore_errors=True)
    name = "local-demo"
    timeline = Timeline()
    print("starting Azurite and the local Functions host on 127.0.0.1 ...", flush=True)
    with LocalStack(data_dir=data_dir, port=0) as stack:
        print(f"API at {stack.api_url}; reconcile timer every 15 s, wake-ups from the head agent", flush=True)
        # The CLI, as a user runs it: it creates the cluster and follows it until the head runs Ray.
        timeline.started = time.monotonic()
        azray(stack, "up", str(CONFIG), "--timeout", str(round(deadline - time.monotonic())))
        view = wait_for(
            stack, name, timeline, what="the head", done=lambda v: v["status"] == "running", deadline=deadline
        )
        print(f"head is up: ray_address={view['head']['ray_address']} dashboard={view['head']['dashboard_url']}")

        timeline.demand_at = timeline.now_s()
        workload = run_workload(view, stack)
        while workload.poll() is None:
            view = observe(stack, name, timeline)
            if timeline.satisfied_at is None and workers_by_status(view).get("ray_running", 0) >= 3:
                timeline.satisfied_at = timeline.now_s()
            if time.monotonic() > deadline:
                workload.kill()
                raise DemoFailed("the workload did not finish in time")
            time.sleep(POLL_S)
        if workload.returncode != 0:
            raise DemoFailed(f"the workload failed with exit code {workload.returncode}")
        if timeline.satisfied_at is None:
            timeline.satisfied_at = timeline.now_s()

        print("workload finished; waiting for idle workers to be scaled down ...", flush=True)
        wait_for(stack, name, timeline, what="scale-down", done=lambda v: not workers_by_status(v), deadline=deadline)

        azray(stack, "status", name)
        azray(stack, "down", name, "--yes", "--timeout", str(max(30, round(deadline - time.monotonic()))))
        wait_for(stack, name, timeline, what="deletion", done=lambda v: v["status"] == "deleted", deadline=deadline)
        leftovers = cluster_processes(data_dir / "provider", name)
        if leftovers:
            raise DemoFailed(f"Ray processes of the cluster are still running: {leftovers}")
        print("no Ray process of the cluster remains", flush=True)

    plot(timeline, OUT / "timeline.png")
    summary = {
        "demand_to_first_launch_s": round((timeline.first_launch_at or 0) - (timeline.demand_at or 0), 1),
        "demand_to_satisfied_s": round((timeline.satisfied_at or 0) - (timeline.demand_at or 0), 1),
        "worker_node_seconds": round(node_seconds(timeline), 1),
        "peak_workers": max((sum(s.by_status.values()) for s in timeline.samples), default=0),
        "timeline_png": str((OUT / "timeline.png").relative_to(REPO_ROOT)),
    }
    print("\nsummary")
    print(f"  demand -> first launch:   {summary['demand_to_first_launch_s']} s")
    print(f"  demand -> satisfied:      {summary['demand_to_satisfied_s']} s (3 workers running Ray)")
    print(f"  worker node-seconds used: {summary['worker_node_seconds']}")
    print(f"  timeline:                 {summary['timeline_png']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DemoFailed as failure:
        print(f"demo failed: {failure}", file=sys.stderr)
        sys.exit(1)
