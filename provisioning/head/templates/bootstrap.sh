#!/bin/bash
# First-boot script of a Ray $node_role node of cluster $cluster_name (run once by cloud-init, as root).
# The cluster token is never passed on a command line or printed: it is in /etc/ray/cluster-token (0600, root),
# and systemd hands it to the Ray units through LoadCredential.
set -euo pipefail
exec >>/var/log/ray-bootstrap.log 2>&1

RAY_HOME=/opt/ray
RAY_VERSION="$ray_version"

# Install Ray unless the image (or an earlier boot) already has it.
if ! command -v ray >/dev/null 2>&1 && [ ! -x "$$RAY_HOME/venv/bin/ray" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q python3-venv python3-pip
  python3 -m venv "$$RAY_HOME/venv"
  "$$RAY_HOME/venv/bin/pip" install -q "ray[default]==$$RAY_VERSION"
fi
ray_bin="$$(command -v ray || echo "$$RAY_HOME/venv/bin/ray")"
"$$ray_bin" --version

# The cluster config's initialization commands (as root, as Ray's launcher runs them on the host).
$initialization_commands

# The cluster config's setup commands (as the SSH user, as `ray up` runs them over SSH).
$setup_commands

systemctl daemon-reload
systemctl enable --now ray-node.service
$enable_agent
