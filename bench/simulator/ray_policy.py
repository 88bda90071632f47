"""Ray's policy, as installed (Ray 2.60, autoscaler v2), tick by tick in the same virtual time.

Each control interval does what v2's `Reconciler._step_next` does with the scaling decision, using Ray's own code for
every decision: it syncs the instance manager's view with the world (a launched VM the cloud lists is ALLOCATED, one
whose Ray node has joined RAY_RUNNING, an evicted one is gone), builds the `SchedulingRequest` the reconciler builds
(node type configs from the cluster config, `max_num_nodes` = max_workers + 1 for the head, `idle_timeout_s` =
idle_timeout_minutes x 60, pending demand by shape, every instance with its Ray node's resources and idle time) and
calls `ray.autoscaler.v2.scheduler.ResourceDemandScheduler.schedule`, whose reply holds both the launches and the
idle terminations. Terminations apply at once (a queued instance is cancelled, any other VM goes); launches are
queued, then `Reconciler._compute_to_launch` (Ray's upscaling speed and `AUTOSCALER_MAX_CONCURRENT_LAUNCHES`) picks
which queued instances are requested from the cloud this tick, as Ray does right after scaling.

Simplified: Ray drains a node over a few reconciler iterations (RAY_STOP_REQUESTED, RAY_STOPPED, TERMINATING); here
an idle node goes in the tick that decides it, as ours does. Ray's loop runs every 5 s by default
(`AUTOSCALER_UPDATE_INTERVAL_S`); here it runs at our timer's interval, so both decide equally often.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ray.autoscaler._private.constants import AUTOSCALER_MAX_CONCURRENT_LAUNCHES
from ray.autoscaler.v2.instance_manager.config import NodeTypeConfig as RayNodeTypeConfig
from ray.autoscaler.v2.instance_manager.reconciler import Reconciler
from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
from ray.autoscaler.v2.schema import AutoscalerInstance
from ray.autoscaler.v2.utils import ResourceRequestUtil
from ray.core.generated import autoscaler_pb2, instance_manager_pb2

from simulator.cluster import HEAD_TYPE, cluster_config, is_spot
from simulator.world import Node, World

# Generated protobuf classes are made at import time, so mypy cannot see them: reach them as plain attributes.
IMInstance: Any = getattr(instance_manager_pb2, "Instance")  # noqa: B009
NodeKind: Any = getattr(instance_manager_pb2, "NodeKind")  # noqa: B009
NodeState: Any = getattr(autoscaler_pb2, "NodeState")  # noqa: B009
NodeStatus: Any = getattr(autoscaler_pb2, "NodeStatus")  # noqa: B009
ResourceRequestByCount: Any = getattr(autoscaler_pb2, "ResourceRequestByCount")  # noqa: B009

QUEUED, REQUESTED, ALLOCATED = IMInstance.QUEUED, IMInstance.REQUESTED, IMInstance.ALLOCATED
RAY_RUNNING = IMInstance.RAY_RUNNING


@dataclass
class Instance:
    """One row of Ray's instance manager, as much of it as the scheduler and the launch step read."""

    instance_id: str
    node_type: str
    status: int
    queued_ns: int
    is_head: bool = False

    def proto(self) -> Any:
        instance = IMInstance(
            instance_id=self.instance_id,
            instance_type=self.node_type,
            status=self.status,
            node_kind=NodeKind.HEAD if self.is_head else NodeKind.WORKER,
        )
        if self.status == RAY_RUNNING:
            instance.node_id = ray_node_id(self.instance_id)
            instance.cloud_instance_id = f"vm-{self.instance_id}"
        history = instance.status_history.add()
        history.instance_status = QUEUED
        history.timestamp_ns = self.queued_ns
        return instance


def ray_node_id(instance_id: str) -> str:
    return instance_id.encode().hex()


def node_state(node: Node, now_s: float) -> Any:
    return NodeState(
        node_id=bytes.fromhex(ray_node_id(node.key)),
        instance_id=f"vm-{node.key}",
        ray_node_type_name=node.node_type,
        available_resources=node.free,
        total_resources=node.total,
        status=NodeStatus.RUNNING if node.tasks else NodeStatus.IDLE,
        idle_duration_ms=int(node.idle_for_s(now_s) * 1000),
    )


class RayPolicy:
    """Ray's policy on the cluster config. With `spot_first`, the spot types get v2's per-type `priority` 1 (the others
    0): what a Ray user can configure so that equal fits go to spot, since Ray's scheduler reads no price."""

    def __init__(self, *, spot_first: bool = False) -> None:
        self.name = "ray_spot_first" if spot_first else "ray"
        self.drains_on_notice = False  # Ray's autoscaler does not watch Azure's Scheduled Events
        config = cluster_config()
        self.instances: dict[str, Instance] = {}
        self.scheduler = ResourceDemandScheduler()
        # As v2's AutoscalingConfig.get_node_type_configs: every type, the head's with one more for the head itself.
        self.node_types = {
            name: RayNodeTypeConfig(
                name=name,
                min_worker_nodes=node_type.min_workers,
                max_worker_nodes=node_type.max_workers + (1 if name == config.head_node_type else 0),
                idle_timeout_s=node_type.idle_timeout_s,
                resources=dict(node_type.resources),
                labels=dict(node_type.labels),
                priority=1 if spot_first and name != config.head_node_type and is_spot(name) else 0,
            )
            for name, node_type in config.available_node_types.items()
        }
        self.max_num_nodes = config.max_workers + 1
        self.idle_timeout_s = config.idle_timeout_minutes * 60.0
        self.upscaling_speed = config.upscaling_speed
        self.serial = 0
        logging.getLogger("ray.autoscaler.v2.scheduler").setLevel(logging.WARNING)

    def start(self, world: World) -> None:
        self.instances["head"] = Instance("head", HEAD_TYPE, RAY_RUNNING, 0, is_head=True)
        world.launch(HEAD_TYPE, "head", is_head=True)

    def tick(self, world: World) -> None:
        self._sync(world)
        reply = self.scheduler.schedule(self._request(world))
        for termination in reply.to_terminate:
            instance = self.instances.pop(termination.instance_id, None)
            if instance is not None and instance.status != QUEUED:
                world.terminate(instance.instance_id)
        now_ns = int(world.now_s * 1e9)
        for launch in reply.to_launch:
            for _ in range(launch.count):
                self.serial += 1
                instance_id = f"r{self.serial:06d}"
                self.instances[instance_id] = Instance(instance_id, launch.instance_type, QUEUED, now_ns)
        self._launch_queued(world)

    def _sync(self, world: World) -> None:
        """What v2's reconciler learns from the cloud's list and Ray's node states."""
        for instance in list(self.instances.values()):
            node = world.nodes.get(instance.instance_id)
            if instance.status == QUEUED or instance.is_head:
                continue
            if node is None or not node.alive:
                del self.instances[instance.instance_id]  # evicted: the cloud no longer lists it
            elif instance.status == REQUESTED:
                instance.status = ALLOCATED
            if instance.status == ALLOCATED and node is not None and node.booted(world.now_s):
                instance.status = RAY_RUNNING

    def _request(self, world: World) -> SchedulingRequest:
        current = []
        for instance in self.instances.values():
            node = world.nodes.get(instance.instance_id)
            ray_node = node_state(node, world.now_s) if node is not None and instance.status == RAY_RUNNING else None
            current.append(
                AutoscalerInstance(
                    im_instance=instance.proto(),
                    ray_node=ray_node,
                    cloud_instance_id=f"vm-{instance.instance_id}" if instance.status != QUEUED else None,
                )
            )
        return SchedulingRequest(
            disable_launch_config_check=True,
            node_type_configs=self.node_types,
            max_num_nodes=self.max_num_nodes,
            idle_timeout_s=self.idle_timeout_s,
            resource_requests=[
                ResourceRequestByCount(request=ResourceRequestUtil.make(dict(shape)), count=count)
                for shape, count in world.pending().items()
            ],
            current_instances=current,
        )

    def _launch_queued(self, world: World) -> None:
        by_status: dict[int, list[Any]] = {QUEUED: [], REQUESTED: [], RAY_RUNNING: []}
        for instance in self.instances.values():
            if instance.status in by_status and not instance.is_head:
                by_status[instance.status].append(instance.proto())
        if not by_status[QUEUED]:
            return
        chosen = Reconciler._compute_to_launch(
            by_status[QUEUED],
            by_status[REQUESTED],
            by_status[RAY_RUNNING],
            self.upscaling_speed,
            AUTOSCALER_MAX_CONCURRENT_LAUNCHES,
        )
        for protos in chosen.values():
            for proto in protos:
                instance = self.instances[proto.instance_id]
                instance.status = REQUESTED
                world.launch(instance.node_type, instance.instance_id)
