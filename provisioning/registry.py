"""The clouds this control plane runs: one `ProviderPlugin` each (autoscaler/ports.py), listed here and nowhere else.

The core finds them through autoscaler/plugins.py (`providers()`, which loads this module by name). Adding a cloud is a
module of its own plus one line here: docs/adding-a-cloud.md.
"""

from __future__ import annotations

from autoscaler.ports import ProviderPlugin
from provisioning.azure.plugin import AZURE
from provisioning.local_plugin import LOCAL

# In this order; the first one's defaults fill a config that names no provider type (Ray's YAML is Azure's).
PLUGINS: tuple[ProviderPlugin, ...] = (AZURE, LOCAL)
