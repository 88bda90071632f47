"""Every launch and terminate of one tick, at once (`LaunchesInBatches`, autoscaler/ports.py).

- Scale-set node types: ONE write per node type whatever the count (a PUT of the set with `sku.capacity` = the
  highest `pool_target` of its launches), and ONE `delete instances` call per set for its terminates.
- Single VMs: one PUT (or DELETE) each, issued in parallel (at most `burst_concurrency` in flight) and only while the
  subscription's write budget, as Azure's last answers reported it, has room (write_budget.py). What the budget
  cannot take now is not sent: its outcome is `ThrottledError` with how long to wait, and the shell asks again on a
  later tick. A burst's 429 is not retried by the SDK (`retry_on_throttle=False`): it answers for itself once, and
  the budget holds everything else back until its `Retry-After`.
Outcomes come back one per item, in order: None when Azure accepted it, else the CloudError.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from azure.core.exceptions import AzureError

from autoscaler.model import LaunchRequest
from autoscaler.ports import CloudError, InvalidRequestError, ThrottledError
from provisioning.azure.clients import ArmClients
from provisioning.azure.errors import from_azure_error
from provisioning.azure.instances import ClusterInstances
from provisioning.azure.scale_sets import ScaleSetTemplate, scale_set_name_for, scale_set_of
from provisioning.azure.write_budget import (
    ARM_DELETES,
    ARM_WRITES,
    DELETE_SCALE_SET,
    DELETE_VM,
    PUT_SCALE_SET,
    PUT_VM,
)

logger = logging.getLogger(__name__)

Outcome = CloudError | None
Call = Callable[[], None]


class BatchIssuer:
    def __init__(
        self, clients: ArmClients, instances: ClusterInstances, scale_sets: ScaleSetTemplate, resource_group: str
    ) -> None:
        self.clients = clients
        self.instances = instances
        self.scale_sets = scale_sets
        self.resource_group = resource_group
        # Burst writes: a 429 is not retried by the SDK, and every answer is recorded in the subscription's budget.
        self.call_options: dict[str, Any] = {"retry_on_throttle": False, "raw_response_hook": clients.record_budget}

    # ---------------------------------------------------------------- launches

    def launch_many(self, requests: Sequence[LaunchRequest], subnet_id: str) -> list[Outcome]:
        outcomes: list[Outcome] = [None] * len(requests)
        pools: dict[str, list[int]] = {}
        singles: list[tuple[int, Call]] = []
        for index, request in enumerate(requests):
            try:
                is_pool = scale_set_of(request.node_config) is not None
            except InvalidRequestError as error:
                outcomes[index] = error
                continue
            if is_pool:
                pools.setdefault(request.node_type, []).append(index)
                continue
            try:
                put = self.instances.prepare_launch(request, subnet_id)  # rendered here, sent from the pool
            except CloudError as error:
                outcomes[index] = error
                continue
            singles.append((index, self._send(put)))
        for indexes in pools.values():
            outcome = self._grow_pool([requests[index] for index in indexes], subnet_id)
            for index in indexes:
                outcomes[index] = outcome
        self.issue(singles, (PUT_VM, ARM_WRITES), outcomes)
        return outcomes

    def _send(self, put: Callable[..., None]) -> Call:
        return lambda: put(**self.call_options)

    def _grow_pool(self, requests: Sequence[LaunchRequest], subnet_id: str) -> Outcome:
        """ONE write for every launch of one scale-set node type: the set's capacity becomes the highest target."""
        first = requests[0]
        target = max(request.pool_target for request in requests)
        if target <= 0:
            return InvalidRequestError(f"node type {first.node_type}: a scale-set launch needs pool_target > 0")
        name = scale_set_name_for(first.cluster_name, first.node_type)
        try:
            body = self.scale_sets.body(first, subnet_id, target)
        except CloudError as error:
            return error
        outcomes: list[Outcome] = [None]
        is_spot = "priority" in body["properties"]["virtualMachineProfile"]

        def call() -> None:
            try:
                self.clients.compute.virtual_machine_scale_sets.begin_create_or_update(
                    self.resource_group,
                    name,
                    self.clients.compute_models.VirtualMachineScaleSet(body),
                    polling=False,
                    **self.call_options,
                )
            except AzureError as error:
                raise from_azure_error(error, is_spot=is_spot) from None
            logger.info("scale set %s: capacity %d (%d launches)", name, target, len(requests))

        self.issue([(0, call)], (PUT_SCALE_SET, ARM_WRITES), outcomes)
        return outcomes[0]

    # ---------------------------------------------------------------- terminates

    def terminate_many(self, cluster_name: str, instance_ids: Sequence[str]) -> list[Outcome]:
        outcomes: list[Outcome] = [None] * len(instance_ids)
        pools: dict[str, list[int]] = {}
        singles: list[tuple[int, Call]] = []
        for index, instance_id in enumerate(instance_ids):
            scale_set = self.instances.pool_scale_set(instance_id)
            if scale_set is not None:
                pools.setdefault(scale_set, []).append(index)
            else:
                singles.append((index, self._terminate_call(cluster_name, instance_id)))
        for scale_set, indexes in pools.items():
            names = [instance_ids[index] for index in indexes]
            pool_outcome: list[Outcome] = [None]

            def call(scale_set: str = scale_set, names: list[str] = names) -> None:
                self.instances.delete_pool_vms(scale_set, names, **self.call_options)

            self.issue([(0, call)], (DELETE_SCALE_SET, ARM_WRITES), pool_outcome)
            for index in indexes:
                outcomes[index] = pool_outcome[0]
        self.issue(singles, (DELETE_VM, ARM_DELETES), outcomes)
        return outcomes

    def _terminate_call(self, cluster_name: str, instance_id: str) -> Call:
        return lambda: self.instances.terminate(cluster_name, instance_id, **self.call_options)

    # ---------------------------------------------------------------- issuing within the budget

    def issue(self, calls: Sequence[tuple[int, Call]], kinds: tuple[str, ...], outcomes: list[Outcome]) -> None:
        """Run the calls in parallel while the budget lends; what it cannot lend gets ThrottledError."""
        budget = self.clients.budget
        pending = deque(calls)
        concurrency = max(1, self.clients.settings.burst_concurrency)
        running: dict[Future[Outcome], int] = {}
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="arm-burst") as executor:
            while pending:
                if len(running) < concurrency and budget.try_acquire(kinds):
                    index, call = pending.popleft()
                    running[executor.submit(self._run, call, kinds)] = index
                elif running and (len(running) >= concurrency or budget.waiting_for_answer(kinds)):
                    self._collect(running, outcomes, wait(running, return_when=FIRST_COMPLETED).done)
                else:
                    break
            self._collect(running, outcomes, wait(running).done)
        if pending:
            retry_after_s = budget.retry_after_s(kinds)
            message = f"not sent: Azure's {'/'.join(kinds)} budget has no room now (retry in {retry_after_s:.0f} s)"
            for index, _ in pending:
                outcomes[index] = ThrottledError(message, code="WriteBudgetExhausted", retry_after_s=retry_after_s)

    @staticmethod
    def _collect(running: dict[Future[Outcome], int], outcomes: list[Outcome], done: set[Future[Outcome]]) -> None:
        for future in done:
            outcomes[running.pop(future)] = future.result()

    def _run(self, call: Call, kinds: tuple[str, ...]) -> Outcome:
        try:
            call()
            return None
        except CloudError as error:
            return error
        except AzureError as error:
            return from_azure_error(error)
        finally:
            self.clients.budget.release(kinds)
