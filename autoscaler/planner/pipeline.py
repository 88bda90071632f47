"""One tick of planning: observe, scale down what is broken or outdated, scale up with each scorer, scale down what
placement left unneeded, and keep the best of the scorers' plans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from autoscaler.config import ClusterConfig, is_outdated_node_hash
from autoscaler.model import (
    InstanceRecord,
    InstanceStatus,
    Launch,
    RayNode,
    RayNodeStatus,
    RayState,
    ScalingPlan,
    Unavailability,
)
from autoscaler.planner.demand import DemandReader, DemandView, Resources
from autoscaler.planner.inputs import PlannerConfig, WorkerType
from autoscaler.planner.packing import EXISTING, Kind, Slot
from autoscaler.planner.scale_down import (
    LAUNCHING,
    SCALE_DOWN_RULES,
    Candidate,
    ScaleDownRule,
    ScaleDownView,
    apply_rules,
    needed_from,
)
from autoscaler.planner.scale_up import Cluster, ScaleUp, Tick
from autoscaler.planner.scoring import Strategy, is_acceptable, is_better


def plan(
    *,
    config: ClusterConfig | PlannerConfig,
    instances: Sequence[InstanceRecord],
    ray: RayState | None,
    unavailable: Sequence[Unavailability],
    now: datetime,
    rules: Sequence[ScaleDownRule] = SCALE_DOWN_RULES,
) -> ScalingPlan:
    """Decide one tick. `ray is None` means the head agent did not answer: keep min_workers and apply launch
    timeouts, but never scale down for idleness on stale information."""
    planner_config = config if isinstance(config, PlannerConfig) else PlannerConfig.from_cluster_config(config)
    resources = Resources(planner_config, instances, ray)
    view = _candidates(planner_config, instances, ray, now)
    apply_rules(view, [rule for rule in rules if not rule.after_placement])
    cluster = _observe(planner_config, resources, instances, ray, view.taken)
    reader = DemandReader(planner_config, resources, [slot for slot in cluster.slots if slot.kind in EXISTING])
    tick = Tick(
        config=planner_config,
        resources=resources,
        reader=reader,
        demand=DemandView.read(ray, reader) if ray is not None else None,
        unavailable={u.node_type: u for u in unavailable if u.until > now},
    )

    def scale_up(strategy: Strategy) -> ScaleUp:
        candidate = ScaleUp(tick, cluster.copy(), strategy)
        candidate.run()
        return candidate

    chosen = rays = scale_up(Strategy.RAY)
    if rays.chose_node_types:  # else every scorer gives this same plan
        candidates = [scale_up(Strategy.COST)]
        if candidates[0].unserved:
            candidates.append(scale_up(Strategy.CAPACITY))
        for candidate in candidates:
            if is_acceptable(candidate, rays) and (chosen is rays or is_better(candidate, chosen)):
                chosen = candidate
    return _scale_down_and_assemble(tick, chosen, view, rules, ray)


def _candidates(
    config: PlannerConfig, instances: Sequence[InstanceRecord], ray: RayState | None, now: datetime
) -> ScaleDownView:
    """Every live worker instance that is launching or running Ray, as the scale-down rules see it."""
    types = {worker.name: worker for worker in config.worker_types}
    ray_nodes = {node.instance_id: node for node in ray.nodes if node.instance_id} if ray else {}
    candidates = []
    for record in instances:
        if record.is_head or not (record.status in LAUNCHING or record.status is InstanceStatus.RAY_RUNNING):
            continue
        worker = types.get(record.node_type)
        current = worker.config_hash if worker is not None and worker.config_hash else config.config_hash
        node = ray_nodes.get(record.instance_id)
        candidates.append(
            Candidate(
                instance_id=record.instance_id,
                node_type=record.node_type,
                status=record.status,
                worker=worker,
                # From when the cloud accepted the launch: time spent queued (a Retry-After pause) is not the cloud's.
                launched_age_s=(now - (record.launched_at or record.created_at)).total_seconds(),
                outdated=is_outdated_node_hash(record.config_hash, current),
                ray_status=node.status if node is not None else None,
                idle_s=node.idle_duration_s if node is not None else 0.0,
            )
        )
    return ScaleDownView(candidates, max_workers=config.max_workers, ray_known=ray is not None)


def _observe(
    config: PlannerConfig,
    resources: Resources,
    instances: Sequence[InstanceRecord],
    ray: RayState | None,
    taken: set[str],
) -> Cluster:
    """The nodes as capacity, in placement order: the head, busy, unmanaged, idle (recently used first), launching.
    Final, head and taken instances are left out, and so are nodes Ray is draining."""
    types = {worker.name: worker for worker in config.worker_types}
    cluster = Cluster([], dict.fromkeys(types, 0), dict.fromkeys(types, 0), dict.fromkeys(types, 0))
    ray_nodes = {node.instance_id: node for node in ray.nodes if node.instance_id} if ray else {}
    by_kind: dict[Kind, list[Slot]] = {kind: [] for kind in Kind}
    for record in instances:
        if record.is_head or not record.status.is_live or record.instance_id in taken:
            continue
        worker = types.get(record.node_type)
        if record.status is InstanceStatus.DRAINING:
            # Leaving, but not gone: Ray refuses to drain a node that got busy again, and an unanswered drain is
            # given up; either way the node stays. It offers no capacity, yet counts against max_workers. A node
            # with a preemption notice is gone by its deadline whatever Ray says: it does not count, so that its
            # replacement is launched now rather than after the eviction (a bounded overlap of ~30 s).
            if worker is not None and record.preempt_deadline is None:
                cluster.counts[worker.name] += 1
            continue
        if record.status in LAUNCHING and worker is not None:
            cluster.counts[worker.name] += 1
            cluster.launching[worker.name] += 1
            by_kind[Kind.LAUNCHING].append(_type_slot(resources, worker, Kind.LAUNCHING, record.instance_id))
        elif record.status is InstanceStatus.RAY_RUNNING:
            slot, counts = _running_slot(config, resources, record, worker=worker, ray=ray, ray_nodes=ray_nodes)
            if slot is not None:
                by_kind[slot.kind].append(slot)
            if counts and worker is not None:
                cluster.counts[worker.name] += 1
                cluster.running[worker.name] += slot is not None
    if ray is not None:
        _add_ray_only_slots(config, resources, instances, ray, by_kind)
    # Demand lands on running nodes before launching ones, and on recently used idle nodes before long idle
    # ones, so that the nodes left unneeded are the ones worth terminating.
    by_kind[Kind.IDLE].sort(key=lambda slot: slot.idle_duration_s)
    order = (Kind.HEAD, Kind.BUSY, Kind.UNMANAGED, Kind.IDLE, Kind.LAUNCHING)
    cluster.slots = [slot for kind in order for slot in by_kind[kind]]
    return cluster


def _running_slot(
    config: PlannerConfig,
    resources: Resources,
    record: InstanceRecord,
    *,
    worker: WorkerType | None,
    ray: RayState | None,
    ray_nodes: Mapping[str, RayNode],
) -> tuple[Slot | None, bool]:
    """A ray_running worker as capacity (None: it offers none), and whether it counts against max_workers."""
    if ray is None:
        # No news from Ray: the node keeps counting, with unknown usage, and is never taken for idle.
        return (None, False) if worker is None else (_type_slot(resources, worker, Kind.BUSY, record.instance_id), True)
    node = ray_nodes.get(record.instance_id)
    if node is None or node.status == RayNodeStatus.DEAD:
        return None, False  # the dead-node rule takes it
    if node.status == RayNodeStatus.DRAINING:
        return None, True  # Ray drains it: no capacity, but it counts until it is gone
    kind = Kind.IDLE if node.status == RayNodeStatus.IDLE else Kind.BUSY
    return _ray_slot(resources, node, record.node_type, kind, config), True


def _add_ray_only_slots(
    config: PlannerConfig,
    resources: Resources,
    instances: Sequence[InstanceRecord],
    ray: RayState,
    by_kind: dict[Kind, list[Slot]],
) -> None:
    """The head's Ray node, and Ray nodes without an instance record (started by hand)."""
    known_ids = {record.instance_id for record in instances}
    head_ids = {record.instance_id for record in instances if record.is_head}
    for node in ray.nodes:
        if node.status in (RayNodeStatus.DEAD, RayNodeStatus.DRAINING):
            continue
        if node.is_head or node.instance_id in head_ids:
            by_kind[Kind.HEAD].append(_ray_slot(resources, node, config.head_node_type, Kind.HEAD, config))
        elif not node.instance_id or node.instance_id not in known_ids:
            by_kind[Kind.UNMANAGED].append(_ray_slot(resources, node, node.node_type, Kind.UNMANAGED, config))


def _type_slot(resources: Resources, worker: WorkerType, kind: Kind, instance_id: str) -> Slot:
    """A node as its type describes it (launching, or running while Ray's state is unknown)."""
    vector = resources.type_units[worker.name]
    return Slot(list(vector), vector, 1, worker.name, kind, instance_id, labels=dict(worker.labels))


def _ray_slot(resources: Resources, node: RayNode, node_type: str, kind: Kind, config: PlannerConfig) -> Slot:
    total, free = resources.node(node.total_resources, node.available_resources)
    labels = dict(node.labels)
    if not labels:
        # An agent that reports no labels (older than this release): the labels the node type gives its nodes.
        if kind is Kind.HEAD:
            labels = dict(config.head_labels)
        else:
            labels = next((dict(w.labels) for w in config.worker_types if w.name == node_type), {})
    return Slot(free, total, 1, node_type, kind, node.instance_id, idle_duration_s=node.idle_duration_s, labels=labels)


def _scale_down_and_assemble(
    tick: Tick, chosen: ScaleUp, view: ScaleDownView, rules: Sequence[ScaleDownRule], ray: RayState | None
) -> ScalingPlan:
    """The rules after placement, on the chosen pass's placement and counts; then the plan, with every note once."""
    needed_from({slot.instance_id: slot.needed for slot in chosen.slots if slot.instance_id}, view)
    view.counts = dict(chosen.counts)
    before_notes = list(view.notes)
    view.notes.clear()
    apply_rules(view, [rule for rule in rules if rule.after_placement])
    launches = [Launch(name, nodes, reason) for name, (nodes, reason) in chosen.launches.items()]
    unavailable_notes = [
        f"not launched: {tick.unavailable_text(name)}" for name in tick.unavailable if name in tick.types
    ]
    notes = list(dict.fromkeys([*unavailable_notes, *before_notes, *chosen.notes, *view.notes]))
    if not launches and not view.terminations:
        workers = sum(chosen.counts.values())
        pending = ray.pending_bundles if ray is not None else 0
        notes.append(f"no change: {workers} workers, {pending} pending bundles, none idle past their timeout")
    return ScalingPlan(
        launches=tuple(launches),
        terminations=tuple(view.terminations),
        infeasible=tuple(tick.demand.infeasible) if tick.demand is not None else (),
        notes=tuple(notes),
        waiting=tuple(chosen.waiting),
    )
