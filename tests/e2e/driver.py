"""A Ray driver for the end-to-end tests, run as a subprocess: `python tests/e2e/driver.py ADDRESS SIGNAL_DIR MODE ...`.

A driver must live in its own process (one Ray client per process, with the cluster's token settings in its
environment). It talks to the test through files in SIGNAL_DIR, so the test decides when work starts and ends:
- every task writes `started-<index>-<attempt uuid>` when it begins (a retried task writes a second file), then
  waits until `release` exists;
- `placement-group` writes `ready` once the group is placed; `request-resources` writes `requested`;
- `pin-after-go` runs one task, writes `first-task-node` (the Ray node id it ran on), waits for `go`, then runs
  a task pinned to that node.
Every wait is bounded (MAX_WAIT_S), so a forgotten driver ends by itself.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from pathlib import Path

import ray
from ray.autoscaler.sdk import request_resources
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

MAX_WAIT_S = 240.0
POLL_S = 0.1


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + MAX_WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(POLL_S)


def touch_atomically(path: Path, content: str = "") -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(content)
    partial.replace(path)


@ray.remote
def held_task(signal_dir: str, index: int) -> str:
    folder = Path(signal_dir)
    touch_atomically(folder / f"started-{index}-{uuid.uuid4().hex[:8]}", ray.get_runtime_context().get_node_id())
    wait_for_file(folder / "release")
    return ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=1)
def node_of_this_task() -> str:
    return ray.get_runtime_context().get_node_id()


def run_tasks(signal_dir: Path, count: int, num_cpus: float, num_gpus: float) -> None:
    task = held_task.options(num_cpus=num_cpus, num_gpus=num_gpus)
    nodes = ray.get([task.remote(str(signal_dir), index) for index in range(count)])
    print(f"driver: {count} tasks done on {len(set(nodes))} nodes", flush=True)


def hold_placement_group(signal_dir: Path, bundles: int, bundle_cpus: float, strategy: str) -> None:
    group = placement_group([{"CPU": bundle_cpus}] * bundles, strategy=strategy)
    ray.get(group.ready(), timeout=MAX_WAIT_S)
    touch_atomically(signal_dir / "ready")
    wait_for_file(signal_dir / "release")
    remove_placement_group(group)


def hold_resource_request(signal_dir: Path, num_cpus: int) -> None:
    request_resources(num_cpus=num_cpus)
    touch_atomically(signal_dir / "requested")
    wait_for_file(signal_dir / "release")
    request_resources(num_cpus=0)  # the request outlives the driver otherwise


def pin_after_go(signal_dir: Path) -> None:
    node_id = ray.get(node_of_this_task.remote())
    touch_atomically(signal_dir / "first-task-node", node_id)
    wait_for_file(signal_dir / "go")
    pinned = held_task.options(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
    ray.get(pinned.remote(str(signal_dir), 0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("signal_dir", type=Path)
    modes = parser.add_subparsers(dest="mode", required=True)
    tasks = modes.add_parser("tasks")
    tasks.add_argument("--count", type=int, required=True)
    tasks.add_argument("--cpus", type=float, default=1.0)
    tasks.add_argument("--gpus", type=float, default=0.0)
    group = modes.add_parser("placement-group")
    group.add_argument("--bundles", type=int, required=True)
    group.add_argument("--bundle-cpus", type=float, default=1.0)
    group.add_argument("--strategy", default="STRICT_SPREAD")
    request = modes.add_parser("request-resources")
    request.add_argument("--cpus", type=int, required=True)
    modes.add_parser("pin-after-go")
    args = parser.parse_args()

    ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
    if args.mode == "tasks":
        run_tasks(args.signal_dir, args.count, args.cpus, args.gpus)
    elif args.mode == "placement-group":
        hold_placement_group(args.signal_dir, args.bundles, args.bundle_cpus, args.strategy)
    elif args.mode == "request-resources":
        hold_resource_request(args.signal_dir, args.cpus)
    else:
        pin_after_go(args.signal_dir)
    ray.shutdown()


if __name__ == "__main__":
    main()
