"""The one place that wires dependencies: settings -> store, queue, providers, Ray reader -> Service."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from autoscaler.config import ClusterConfig, FieldError
from autoscaler.model import HeadInfo
from autoscaler.reconcile import ReconcileDeps
from autoscaler.service import Retention, Service
from autoscaler.settings import RECONCILE_QUEUE, Settings
from autoscaler.tokens import cluster_token
from provisioning.cloud import CloudProvider


def utc_now() -> datetime:
    return datetime.now(UTC)


class ProviderFactory:
    """One provider object per (type, cluster), built lazily: the Azure SDKs are imported only when an Azure cluster
    is reconciled, so the local host and cold starts never pay for them."""

    def __init__(
        self,
        settings: Settings,
        credential_factory: Callable[[], Any] | None = None,
        azure_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._credential_factory = credential_factory
        # Extra AzureSettings fields (tests point `base_url`/`connection_verify` at the loopback ARM emulator).
        self._azure_overrides = dict(azure_overrides or {})
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
        it can. The same conditions as the providers' constructors, without importing the cloud SDKs."""
        if config.provider.type != "azure":
            return []
        errors: list[FieldError] = []
        if not (config.provider.subscription_id or self.settings.clusters_subscription_id):
            errors.append(
                FieldError(
                    "provider.subscription_id",
                    "no subscription: set provider.subscription_id, or the app setting CLUSTERS_SUBSCRIPTION_ID",
                )
            )
        if not config.provider.location:
            errors.append(FieldError("provider.location", "an Azure region is required, e.g. 'westus2'"))
        if not config.provider.resource_group:
            errors.append(
                FieldError(
                    "provider.resource_group",
                    "a resource group is required (or the app setting CLUSTERS_RESOURCE_GROUP)",
                )
            )
        return errors

    def _build(self, config: ClusterConfig) -> CloudProvider:
        if config.provider.type == "local":
            from provisioning.local import LocalCloudProvider

            return LocalCloudProvider(
                self.settings.local_data_dir,
                launch_delay_s=config.provider.launch_delay_s,
                control_plane_url=self.settings.control_plane_url,
            )
        from provisioning.azure.provider import AzureCloudProvider, AzureSettings

        azure_settings = AzureSettings(
            subscription_id=config.provider.subscription_id or self.settings.clusters_subscription_id,
            function_subnet_id=self.settings.function_subnet_id,
            **self._azure_overrides,
        )
        if self._credential_factory is not None:
            return AzureCloudProvider(config, self._credential_factory(), azure_settings)
        return AzureCloudProvider.from_environment(config, azure_settings)

    def head_info_extra(self, config: ClusterConfig, cluster_name: str) -> HeadInfo:
        if config.provider.type != "local":
            return HeadInfo()
        from provisioning.local import LocalCloudProvider

        provider = self(config)
        assert isinstance(provider, LocalCloudProvider)
        return HeadInfo(auth_token_path=str(provider.auth_token_path(cluster_name)))


def build_service(settings: Settings | None = None, *, clock: Callable[[], datetime] = utc_now) -> Service:
    from autoscaler.queueing import StorageReconcileQueue
    from autoscaler.ray_state import HttpRayStateReader
    from autoscaler.state import TableStateStore

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
