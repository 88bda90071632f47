"""Resource shapes and placement strategies: the part of the model the head agent shares with the control plane.

This module is shipped to the head VM with the agent (see provisioning/azure/cloud_init.agent_source_files) and runs
there on the image's python3, which is 3.10 on Ubuntu 22.04. So it stays stdlib-only and 3.10-compatible (no
enum.StrEnum, no datetime.UTC); `make types` checks it with `mypy --python-version 3.10`. autoscaler/model.py
re-exports every name, so the rest of the control plane imports them from there as before.

Resource shapes are kept as sorted tuples of (name, amount) so they hash and compare, and demand is always
"shape x count", never one dict per bundle.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

Shape = tuple[tuple[str, float], ...]
"""A resource shape, e.g. (("CPU", 1.0), ("GPU", 1.0)): sorted by name, zero amounts dropped."""


def shape_of(resources: Mapping[str, float]) -> Shape:
    """The canonical shape of a resource dict (sorted, zero amounts dropped)."""
    return tuple(sorted((name, float(amount)) for name, amount in resources.items() if amount))


def shape_dict(shape: Shape) -> dict[str, float]:
    return dict(shape)


def format_shape(shape: Shape) -> str:
    """`{CPU: 1, GPU: 1}`: how shapes appear in reasons and status lines."""
    inner = ", ".join(f"{name}: {amount:g}" for name, amount in shape)
    return "{" + inner + "}"


class GangStrategy(str, enum.Enum):  # noqa: UP042 -- enum.StrEnum is 3.11+; this runs on 3.10
    """A placement group's strategy, named as Ray names it.

    A `str` mixin with `__str__` returning the value behaves like 3.11's StrEnum (str(), f-strings and JSON give
    "PACK"), which 3.10 lacks.
    """

    PACK = "PACK"
    SPREAD = "SPREAD"
    STRICT_PACK = "STRICT_PACK"
    STRICT_SPREAD = "STRICT_SPREAD"

    def __str__(self) -> str:
        return str(self.value)
