"""The fake cloud provider used by the reconcile unit tests keeps the same contract as the real providers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.fakes import ContractHarness, FakeCloudProvider
from tests.support.provider_contract import CONTRACT_CHECKS, ProviderHarness


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__)
def test_fake_provider_keeps_the_provider_contract(check: Callable[[ProviderHarness], None]):
    check(ContractHarness(FakeCloudProvider()))
