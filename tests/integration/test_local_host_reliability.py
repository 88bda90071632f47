"""`make run` (python -m local.run) after a crash: the Azurite it started never outlives it, and is never confused
with another process on its ports. Each test runs the real stack in a subprocess on free loopback ports with its
own data folder, and kills it the way a crash or Ctrl-C would."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from local.azurite import PROCESS_RECORD_NAME, is_azurite_on, start_azurite
from tests.support.azurite import free_port

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0  # importing the app and starting Azurite take a few seconds; a loaded machine more


class LocalRun:
    """One `python -m local.run` on the given ports and data folder; stdout lines are read on a thread."""

    def __init__(self, data_dir: Path, port: int, azurite_ports: tuple[int, int, int], log: Path) -> None:
        self.port = port
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "local.run", "--data-dir", str(data_dir), "--port", str(port)),
                *("--azurite-ports", ",".join(str(azurite_port) for azurite_port in azurite_ports)),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,  # the host logs to stderr: a file never fills up and blocks it, as a pipe would
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no API line within {START_TIMEOUT_S} s; see {self._log.name}") from None
            if line.startswith("API: "):
                return

    def stderr_lines(self) -> list[str]:
        self._log.flush()
        return Path(self._log.name).read_text().strip().splitlines()

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[[], LocalRun]]:
    """Starts `python -m local.run` on one set of free ports and one data folder, as often as a test asks."""
    host_port, azurite_ports = free_port(), (free_port(), free_port(), free_port())
    runs: list[LocalRun] = []

    def start() -> LocalRun:
        run = LocalRun(tmp_path / "data", host_port, azurite_ports, tmp_path / f"run-{len(runs) + 1}.log")
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.end()
    for pid in azurites_on(tmp_path / "data" / "azurite"):  # never leave one behind, even when a test fails
        os.kill(pid, signal.SIGKILL)


def azurites_on(azurite_dir: Path) -> list[int]:
    """Pids of the running Azurite processes whose data folder is `azurite_dir`."""
    listing = subprocess.run(["ps", "-A", "-o", "pid="], capture_output=True, text=True, check=True).stdout
    return [int(pid) for pid in listing.split() if is_azurite_on(int(pid), azurite_dir.resolve())]


def recorded_azurite_pid(data_dir: Path) -> int:
    return int(json.loads((data_dir / "azurite" / PROCESS_RECORD_NAME).read_text())["pid"])


def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


def test_after_the_host_is_killed_the_next_run_starts_and_its_ctrl_c_leaves_no_azurite(start_run, tmp_path):
    azurite_dir = tmp_path / "data" / "azurite"
    crashed = start_run()
    crashed.wait_until_serving()
    first_azurite = recorded_azurite_pid(tmp_path / "data")
    crashed.process.send_signal(signal.SIGKILL)
    crashed.process.wait(timeout=10)

    restarted = start_run()
    restarted.wait_until_serving()
    assert azurites_on(azurite_dir) == [recorded_azurite_pid(tmp_path / "data")]
    assert recorded_azurite_pid(tmp_path / "data") != first_azurite
    response = requests.get(f"http://127.0.0.1:{restarted.port}/api/clusters", timeout=10)  # reads Azurite's tables
    assert response.status_code == 200

    restarted.process.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
    assert restarted.process.wait(timeout=30) == 0
    assert azurites_on(azurite_dir) == []
    assert not (azurite_dir / PROCESS_RECORD_NAME).exists()


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux only")
def test_azurite_exits_when_its_host_is_killed(start_run, tmp_path):
    run = start_run()
    run.wait_until_serving()
    azurite = recorded_azurite_pid(tmp_path / "data")
    run.process.send_signal(signal.SIGKILL)
    run.process.wait(timeout=10)
    wait_until(lambda: not is_azurite_on(azurite, (tmp_path / "data" / "azurite").resolve()), timeout_s=15)


# Starts Azurite and exits without stopping it. Started from a thread, Azurite gets no parent-death signal, so it
# stays behind as an orphan: what a killed host left before the fix, and still leaves where there is no such signal.
ORPHAN_AZURITE_SCRIPT = """
import sys, threading
from pathlib import Path
from local.azurite import start_azurite
folder, ports = Path(sys.argv[1]), tuple(int(port) for port in sys.argv[2].split(","))
started = []
starter = threading.Thread(target=lambda: started.append(start_azurite(folder, ports=ports)))
starter.start()
starter.join()
print(started[0].process.pid)
"""


def test_azurite_orphaned_on_the_data_folder_is_stopped_before_a_new_one_starts(tmp_path):
    azurite_dir, ports = tmp_path / "azurite", (free_port(), free_port(), free_port())
    ports_text = ",".join(str(port) for port in ports)
    orphan_maker = subprocess.run(
        [sys.executable, "-c", ORPHAN_AZURITE_SCRIPT, str(azurite_dir), ports_text],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=True,
    )
    orphan = int(orphan_maker.stdout)
    try:
        assert azurites_on(azurite_dir) == [orphan]
        replacement = start_azurite(azurite_dir, ports=ports)
        try:
            assert replacement.process is not None
            assert azurites_on(azurite_dir) == [replacement.process.pid]  # the orphan stopped, not taken for ours
        finally:
            replacement.stop()
        assert azurites_on(azurite_dir) == []
    finally:
        for pid in azurites_on(azurite_dir):
            os.kill(pid, signal.SIGKILL)


def test_a_second_run_on_a_data_folder_in_use_fails_naming_the_running_host_which_keeps_serving(start_run, tmp_path):
    first = start_run()
    first.wait_until_serving()
    second = start_run()
    assert second.process.wait(timeout=START_TIMEOUT_S) == 2
    error = second.stderr_lines()[-1]
    assert error.startswith("error: ")
    assert f"is in use by Azurite (pid {recorded_azurite_pid(tmp_path / 'data')})" in error
    assert f"of a local host still running (pid {first.process.pid})" in error
    assert requests.get(f"http://127.0.0.1:{first.port}/api/clusters", timeout=10).status_code == 200


def test_a_port_held_by_another_process_fails_the_start_with_one_line_naming_it(tmp_path):
    queue_port = free_port()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", queue_port))
        holder.listen()
        completed = subprocess.run(
            [
                *(sys.executable, "-m", "local.run", "--data-dir", str(tmp_path / "data"), "--port", str(free_port())),
                *("--azurite-ports", f"{free_port()},{queue_port},{free_port()}"),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,  # the exit code is what the test checks
        )
    assert completed.returncode == 2
    (message,) = completed.stderr.strip().splitlines()
    assert message.startswith(f"error: port {queue_port} (Azurite queue) on 127.0.0.1 is held by a process")
    assert f"lsof -nP -iTCP:{queue_port}" in message
    assert azurites_on(tmp_path / "data" / "azurite") == []


def test_azurite_runs_without_telemetry_and_keeps_its_state_on_a_second_sigterm(tmp_path: Path) -> None:
    # Azurite's telemetry would call a Microsoft endpoint (nothing may leave loopback); Node's default action for a
    # SIGTERM without a listener would end it before it saved what the API had acknowledged.
    azurite = start_azurite(tmp_path / "azurite")
    try:
        assert azurite.process is not None
        command_line = Path(f"/proc/{azurite.process.pid}/cmdline").read_bytes().split(b"\0")
        environment = Path(f"/proc/{azurite.process.pid}/environ").read_bytes().split(b"\0")
        assert b"--disableTelemetry" in command_line
        assert any(
            entry.startswith(b"NODE_OPTIONS=") and b"azurite_keep_state_on_sigterm.js" in entry for entry in environment
        )
    finally:
        azurite.stop()
