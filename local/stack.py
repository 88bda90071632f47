"""The whole control plane on one machine: Azurite + the function app under the local host, wired by app settings.

`make run`, `make demo` and the integration/e2e tests all start it the same way, so they exercise the code paths
that run in Azure (HTTP, timer and queue triggers on real Storage queues and tables).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from local.azurite import Azurite, start_azurite
from local.config import load_local_settings
from local.host import LocalHost

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_settings_file(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json (missing file -> {})."""
    return load_local_settings(path) if path.exists() else {}


@dataclass
class LocalStack:
    """Start with `with LocalStack(...) as stack:`; `stack.api_url` is the `.../api` base."""

    data_dir: Path
    port: int = 7071
    settings: Mapping[str, str] = field(default_factory=dict)  # overrides for the app settings
    azurite_ports: tuple[int, int, int] | None = None  # None: free ports; (10000, 10001, 10002) for `make run`
    host_json: Path = REPO_ROOT / "host.json"
    azurite: Azurite | None = None
    host: LocalHost | None = None
    _saved_environment: dict[str, str | None] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        assert self.host is not None, "the stack is not started"
        return f"{self.host.base_url}/api"

    def start(self) -> LocalStack:
        """Start Azurite, then the host; if either fails, what was started is stopped before the error is raised."""
        try:
            return self._start()
        except BaseException:
            self.stop()  # `with` does not call __exit__ when __enter__ raises: Azurite would be left running
            raise

    def _start(self) -> LocalStack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.azurite = start_azurite(self.data_dir / "azurite", ports=self.azurite_ports)
        values = {
            **load_settings_file(REPO_ROOT / "local.settings.json.example"),
            **load_settings_file(REPO_ROOT / "local.settings.json"),
            "AzureWebJobsStorage": self.azurite.connection_string,
            "LOCAL_DATA_DIR": str(self.data_dir / "provider"),
            **self.settings,
        }
        if len(values.get("CLUSTER_TOKEN_KEY", "")) < 32 or values["CLUSTER_TOKEN_KEY"].startswith("replace-me"):
            values["CLUSTER_TOKEN_KEY"] = secrets.token_hex(32)
        self._apply_environment(values)
        import function_app

        function_app._service.cache_clear()  # a service built for other settings must not be reused
        self.host = LocalHost(function_app.app, values, port=self.port, host_config=self.host_json)
        if self.port != 0:
            values["CONTROL_PLANE_URL"] = f"http://127.0.0.1:{self.port}"
        self.host.start()
        os.environ["CONTROL_PLANE_URL"] = self.host.base_url
        return self

    def stop(self) -> None:
        if self.host is not None:
            self.host.stop()
            self.host = None
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment.clear()

    def _apply_environment(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            self._saved_environment.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        self._saved_environment.setdefault("CONTROL_PLANE_URL", os.environ.get("CONTROL_PLANE_URL"))

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
