"""The one place that wires dependencies (the composition root): settings -> store, queue, providers (through the
plugin registry), Ray reader -> Service. It alone imports both the service and the adapters (docs/decisions/layout.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from autoscaler.config import ClusterConfig, FieldError
from autoscaler.model import HeadInfo
from autoscaler.plugins import ProviderRegistry, providers
from autoscaler.ports import BuildContext, CloudProvider
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import Retention, Service
from autoscaler.settings import RECONCILE_QUEUE, Settings
from autoscaler.tokens import cluster_token


def utc_now() -> datetime:
    return datetime.now(UTC)


class ProviderFactory:
    """One provider object per (type, cluster, config), built lazily by the cluster's plugin (provisioning/registry.py):
    a cloud's SDKs are imported only when one of its clusters is reconciled, so the local host and cold starts never
    pay for them."""

    def __init__(
        self,
        settings: Settings,
        credential_factory: Callable[[], Any] | None = None,
        azure_overrides: Mapping[str, Any] | None = None,
        *,
        plugin_options: Mapping[str, Mapping[str, Any]] | None = None,
        registry: ProviderRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or providers()
        self._credential_factory = credential_factory
        # Extra options per plugin type (the Azure plugin's are AzureSettings fields: tests point `base_url` and
        # `connection_verify` at the loopback ARM emulator). `azure_overrides` is the Azure plugin's, by its old name.
        self._plugin_options = {kind: dict(options) for kind, options in (plugin_options or {}).items()}
        if azure_overrides:
            self._plugin_options.setdefault("azure", {}).update(azure_overrides)
        self._providers: dict[tuple[str, str, str], CloudProvider] = {}
        self._lock = threading.Lock()

    def __call__(self, config: ClusterConfig) -> CloudProvider:
        key = (config.provider.type, config.cluster_name, config.config_hash())
        with self._lock:
            provider = self._providers.get(key)
            if provider is None:
                provider = self._build(config)
                self._providers[key] = provider
            return provider

    def check(self, config: ClusterConfig) -> list[FieldError]:
        """Why a provider for `config` can never be built here (the create answers 400 naming the fields); [] when
        it can: the plugin's own check, which imports no cloud SDK."""
        return self.registry[config.provider.type].check(config, self.settings)

    def _build(self, config: ClusterConfig) -> CloudProvider:
        kind = config.provider.type
        context = BuildContext(
            settings=self.settings,
            credential_factory=self._credential_factory,
            options=self._plugin_options.get(kind, {}),
        )
        return self.registry[kind].build(config, context)

    def head_info_extra(self, config: ClusterConfig, cluster_name: str) -> HeadInfo:
        plugin = self.registry[config.provider.type]
        if plugin.head_info is None:
            return HeadInfo()
        return plugin.head_info(self(config), cluster_name)


def build_service(settings: Settings | None = None, *, clock: Callable[[], datetime] = utc_now) -> Service:
    from autoscaler.adapters.head_agent import HttpRayStateReader
    from autoscaler.adapters.storage_queue import StorageReconcileQueue
    from autoscaler.adapters.table_store import TableStateStore

    settings = settings or Settings.from_environment()
    if settings.storage_connection_string:
        store = TableStateStore.from_connection_string(settings.storage_connection_string, settings.table_prefix)
        queue = StorageReconcileQueue.from_connection_string(settings.storage_connection_string, RECONCILE_QUEUE)
    else:
        from azure.identity import ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=settings.managed_identity_client_id or None)
        store = TableStateStore.from_account(settings.storage_account_name, credential, settings.table_prefix)
        queue = StorageReconcileQueue.from_account(settings.storage_account_name, credential, RECONCILE_QUEUE)
    providers = ProviderFactory(settings)
    deps = ReconcileDeps(
        store=store,
        provider_for=providers,
        ray_reader=HttpRayStateReader(),
        token_for=partial(cluster_token, settings.token_key),
        clock=clock,
        control_plane_url=settings.control_plane_url,
        head_info_extra=providers.head_info_extra,
        head_unreachable_timeout_s=settings.head_unreachable_timeout_s,
    )
    return Service(
        deps=deps,
        queue=queue,
        allow_local_provider=settings.allow_local_provider,
        ssh_keygen=_ssh_keygen,
        clusters_resource_group=settings.clusters_resource_group,
        provider_check=providers.check,
        retention=Retention(
            event_max_age=timedelta(days=settings.event_retention_days),
            events_per_cluster=settings.events_per_cluster,
            deleted_cluster_rows=timedelta(hours=settings.deleted_cluster_retention_hours),
        ),
    )


def _ssh_keygen() -> tuple[str, str]:
    from provisioning.azure.ssh import generate_ssh_keypair

    return generate_ssh_keypair()
