#!/bin/bash
# First-boot script of a Ray $node_role node of cluster $cluster_name (run once by cloud-init, as root).
# The cluster token is never passed on a command line or printed: it is in /etc/ray/cluster-token (0600, root),
# systemd hands it to the Ray units (/opt/ray/systemd-credentials.sh), and the boot-phase reports below give it to
# curl on standard input.
set -euo pipefail
exec >>/var/log/ray-bootstrap.log 2>&1

RAY_HOME=/opt/ray
RAY_VERSION="$ray_version"
NODE_ROLE="$node_role"
INSTANCE_ID="$instance_id"
VM_NAME="$vm_name"
# The head agent, on the head's private IP (the NSG admits the agent's port from the cluster subnet).
BOOT_PHASE_URL="$boot_phase_url"
# shellcheck source=boot-functions.sh
source /opt/ray/boot-functions.sh
boot_step="starting"

# A failed boot is reported on the way out, whatever ended it: a failing command (set -e; the ERR trap notes its
# line), an `exit` in the config's commands, or an unset variable (set -u, which no ERR trap sees).
failed_line=""
trap 'failed_line=$$LINENO' ERR
on_exit() {
  local exit_code="$$1"
  if [ "$$exit_code" -ne 0 ]; then
    echo "bootstrap failed while $$boot_step (exit $$exit_code$${failed_line:+, line $$failed_line})"
    report_boot_phase boot_failed \
      "$$boot_step failed: exit $$exit_code$${failed_line:+ at bootstrap.sh line $$failed_line}. See /var/log/ray-bootstrap.log"
  fi
}
trap 'on_exit $$?' EXIT

# A scale set's VM boots from the set's one custom data: its instance id is its own name, from the instance metadata.
if [ "$$INSTANCE_ID" = "$name_from_metadata" ]; then
  boot_step="reading this VM's name from the instance metadata service"
  INSTANCE_ID="$$(curl -sSf --retry 10 --retry-delay 2 --max-time 10 -H Metadata:true "$instance_metadata_name_url")"
  VM_NAME="$$INSTANCE_ID"
fi
# What the Ray and preemption-watch units run as (EnvironmentFile=); kept across reboots.
install -d -m 0755 /etc/ray
printf 'RAY_CLOUD_INSTANCE_ID=%s\nVM_NAME=%s\n' "$$INSTANCE_ID" "$$VM_NAME" >/etc/ray/node.env

# The head's agent starts at the end of this script: only workers can report this early.
if [ "$$NODE_ROLE" = worker ]; then
  report_boot_phase cloud_init_running "bootstrap started"
fi

# Install Ray unless the image (or an earlier boot) already has it.
boot_step="installing Ray $$RAY_VERSION"
if ! command -v ray >/dev/null 2>&1 && [ ! -x "$$RAY_HOME/venv/bin/ray" ]; then
  # Ray $$RAY_VERSION has wheels for Python 3.10 and later only: say so instead of failing inside pip.
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "python3 is $$(python3 -V 2>&1); Ray $$RAY_VERSION needs Python 3.10 or later: use an image with Ray or a newer Python"
    false
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -q
  apt_get install -y -q python3-venv python3-pip
  python3 -m venv "$$RAY_HOME/venv"
  "$$RAY_HOME/venv/bin/pip" install -q "ray[default]==$$RAY_VERSION"
fi
ray_bin="$$(command -v ray || echo "$$RAY_HOME/venv/bin/ray")"
"$$ray_bin" --version

# The cluster config's initialization commands (as root, as Ray's launcher runs them on the host).
boot_step="running the initialization commands"
$initialization_commands

# The cluster config's setup commands (as the SSH user, as `ray up` runs them over SSH).
boot_step="running the setup commands"
$setup_commands

boot_step="starting Ray"
/opt/ray/systemd-credentials.sh /etc/systemd/system
systemctl daemon-reload
systemctl enable --now ray-node.service
$enable_agent
# Spot eviction notices drain the node (Azure Scheduled Events -> head agent -> Ray).
systemctl enable --now ray-preempt-watch.service
if [ "$$NODE_ROLE" = head ]; then
  # The agent was started just now: give it a few seconds to listen.
  BOOT_PHASE_RETRIES=10 report_boot_phase ray_started "ray-node.service started"
else
  report_boot_phase ray_started "ray-node.service started"
fi
boot_step="done"
