"""The demo's Ray driver: 6 tasks of 1 CPU, 20 s each, on a cluster whose head has no CPU.

Run by examples/demo.py with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH set to the cluster's token file.
"""

from __future__ import annotations

import logging
import socket
import sys
import time

import ray

TASKS = 6
TASK_S = 20.0


@ray.remote(num_cpus=1)
def work(index: int) -> tuple[int, str]:
    time.sleep(TASK_S)
    return index, socket.gethostname()


def main() -> None:
    address = sys.argv[1]
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    started = time.monotonic()
    print(f"workload: submitting {TASKS} tasks of 1 CPU x {TASK_S:.0f} s", flush=True)
    results = ray.get([work.remote(i) for i in range(TASKS)])
    print(f"workload: {len(results)} tasks done in {time.monotonic() - started:.1f} s", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
