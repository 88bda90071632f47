"""The head agent and the preempt watch as cloud-init ships them, run by a real Python 3.10 (the python3 of Ubuntu
22.04 images).

Exactly the files `cloud_init.agent_source_files()` returns are copied into an empty directory, as cloud-init writes
them to /opt/ray/control, and the agent is started from there with a 3.10 interpreter that has no Ray and an absent
GCS. It must still start, listen, refuse requests without the cluster token and take boot-phase reports. The preempt
watch is shipped alone, as a worker gets it, and run against a loopback Scheduled Events server and a fake head agent:
it must report the notice with the token and acknowledge the event once the node has left Ray, not before.

The interpreter is $PYTHON310 when set, else `python3.10` on PATH, else a pyenv 3.10; without one the test is
skipped with the reason.
"""

from __future__ import annotations

import glob
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from provisioning.azure.cloud_init import PREEMPT_WATCH_MODULE, PROJECT_ROOT, agent_source_files, source_files
from provisioning.local_events import ScheduledEventsServer, write_notice

TOKEN = "py310-test-token"
LISTEN_TIMEOUT_S = 30.0


def python310_candidates() -> list[str]:
    candidates = [os.environ.get("PYTHON310", ""), shutil.which("python3.10") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.10.*/bin/python3.10"), reverse=True)
    candidates += sorted(glob.glob("/root/.pyenv/versions/3.10.*/bin/python3.10"), reverse=True)
    return [candidate for candidate in candidates if candidate]


def find_python310() -> str | None:
    for candidate in python310_candidates():
        try:
            version = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if version == "3.10":
            return candidate
    return None


@pytest.fixture(scope="module")
def python310() -> str:
    interpreter = find_python310()
    if interpreter is None:
        reason = "no Python 3.10 interpreter (set PYTHON310, or put python3.10 on PATH or under pyenv)"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    return interpreter


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ship_agent(control_dir: Path) -> list[str]:
    """Write the agent's files where cloud-init would, and nothing else of the repository."""
    shipped = agent_source_files()
    for relative_path in shipped:
        target = control_dir / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / relative_path, target)
    return shipped


@pytest.fixture(scope="module")
def agent_url(python310: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    control_dir = tmp_path_factory.mktemp("opt-ray-control")
    ship_agent(control_dir)
    token_file = tmp_path_factory.mktemp("etc-ray") / "cluster-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    # Only the shipped copy may be importable: no repository on the path, no user site-packages.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(control_dir),
        "PYTHONNOUSERSITE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    command = [python310, "-m", "provisioning.head.agent", "--gcs-address", f"127.0.0.1:{free_loopback_port()}"]
    command += ["--host", "127.0.0.1", "--port", "0", "--cluster-name", "py310", "--token-file", str(token_file)]
    process = subprocess.Popen(
        command, cwd=control_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    output: list[str] = []
    listening: queue.Queue[str] = queue.Queue()
    stdout = process.stdout

    def read_output() -> None:
        for line in stdout:
            output.append(line)
            if line.startswith("head agent listening on "):
                listening.put(line.split(" on ", 1)[1].strip())

    threading.Thread(target=read_output, daemon=True).start()
    try:
        url = listening.get(timeout=LISTEN_TIMEOUT_S)
    except queue.Empty:
        process.kill()
        process.wait()
        pytest.fail(f"the agent did not listen under {python310} (exit code {process.returncode}):\n{''.join(output)}")
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_shipped_agent_answers_healthz_under_python310(agent_url: str) -> None:
    response = requests.get(f"{agent_url}/v1/healthz", timeout=5)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    ("authorization", "expected_status"),
    [pytest.param(None, 401, id="missing"), pytest.param("Bearer not-the-token", 403, id="wrong")],
)
def test_the_shipped_agent_under_python310_refuses_state_without_the_cluster_token(
    agent_url: str, authorization: str | None, expected_status: int
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.get(f"{agent_url}/v1/state", headers=headers, timeout=5)
    assert response.status_code == expected_status
    assert response.json()["field"] == "Authorization"


def test_the_shipped_agent_under_python310_without_ray_answers_state_503_naming_what_is_missing(
    agent_url: str,
) -> None:
    response = requests.get(f"{agent_url}/v1/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert response.status_code == 503
    assert "not connected to the GCS" in response.json()["detail"]


def test_the_shipped_agent_under_python310_records_a_boot_phase(agent_url: str) -> None:
    response = requests.post(
        f"{agent_url}/v1/boot-phase",
        json={"instance_id": "worker-1", "phase": "cloud_init_running", "detail": "bootstrap started"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["phase"] == "cloud_init_running"


# --------------------------------------------------------------------------------------------
# The preempt watch, as cloud-init ships it to every VM
# --------------------------------------------------------------------------------------------


@dataclass
class FakeHeadAgent:
    """POST /v1/preempt as the head agent answers it; `left_ray` says when the node has drained."""

    url: str = ""
    left_ray: threading.Event = field(default_factory=threading.Event)
    reports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def fake_head_agent() -> Iterator[FakeHeadAgent]:
    agent = FakeHeadAgent()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            agent.reports.append((self.headers.get("Authorization", ""), body))
            answer = json.dumps({"accepted": True, "left_ray": agent.left_ray.is_set()}).encode()
            self.send_response(200 if self.path == "/v1/preempt" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    agent.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield agent
    finally:
        server.shutdown()
        server.server_close()


def test_the_shipped_preempt_watch_drains_then_acknowledges_under_python310(
    python310: str, tmp_path: Path, fake_head_agent: FakeHeadAgent
) -> None:
    control_dir = tmp_path / "opt-ray-control"
    for relative_path in source_files(PREEMPT_WATCH_MODULE):  # what a worker gets: the watch alone
        (control_dir / relative_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / relative_path, control_dir / relative_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "cluster-token").write_text(TOKEN + "\n")
    instances = tmp_path / "instances"
    instances.mkdir()
    # Azure's Scheduled Events on loopback (the local provider's emulator), with a notice 30 s ahead.
    scheduled_events = ScheduledEventsServer(instances, "worker0001")
    scheduled_events.start()
    notice = write_notice(instances, "worker0001", notice_s=30.0)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(control_dir),
        "PYTHONNOUSERSITE": "1",
        "CREDENTIALS_DIRECTORY": str(credentials),  # as systemd's LoadCredential= sets it
    }
    command = [python310, "-m", PREEMPT_WATCH_MODULE, "--scheduled-events-url", scheduled_events.url]
    command += ["--vm-name", "worker0001", "--instance-id", "worker0001", "--agent-url", fake_head_agent.url]
    command += ["--poll-interval-s", "0.1"]
    process = subprocess.Popen(
        command, cwd=control_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while not fake_head_agent.reports and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert fake_head_agent.reports, "the watch never reported the notice to the head agent"
        authorization, body = fake_head_agent.reports[0]
        assert authorization == f"Bearer {TOKEN}"
        assert body == {
            "instance_id": "worker0001",
            "event_id": notice.event_id,
            "not_before": notice.not_before.isoformat(),
        }
        time.sleep(0.5)
        assert not scheduled_events.acknowledged.is_set(), "acknowledged while the node was still in Ray"
        fake_head_agent.left_ray.set()
        assert scheduled_events.acknowledged.wait(5.0), "the watch did not acknowledge once the node left Ray"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
        scheduled_events.stop()
    assert process.returncode == 0, output
    assert "acknowledged preemption" in output
