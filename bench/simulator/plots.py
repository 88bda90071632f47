"""One PNG per trace: VMs by type over time for both policies, pending demand, and the accumulated cost."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from simulator.world import RunResult

TYPE_COLOURS = {"cpu.spot": "tab:green", "cpu.regular": "tab:blue", "gpu.spot": "tab:orange", "gpu.regular": "tab:red"}
POLICY_STYLES = {"ours": "-", "ray": "--"}
POLICY_COLOURS = {"ours": "black", "ray": "tab:purple"}


def draw(trace: str, description: str, results: dict[str, RunResult], path: Path) -> None:
    figure, (nodes_axis, pending_axis, cost_axis) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    drawn = [result for policy, result in results.items() if policy in POLICY_STYLES]
    types = sorted({name for result in drawn for sample in result.samples for name in sample.nodes_by_type})
    end_s = max(result.ended_s for result in drawn)  # a variant's longer run would squash the compared ones
    for policy, result in results.items():
        hours = [sample.at_s / 3600.0 for sample in result.samples]
        style = POLICY_STYLES.get(policy, ":")
        cost = [sample.cost for sample in result.samples]
        colour = POLICY_COLOURS.get(policy, "tab:gray")
        label = f"{policy}: ${result.metrics.cost:.2f}"
        if result.ended_s > end_s:
            label += f" (its run ends at {result.ended_s / 3600:.1f} h, off the chart)"
        cost_axis.plot(hours, cost, linestyle=style, color=colour, label=label)
        if policy not in POLICY_STYLES:
            continue  # other variants: their cost only, to keep the VM panel readable
        for node_type in types:
            counts = [sample.nodes_by_type.get(node_type, 0) for sample in result.samples]
            nodes_axis.step(
                hours, counts, where="post", linestyle=style, color=TYPE_COLOURS.get(node_type, "grey"),
                label=f"{policy}: {node_type}", linewidth=1.2,
            )  # fmt: skip
        pending = [sample.pending_bundles for sample in result.samples]
        pending_axis.step(hours, pending, where="post", linestyle=style, color=colour, label=policy, linewidth=1)
    nodes_axis.set_ylabel("worker VMs (booting included)")
    nodes_axis.legend(loc="upper left", fontsize=8, ncol=2)
    nodes_axis.set_title(f"{trace}: ours (solid) vs Ray 2.60's autoscaler v2 policy (dashed)", fontsize=11)
    pending_axis.set_ylabel("pending tasks")
    pending_axis.legend(loc="upper left", fontsize=8)
    cost_axis.set_ylabel("accumulated cost ($)")
    cost_axis.set_xlabel("simulated hours")
    cost_axis.legend(loc="upper left", fontsize=8)
    for axis in (nodes_axis, pending_axis, cost_axis):
        axis.grid(alpha=0.3)
        axis.set_xlim(-0.01 * end_s / 3600.0, 1.01 * end_s / 3600.0)
    figure.text(0.01, 0.005, textwrap.fill(" ".join(description.split()), 180), fontsize=7, color="dimgray")
    figure.tight_layout(rect=(0, 0.035, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
