#!/bin/bash
# Started by ray-head-agent.service: the head agent, with the Python that runs Ray.
set -euo pipefail
ray_bin="$$(command -v ray || echo /opt/ray/venv/bin/ray)"
python_bin="$$(dirname "$$(readlink -f "$$ray_bin")")/python"
[ -x "$$python_bin" ] || python_bin=python3
node_ip="$$(hostname -I | awk '{print $$1}')"
cd /opt/ray/control
exec "$$python_bin" -m provisioning.head.agent \
  --gcs-address "$$node_ip:$gcs_port" \
  --host 0.0.0.0 \
  --port $agent_port \
  --cluster-name $cluster_name \
  --token-file "$$CREDENTIALS_DIRECTORY/cluster-token" \
  --control-plane-url $control_plane_url
