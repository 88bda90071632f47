#!/bin/bash
# Started by ray-node.service: Ray in $node_role mode, in the foreground so systemd supervises it.
set -euo pipefail
# systemd put the token there (LoadCredential=, or the drop-in of systemd-credentials.sh): Ray reads it by path.
export RAY_AUTH_TOKEN_PATH="$$CREDENTIALS_DIRECTORY/cluster-token"
ray_bin="$$(command -v ray || echo /opt/ray/venv/bin/ray)"
node_ip="$$(hostname -I | awk '{print $$1}')"
exec "$$ray_bin" start --block --node-ip-address="$$node_ip" $ray_start_arguments
