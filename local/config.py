"""What the local host reads from disk: host.json (route prefix, queue trigger settings) and local.settings.json.

Both are parsed once, at start-up, into frozen values; unknown host.json sections are ignored, as the real host
ignores the settings of extensions it does not load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from local.ncrontab import ScheduleError, parse_timespan

__all__ = [
    "HostConfig",
    "LocalSettingsError",
    "QueueOptions",
    "apply_settings_to_environment",
    "load_host_config",
    "load_local_settings",
]

# Locally an empty queue is polled at least every 2 s, even when host.json allows the Azure default of 1 min:
# a developer who posts a request expects the reconcile message to be picked up within seconds, not a minute.
# A host.json value below 2 s still wins.
LOCAL_MAX_POLLING_INTERVAL_CAP = timedelta(seconds=2)


class LocalSettingsError(ValueError):
    """host.json or local.settings.json is unreadable or holds a value of the wrong shape."""


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, with the defaults the Azure host uses when a key is absent."""

    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)  # how long a failed message stays hidden before its retry
    max_polling_interval: timedelta = timedelta(minutes=1)
    message_encoding: Literal["base64", "none"] = "base64"
    # Not a host.json key: the Azure host hides a message it runs for 10 minutes and renews that at half-time while
    # the function runs. Tests shorten it to see a renewal.
    message_lease: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.message_lease < timedelta(seconds=1):  # the shortest visibility a queue read accepts
            raise LocalSettingsError(f"the message lease is at least 1 s, got {self.message_lease}")

    @property
    def local_max_polling_interval(self) -> timedelta:
        return min(self.max_polling_interval, LOCAL_MAX_POLLING_INTERVAL_CAP)


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> HostConfig:
        extensions = _section(document, "extensions")
        http = _section(extensions, "http")
        queues = _section(extensions, "queues")
        route_prefix = http.get("routePrefix", "api")
        if not isinstance(route_prefix, str):
            raise LocalSettingsError(f"host.json extensions.http.routePrefix must be a string, got {route_prefix!r}")
        return cls(route_prefix=route_prefix.strip("/"), queues=_queue_options(queues))


def load_host_config(path: Path | None) -> HostConfig:
    """host.json at `path`; the defaults when `path` is None (an app without host.json runs on defaults too)."""
    if path is None:
        return HostConfig()
    return HostConfig.from_json(_read_json_object(path))


def _queue_options(section: Mapping[str, Any]) -> QueueOptions:
    defaults = QueueOptions()
    encoding = section.get("messageEncoding", defaults.message_encoding)
    if encoding not in ("base64", "none"):
        raise LocalSettingsError(
            f"host.json extensions.queues.messageEncoding must be 'base64' or 'none', got {encoding!r}"
        )
    batch_size = _positive_int(section, "batchSize", defaults.batch_size)
    if batch_size > 32:
        raise LocalSettingsError(
            f"host.json extensions.queues.batchSize is at most 32 (a queue read limit), got {batch_size}"
        )
    return QueueOptions(
        batch_size=batch_size,
        max_dequeue_count=_positive_int(section, "maxDequeueCount", defaults.max_dequeue_count),
        visibility_timeout=_timespan(section, "visibilityTimeout", defaults.visibility_timeout),
        max_polling_interval=_timespan(section, "maxPollingInterval", defaults.max_polling_interval),
        message_encoding=encoding,
    )


def _section(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key, {})
    if not isinstance(value, Mapping):
        raise LocalSettingsError(f"host.json section {key!r} must be an object, got {value!r}")
    return value


def _positive_int(section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LocalSettingsError(f"host.json extensions.queues.{key} must be a positive integer, got {value!r}")
    return value


def _timespan(section: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return timedelta(milliseconds=value)  # Functions 1.x host.json gave milliseconds; still seen in samples
    if not isinstance(value, str):
        raise LocalSettingsError(f"host.json extensions.queues.{key} must be a TimeSpan like '00:00:30', got {value!r}")
    try:
        return parse_timespan(value)
    except ScheduleError as error:
        raise LocalSettingsError(f"host.json extensions.queues.{key}: {error}") from error


# --------------------------------------------------------------------------------------------
# local.settings.json
# --------------------------------------------------------------------------------------------


def load_local_settings(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json file (every value must be a string, as Core Tools require)."""
    document = _read_json_object(path)
    values = document.get("Values", {})
    if not isinstance(values, Mapping):
        raise LocalSettingsError(f"{path}: 'Values' must be an object of strings")
    settings: dict[str, str] = {}
    for name, value in values.items():
        if not isinstance(value, str):
            raise LocalSettingsError(f"{path}: Values.{name} must be a string, got {value!r}")
        settings[str(name)] = value
    return settings


def apply_settings_to_environment(
    settings: Mapping[str, str], environment: MutableMapping[str, str] | None = None
) -> list[str]:
    """Copy settings into the environment, never replacing a variable that is already set (as `func start` does).

    Returns the names that were already set and therefore kept their existing value.
    """
    target = os.environ if environment is None else environment
    kept: list[str] = []
    for name, value in settings.items():
        if name in target:
            kept.append(name)
        else:
            target[name] = value
    return kept


def _read_json_object(path: Path) -> Mapping[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise LocalSettingsError(f"cannot read {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise LocalSettingsError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(document, Mapping):
        raise LocalSettingsError(f"{path} must hold a JSON object")
    return document
