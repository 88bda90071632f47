#!/bin/bash
# Started by ray-node.service: Ray in $node_role mode, in the foreground so systemd supervises it.
set -euo pipefail
ray_bin="$$(command -v ray || echo /opt/ray/venv/bin/ray)"
node_ip="$$(hostname -I | awk '{print $$1}')"
exec "$$ray_bin" start --block --node-ip-address="$$node_ip" $ray_start_arguments
