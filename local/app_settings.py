"""`%NAME%` references to app settings, as the Functions host resolves them in binding properties.

A schedule of `%RECONCILE_SCHEDULE%` or a queue name of `%PREFIX%-work` is read from the app settings when the
host starts, so one app can run with different values per environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MissingAppSettingError", "resolve_setting_references"]

_REFERENCE = re.compile(r"%(?P<name>[A-Za-z_][A-Za-z0-9_.:-]*)%")


class MissingAppSettingError(LookupError):
    """A binding property refers to an app setting that is not set."""


def resolve_setting_references(text: str, settings: Mapping[str, str]) -> str:
    """Replace every `%NAME%` in `text` with the app setting NAME; text without references is returned as is."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in settings:
            raise MissingAppSettingError(f"{text!r} refers to app setting {name!r}, which is not set")
        return settings[name]

    return _REFERENCE.sub(substitute, text)
