"""Start and stop a real Azurite (npm package, pinned in package.json) on 127.0.0.1 with its own data folder.

Used by `make run`, `make demo` and the tests: Table and Queue storage are never mocked."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"
# The well-known development account of Azurite (public, documented by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


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

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {process.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"Azurite did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def start_azurite(data_dir: Path | None = None, *, ports: tuple[int, int, int] | None = None) -> Azurite:
    """Start Azurite on loopback. Raises with a hint when `npm install` has not been run."""
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"{AZURITE_BIN} is missing: run `make install` (it runs `npm install`)")
    owns = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="azurite-")) if data_dir is None else data_dir
    folder.mkdir(parents=True, exist_ok=True)
    blob_port, queue_port, table_port = ports or (free_port(), free_port(), free_port())
    command = [
        str(AZURITE_BIN),
        "--silent",
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
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    azurite = Azurite(blob_port, queue_port, table_port, folder, process, owns)
    try:
        for port in (blob_port, queue_port, table_port):
            _wait_for_port(port, process, timeout_s=30)
    except Exception:
        azurite.stop()
        raise
    return azurite
