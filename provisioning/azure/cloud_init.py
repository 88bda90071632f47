"""Cloud-init custom data for a cluster VM, rendered from provisioning/head/templates/.

The custom data is a gzip-compressed `#cloud-config` document (cloud-init detects gzip) that:
- writes the cluster token to /etc/ray/cluster-token (0600, root) -- never on a command line, never in a log;
- writes a boot script (installs or checks Ray, waiting out Ubuntu's first-boot apt runs; runs the config's
  initialization and setup commands; reports its boot phases to the head agent), a `ray-node.service` unit that
  starts Ray in head or worker mode with `RAY_AUTH_MODE=token`, `RAY_CLOUD_INSTANCE_ID`, `RAY_NODE_TYPE_NAME` and
  `RAY_enable_autoscaler_v2=1`, and `systemd-credentials.sh`, which gives the units the token on a systemd older
  than 247 (no `LoadCredential=`);
- on the head, also the head agent's sources and its `ray-head-agent.service` unit. The agent runs on the image's
  python3 (3.10 on Ubuntu 22.04): `agent_source_files` ships only the modules it imports, all 3.10-compatible;
- on every VM, head and workers, the preempt watch (`provisioning/head/preempt_watch.py`, standard library only) and
  its `ray-preempt-watch.service` unit: it polls Azure's Scheduled Events and, on a `Preempt` notice for this VM, has
  the head agent drain the node in Ray (docs/decisions/preemption-notice.md).
Azure keeps custom data in the VM model (write-only: GET does not return it) and on the VM in root-only files;
see docs/decisions/cluster-token.md.
"""

from __future__ import annotations

import ast
import base64
import gzip
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import yaml

from provisioning.azure import network

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "head" / "templates"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
AGENT_MODULE = "provisioning.head.agent"
PREEMPT_WATCH_MODULE = "provisioning.head.preempt_watch"
# Azure's Scheduled Events (learn.microsoft.com/azure/virtual-machines/linux/scheduled-events), on the Instance Metadata
# Service: the one place the code names this address (the watch has no default); tests and the local provider give the
# watch a loopback URL instead.
AZURE_SCHEDULED_EVENTS_URL = "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"
# The VM's own name, from Azure's Instance Metadata Service on the VM ("compute/name" in `format=text`): what a scale
# set's VM reads at boot (NodeBootSpec.name_from_metadata). Only the boot script on the VM calls it.
AZURE_INSTANCE_NAME_URL = "http://169.254.169.254/metadata/instance/compute/name?api-version=2021-02-01&format=text"
NAME_FROM_METADATA = "@metadata"  # the placeholder the boot script replaces with the VM's name
DEFAULT_RAY_VERSION = "2.60.0"
# Azure's limit for osProfile.customData: "The maximum length of the binary array is 65535 bytes" (the decoded
# bytes, before base64), one byte short of 64 KiB.
MAX_CUSTOM_DATA_BYTES = 65_535
CREDENTIAL_FILE = "/etc/ray/cluster-token"
CONTROL_DIR = "/opt/ray/control"


@dataclass(frozen=True)
class NodeBootSpec:
    """What one VM needs to become a Ray node of the cluster."""

    cluster_name: str
    instance_id: str
    node_type: str
    is_head: bool
    resources: Mapping[str, float]
    cluster_token: str
    ssh_user: str
    initialization_commands: Sequence[str] = ()
    setup_commands: Sequence[str] = ()
    head_address: str = ""  # GCS host:port; workers only
    control_plane_url: str = ""  # head only: where the agent sends wake-ups
    ray_version: str = DEFAULT_RAY_VERSION
    labels: Mapping[str, str] = field(default_factory=dict)  # the node type's labels, for Ray's label selectors
    # The VM's name as Azure's Scheduled Events list it; "" = the name the Azure provider gives the instance's VM.
    vm_name: str = ""
    # A scale set's VM: one custom data serves every VM of the set, so no launch's id is in it. The VM reads its own
    # name from Azure's instance metadata at boot and uses it as its instance id (what the control plane lists it
    # under and binds to a launch: docs/decisions/scale-sets.md) and as its name for Scheduled Events.
    name_from_metadata: bool = False


def ray_start_arguments(spec: NodeBootSpec) -> list[str]:
    """`ray start` arguments (besides --block and --node-ip-address), with every port pinned for the NSG."""
    arguments = [
        f"--object-manager-port={network.OBJECT_MANAGER_PORT}",
        f"--node-manager-port={network.NODE_MANAGER_PORT}",
        f"--dashboard-agent-grpc-port={network.DASHBOARD_AGENT_GRPC_PORT}",
        f"--dashboard-agent-listen-port={network.DASHBOARD_AGENT_HTTP_PORT}",
        f"--runtime-env-agent-port={network.RUNTIME_ENV_AGENT_PORT}",
        f"--metrics-export-port={network.METRICS_EXPORT_PORT}",
        f"--min-worker-port={network.MIN_WORKER_PORT}",
        f"--max-worker-port={network.MAX_WORKER_PORT}",
    ]
    if spec.is_head:
        arguments = [
            "--head",
            f"--port={network.GCS_PORT}",
            "--dashboard-host=0.0.0.0",
            f"--dashboard-port={network.DASHBOARD_PORT}",
            f"--ray-client-server-port={network.CLIENT_SERVER_PORT}",
            *arguments,
        ]
    else:
        if not spec.head_address:
            raise ValueError("a worker needs the head's GCS address")
        arguments = [f"--address={spec.head_address}", *arguments]
    custom: dict[str, float] = {}
    for name, amount in sorted(spec.resources.items()):
        if name == "CPU":
            arguments.append(f"--num-cpus={int(amount)}")
        elif name == "GPU":
            arguments.append(f"--num-gpus={int(amount)}")
        elif name == "memory":
            arguments.append(f"--memory={int(amount)}")
        elif name == "object_store_memory":
            arguments.append(f"--object-store-memory={int(amount)}")
        else:
            custom[name] = amount
    if custom:
        arguments.append(f"--resources={json.dumps(custom, sort_keys=True, separators=(',', ':'))}")
    if spec.labels:
        # Ray 2.60's `ray start --labels "key1=val1,key2=val2"` (ray/_private/label_utils.parse_node_labels_string).
        arguments.append("--labels=" + ",".join(f"{key}={value}" for key, value in sorted(spec.labels.items())))
    return [shlex.quote(argument) for argument in arguments]


def render_cloud_config(spec: NodeBootSpec) -> str:
    """The `#cloud-config` document, before compression."""
    role = "head" if spec.is_head else "worker"
    credential_units = ["ray-node", "ray-preempt-watch", *(["ray-head-agent"] if spec.is_head else [])]
    values = {
        "cluster_name": spec.cluster_name,
        "instance_id": NAME_FROM_METADATA if spec.name_from_metadata else spec.instance_id,
        "node_type": spec.node_type,
        "node_role": role,
        "ssh_user": spec.ssh_user,
        "ray_version": spec.ray_version,
        "ray_start_arguments": " ".join(ray_start_arguments(spec)),
        "initialization_commands": _script_lines(spec.initialization_commands, as_user=None),
        "setup_commands": _script_lines(spec.setup_commands, as_user=spec.ssh_user),
        "enable_agent": "systemctl enable --now ray-head-agent.service" if spec.is_head else "",
        "gcs_port": str(network.GCS_PORT),
        "agent_port": str(network.HEAD_AGENT_PORT),
        "control_plane_url": shlex.quote(spec.control_plane_url),
        "boot_phase_url": boot_phase_url(spec),
        "head_agent_url": head_agent_url(spec),
        "scheduled_events_url": AZURE_SCHEDULED_EVENTS_URL,
        "vm_name": NAME_FROM_METADATA if spec.name_from_metadata else vm_name_of(spec),
        "instance_metadata_name_url": AZURE_INSTANCE_NAME_URL,
        "name_from_metadata": NAME_FROM_METADATA,
        "credential_units": " ".join(credential_units),
    }
    files: list[dict[str, str]] = [
        {"path": CREDENTIAL_FILE, "permissions": "0600", "owner": "root:root", "content": spec.cluster_token},
        _file("/opt/ray/boot-functions.sh", _render("boot-functions.sh", values), "0644"),
        _file("/opt/ray/bootstrap.sh", _render("bootstrap.sh", values), "0755"),
        _file("/opt/ray/start-ray.sh", _render("start-ray.sh", values), "0755"),
        _file("/opt/ray/systemd-credentials.sh", _render("systemd-credentials.sh", values), "0755"),
        _file("/etc/systemd/system/ray-node.service", _render("ray-node.service", values), "0644"),
        _file("/etc/systemd/system/ray-preempt-watch.service", _render("ray-preempt-watch.service", values), "0644"),
    ]
    shipped = set(source_files(PREEMPT_WATCH_MODULE))
    if spec.is_head:
        files.append(_file("/opt/ray/start-head-agent.sh", _render("start-head-agent.sh", values), "0755"))
        files.append(
            _file("/etc/systemd/system/ray-head-agent.service", _render("ray-head-agent.service", values), "0644")
        )
        shipped |= set(agent_source_files())
    for relative_path in sorted(shipped):
        files.append(_file(f"{CONTROL_DIR}/{relative_path}", (PROJECT_ROOT / relative_path).read_text(), "0644"))
    document = {"write_files": files, "runcmd": [["/opt/ray/bootstrap.sh"]]}
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False, width=1_000_000)


def boot_phase_url(spec: NodeBootSpec) -> str:
    """Where the boot script reports its phases: the head agent, on loopback from the head, else on the head's IP."""
    return f"{head_agent_url(spec)}/v1/boot-phase"


def head_agent_url(spec: NodeBootSpec) -> str:
    """The head agent as this VM reaches it: on loopback from the head, else on the head's private IP (the NSG admits
    the agent's port from the cluster subnet)."""
    head_host = "127.0.0.1" if spec.is_head else spec.head_address.rpartition(":")[0]
    if not head_host:
        raise ValueError("a worker needs the head's GCS address")
    return f"http://{head_host}:{network.HEAD_AGENT_PORT}"


def vm_name_of(spec: NodeBootSpec) -> str:
    if spec.vm_name:
        return spec.vm_name
    # Imported here: vm_template imports this module.
    from provisioning.azure.vm_template import vm_name_for

    return vm_name_for(spec.cluster_name, spec.instance_id)


def compressed_cloud_config(spec: NodeBootSpec) -> bytes:
    """The gzip-compressed cloud-config (mtime 0: one spec, one byte string); Azure limits the size of these bytes."""
    return gzip.compress(render_cloud_config(spec).encode(), mtime=0)


def render_custom_data(spec: NodeBootSpec) -> str:
    """Base64 of the gzip-compressed cloud-config: what goes into `osProfile.customData`."""
    compressed = compressed_cloud_config(spec)
    if len(compressed) > MAX_CUSTOM_DATA_BYTES:
        raise ValueError(
            f"custom data is {len(compressed)} bytes (gzip-compressed); Azure accepts at most {MAX_CUSTOM_DATA_BYTES}"
        )
    return base64.b64encode(compressed).decode()


def agent_source_files() -> list[str]:
    """The project's source files the head agent imports (transitively), relative to the project root."""
    return source_files(AGENT_MODULE)


def shipped_source_files() -> list[str]:
    """Every project source file cloud-init writes to some VM (the head's agent, every VM's preempt watch): what runs
    on the image's Python 3.10, and what `make lint` type-checks as 3.10."""
    return sorted(set(agent_source_files()) | set(source_files(PREEMPT_WATCH_MODULE)))


def source_files(root_module: str) -> list[str]:
    """The project's source files `root_module` imports (transitively, itself and its packages included)."""
    pending = [root_module]
    seen: set[str] = set()
    files: list[str] = []
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_path(module)
        if path is None:
            if module == root_module:
                raise FileNotFoundError(f"{root_module} is missing: it cannot be shipped to the VMs")
            continue
        files.append(str(path.relative_to(PROJECT_ROOT)))
        parent = module.rpartition(".")[0]
        while parent:  # a package's __init__ runs before its modules
            pending.append(parent)
            parent = parent.rpartition(".")[0]
        pending.extend(_project_imports(path, module))
    return sorted(files)


def _module_path(module: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _project_imports(path: Path, module: str) -> list[str]:
    """Modules of this project (autoscaler, provisioning) imported by the file, absolute or relative."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
    return [name for name in found if name.split(".")[0] in ("autoscaler", "provisioning")]


def _render(template_name: str, values: Mapping[str, str]) -> str:
    return Template((TEMPLATES_DIR / template_name).read_text()).substitute(values)


def _file(path: str, content: str, permissions: str) -> dict[str, str]:
    return {"path": path, "permissions": permissions, "owner": "root:root", "content": content}


def _script_lines(commands: Sequence[str], *, as_user: str | None) -> str:
    if not commands:
        return ":"
    if as_user is None:
        return "\n".join(commands)
    return "\n".join(f"sudo -u {shlex.quote(as_user)} -H bash -lc {shlex.quote(command)}" for command in commands)
