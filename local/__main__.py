"""`python -m local`: run the function app locally without Azure Functions Core Tools.

    python -m local [--app function_app:app] [--host 127.0.0.1] [--port 7071]
                    [--settings local.settings.json] [--host-json host.json]

The `Values` of local.settings.json (or, when it is missing, local.settings.json.example) are copied into the
environment before the app is imported; variables already set win, as with `func start`.
Ctrl-C or SIGTERM stops the host and everything it started.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from azure.core.exceptions import AzureError
from azure.functions.decorators.function_app import FunctionRegister

from local.app_settings import MissingAppSettingError
from local.config import LocalSettingsError, apply_settings_to_environment, load_local_settings
from local.functions import UnsupportedFunctionError
from local.host import DEFAULT_PORT, LocalHost
from local.ncrontab import ScheduleError
from local.queues import MissingConnectionError
from local.routes import RouteTemplateError

DEFAULT_SETTINGS = Path("local.settings.json")
EXAMPLE_SETTINGS = Path("local.settings.json.example")

logger = logging.getLogger("local")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local", description="Run the function app locally without Azure Functions Core Tools."
    )
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--settings", type=Path, help=f"local settings file (default {DEFAULT_SETTINGS}, else {EXAMPLE_SETTINGS})"
    )
    parser.add_argument("--host-json", type=Path, default=Path("host.json"), help="host.json (defaults when missing)")
    return parser.parse_args(argv)


def settings_file(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit  # asked for by name: a missing file is an error, reported by the loader
    for candidate in (DEFAULT_SETTINGS, EXAMPLE_SETTINGS):
        if candidate.exists():
            return candidate
    return None


def load_app(reference: str) -> FunctionRegister:
    module_name, _, attribute = reference.partition(":")
    # `python -m` puts the working directory on sys.path already; be explicit for `python local/__main__.py`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app = getattr(importlib.import_module(module_name), attribute or "app")
    if not isinstance(app, FunctionRegister):
        raise UnsupportedFunctionError(f"{reference} is a {type(app).__name__}, not an azure.functions FunctionApp")
    return app


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # The Azure SDK logs every storage request at INFO: one poll of an empty queue would drown the request lines.
    logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        source = settings_file(arguments.settings)
        if source is not None:
            kept = apply_settings_to_environment(load_local_settings(source))
            logger.info("app settings from %s%s", source, f" (already set, kept: {', '.join(kept)})" if kept else "")
        app = load_app(arguments.app)
        host = LocalHost(
            app,
            dict(os.environ),
            arguments.host,
            arguments.port,
            host_config=arguments.host_json if arguments.host_json.exists() else None,
        )
        host.start()
    except (
        LocalSettingsError,
        UnsupportedFunctionError,
        ScheduleError,
        MissingConnectionError,
        MissingAppSettingError,
        RouteTemplateError,
        OSError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except AzureError as error:
        print(f"error: queue storage is unreachable ({error}); is Azurite running?", file=sys.stderr)
        return 2

    stop_requested = threading.Event()

    def request_stop(signal_number: int, _frame: FrameType | None) -> None:
        logger.info("%s received: stopping", signal.Signals(signal_number).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(host.banner(), flush=True)
    try:
        while not stop_requested.wait(timeout=0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        host.stop()
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
