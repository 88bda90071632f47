"""Compatibility: what lived here moved where its layer is (docs/decisions/layout.md).

- the head agent port (`RayStateReader`, `DrainResult`, `HeadAgentError`, `HeadUnreachableError`, `HeadAuthError`,
  `DRAIN_REASONS`): autoscaler/ports.py;
- the agent's JSON (`parse_state`, `parse_boot_phases`): autoscaler/agent_contract.py;
- the HTTP client (`HttpRayStateReader`): autoscaler/adapters/head_agent.py.

Old import paths keep working through these re-exports, so files not yet moved need no edit. The core imports the
new modules; import-linter keeps it from importing this one (it sits with the adapters).
"""

from __future__ import annotations

from autoscaler.adapters.head_agent import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, HttpRayStateReader
from autoscaler.agent_contract import MAX_BOOT_DETAIL_CHARS, REPORTED_BOOT_PHASES, parse_boot_phases, parse_state
from autoscaler.model import BootPhase, BootPhaseReport
from autoscaler.ports import (
    DRAIN_REASONS,
    DrainResult,
    HeadAgentError,
    HeadAuthError,
    HeadUnreachableError,
    RayStateReader,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DRAIN_REASONS",
    "MAX_BOOT_DETAIL_CHARS",
    "READ_TIMEOUT_S",
    "REPORTED_BOOT_PHASES",
    "BootPhase",
    "BootPhaseReport",
    "DrainResult",
    "HeadAgentError",
    "HeadAuthError",
    "HeadUnreachableError",
    "HttpRayStateReader",
    "RayStateReader",
    "parse_boot_phases",
    "parse_state",
]
