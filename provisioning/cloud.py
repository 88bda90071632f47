"""Compatibility: the cloud provider port now lives in autoscaler/ports.py (the core owns its interfaces).

Old import paths (`from provisioning.cloud import CloudProvider, CapacityError, ...`) keep working through these
re-exports, so files not yet moved need no edit; new code imports `autoscaler.ports`.
"""

from __future__ import annotations

from autoscaler.ports import (
    CapacityError,
    CloudError,
    CloudProvider,
    DestroyReport,
    InvalidRequestError,
    NotFoundError,
    QuotaError,
    RemembersHeadAddress,
    ThrottledError,
    TransientError,
)

__all__ = [
    "CapacityError",
    "CloudError",
    "CloudProvider",
    "DestroyReport",
    "InvalidRequestError",
    "NotFoundError",
    "QuotaError",
    "RemembersHeadAddress",
    "ThrottledError",
    "TransientError",
]
