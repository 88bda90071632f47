"""Timer triggers: one thread per timer function, firing it on its schedule (UTC), one run at a time.

Like the real host, a timer never overlaps itself: occurrences that fall while a run is still going are skipped,
not queued up. The next run then carries `past_due=True`, the host's signal that the function is late.
`run_on_startup` fires once when the host starts, before the first scheduled occurrence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

# azure.functions exports the abstract TimerRequest; the worker builds this concrete one.
from azure.functions.timer import TimerRequest

from local.functions import FunctionSpec, Invoker
from local.ncrontab import CronSchedule, IntervalSchedule

__all__ = ["TimerRunner"]

logger = logging.getLogger("local.timers")


def utc_now() -> datetime:
    return datetime.now(UTC)


class TimerRunner:
    def __init__(
        self,
        spec: FunctionSpec,
        schedule: CronSchedule | IntervalSchedule,
        run_on_startup: bool,
        invoker: Invoker,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.spec = spec
        self.schedule = schedule
        self._run_on_startup = run_on_startup
        self._invoker = invoker
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"timer-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling; a run in progress is waited for."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        last_fired: datetime | None = None
        if self._run_on_startup:
            started = self._clock()
            self._fire(past_due=False, last_fired=None, next_due=self.schedule.next_fire(started))
            last_fired = started
        due = self.schedule.next_fire(self._clock())
        past_due = False
        while not self._stopping.is_set():
            wait_s = (due - self._clock()).total_seconds()
            if wait_s > 0:
                self._stopping.wait(wait_s)
                continue  # re-check: woken to stop, or (rarely) a little early
            following = self.schedule.next_fire(due)
            self._fire(past_due=past_due, last_fired=last_fired, next_due=following)
            last_fired = due
            finished = self._clock()
            past_due = following <= finished  # the run outlasted at least one occurrence: skip to the next one
            due = self.schedule.next_fire(finished) if past_due else following

    def _fire(self, *, past_due: bool, last_fired: datetime | None, next_due: datetime) -> None:
        now = self._clock()
        timer_request = TimerRequest(
            past_due=past_due,
            schedule_status={
                "Last": last_fired.isoformat() if last_fired else None,
                "Next": next_due.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        started = time.monotonic()
        try:
            self._invoker.invoke(self.spec, timer_request)
        except Exception:
            logger.exception("timer function %r failed", self.spec.name)
            return
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info("timer function %r succeeded (past_due=%s) in %.1f ms", self.spec.name, past_due, elapsed_ms)
