"""The planner: which workers to launch and which to terminate, given what the cluster has and what Ray waits for.

Pure: no I/O, no clock (`now` is passed in). The reconcile shell calls `plan(...)` once per tick and acts on the
`ScalingPlan`. The rules, in the order `plan` applies them (Ray's resource demand scheduler, v1 and v2, unless
marked "ours"; docs/decisions/planner.md says why each difference exists):

1. Observe (pipeline.py, demand.py). Final instances and the head record are ignored (the shell owns the head).
   Launching instances (queued/requested/allocated) count with their node type's resources; ray_running ones with
   what their Ray node reports free; the head's Ray node adds its free capacity. Implicit per-node resources come
   with every node; node-bound ones (node:<ip>) only with the node that reports them; label selectors restrict
   which nodes a bundle may use.
2. Scale down what is broken or outdated (scale_down.py, the rules that need no placement): launch timeout, dead
   Ray node, outdated config. The nodes they take are no capacity for this tick.
3. min_workers per type (capped by max_workers and the global max_workers) (scale_up.py, from here to 7).
4. `request_resources` constraints are packed against the cluster's *total* capacity; what does not fit launches.
5. STRICT_SPREAD placement groups take one distinct node per bundle, or nothing at all.
6. Tasks, actors and the other placement groups (STRICT_PACK as one summed bundle, PACK/SPREAD flattened) are
   first-fit onto free capacity, largest shapes first; the rest is covered by new nodes (scoring.py chooses the
   types: Ray's utilization scorer, and ours by cost and by capacity; the best of the three plans wins). Types
   marked unavailable are replaced by their `fallback` chain, then by the next best type (ours). Demand left
   without a node is reported in `ScalingPlan.waiting` with its cause (max_workers, unavailable types).
7. upscaling_speed caps demand-driven launches per type as Ray does: pending + new <= max(5, speed * running);
   min_workers, request_resources and placement groups are exempt.
8. Scale down what placement left unneeded (scale_down.py, the rules after placement): above a lowered max_workers,
   then idle past the type's timeout, only when Ray's state is known.
"""

from autoscaler.planner.demand import IMPLICIT_RESOURCE_PREFIX
from autoscaler.planner.inputs import (
    DEFAULT_CONSERVE_GPU_NODES,
    DEFAULT_LAUNCH_TIMEOUT_S,
    UPSCALING_INITIAL_NUM_NODES,
    PlannerConfig,
    WorkerType,
    labels_of,
)
from autoscaler.planner.labels import format_selector, parse_selector, selectors_json
from autoscaler.planner.packing import RESOURCE_UNITS
from autoscaler.planner.pipeline import plan
from autoscaler.planner.prices import priced_by, resources_price
from autoscaler.planner.scale_down import (
    SCALE_DOWN_RULES,
    DeadNode,
    Idle,
    LaunchTimeout,
    Outdated,
    OverMax,
    ScaleDownRule,
)
from autoscaler.planner.scoring import MAX_PREMIUM_FOR_MORE_SERVED

__all__ = [
    "DEFAULT_CONSERVE_GPU_NODES",
    "DEFAULT_LAUNCH_TIMEOUT_S",
    "IMPLICIT_RESOURCE_PREFIX",
    "MAX_PREMIUM_FOR_MORE_SERVED",
    "RESOURCE_UNITS",
    "SCALE_DOWN_RULES",
    "UPSCALING_INITIAL_NUM_NODES",
    "DeadNode",
    "Idle",
    "LaunchTimeout",
    "Outdated",
    "OverMax",
    "PlannerConfig",
    "ScaleDownRule",
    "WorkerType",
    "format_selector",
    "labels_of",
    "parse_selector",
    "plan",
    "priced_by",
    "resources_price",
    "selectors_json",
]
