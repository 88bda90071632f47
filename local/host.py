"""LocalHost: runs a v2-model function app on this machine where Azure Functions Core Tools are absent.

    with LocalHost(app, settings={"AzureWebJobsStorage": azurite.connection_string}, port=0) as host:
        requests.get(f"{host.base_url}/api/health")

Everything the app declares is checked when the host is built (unsupported triggers or bindings, unset app
settings, bad schedules and routes), so a mistake fails at start-up, by name, not at the first request.
`settings` are the app settings the host itself reads (`%NAME%` schedules, queue connections); user code reads
its own configuration from the environment, which `python -m local` fills from local.settings.json.
Auth levels are not enforced, as under `func start`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from azure.functions.decorators.function_app import FunctionRegister

from local.app_settings import resolve_setting_references
from local.config import HostConfig, load_host_config
from local.functions import FunctionSpec, HttpTriggerSpec, Invoker, QueueTriggerSpec, TimerTriggerSpec, index_functions
from local.http_server import FunctionHttpServer
from local.ncrontab import parse_schedule
from local.queues import QueuePoller, QueueStorage
from local.routes import RouteTable
from local.timers import TimerRunner

__all__ = ["DEFAULT_PORT", "LocalHost"]

logger = logging.getLogger("local.host")

DEFAULT_PORT = 7071  # the port `func start` uses


class LocalHost:
    def __init__(
        self,
        app: FunctionRegister,
        settings: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        host_config: HostConfig | Path | None = None,
    ) -> None:
        """`port=0` picks a free port (see base_url); `host_config` is a host.json path or parsed values."""
        _require_loopback(host)
        self.settings = dict(settings)
        self.config = host_config if isinstance(host_config, HostConfig) else load_host_config(host_config)
        self.functions = [self._with_resolved_queue_names(spec) for spec in index_functions(app)]
        self._host, self._requested_port = host, port
        self._storage = QueueStorage(self.settings, self.config.queues)
        self._invoker = Invoker(self._storage)
        self._timers = [
            self._timer_runner(spec) for spec in self.functions if isinstance(spec.trigger, TimerTriggerSpec)
        ]
        self._pollers = [
            QueuePoller(spec, self._storage, self._invoker)
            for spec in self.functions
            if isinstance(spec.trigger, QueueTriggerSpec)
        ]
        for poller in self._pollers:
            self._storage.connection_string(poller.trigger.connection_setting)  # unset setting: fail now, by name
        # Parsing the route table now rejects unsupported templates before anything starts.
        RouteTable(
            (spec.trigger.route, spec.trigger.methods, spec)
            for spec in self.functions
            if isinstance(spec.trigger, HttpTriggerSpec)
        )
        self._http: FunctionHttpServer | None = None
        self._started = False
        self._stopped = False

    def _with_resolved_queue_names(self, spec: FunctionSpec) -> FunctionSpec:
        trigger = spec.trigger
        if isinstance(trigger, QueueTriggerSpec):
            trigger = replace(trigger, queue_name=resolve_setting_references(trigger.queue_name, self.settings))
        outputs = tuple(
            replace(output, queue_name=resolve_setting_references(output.queue_name, self.settings))
            for output in spec.queue_outputs
        )
        return replace(spec, trigger=trigger, queue_outputs=outputs)

    def _timer_runner(self, spec: FunctionSpec) -> TimerRunner:
        trigger = spec.trigger
        if not isinstance(trigger, TimerTriggerSpec):
            raise TypeError(f"function {spec.name!r} is not timer-triggered")
        return TimerRunner(spec, parse_schedule(trigger.schedule, self.settings), trigger.run_on_startup, self._invoker)

    # ---- lifecycle ----

    @property
    def base_url(self) -> str:
        """http://host:port of the running HTTP server (routes live under /<routePrefix>)."""
        if self._http is None:
            raise RuntimeError("the local host is not started")
        return self._http.base_url

    def start(self) -> None:
        """Bind the HTTP port, create the trigger queues, start timers and pollers. Raises if any of it fails."""
        if self._started:
            return
        if self._stopped:
            raise RuntimeError("a LocalHost runs once: build a new one to start again")
        self._started = True
        try:
            self._invoker.start()
            self._http = FunctionHttpServer(
                self.functions, self.config.route_prefix, self._invoker, self._host, self._requested_port
            )
            self._http.start()
            for poller in self._pollers:
                poller.start()
            for timer in self._timers:
                timer.start()
        except BaseException:
            self.stop()
            raise
        logger.info("local Functions host listening on %s", self.base_url)

    def stop(self) -> None:
        """Stop everything start() started, waiting for invocations in progress. Safe to call twice."""
        if not self._started:
            return
        for timer in self._timers:
            timer.stop()
        for poller in self._pollers:
            poller.stop()
        if self._http is not None:
            self._http.stop()
        self._invoker.stop()
        self._storage.close()
        self._started, self._stopped = False, True

    def __enter__(self) -> LocalHost:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ---- what it runs ----

    def banner(self) -> str:
        """The start-up text: where it listens and each function with its trigger."""
        url = self.base_url if self._http is not None else f"http://{self._host}:{self._requested_port}"
        prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
        lines = [
            f"Local Functions host (stand-in for `func start`) on {url}{prefix}",
            "Auth levels are not enforced locally (as with `func start`): no function key is needed or checked.",
            "Functions:",
        ]
        width = max((len(spec.name) for spec in self.functions), default=0)
        for spec in self.functions:
            lines.append(f"  {spec.name:<{width}}  {self._trigger_label(spec, prefix)}")
        return "\n".join(lines)

    def _trigger_label(self, spec: FunctionSpec, prefix: str) -> str:
        match spec.trigger:
            case HttpTriggerSpec(route=route, methods=methods, auth_level=auth_level):
                return f"http   {','.join(methods)} {prefix}/{route}  (auth level {auth_level}: not enforced)"
            case TimerTriggerSpec(schedule=schedule, run_on_startup=run_on_startup):
                resolved = resolve_setting_references(schedule, self.settings)
                shown = schedule if resolved == schedule else f"{schedule} = {resolved!r}"
                return f"timer  {shown}{' (runs on start-up)' if run_on_startup else ''}"
            case QueueTriggerSpec(queue_name=queue_name, connection_setting=connection_setting):
                return f"queue  {queue_name} (connection {connection_setting})"


def _require_loopback(host: str) -> None:
    # Auth levels are not enforced locally, so the host must not be reachable from other machines.
    if host == "localhost":
        return
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ValueError(f"the local host serves loopback only (it checks no keys); {host!r} is not a loopback address")
