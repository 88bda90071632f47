"""A seeded slice of the fault campaign (bench/faults.py) on the session's Azurite: the real Service and reconcile
shell, the real Table store, the queue, and faults of every kind. Replay a failing seed with
`.venv/bin/python bench/faults.py --seed N` (its schedule and every tick are printed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.azurite import Azurite

pytestmark = [pytest.mark.azurite, pytest.mark.slow]

SEEDS = range(1, 21)
# Fault kinds the slice must inject, so a change to the generator cannot quietly turn the campaign into a no-op.
REQUIRED_KINDS = {
    "throttle",
    "5xx",
    "timeout",
    "capacity_sync",
    "capacity_async",
    "quota_async",
    "crash",
    "race",
    "storage_refused_call",
    "storage_timeout",
    "head_down_call",
    "drain_unanswered_call",
    "queue_message_lost",
    "queue_message_duplicated",
    "queue_reordered_batch",
    "delete_mid_tick",
}


def campaign() -> ModuleType:
    """bench/faults.py, loaded by path: bench/ is a folder of scripts, not a package."""
    name = "bench_faults_campaign"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "bench" / "faults.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_a_seeded_slice_of_the_fault_campaign_keeps_every_invariant(azurite: Azurite):
    faults = campaign()
    results, runtime_s = faults.run_campaign(SEEDS, azurite.connection_string)
    summary = faults.summarize(results, runtime_s)
    problems = [f"seed {r.seed}: {problem}" for r in results for problem in r.problems()]
    assert summary["leaks"] == 0, problems
    assert summary["max_violations"] == 0, problems
    assert summary["lost_records"] == 0, problems
    assert summary["not_converged"] == 0, problems
    assert summary["unexpected_errors"] == 0, problems
    assert set(summary["faults_by_kind"]) >= REQUIRED_KINDS, REQUIRED_KINDS - set(summary["faults_by_kind"])
    assert summary["faults_injected"] >= 200
