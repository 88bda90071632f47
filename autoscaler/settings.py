"""App settings, read once from the environment (Azure app settings, or local.settings.json `Values` locally)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RECONCILE_SCHEDULE = "*/15 * * * * *"  # NCRONTAB, seconds first: every 15 s
RECONCILE_QUEUE = "reconcile"
POISON_QUEUE = f"{RECONCILE_QUEUE}-poison"
MIN_TOKEN_KEY_BYTES = 32


class SettingsError(ValueError):
    """A required app setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    storage_connection_string: str  # AzureWebJobsStorage, when it is a connection string
    storage_account_name: str  # AzureWebJobsStorage__accountName, for identity-based connections
    managed_identity_client_id: str  # AzureWebJobsStorage__clientId / AZURE_CLIENT_ID
    token_key: bytes  # CLUSTER_TOKEN_KEY: derives every cluster's token; never logged
    control_plane_url: str  # where head agents send wake-ups (this app's base URL, without /api)
    allow_local_provider: bool  # provider.type "local" only makes sense where the app runs on the user's machine
    local_data_dir: Path  # the local provider's state folder
    table_prefix: str  # lets tests share one storage account
    clusters_subscription_id: str
    clusters_resource_group: str  # where Azure clusters go: the one group the app's custom role is granted on
    function_subnet_id: str  # the app's subnet: allowed to reach Ray ports on cluster NSGs
    # Retention (docs/deploy.md): events older than this or beyond this many per cluster are pruned; a deleted
    # cluster's rows are removed this long after its deletion.
    event_retention_days: float = 7.0
    events_per_cluster: int = 500
    deleted_cluster_retention_hours: float = 24.0
    # A running cluster whose head VM is listed but whose agent has not answered for this long fails (docs/deploy.md).
    head_unreachable_timeout_s: float = 600.0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        connection = env.get("AzureWebJobsStorage", "").strip()
        if connection == "UseDevelopmentStorage=true":
            connection = _AZURITE_DEFAULT
        account = env.get("AzureWebJobsStorage__accountName", "").strip()
        if not connection and not account:
            raise SettingsError("set AzureWebJobsStorage (connection string) or AzureWebJobsStorage__accountName")
        key_text = env.get("CLUSTER_TOKEN_KEY", "")
        if len(key_text.encode()) < MIN_TOKEN_KEY_BYTES:
            raise SettingsError(
                f"CLUSTER_TOKEN_KEY must hold at least {MIN_TOKEN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"
            )
        return cls(
            storage_connection_string=connection,
            storage_account_name=account,
            managed_identity_client_id=env.get("AzureWebJobsStorage__clientId", env.get("AZURE_CLIENT_ID", "")),
            token_key=key_text.encode(),
            control_plane_url=env.get("CONTROL_PLANE_URL", "http://127.0.0.1:7071").rstrip("/"),
            allow_local_provider=env.get("ALLOW_LOCAL_PROVIDER", "false").strip().lower() in ("1", "true", "yes"),
            local_data_dir=Path(env.get("LOCAL_DATA_DIR", ".local-data")).resolve(),
            table_prefix=env.get("TABLE_PREFIX", ""),
            clusters_subscription_id=env.get("CLUSTERS_SUBSCRIPTION_ID", ""),
            clusters_resource_group=env.get("CLUSTERS_RESOURCE_GROUP", "").strip(),
            function_subnet_id=env.get("FUNCTION_SUBNET_ID", ""),
            event_retention_days=_number(env, "EVENT_RETENTION_DAYS", 7.0),
            events_per_cluster=int(_number(env, "EVENTS_PER_CLUSTER", 500, whole=True)),
            deleted_cluster_retention_hours=_number(env, "DELETED_CLUSTER_RETENTION_HOURS", 24.0),
            head_unreachable_timeout_s=_number(env, "HEAD_UNREACHABLE_TIMEOUT_S", 600.0),
        )


def _number(env: Mapping[str, str], name: str, default: float, *, whole: bool = False) -> float:
    """A positive number from the settings, or `default` when unset; a SettingsError naming the setting otherwise."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = -1
    if not value > 0 or value == float("inf"):
        kind = "a whole number" if whole else "a number"
        raise SettingsError(f"{name} must be {kind} above 0, not {text!r}")
    return value


# Azurite's documented development account on its default ports (what UseDevelopmentStorage=true means).
_AZURITE_DEFAULT = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
