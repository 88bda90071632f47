"""The first-boot functions as rendered (boot-functions.sh), run by bash with fake apt, systemctl, fuser and sleep:
apt waits for Ubuntu's own first-boot apt runs and retries, and boot phases reach the head agent with the token from
its root-only file, never on a command line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioning.azure.cloud_init import NodeBootSpec, render_cloud_config

TOKEN = "secret-cluster-token"


def boot_functions_text() -> str:
    spec = NodeBootSpec(
        cluster_name="demo",
        instance_id="worker0001",
        node_type="cpu",
        is_head=False,
        resources={"CPU": 1},
        cluster_token=TOKEN,
        ssh_user="ubuntu",
        head_address="10.100.0.4:6379",
    )
    files = {entry["path"]: entry["content"] for entry in yaml.safe_load(render_cloud_config(spec))["write_files"]}
    return str(files["/opt/ray/boot-functions.sh"])


@dataclass
class BootShell:
    """bash with boot-functions.sh sourced, fake commands first on PATH, and a log of what the fakes were asked."""

    directory: Path
    fake_bin: Path
    calls_log: Path
    environment: dict[str, str] = field(default_factory=dict)

    def fake(self, name: str, body: str) -> None:
        """A command that logs its arguments, then runs `body` (bash); $COUNT is its call number, from 1."""
        counter = self.directory / f"{name}.count"
        script = self.fake_bin / name
        script.write_text(
            "#!/bin/bash\n"
            f'COUNT=$(( $(cat "{counter}" 2>/dev/null || echo 0) + 1 )); echo "$COUNT" > "{counter}"\n'
            f'echo "{name} $*" >> "{self.calls_log}"\n' + body + "\n"
        )
        script.chmod(0o755)

    def calls(self, name: str) -> list[str]:
        if not self.calls_log.exists():
            return []
        return [line for line in self.calls_log.read_text().splitlines() if line.split(" ", 1)[0] == name]

    def run(self, command: str, **environment: str) -> subprocess.CompletedProcess[str]:
        script = self.directory / "boot-functions.sh"
        return subprocess.run(
            ["bash", "-c", f'set -euo pipefail; source "{script}"; {command}'],
            env={
                "PATH": f"{self.fake_bin}{os.pathsep}{os.environ['PATH']}",
                **self.environment,
                **environment,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def shell(tmp_path: Path) -> BootShell:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (tmp_path / "boot-functions.sh").write_text(boot_functions_text())
    token_file = tmp_path / "cluster-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    booting = BootShell(tmp_path, fake_bin, tmp_path / "calls.log", {"TOKEN_FILE": str(token_file)})
    # A quiet machine: no apt timer running, no apt process, no lock held; sleeping takes no time.
    booting.fake("systemctl", "echo inactive; echo inactive")
    booting.fake("pgrep", "exit 1")
    booting.fake("fuser", "exit 1")
    booting.fake("sleep", "exit 0")
    booting.fake("apt-get", "exit 0")
    return booting


# --------------------------------------------------------------------------------------------
# apt
# --------------------------------------------------------------------------------------------


def test_apt_get_passes_a_lock_timeout_to_apt(shell: BootShell) -> None:
    assert shell.run("apt_get install -y -q python3-venv").returncode == 0
    assert shell.calls("apt-get") == [
        "apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 install -y -q python3-venv"
    ]


def test_apt_get_tries_again_after_a_transient_failure(shell: BootShell) -> None:
    shell.fake("apt-get", '[ "$COUNT" -ge 3 ]')  # fails twice, then works
    finished = shell.run("apt_get update -q")
    assert finished.returncode == 0, finished.stdout
    assert len(shell.calls("apt-get")) == 3
    assert "failed (attempt 2 of 5)" in finished.stdout


def test_apt_get_gives_up_after_its_attempts_and_fails_the_boot(shell: BootShell) -> None:
    shell.fake("apt-get", "exit 100")
    finished = shell.run("apt_get update -q; echo not reached")
    assert finished.returncode != 0
    assert "not reached" not in finished.stdout
    assert len(shell.calls("apt-get")) == 5


@pytest.mark.parametrize(
    ("fake_name", "busy_body"),
    [
        pytest.param("fuser", '[ "$COUNT" -ge 4 ] && exit 1; exit 0', id="dpkg-lock-held"),
        pytest.param(
            "systemctl",
            '[ "$COUNT" -ge 4 ] && { echo inactive; echo inactive; exit 3; }; echo activating',
            id="apt-daily-running",
        ),
        pytest.param("pgrep", '[ "$COUNT" -ge 4 ] && exit 1; exit 0', id="unattended-upgrades-running"),
    ],
)
def test_apt_get_waits_until_ubuntus_own_apt_run_is_over(shell: BootShell, fake_name: str, busy_body: str) -> None:
    shell.fake(fake_name, busy_body)
    finished = shell.run("apt_get update -q")
    assert finished.returncode == 0, finished.stdout
    assert len(shell.calls("sleep")) == 3  # busy on the first three looks
    log = shell.calls_log.read_text().splitlines()
    last_look = max(index for index, line in enumerate(log) if line.startswith(fake_name))
    assert log.index(next(line for line in log if line.startswith("apt-get"))) > last_look
    assert "waiting for another apt or dpkg run" in finished.stdout


def test_apt_get_stops_waiting_after_the_lock_timeout_and_lets_apt_wait_itself(shell: BootShell) -> None:
    shell.fake("fuser", "exit 0")  # the lock never frees
    finished = shell.run("apt_get update -q", APT_LOCK_TIMEOUT_S="20", APT_LOCK_POLL_S="5")
    assert finished.returncode == 0
    assert len(shell.calls("sleep")) == 4
    assert shell.calls("apt-get") == ["apt-get -o DPkg::Lock::Timeout=20 -o Acquire::Retries=3 update -q"]


# --------------------------------------------------------------------------------------------
# Boot phases
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    path: str
    authorization: str
    body: dict[str, Any]


@pytest.fixture
def head_agent() -> Iterator[tuple[str, list[Report]]]:
    """A loopback stand-in for the head agent's POST /v1/boot-phase that records what it receives."""
    received: list[Report] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(Report(self.path, self.headers.get("Authorization", ""), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/boot-phase", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def logging_curl(shell: BootShell) -> BootShell:
    """curl wrapped so that its command line is logged before the real curl runs."""
    real_curl = shutil.which("curl")
    if real_curl is None:
        pytest.skip("curl is not installed")
    shell.fake("curl", f'exec "{real_curl}" "$@"')
    return shell


def test_a_boot_phase_reaches_the_head_agent_with_the_token(
    logging_curl: BootShell, head_agent: tuple[str, list[Report]]
) -> None:
    url, received = head_agent
    finished = logging_curl.run(
        'report_boot_phase boot_failed "setup commands failed: exit 1 at \\"line\\" 40"',
        BOOT_PHASE_URL=url,
        INSTANCE_ID="worker0001",
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    (report,) = received
    assert (report.path, report.authorization) == ("/v1/boot-phase", f"Bearer {TOKEN}")
    assert report.body == {
        "instance_id": "worker0001",
        "phase": "boot_failed",
        "detail": "setup commands failed: exit 1 at _line_ 40",
    }


def test_the_token_is_on_no_command_line(logging_curl: BootShell, head_agent: tuple[str, list[Report]]) -> None:
    url, received = head_agent
    logging_curl.run("report_boot_phase ray_started started", BOOT_PHASE_URL=url, INSTANCE_ID="worker0001")
    assert len(received) == 1
    (curl_call,) = logging_curl.calls("curl")
    assert TOKEN not in curl_call
    assert " -K - " in curl_call


def test_an_unreachable_head_agent_does_not_stop_the_boot(logging_curl: BootShell, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    finished = logging_curl.run(
        "report_boot_phase cloud_init_running started; echo boot goes on",
        BOOT_PHASE_URL=f"http://127.0.0.1:{closed_port}/v1/boot-phase",
        BOOT_PHASE_RETRIES="0",
    )
    assert finished.returncode == 0
    assert "boot phase cloud_init_running not reported" in finished.stdout
    assert "boot goes on" in finished.stdout


# --------------------------------------------------------------------------------------------
# bootstrap.sh as a whole, its paths moved into a temporary directory
# --------------------------------------------------------------------------------------------


def run_worker_bootstrap(shell: BootShell, agent_url: str, initialization_commands: list[str]) -> str:
    """Runs the rendered worker bootstrap.sh with Ray "installed" (a fake `ray`) and returns its log."""
    spec = NodeBootSpec(
        cluster_name="demo",
        instance_id="worker0001",
        node_type="cpu",
        is_head=False,
        resources={"CPU": 1},
        cluster_token=TOKEN,
        ssh_user="ubuntu",
        head_address="10.100.0.4:6379",
        initialization_commands=initialization_commands,
    )
    files = {entry["path"]: entry["content"] for entry in yaml.safe_load(render_cloud_config(spec))["write_files"]}
    root = shell.directory / "root"
    moved = {
        "http://10.100.0.4:8270/v1/boot-phase": agent_url,  # only loopback traffic from tests
        "/var/log/ray-bootstrap.log": str(root / "ray-bootstrap.log"),
        "/etc/systemd/system": str(root / "units"),
        "/opt/ray": str(root / "opt"),
    }
    (root / "opt").mkdir(parents=True)
    (root / "units").mkdir()
    for path, rendered in files.items():
        if path.startswith("/opt/ray/") and path.endswith(".sh"):
            content = rendered
            for old, new in moved.items():
                content = content.replace(old, new)
            script = root / "opt" / Path(path).name
            script.write_text(content)
            script.chmod(0o755)
    assert "10.100.0.4" not in (root / "opt" / "bootstrap.sh").read_text()
    shell.fake("ray", "echo 'ray, version 2.60.0'")
    shell.fake("systemctl", 'if [ "$1" = --version ]; then echo "systemd 252 (252.38-1)"; fi')
    shell.run(f'bash "{root / "opt" / "bootstrap.sh"}"')
    return (root / "ray-bootstrap.log").read_text()


def test_a_worker_boot_reports_cloud_init_running_then_ray_started(
    logging_curl: BootShell, head_agent: tuple[str, list[Report]]
) -> None:
    url, received = head_agent
    log = run_worker_bootstrap(logging_curl, url, ["echo initialized"])
    assert [report.body["phase"] for report in received] == ["cloud_init_running", "ray_started"], log
    assert "systemctl enable --now ray-node.service" in logging_curl.calls("systemctl")


@pytest.mark.parametrize(
    ("failing_command", "expected_detail"),
    [
        pytest.param(
            "sh -c 'exit 7'", "running the initialization commands failed: exit 7 at bootstrap.sh line ", id="command"
        ),
        pytest.param("exit 7", "running the initialization commands failed: exit 7. See", id="exit"),
        pytest.param("echo $UNSET_VARIABLE", "running the initialization commands failed: exit 1", id="unset-variable"),
    ],
)
def test_a_failing_initialization_command_is_reported_as_boot_failed_naming_the_step(
    logging_curl: BootShell, head_agent: tuple[str, list[Report]], failing_command: str, expected_detail: str
) -> None:
    url, received = head_agent
    log = run_worker_bootstrap(logging_curl, url, ["echo initializing", failing_command])
    assert [report.body["phase"] for report in received] == ["cloud_init_running", "boot_failed"], log
    assert received[-1].body["detail"].startswith(expected_detail)
    assert not [call for call in logging_curl.calls("systemctl") if "enable" in call], "Ray must not start"
