"""The control plane as `make run` runs it (`python -m local.run`: Azurite + the local host), in a subprocess that a
test can `kill -9` and start again on the same data folder, ports and app settings.

`HostProcess` drives it from the test; run as a module (`python -m tests.e2e.host_process ARGS`), this file is the
subprocess: `local.run.main(ARGS)` with two test-only additions read from the environment:
- E2E_HOST_SETTINGS (JSON object): app settings over local.settings.json(.example), as LocalStack's `settings`.
  The test passes a fixed CLUSTER_TOKEN_KEY, so a restarted host derives the same cluster tokens (`make run`
  reads it from local.settings.json, which the tests do not touch).
- E2E_HOST_CRASH_AT ("<step>:<n>"): the host kills itself with SIGKILL the n-th time the local provider reaches
  `step` ("record-written" or "launcher-started" in a launch, "terminate-started"; see `_checkpoint` in
  provisioning/local.py), i.e. a kill -9 at that exact point.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_ENV = "E2E_HOST_SETTINGS"
CRASH_AT_ENV = "E2E_HOST_CRASH_AT"
START_TIMEOUT_S = 90.0  # imports, Azurite start, the app's first storage calls; longer on a loaded 2-core machine
STOP_TIMEOUT_S = 30.0
# After a kill -9 of the host, Azurite saves its tables at once on its parent-death SIGTERM but may linger for
# seconds (open connections); the next start stops a lingering one, so only a short wait is worth it.
AZURITE_EXIT_TIMEOUT_S = 2.0
HTTP_TIMEOUT_S = 10.0


class HostProcess:
    """One data folder served by successive `python -m local.run` processes (one at a time) on fixed ports."""

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *,
        port: int,
        azurite_ports: tuple[int, int, int],
        settings: Mapping[str, str],
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.port = port
        self.azurite_ports = azurite_ports
        self.settings = dict(settings)
        self.process: subprocess.Popen[bytes] | None = None
        self.generation = 0  # how many processes were started
        self.crashes = 0
        self.crash_at = ""  # the crash point of the running process, if any

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def provider_dir(self) -> Path:
        return self.data_dir / "provider"

    @property
    def azurite_record(self) -> Path:
        return self.data_dir / "azurite" / "azurite-process.json"

    def api(self, method: str, path: str, timeout_s: float = HTTP_TIMEOUT_S, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.api_url}{path}", timeout=timeout_s, **kwargs)

    def start(self, *, crash_at: str = "") -> None:
        """Start a host on the data folder and wait until its API answers (GET /api/clusters reads storage)."""
        assert self.process is None or self.process.poll() is not None, "a host is already running"
        self.generation += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, SETTINGS_ENV: json.dumps(self.settings)}
        environment.pop(CRASH_AT_ENV, None)
        if crash_at:
            environment[CRASH_AT_ENV] = crash_at
        self.crash_at = crash_at
        command = [
            *(sys.executable, "-m", "tests.e2e.host_process", "--data-dir", str(self.data_dir)),
            *("--port", str(self.port), "--azurite-ports", ",".join(str(port) for port in self.azurite_ports)),
        ]
        with (self.log_dir / f"host-{self.generation}.log").open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            exit_code = self.process.poll()
            if exit_code is not None:
                raise AssertionError(f"the host exited with code {exit_code} while starting:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if self.api("GET", "/clusters", timeout_s=5.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the host did not serve within {START_TIMEOUT_S:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def kill9(self) -> None:
        """SIGKILL the host (not Ray, not Azurite: the kernel's parent-death signal stops Azurite)."""
        assert self.process is not None
        azurite_pid = self.azurite_pid()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
        self.crashes += 1
        self._wait_for_exit(azurite_pid, AZURITE_EXIT_TIMEOUT_S)

    def wait_for_crash(self, timeout_s: float) -> bool:
        """For a host started with crash_at: whether it died by SIGKILL (at its crash point) within `timeout_s`.
        Azurite is then waited for too (the parent-death signal stops it)."""
        assert self.process is not None
        azurite_pid = self.azurite_pid()
        try:
            exit_code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        assert exit_code == -signal.SIGKILL, f"the host exited with {exit_code}, not by SIGKILL:\n{self.log_tail()}"
        self.crashes += 1
        self.crash_at = ""
        self._wait_for_exit(azurite_pid, AZURITE_EXIT_TIMEOUT_S)
        return True

    def restart_if_crashed(self) -> bool:
        """Start a new host (without crash point) if the running one reached its crash point; whether it did."""
        if self.process is None or not self.crash_at or self.process.poll() is None:
            return False
        crashed_at = self.crash_at
        assert self.wait_for_crash(0.0)
        print(f"host {self.generation} died at its crash point {crashed_at}: restarting it", flush=True)
        self.start()
        return True

    def stop(self) -> None:
        """Ctrl-C (SIGINT, as `make run` gets it): the host stops Azurite; SIGKILL if it hangs. Never raises."""
        if self.process is None or self.process.poll() is not None:
            return
        azurite_pid = self.azurite_pid()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
        self._wait_for_exit(azurite_pid, AZURITE_EXIT_TIMEOUT_S)

    def azurite_pid(self) -> int | None:
        """The running Azurite's pid, from the record local/azurite.py writes; None if there is none."""
        try:
            pid = int(json.loads(self.azurite_record.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pid if is_alive(pid) else None

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return (self.log_dir / f"host-{self.generation}.log").read_text(errors="replace")[-characters:]
        except OSError:
            return "(no host log)"

    @staticmethod
    def _wait_for_exit(pid: int | None, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while pid is not None and is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def is_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def azurites_on(azurite_dir: Path) -> list[int]:
    """Live Azurite processes whose data folder is `azurite_dir` (whatever started them)."""
    from local.azurite import is_azurite_on

    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and is_azurite_on(int(entry.name), azurite_dir.resolve())
    ]


# --------------------------------------------------------------------------------------------
# The subprocess
# --------------------------------------------------------------------------------------------


def _install_crash_point(spec: str) -> None:
    import provisioning.local

    step, _, nth_text = spec.partition(":")
    nth = int(nth_text or "1")
    reached = 0
    lock = threading.Lock()
    original = provisioning.local._checkpoint

    def checkpoint(at_step: str) -> None:
        nonlocal reached
        original(at_step)
        if at_step != step:
            return
        with lock:
            reached += 1
            if reached == nth:
                print(f"E2E: crash point {step} #{nth} reached: SIGKILL", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    provisioning.local._checkpoint = checkpoint  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    import local.run
    from local.stack import LocalStack

    settings = json.loads(os.environ.pop(SETTINGS_ENV, "{}"))  # it holds the token key: no child inherits it
    crash_at = os.environ.pop(CRASH_AT_ENV, "")
    if crash_at:
        _install_crash_point(crash_at)
    # local.run.main as `make run` runs it, with these settings over local.settings.json's.
    local.run.LocalStack = functools.partial(LocalStack, settings=settings)  # type: ignore[attr-defined,assignment]
    return local.run.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
