"""Start and stop a real Azurite (npm package, pinned in package.json) on 127.0.0.1 with its own data folder.

Used by `make run`, `make demo` and the tests: Table and Queue storage are never mocked.

An Azurite must not outlive the process that started it, nor be mistaken for another one:
- on Linux it gets SIGTERM when its starter dies, even by `kill -9` (PR_SET_PDEATHSIG);
- its pid, ports and data folder are written to `<data folder>/azurite-process.json`; the next start on the same
  folder stops an Azurite still running from that record (one left by a host that could not stop it) first;
- a port held by any other process is an error naming the port; it is never taken for our Azurite.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("local.azurite")

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"
# The well-known development account of Azurite (public, documented by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
PROCESS_RECORD_NAME = "azurite-process.json"
STDERR_LOG_NAME = "azurite-stderr.log"
KEEP_STATE_ON_SIGTERM_JS = Path(__file__).resolve().with_name("azurite_keep_state_on_sigterm.js")
# On SIGTERM Azurite closes its servers and flushes its data files, but it waits for the keep-alive connections
# of clients still alive (the app's storage clients in this very process), for 30 s and more: after
# a few seconds it is killed, as before.
GRACEFUL_STOP_TIMEOUT_S = 3.0
PARENT_DEATH_LAUNCHER = Path(__file__).with_name("exec_with_parent_death_signal.py")


class AzuriteStartError(RuntimeError):
    """Azurite cannot start here (missing install, a port held by another process, it exited or did not listen)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    owns_data_dir: bool = False

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT_NAME};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT_NAME};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT_NAME};"
        )

    @property
    def process_record(self) -> Path:
        return self.data_dir / PROCESS_RECORD_NAME

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=GRACEFUL_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if _recorded_pid(self.process_record) == self.process.pid:
                self.process_record.unlink(missing_ok=True)
        self.process = None
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AzuriteStartError(f"Azurite exited with code {process.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AzuriteStartError(f"Azurite did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def start_azurite(data_dir: Path | None = None, *, ports: tuple[int, int, int] | None = None) -> Azurite:
    """Start Azurite on loopback; first stop one left running on the same data folder by an earlier run.

    Raises AzuriteStartError naming the cause: `npm install` not run, a port held by another process, or Azurite
    exiting or not listening in time.
    """
    if not AZURITE_BIN.exists():
        raise AzuriteStartError(f"{AZURITE_BIN} is missing: run `make install` (it runs `npm install`)")
    owns = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="azurite-")) if data_dir is None else data_dir
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()  # the record and the command line name one spelling of the folder
    stop_leftover_azurite(folder)
    blob_port, queue_port, table_port = ports or (free_port(), free_port(), free_port())
    if ports is not None:  # free ports were just found free; chosen ones may be taken
        for service, port in (("blob", blob_port), ("queue", queue_port), ("table", table_port)):
            _require_free_port(port, service)
    command = [
        str(AZURITE_BIN),
        "--silent",
        # Azurite sends usage telemetry to a Microsoft endpoint unless told not to: nothing leaves loopback here.
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--disableProductStyleUrl",
        "--location",
        str(folder),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(blob_port),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(queue_port),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(table_port),
    ]
    # Its own session: Ctrl-C in the terminal reaches the host only, which drains its queues before stopping
    # Azurite. Its errors go to a file, not a pipe: nobody would read a pipe, and a full one blocks Azurite.
    with (folder / STDERR_LOG_NAME).open("wb") as stderr_log:
        process = subprocess.Popen(
            _tied_to_this_process(command),
            stdout=subprocess.DEVNULL,
            stderr=stderr_log,
            start_new_session=True,
            env=_azurite_environment(),
        )
    azurite = Azurite(blob_port, queue_port, table_port, folder, process, owns)
    try:
        _write_process_record(azurite)
        for port in (blob_port, queue_port, table_port):
            _wait_for_port(port, process, timeout_s=30)
        if process.poll() is not None:  # something else answered on the ports, and ours could not bind them
            raise AzuriteStartError(f"Azurite exited with code {process.returncode} after another process answered")
    except AzuriteStartError as error:
        explained = AzuriteStartError(f"{error}; {_last_line(folder / STDERR_LOG_NAME)}")  # before stop() cleans up
        azurite.stop()
        raise explained from None
    except BaseException:
        azurite.stop()
        raise
    return azurite


def _azurite_environment() -> dict[str, str]:
    """This process's environment, with a preload that keeps Azurite's state on a second SIGTERM (see the file)."""
    environment = dict(os.environ)
    preload = f"--require={KEEP_STATE_ON_SIGTERM_JS}"
    environment["NODE_OPTIONS"] = f"{environment.get('NODE_OPTIONS', '')} {preload}".strip()
    return environment


def stop_leftover_azurite(data_dir: Path) -> int | None:
    """Stop the Azurite recorded in `data_dir` if it still runs on that folder, orphaned; its pid, else None.

    A recorded pid is only signalled when its command line is Azurite's on this data folder, so a pid reused by
    another program since is left alone. An Azurite whose starter still runs (its parent is the recorded starter)
    is not a leftover but in use: that is an error, as two Azurites cannot share a data folder.
    """
    record_path = data_dir / PROCESS_RECORD_NAME
    record = _read_process_record(record_path)
    if record is None or not is_azurite_on(record.pid, data_dir):
        record_path.unlink(missing_ok=True)
        return None
    if _parent_pid(record.pid) == record.started_by_pid:
        raise AzuriteStartError(
            f"{data_dir} is in use by Azurite (pid {record.pid}) of a local host still running (pid "
            f"{record.started_by_pid}); stop that one first (Ctrl-C in its terminal, or `kill {record.started_by_pid}`)"
        )
    logger.warning("stopping Azurite (pid %d) left running on %s by an earlier run", record.pid, data_dir)
    for stop_signal in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            os.kill(record.pid, stop_signal)
        deadline = time.monotonic() + GRACEFUL_STOP_TIMEOUT_S
        while is_azurite_on(record.pid, data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not is_azurite_on(record.pid, data_dir):
            record_path.unlink(missing_ok=True)
            return record.pid
    raise AzuriteStartError(f"Azurite (pid {record.pid}) left running on {data_dir} did not stop on SIGKILL")


def is_azurite_on(pid: int, data_dir: Path) -> bool:
    """Whether process `pid` runs (not a zombie) an Azurite whose data folder is `data_dir`."""
    command_line = _command_line(pid)
    if command_line is None:
        return False
    program, _, _ = command_line.partition(" --")  # `node .../node_modules/.bin/azurite`, before the options
    return program.endswith("azurite") and f" --location {data_dir} " in f"{command_line} "


def _command_line(pid: int) -> str | None:
    """The process's command line, arguments joined by spaces; None when no such process (or a zombie) exists."""
    proc_entry = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            raw = proc_entry.read_bytes()
        except OSError:
            return None
        return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace") or None  # empty for a zombie
    completed = subprocess.run(  # macOS and other systems without /proc
        ["ps", "-p", str(pid), "-o", "stat=,command="], capture_output=True, text=True, check=False
    )
    state, _, command_line = completed.stdout.strip().partition(" ")
    if completed.returncode != 0 or not state or state.startswith("Z"):
        return None
    return command_line.strip() or None


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return f"Azurite said: {lines[-1].strip()}" if lines else "Azurite wrote no error"


def _require_free_port(port: int, service: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Node binds with SO_REUSEADDR too: a port whose last connections linger in TIME_WAIT is free for it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise AzuriteStartError(
                f"port {port} (Azurite {service}) on 127.0.0.1 is held by a process this run did not start "
                f"({error.strerror}); find it with `lsof -nP -iTCP:{port} -sTCP:LISTEN` and stop it, then retry"
            ) from None


def _write_process_record(azurite: Azurite) -> None:
    assert azurite.process is not None
    record = {
        "pid": azurite.process.pid,
        "started_by_pid": os.getpid(),
        "data_dir": str(azurite.data_dir),
        "ports": {"blob": azurite.blob_port, "queue": azurite.queue_port, "table": azurite.table_port},
    }
    temporary = azurite.process_record.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(azurite.process_record)  # a reader never sees half a record


@dataclass(frozen=True)
class _ProcessRecord:
    pid: int
    started_by_pid: int


def _read_process_record(record: Path) -> _ProcessRecord | None:
    try:
        fields = json.loads(record.read_text())
        pid, started_by_pid = fields["pid"], fields["started_by_pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no record, or one cut short by a crash: nothing to stop
    if not all(isinstance(value, int) and value > 0 for value in (pid, started_by_pid)):
        return None
    return _ProcessRecord(pid, started_by_pid)


def _recorded_pid(record: Path) -> int | None:
    fields = _read_process_record(record)
    return None if fields is None else fields.pid


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        stat = ""
    if stat:
        # `pid (command) state ppid ...`: the command may hold spaces and parentheses, so split after the last ")".
        return int(stat.rsplit(")", 1)[1].split()[1])
    completed = subprocess.run(["ps", "-p", str(pid), "-o", "ppid="], capture_output=True, text=True, check=False)
    text = completed.stdout.strip()
    return int(text) if completed.returncode == 0 and text.isdigit() else None


def _tied_to_this_process(command: list[str]) -> list[str]:
    """`command`, run so that Linux sends it SIGTERM when this process dies; as is where that is unavailable.

    The kernel sends the signal when the *thread* that started the child ends, so it is only asked for from the
    main thread, which lives as long as the process.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return command
    return [sys.executable, "-I", str(PARENT_DEATH_LAUNCHER), str(os.getpid()), *command]
