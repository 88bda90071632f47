"""A cost simulator: demand traces replayed through our autoscaler and through Ray's, in virtual time.

Three traces (bench/simulator/traces.py): `diurnal` (a service's short tasks over a day, the rate following a sine),
`bursty` (a quiet cluster hit by bursts of hundreds of batch tasks) and `gpu_training` (CPU preprocessing, then GPU
trials of hours, then a CPU evaluation). Each runs twice on the same cluster config (bench/simulator/cluster.py: CPU
spot, CPU regular, GPU spot and GPU regular Azure VM types, priced by the Azure plugin's price classes) with the
same seed, so the same tasks arrive and the n-th VM of a type boots as fast and lives as long under both policies:

- ours: the real reconcile shell and planner, one tick per control interval, on the in-memory store and a simulated
  cloud and head agent (bench/simulator/ours.py);
- ray: Ray 2.60's autoscaler v2 policy as installed, its `ResourceDemandScheduler.schedule` (launches and idle
  termination) and its reconciler's launch step (upscaling speed, concurrent launches) (bench/simulator/ray_policy.py);
- ray_spot_first (table and cost plot only): the same with v2's per-type `priority` set on the spot types, what a
  Ray user can configure instead of prices.

The figures of one seed can be luck (a GPU trial evicted twice); `--robustness-seeds N` runs ours and ray on N more
seeds and prints, per trace, how often each comes out ahead.

The control interval is the app's timer period (`DEFAULT_RECONCILE_SCHEDULE`, 15 s) for both. What is modelled and
what is not: docs/decisions/simulator.md.

Run from the repository root:
`.venv/bin/python bench/simulate.py [--seed N] [--quick] [--hours-scale F] [--robustness-seeds N]`. It prints
the distributions and prices, a table per trace, writes docs/img/simulate-<trace>.png, and its last line is JSON:
{"traces": {TRACE: {"ours": M, "ray": M}}}, each M with node_hours, cost ($), wait_mean_s, wait_p95_s, evictions
and lost_work_s.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
if str(Path(__file__).resolve().parent) not in sys.path:
    # bench/ is a folder of scripts, not a package: its helpers (simulator/) are imported by their own name, from here.
    sys.path.append(str(Path(__file__).resolve().parent))

from simulator import cluster
from simulator.ours import OursPolicy
from simulator.ray_policy import RayPolicy
from simulator.traces import DEFAULT_HOURS, TRACES, Trace
from simulator.world import Policy, RunResult, World

from autoscaler.settings import DEFAULT_RECONCILE_SCHEDULE

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "img"
QUICK_HOURS = {"diurnal": 2.0, "bursty": 3.0, "gpu_training": 2.0}
POLICIES: dict[str, Callable[[], Policy]] = {
    "ours": OursPolicy,
    "ray": RayPolicy,
    "ray_spot_first": lambda: RayPolicy(spot_first=True),
}
COMPARED = ("ours", "ray")  # the JSON line's and the plots' policies


def timer_interval_s(schedule: str = DEFAULT_RECONCILE_SCHEDULE) -> float:
    """The period of the app's NCRONTAB timer (seconds first: "*/15 * * * * *" is every 15 s)."""
    seconds = schedule.split(maxsplit=1)[0]
    if not seconds.startswith("*/"):
        raise ValueError(f"expected an every-N-seconds schedule, not {schedule!r}")
    return float(seconds[2:])


def run_policy(
    trace: Trace, policy: Policy, *, seed: int, distributions: cluster.Distributions, interval_s: float
) -> RunResult:
    config = cluster.cluster_config()
    world = World(
        trace,
        luck_of=lambda node_type, sequence: cluster.luck(seed, trace.name, node_type, sequence, distributions),
        distributions=distributions,
        interval_s=interval_s,
        resources_of=lambda node_type: dict(config.available_node_types[node_type].resources),
    )
    return world.run(policy)


def simulate(
    trace_name: str,
    *,
    seed: int,
    hours: float,
    policies: Sequence[str] = COMPARED,
    distributions: cluster.Distributions | None = None,
    interval_s: float | None = None,
) -> dict[str, RunResult]:
    """The policies on one trace, same seed: {policy name: result}."""
    distributions = distributions or cluster.Distributions()
    interval_s = interval_s or timer_interval_s()
    return {
        name: run_policy(
            TRACES[trace_name](seed, hours),
            POLICIES[name](),
            seed=seed,
            distributions=distributions,
            interval_s=interval_s,
        )
        for name in policies
    }


def figures(results_by_trace: dict[str, dict[str, RunResult]]) -> dict[str, object]:
    """The JSON of the last line."""
    return {
        "traces": {
            trace: {policy: results[policy].metrics.as_json() for policy in COMPARED}
            for trace, results in results_by_trace.items()
        }
    }


def print_header(seed: int, interval_s: float, distributions: cluster.Distributions) -> None:
    config = cluster.cluster_config()
    print(f"seed {seed}; control interval {interval_s:g} s for both policies (the app's timer period)")
    print(f"cluster: max_workers {config.max_workers}, idle_timeout_minutes {config.idle_timeout_minutes:g}, "
          f"upscaling_speed {config.upscaling_speed:g}; the head (no CPUs for tasks) is not billed")  # fmt: skip
    for worker in cluster.planner_config().worker_types:
        size = f"{cluster.vm_size(worker.name)} {'spot' if cluster.is_spot(worker.name) else 'regular'}"
        print(f"  {worker.name:12s} {dict(worker.resources)} max {worker.max_workers:2d}  ${worker.cost:.4f}/h "
              f"({size}: the Azure plugin's price class, as the type's cost)")  # fmt: skip
    print(f"luck: {distributions.describe()}")


def print_table(trace: Trace, results: dict[str, RunResult], elapsed_s: float) -> None:
    print(f"\n{trace.name}: {trace.task_count} tasks, {trace.horizon_s / 3600:g} h ({elapsed_s:.1f} s to simulate)")
    print(textwrap.fill(" ".join(trace.description.split()), 118, initial_indent="  ", subsequent_indent="  "))
    header = ("policy", "node-h", "cost $", "wait mean s", "wait p95 s", "evictions", "lost work s", "makespan h")
    print("  " + "".join(f"{column:>14s}" for column in header) + "  launches by type")
    for policy, result in results.items():
        metrics = result.metrics
        row = (
            f"{metrics.node_hours:.1f}",
            f"{metrics.cost:.2f}",
            f"{metrics.wait_mean_s:.1f}",
            f"{metrics.wait_p95_s:.1f}",
            f"{metrics.evictions}",
            f"{metrics.lost_work_s:.0f}",
            f"{result.makespan_s / 3600:.2f}",
        )
        unfinished = f", {result.unfinished} tasks unfinished" if result.unfinished else ""
        launches = ", ".join(f"{name} {count}" for name, count in sorted(result.launches_by_type.items()))
        print(f"  {policy:>14s}" + "".join(f"{value:>14s}" for value in row) + f"  {launches}{unfinished}")


def print_robustness(trace: str, by_seed: dict[int, dict[str, RunResult]]) -> None:
    """Ours against Ray on every seed run: the figures, and how often ours is ahead on each."""
    print(f"\n{trace} over {len(by_seed)} seeds (ours / ray):")
    columns = ("seed", "cost $", "wait mean s", "wait p95 s", "lost work s", "makespan h")
    print("  " + "".join(f"{column:>22s}" for column in columns))
    keys = ("cost", "wait_mean_s", "wait_p95_s", "lost_work_s", "makespan_h")
    lower, equal = dict.fromkeys(keys, 0), dict.fromkeys(keys, 0)
    for seed, results in by_seed.items():
        ours, ray = (
            {**results[policy].metrics.as_json(), "makespan_h": round(results[policy].makespan_s / 3600.0, 2)}
            for policy in COMPARED
        )
        print(f"  {seed:>22d}" + "".join(f"{f'{ours[key]:g} / {ray[key]:g}':>22s}" for key in keys))
        for key in keys:
            lower[key] += ours[key] < ray[key]
            equal[key] += ours[key] == ray[key]
    counts = ", ".join(f"{key} {lower[key]}" + (f" (equal in {equal[key]})" if equal[key] else "") for key in keys)
    print(f"  seeds where ours is lower, of {len(by_seed)}: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a short slice of each trace: ours and ray, no figures")
    parser.add_argument("--hours-scale", type=float, default=1.0, help="scale every trace's length")
    parser.add_argument("--traces", nargs="*", choices=sorted(TRACES), default=list(TRACES))
    parser.add_argument("--robustness-seeds", type=int, default=2, help="more seeds, ours and ray only (0: none)")
    parser.add_argument("--images", type=Path, default=IMAGES, help="where the PNGs go")
    arguments = parser.parse_args()
    if arguments.hours_scale <= 0:
        parser.error("--hours-scale must be above 0")
    if arguments.robustness_seeds < 0:
        parser.error("--robustness-seeds must be 0 or more")

    distributions = cluster.Distributions()
    interval_s = timer_interval_s()
    print_header(arguments.seed, interval_s, distributions)
    started = time.perf_counter()
    hours_of = {
        name: (QUICK_HOURS if arguments.quick else DEFAULT_HOURS)[name] * arguments.hours_scale
        for name in arguments.traces
    }
    results_by_trace = {}
    for name, hours in hours_of.items():
        trace_started = time.perf_counter()
        policies = COMPARED if arguments.quick else tuple(POLICIES)
        results = simulate(name, seed=arguments.seed, hours=hours, policies=policies, interval_s=interval_s)
        results_by_trace[name] = results
        trace = TRACES[name](arguments.seed, hours)
        print_table(trace, results, time.perf_counter() - trace_started)
        if not arguments.quick:
            from simulator.plots import draw

            path = arguments.images / f"simulate-{name}.png"
            draw(name, trace.description, results, path)
            print(f"  figure: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if not arguments.quick:
        for name, hours in hours_of.items():
            by_seed = {arguments.seed: results_by_trace[name]}
            for seed in range(arguments.seed + 1, arguments.seed + 1 + arguments.robustness_seeds):
                by_seed[seed] = simulate(name, seed=seed, hours=hours, interval_s=interval_s)
            print_robustness(name, by_seed)
    print(f"\nsimulated in {time.perf_counter() - started:.1f} s")
    print(json.dumps(figures(results_by_trace)))


if __name__ == "__main__":
    main()
