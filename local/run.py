"""`make run`: Azurite on its default ports + the function app on http://127.0.0.1:7071/api, until Ctrl-C.

Local state (Azurite's data, the local provider's clusters) lives under .local-data/, so clusters survive a restart.
An Azurite left running on that folder by a host that was killed is stopped before a new one starts (see
local/azurite.py); a port held by anything else is an error naming it.

    python -m local.run [--data-dir .local-data] [--port 7071] [--azurite-ports 10000,10001,10002]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local.azurite import AzuriteStartError
from local.stack import REPO_ROOT, LocalStack

AZURITE_DEFAULT_PORTS = (10000, 10001, 10002)
DEFAULT_DATA_DIR = REPO_ROOT / ".local-data"


def parse_azurite_ports(text: str) -> tuple[int, int, int]:
    try:
        blob_port, queue_port, table_port = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BLOB,QUEUE,TABLE ports, got {text!r}") from None
    return blob_port, queue_port, table_port


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.run", description="Azurite + the function app on loopback, until Ctrl-C."
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="local state (default .local-data)")
    parser.add_argument("--port", type=int, default=7071, help="the function app's HTTP port")
    parser.add_argument(
        "--azurite-ports",
        type=parse_azurite_ports,
        default=AZURITE_DEFAULT_PORTS,
        metavar="BLOB,QUEUE,TABLE",
        help="Azurite's ports (default 10000,10001,10002, what UseDevelopmentStorage=true expects)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # The Azure SDKs log every HTTP request at INFO: too loud for a console.
    logging.getLogger("azure").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = LocalStack(data_dir=arguments.data_dir, port=arguments.port, azurite_ports=arguments.azurite_ports)
    try:
        stack.start()
    except (AzuriteStartError, OSError) as error:  # a port in use, Azurite not installed: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        assert stack.host is not None
        print(stack.host.banner(), flush=True)
        print(
            f"API: {stack.api_url}   (Ctrl-C stops the host and Azurite; Ray clusters keep running until deleted)",
            flush=True,
        )
        while not stop.wait(timeout=0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        stack.stop()
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
