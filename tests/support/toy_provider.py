"""A third cloud in one module, to show what docs/adding-a-cloud.md says: its config model, its defaults, its factory,
its prices and its SSH policy, in one `ProviderPlugin`. Registering `TOY` with the registry is the only other step
(tests/unit/test_toy_provider.py does it for its tests); nothing else in the code base changes. Its "cloud" is the
in-memory fake the reconcile tests use."""

from __future__ import annotations

from typing import Literal

from autoscaler.config import ClusterConfig, NodeTypeConfig, ProviderConfig
from autoscaler.ports import BuildContext, CloudProvider, ProviderPlugin, SshPolicy
from tests.support.fakes import FakeCloudProvider


class ToyProviderConfig(ProviderConfig):
    type: Literal["toy"]
    region: str = "toyland"


COMMANDS = ("initialization", "setup", "head_setup", "worker_setup", "head_start_ray", "worker_start_ray")
TOY_DEFAULTS = {
    "max_workers": 2,
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 5,
    "auth": {},
    "available_node_types": {"head": {"resources": {"CPU": 1}, "node_config": {}}},
    "head_node_type": "head",
    **{f"{kind}_commands": [] for kind in COMMANDS},
}
CLOUD = FakeCloudProvider()


def build(config: ClusterConfig, context: BuildContext) -> CloudProvider:
    return CLOUD


def price(node_type: NodeTypeConfig) -> tuple[float, str]:
    return float(node_type.resources.get("CPU", 1.0)), "toy price per CPU"


TOY = ProviderPlugin(
    type="toy",
    config_model=ToyProviderConfig,
    defaults=TOY_DEFAULTS,
    build=build,
    prices=price,
    ssh=SshPolicy(summary="the toy has no SSH"),
)
