"""The `azray` command: Ray clusters on the serverless autoscaler, the way `ray up` / `ray status` / `ray down` work.

Every command talks to the control plane's HTTP API (azray/api.py); where it points is decided once per run
(azray/target.py). Errors are one line saying what to do, with the exit codes of azray/errors.py (docs/cli.md).
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
import yaml
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from azray import __version__
from azray.api import Api
from azray.errors import CliError, ExitCode
from azray.keys import ClusterNotes, forget_cluster, load_notes, save_notes, save_private_key, saved_key
from azray.reach import (
    DASHBOARD_PORT,
    HeadAccess,
    bastion_command,
    bastion_for,
    dashboard_endpoint,
    dashboard_tunnel,
    head_access,
    read_head_token,
    remote_command_line,
    require_bastion_group,
    shell_line,
    ssh_command,
)
from azray.render import (
    FINAL_NODE_STATUSES,
    STATUS_EVENTS,
    chronological,
    clusters_table,
    events_table,
    live_nodes,
    progress_view,
    status_view,
    up_steps,
)
from azray.target import Target, current_target

DEBUG_VARIABLE = "AZRAY_DEBUG"  # set to 1: unexpected errors show their traceback
DEFAULT_UP_TIMEOUT_S = 1800.0  # an Azure head boots in minutes; a local one in seconds
DEFAULT_DOWN_TIMEOUT_S = 900.0
WATCH_INTERVAL_S = 2.0
POLL_S = 1.0
# Answers worth waiting through while following a cluster: the next poll may well succeed.
TRANSIENT_EXITS = frozenset({ExitCode.UNREACHABLE, ExitCode.SERVER})

View = dict[str, Any]

app = typer.Typer(
    name="azray",
    help="Ray clusters on the serverless autoscaler for Azure: up, status, submit, attach, dashboard, down.",
    no_args_is_help=True,
    add_completion=False,
    # Locals would put the function key on the screen with a traceback.
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


@dataclass
class Session:
    url_option: str | None
    key_option: str | None = field(repr=False)
    out: Console = field(default_factory=Console)
    err: Console = field(default_factory=lambda: Console(stderr=True))

    @cached_property
    def target(self) -> Target:
        return current_target(self.url_option, self.key_option)

    @cached_property
    def api(self) -> Api:
        return Api(self.target)


P = ParamSpec("P")
R = TypeVar("R")


def _scrub(text: str, session: Session | None) -> str:
    """Belt and braces: no message azray prints may carry the key, whatever raised it."""
    secrets = [session.key_option] if session and session.key_option else []
    secrets += [os.environ.get("AZRAY_KEY", "")]
    if session is not None and "target" in session.__dict__ and session.target.key is not None:
        secrets.append(session.target.key.reveal())
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text


def handled(command: Callable[P, R]) -> Callable[P, R]:
    """Errors as one line on stderr and the documented exit code, never a traceback (unless AZRAY_DEBUG=1)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        context = kwargs.get("context")
        session = context.obj if isinstance(context, typer.Context) and isinstance(context.obj, Session) else None
        err = session.err if session else Console(stderr=True)
        try:
            return command(*args, **kwargs)
        except CliError as error:
            err.print(Text(f"error: {_scrub(error.message, session)}", style="red"), soft_wrap=True)
            for line in error.details:
                err.print(Text(f"  {_scrub(line, session)}"), soft_wrap=True)
            raise typer.Exit(int(error.exit_code)) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as error:
            if os.environ.get(DEBUG_VARIABLE) == "1":
                raise
            message = _scrub(f"{type(error).__name__}: {error}", session)
            err.print(
                Text(f"error: unexpected failure ({message}); run again with {DEBUG_VARIABLE}=1 for the traceback"),
                style="red",
                soft_wrap=True,
            )
            raise typer.Exit(int(ExitCode.FAILED)) from None

    return run


def session_of(context: typer.Context) -> Session:
    obj = context.obj
    assert isinstance(obj, Session)
    return obj


def _version(value: bool) -> None:
    if value:
        print(f"azray {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    context: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", help="The app's URL (else AZRAY_URL, else the azd environment, else the local host)."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="The function key (else AZRAY_KEY, else `az functionapp keys list`); prefer AZRAY_KEY."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print azray's version.")
    ] = False,
) -> None:
    """Where azray points: --url/--key, else AZRAY_URL/AZRAY_KEY, else the azd environment, else 127.0.0.1:7071."""
    context.obj = Session(url, key)


# ---------------------------------------------------------------------------------------------------------------------
# Helpers shared by the commands
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalConfig:
    """What azray reads from the config file itself; the API validates the rest."""

    body: bytes
    content_type: str
    name: str
    min_workers: int
    notes: ClusterNotes


def read_config(path: Path) -> LocalConfig:
    try:
        body = path.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}", ExitCode.USAGE) from None
    content_type = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
    try:
        parsed = yaml.safe_load(body)
    except yaml.YAMLError:
        parsed = None  # the API says precisely what is wrong with it
    config: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    head_type = config.get("head_node_type")
    node_types = config.get("available_node_types")
    min_workers = 0
    if isinstance(node_types, dict):
        for type_name, node_type in node_types.items():
            if type_name != head_type and isinstance(node_type, dict):
                count = node_type.get("min_workers", 0)
                min_workers += count if isinstance(count, int) else 0
    name = str(config.get("cluster_name") or "")
    return LocalConfig(body, content_type, name, min_workers, ClusterNotes.from_config(config))


def print_field_notes(session: Session, created: View) -> None:
    for adjusted in created.get("adjusted_fields", []):
        session.out.print(
            f"  adjusted {adjusted.get('path')}: {adjusted.get('given')!r} -> {adjusted.get('used')!r} "
            f"({adjusted.get('reason', '')})",
            soft_wrap=True,
        )
    ignored = created.get("ignored_fields", [])
    if ignored:
        session.out.print(f"  ignored (only `ray up` uses them): {', '.join(map(str, ignored))}", soft_wrap=True)


def follow(  # noqa: C901 -- the live view's loop: one branch per cluster state it reports
    session: Session,
    name: str,
    *,
    done: Callable[[View], bool],
    fail: Callable[[View], CliError | None],
    render: Callable[[View], RenderableType],
    changes: Callable[[View], list[str]],
    timeout_s: float,
    poll_s: float,
    what: str,
) -> View:
    """Poll the cluster until `done`; live on a terminal, one line per change elsewhere. Transient errors are waited
    through; `fail` ends the wait with its error; the deadline with TIMEOUT."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    printed: set[str] = set()
    last_view: View | None = None
    problem = ""

    def check(view: View) -> View | None:
        error = fail(view)
        if error is not None:
            raise error
        return view if done(view) else None

    def poll_once() -> View | None:
        nonlocal last_view, problem
        try:
            last_view = session.api.cluster(name)
            problem = ""
        except CliError as error:
            if error.exit_code not in TRANSIENT_EXITS:
                raise
            problem = error.message
        return check(last_view) if last_view is not None else None

    def screen() -> RenderableType:
        parts: list[RenderableType] = [render(last_view)] if last_view is not None else [Text(f"waiting for {name}")]
        if problem:
            parts.append(Text(f"retrying: {problem}", style="yellow"))
        return Group(*parts)

    def timed_out() -> bool:
        return deadline is not None and time.monotonic() > deadline

    if session.out.is_terminal:
        with Live(screen(), console=session.out, refresh_per_second=8, transient=False) as live:
            while True:
                finished = poll_once()
                live.update(screen())
                if finished is not None:
                    return finished
                if timed_out():
                    break
                time.sleep(poll_s)
    else:
        while True:
            finished = poll_once()
            if last_view is not None:
                for line in changes(last_view):
                    if line not in printed:
                        printed.add(line)
                        session.out.print(line, soft_wrap=True)
            if finished is not None:
                return finished
            if timed_out():
                break
            time.sleep(poll_s)
    raise CliError(
        f"{name}: still waiting for {what} after {timeout_s:g} s; the cluster keeps going "
        f"(`azray status {name} --watch` follows it)",
        ExitCode.TIMEOUT,
    )


def recent_event_lines(view: View, count: int = 5) -> list[str]:
    return [f"{e.get('at', '')} {e.get('kind', '')}: {e.get('message', '')}" for e in view.get("events", [])[:count]]


def connection_lines(session: Session, view: View) -> list[str]:
    name = str(view.get("name", ""))
    head = view.get("head") or {}
    lines = [f"  ray address   {head.get('ray_address', '')}"]
    if view.get("provider") == "local":
        lines += [
            f"  dashboard     {head.get('dashboard_url', '')}",
            f"  token         RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={head.get('auth_token_path', '')}",
            f"  run a driver  azray exec {name} -- python my_driver.py",
            f"  submit a job  azray submit {name} -- python -c 'import ray; ray.init(); print(ray.nodes())'",
        ]
    else:
        key = saved_key(session.target, name)
        lines += [
            "                (inside the cluster's network: reach it through the commands below)",
            f"  ssh           azray attach {name}" + (f"   (key {key})" if key else ""),
            f"  dashboard     azray dashboard {name}   (a tunnel to port {DASHBOARD_PORT})",
            f"  submit a job  azray submit {name} -- python my_job.py",
        ]
    return lines


def local_ray_environment(view: View) -> dict[str, str]:
    """A driver's environment for a local cluster: its address and token (RAY_AUTH_MODE=token, as Ray expects)."""
    head = view.get("head") or {}
    token_path = str(head.get("auth_token_path") or "")
    if not head.get("ray_address") or not token_path:
        raise CliError(
            f"cluster {view.get('name')} has no running head yet ({view.get('status')}); "
            f"`azray status {view.get('name')} --watch` shows when it is up",
            ExitCode.CONFLICT,
        )
    environment = {
        **os.environ,
        "RAY_ADDRESS": str(head["ray_address"]),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": token_path,
        # Without it a driver's tasks never reach worker nodes that run on this same machine.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0"),
    }
    environment.pop("RAY_AUTH_TOKEN", None)  # it would win over the cluster's token file
    return environment


def require_running(view: View) -> None:
    if view.get("status") != "running":
        raise CliError(
            f"cluster {view.get('name')} is {view.get('status')}, not running"
            + (f" ({view['status_reason']})" if view.get("status_reason") else ""),
            ExitCode.CONFLICT,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------------


@app.command()
@handled
def up(
    context: typer.Context,
    config: Annotated[Path, typer.Argument(help="A Ray cluster config (YAML or JSON).", dir_okay=False)],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the cluster until it is usable.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it (0: no limit).")] = DEFAULT_UP_TIMEOUT_S,
    poll: Annotated[float, typer.Option(help="Seconds between two looks.", min=0.1)] = POLL_S,
) -> None:
    """Create the cluster, or update it when it exists with another config; follow it until it is usable."""
    session = session_of(context)
    local = read_config(config)
    answer = session.api.send("POST", "/clusters", body=local.body, content_type=local.content_type)
    if answer.status == 409 and local.name:
        name = update_cluster(session, local)
    elif answer.status in (200, 201, 202):
        created = session.api.json_of("POST", "/clusters", answer)
        name = str(created.get("name") or local.name)
        if created.get("created"):
            session.out.print(f"cluster {name} accepted ({created.get('status')})")
            print_field_notes(session, created)
            private_key = created.get("ssh_private_key")
            if isinstance(private_key, str) and private_key:
                path, replaced = save_private_key(session.target, name, private_key)
                session.out.print(
                    f"  SSH private key saved to {path} (mode 0600; the API returns it only this once)"
                    + ("; it replaces the key of an earlier cluster of this name" if replaced else "")
                )
        elif created.get("status") in ("stopped", "stopping"):  # a stopping cluster: the server says to wait
            start_cluster(session, name)
        else:
            session.out.print(f"nothing to do: cluster {name} already runs this config ({created.get('status')})")
        save_notes(session.target, name, local.notes)
    else:
        raise session.api.error_for("POST", "/clusters", answer)
    if not wait:
        session.out.print(f"follow it with: azray status {name} --watch")
        return
    view = wait_until_usable(session, name, local.min_workers, timeout_s=timeout, poll_s=poll)
    session.out.print(Text(f"cluster {name} is usable", style="green"))
    for line in connection_lines(session, view):
        session.out.print(line, soft_wrap=True, highlight=False)


def update_cluster(session: Session, local: LocalConfig) -> str:
    """PUT the new config to the existing cluster; older servers have no PUT and say so with 404/405."""
    path = f"/clusters/{local.name}"
    answer = session.api.send("PUT", path, body=local.body, content_type=local.content_type)
    if answer.is_missing_route:
        raise CliError(
            f"cluster {local.name} exists with another config, and this server cannot update clusters yet "
            f"(PUT answered {answer.status}); destroy and re-create it (`azray down {local.name}`, then "
            "`azray up` again), or upgrade the app",
            ExitCode.UNSUPPORTED,
        )
    if answer.status not in (200, 202):
        raise session.api.error_for("PUT", path, answer)
    updated = session.api.json_of("PUT", path, answer)
    detail = updated.get("detail") or updated.get("status") or "accepted"
    session.out.print(f"cluster {local.name}: update accepted ({detail})", soft_wrap=True)
    print_field_notes(session, updated)
    save_notes(session.target, local.name, local.notes)
    if updated.get("status") in ("stopped", "stopping"):  # autostop stopped it: `up` means "I want it up"
        start_cluster(session, local.name)
    return local.name


def start_cluster(session: Session, name: str) -> None:
    path = f"/clusters/{name}/start"
    answer = session.api.send("POST", path)
    if answer.is_missing_route:
        raise CliError(
            f"cluster {name} is stopped and this server cannot start it (POST {path} answered {answer.status}); "
            "upgrade the app",
            ExitCode.UNSUPPORTED,
        )
    if answer.status not in (200, 202):
        raise session.api.error_for("POST", path, answer)
    session.out.print(f"cluster {name} was stopped: starting it again")


def wait_until_usable(session: Session, name: str, min_workers: int, *, timeout_s: float, poll_s: float) -> View:
    def failure(view: View) -> CliError | None:
        status = view.get("status")
        if status == "failed":
            return CliError(
                f"cluster {name} failed: {view.get('status_reason') or 'see its events'}; "
                f"`azray down {name}` removes what is left",
                ExitCode.FAILED,
                recent_event_lines(view),
            )
        if status in ("deleting", "deleted"):
            return CliError(
                f"cluster {name} is {status}; wait until `azray down {name}` finishes, then run `azray up` again",
                ExitCode.CONFLICT,
            )
        return None

    def lines(view: View) -> list[str]:
        return [f"{'✓' if s.done else '…'} {s.label}: {s.detail}" for s in up_steps(view, min_workers)]

    try:
        return follow(
            session,
            name,
            done=lambda view: all(step.done for step in up_steps(view, min_workers)),
            fail=failure,
            render=lambda view: progress_view(view, up_steps(view, min_workers)),
            changes=lines,
            timeout_s=timeout_s,
            poll_s=poll_s,
            what="the cluster to be usable",
        )
    except KeyboardInterrupt:
        raise CliError(
            f"stopped watching; cluster {name} keeps going (`azray status {name} --watch` follows it, "
            f"`azray down {name}` removes it)",
            ExitCode.INTERRUPTED,
        ) from None


@app.command()
@handled
def status(
    context: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A cluster; without it, the list.")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw in place until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between two redraws with --watch.", min=0.2)] = (
        WATCH_INTERVAL_S
    ),
    events: Annotated[int, typer.Option(help="How many recent events to show.", min=0)] = STATUS_EVENTS,
) -> None:
    """Nodes by type and status, pending and infeasible demand, the last decision and its reasons, recent events."""
    session = session_of(context)
    if name is None:
        if watch:
            raise CliError("--watch needs a cluster name", ExitCode.USAGE)
        session.out.print(clusters_table(session.api.clusters(), session.target.api_url))
        return
    if not watch:
        session.out.print(status_view(session.api.cluster(name), events=events))
        return
    watch_status(session, name, interval, events)


def watch_status(session: Session, name: str, interval_s: float, events: int) -> None:
    """Until Ctrl-C (exit 0): redrawn in place on a terminal, one view after the other in a file or a pipe."""
    view = session.api.cluster(name)  # a wrong name or key fails at once, before the screen is taken
    problem = ""

    def screen() -> RenderableType:
        stamp = datetime.now().strftime("%H:%M:%S")
        header = Text(f"azray status {name} · {stamp} · every {interval_s:g} s · Ctrl-C to stop", style="dim")
        parts: list[RenderableType] = [header, status_view(view, events=events)]
        if problem:
            parts.append(Text(f"last refresh failed: {problem}", style="yellow"))
        return Group(*parts)

    def refresh() -> None:
        """The next view; an app restarting or a blip keeps the last view on screen with the reason under it."""
        nonlocal view, problem
        time.sleep(interval_s)
        try:
            view = session.api.cluster(name)
            problem = ""
        except CliError as error:
            if error.exit_code not in TRANSIENT_EXITS:
                raise
            problem = error.message

    try:
        if not session.out.is_terminal:
            while True:
                session.out.print(screen())
                refresh()
        with Live(screen(), console=session.out, auto_refresh=False, vertical_overflow="crop") as live:
            while True:
                refresh()
                live.update(screen(), refresh=True)
    except KeyboardInterrupt:
        return


@app.command("list")
@handled
def list_clusters(context: typer.Context) -> None:
    """Every cluster with its status."""
    session = session_of(context)
    session.out.print(clusters_table(session.api.clusters(), session.target.api_url))


@app.command()
@handled
def events(context: typer.Context, name: Annotated[str, typer.Argument(help="The cluster.")]) -> None:
    """The cluster's recent events, oldest first."""
    session = session_of(context)
    view = session.api.cluster(name)
    session.out.print(events_table(list(view.get("events", [])), f"Events of {name} (the API keeps the recent ones)"))


@app.command()
@handled
def down(  # noqa: C901 -- confirmation, deletion, waiting and the removal list, each with its own exit
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The cluster to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the deletion (0: no limit).")] = (
        DEFAULT_DOWN_TIMEOUT_S
    ),
    poll: Annotated[float, typer.Option(help="Seconds between two looks.", min=0.1)] = POLL_S,
) -> None:
    """Delete the cluster: every VM, then its network; wait until it is deleted and list what was removed."""
    session = session_of(context)
    view = session.api.cluster(name)
    if view.get("status") != "deleted":
        if not yes:
            nodes = len(live_nodes(view))
            where = session.target.base_url
            prompt = f"Delete cluster {name} ({view.get('provider')}, {nodes} live node(s)) at {where}?"
            if not typer.confirm(prompt, default=False):
                raise CliError("nothing deleted", ExitCode.FAILED)
        accepted = session.api.call("DELETE", f"/clusters/{name}", ok=(200, 202))
        session.out.print(f"deleting cluster {name}: {accepted.get('detail') or accepted.get('status')}")

        def progress(current: View) -> RenderableType:
            counts: dict[str, int] = {}
            for node in current.get("nodes", []):
                if node.get("status") not in FINAL_NODE_STATUSES:
                    counts[str(node.get("status"))] = counts.get(str(node.get("status")), 0) + 1
            text = Text(f"cluster {name}: {current.get('status')}; live nodes: ")
            text.append(", ".join(f"{status} {count}" for status, count in sorted(counts.items())) or "none")
            latest = (current.get("events") or [{}])[0]
            if latest.get("message"):
                text.append(f"\nlatest event: {latest.get('kind')}: {latest['message']}")
            return text

        def lines(current: View) -> list[str]:
            return [f"{e.get('kind')}: {e.get('message')}" for e in chronological(current.get("events", [])[:3])]

        try:
            view = follow(
                session,
                name,
                done=lambda current: current.get("status") == "deleted",
                fail=lambda current: None,
                render=progress,
                changes=lines,
                timeout_s=timeout,
                poll_s=poll,
                what="the deletion",
            )
        except KeyboardInterrupt:
            raise CliError(
                f"stopped watching; the deletion of {name} goes on (`azray status {name}` follows it)",
                ExitCode.INTERRUPTED,
            ) from None
    session.out.print(Text(f"cluster {name} is deleted", style="green"))
    removed = removed_lines(view)
    session.out.print("removed:" if removed else "removed: (no removal events among the recent ones)")
    for line in removed:
        session.out.print(f"  - {line}", soft_wrap=True, highlight=False)
    for path in forget_cluster(session.target, name):
        session.out.print(f"  - local file {path}", soft_wrap=True, highlight=False)


def removed_lines(view: View) -> list[str]:
    """From the events: the instances that ended, and what the provider removed with the cluster (oldest first)."""
    lines = []
    for event in chronological(view.get("events", [])):
        message = str(event.get("message", ""))
        if event.get("kind") == "removed":
            lines.append(message)
        elif event.get("kind") == "status" and "-> terminated" in message:
            lines.append(f"instance {event.get('instance_id', '')}: {message}")
    return lines


@app.command()
@handled
def attach(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The cluster.")],
    bastion: Annotated[str, typer.Option(help="The Azure Bastion's name.")] = "bastion",
    bastion_group: Annotated[str, typer.Option(help="The Bastion's resource group (default: the app's).")] = "",
) -> None:
    """A shell on the head: SSH with the saved key, or the Bastion command. Local: a shell here with Ray's env set."""
    session = session_of(context)
    view = session.api.cluster(name)
    if view.get("provider") == "local":
        require_running(view)
        shell = os.environ.get("SHELL") or "/bin/sh"
        session.err.print(
            f"cluster {name} runs on this machine: a {shell} with RAY_ADDRESS and the cluster token set; "
            "`exit` comes back",
            soft_wrap=True,
        )
        raise typer.Exit(subprocess.run([shell], env=local_ray_environment(view), check=False).returncode)
    access = head_access(view, session.target, load_notes(session.target, name))
    if access.ssh_host:
        command = ssh_command(access.user, access.ssh_host, access.key)
        session.err.print(f"$ {shell_line(command)}", soft_wrap=True, highlight=False)
        raise typer.Exit(subprocess.run(command, check=False).returncode)
    target_bastion = bastion_for(session.target, bastion, bastion_group)
    require_bastion_group(target_bastion)
    session.out.print("the head has no public IP; reach it through Azure Bastion:")
    session.out.print(
        shell_line(bastion_command("ssh", target_bastion, access.vm_id, access.user, access.key)),
        soft_wrap=True,
        highlight=False,
    )


@app.command()
@handled
def dashboard(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The cluster.")],
    port: Annotated[int, typer.Option(help="The local port of the tunnel (Azure clusters).")] = DASHBOARD_PORT,
    bastion: Annotated[str, typer.Option(help="The Azure Bastion's name.")] = "bastion",
    bastion_group: Annotated[str, typer.Option(help="The Bastion's resource group (default: the app's).")] = "",
) -> None:
    """The Ray dashboard: its URL (local), or an SSH tunnel to port 8265 until Ctrl-C (Azure)."""
    session = session_of(context)
    view = session.api.cluster(name)
    head = view.get("head") or {}
    if view.get("provider") == "local":
        require_running(view)
        session.out.print(f"dashboard: {head.get('dashboard_url')}", highlight=False)
        session.out.print(
            f"it asks for the cluster token: the contents of {head.get('auth_token_path')}", highlight=False
        )
        return
    access = head_access(view, session.target, load_notes(session.target, name))
    if access.ssh_host:
        host, remote_port = dashboard_endpoint(view)
        forward = ["-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{port}:{host}:{remote_port}"]
        command = ssh_command(access.user, access.ssh_host, access.key, extra=forward)
        session.out.print(f"dashboard: http://127.0.0.1:{port}  (tunnel open until Ctrl-C)", highlight=False)
        session.err.print(f"$ {shell_line(command)}", soft_wrap=True, highlight=False)
        try:
            code = subprocess.run(command, check=False).returncode
        except KeyboardInterrupt:
            code = 0
        raise typer.Exit(code)
    target_bastion = bastion_for(session.target, bastion, bastion_group)
    require_bastion_group(target_bastion)
    session.out.print("the head has no public IP; open the tunnel through Azure Bastion, then browse")
    session.out.print(f"http://127.0.0.1:{DASHBOARD_PORT}:", highlight=False)
    session.out.print(
        shell_line(bastion_command("tunnel", target_bastion, access.vm_id, access.user, access.key)),
        soft_wrap=True,
        highlight=False,
    )


# Everything after the cluster name belongs to the command, options included; a leading `--` is dropped.
PASSTHROUGH = {"allow_interspersed_args": False}


def passthrough(arguments: list[str]) -> list[str]:
    command = arguments[1:] if arguments[:1] == ["--"] else arguments
    if not command:
        raise CliError("give the command after the cluster name, e.g. `-- python job.py`", ExitCode.USAGE)
    return command


@app.command(context_settings=PASSTHROUGH)
@handled
def submit(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The cluster.")],
    entrypoint: Annotated[list[str], typer.Argument(help="The job's command, after `--`.")],
    working_dir: Annotated[
        str | None, typer.Option(help="A folder to upload as the job's working directory (Ray's runtime_env).")
    ] = None,
) -> None:
    """Run a Ray job on the cluster, stream its logs, and exit with its status (0 when it succeeded)."""
    session = session_of(context)
    view = session.api.cluster(name)
    require_running(view)
    command_line = shlex.join(passthrough(entrypoint))
    from azray.jobs import submit_and_follow

    def announce(job_id: str) -> None:
        session.err.print(
            f"submitted {job_id} to {name}; its logs follow (Ctrl-C stops following, not the job)",
            soft_wrap=True,
            highlight=False,
        )

    def run(address: str, token: str) -> int:
        try:
            return submit_and_follow(address, token, command_line, working_dir=working_dir, on_submitted=announce)
        except KeyboardInterrupt:
            raise CliError("stopped following; the job keeps running on the cluster", ExitCode.INTERRUPTED) from None

    if view.get("provider") == "local":
        head = view.get("head") or {}
        token_path = Path(str(head.get("auth_token_path") or ""))
        try:
            token = token_path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise CliError(
                f"cannot read the cluster token at {token_path}: {error.strerror or error}; local clusters must be "
                "submitted to from the machine that runs them",
                ExitCode.UNSUPPORTED,
            ) from None
        raise typer.Exit(run(str(head.get("dashboard_url")), token))
    access = require_ssh(session, view)
    with dashboard_tunnel(access, view) as address:
        code = run(address, read_head_token(access))
    raise typer.Exit(code)


def require_ssh(session: Session, view: View) -> HeadAccess:
    access = head_access(view, session.target, load_notes(session.target, str(view.get("name", ""))))
    if not access.ssh_host:
        raise CliError(
            "the head has no public IP, so azray cannot tunnel to it; open a Bastion tunnel "
            f"(`azray dashboard {view.get('name')}` prints it) and run Ray's own `ray job submit --address "
            f"http://127.0.0.1:{DASHBOARD_PORT}` through it",
            ExitCode.UNSUPPORTED,
        )
    return access


@app.command("exec", context_settings=PASSTHROUGH)
@handled
def exec_command(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The cluster.")],
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.")],
) -> None:
    """Run a command against the cluster: here with RAY_ADDRESS and the token set (local), on the head (Azure)."""
    session = session_of(context)
    command = passthrough(command)
    view = session.api.cluster(name)
    require_running(view)
    if view.get("provider") == "local":
        try:
            code = subprocess.run(command, env=local_ray_environment(view), check=False).returncode
        except FileNotFoundError:
            raise CliError(f"command not found: {command[0]}", ExitCode.USAGE) from None
        except KeyboardInterrupt:
            code = int(ExitCode.INTERRUPTED)
        raise typer.Exit(code)
    access = require_ssh(session, view)
    head = view.get("head") or {}
    remote = remote_command_line(command, str(head.get("ray_address") or ""))
    extra = ["-t"] if sys.stdin.isatty() else []
    raise typer.Exit(
        subprocess.run(
            ssh_command(access.user, access.ssh_host, access.key, extra=extra, remote=remote), check=False
        ).returncode
    )


@app.command()
@handled
def timeline(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The cluster.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the SVG.")] = None,
) -> None:
    """Write the cluster's timeline (nodes by status and pending demand over time) to an SVG file."""
    session = session_of(context)
    session.api.cluster(name)  # a 404 below then means the route, not the cluster
    path = f"/clusters/{name}/timeline.svg"
    answer = session.api.send("GET", path)
    if answer.is_missing_route:
        raise CliError(
            f"this server has no timeline yet (GET {path} answered {answer.status}); upgrade the app",
            ExitCode.UNSUPPORTED,
        )
    if answer.status != 200:
        raise session.api.error_for("GET", path, answer)
    destination = output or Path(f"{name}-timeline.svg")
    destination.write_bytes(answer.body)
    session.out.print(str(destination.resolve()), highlight=False, soft_wrap=True)


@app.command()
@handled
def target(context: typer.Context) -> None:
    """Where azray points, where that came from, whether a key is set (never the key), and the app's health."""
    session = session_of(context)
    where = session.target
    session.out.print(f"url     {where.api_url}  (from {where.url_source})", highlight=False, soft_wrap=True)
    key_line = f"set (from {where.key_source})" if where.key is not None else f"none; {where.key_hint}"
    session.out.print(f"key     {key_line}", highlight=False, soft_wrap=True)
    health = session.api.call("GET", "/health")
    session.out.print(f"health  {health.get('status')} (API version {health.get('version')})", highlight=False)


def main() -> None:
    app()
