"""Hand-written fakes of our own protocols (CloudProvider, RayStateReader) for unit tests of the reconcile shell.

The fake provider passes the same contract checks as the Azure and local providers (tests/unit/test_fakes.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from autoscaler.model import CloudInstance, CloudState, LaunchRequest, RayNode, RayNodeStatus, RayState
from autoscaler.ray_state import DrainResult, HeadUnreachableError
from provisioning.cloud import CloudError, CloudProvider, DestroyReport


@dataclass
class FakeCloudProvider:
    instances: dict[tuple[str, str], CloudInstance] = field(default_factory=dict)
    launch_errors: list[CloudError] = field(default_factory=list)  # raised by the next launches, in order
    calls: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    before_list: Callable[[], None] | None = None  # lets a test hold a tick between its reads
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        if self.before_list is not None:
            self.before_list()
        with self._lock:
            self.calls.append(f"list {cluster_name}")
            return [i for (cluster, _), i in self.instances.items() if cluster == cluster_name]

    def launch(self, request: LaunchRequest) -> None:
        with self._lock:
            self.calls.append(f"launch {request.node_type} {request.instance_id}")
            if self.launch_errors:
                raise self.launch_errors.pop(0)
            key = (request.cluster_name, request.instance_id)
            if key in self.instances:
                return
            port = 6379 if request.is_head else 0
            self.instances[key] = CloudInstance(
                instance_id=request.instance_id,
                cluster_name=request.cluster_name,
                node_type=request.node_type,
                request_id=request.request_id,
                state=CloudState.RUNNING,
                cloud_instance_id=f"fake-{request.instance_id}",
                is_head=request.is_head,
                ray_address=f"127.0.0.1:{port}" if port else "",
                dashboard_url="http://127.0.0.1:8265" if port else "",
                agent_url="http://127.0.0.1:8270" if port else "",
            )

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        with self._lock:
            self.calls.append(f"terminate {instance_id}")
            self.instances.pop((cluster_name, instance_id), None)

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        with self._lock:
            self.destroyed.append(cluster_name)
            gone = [key for key in self.instances if key[0] == cluster_name]
            for key in gone:
                del self.instances[key]
            return DestroyReport(removed=(f"network of {cluster_name}",))

    def evict(self, cluster_name: str, instance_id: str) -> None:
        with self._lock:
            del self.instances[(cluster_name, instance_id)]

    def set_state(self, cluster_name: str, instance_id: str, state: CloudState) -> None:
        with self._lock:
            key = (cluster_name, instance_id)
            self.instances[key] = replace(self.instances[key], state=state)


@dataclass
class FakeRayReader:
    """Ray as the head agent would report it. `reachable=False` plays a head whose agent is down."""

    state: RayState = field(default_factory=RayState)
    reachable: bool = True
    refuse_drain: str = ""  # a rejection reason: the node became busy
    drains: list[str] = field(default_factory=list)

    def read_state(self, agent_url: str, token: str) -> RayState:
        if not self.reachable:
            raise HeadUnreachableError("connection refused")
        return self.state

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        if not self.reachable:
            raise HeadUnreachableError("connection refused")
        self.drains.append(ray_node_id)
        if self.refuse_drain:
            return DrainResult(accepted=False, rejection_reason=self.refuse_drain)
        return DrainResult(accepted=True, rejection_reason="")

    def set_jobs_running(self, count: int | None) -> None:
        """Ray jobs not yet finished, as the agent reports them (None: the agent cannot read Ray's jobs)."""
        self.state = replace(self.state, jobs_running=count)

    def register(self, instance_id: str, node_type: str, *, idle_s: float = 0.0, cpus: float = 1.0, head: bool = False):
        """A Ray node for this instance joins (idle for `idle_s`, or busy when idle_s == 0)."""
        node = RayNode(
            ray_node_id=f"node-{instance_id}",
            instance_id=instance_id,
            node_type=node_type,
            status=RayNodeStatus.IDLE if idle_s > 0 else RayNodeStatus.RUNNING,
            idle_duration_s=idle_s,
            total_resources={"CPU": cpus},
            available_resources={"CPU": cpus if idle_s > 0 else 0.0},
            is_head=head,
        )
        others = tuple(n for n in self.state.nodes if n.instance_id != instance_id)
        self.state = replace(self.state, nodes=(*others, node))


@dataclass
class ContractHarness:
    """An in-memory provider as the provider contract checks (tests/support/provider_contract.py) drive it."""

    provider: CloudProvider
    cluster_name: str = "contract"
    settle_timeout_s: float = 0.0  # in-memory providers settle at once

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
