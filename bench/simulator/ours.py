"""Our policy: the real reconcile shell (`autoscaler.reconcile.reconcile`), tick by tick, in virtual time.

Every control interval the shell runs one whole tick, as the timer trigger would: it reads the cluster and instance
rows from the in-memory StateStore (`InMemoryStateStore`, the Table store's twin), lists the simulated cloud
(`SimCloud`, a CloudProvider over the world's VMs), reads Ray's state from a simulated head agent (`SimHeadAgent`:
nodes with their idle times and resources, pending demand by shape, spot preemption notices), runs the sync step
and `plan(...)`, saves its intent, then launches, drains and terminates through the two fakes. A spot VM's eviction
notice (30 s ahead) reaches the shell as the head agent reports it (`preempt_deadline`): the shell replaces the VM at
once, and the VM takes no new task (its node agent drains it in Ray). The clock handed
to the shell is the world's virtual time. Nothing of the decision is re-implemented here.

Not modelled: the head agent's wake-up (a tick within a second of new demand) and the queue's follow-up ticks (3 s
after a tick that left something in flight); both run only on the timer, at the same interval as Ray's loop.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from autoscaler.model import (
    CloudInstance,
    CloudState,
    ClusterRecord,
    ClusterStatus,
    LaunchRequest,
    RayNode,
    RayNodeStatus,
    RayState,
    ShapeDemand,
    shape_of,
)
from autoscaler.ports import DestroyReport, DrainResult
from autoscaler.reconcile import ReconcileDeps, reconcile
from autoscaler.state import InMemoryStateStore
from simulator.cluster import CLUSTER_NAME, cluster_config
from simulator.world import Node, World

EPOCH = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # virtual time 0 (a Monday, midnight)
HEAD_ADDRESS = "10.0.0.4"


def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


class SimCloud:
    """The CloudProvider port over the world's VMs: every live VM is listed as running from its launch on (Azure lists
    a VM while it provisions), an evicted one is gone (evictionPolicy Delete)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.request_ids: dict[str, str] = {}

    def list_instances(self, cluster_name: str) -> list[CloudInstance]:
        return [self._listed(node) for node in self.world.live_nodes()]

    def _listed(self, node: Node) -> CloudInstance:
        head = node.is_head
        return CloudInstance(
            instance_id=node.key,
            cluster_name=CLUSTER_NAME,
            node_type=node.node_type,
            request_id=self.request_ids.get(node.key, ""),
            state=CloudState.RUNNING,
            cloud_instance_id=f"vm-{node.key}",
            is_head=head,
            ray_address=f"{HEAD_ADDRESS}:6379" if head else "",
            agent_url=f"http://{HEAD_ADDRESS}:8270" if head else "",
        )

    def launch(self, request: LaunchRequest) -> None:
        if request.instance_id in self.world.nodes:
            return  # launch is idempotent by request
        self.request_ids[request.instance_id] = request.request_id
        self.world.launch(request.node_type, request.instance_id, is_head=request.is_head)

    def terminate(self, cluster_name: str, instance_id: str) -> None:
        self.world.terminate(instance_id)

    def destroy_cluster(self, cluster_name: str) -> DestroyReport:
        return DestroyReport()


class SimHeadAgent:
    """The RayStateReader port: what the head agent would report of Ray, read off the world."""

    def __init__(self, world: World) -> None:
        self.world = world

    def read_state(self, agent_url: str, token: str) -> RayState:
        now_s = self.world.now_s
        nodes = tuple(self._ray_node(node) for node in self.world.live_nodes() if node.booted(now_s))
        pending = tuple(ShapeDemand(shape_of(dict(shape)), count) for shape, count in self.world.pending().items())
        return RayState(nodes=nodes, pending=pending, jobs_running=1)

    def _ray_node(self, node: Node) -> RayNode:
        now_s = self.world.now_s
        noticed = not node.is_head and self.world.notice_given(node)
        return RayNode(
            ray_node_id=f"ray-{node.key}",
            instance_id=node.key,
            node_type=node.node_type,
            status=RayNodeStatus.RUNNING if node.tasks else RayNodeStatus.IDLE,
            idle_duration_s=node.idle_for_s(now_s),
            total_resources=dict(node.total),
            available_resources=dict(node.free),
            is_head=node.is_head,
            preempt_deadline=at(node.evict_s) if noticed else None,
        )

    def drain(self, agent_url: str, token: str, ray_node_id: str, reason: str, message: str) -> DrainResult:
        node = self.world.nodes.get(ray_node_id.removeprefix("ray-"))
        if node is None or not node.alive:
            return DrainResult(accepted=True, rejection_reason="", node_known=False)
        if node.tasks:
            return DrainResult(accepted=False, rejection_reason="the node is busy")  # Ray refuses an idle drain then
        return DrainResult(accepted=True, rejection_reason="")


class OursPolicy:
    name = "ours"
    drains_on_notice = True  # the preempt watch: Scheduled Events -> node agent -> Ray drain with the deadline

    def __init__(self) -> None:
        self.store = InMemoryStateStore()
        self.deps: ReconcileDeps | None = None

    def start(self, world: World) -> None:
        config = cluster_config()
        self.store.insert_cluster(
            ClusterRecord(
                name=CLUSTER_NAME,
                status=ClusterStatus.CREATING,
                config_json=config.to_json(),
                config_hash=config.config_hash(),
                generation=1,
                created_at=at(world.now_s),
                updated_at=at(world.now_s),
            )
        )
        cloud, agent = SimCloud(world), SimHeadAgent(world)
        self.deps = ReconcileDeps(
            store=self.store,
            provider_for=lambda _: cloud,
            ray_reader=agent,
            token_for=lambda name, generation: f"token-{name}-{generation}",
            clock=lambda: at(world.now_s),
        )
        self.tick(world)  # launches the head (up at once in the simulation)
        self.tick(world)  # the head agent answers: the cluster runs
        cluster = self.store.get_cluster(CLUSTER_NAME)
        if cluster is None or cluster.status != ClusterStatus.RUNNING:
            raise RuntimeError(f"the simulated cluster did not start: {cluster}")

    def tick(self, world: World) -> None:
        assert self.deps is not None
        result = reconcile(CLUSTER_NAME, self.deps)
        if result.outcome != "reconciled":
            raise RuntimeError(f"tick at {world.now_s:.0f} s: {result.outcome}: {result.detail}")
