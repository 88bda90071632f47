"""azray's commands against a loopback stand-in for the API: what each sends, prints and exits with."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from azray.cli import app
from azray.errors import ExitCode
from tests.unit.test_cli_fake_api import (
    FakeApi,
    Reply,
    cluster_not_found,
    cluster_view,
    event,
    node,
    problem,
    serving,
)

CONFIG = """\
cluster_name: demo
max_workers: 2
provider: {type: local}
available_node_types:
  head: {resources: {CPU: 0}, min_workers: 0, max_workers: 0, node_config: {}}
  cpu: {resources: {CPU: 2}, min_workers: 1, max_workers: 2, node_config: {}}
head_node_type: head
"""
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    with serving() as api:
        yield api


@pytest.fixture
def config_home(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def invoke(fake_api: FakeApi, config_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run azray against the fake API, from a folder with no `.azure/`, with its own config home."""
    monkeypatch.chdir(tmp_path)
    # Polls without waiting: the fake answers at once and the scripts decide what each look sees.
    monkeypatch.setattr("azray.cli.time.sleep", lambda seconds: None)

    def run(*arguments: str, key: str | None = None, input: str | None = None, env: dict[str, str] | None = None):
        environment = {"XDG_CONFIG_HOME": str(config_home), "COLUMNS": "200", "AZRAY_URL": fake_api.url}
        if key is not None:
            environment["AZRAY_KEY"] = key
        else:
            monkeypatch.delenv("AZRAY_KEY", raising=False)
        return CliRunner().invoke(app, list(arguments), input=input, env={**environment, **(env or {})})

    return run


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(CONFIG)
    return path


def created(name: str = "demo", *, is_new: bool = True, status: str = "creating", **extra: Any) -> Reply:
    body = {
        "name": name,
        "status": status,
        "created": is_new,
        "location": f"/api/clusters/{name}",
        "ignored_fields": [],
        "adjusted_fields": [],
        "ssh_private_key": None,
        **extra,
    }
    return Reply(202, body)


def usable_view(**extra: Any) -> Reply:
    nodes = [node("h1", "head", "ray_running", is_head=True), node("w1", "cpu", "ray_running")]
    return Reply(200, cluster_view(nodes=nodes, **extra))


def booting_views() -> list[Reply]:
    return [
        Reply(200, cluster_view(status="creating", nodes=[])),
        Reply(200, cluster_view(status="creating", nodes=[node("h1", "head", "allocated", is_head=True)])),
        Reply(
            200,
            cluster_view(
                nodes=[node("h1", "head", "ray_running", is_head=True), node("w1", "cpu", "allocated")],
            ),
        ),
        usable_view(),
    ]


# -- up ----------------------------------------------------------------------------------------------------------------


def test_up_posts_the_config_file_as_yaml(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", created()).on("GET", "/clusters/demo", usable_view())
    invoke("up", str(config_file))
    (posted,) = fake_api.seen("POST", "/clusters")
    assert (posted.body.decode(), posted.headers["content-type"]) == (CONFIG, "application/yaml")


def test_up_follows_head_vm_ray_and_min_workers_until_usable_then_says_how_to_connect(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", created()).on("GET", "/clusters/demo", *booting_views())
    result = invoke("up", str(config_file))
    assert result.exit_code == 0, result.output
    for line in (
        "✓ head VM: allocated",
        "✓ Ray on the head: Ray at 127.0.0.1:6379",
        "✓ min_workers running (1): 1/1 workers run Ray",
        "cluster demo is usable",
        "ray address   127.0.0.1:6379",
        "azray submit demo --",
    ):
        assert line in result.stdout


def test_up_saves_a_generated_private_key_once_with_mode_0600(invoke, fake_api, config_file, config_home):
    fake_api.on("POST", "/clusters", created(ssh_private_key=PRIVATE_KEY)).on("GET", "/clusters/demo", usable_view())
    result = invoke("up", str(config_file))
    (key_file,) = (config_home / "azray" / "keys").rglob("demo.pem")
    assert key_file.read_text() == PRIVATE_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert str(key_file) in result.stdout
    assert PRIVATE_KEY.splitlines()[1] not in result.output


def test_up_with_the_same_config_again_says_nothing_to_do(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", created(is_new=False, status="running")).on("GET", "/clusters/demo", usable_view())
    result = invoke("up", str(config_file))
    assert result.exit_code == 0
    assert "nothing to do: cluster demo already runs this config" in result.stdout
    assert not fake_api.seen("PUT")


def test_up_with_another_config_puts_it_to_the_existing_cluster(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", problem(409, "Conflict", "a cluster named 'demo' exists with another config"))
    fake_api.on("PUT", "/clusters/demo", Reply(202, {"name": "demo", "status": "running", "detail": "applied"}))
    fake_api.on("GET", "/clusters/demo", usable_view())
    result = invoke("up", str(config_file))
    assert result.exit_code == 0, result.output
    assert fake_api.seen("PUT", "/clusters/demo")[0].body.decode() == CONFIG
    assert "cluster demo: update accepted (applied)" in result.stdout


def test_up_on_a_server_without_put_says_it_cannot_update_yet(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", problem(409, "Conflict", "exists with another config"))
    fake_api.on("GET", "/clusters/demo", usable_view())  # PUT on this path is then a 405, as the local host answers
    result = invoke("up", str(config_file))
    assert result.exit_code == ExitCode.UNSUPPORTED
    assert "this server cannot update clusters yet" in result.stderr
    assert "azray down demo" in result.stderr


def test_up_of_a_stopped_cluster_starts_it_and_follows_it(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", created(is_new=False, status="stopped"))
    fake_api.on("POST", "/clusters/demo/start", Reply(202, {"name": "demo", "status": "creating"}))
    fake_api.on("GET", "/clusters/demo", *booting_views())
    result = invoke("up", str(config_file))
    assert result.exit_code == 0, result.output
    assert len(fake_api.seen("POST", "/clusters/demo/start")) == 1
    assert "cluster demo was stopped: starting it again" in result.stdout


def test_up_with_another_config_of_a_stopped_cluster_updates_then_starts_it(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", problem(409, "Conflict", "a cluster named 'demo' exists with another config"))
    fake_api.on("PUT", "/clusters/demo", Reply(202, {"name": "demo", "status": "stopped", "detail": "applied"}))
    fake_api.on("POST", "/clusters/demo/start", Reply(202, {"name": "demo", "status": "creating"}))
    fake_api.on("GET", "/clusters/demo", *booting_views())
    result = invoke("up", str(config_file))
    assert result.exit_code == 0, result.output
    assert len(fake_api.seen("PUT", "/clusters/demo")) == 1
    assert len(fake_api.seen("POST", "/clusters/demo/start")) == 1
    assert "cluster demo was stopped: starting it again" in result.stdout


def test_up_of_a_stopped_cluster_on_a_server_that_cannot_start_it_says_so(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", created(is_new=False, status="stopped"))
    result = invoke("up", str(config_file))
    assert result.exit_code == ExitCode.UNSUPPORTED
    assert "this server cannot start it" in result.stderr


def test_up_refused_by_a_put_conflict_says_why(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", problem(409, "Conflict", "exists with another config"))
    fake_api.on("PUT", "/clusters/demo", problem(409, "Conflict", "the head node type cannot change"))
    result = invoke("up", str(config_file))
    assert result.exit_code == ExitCode.CONFLICT
    assert "the head node type cannot change" in result.stderr


def test_up_with_an_invalid_config_lists_the_failing_field_paths(invoke, fake_api, config_file):
    errors = [
        {"field": "available_node_types.cpu.min_workers", "message": "must be <= max_workers"},
        {"field": "max_workers", "message": "must be >= 0"},
    ]
    fake_api.on("POST", "/clusters", problem(400, "Invalid request", "the cluster config is invalid", errors))
    result = invoke("up", str(config_file))
    assert result.exit_code == ExitCode.INVALID
    assert "the cluster config is invalid" in result.stderr
    assert "available_node_types.cpu.min_workers: must be <= max_workers" in result.stderr
    assert "max_workers: must be >= 0" in result.stderr


def test_up_ends_with_failed_and_the_reason_when_the_cluster_fails(invoke, fake_api, config_file):
    failed = cluster_view(status="failed", status_reason="the head did not start: quota", nodes=[])
    fake_api.on("POST", "/clusters", created()).on("GET", "/clusters/demo", Reply(200, failed))
    result = invoke("up", str(config_file))
    assert result.exit_code == ExitCode.FAILED
    assert "cluster demo failed: the head did not start: quota" in result.stderr


def test_up_gives_up_after_its_timeout_and_says_the_cluster_keeps_going(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", created()).on("GET", "/clusters/demo", booting_views()[0])
    result = invoke("up", str(config_file), "--timeout", "0.01")
    assert result.exit_code == ExitCode.TIMEOUT
    assert "the cluster keeps going" in result.stderr


def test_ctrl_c_while_up_waits_leaves_the_cluster_going_and_says_so(invoke, fake_api, config_file, monkeypatch):
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    fake_api.on("POST", "/clusters", created()).on("GET", "/clusters/demo", booting_views()[0])
    monkeypatch.setattr("azray.cli.time.sleep", interrupted)
    result = invoke("up", str(config_file))
    assert result.exit_code == ExitCode.INTERRUPTED
    assert "cluster demo keeps going" in result.stderr
    assert not fake_api.seen("DELETE")


def test_up_with_no_wait_returns_after_the_create_answer(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", created())
    result = invoke("up", str(config_file), "--no-wait")
    assert result.exit_code == 0
    assert not fake_api.seen("GET")


# -- status, list, events --------------------------------------------------------------------------------------------


def test_status_shows_nodes_by_type_demand_decision_events_and_adjusted_fields(invoke, fake_api):
    view = cluster_view(
        nodes=[
            node("h1", "head", "ray_running", is_head=True),
            node("w1", "cpu", "ray_running"),
            node("w2", "cpu", "allocated", boot_phase="cloud_init_running"),
        ],
        pending_demand=[{"shape": {"CPU": 1}, "count": 4}],
        infeasible=[{"shape": "{GPU: 8}", "count": 1, "reason": "no node type has 8 GPU"}],
        last_decision={"at": STAMP_LATER, "reasons": ["launch 1 x cpu: 4 pending {CPU: 1}"]},
        events=[
            event("adjusted", "provider.resource_group: 'ray-cluster' -> 'rg-dev-clusters'"),
            event("launch", "queued cpu w2", at=STAMP_LATER, instance_id="w2"),
        ],
    )
    fake_api.on("GET", "/clusters/demo", Reply(200, view))
    result = invoke("status", "demo")
    assert result.exit_code == 0
    for text in (
        "cpu",
        "ray_running",
        "allocated",
        "cloud_init_running",
        "{CPU: 1} x 4",
        "{GPU: 8} x 1: no node type has 8 GPU",
        "launch 1 x cpu: 4 pending {CPU: 1}",
        "queued cpu w2",
        "provider.resource_group: 'ray-cluster' -> 'rg-dev-clusters'",
    ):
        assert text in result.stdout


STAMP_LATER = "2026-01-01T12:00:05Z"


def test_status_watch_outside_a_terminal_prints_one_view_after_the_other_until_ctrl_c(invoke, fake_api, monkeypatch):
    sleeps: list[float] = []

    def sleep_twice(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    fake_api.on("GET", "/clusters/demo", usable_view(), Reply(200, cluster_view(status_reason="second look")))
    monkeypatch.setattr("azray.cli.time.sleep", sleep_twice)
    result = invoke("status", "demo", "--watch", "--interval", "0.5")
    assert result.exit_code == 0
    assert result.stdout.count("azray status demo ·") == 3
    assert "second look" in result.stdout
    assert sleeps == [0.5, 0.5, 0.5]


def test_status_watch_keeps_the_last_view_when_a_refresh_fails(invoke, fake_api, monkeypatch):
    sleeps: list[float] = []

    def sleep_twice(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    fake_api.on("GET", "/clusters/demo", usable_view(), Reply(500, b"restarting", "text/plain"))
    monkeypatch.setattr("azray.cli.time.sleep", sleep_twice)
    result = invoke("status", "demo", "--watch")
    assert result.exit_code == 0
    assert "last refresh failed: GET" in result.stdout


def test_status_without_a_name_lists_the_clusters(invoke, fake_api):
    clusters = [{"name": "demo", "status": "running", "created_at": "t0", "updated_at": "t1"}]
    fake_api.on("GET", "/clusters", Reply(200, {"clusters": clusters}))
    result = invoke("status")
    assert "demo" in result.stdout
    assert "running" in result.stdout


def test_list_shows_every_cluster_with_its_status(invoke, fake_api):
    clusters = [
        {"name": "alpha", "status": "running", "created_at": "t0", "updated_at": "t1"},
        {"name": "beta", "status": "deleting", "created_at": "t0", "updated_at": "t1"},
    ]
    fake_api.on("GET", "/clusters", Reply(200, {"clusters": clusters}))
    result = invoke("list")
    assert result.exit_code == 0
    rows = [line.replace("│", " ").split()[:2] for line in result.stdout.splitlines() if "t0" in line]
    assert rows == [["alpha", "running"], ["beta", "deleting"]]


def test_list_with_no_clusters_says_so(invoke, fake_api):
    fake_api.on("GET", "/clusters", Reply(200, {"clusters": []}))
    assert "no clusters at" in invoke("list").stdout


def test_events_are_printed_oldest_first(invoke, fake_api):
    view = cluster_view(events=[event("status", "second", at=STAMP_LATER), event("status", "first")])
    fake_api.on("GET", "/clusters/demo", Reply(200, view))
    output = invoke("events", "demo").stdout
    assert output.index("first") < output.index("second")


# -- down --------------------------------------------------------------------------------------------------------------


def deleting_then_deleted() -> list[Reply]:
    deleted_events = [
        event("status", "cluster deleted", at=STAMP_LATER),
        event("removed", "folder /tmp/ray-local-demo", at=STAMP_LATER),
        event("status", "cpu terminating -> terminated: the cloud no longer lists it", instance_id="w1"),
    ]
    return [
        usable_view(),
        Reply(200, cluster_view(status="deleting", nodes=[node("w1", "cpu", "terminating")])),
        Reply(200, cluster_view(status="deleted", nodes=[node("w1", "cpu", "terminated")], events=deleted_events)),
    ]


def test_down_with_yes_deletes_waits_until_deleted_and_lists_what_was_removed(invoke, fake_api):
    fake_api.on("GET", "/clusters/demo", *deleting_then_deleted())
    fake_api.on("DELETE", "/clusters/demo", Reply(202, {"name": "demo", "status": "deleting", "detail": "terminating"}))
    result = invoke("down", "demo", "--yes")
    assert result.exit_code == 0, result.output
    assert len(fake_api.seen("DELETE", "/clusters/demo")) == 1
    assert "cluster demo is deleted" in result.stdout
    assert "folder /tmp/ray-local-demo" in result.stdout
    assert "instance w1: cpu terminating -> terminated" in result.stdout


def test_down_asks_first_and_deletes_nothing_when_declined(invoke, fake_api):
    fake_api.on("GET", "/clusters/demo", usable_view())
    result = invoke("down", "demo", input="n\n")
    assert "Delete cluster demo" in result.stdout
    assert result.exit_code == ExitCode.FAILED
    assert not fake_api.seen("DELETE")


def test_down_forgets_the_saved_key_of_the_deleted_cluster(invoke, fake_api, config_file, config_home):
    fake_api.on("POST", "/clusters", created(ssh_private_key=PRIVATE_KEY)).on("GET", "/clusters/demo", usable_view())
    invoke("up", str(config_file), "--no-wait")
    fake_api.on("GET", "/clusters/demo", *deleting_then_deleted())
    fake_api.on("DELETE", "/clusters/demo", Reply(202, {"name": "demo", "status": "deleting"}))
    result = invoke("down", "demo", "--yes")
    assert not list((config_home / "azray" / "keys").rglob("demo.pem"))
    assert "demo.pem" in result.stdout


def test_down_of_an_unknown_cluster_is_not_found(invoke, fake_api):
    fake_api.on("GET", "/clusters/ghost", cluster_not_found("ghost"))
    result = invoke("down", "ghost", "--yes")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "no cluster named 'ghost'" in result.stderr


# -- timeline ----------------------------------------------------------------------------------------------------------


def test_timeline_on_a_server_without_it_says_so(invoke, fake_api):
    fake_api.on("GET", "/clusters/demo", usable_view())
    result = invoke("timeline", "demo")
    assert result.exit_code == ExitCode.UNSUPPORTED
    assert "this server has no timeline yet" in result.stderr


def test_timeline_writes_the_svg_and_prints_its_path(invoke, fake_api, tmp_path):
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    fake_api.on("GET", "/clusters/demo", usable_view())
    fake_api.on("GET", "/clusters/demo/timeline.svg", Reply(200, svg, "image/svg+xml"))
    result = invoke("timeline", "demo", "-o", str(tmp_path / "t.svg"))
    assert result.exit_code == 0
    assert (tmp_path / "t.svg").read_bytes() == svg
    assert str(tmp_path / "t.svg") in result.stdout


# -- local clusters: exec, attach, dashboard, submit -----------------------------------------------------------------


def local_view(tmp_path: Path) -> dict[str, Any]:
    token = tmp_path / "auth_token"
    token.write_text("cluster-token-value\n")
    head = {
        "instance_id": "h1",
        "ray_address": "127.0.0.1:6379",
        "dashboard_url": "http://127.0.0.1:8265",
        "auth_token_path": str(token),
    }
    return cluster_view(head=head)


def test_exec_runs_the_command_with_the_clusters_address_and_token_and_exits_with_its_code(invoke, fake_api, tmp_path):
    fake_api.on("GET", "/clusters/demo", Reply(200, local_view(tmp_path)))
    seen = tmp_path / "command-saw"
    script = (
        "import os, sys; names = ('RAY_ADDRESS', 'RAY_AUTH_MODE', 'RAY_AUTH_TOKEN_PATH'); "
        f"open({str(seen)!r}, 'w').write(' '.join(os.environ[n] for n in names)); sys.exit(7)"
    )
    result = invoke("exec", "demo", "--", sys.executable, "-c", script)
    assert result.exit_code == 7
    assert seen.read_text() == f"127.0.0.1:6379 token {tmp_path / 'auth_token'}"


def test_exec_on_a_cluster_that_is_not_running_says_so(invoke, fake_api):
    fake_api.on("GET", "/clusters/demo", Reply(200, cluster_view(status="creating", nodes=[])))
    result = invoke("exec", "demo", "--", "true")
    assert result.exit_code == ExitCode.CONFLICT
    assert "cluster demo is creating, not running" in result.stderr


def test_attach_to_a_local_cluster_opens_a_shell_here_with_rays_environment(invoke, fake_api, tmp_path):
    fake_api.on("GET", "/clusters/demo", Reply(200, local_view(tmp_path)))
    shell = tmp_path / "fake-shell"
    shell.write_text(f'#!/bin/sh\necho "$RAY_ADDRESS" > {tmp_path / "shell-saw"}\nexit 4\n')
    shell.chmod(0o755)
    result = invoke("attach", "demo", env={"SHELL": str(shell)})
    assert result.exit_code == 4
    assert (tmp_path / "shell-saw").read_text().strip() == "127.0.0.1:6379"


def test_dashboard_of_a_local_cluster_prints_its_url_and_where_the_token_is(invoke, fake_api, tmp_path):
    fake_api.on("GET", "/clusters/demo", Reply(200, local_view(tmp_path)))
    result = invoke("dashboard", "demo")
    assert "dashboard: http://127.0.0.1:8265" in result.stdout
    assert str(tmp_path / "auth_token") in result.stdout
    assert "cluster-token-value" not in result.output


def test_submit_to_a_local_cluster_uses_its_dashboard_and_token_and_exits_with_the_jobs_code(
    invoke, fake_api, tmp_path, monkeypatch
):
    calls: list[tuple[str, str, str]] = []

    def fake_submit(address: str, token: str, entrypoint: str, *, working_dir: Any, on_submitted: Any) -> int:
        calls.append((address, token, entrypoint))
        on_submitted("raysubmit_1")
        return 3

    import azray.jobs

    monkeypatch.setattr(azray.jobs, "submit_and_follow", fake_submit)
    fake_api.on("GET", "/clusters/demo", Reply(200, local_view(tmp_path)))
    result = invoke("submit", "demo", "--", "python", "job.py", "--rounds", "2")
    assert result.exit_code == 3
    assert calls == [("http://127.0.0.1:8265", "cluster-token-value", "python job.py --rounds 2")]
    assert "submitted raysubmit_1 to demo" in result.stderr


def test_submit_without_a_command_is_a_usage_error(invoke, fake_api, tmp_path):
    fake_api.on("GET", "/clusters/demo", Reply(200, local_view(tmp_path)))
    result = invoke("submit", "demo", "--")
    assert result.exit_code == ExitCode.USAGE


# -- Azure clusters: SSH and Bastion ---------------------------------------------------------------------------------


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `ssh` first on PATH that records its arguments (one per line) and exits 0."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "ssh-argv"
    script = folder / "ssh"
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a"; done > {record}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return record


def azure_view(**head: str) -> dict[str, Any]:
    return cluster_view(
        provider="azure",
        head={"instance_id": "h1", "ray_address": "10.100.0.4:6379", "dashboard_url": "http://10.100.0.4:8265", **head},
    )


def test_attach_to_an_azure_head_with_a_public_ip_runs_ssh_with_the_saved_key(
    invoke, fake_api, tmp_path, config_home, fake_ssh
):
    config_file = tmp_path / "azure.yaml"
    config_file.write_text(CONFIG.replace("{type: local}", "{type: azure, ssh_allowed_cidrs: [198.51.100.7/32]}"))
    fake_api.on("POST", "/clusters", created(ssh_private_key=PRIVATE_KEY))
    invoke("up", str(config_file), "--no-wait")
    fake_api.on("GET", "/clusters/demo", Reply(200, azure_view(public_ip="203.0.113.7")))
    result = invoke("attach", "demo")
    assert result.exit_code == 0, result.output
    (key_file,) = (config_home / "azray" / "keys").rglob("demo.pem")
    assert fake_ssh.read_text().splitlines() == ["-i", str(key_file), "-o", "IdentitiesOnly=yes", "ubuntu@203.0.113.7"]


def test_attach_to_an_azure_head_without_a_public_ip_prints_the_exact_bastion_command(invoke, fake_api):
    vm_id = "/subscriptions/s/resourceGroups/rg-dev-clusters/providers/Microsoft.Compute/virtualMachines/ray-demo-h1"
    fake_api.on("GET", "/clusters/demo", Reply(200, azure_view(vm_id=vm_id)))
    result = invoke("attach", "demo", "--bastion-group", "rg-dev")
    assert result.exit_code == 0, result.output
    assert (
        f"az network bastion ssh --name bastion --resource-group rg-dev --target-resource-id {vm_id} "
        "--auth-type ssh-key --username ubuntu --ssh-key" in result.stdout
    )


def test_attach_explains_what_is_missing_when_the_head_cannot_be_located(invoke, fake_api, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    fake_api.on("GET", "/clusters/demo", Reply(200, azure_view()))
    result = invoke("attach", "demo")
    assert result.exit_code == ExitCode.UNSUPPORTED
    assert "neither the head's public IP nor its VM id" in result.stderr


def test_attach_says_ssh_is_closed_when_the_config_opened_it_to_nobody(invoke, fake_api, config_file):
    fake_api.on("POST", "/clusters", created())
    invoke("up", str(config_file), "--no-wait")  # the config has no provider.ssh_allowed_cidrs
    fake_api.on("GET", "/clusters/demo", Reply(200, azure_view(public_ip="203.0.113.7")))
    result = invoke("attach", "demo")
    assert result.exit_code == ExitCode.UNSUPPORTED
    assert "SSH to cluster demo is closed" in result.stderr


def test_dashboard_of_an_azure_cluster_tunnels_port_8265_over_ssh(invoke, fake_api, fake_ssh):
    fake_api.on("GET", "/clusters/demo", Reply(200, azure_view(public_ip="203.0.113.7")))
    result = invoke("dashboard", "demo")
    assert result.exit_code == 0, result.output
    argv = fake_ssh.read_text().splitlines()
    assert argv[argv.index("-L") + 1] == "8265:10.100.0.4:8265"
    assert argv[-1] == "ubuntu@203.0.113.7"
    assert "http://127.0.0.1:8265" in result.stdout


def test_exec_on_an_azure_cluster_runs_over_ssh_reading_the_token_on_the_head(invoke, fake_api, fake_ssh):
    fake_api.on("GET", "/clusters/demo", Reply(200, azure_view(public_ip="203.0.113.7")))
    result = invoke("exec", "demo", "--", "ray", "status")
    assert result.exit_code == 0, result.output
    remote = fake_ssh.read_text().splitlines()[-1]
    assert remote.endswith("exec ray status")
    assert 'RAY_AUTH_TOKEN="$(sudo cat /etc/ray/cluster-token)"' in remote


# -- errors ------------------------------------------------------------------------------------------------------------


def test_a_refused_key_is_an_auth_error_saying_where_the_key_came_from(invoke, fake_api):
    fake_api.on("GET", "/clusters", Reply(401, b"", "text/plain"))
    result = invoke("list", key="wrong-key")
    assert result.exit_code == ExitCode.AUTH
    assert "refused the function key (401; key from AZRAY_KEY)" in result.stderr


def test_no_key_where_one_is_needed_says_how_to_set_it(invoke, fake_api):
    fake_api.on("GET", "/clusters", Reply(401, b"", "text/plain"))
    result = invoke("list")
    assert result.exit_code == ExitCode.AUTH
    assert "none was sent" in result.stderr
    assert "AZRAY_KEY" in result.stderr


def test_an_unreachable_url_is_one_line_saying_what_to_do(invoke, fake_api):
    fake_api.stop()  # nothing listens on its port any more
    result = invoke("list")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert result.stderr.startswith("error: cannot reach http://127.0.0.1:")
    assert "make run" in result.stderr
    assert "Traceback" not in result.output


def test_storage_unavailable_says_when_to_try_again(invoke, fake_api):
    unavailable = problem(503, "Storage unavailable", "cluster state is unavailable right now")
    fake_api.on("GET", "/clusters", Reply(503, unavailable.body, unavailable.content_type, {"Retry-After": "10"}))
    result = invoke("list")
    assert result.exit_code == ExitCode.SERVER
    assert "try again in 10 s" in result.stderr


def test_an_answer_that_is_not_the_apis_json_is_a_server_error(invoke, fake_api):
    fake_api.on("GET", "/clusters", Reply(200, b"<html>hello</html>", "text/html"))
    result = invoke("list")
    assert result.exit_code == ExitCode.SERVER
    assert "is not the autoscaler's JSON" in result.stderr


def test_a_route_the_server_lacks_asks_whether_the_url_is_the_autoscaler(invoke, fake_api):
    result = invoke("list")  # nothing scripted: GET /api/clusters is a 404 naming no cluster
    assert result.exit_code == ExitCode.UNSUPPORTED
    assert "has no GET /api/clusters (404): is it the autoscaler app" in result.stderr


def test_a_missing_config_file_is_a_usage_error(invoke, tmp_path):
    result = invoke("up", str(tmp_path / "missing.yaml"))
    assert result.exit_code == ExitCode.USAGE
    assert "cannot read" in result.stderr


# -- the key is sent, and never shown ----------------------------------------------------------------------------------

KEY = "k3y-that-must-never-show-0123456789"


def test_the_key_is_sent_as_the_x_functions_key_header(invoke, fake_api):
    fake_api.on("GET", "/clusters", Reply(200, {"clusters": []}))
    invoke("list", key=KEY)
    assert fake_api.seen("GET", "/clusters")[0].headers["x-functions-key"] == KEY


@pytest.mark.parametrize(
    ("arguments", "script"),
    [
        (["list"], [("GET", "/clusters", Reply(200, {"clusters": []}))]),
        (["list"], [("GET", "/clusters", Reply(403, b"", "text/plain"))]),
        (["status", "demo"], [("GET", "/clusters/demo", Reply(200, cluster_view()))]),
        (["status", "demo"], [("GET", "/clusters/demo", Reply(500, b"boom", "text/plain"))]),
        (["status", "demo"], [("GET", "/clusters/demo", Reply(200, {"name": "demo", "nodes": "not a list"}))]),
        (["events", "demo"], [("GET", "/clusters/demo", cluster_not_found("demo"))]),
        (["target"], [("GET", "/health", Reply(200, {"status": "ok", "version": "0.1.0"}))]),
        (["timeline", "demo"], [("GET", "/clusters/demo", Reply(200, cluster_view()))]),
    ],
)
@pytest.mark.parametrize("how", ["environment", "option"])
def test_the_key_never_appears_in_output_or_errors(invoke, fake_api, arguments, script, how):
    for method, path, reply in script:
        fake_api.on(method, path, reply)
    result = invoke("--key", KEY, *arguments) if how == "option" else invoke(*arguments, key=KEY)
    assert KEY not in result.output
    assert KEY not in repr(result.exception)


def test_a_key_pasted_with_a_newline_is_sent_without_it(invoke, fake_api):
    fake_api.on("GET", "/clusters", Reply(200, {"clusters": []}))
    invoke("list", key=KEY + "\n")
    assert fake_api.seen("GET", "/clusters")[0].headers["x-functions-key"] == KEY


def test_a_key_no_header_can_carry_is_a_usage_error_that_does_not_quote_it(invoke, fake_api):
    fake_api.on("GET", "/clusters", Reply(200, {"clusters": []}))
    result = invoke("list", key=f"{KEY}\nsecond-line")
    assert result.exit_code == ExitCode.USAGE
    assert "contains characters an HTTP header cannot carry" in result.stderr
    assert KEY not in result.output
    assert not fake_api.seen()


def test_an_unexpected_failure_is_one_line_without_traceback_or_key(invoke, fake_api):
    fake_api.on("GET", "/clusters/demo", Reply(200, {"name": "demo", "nodes": "not a list"}))
    result = invoke("--key", KEY, "status", "demo")
    assert result.exit_code == ExitCode.FAILED
    assert result.stderr.startswith("error: unexpected failure")
    assert "Traceback" not in result.output
    assert KEY not in result.output


def test_the_target_command_says_a_key_is_set_without_showing_it(invoke, fake_api):
    fake_api.on("GET", "/health", Reply(200, {"status": "ok", "version": "0.1.0"}))
    result = invoke("target", key=KEY)
    assert "key     set (from AZRAY_KEY)" in result.stdout
    assert KEY not in result.output


def test_saved_notes_hold_no_key(invoke, fake_api, config_file, config_home):
    fake_api.on("POST", "/clusters", created())
    invoke("up", str(config_file), "--no-wait", key=KEY)
    for path in (config_home / "azray").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text()
            assert json.loads(path.read_text())["ssh_user"] == "ubuntu"
