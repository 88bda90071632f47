"""One PNG per trace: VMs by type over time for both policies, pending demand, the accumulated cost, and a zoom on
the largest surge of demand (how fast each policy scales up)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from simulator.world import RunResult, Sample

TYPE_COLOURS = {"cpu.spot": "tab:green", "cpu.regular": "tab:blue", "gpu.spot": "tab:orange", "gpu.regular": "tab:red"}
POLICY_STYLES = {"ours": "-", "ray": "--"}
POLICY_COLOURS = {"ours": "black", "ray": "tab:purple"}
ZOOM_BEFORE_S, ZOOM_AFTER_S = 120.0, 25 * 60.0


def draw(trace: str, description: str, results: dict[str, RunResult], path: Path) -> None:
    figure = plt.figure(figsize=(11, 11.5))
    grid = figure.add_gridspec(4, 1, height_ratios=[3, 2, 2, 2.4], hspace=0.35)
    nodes_axis = figure.add_subplot(grid[0])
    pending_axis = figure.add_subplot(grid[1], sharex=nodes_axis)
    cost_axis = figure.add_subplot(grid[2], sharex=nodes_axis)
    drawn = {policy: result for policy, result in results.items() if policy in POLICY_STYLES}
    end_h = max(result.ended_s for result in drawn.values()) / 3600.0  # a variant's longer run would squash these
    _draw_costs(cost_axis, results, end_h)
    _draw_nodes_and_pending(nodes_axis, pending_axis, drawn)
    nodes_axis.set_title(f"{trace}: ours (solid) vs Ray 2.60's autoscaler v2 policy (dashed)", fontsize=11)
    for axis in (nodes_axis, pending_axis, cost_axis):
        axis.grid(alpha=0.3)
        axis.set_xlim(-0.01 * end_h, 1.01 * end_h)
    _draw_zoom(figure.add_subplot(grid[3]), drawn)
    figure.text(0.01, 0.005, textwrap.fill(" ".join(description.split()), 180), fontsize=7, color="dimgray")
    figure.subplots_adjust(left=0.07, right=0.93, top=0.96, bottom=0.07)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _hours(result: RunResult) -> list[float]:
    return [sample.at_s / 3600.0 for sample in result.samples]


def _draw_costs(axis: Any, results: dict[str, RunResult], end_h: float) -> None:
    for policy, result in results.items():
        label = f"{policy}: ${result.metrics.cost:.2f}"
        if result.ended_s / 3600.0 > end_h:
            label += f" (its run ends at {result.ended_s / 3600:.1f} h, off the chart)"
        costs = [sample.cost for sample in result.samples]
        style, colour = POLICY_STYLES.get(policy, ":"), POLICY_COLOURS.get(policy, "tab:gray")
        axis.plot(_hours(result), costs, linestyle=style, color=colour, label=label)
    axis.set_ylabel("accumulated cost ($)")
    axis.set_xlabel("simulated hours")
    axis.legend(loc="upper left", fontsize=8)


def _draw_nodes_and_pending(nodes_axis: Any, pending_axis: Any, drawn: dict[str, RunResult]) -> None:
    types = sorted({name for result in drawn.values() for sample in result.samples for name in sample.nodes_by_type})
    for policy, result in drawn.items():
        hours, style = _hours(result), POLICY_STYLES[policy]
        for node_type in types:
            counts = [sample.nodes_by_type.get(node_type, 0) for sample in result.samples]
            nodes_axis.step(
                hours, counts, where="post", linestyle=style, color=TYPE_COLOURS.get(node_type, "grey"),
                label=f"{policy}: {node_type}", linewidth=1.2,
            )  # fmt: skip
        pending = [sample.pending_bundles for sample in result.samples]
        pending_axis.step(hours, pending, where="post", linestyle=style, color=POLICY_COLOURS[policy], label=policy)
    nodes_axis.set_ylabel("worker VMs (booting included)")
    nodes_axis.legend(loc="upper left", fontsize=8, ncol=2)
    pending_axis.set_ylabel("pending tasks")
    pending_axis.legend(loc="upper left", fontsize=8)


def surge_start_s(samples: list[Sample]) -> float:
    """When the largest pile of pending tasks began: the last sample before its peak with nothing pending."""
    peak = max(range(len(samples)), key=lambda index: samples[index].pending_bundles)
    start = peak
    while start > 0 and samples[start - 1].pending_bundles > 0:
        start -= 1
    return samples[start].at_s


def _draw_zoom(axis: Any, drawn: dict[str, RunResult]) -> None:
    start_s = surge_start_s(drawn["ours"].samples) if "ours" in drawn else 0.0
    pending_axis = axis.twinx()
    for policy, result in drawn.items():
        window = [s for s in result.samples if start_s - ZOOM_BEFORE_S <= s.at_s <= start_s + ZOOM_AFTER_S]
        minutes = [(sample.at_s - start_s) / 60.0 for sample in window]
        style, colour = POLICY_STYLES[policy], POLICY_COLOURS[policy]
        workers = [sum(sample.nodes_by_type.values()) for sample in window]
        axis.step(minutes, workers, where="post", linestyle=style, color=colour, label=f"{policy}: worker VMs")
        pending = [sample.pending_bundles for sample in window]
        pending_axis.step(
            minutes, pending, where="post", linestyle=style, color=colour, alpha=0.35, linewidth=0.9,
            label=f"{policy}: pending tasks",
        )  # fmt: skip
    axis.set_title(
        f"zoom: the largest surge of demand, from {start_s / 3600:.2f} h (minutes after its first pending task)",
        fontsize=9,
    )
    # Headroom above the curves for the legend.
    axis.set_ylim(0, axis.get_ylim()[1] * 1.35)
    pending_axis.set_ylim(0, pending_axis.get_ylim()[1] * 1.35)
    axis.set_xlabel("minutes")
    axis.set_ylabel("worker VMs")
    pending_axis.set_ylabel("pending tasks (faint)")
    handles, labels = axis.get_legend_handles_labels()
    more_handles, more_labels = pending_axis.get_legend_handles_labels()
    axis.legend(handles + more_handles, labels + more_labels, loc="upper right", fontsize=8, ncol=2)
    axis.grid(alpha=0.3)
