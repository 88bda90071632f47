"""Timer schedules as the Azure Functions host reads them: NCRONTAB (six fields, seconds first) or a TimeSpan.

    {second} {minute} {hour} {day} {month} {day-of-week}      e.g. "0 */5 * * * *" = every five minutes
    hh:mm:ss                                                   e.g. "00:00:30"      = every thirty seconds

A field is `*`, a number, a name (months `Jan`..`Dec`, days `Sun`..`Sat`), a range `a-b`, a step `*/n` or `a-b/n`,
or a comma list of those. Day of week counts from 0 = Sunday. Like NCrontab (the library the host uses), a
time must match the day-of-month AND the day-of-week fields; classic cron ORs them when both are restricted.
Times are whatever the caller passes in: the host passes UTC, as Azure does unless WEBSITE_TIME_ZONE is set.
"""

from __future__ import annotations

import calendar
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from local.app_settings import resolve_setting_references

__all__ = [
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "ScheduleError",
    "parse_schedule",
    "parse_timespan",
]


class ScheduleError(ValueError):
    """A schedule (or TimeSpan) that cannot be parsed, or that would never fire."""


class Schedule(Protocol):
    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after `after`, in the same time zone as `after`."""
        ...


def parse_schedule(expression: str, settings: Mapping[str, str] | None = None) -> CronSchedule | IntervalSchedule:
    """Parse an NCRONTAB expression or a TimeSpan; `%NAME%` is first resolved from `settings` (default: os.environ).

    Raises ScheduleError, or MissingAppSettingError for a reference to an unset setting.
    """
    text = resolve_setting_references(expression, os.environ if settings is None else settings).strip()
    if _TIMESPAN.match(text):
        return IntervalSchedule(parse_timespan(text))
    return CronSchedule.parse(text)


# --------------------------------------------------------------------------------------------
# TimeSpan: "[d.]hh:mm:ss[.fffffff]", the .NET format host.json and timer triggers use
# --------------------------------------------------------------------------------------------

_TIMESPAN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{1,2}):(?P<seconds>\d{1,2})(?:\.(?P<fraction>\d{1,7}))?$"
)


def parse_timespan(text: str) -> timedelta:
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise ScheduleError(f"{text!r} is not a TimeSpan: expected [d.]hh:mm:ss[.fffffff], e.g. '00:00:30'")
    hours, minutes, seconds = int(match["hours"]), int(match["minutes"]), int(match["seconds"])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ScheduleError(f"{text!r} is not a TimeSpan: hours must be 0-23, minutes and seconds 0-59")
    fraction_s = float("0." + match["fraction"]) if match["fraction"] else 0.0
    return timedelta(days=int(match["days"] or 0), hours=hours, minutes=minutes, seconds=seconds + fraction_s)


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule: fire every `interval`, counted from the previous fire (or from start-up)."""

    interval: timedelta

    def __post_init__(self) -> None:
        if self.interval <= timedelta(0):
            raise ScheduleError(f"a TimeSpan schedule must be positive, got {self.interval}")

    def next_fire(self, after: datetime) -> datetime:
        return after + self.interval


# --------------------------------------------------------------------------------------------
# NCRONTAB
# --------------------------------------------------------------------------------------------

_MONTH_NAMES = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


@dataclass(frozen=True)
class _Field:
    label: str
    low: int
    high: int
    names: Mapping[str, int]


_FIELDS = (
    _Field("second", 0, 59, {}),
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day", 1, 31, {}),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day-of-week", 0, 6, _DAY_NAMES),
)

# Long enough to reach any satisfiable day/weekday combination (Feb 29 on a given weekday recurs within 28 years).
_SEARCH_HORIZON_YEARS = 30


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday, as NCRONTAB counts

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        parts = expression.split()
        if len(parts) != len(_FIELDS):
            raise ScheduleError(
                f"NCRONTAB {expression!r} has {len(parts)} fields; Azure Functions needs 6: "
                "{second} {minute} {hour} {day} {month} {day-of-week}, e.g. '0 */5 * * * *'"
            )
        values = [_parse_field(part, spec, expression) for part, spec in zip(parts, _FIELDS, strict=True)]
        schedule = cls(expression, *values)
        schedule._reject_impossible_dates()
        return schedule

    def _reject_impossible_dates(self) -> None:
        # Leap years give February 29 days; a month whose listed days all exceed its length never fires.
        longest_month_days = {month: calendar.monthrange(2024, month)[1] for month in self.months}
        if not any(day <= longest_month_days[month] for month in self.months for day in self.days):
            raise ScheduleError(f"NCRONTAB {self.expression!r} never fires: no listed month has any of the listed days")

    def next_fire(self, after: datetime) -> datetime:
        # Walk forward coarse to fine: a field that does not match jumps to the start of the next unit,
        # so the loop runs a handful of times per unit instead of once per second.
        candidate = after.replace(microsecond=0) + timedelta(seconds=1)
        horizon = after.replace(microsecond=0) + timedelta(days=366 * _SEARCH_HORIZON_YEARS)
        while candidate <= horizon:
            if candidate.month not in self.months:
                candidate = _start_of_next_month(candidate)
            elif candidate.day not in self.days or _ncrontab_weekday(candidate) not in self.weekdays:
                candidate = candidate.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0, second=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate = candidate.replace(second=0) + timedelta(minutes=1)
            elif candidate.second not in self.seconds:
                candidate += timedelta(seconds=1)
            else:
                return candidate
        raise ScheduleError(f"NCRONTAB {self.expression!r} does not fire within {_SEARCH_HORIZON_YEARS} years")


def _ncrontab_weekday(moment: datetime) -> int:
    return moment.isoweekday() % 7  # isoweekday: Monday 1 .. Sunday 7; NCRONTAB: Sunday 0 .. Saturday 6


def _start_of_next_month(moment: datetime) -> datetime:
    if moment.month == 12:
        return moment.replace(year=moment.year + 1, month=1, day=1, hour=0, minute=0, second=0)
    return moment.replace(month=moment.month + 1, day=1, hour=0, minute=0, second=0)


def _parse_field(text: str, spec: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, spec, expression))
    return frozenset(values)


def _parse_item(item: str, spec: _Field, expression: str) -> range:
    def fail(reason: str) -> ScheduleError:
        return ScheduleError(f"NCRONTAB {expression!r}: {spec.label} field {item!r} {reason}")

    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise fail("has a step that is not a positive whole number")
        step = int(step_text)
    if base == "*":
        low, high = spec.low, spec.high
    else:
        low_text, dash, high_text = base.partition("-")
        low = _parse_value(low_text, spec, fail)
        high = _parse_value(high_text, spec, fail) if dash else (spec.high if slash else low)
        if low > high:
            raise fail(f"is a range that runs backwards ({low} > {high})")
    return range(low, high + 1, step)


def _parse_value(text: str, spec: _Field, fail: _FailFactory) -> int:
    if text.lower() in spec.names:
        return spec.names[text.lower()]
    if not text.isdigit():
        raise fail("is not a number, a range, a step or '*'")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise fail(f"is out of range {spec.low}-{spec.high}")
    return value


class _FailFactory(Protocol):
    def __call__(self, reason: str) -> ScheduleError: ...
