"""A cluster's timeline as a small hand-written SVG: nodes by status and pending demand over the last hours.

Built from what the store already keeps: the `status` and `launch` events of each instance (its transitions), the
`demand` events the tick records when Ray's pending demand changes, and the current rows. Standard library only (the
Functions app installs requirements.txt, and an image library would cost its cold start).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

from autoscaler.model import Event, InstanceRecord, InstanceStatus

# The series drawn for nodes, in legend order, and their colours; final statuses are not drawn (nothing runs).
NODE_SERIES: tuple[tuple[InstanceStatus, str], ...] = (
    (InstanceStatus.QUEUED, "#9e9e9e"),
    (InstanceStatus.REQUESTED, "#ffb300"),
    (InstanceStatus.ALLOCATED, "#fb8c00"),
    (InstanceStatus.RAY_RUNNING, "#43a047"),
    (InstanceStatus.DRAINING, "#8e24aa"),
    (InstanceStatus.TERMINATING, "#e53935"),
    (InstanceStatus.TERMINATION_FAILED, "#6d4c41"),
)
DEMAND_SERIES = "pending_demand"
DEMAND_COLOUR = "#1e88e5"
DEMAND_EVENT = "demand"

_TRANSITION = re.compile(r" (?P<before>[a-z_]+) -> (?P<after>[a-z_]+)(?::|$)")
_DEMAND = re.compile(r"pending demand: (?P<count>\d+)")

WIDTH, HEIGHT = 900, 380
LEFT, RIGHT, TOP, BOTTOM = 60, 170, 40, 50


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: tuple[tuple[datetime, int], ...]  # a step function: the value holds from each point to the next
    dashed: bool = False


def demand_message(bundles: int) -> str:
    """The text of a `demand` event (what `pending_demand` is read back from)."""
    return f"pending demand: {bundles} bundle(s)"


def build_series(  # noqa: C901,PLR0912 -- one branch per kind of event the timeline draws
    events: Iterable[Event],
    instances: Sequence[InstanceRecord],
    *,
    start: datetime,
    end: datetime,
    pending_now: int | None,
) -> list[Series]:
    """The step series of the window [start, end]: one per live node status, and pending demand."""
    chronological = sorted(events, key=lambda e: e.at)
    # Per instance, its transitions (time, status) from events, then what its row says now.
    transitions: dict[str, list[tuple[datetime, str]]] = {}
    demand: list[tuple[datetime, int]] = []
    for event in chronological:
        if event.kind == DEMAND_EVENT:
            match = _DEMAND.search(event.message)
            if match:
                demand.append((event.at, int(match["count"])))
            continue
        if not event.instance_id:
            continue
        if event.kind == "launch":
            transitions.setdefault(event.instance_id, []).append((event.at, str(InstanceStatus.QUEUED)))
        elif event.kind in ("status", "orphan"):
            match = _TRANSITION.search(event.message)
            if match:
                steps = transitions.setdefault(event.instance_id, [])
                if not steps:
                    steps.append((event.at, match["before"]))
                steps.append((event.at, match["after"]))
    for record in instances:
        steps = transitions.setdefault(record.instance_id, [])
        if not steps or steps[-1][1] != str(record.status):
            steps.append((max(record.status_since, steps[-1][0]) if steps else record.status_since, str(record.status)))

    # Every time something changed, and the count of each status from then on.
    changes = sorted({at for steps in transitions.values() for at, _ in steps if start < at <= end})
    times = [start, *changes]
    series: list[Series] = []
    for status, colour in NODE_SERIES:
        points = [(at, sum(1 for steps in transitions.values() if _status_at(steps, at) == status)) for at in times]
        if any(count for _, count in points):
            series.append(Series(str(status), colour, _compact(points)))
    before = [count for at, count in demand if at <= start]
    demand_points = [(start, before[-1] if before else 0)] + [(at, count) for at, count in demand if start < at <= end]
    if pending_now is not None and demand_points[-1][1] != pending_now:
        demand_points.append((end, pending_now))
    series.append(Series(DEMAND_SERIES, DEMAND_COLOUR, _compact(demand_points), dashed=True))
    return series


def _status_at(steps: Sequence[tuple[datetime, str]], at: datetime) -> str:
    current = ""
    for when, status in steps:
        if when > at:
            break
        current = status
    return current


def _compact(points: Sequence[tuple[datetime, int]]) -> tuple[tuple[datetime, int], ...]:
    kept: list[tuple[datetime, int]] = []
    for at, value in points:
        if not kept or kept[-1][1] != value:
            kept.append((at, value))
    return tuple(kept)


def render_svg(cluster_name: str, series: Sequence[Series], *, start: datetime, end: datetime) -> str:
    """The SVG document: a step line per series over [start, end], a time axis, a count axis and a legend."""
    span_s = max((end - start).total_seconds(), 1.0)
    top_value = max([1, *(value for s in series for _, value in s.points)])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: datetime) -> float:
        return LEFT + plot_w * min(max((at - start).total_seconds() / span_s, 0.0), 1.0)

    def y(value: int) -> float:
        return TOP + plot_h * (1 - value / top_value)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(cluster_name)}: nodes by status and pending demand</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="15">{escape(cluster_name)}: nodes by status and pending demand, '
        f"{escape(_clock(start))} to {escape(_clock(end))} UTC</text>",
    ]
    # Count axis: a few whole-number gridlines.
    step = max(1, -(-top_value // 5))
    for value in range(0, top_value + 1, step):
        parts.append(
            f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{LEFT + plot_w}" y2="{y(value):.1f}" stroke="#eeeeee"/>'
            f'<text x="{LEFT - 8}" y="{y(value) + 4:.1f}" text-anchor="end">{value}</text>'
        )
    # Time axis: six ticks.
    for index in range(7):
        at = start + timedelta(seconds=span_s * index / 6)
        parts.append(
            f'<line x1="{x(at):.1f}" y1="{TOP + plot_h}" x2="{x(at):.1f}" y2="{TOP + plot_h + 5}" stroke="#555"/>'
            f'<text x="{x(at):.1f}" y="{TOP + plot_h + 20}" text-anchor="middle">{escape(_clock(at))}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#555"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#555"/>'
    )
    for index, one in enumerate(series):
        path = _step_path(one.points, end, x, y)
        dash = ' stroke-dasharray="6 4"' if one.dashed else ""
        latest = one.points[-1][1] if one.points else 0
        legend_y = TOP + 10 + 18 * index
        parts.append(
            f'<g class="series" id="series-{escape(one.name)}" data-series="{escape(one.name)}" '
            f'data-latest="{latest}">'
            f"<title>{escape(one.name)}</title>"
            f'<path d="{path}" fill="none" stroke="{one.colour}" stroke-width="2"{dash}/>'
            f'<line x1="{WIDTH - RIGHT + 15}" y1="{legend_y}" x2="{WIDTH - RIGHT + 35}" y2="{legend_y}" '
            f'stroke="{one.colour}" stroke-width="3"{dash}/>'
            f'<text x="{WIDTH - RIGHT + 40}" y="{legend_y + 4}">{escape(one.name.replace("_", " "))} '
            f"({latest})</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _step_path(
    points: Sequence[tuple[datetime, int]], end: datetime, x: Callable[[datetime], float], y: Callable[[int], float]
) -> str:
    commands: list[str] = []
    for index, (at, value) in enumerate(points):
        if index == 0:
            commands.append(f"M{x(at):.1f},{y(value):.1f}")
        else:
            commands.append(f"H{x(at):.1f}V{y(value):.1f}")
    commands.append(f"H{x(end):.1f}")
    return "".join(commands)


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M") if at.second == 0 else at.strftime("%H:%M:%S")
