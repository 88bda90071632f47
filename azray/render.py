"""Rich renderings of what the API answers: the cluster list, a cluster's status, its events, `up`'s progress."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

View = dict[str, Any]

STATUS_STYLES = {
    "creating": "yellow",
    "running": "green",
    "deleting": "yellow",
    "deleted": "dim",
    "failed": "bold red",
    "stopping": "cyan",
    "stopped": "cyan",
}
NODE_STATUS_ORDER = (
    "queued",
    "requested",
    "allocated",
    "ray_running",
    "draining",
    "terminating",
    "terminated",
    "allocation_failed",
    "termination_failed",
)
FINAL_NODE_STATUSES = frozenset({"terminated", "allocation_failed"})
STATUS_EVENTS = 8  # how many recent events `status` shows; `events` shows all the API returns


def styled_status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def clock_time(stamp: object) -> str:
    """An API timestamp as local HH:MM:SS ('' for none)."""
    if not isinstance(stamp, str) or not stamp:
        return ""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return stamp


def format_shape(shape: object) -> str:
    if isinstance(shape, Mapping):
        return "{" + ", ".join(f"{name}: {amount:g}" for name, amount in sorted(shape.items())) + "}"
    return str(shape)


def demand_lines(entries: Iterable[Mapping[str, Any]], *, with_reason: bool = False) -> list[str]:
    lines = []
    for entry in entries:
        line = f"{format_shape(entry.get('shape'))} x {entry.get('count', '?')}"
        if with_reason and entry.get("reason"):
            line += f": {entry['reason']}"
        lines.append(line)
    return lines


def live_nodes(view: View) -> list[View]:
    return [n for n in view.get("nodes", []) if n.get("status") not in FINAL_NODE_STATUSES]


def workers_running(view: View) -> int:
    return sum(1 for n in view.get("nodes", []) if not n.get("is_head") and n.get("status") == "ray_running")


def head_node(view: View) -> View | None:
    heads = [n for n in live_nodes(view) if n.get("is_head")]
    return heads[0] if heads else None


# -- list ------------------------------------------------------------------------------------------------------------


def clusters_table(clusters: Sequence[View], api_url: str) -> RenderableType:
    if not clusters:
        return Text(f"no clusters at {api_url}")
    table = Table(title=f"Clusters at {api_url}", title_justify="left")
    table.add_column("name")
    table.add_column("status")
    table.add_column("created")
    table.add_column("updated")
    for cluster in clusters:
        table.add_row(
            str(cluster.get("name", "")),
            styled_status(str(cluster.get("status", ""))),
            str(cluster.get("created_at", "")),
            str(cluster.get("updated_at", "")),
        )
    return table


# -- status ----------------------------------------------------------------------------------------------------------


def nodes_by_type_table(view: View) -> Table:
    """One row per node type, one column per status seen: what `ray status` shows, with our lifecycle."""
    counts: dict[str, dict[str, int]] = {}
    heads: set[str] = set()
    for node in view.get("nodes", []):
        node_type = str(node.get("node_type", "?"))
        status = str(node.get("status", "?"))
        counts.setdefault(node_type, {})
        counts[node_type][status] = counts[node_type].get(status, 0) + 1
        if node.get("is_head"):
            heads.add(node_type)
    seen = {status for by_status in counts.values() for status in by_status}
    columns = [s for s in NODE_STATUS_ORDER if s in seen] + sorted(seen - set(NODE_STATUS_ORDER))
    table = Table(title="Nodes by type and status", title_justify="left")
    table.add_column("node type")
    for status in columns:
        table.add_column(status, justify="right")
    for node_type in sorted(counts, key=lambda t: (t not in heads, t)):
        label = f"{node_type} (head)" if node_type in heads and node_type != "head" else node_type
        table.add_row(label, *[str(counts[node_type].get(s, "")) for s in columns])
    if not counts:
        table.add_row("(no nodes yet)")
    return table


def live_nodes_table(view: View) -> Table:
    table = Table(title="Live nodes", title_justify="left")
    for column in ("instance", "type", "status", "boot phase", "since", "note"):
        table.add_column(column)
    for node in live_nodes(view):
        note = node.get("last_error") or node.get("boot_phase_detail") or node.get("availability_zone") or ""
        table.add_row(
            str(node.get("instance_id", "")),
            str(node.get("node_type", ""))
            + (" (head)" if node.get("is_head") and node.get("node_type") != "head" else ""),
            str(node.get("status", "")),
            str(node.get("boot_phase") or ""),
            clock_time(node.get("status_since")),
            str(note),
        )
    return table


def chronological(events: Sequence[View]) -> list[View]:
    """Oldest first, like a log. The API lists the newest first, and the events of one tick share their time (in no
    particular order among themselves): sorting by time, not reversing the list, keeps those in the API's order."""
    return sorted(events, key=lambda event: str(event.get("at", "")))


def events_table(events: Sequence[View], title: str) -> Table:
    """Oldest first, like a log."""
    table = Table(title=title, title_justify="left")
    table.add_column("time")
    table.add_column("kind")
    table.add_column("instance")
    table.add_column("message", overflow="fold")
    for event in chronological(events):
        table.add_row(
            clock_time(event.get("at")),
            str(event.get("kind", "")),
            str(event.get("instance_id", "")),
            str(event.get("message", "")),
        )
    if not events:
        table.add_row("", "", "", "(no events)")
    return table


def adjusted_fields(view: View) -> list[str]:
    """The GET view has no adjusted_fields (only the create answer has); the `adjusted` events carry them."""
    return [str(e.get("message", "")) for e in view.get("events", []) if e.get("kind") == "adjusted"]


def cluster_header(view: View) -> Text:
    text = Text()
    text.append(f"cluster {view.get('name', '?')}  ", style="bold")
    text.append_text(styled_status(str(view.get("status", "?"))))
    text.append(f"  provider {view.get('provider', '?')}")
    if view.get("status_reason"):
        text.append(f"\n{view['status_reason']}")
    head = view.get("head") or {}
    if head.get("ray_address"):
        text.append(f"\nray address {head['ray_address']}")
    if head.get("dashboard_url"):
        text.append(f"   dashboard {head['dashboard_url']}")
    if view.get("head_auth_error"):
        text.append(f"\nthe head agent refuses the cluster token: {view['head_auth_error']}", style="red")
    if view.get("consecutive_failures"):
        text.append(
            f"\n{view['consecutive_failures']} failed tick(s) in a row; last error: {view.get('last_error', '')}",
            style="red",
        )
    return text


def bullet_section(title: str, lines: Sequence[str], empty: str = "none") -> Text:
    text = Text(f"{title}: ", style="bold")
    if not lines:
        text.append(empty)
        return text
    for line in lines:
        text.append(f"\n  - {line}")
    return text


def status_view(view: View, *, events: int = STATUS_EVENTS) -> Group:
    decision = view.get("last_decision") or {}
    decided_at = clock_time(decision.get("at"))
    unavailable = [
        f"{u.get('node_type')} until {clock_time(u.get('until'))}: {u.get('reason', '')}"
        for u in view.get("unavailable_node_types", [])
    ]
    parts: list[RenderableType] = [
        cluster_header(view),
        nodes_by_type_table(view),
        live_nodes_table(view),
        bullet_section("Pending demand", demand_lines(view.get("pending_demand", []))),
        bullet_section("Infeasible demand", demand_lines(view.get("infeasible", []), with_reason=True)),
        bullet_section(
            f"Last decision{f' ({decided_at})' if decided_at else ''}",
            [str(r) for r in decision.get("reasons", [])],
            empty="none yet",
        ),
    ]
    if unavailable:
        parts.append(bullet_section("Unavailable node types", unavailable))
    parts.append(bullet_section("Adjusted fields", adjusted_fields(view)))
    if view.get("ignored_fields"):
        parts.append(bullet_section("Ignored fields (only `ray up` uses them)", list(view["ignored_fields"])))
    recent = list(view.get("events", []))[:events]
    parts.append(events_table(recent, f"Recent events (last {len(recent)})"))
    return Group(*parts)


# -- up's progress ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    label: str
    done: bool
    detail: str = ""


def up_steps(view: View, min_workers: int) -> list[Step]:
    """Head VM, Ray on the head, min_workers running: each from the nodes' status and boot phase."""
    head = head_node(view)
    head_phase = str((head or {}).get("boot_phase") or "")
    head_status = str((head or {}).get("status") or "")
    vm_done = head is not None and (
        bool(head_phase) or head_status in ("allocated", "ray_running", "draining", "terminating")
    )
    vm_detail = f"{head_status}{f', {head_phase}' if head_phase else ''}" if head else "not requested yet"
    ray_done = view.get("status") == "running" and head_status == "ray_running"
    ray_detail = (
        f"Ray at {view['head']['ray_address']}"
        if ray_done and (view.get("head") or {}).get("ray_address")
        else str((head or {}).get("boot_phase_detail") or head_phase or "waiting for the head agent")
    )
    running = workers_running(view)
    workers_done = ray_done and running >= min_workers
    return [
        Step("head VM", vm_done, vm_detail),
        Step("Ray on the head", ray_done, ray_detail),
        Step(f"min_workers running ({min_workers})", workers_done, f"{running}/{min_workers} workers run Ray"),
    ]


def progress_view(view: View, steps: Sequence[Step]) -> Group:
    table = Table.grid(padding=(0, 2))
    table.add_column(width=2)
    table.add_column()
    table.add_column(style="dim")
    current_found = False
    for step in steps:
        if step.done:
            table.add_row(Text("✓", style="green"), step.label, step.detail)
        elif not current_found:
            current_found = True
            table.add_row(Spinner("dots"), step.label, step.detail)
        else:
            table.add_row(Text("·", style="dim"), Text(step.label, style="dim"), step.detail)
    latest = (view.get("events") or [{}])[0]
    footer = Text(f"cluster {view.get('name', '?')}: ")
    footer.append_text(styled_status(str(view.get("status", "?"))))
    if view.get("status_reason"):
        footer.append(f" ({view['status_reason']})")
    if latest.get("message"):
        footer.append(f"\nlatest event {clock_time(latest.get('at'))} {latest.get('kind', '')}: {latest['message']}")
    return Group(table, footer)
