"""NCRONTAB and TimeSpan schedules: next fire times, and the expressions that must be rejected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from local.app_settings import MissingAppSettingError
from local.ncrontab import ScheduleError, parse_schedule, parse_timespan


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NEXT_FIRE_CASES = [
    # (expression, after, expected next fire)
    ("*/1 * * * * *", "2025-01-01T00:00:00", "2025-01-01T00:00:01"),
    ("* * * * * *", "2025-01-01T00:00:00.500000", "2025-01-01T00:00:01"),
    ("0 */5 * * * *", "2025-01-01T00:07:30", "2025-01-01T00:10:00"),
    ("0 */5 * * * *", "2025-01-01T00:10:00", "2025-01-01T00:15:00"),  # strictly after
    ("30 0 * * * *", "2025-01-01T00:00:30", "2025-01-01T01:00:30"),
    ("0 0 9-17 * * *", "2025-01-01T17:00:01", "2025-01-02T09:00:00"),
    ("0 0 8-20/4 * * *", "2025-01-01T12:00:00", "2025-01-01T16:00:00"),
    ("0 15,45 * * * *", "2025-01-01T10:16:00", "2025-01-01T10:45:00"),
    ("5/20 * * * * *", "2025-01-01T00:00:26", "2025-01-01T00:00:45"),
    ("0 0 0 * * 1", "2025-01-01T00:00:00", "2025-01-06T00:00:00"),  # 2025-01-01 is a Wednesday; 1 = Monday
    ("0 0 0 * * Sun", "2025-01-01T00:00:00", "2025-01-05T00:00:00"),
    ("0 0 0 1 Mar *", "2025-01-15T00:00:00", "2025-03-01T00:00:00"),
    ("0 0 0 31 * *", "2025-02-01T00:00:00", "2025-03-31T00:00:00"),  # skips February
    ("0 0 0 29 2 *", "2025-01-01T00:00:00", "2028-02-29T00:00:00"),  # next leap day
    ("0 0 0 1 1 *", "2025-12-31T23:59:59", "2026-01-01T00:00:00"),  # year rollover
    ("0 0 0 13 * 5", "2025-01-01T00:00:00", "2025-06-13T00:00:00"),  # day AND weekday: Friday the 13th
    ("0 0 0 1 * 1-5", "2025-01-01T00:00:00", "2025-04-01T00:00:00"),  # Feb 1 and Mar 1 2025 are weekends
]


@pytest.mark.parametrize(("expression", "after", "expected"), NEXT_FIRE_CASES)
def test_cron_schedule_next_fire_is_the_first_matching_second_after(expression, after, expected):
    assert parse_schedule(expression, {}).next_fire(at(after)) == at(expected)


INVALID_CASES = [
    # (expression, words the error must contain)
    ("0 */5 * * *", "has 5 fields"),
    ("0 0 */5 * * * *", "has 7 fields"),
    ("60 * * * * *", "second field '60' is out of range 0-59"),
    ("* * 24 * * *", "hour field '24' is out of range 0-23"),
    ("* * * 0 * *", "day field '0' is out of range 1-31"),
    ("* * * * 13 *", "month field '13' is out of range 1-12"),
    ("* * * * * 7", "day-of-week field '7' is out of range 0-6"),
    ("*/0 * * * * *", "step that is not a positive whole number"),
    ("*/x * * * * *", "step that is not a positive whole number"),
    ("* 30-10 * * * *", "runs backwards"),
    ("* * * * Foo *", "is not a number"),
    ("* * * ? * *", "is not a number"),
    ("0 0 0 30 2 *", "never fires"),
    ("", "has 0 fields"),
]


@pytest.mark.parametrize(("expression", "reason"), INVALID_CASES)
def test_invalid_cron_expression_is_rejected_with_the_reason(expression, reason):
    with pytest.raises(ScheduleError, match=reason.replace("*", r"\*")):
        parse_schedule(expression, {})


TIMESPAN_CASES = [
    ("00:00:30", timedelta(seconds=30)),
    ("01:02:03", timedelta(hours=1, minutes=2, seconds=3)),
    ("1.00:00:00", timedelta(days=1)),
    ("00:00:00.5", timedelta(milliseconds=500)),
]


@pytest.mark.parametrize(("text", "interval"), TIMESPAN_CASES)
def test_timespan_schedule_fires_one_interval_after(text, interval):
    after = at("2025-01-01T00:00:00")
    assert parse_schedule(text, {}).next_fire(after) == after + interval


INVALID_TIMESPAN_CASES = [
    ("24:00:00", "hours must be 0-23"),
    ("00:60:00", "minutes and seconds 0-59"),
    ("1:2", "expected"),
    ("soon", "expected"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID_TIMESPAN_CASES)
def test_invalid_timespan_is_rejected_with_the_reason(text, reason):
    with pytest.raises(ScheduleError, match=reason):
        parse_timespan(text)


def test_zero_timespan_schedule_is_rejected_because_it_would_fire_continuously():
    with pytest.raises(ScheduleError, match="must be positive"):
        parse_schedule("00:00:00", {})


def test_schedule_is_read_from_the_app_setting_it_names():
    schedule = parse_schedule("%RECONCILE_SCHEDULE%", {"RECONCILE_SCHEDULE": "0 */2 * * * *"})
    assert schedule.next_fire(at("2025-01-01T00:00:10")) == at("2025-01-01T00:02:00")


def test_schedule_naming_an_unset_app_setting_is_rejected_with_its_name():
    with pytest.raises(MissingAppSettingError, match="RECONCILE_SCHEDULE"):
        parse_schedule("%RECONCILE_SCHEDULE%", {})
