"""The fake cloud provider used by the reconcile unit tests keeps the same contract as the real providers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from autoscaler.model import LaunchRequest
from provisioning.cloud import CloudProvider
from tests.support.fakes import FakeCloudProvider
from tests.support.provider_contract import CONTRACT_CHECKS, ProviderHarness


@dataclass
class FakeHarness:
    provider: CloudProvider = field(default_factory=FakeCloudProvider)
    cluster_name: str = "contract"
    settle_timeout_s: float = 0.0

    def launch_request(self, *, instance_id: str, request_id: str) -> LaunchRequest:
        return LaunchRequest(
            cluster_name=self.cluster_name,
            instance_id=instance_id,
            request_id=request_id,
            node_type="head",
            is_head=True,
            resources={"CPU": 1},
            node_config={},
            cluster_token="token",
            config_hash="hash",
        )


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__)
def test_fake_provider_keeps_the_provider_contract(check: Callable[[ProviderHarness], None]):
    check(FakeHarness())
