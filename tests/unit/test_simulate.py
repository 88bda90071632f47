"""The cost simulator (bench/simulate.py): its world on tiny traces, both policies' idle termination, its luck
streams, its repeatability and the JSON of its last line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# bench/ is a folder of scripts, not a package: the simulator's modules are imported by their own names from there
# (appended, so they never shadow anything else).
if str(ROOT / "bench") not in sys.path:
    sys.path.append(str(ROOT / "bench"))

from simulate import run_policy, simulate, timer_interval_s  # noqa: E402
from simulator import cluster  # noqa: E402
from simulator.ours import OursPolicy  # noqa: E402
from simulator.ray_policy import RayPolicy  # noqa: E402
from simulator.traces import Phase, TaskSpec, Trace, shape  # noqa: E402
from simulator.world import World  # noqa: E402

DISTRIBUTIONS = cluster.Distributions()
INTERVAL_S = 15.0


def one_phase(*tasks: TaskSpec, horizon_s: float = 3600.0) -> Trace:
    return Trace("tiny", "a test trace", (Phase("only", tasks),), horizon_s)


@dataclass
class LaunchWhenPending:
    """A scripted policy: one cpu.spot VM whenever tasks wait and no worker is up or booting."""

    name: str = "scripted"
    drains_on_notice: bool = False
    launched: list[float] = field(default_factory=list)

    def start(self, world: World) -> None:
        world.launch(cluster.HEAD_TYPE, "head", is_head=True)

    def tick(self, world: World) -> None:
        workers = [node for node in world.live_nodes() if not node.is_head]
        if world.pending() and not workers:
            world.launch("cpu.spot", f"vm{len(self.launched)}")
            self.launched.append(world.now_s)
        for node in workers:
            if node.idle_for_s(world.now_s) > 60.0:
                world.terminate(node.key)


def scripted_world(trace: Trace, lucks: list[cluster.Luck]) -> World:
    """A world whose n-th VM has the n-th luck given."""
    config = cluster.cluster_config()
    return World(
        trace,
        luck_of=lambda node_type, sequence: lucks[sequence],
        distributions=DISTRIBUTIONS,
        interval_s=INTERVAL_S,
        resources_of=lambda node_type: dict(config.available_node_types[node_type].resources),
    )


def test_a_task_waits_for_its_vm_to_boot():
    world = scripted_world(one_phase(TaskSpec(0.0, shape(CPU=1), 50.0)), [cluster.Luck(100.0, math.inf)])
    result = world.run(LaunchWhenPending())
    [task] = world.tasks
    assert task.started_s == 100.0  # launched by the tick at 0 s, booted 100 s later
    assert result.metrics.wait_mean_s == 100.0
    assert task.done_s == 150.0


def test_a_task_on_an_evicted_vm_loses_its_work_and_runs_again_elsewhere():
    lucks = [cluster.Luck(10.0, 70.0), cluster.Luck(20.0, math.inf)]
    world = scripted_world(one_phase(TaskSpec(0.0, shape(CPU=1), 200.0)), lucks)
    result = world.run(LaunchWhenPending())
    [task] = world.tasks
    assert result.metrics.evictions == 1
    assert result.metrics.lost_work_s == 60.0  # ran from 10 s until the eviction at 70 s
    # Re-queued at 70 s; the next tick (75 s) launches a VM that boots in 20 s: it starts again at 95 s.
    assert task.started_s == 95.0
    assert task.done_s == 295.0
    assert result.metrics.wait_mean_s == 10.0 + 25.0
    assert result.unfinished == 0


def test_a_later_phase_arrives_once_the_phase_before_has_finished():
    first = Phase("first", (TaskSpec(0.0, shape(CPU=1), 100.0),))
    second = Phase("second", (TaskSpec(30.0, shape(CPU=1), 10.0),), after="first")
    world = scripted_world(Trace("phases", "", (first, second), 3600.0), [cluster.Luck(40.0, math.inf)] * 2)
    world.run(LaunchWhenPending())
    assert world.tasks[0].done_s == 140.0
    assert world.tasks[1].started_s == 170.0  # released at 140 s, arrives 30 s later on the VM still up


def test_a_vm_is_billed_from_launch_to_its_end_at_its_types_price():
    world = scripted_world(one_phase(TaskSpec(0.0, shape(CPU=1), 3600.0)), [cluster.Luck(100.0, math.inf)])
    result = world.run(LaunchWhenPending())
    [vm] = [node for node in world.nodes.values() if not node.is_head]
    hours = (vm.ended_s - vm.launched_s) / 3600.0
    assert result.metrics.node_hours == pytest.approx(hours)
    assert result.metrics.cost == pytest.approx(hours * cluster.price_per_hour("cpu.spot"))
    assert cluster.price_per_hour("cpu.spot") < 0.5 * cluster.price_per_hour("cpu.regular")


@pytest.mark.parametrize("policy", [OursPolicy, RayPolicy], ids=["ours", "ray"])
def test_each_policy_launches_for_pending_work_and_terminates_the_vm_after_the_idle_timeout(policy):
    trace = one_phase(TaskSpec(60.0, shape(CPU=2), 600.0))
    result = run_policy(trace, policy(), seed=7, distributions=DISTRIBUTIONS, interval_s=INTERVAL_S)
    assert result.unfinished == 0
    assert result.launches_by_type == {"cpu.spot": 1}  # the cheaper of two equal fits for ours, Ray's first one
    idle_timeout_s = cluster.cluster_config().idle_timeout_minutes * 60.0
    # The run ends at the first tick with no task left and no worker up: the VM went after its idle timeout.
    assert result.makespan_s + idle_timeout_s < result.ended_s <= result.makespan_s + idle_timeout_s + 2 * INTERVAL_S
    assert result.samples[-1].nodes_by_type == {}


def test_both_policies_draw_the_same_luck_for_the_same_vm_of_a_type():
    first = cluster.luck(5, "bursty", "gpu.spot", 3, DISTRIBUTIONS)
    assert first == cluster.luck(5, "bursty", "gpu.spot", 3, DISTRIBUTIONS)
    assert first != cluster.luck(5, "bursty", "gpu.spot", 4, DISTRIBUTIONS)
    assert first != cluster.luck(6, "bursty", "gpu.spot", 3, DISTRIBUTIONS)
    assert math.isinf(cluster.luck(5, "bursty", "gpu.regular", 3, DISTRIBUTIONS).life_s)
    assert DISTRIBUTIONS.boot_min_s <= first.boot_s <= DISTRIBUTIONS.boot_max_s


def test_the_same_seed_gives_the_same_figures_and_another_seed_others():
    def figures(seed: int) -> dict[str, object]:
        results = simulate("gpu_training", seed=seed, hours=0.5)
        return {policy: result.metrics.as_json() for policy, result in results.items()}

    assert figures(3) == figures(3)
    assert figures(3) != figures(4)


def test_the_control_interval_is_the_apps_timer_period():
    assert timer_interval_s() == 15.0
    assert timer_interval_s("*/30 * * * * *") == 30.0


def test_the_last_line_is_the_json_of_every_trace_and_policy():
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "simulate.py"), "--quick", "--hours-scale", "0.1"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    last = json.loads(completed.stdout.strip().splitlines()[-1])
    keys = {"node_hours", "cost", "wait_mean_s", "wait_p95_s", "evictions", "lost_work_s"}
    assert set(last) == {"traces"}
    assert set(last["traces"]) == {"diurnal", "bursty", "gpu_training"}
    for by_policy in last["traces"].values():
        assert set(by_policy) == {"ours", "ray"}
        for metrics in by_policy.values():
            assert set(metrics) == keys
            assert metrics["node_hours"] > 0
            assert metrics["cost"] > 0


@pytest.mark.parametrize("drains_on_notice", [True, False])
def test_a_vm_whose_eviction_notice_is_out_takes_no_new_task_when_the_policy_drains_on_notice(drains_on_notice):
    # The VM boots at 10 s and is evicted at 100 s: its notice is out from 70 s. The second task arrives at 80 s.
    tasks = (TaskSpec(0.0, shape(CPU=1), 20.0), TaskSpec(80.0, shape(CPU=1), 10.0))
    lucks = [cluster.Luck(10.0, 100.0), cluster.Luck(10.0, math.inf)]
    world = scripted_world(one_phase(*tasks), lucks)
    world.run(LaunchWhenPending(drains_on_notice=drains_on_notice))
    late = world.tasks[1]
    if drains_on_notice:
        assert late.started_s == 100.0 + 5.0 + 10.0  # on the next VM: launched at the tick after the eviction
        assert late.attempt == 1
    else:
        assert late.started_s == 80.0  # on the doomed VM, and done before the eviction
        assert late.done_s == 90.0


@pytest.mark.parametrize(("policy", "replaced_before_eviction"), [(OursPolicy, True), (RayPolicy, False)])
def test_only_ours_launches_for_work_arriving_after_an_eviction_notice_before_the_eviction(
    policy, replaced_before_eviction
):
    # The first VM (8 CPUs) runs a 4-CPU task; its notice is out from 370 s, it is evicted at 400 s; at 380 s a second
    # 4-CPU task arrives. Ours neither places it there nor counts that VM: it launches at the next tick (390 s).
    # Ray places it on the doomed VM, and launches once both tasks are back in the queue after the eviction.
    tasks = (TaskSpec(0.0, shape(CPU=4), 900.0), TaskSpec(380.0, shape(CPU=4), 60.0))
    lucks = [cluster.Luck(60.0, 400.0), cluster.Luck(60.0, math.inf)]
    world = scripted_world(one_phase(*tasks), lucks)
    result = world.run(policy())
    first, second = sorted((node for node in world.nodes.values() if not node.is_head), key=lambda n: n.launched_s)
    assert first.ended_s == 400.0
    assert (second.launched_s < 400.0) is replaced_before_eviction
    assert result.unfinished == 0


def test_a_trace_is_drawn_as_one_png(tmp_path):
    from simulator.plots import draw

    results = simulate("gpu_training", seed=2, hours=0.3)
    path = tmp_path / "img" / "simulate-gpu_training.png"
    draw("gpu_training", "a description", results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
