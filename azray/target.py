"""Which control plane azray talks to, and with which function key.

In order: `--url`/`--key`; the environment (AZRAY_URL, AZRAY_KEY); the current azd environment when run inside a
repository with `.azure/` (its FUNCTION_APP_URL, and the key from `az functionapp keys list` when `az` is installed);
else the local host `make run` serves, http://127.0.0.1:7071, which needs no key.

The key is held in a `Secret`, whose repr and str never show it, so it cannot leak through a message or a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from azray.errors import CliError, ExitCode

LOCAL_HOST_URL = "http://127.0.0.1:7071"
URL_VARIABLE = "AZRAY_URL"
KEY_VARIABLE = "AZRAY_KEY"
# Only these azd values are read; the environment file also holds secrets (clusterTokenKey) that azray never needs.
AZD_VALUES_USED = (
    "AZURE_ENV_NAME",
    "AZURE_RESOURCE_GROUP",
    "AZURE_SUBSCRIPTION_ID",
    "CLUSTERS_RESOURCE_GROUP",
    "FUNCTION_APP_NAME",
    "FUNCTION_APP_URL",
)
AZD_TIMEOUT_S = 30.0
AZ_TIMEOUT_S = 90.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Secret:
    """A value that prints as *** wherever it ends up (messages, reprs, tracebacks with locals)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        # `$(az ...)` and pasted keys may bring a newline, which no HTTP header can carry.
        self._value = value.strip()

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True)
class Target:
    base_url: str  # scheme://host[:port], without /api
    url_source: str  # where the URL came from, said in errors
    key: Secret | None = field(default=None, repr=False)
    key_source: str = ""
    key_hint: str = ""  # how to set a key, for 401/403 answers
    azd_values: Mapping[str, str] = field(default_factory=dict)  # the non-secret values of AZD_VALUES_USED

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    @property
    def is_loopback(self) -> bool:
        return (urlsplit(self.base_url).hostname or "") in LOOPBACK_HOSTS

    @property
    def folder_name(self) -> str:
        """This control plane as a file name, so two deployments' clusters of one name keep apart."""
        parts = urlsplit(self.base_url)
        return (parts.netloc or "unknown").replace(":", "_").replace("/", "_")


def normalized_base_url(url: str, source: str) -> str:
    """`https://x.azurewebsites.net/api/` and `https://x.azurewebsites.net` are the same control plane."""
    text = url.strip().rstrip("/")
    if text.endswith("/api"):
        text = text[: -len("/api")]
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(
            f"{text!r} (from {source}) is not an http(s) URL; give the app's URL, e.g. {LOCAL_HOST_URL}",
            ExitCode.USAGE,
        )
    return text


def find_azd_project(start: Path) -> Path | None:
    """The nearest folder at or above `start` holding azd's `.azure/` environments."""
    for folder in (start, *start.parents):
        if (folder / ".azure").is_dir():
            return folder
    return None


def _dotenv_values(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sign, value = line.strip().partition("=")
        if sign and not name.startswith("#"):
            values[name.strip()] = value.strip().strip('"').strip("'")
    return values


def read_azd_values(project: Path) -> tuple[dict[str, str], str]:
    """(values, what they came from): through `azd env get-values` when azd is installed, else azd's own files."""
    raw: dict[str, str] = {}
    source = ""
    if shutil.which("azd"):
        try:
            done = subprocess.run(
                ["azd", "env", "get-values", "--output", "json"],
                cwd=project,
                capture_output=True,
                text=True,
                timeout=AZD_TIMEOUT_S,
                check=False,
            )
            if done.returncode == 0:
                parsed = json.loads(done.stdout)
                if isinstance(parsed, dict):
                    raw = {str(k): str(v) for k, v in parsed.items()}
                    source = "azd env get-values"
        except (OSError, subprocess.TimeoutExpired, ValueError):
            raw = {}
    if not raw:
        try:
            config = json.loads((project / ".azure" / "config.json").read_text(encoding="utf-8"))
            environment = str(config.get("defaultEnvironment", ""))
            if environment:
                raw = _dotenv_values(project / ".azure" / environment / ".env")
                source = f".azure/{environment}/.env"
        except (OSError, ValueError, AttributeError):
            raw = {}
    return {name: raw[name] for name in AZD_VALUES_USED if raw.get(name)}, source


def function_key_from_az(app_name: str, resource_group: str) -> tuple[Secret | None, str]:
    """(the app's default function key, why not) through the Azure CLI; never raises."""
    if not shutil.which("az"):
        return None, "the Azure CLI (az) is not installed"
    try:
        done = subprocess.run(
            [
                "az",
                "functionapp",
                "keys",
                "list",
                "--name",
                app_name,
                "--resource-group",
                resource_group,
                "--query",
                "functionKeys.default",
                "--output",
                "tsv",
            ],
            capture_output=True,
            text=True,
            timeout=AZ_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"az functionapp keys list failed: {type(error).__name__}"
    key = done.stdout.strip()
    if done.returncode != 0 or not key:
        last_line = (done.stderr.strip().splitlines() or ["no key in its answer"])[-1]
        return None, f"az functionapp keys list failed: {last_line[:200]}"
    return Secret(key), ""


def key_hint(azd_values: Mapping[str, str]) -> str:
    app, group = azd_values.get("FUNCTION_APP_NAME"), azd_values.get("AZURE_RESOURCE_GROUP")
    if app and group:
        return (
            f'export {KEY_VARIABLE}="$(az functionapp keys list --name {app} --resource-group {group} '
            '--query functionKeys.default -o tsv)"'
        )
    return f"set {KEY_VARIABLE} to the app's function key (docs/deploy.md, 'Call the API', shows how to read it)"


def resolve_target(
    url_option: str | None,
    key_option: str | None,
    environ: Mapping[str, str],
    cwd: Path,
) -> Target:
    key: Secret | None = None
    key_source = ""
    if key_option:
        key, key_source = Secret(key_option), "--key"
    elif environ.get(KEY_VARIABLE):
        key, key_source = Secret(environ[KEY_VARIABLE]), KEY_VARIABLE
    if url_option:
        base = normalized_base_url(url_option, "--url")
        return Target(base, "--url", key, key_source, key_hint({}))
    if environ.get(URL_VARIABLE):
        base = normalized_base_url(environ[URL_VARIABLE], URL_VARIABLE)
        return Target(base, URL_VARIABLE, key, key_source, key_hint({}))
    project = find_azd_project(cwd)
    default_source = "the default (the local host of `make run`)"
    if project is not None:
        values, source = read_azd_values(project)
        if values.get("FUNCTION_APP_URL"):
            base = normalized_base_url(values["FUNCTION_APP_URL"], source)
            environment = values.get("AZURE_ENV_NAME", "")
            url_source = f"the azd environment {environment!r} ({source})" if environment else source
            hint = key_hint(values)
            if key is None and values.get("FUNCTION_APP_NAME") and values.get("AZURE_RESOURCE_GROUP"):
                key, why_not = function_key_from_az(values["FUNCTION_APP_NAME"], values["AZURE_RESOURCE_GROUP"])
                key_source = "az functionapp keys list" if key is not None else ""
                if key is None:
                    hint = f"{why_not}; {hint}"
            return Target(base, url_source, key, key_source, hint, values)
        default_source += f"; {project / '.azure'} has no FUNCTION_APP_URL (has `azd up` run?)"
    return Target(LOCAL_HOST_URL, default_source, key, key_source, key_hint({}))


def current_target(url_option: str | None, key_option: str | None) -> Target:
    return resolve_target(url_option, key_option, os.environ, Path.cwd())
