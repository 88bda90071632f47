"""`make run`: Azurite on its default ports + the function app on http://127.0.0.1:7071/api, until Ctrl-C.

Local state (Azurite's data, the local provider's clusters) lives under .local-data/, so clusters survive a restart.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from local.stack import REPO_ROOT, LocalStack

AZURITE_DEFAULT_PORTS = (10000, 10001, 10002)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # The Azure SDKs log every HTTP request at INFO: too loud for a console.
    logging.getLogger("azure").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = LocalStack(data_dir=Path(REPO_ROOT / ".local-data"), port=7071, azurite_ports=AZURITE_DEFAULT_PORTS)
    with stack:
        assert stack.host is not None
        print(stack.host.banner(), flush=True)
        print(f"API: {stack.api_url}   (Ctrl-C stops the host and Azurite; Ray clusters keep running until deleted)")
        stop.wait()
    print("stopped")


if __name__ == "__main__":
    main()
