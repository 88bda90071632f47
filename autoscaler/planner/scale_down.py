"""Scale-down: an ordered list of rules, each deciding which worker instances to terminate and saying why.

The rules run in the order of SCALE_DOWN_RULES, and a node taken by one is not seen by the next, so each node gets
one reason: the first rule that applies. The first three judge a node on its own (its launch age, its Ray node, its
config) and run before any demand is placed, because the nodes they take are no capacity for this tick's demand. The
last two need to know which nodes the demand uses, so they run after placement:

1. LaunchTimeout  requested/allocated longer than the type's launch_timeout_s: a launch failure, no drain (ours; Ray
                  v2's reconciler has a fixed ALLOCATED timeout instead). Applies with Ray unreachable too.
2. DeadNode       a ray_running worker whose Ray node Ray reports dead or no longer lists: no drain (Ray v2 does this
                  in its reconciler, as RAY_STOPPED -> TERMINATING). Only when Ray's state is known.
3. Outdated       of a node type no longer in the config or launched with another config: launching ones at once
                  without drain, idle ones drained, busy ones noted and kept until idle (Ray v2 terminates busy ones).
4. OverMax        above a lowered max_workers (per type or global): launching nodes first, then the longest idle;
                  busy nodes are never cut (Ray v2 cuts them too).
5. Idle           idle longer than the type's idle timeout, not needed by any demand or constraint, never below
                  min_workers, the longest idle first, drained first. Only when Ray's state is known.

Each rule is a class with `name`, `after_placement` and `apply(view)`; `view` holds the candidates (one per live,
non-head worker instance that is launching or running Ray), the counts towards max_workers, and collects the
terminations and notes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from autoscaler.model import InstanceStatus, RayNodeStatus, Termination
from autoscaler.planner.inputs import DEFAULT_LAUNCH_TIMEOUT_S, WorkerType

LAUNCHING = frozenset({InstanceStatus.QUEUED, InstanceStatus.REQUESTED, InstanceStatus.ALLOCATED})
LAUNCH_TIMED = frozenset({InstanceStatus.REQUESTED, InstanceStatus.ALLOCATED})  # queued: lifecycle's own timeout


@dataclass(slots=True)
class Candidate:
    """One worker instance as the rules see it."""

    instance_id: str
    node_type: str
    status: InstanceStatus
    worker: WorkerType | None  # None: its node type is no longer in the config
    launched_age_s: float = 0.0  # since the cloud accepted the launch (since queued, before that)
    outdated: bool = False  # launched with another config of its type
    ray_status: RayNodeStatus | None = None  # its Ray node's status; None when Ray lists none (or is not known)
    idle_s: float = 0.0
    needed: bool = False  # some demand or request_resources constraint is placed on it (set after placement)

    @property
    def launching(self) -> bool:
        return self.status in LAUNCHING

    @property
    def running(self) -> bool:
        return self.status is InstanceStatus.RAY_RUNNING


@dataclass
class ScaleDownView:
    """What the rules read and write."""

    candidates: Sequence[Candidate]
    max_workers: int  # global
    ray_known: bool  # False: the head agent did not answer this tick
    counts: dict[str, int] = field(default_factory=dict)  # live workers per type counted towards max_workers
    terminations: list[Termination] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)

    def open(self) -> Iterator[Candidate]:
        """The candidates no earlier rule took, in instance order."""
        return (candidate for candidate in self.candidates if candidate.instance_id not in self.taken)

    def terminate(self, candidate: Candidate, reason: str, *, drain: bool) -> None:
        self.taken.add(candidate.instance_id)
        self.terminations.append(Termination(candidate.instance_id, reason, drain=drain))

    def idle_longest_first(self) -> list[Candidate]:
        """Open, running, idle (by Ray) workers of a current type, the longest idle first."""
        if not self.ray_known:
            return []
        idle = (
            candidate
            for candidate in self.open()
            if candidate.running and candidate.ray_status is RayNodeStatus.IDLE and candidate.worker is not None
        )
        return sorted(idle, key=lambda candidate: -candidate.idle_s)


class ScaleDownRule(Protocol):
    name: ClassVar[str]
    after_placement: ClassVar[bool]  # needs to know which nodes the demand uses

    def apply(self, view: ScaleDownView) -> None: ...


class LaunchTimeout:
    name: ClassVar[str] = "launch timeout"
    after_placement: ClassVar[bool] = False

    def apply(self, view: ScaleDownView) -> None:
        for candidate in list(view.open()):
            timeout_s = candidate.worker.launch_timeout_s if candidate.worker else DEFAULT_LAUNCH_TIMEOUT_S
            if candidate.status in LAUNCH_TIMED and candidate.launched_age_s > timeout_s:
                view.terminate(candidate, self.reason(candidate, timeout_s), drain=False)

    @staticmethod
    def reason(candidate: Candidate, timeout_s: float) -> str:
        return (
            f"launch failure: not registered with Ray {candidate.launched_age_s:.0f} s after launch "
            f"(launch_timeout_s {timeout_s:g}, status {candidate.status})"
        )


class DeadNode:
    name: ClassVar[str] = "dead node"
    after_placement: ClassVar[bool] = False

    def apply(self, view: ScaleDownView) -> None:
        if not view.ray_known:
            return  # no news from Ray is not news of a dead node
        for candidate in list(view.open()):
            if candidate.running and candidate.ray_status in (None, RayNodeStatus.DEAD):
                view.terminate(candidate, self.reason(candidate), drain=False)

    @staticmethod
    def reason(candidate: Candidate) -> str:
        return "its Ray node is dead" if candidate.ray_status is RayNodeStatus.DEAD else "Ray lists no node for it"


class Outdated:
    name: ClassVar[str] = "outdated"
    after_placement: ClassVar[bool] = False

    def apply(self, view: ScaleDownView) -> None:
        for candidate in list(view.open()):
            why = self.why(candidate)
            if not why:
                continue
            if candidate.launching:
                view.terminate(candidate, self.launching_reason(candidate), drain=False)
            elif candidate.running and view.ray_known and candidate.ray_status is RayNodeStatus.IDLE:
                view.terminate(candidate, f"{why}: idle, replaced by the current config", drain=True)
            elif candidate.running and view.ray_known and candidate.ray_status is RayNodeStatus.RUNNING:
                view.notes.append(f"{candidate.instance_id} ({candidate.node_type}) has an {why}; replaced once idle")

    @staticmethod
    def why(candidate: Candidate) -> str:
        if candidate.worker is None:
            return "no longer in the config"
        return "outdated config" if candidate.outdated else ""

    @staticmethod
    def launching_reason(candidate: Candidate) -> str:
        if candidate.worker is None:
            return f"node type {candidate.node_type} is no longer in the config"
        return "outdated config: replaced before it starts Ray"


class OverMax:
    name: ClassVar[str] = "over max_workers"
    after_placement: ClassVar[bool] = True

    def apply(self, view: ScaleDownView) -> None:
        """After max_workers is lowered: launching nodes go first, then idle ones; busy nodes are never cut."""
        launching = [candidate for candidate in view.open() if candidate.launching and candidate.worker is not None]
        total = sum(view.counts.values())
        for candidate in [*launching, *view.idle_longest_first()]:
            worker = candidate.worker
            assert worker is not None  # both lists hold current types only
            over_type = view.counts[worker.name] > worker.max_workers
            over_global = total > view.max_workers
            if not (over_type or over_global):
                continue
            view.counts[worker.name] -= 1
            total -= 1
            view.terminate(
                candidate, self.reason(worker, view.max_workers, over_type=over_type), drain=candidate.running
            )

    @staticmethod
    def reason(worker: WorkerType, global_max: int, *, over_type: bool) -> str:
        limit = (
            f"max_workers {worker.max_workers} of {worker.name}" if over_type else f"global max_workers {global_max}"
        )
        return f"above {limit} (config lowered)"


class Idle:
    name: ClassVar[str] = "idle"
    after_placement: ClassVar[bool] = True

    def apply(self, view: ScaleDownView) -> None:
        if not view.ray_known:
            view.notes.append("head agent unreachable: no scale-down for idleness this tick")
            return
        for candidate in view.idle_longest_first():
            worker = candidate.worker
            assert worker is not None  # idle_longest_first holds current types only
            if candidate.idle_s <= worker.idle_timeout_s or candidate.needed:
                continue
            if view.counts[worker.name] <= min(worker.min_workers, worker.max_workers):
                continue
            view.counts[worker.name] -= 1
            view.terminate(candidate, self.reason(candidate, worker, view.counts[worker.name]), drain=True)

    @staticmethod
    def reason(candidate: Candidate, worker: WorkerType, left: int) -> str:
        return (
            f"idle {candidate.idle_s:.0f} s > {worker.idle_timeout_s:g} s and not needed by pending "
            f"demand ({left} {worker.name} left, min_workers {worker.min_workers})"
        )


SCALE_DOWN_RULES: tuple[ScaleDownRule, ...] = (LaunchTimeout(), DeadNode(), Outdated(), OverMax(), Idle())


def apply_rules(view: ScaleDownView, rules: Sequence[ScaleDownRule]) -> None:
    for rule in rules:
        rule.apply(view)


def needed_from(slots_needed: Mapping[str, bool], view: ScaleDownView) -> None:
    """Copy placement's verdict (instance id -> some demand uses it) onto the candidates."""
    for candidate in view.candidates:
        candidate.needed = slots_needed.get(candidate.instance_id, False)
