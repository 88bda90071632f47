"""A two-node Ray cluster on 127.0.0.1 in a process of its own, for tests of drivers that must reach a worker:
`python -m tests.support.two_node_ray` starts a head without CPUs and a worker with two, prints
`{"address": ..., "worker_node_id": ...}` on one line, and shuts the cluster down when its standard input closes.

Its own process because Ray reads RAY_AUTH_MODE when it is first imported: a test process that imported Ray
earlier would talk to a token-protected cluster without the token.
"""

from __future__ import annotations

import json
import sys

from ray.cluster_utils import Cluster

LOOPBACK = "127.0.0.1"


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": LOOPBACK})
    try:
        worker = cluster.add_node(num_cpus=2, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        print(json.dumps({"address": cluster.address, "worker_node_id": worker.node_id}), flush=True)
        sys.stdin.read()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
