"""Demand traces: tasks with shapes and durations, arriving over hours, in phases.

A phase's tasks arrive at offsets from the phase's start. A phase with `after` starts when every task of that phase
has finished (a training job starts once its preprocessing is done), so its arrival times depend on how fast the
policy served the phase before: that is part of what is measured. Every random draw comes from `random.Random` seeded
by (seed, trace name), so both policies replay the very same tasks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Shape = tuple[tuple[str, float], ...]  # sorted (resource, amount) pairs, hashable


def shape(**amounts: float) -> Shape:
    return tuple(sorted((name, float(amount)) for name, amount in amounts.items()))


@dataclass(frozen=True)
class TaskSpec:
    offset_s: float  # from the start of its phase
    shape: Shape
    duration_s: float  # of uninterrupted run time; an eviction loses what was done and the task starts over


@dataclass(frozen=True)
class Phase:
    name: str
    tasks: tuple[TaskSpec, ...]
    after: str = ""  # the phase that must finish first ("" starts at time 0)


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    phases: tuple[Phase, ...]
    horizon_s: float  # how long the trace is meant to run; the run goes on until every task is done (capped)

    @property
    def task_count(self) -> int:
        return sum(len(phase.tasks) for phase in self.phases)


def _lognormal(rng: random.Random, median_s: float, sigma: float, low_s: float, high_s: float) -> float:
    return min(high_s, max(low_s, median_s * math.exp(rng.gauss(0.0, sigma))))


def _poisson_arrivals(
    rng: random.Random, rate_per_s: Callable[[float], float], peak_per_s: float, end_s: float
) -> Iterator[float]:
    """Arrival times of a non-homogeneous Poisson process (Lewis-Shedler thinning)."""
    now_s = 0.0
    while True:
        now_s += rng.expovariate(peak_per_s)
        if now_s >= end_s:
            return
        if rng.random() * peak_per_s <= rate_per_s(now_s):
            yield now_s


DAY_S = 24 * 3600.0


def diurnal(seed: int, hours: float = 24.0) -> Trace:
    """A service's request-driven tasks over a day: the arrival rate follows a sine from 0.02/s at 04:00 to 0.5/s at
    16:00; tasks are short (1 CPU, median 2 min; a fifth of them 4 CPUs, median 4 min)."""
    rng = random.Random(f"{seed}:diurnal")
    low, high = 0.02, 0.5

    def rate(t_s: float) -> float:
        return low + (high - low) * 0.5 * (1.0 - math.cos(2.0 * math.pi * (t_s / DAY_S - 4.0 / 24.0)))

    tasks = []
    for at_s in _poisson_arrivals(rng, rate, high, hours * 3600.0):
        if rng.random() < 0.2:
            tasks.append(TaskSpec(at_s, shape(CPU=4), _lognormal(rng, 240.0, 0.5, 20.0, 1800.0)))
        else:
            tasks.append(TaskSpec(at_s, shape(CPU=1), _lognormal(rng, 120.0, 0.6, 5.0, 1200.0)))
    return Trace("diurnal", diurnal.__doc__ or "", (Phase("requests", tuple(tasks)),), hours * 3600.0)


def bursty(seed: int, hours: float = 24.0) -> Trace:
    """Batch jobs on a quiet cluster: a trickle of 1-CPU tasks (one per 5 min, 1 min each), and bursts (on average
    every 2 h, exponential gaps) of 100-600 tasks of 2 CPUs and median 6 min, all submitted within a minute."""
    rng = random.Random(f"{seed}:bursty")
    end_s = hours * 3600.0
    tasks = [
        TaskSpec(at_s, shape(CPU=1), _lognormal(rng, 60.0, 0.4, 5.0, 600.0))
        for at_s in _poisson_arrivals(rng, lambda _: 1 / 300.0, 1 / 300.0, end_s)
    ]
    burst_at_s = rng.uniform(600.0, 3600.0)
    while burst_at_s < end_s - 1800.0:
        for _ in range(rng.randint(100, 600)):
            tasks.append(
                TaskSpec(burst_at_s + rng.uniform(0.0, 60.0), shape(CPU=2), _lognormal(rng, 360.0, 0.5, 30.0, 3600.0))
            )
        burst_at_s += rng.expovariate(1 / 7200.0) + 600.0
    tasks.sort(key=lambda task: task.offset_s)
    return Trace("bursty", bursty.__doc__ or "", (Phase("batch", tuple(tasks)),), end_s)


def gpu_training(seed: int, hours: float = 12.0) -> Trace:
    """A training run: CPU preprocessing (400 tasks of 4 CPUs, median 8 min, submitted over 5 min), then, once all of
    it is done, 8 GPU trials (1 GPU and 8 CPUs each, 2.5-3.5 h, no checkpoints: an eviction restarts a trial), then a
    CPU evaluation (100 tasks of 2 CPUs, median 5 min). `hours` scales the task durations (12 is the full run)."""
    rng = random.Random(f"{seed}:gpu_training")
    scale = hours / 12.0
    preprocess = tuple(
        TaskSpec(rng.uniform(0.0, 300.0), shape(CPU=4), scale * _lognormal(rng, 480.0, 0.4, 60.0, 2400.0))
        for _ in range(400)
    )
    trials = tuple(
        TaskSpec(rng.uniform(0.0, 30.0), shape(CPU=8, GPU=1), scale * rng.uniform(2.5 * 3600.0, 3.5 * 3600.0))
        for _ in range(8)
    )
    evaluation = tuple(
        TaskSpec(rng.uniform(0.0, 60.0), shape(CPU=2), scale * _lognormal(rng, 300.0, 0.4, 30.0, 1800.0))
        for _ in range(100)
    )
    phases = (
        Phase("preprocess", tuple(sorted(preprocess, key=lambda t: t.offset_s))),
        Phase("train", tuple(sorted(trials, key=lambda t: t.offset_s)), after="preprocess"),
        Phase("evaluate", tuple(sorted(evaluation, key=lambda t: t.offset_s)), after="train"),
    )
    return Trace("gpu_training", gpu_training.__doc__ or "", phases, hours * 3600.0)


TRACES: dict[str, Callable[[int, float], Trace]] = {
    "diurnal": diurnal,
    "bursty": bursty,
    "gpu_training": gpu_training,
}
DEFAULT_HOURS = {"diurnal": 24.0, "bursty": 24.0, "gpu_training": 12.0}
