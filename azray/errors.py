"""Exit codes and the one error type the commands raise: a message of one line (plus field details) for the user."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented in docs/cli.md; scripts may rely on them."""

    OK = 0
    FAILED = 1  # the operation ran and failed: the cluster failed, the user declined, a job failed without a code
    USAGE = 2  # wrong arguments or options (click's own code for usage errors)
    UNREACHABLE = 3  # no answer from the API: wrong URL, host down, timeout
    AUTH = 4  # the API refused the function key (401/403), or none was sent
    NOT_FOUND = 5  # no cluster of that name
    INVALID = 6  # the API rejected the request: invalid config (field paths listed), too large
    CONFLICT = 7  # the API refused because of the cluster's state: another config under that name, a head change
    UNSUPPORTED = 8  # this server or this cluster cannot do it (no PUT, no timeline, no way to reach the head)
    SERVER = 9  # the API failed: 5xx, storage unavailable, an answer that is not the autoscaler's
    TIMEOUT = 10  # waited longer than --timeout; the cluster keeps going
    INTERRUPTED = 130  # Ctrl-C while waiting; the cluster keeps going


class CliError(Exception):
    """What went wrong and what to do, as one line; `details` are extra lines (e.g. one per failing config field)."""

    def __init__(self, message: str, exit_code: ExitCode, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details or []
