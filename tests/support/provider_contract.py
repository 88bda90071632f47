"""Reusable contract checks for `CloudProvider` implementations (the contracts of autoscaler/ports.py).

How to use, for any provider:

    from tests.support.provider_contract import CONTRACT_CHECKS, ProviderHarness

    @pytest.fixture
    def harness() -> Iterator[ProviderHarness]:
        yield MyHarness(...)  # anything with the attributes and methods of ProviderHarness

    @pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__)
    def test_provider_contract(check, harness):
        check(harness)

A harness gives: `provider`, a fresh `cluster_name` (nothing of it exists yet), `settle_timeout_s` (how long an
instance may take to show up in, or leave, the list, and a cluster's destruction to complete: ~0 for an in-memory
fake, a second or two for an emulator with Azure's timings, seconds for real processes), and
`launch_request(instance_id=..., request_id=...)`, a valid head `LaunchRequest` for that cluster.
Each check launches at most one instance and leaves nothing behind (it terminates and destroys what it made).
`destroy_cluster` is called as the reconcile shell calls it, once a tick until it reports complete: a cloud may
refuse a deletion while another one is running (Azure: an NSG while the VNet using it is still Deleting) and report
it remaining, for the next call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from autoscaler.config import ClusterConfig
from autoscaler.model import CloudInstance, CloudState, LaunchRequest
from provisioning.cloud import CloudProvider, DestroyReport


class ProviderHarness(Protocol):
    provider: CloudProvider
    cluster_name: str
    settle_timeout_s: float

    def launch_request(self, *, instance_id: str, request_id: str) -> LaunchRequest: ...


def eventually(
    read: Callable[[], list[CloudInstance]], accept: Callable[[list[CloudInstance]], bool], timeout_s: float
) -> list[CloudInstance]:
    """Call `read` until `accept` holds for its answer (lists are eventually consistent); fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = read()
        if accept(answer):
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"the list never reached the expected state within {timeout_s:.1f} s: {answer}")
        time.sleep(min(0.2, max(timeout_s / 20, 0.01)))


def destroy_until_complete(harness: ProviderHarness) -> DestroyReport:
    """Call destroy_cluster until it reports complete (as the reconcile shell does, once a tick); fail after
    settle_timeout_s."""
    deadline = time.monotonic() + harness.settle_timeout_s
    while True:
        report = harness.provider.destroy_cluster(harness.cluster_name)
        if report.complete:
            return report
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"destroy_cluster still incomplete after {harness.settle_timeout_s:.1f} s: {report.remaining}"
            )
        time.sleep(min(0.2, max(harness.settle_timeout_s / 20, 0.01)))


def _live(instances: list[CloudInstance], instance_id: str) -> list[CloudInstance]:
    return [
        instance
        for instance in instances
        if instance.instance_id == instance_id and instance.state is not CloudState.TERMINATING
    ]


def _clean_up(harness: ProviderHarness, *instance_ids: str) -> None:
    for instance_id in instance_ids:
        harness.provider.terminate(harness.cluster_name, instance_id)
    eventually(
        lambda: harness.provider.list_instances(harness.cluster_name),
        lambda instances: not any(_live(instances, instance_id) for instance_id in instance_ids),
        harness.settle_timeout_s,
    )
    destroy_until_complete(harness)


def check_launched_instance_is_listed_with_its_tags(harness: ProviderHarness) -> None:
    request = harness.launch_request(instance_id="contract-a1", request_id="request-a1")
    harness.provider.launch(request)
    instances = eventually(
        lambda: harness.provider.list_instances(harness.cluster_name),
        lambda instances: bool(_live(instances, request.instance_id)),
        harness.settle_timeout_s,
    )
    (instance,) = _live(instances, request.instance_id)
    assert instance.cluster_name == harness.cluster_name
    assert instance.request_id == request.request_id
    assert instance.node_type == request.node_type
    assert instance.is_head is request.is_head
    assert instance.cloud_instance_id
    _clean_up(harness, request.instance_id)


def check_launch_twice_with_one_request_id_makes_one_instance(harness: ProviderHarness) -> None:
    request = harness.launch_request(instance_id="contract-b1", request_id="request-b1")
    harness.provider.launch(request)
    harness.provider.launch(request)
    instances = eventually(
        lambda: harness.provider.list_instances(harness.cluster_name),
        lambda instances: bool(_live(instances, request.instance_id)),
        harness.settle_timeout_s,
    )
    assert len([instance for instance in instances if instance.request_id == request.request_id]) == 1
    _clean_up(harness, request.instance_id)


def check_terminated_instance_leaves_the_list(harness: ProviderHarness) -> None:
    request = harness.launch_request(instance_id="contract-c1", request_id="request-c1")
    harness.provider.launch(request)
    eventually(
        lambda: harness.provider.list_instances(harness.cluster_name),
        lambda instances: bool(_live(instances, request.instance_id)),
        harness.settle_timeout_s,
    )
    harness.provider.terminate(harness.cluster_name, request.instance_id)
    eventually(
        lambda: harness.provider.list_instances(harness.cluster_name),
        lambda instances: not _live(instances, request.instance_id),
        harness.settle_timeout_s,
    )
    destroy_until_complete(harness)


def check_terminate_twice_is_not_an_error(harness: ProviderHarness) -> None:
    request = harness.launch_request(instance_id="contract-d1", request_id="request-d1")
    harness.provider.launch(request)
    harness.provider.terminate(harness.cluster_name, request.instance_id)
    harness.provider.terminate(harness.cluster_name, request.instance_id)
    _clean_up(harness, request.instance_id)


def check_terminate_unknown_instance_is_not_an_error(harness: ProviderHarness) -> None:
    harness.provider.terminate(harness.cluster_name, "contract-never-launched")


def check_unknown_cluster_lists_nothing(harness: ProviderHarness) -> None:
    assert harness.provider.list_instances(harness.cluster_name) == []


def check_destroy_twice_completes_without_error(harness: ProviderHarness) -> None:
    request = harness.launch_request(instance_id="contract-e1", request_id="request-e1")
    harness.provider.launch(request)
    _clean_up(harness, request.instance_id)  # destroyed until complete
    second = harness.provider.destroy_cluster(harness.cluster_name)
    assert second.complete, second.remaining
    assert harness.provider.list_instances(harness.cluster_name) == []


CONTRACT_CHECKS: tuple[Callable[[ProviderHarness], None], ...] = (
    check_launched_instance_is_listed_with_its_tags,
    check_launch_twice_with_one_request_id_makes_one_instance,
    check_terminated_instance_leaves_the_list,
    check_terminate_twice_is_not_an_error,
    check_terminate_unknown_instance_is_not_an_error,
    check_unknown_cluster_lists_nothing,
    check_destroy_twice_completes_without_error,
)


# ---------------------------------------------------------------------------------------------------------------
# Scale-set (pool) node types: the same contracts, for VMs a capacity change makes (autoscaler/model.py: a pool VM's
# instance_id is its own name, its request_id "", its `pool` the node type; the shell binds it to a record).
# A pool harness's `launch_request(instance_id=..., request_id=..., pool_target=n)` is a launch of its pool node type.
# ---------------------------------------------------------------------------------------------------------------


class PoolHarness(ProviderHarness, Protocol):
    def launch_request(self, *, instance_id: str, request_id: str, pool_target: int = 1) -> LaunchRequest: ...


def _pool_vms(instances: list[CloudInstance], node_type: str) -> list[CloudInstance]:
    return [
        instance
        for instance in instances
        if instance.pool == node_type and instance.state not in (CloudState.TERMINATING, CloudState.FAILED)
    ]


def _wait_for_pool(harness: PoolHarness, node_type: str, count: int) -> list[CloudInstance]:
    instances = eventually(
        lambda: harness.provider.list_instances(harness.cluster_name),
        lambda instances: len(_pool_vms(instances, node_type)) == count,
        harness.settle_timeout_s,
    )
    return _pool_vms(instances, node_type)


def _clean_up_pool(harness: PoolHarness, node_type: str) -> None:
    for instance in _pool_vms(harness.provider.list_instances(harness.cluster_name), node_type):
        harness.provider.terminate(harness.cluster_name, instance.instance_id)
    _wait_for_pool(harness, node_type, 0)
    destroy_until_complete(harness)


def check_pool_launch_is_listed_as_a_vm_of_its_pool(harness: PoolHarness) -> None:
    request = harness.launch_request(instance_id="pool-a1", request_id="request-pa1", pool_target=1)
    harness.provider.launch(request)
    (vm,) = _wait_for_pool(harness, request.node_type, 1)
    assert vm.cluster_name == harness.cluster_name
    assert vm.node_type == request.node_type
    assert vm.request_id == ""  # made by a capacity change, not by this record: the shell binds it
    assert vm.instance_id
    assert vm.instance_id != request.instance_id
    assert vm.cloud_instance_id
    assert not vm.is_head
    _clean_up_pool(harness, request.node_type)


def check_pool_launch_twice_with_one_target_makes_one_vm(harness: PoolHarness) -> None:
    request = harness.launch_request(instance_id="pool-b1", request_id="request-pb1", pool_target=1)
    harness.provider.launch(request)
    _wait_for_pool(harness, request.node_type, 1)
    harness.provider.launch(request)  # a crash before the shell saved the launch: the same target again
    time.sleep(min(harness.settle_timeout_s, 0.5))
    assert len(_pool_vms(harness.provider.list_instances(harness.cluster_name), request.node_type)) == 1
    _clean_up_pool(harness, request.node_type)


def check_pool_terminate_removes_exactly_the_chosen_vm(harness: PoolHarness) -> None:
    request = harness.launch_request(instance_id="pool-c1", request_id="request-pc1", pool_target=2)
    harness.provider.launch(request)
    chosen, kept = _wait_for_pool(harness, request.node_type, 2)
    harness.provider.terminate(harness.cluster_name, chosen.instance_id)
    (left,) = _wait_for_pool(harness, request.node_type, 1)
    assert left.instance_id == kept.instance_id
    _clean_up_pool(harness, request.node_type)


def check_pool_terminate_twice_is_not_an_error(harness: PoolHarness) -> None:
    request = harness.launch_request(instance_id="pool-d1", request_id="request-pd1", pool_target=1)
    harness.provider.launch(request)
    (vm,) = _wait_for_pool(harness, request.node_type, 1)
    harness.provider.terminate(harness.cluster_name, vm.instance_id)
    harness.provider.terminate(harness.cluster_name, vm.instance_id)
    _clean_up_pool(harness, request.node_type)


def check_pool_destroy_leaves_nothing_and_twice_is_fine(harness: PoolHarness) -> None:
    request = harness.launch_request(instance_id="pool-e1", request_id="request-pe1", pool_target=1)
    harness.provider.launch(request)
    _wait_for_pool(harness, request.node_type, 1)
    _clean_up_pool(harness, request.node_type)
    second = harness.provider.destroy_cluster(harness.cluster_name)
    assert second.complete, second.remaining
    assert harness.provider.list_instances(harness.cluster_name) == []


POOL_CONTRACT_CHECKS: tuple[Callable[[PoolHarness], None], ...] = (
    check_pool_launch_is_listed_as_a_vm_of_its_pool,
    check_pool_launch_twice_with_one_target_makes_one_vm,
    check_pool_terminate_removes_exactly_the_chosen_vm,
    check_pool_terminate_twice_is_not_an_error,
    check_pool_destroy_leaves_nothing_and_twice_is_fine,
)


def launch_request_for(
    config: ClusterConfig,
    instance_id: str,
    node_type: str,
    *,
    cluster_token: str,
    head_address: str,
    control_plane_url: str = "",
    availability_zone: str = "",
    pool_target: int = 0,
) -> LaunchRequest:
    """A LaunchRequest for one node type of `config`, as the reconcile shell builds it (tests and benchmarks)."""
    is_head = node_type == config.head_node_type
    node = config.available_node_types[node_type]
    return LaunchRequest(
        cluster_name=config.cluster_name,
        instance_id=instance_id,
        request_id=f"req-{instance_id}",
        node_type=node_type,
        is_head=is_head,
        resources=node.resources,
        node_config=node.node_config,
        cluster_token=cluster_token,
        config_hash=config.config_hash(),
        head_address="" if is_head else head_address,
        control_plane_url=control_plane_url,
        availability_zone=availability_zone,
        pool_target=pool_target,
    )
