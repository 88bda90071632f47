"""App settings: the retention settings, their defaults and what is refused (naming the setting)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from autoscaler import wiring
from autoscaler.settings import Settings, SettingsError

REQUIRED = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "CLUSTER_TOKEN_KEY": "k" * 40}


def test_retention_defaults_are_seven_days_500_events_and_24_hours():
    settings = Settings.from_environment(REQUIRED)
    assert (settings.event_retention_days, settings.events_per_cluster, settings.deleted_cluster_retention_hours) == (
        7.0,
        500,
        24.0,
    )


def test_the_retention_settings_reach_the_service():
    settings = Settings.from_environment(
        {**REQUIRED, "EVENT_RETENTION_DAYS": "2", "EVENTS_PER_CLUSTER": "50", "DELETED_CLUSTER_RETENTION_HOURS": "0.5"}
    )
    retention = wiring.build_service(settings).retention
    assert (retention.event_max_age, retention.events_per_cluster, retention.deleted_cluster_rows) == (
        timedelta(days=2),
        50,
        timedelta(minutes=30),
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENT_RETENTION_DAYS", "a week"),
        ("EVENT_RETENTION_DAYS", "0"),
        ("EVENT_RETENTION_DAYS", "nan"),
        ("EVENTS_PER_CLUSTER", "12.5"),
        ("EVENTS_PER_CLUSTER", "-1"),
        ("DELETED_CLUSTER_RETENTION_HOURS", "inf"),
    ],
)
def test_a_retention_setting_that_is_not_a_positive_number_is_refused_naming_it(name: str, value: str):
    with pytest.raises(SettingsError, match=name):
        Settings.from_environment({**REQUIRED, name: value})
