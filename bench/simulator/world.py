"""The discrete-event core both policies run in: virtual time, tasks, VMs, a first-fit task scheduler, the bill.

Time is a float of seconds from the trace's start; nothing sleeps and nothing reads a clock. Events (a task arrives,
a task finishes, a VM has booted, a spot VM is evicted, the control interval elapses) are taken in time order;
events at the same time in the order they were scheduled. After each one, pending tasks are placed first-fit onto
booted VMs with free resources, oldest first per shape, tasks without GPUs on CPU VMs before GPU VMs (Ray's
`scheduler_avoid_gpu_nodes`), and not on a VM whose eviction notice is out when the policy drains on notice. A task
on a VM that goes away (eviction, or a policy terminating a busy VM) loses the time it ran (`lost_work_s`) and is
queued again at the front.

A VM is billed from its launch to its end (eviction or termination) at its type's price (cluster.py); the head is
the same for both policies and is not billed here. The wait of a task is all the time it spent queued, re-queues
after an eviction included.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, cast

from simulator.cluster import Distributions, Luck, price_per_hour
from simulator.traces import Phase, Shape, Trace

EPSILON = 1e-9


class Policy(Protocol):
    name: str
    # Whether a VM stops taking new tasks once its spot eviction notice is out (ours: the node agent sees Azure's
    # Scheduled Event and drains the Ray node with the deadline; Ray's autoscaler does not watch for notices).
    drains_on_notice: bool

    def start(self, world: World) -> None:
        """Before time 0: bring the cluster up (its head)."""

    def tick(self, world: World) -> None:
        """One control interval: observe the world, launch and terminate VMs through it."""


@dataclass
class Task:
    task_id: int
    phase: str
    shape: Shape
    duration_s: float
    queued_since_s: float = math.nan
    wait_s: float = 0.0
    started_s: float = math.nan
    node_key: str = ""
    attempt: int = 0
    done_s: float = math.nan


@dataclass
class Node:
    key: str
    node_type: str
    sequence: int  # among this type's launches in this run
    launched_s: float
    ready_s: float
    evict_s: float  # math.inf: never evicted
    total: dict[str, float]
    free: dict[str, float]
    is_head: bool = False
    tasks: set[int] = field(default_factory=set)
    idle_since_s: float = math.nan  # set when it boots, and each time its last task ends
    ended_s: float = math.nan

    @property
    def alive(self) -> bool:
        return math.isnan(self.ended_s)

    def booted(self, now_s: float) -> bool:
        return self.alive and self.ready_s <= now_s

    def idle_for_s(self, now_s: float) -> float:
        """How long the booted VM has had no task (0 while busy or booting), as Ray reports idle time."""
        if self.tasks or not self.booted(now_s):
            return 0.0
        return now_s - self.idle_since_s

    def fits(self, shape: Shape) -> bool:
        return all(self.free.get(name, 0.0) + EPSILON >= amount for name, amount in shape)

    @property
    def has_gpu(self) -> bool:
        return self.total.get("GPU", 0.0) > 0


@dataclass(frozen=True)
class Sample:
    at_s: float
    nodes_by_type: dict[str, int]  # live worker VMs (booting ones included)
    pending_bundles: int
    cost: float  # accumulated


@dataclass
class Metrics:
    node_hours: float
    cost: float
    wait_mean_s: float
    wait_p95_s: float
    evictions: int
    lost_work_s: float

    def as_json(self) -> dict[str, float | int]:
        return {
            "node_hours": round(self.node_hours, 2),
            "cost": round(self.cost, 2),
            "wait_mean_s": round(self.wait_mean_s, 1),
            "wait_p95_s": round(self.wait_p95_s, 1),
            "evictions": self.evictions,
            "lost_work_s": round(self.lost_work_s, 1),
        }


@dataclass
class RunResult:
    policy: str
    trace: str
    metrics: Metrics
    samples: list[Sample]
    node_hours_by_type: dict[str, float]
    launches_by_type: dict[str, int]
    tasks: int
    unfinished: int
    makespan_s: float  # when the last task finished (or the run's end if some never did)
    ended_s: float


ARRIVE, FINISH, READY, EVICT, TICK = "arrive", "finish", "ready", "evict", "tick"


class World:
    def __init__(
        self,
        trace: Trace,
        *,
        luck_of: Callable[[str, int], Luck],
        distributions: Distributions,
        interval_s: float,
        resources_of: Callable[[str], dict[str, float]],
        tail_s: float = 4 * 3600.0,
    ) -> None:
        self.trace = trace
        self.luck_of = luck_of
        self.distributions = distributions
        self.interval_s = interval_s
        self.resources_of = resources_of
        self.end_cap_s = trace.horizon_s + tail_s  # a run stops here even with tasks left
        self.now_s = 0.0
        self.nodes: dict[str, Node] = {}
        self.tasks: list[Task] = []
        self.queues: dict[Shape, deque[int]] = {}
        self.evictions = 0
        self.lost_work_s = 0.0
        self.samples: list[Sample] = []
        self.launches: dict[str, int] = {}
        self._events: list[tuple[float, int, str, object]] = []
        self._order = 0
        self._phases = {phase.name: phase for phase in trace.phases}
        self._left: dict[str, int] = {phase.name: len(phase.tasks) for phase in trace.phases}
        self._finished_tasks = 0
        self._released: set[str] = set()
        self._closed_cost = 0.0  # of the VMs already gone
        self._drains_on_notice = False

    # -- what policies call ------------------------------------------------------------------------------------------

    def launch(self, node_type: str, key: str, *, is_head: bool = False) -> Node:
        """A VM of `node_type` starts booting now (a head is up at once, and is never evicted)."""
        sequence = self.launches.get(node_type, 0)
        total = dict(self.resources_of(node_type))
        if is_head:
            node = Node(key, node_type, sequence, self.now_s, self.now_s, math.inf, total, dict(total), is_head=True)
            node.idle_since_s = self.now_s
        else:
            self.launches[node_type] = sequence + 1
            drawn = self.luck_of(node_type, sequence)
            ready_s, evict_s = self.now_s + drawn.boot_s, self.now_s + drawn.life_s
            node = Node(key, node_type, sequence, self.now_s, ready_s, evict_s, total, dict(total))
            self._push(ready_s, READY, key)
            if math.isfinite(evict_s):
                self._push(evict_s, EVICT, key)
        self.nodes[key] = node
        return node

    def terminate(self, key: str) -> None:
        """The VM goes now; its tasks, if any, lose their work and are queued again."""
        node = self.nodes.get(key)
        if node is not None and node.alive:
            self._end(node)
            self._place()

    def live_nodes(self) -> list[Node]:
        return [node for node in self.nodes.values() if node.alive]

    def pending(self) -> dict[Shape, int]:
        return {shape: len(queue) for shape, queue in self.queues.items() if queue}

    def notice_given(self, node: Node) -> bool:
        """Whether the VM has received its eviction notice by now."""
        return self.now_s >= node.evict_s - self.distributions.eviction_notice_s

    # -- the run ---------------------------------------------------------------------------------------------------

    def run(self, policy: Policy) -> RunResult:
        self._drains_on_notice = policy.drains_on_notice
        policy.start(self)
        for phase in self.trace.phases:
            if not phase.after:
                self._release(phase)
        self._push(0.0, TICK, None)
        handlers: dict[str, Callable[[object], bool]] = {
            ARRIVE: self._on_arrive,
            FINISH: self._on_finish,
            READY: self._on_ready,
            EVICT: self._on_evict,
            TICK: lambda _: self._on_tick(policy),
        }
        while self._events:
            at_s, _, kind, payload = heapq.heappop(self._events)
            self.now_s = at_s
            if handlers[kind](payload):
                break
        return self._result(policy.name)

    def _push(self, at_s: float, kind: str, payload: object) -> None:
        self._order += 1
        heapq.heappush(self._events, (at_s, self._order, kind, payload))

    def _release(self, phase: Phase) -> None:
        self._released.add(phase.name)
        for spec in phase.tasks:
            task = Task(len(self.tasks), phase.name, spec.shape, spec.duration_s)
            self.tasks.append(task)
            self._push(self.now_s + spec.offset_s, ARRIVE, task.task_id)

    def _on_arrive(self, task_id: object) -> bool:
        task = self.tasks[cast(int, task_id)]
        task.queued_since_s = self.now_s
        queue = self.queues.setdefault(task.shape, deque())
        queue.append(task.task_id)
        if len(queue) == 1:  # else older tasks of the same shape wait already: it cannot fit either
            self._place()
        return False

    def _on_finish(self, payload: object) -> bool:
        task_id, attempt = cast(tuple[int, int], payload)
        task = self.tasks[task_id]
        if task.attempt != attempt or not math.isnan(task.done_s):
            return False  # a run that was cut short by an eviction
        node = self.nodes[task.node_key]
        self._release_resources(node, task)
        task.done_s = self.now_s
        self._finished_tasks += 1
        self._left[task.phase] -= 1
        if self._left[task.phase] == 0:
            for phase in self.trace.phases:
                if phase.after == task.phase:
                    self._release(phase)
        self._place()
        return False

    def _on_ready(self, key: object) -> bool:
        node = self.nodes[str(key)]
        if node.alive:
            node.idle_since_s = self.now_s
            self._place()
        return False

    def _on_evict(self, key: object) -> bool:
        node = self.nodes[str(key)]
        if node.alive:
            self.evictions += 1
            self._end(node)
            self._place()
        return False

    def _on_tick(self, policy: Policy) -> bool:
        policy.tick(self)
        self.samples.append(self._sample())
        done = self._finished_tasks == len(self.tasks) and not any(self._phases_waiting())
        if (done and not any(not n.is_head for n in self.live_nodes())) or self.now_s >= self.end_cap_s:
            return True
        self._push(self.now_s + self.interval_s, TICK, None)
        return False

    def _phases_waiting(self) -> Iterable[str]:
        """Phases whose tasks are not released yet (their predecessor has not finished)."""
        return (name for name in self._phases if name not in self._released)

    # -- placement ---------------------------------------------------------------------------------------------------

    def _place(self) -> None:
        """First fit of every shape's queued tasks, oldest shape first, onto booted VMs."""
        shapes = sorted(
            (shape for shape, queue in self.queues.items() if queue),
            key=lambda shape: self.tasks[self.queues[shape][0]].queued_since_s,
        )
        if not shapes:
            return
        booted = [node for node in self.nodes.values() if self._takes_tasks(node)]
        for shape in shapes:
            wants_gpu = any(name == "GPU" for name, _ in shape)
            candidates = sorted(booted, key=lambda node: (node.has_gpu != wants_gpu, node.ready_s))
            queue = self.queues[shape]
            for node in candidates:
                while queue and node.fits(shape):
                    self._start(self.tasks[queue.popleft()], node)
                if not queue:
                    break

    def _takes_tasks(self, node: Node) -> bool:
        if node.is_head or not node.booted(self.now_s):
            return False
        return not (self._drains_on_notice and self.notice_given(node))

    def _start(self, task: Task, node: Node) -> None:
        task.wait_s += self.now_s - task.queued_since_s
        task.started_s = self.now_s
        task.node_key = node.key
        task.attempt += 1
        for name, amount in task.shape:
            node.free[name] = node.free.get(name, 0.0) - amount
        node.tasks.add(task.task_id)
        self._push(self.now_s + task.duration_s, FINISH, (task.task_id, task.attempt))

    def _release_resources(self, node: Node, task: Task) -> None:
        for name, amount in task.shape:
            node.free[name] = node.free.get(name, 0.0) + amount
        node.tasks.discard(task.task_id)
        if not node.tasks:
            node.idle_since_s = self.now_s

    def _end(self, node: Node) -> None:
        node.ended_s = self.now_s
        self._closed_cost += self._cost_until(node, self.now_s)
        for task_id in sorted(node.tasks, reverse=True):
            task = self.tasks[task_id]
            self.lost_work_s += self.now_s - task.started_s
            task.attempt += 1  # its pending finish event is stale now
            task.queued_since_s = self.now_s
            task.node_key = ""
            self.queues.setdefault(task.shape, deque()).appendleft(task_id)
        node.tasks.clear()

    # -- figures -----------------------------------------------------------------------------------------------------

    def _cost_until(self, node: Node, until_s: float) -> float:
        if node.is_head:
            return 0.0
        end_s = node.ended_s if not node.alive else until_s
        return (end_s - node.launched_s) / 3600.0 * price_per_hour(node.node_type)

    def _sample(self) -> Sample:
        by_type: dict[str, int] = {}
        for node in self.live_nodes():
            if not node.is_head:
                by_type[node.node_type] = by_type.get(node.node_type, 0) + 1
        cost = self._closed_cost + sum(self._cost_until(node, self.now_s) for node in self.live_nodes())
        return Sample(self.now_s, by_type, sum(self.pending().values()), cost)

    def _result(self, policy: str) -> RunResult:
        for node in self.live_nodes():
            if not node.is_head:
                node.ended_s = self.now_s  # the run's end bills what is still up (a capped run: tasks unfinished)
        hours: dict[str, float] = {}
        for node in self.nodes.values():
            if not node.is_head:
                hours[node.node_type] = hours.get(node.node_type, 0.0) + (node.ended_s - node.launched_s) / 3600.0
        waits = []
        for task in self.tasks:
            if math.isnan(task.done_s):
                task.wait_s += self.now_s - task.queued_since_s
            waits.append(task.wait_s)
        unfinished = sum(1 for task in self.tasks if math.isnan(task.done_s))
        unfinished += sum(len(self._phases[name].tasks) for name in self._phases_waiting())
        done = [task.done_s for task in self.tasks if not math.isnan(task.done_s)]
        metrics = Metrics(
            node_hours=sum(hours.values()),
            cost=sum(self._cost_until(node, self.now_s) for node in self.nodes.values()),
            wait_mean_s=statistics.fmean(waits) if waits else 0.0,
            wait_p95_s=percentile(waits, 95.0),
            evictions=self.evictions,
            lost_work_s=self.lost_work_s,
        )
        return RunResult(
            policy=policy,
            trace=self.trace.name,
            metrics=metrics,
            samples=self.samples,
            node_hours_by_type=hours,
            launches_by_type=dict(self.launches),
            tasks=self.trace.task_count,
            unfinished=unfinished,
            makespan_s=self.now_s if unfinished else max(done, default=0.0),
            ended_s=self.now_s,
        )


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, linear between closest ranks (numpy's default)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
