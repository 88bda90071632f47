"""Reaching an Azure cluster's head from the user's machine: SSH with the saved key, or Azure Bastion.

Ray's ports are never open to the internet (docs/deploy.md, 'Reach a cluster's head'): the dashboard and Ray Jobs are
reached through an SSH tunnel, and commands run over SSH. The head's public IP and VM id come from the API when it
shows them (`head.public_ip`, `head.vm_id`); otherwise from `az` in the clusters' resource group, by the tags every
VM carries (ray-cluster-name, ray-instance-id).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azray.errors import CliError, ExitCode
from azray.keys import ClusterNotes, saved_key
from azray.target import Target

AZ_LOOKUP_TIMEOUT_S = 90.0
TUNNEL_READY_TIMEOUT_S = 30.0
DASHBOARD_PORT = 8265
HEAD_TOKEN_FILE = "/etc/ray/cluster-token"  # noqa: S105 -- a path, not a secret; written by cloud-init on every Azure node, 0600 root
DEFAULT_BASTION = "bastion"  # the name docs/deploy.md gives the Bastion host

View = dict[str, Any]


@dataclass(frozen=True)
class HeadLocation:
    public_ip: str = ""
    vm_id: str = ""
    lookup_problem: str = ""  # why azray could not find what is empty above


@dataclass(frozen=True)
class Bastion:
    name: str
    resource_group: str  # "" when unknown


def _az(arguments: list[str]) -> tuple[str, str]:
    """(stdout stripped, error line) of one `az` call."""
    try:
        done = subprocess.run(
            ["az", *arguments], capture_output=True, text=True, timeout=AZ_LOOKUP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return "", f"az {arguments[0]} {arguments[1]} failed: {type(error).__name__}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return "", f"az {arguments[0]} {arguments[1]} failed: {last[:200]}"
    return done.stdout.strip(), ""


def locate_head(view: View, target: Target) -> HeadLocation:
    head = view.get("head") or {}
    public_ip, vm_id = str(head.get("public_ip") or ""), str(head.get("vm_id") or "")
    if public_ip or vm_id:
        return HeadLocation(public_ip, vm_id)
    instance_id = str(head.get("instance_id") or "")
    group = target.azd_values.get("CLUSTERS_RESOURCE_GROUP", "")
    if not instance_id:
        return HeadLocation(lookup_problem="the cluster has no head yet")
    if not group:
        return HeadLocation(
            lookup_problem="the API shows neither the head's public IP nor its VM id, and the clusters' resource "
            "group is unknown here (run azray inside the repository of the azd deployment)"
        )
    if not shutil.which("az"):
        return HeadLocation(
            lookup_problem="the API shows neither the head's public IP nor its VM id, and the Azure CLI (az), "
            "which could look them up, is not installed"
        )
    query = (
        f"[?tags.\"ray-cluster-name\"=='{view.get('name', '')}' && tags.\"ray-instance-id\"=='{instance_id}'].id | [0]"
    )
    vm_id, problem = _az(["vm", "list", "--resource-group", group, "--query", query, "--output", "tsv"])
    if not vm_id:
        return HeadLocation(lookup_problem=problem or f"no VM in {group} is tagged as head {instance_id}")
    public_ip, problem = _az(["vm", "show", "--show-details", "--ids", vm_id, "--query", "publicIps", "-o", "tsv"])
    return HeadLocation(public_ip=public_ip, vm_id=vm_id, lookup_problem=problem)


def ssh_command(
    user: str, host: str, key: Path | None, *, extra: list[str] | None = None, remote: str | None = None
) -> list[str]:
    command = ["ssh"]
    if key is not None:
        command += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    command += [*(extra or []), f"{user}@{host}"]
    if remote is not None:
        command += ["--", remote]
    return command


def bastion_command(verb: str, bastion: Bastion, vm_id: str, user: str, key: Path | None) -> list[str]:
    """`az network bastion ssh|tunnel ...` as docs/deploy.md gives it."""
    command = ["az", "network", "bastion", verb, "--name", bastion.name, "--resource-group", bastion.resource_group]
    command += ["--target-resource-id", vm_id]
    if verb == "ssh":
        command += ["--auth-type", "ssh-key", "--username", user, "--ssh-key", str(key or "~/.ssh/id_rsa")]
    else:
        command += ["--resource-port", str(DASHBOARD_PORT), "--port", str(DASHBOARD_PORT)]
    return command


def shell_line(command: list[str]) -> str:
    return shlex.join(command)


@dataclass(frozen=True)
class HeadAccess:
    """How this machine reaches an Azure head: by SSH (`ssh_host`) or only through Bastion (`bastion_command`)."""

    user: str
    key: Path | None
    ssh_host: str = ""
    vm_id: str = ""


def head_access(view: View, target: Target, notes: ClusterNotes) -> HeadAccess:
    """Raises UNSUPPORTED with what is missing when neither SSH nor Bastion can reach the head."""
    name = str(view.get("name", ""))
    key = saved_key(target, name)
    if notes.known and not notes.ssh_open:
        raise CliError(
            f"SSH to cluster {name} is closed: its config has no provider.ssh_allowed_cidrs; list your address "
            "(or your Bastion subnet) there and create the cluster again (docs/deploy.md, 'Reach a cluster's head')",
            ExitCode.UNSUPPORTED,
        )
    location = locate_head(view, target)
    if location.public_ip and not notes.use_internal_ips:
        return HeadAccess(notes.ssh_user, key, ssh_host=location.public_ip, vm_id=location.vm_id)
    if location.vm_id:
        return HeadAccess(notes.ssh_user, key, vm_id=location.vm_id)
    raise CliError(
        f"cannot tell how to reach the head of {name}: {location.lookup_problem}",
        ExitCode.UNSUPPORTED,
    )


def bastion_for(target: Target, name: str, group: str) -> Bastion:
    return Bastion(name, group or target.azd_values.get("AZURE_RESOURCE_GROUP", ""))


def require_bastion_group(bastion: Bastion) -> None:
    if not bastion.resource_group:
        raise CliError(
            "the head has no public IP, so it is reached through Azure Bastion, and the Bastion's resource group is "
            "unknown here; pass --bastion-group (and --bastion if it is not named 'bastion')",
            ExitCode.UNSUPPORTED,
        )


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def dashboard_endpoint(view: View) -> tuple[str, int]:
    """Where the dashboard listens, as seen from the head itself."""
    parts = urlsplit(str((view.get("head") or {}).get("dashboard_url") or ""))
    return parts.hostname or "127.0.0.1", parts.port or DASHBOARD_PORT


def tunnel_command(access: HeadAccess, view: View, local_port: int) -> list[str]:
    host, port = dashboard_endpoint(view)
    forward = ["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local_port}:{host}:{port}"]
    return ssh_command(access.user, access.ssh_host, access.key, extra=forward)


@contextlib.contextmanager
def dashboard_tunnel(access: HeadAccess, view: View) -> Iterator[str]:
    """An SSH tunnel to the head's dashboard for the duration of the block; yields its local URL."""
    local_port = free_local_port()
    process = subprocess.Popen(tunnel_command(access, view, local_port), stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TUNNEL_READY_TIMEOUT_S
        while not _port_open(local_port):
            if process.poll() is not None:
                raise CliError(
                    f"the SSH tunnel to {access.ssh_host} ended with code {process.returncode}; "
                    f"try `azray attach {view.get('name', '')}` to see why",
                    ExitCode.UNREACHABLE,
                )
            if time.monotonic() > deadline:
                raise CliError(
                    f"the SSH tunnel to {access.ssh_host} did not open within {TUNNEL_READY_TIMEOUT_S:g} s",
                    ExitCode.UNREACHABLE,
                )
            time.sleep(0.2)
        yield f"http://127.0.0.1:{local_port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def read_head_token(access: HeadAccess) -> str:
    """The cluster token from the head (root-only file; the SSH user has sudo on Ray's images)."""
    done = subprocess.run(
        ssh_command(access.user, access.ssh_host, access.key, remote=f"sudo cat {HEAD_TOKEN_FILE}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    token = done.stdout.strip()
    if done.returncode != 0 or not token:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise CliError(
            f"could not read the cluster token on the head over SSH (exit {done.returncode}): {last[:200]}",
            ExitCode.UNREACHABLE,
        )
    return token


def remote_command_line(command: list[str], ray_address: str) -> str:
    """What `exec` runs on the head: the command with Ray's token auth set up, the token never on a command line."""
    return (
        f'export RAY_AUTH_MODE=token RAY_ADDRESS={shlex.quote(ray_address)} RAY_AUTH_TOKEN="$(sudo cat '
        f'{HEAD_TOKEN_FILE})"; exec {shlex.join(command)}'
    )
