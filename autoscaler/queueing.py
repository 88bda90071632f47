"""Compatibility: the reconcile queue adapters moved to autoscaler/adapters/storage_queue.py (the port,
`ReconcileQueue`, is in autoscaler/ports.py). Old import paths keep working through these re-exports."""

from __future__ import annotations

from autoscaler.adapters.storage_queue import InMemoryReconcileQueue, StorageReconcileQueue

__all__ = ["InMemoryReconcileQueue", "StorageReconcileQueue"]
