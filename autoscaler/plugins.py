"""The provider registry: which `ProviderPlugin` (autoscaler/ports.py) serves which `provider.type`.

The core looks a cluster's cloud up here (its config model when a config is parsed, its rules, prices and SSH policy)
and never imports a plugin's module. The built-in clouds are listed in one place, provisioning/registry.py, which
`providers()` loads by name the first time it is asked, the way Python's entry points are loaded: the import graph
keeps pointing from the adapters to the core (the layer contract in pyproject.toml), and any code that parses a config
finds Azure and local without wiring anything first. A test or an extension registers more with
`providers().register(plugin)` (docs/adding-a-cloud.md).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from autoscaler.ports import NodeOffering, NodePrices, ProviderPlugin

if TYPE_CHECKING:
    from autoscaler.config import NodeTypeConfig

BUILT_IN_PLUGINS = "provisioning.registry"
"""The module that lists the built-in plugins (its `PLUGINS` tuple). Named, not imported (see the module docstring)."""


class ProviderRegistry:
    """Plugins by `provider.type`, in registration order (the first is the default when a config names no type)."""

    def __init__(self, plugins: Iterable[ProviderPlugin] = ()) -> None:
        self._plugins: dict[str, ProviderPlugin] = {}
        self._lock = threading.Lock()
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: ProviderPlugin) -> None:
        """Add a plugin. Registering the same plugin again is a no-op; another plugin for a taken type is refused."""
        with self._lock:
            current = self._plugins.get(plugin.type)
            if current is not None and current is not plugin:
                raise ValueError(f"provider type {plugin.type!r} is already registered")
            self._plugins[plugin.type] = plugin

    def unregister(self, provider_type: str) -> None:
        with self._lock:
            self._plugins.pop(provider_type, None)

    def get(self, provider_type: object) -> ProviderPlugin | None:
        return self._plugins.get(provider_type) if isinstance(provider_type, str) else None

    def __getitem__(self, provider_type: str) -> ProviderPlugin:
        plugin = self.get(provider_type)
        if plugin is None:
            raise KeyError(f"no provider plugin for type {provider_type!r} (registered: {', '.join(self.types())})")
        return plugin

    def __contains__(self, provider_type: object) -> bool:
        return self.get(provider_type) is not None

    def types(self) -> tuple[str, ...]:
        return tuple(self._plugins)

    def plugins(self) -> tuple[ProviderPlugin, ...]:
        return tuple(self._plugins.values())

    def default(self) -> ProviderPlugin | None:
        """The first registered plugin: its defaults fill a config whose `provider.type` is missing or unknown (Ray's
        own YAML for Azure is the reference document, so the built-in list starts with Azure)."""
        return next(iter(self._plugins.values()), None)


_registry: ProviderRegistry | None = None
_registry_lock = threading.RLock()  # re-entrant: loading the built-ins imports code that may ask for the registry


def providers() -> ProviderRegistry:
    """The process's registry, with the built-in plugins of provisioning/registry.py loaded on first use."""
    global _registry  # noqa: PLW0603 (one registry per process, built lazily)
    with _registry_lock:
        if _registry is None:
            registry = ProviderRegistry()
            _registry = registry
            try:
                built_in = importlib.import_module(BUILT_IN_PLUGINS)
            except ModuleNotFoundError as error:
                if error.name != BUILT_IN_PLUGINS:
                    raise
                built_in = None  # a core without the adapters (a stripped-down copy): plugins come by `register`
            for plugin in getattr(built_in, "PLUGINS", ()):
                registry.register(plugin)
        return _registry


def prices_for(provider_type: str) -> NodePrices:
    """The plugin's price hook for node types of this cloud (a hook that knows no price for an unknown type)."""
    plugin = providers().get(provider_type)
    return plugin.prices if plugin is not None else _unknown_prices


def _unknown_prices(node_type: NodeTypeConfig) -> tuple[float, str] | None:
    return None


def offering_for(provider_type: str, node_type_name: str, node_config: Mapping[str, Any]) -> NodeOffering:
    """The (size, spot) a node type launches as, by its cloud's plugin; an unknown cloud's types are their own size."""
    plugin = providers().get(provider_type)
    if plugin is None:
        return NodeOffering(size=node_type_name)
    return plugin.offering(node_type_name, node_config)
