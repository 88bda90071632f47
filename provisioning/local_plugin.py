"""The local plugin: clusters of real Ray processes on this machine (provisioning/local.py), registered in
provisioning/registry.py. Only a deployment that runs on the user's machine allows it (ALLOW_LOCAL_PROVIDER).

Its `provider` section is Azure's (`AzureProviderSection`), so an Azure config runs here by changing only its `type`;
`launch_delay_s` simulates a VM's start. Node types need no `azure_arm_parameters`, and any given are checked as for
Azure. Nothing is priced (the planner prices node types by their resources) and nodes have no SSH.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from autoscaler.config import ClusterConfig, FieldErrors
from autoscaler.model import HeadInfo
from autoscaler.ports import BuildContext, CloudProvider, InvalidRequestError, ProviderPlugin, SshPolicy
from provisioning.azure.plugin import IGNORED_PROVIDER_FIELDS, AzureProviderSection, check_arm_parameters


class LocalProviderConfig(AzureProviderSection):
    type: Literal["local"]


LOCAL_DEFAULTS: dict[str, Any] = {
    # Ray's ray/autoscaler/local/defaults.yaml, plus what Ray's local provider derives from its
    # worker_ips (a head type, a worker type, max_workers): our local provider starts processes, not hosts.
    "cluster_name": "default",
    "max_workers": 2,
    "auth": {},
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 5,
    "docker": {},
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}},
        "ray.worker.default": {"min_workers": 0, "resources": {"CPU": 2}, "node_config": {}},
    },
    "head_node_type": "ray.head.default",
    "initialization_commands": [],
    "setup_commands": [],
    "head_setup_commands": [],
    "worker_setup_commands": [],
    "head_start_ray_commands": [
        "ray stop",
        "ulimit -c unlimited; ray start --head --port=6379 --autoscaling-config=~/ray_bootstrap_config.yaml",
    ],
    "worker_start_ray_commands": ["ray stop", "ray start --address=$RAY_HEAD_IP:6379"],
    "file_mounts": {},
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "rsync_exclude": [],
    "rsync_filter": [],
}


def check_node_config(node_config: Mapping[str, Any], path: str, errors: FieldErrors) -> None:
    check_arm_parameters(node_config, path, errors, required=False)


def build(config: ClusterConfig, context: BuildContext) -> CloudProvider:
    from provisioning.local import LocalCloudProvider

    if not isinstance(config.provider, LocalProviderConfig):
        raise InvalidRequestError(f"provider type {config.provider.type!r} is not local")
    return LocalCloudProvider(
        context.settings.local_data_dir,
        launch_delay_s=config.provider.launch_delay_s,
        control_plane_url=context.settings.control_plane_url,
    )


def head_info(provider: CloudProvider, cluster_name: str) -> HeadInfo:
    """Where a driver on this machine finds the cluster's Ray token (GET /api/clusters/{name} shows it)."""
    from provisioning.local import LocalCloudProvider

    if not isinstance(provider, LocalCloudProvider):
        return HeadInfo()
    return HeadInfo(auth_token_path=str(provider.auth_token_path(cluster_name)))


LOCAL = ProviderPlugin(
    type="local",
    config_model=LocalProviderConfig,
    defaults=LOCAL_DEFAULTS,
    build=build,
    check_node_config=check_node_config,
    ignored_provider_fields=IGNORED_PROVIDER_FIELDS,
    head_info=head_info,
    runs_on_this_machine=True,
    ssh=SshPolicy(summary="nodes are processes on this machine: no SSH"),
)
