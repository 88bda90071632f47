"""Ray 2.60 label selectors against node labels, as Ray's autoscaler v2 scheduler matches them.

A demand carries a tuple of selectors in Ray's order (`label_selector` first, then `fallback_strategy`'s): a node may
take it when it satisfies one of them, and a node that satisfies an earlier one is preferred (Ray's
`_satisfies_label_constraints` score: number of selectors minus the index of the first one satisfied). A selector is
satisfied when every constraint is: "in" wants the node's value among the values (a node without the label fails),
"!in" wants it not among them (a node without the label passes); any other operator fails, as in Ray.

Ray's Python syntax, which `parse_selector` reads and `format_selector` writes: {"zone": "westus2-1"} (equals),
{"zone": "!westus2-1"} (not equals), {"gpu": "in(A100, H100)"}, {"gpu": "!in(T4, A10)"}.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from autoscaler.model import LabelConstraint, LabelSelector

Selectors = tuple[LabelSelector, ...]
"""A demand's label selectors in Ray's order (the first preferred); () places it anywhere."""

IN = "in"
NOT_IN = "!in"
_SET_SYNTAX = re.compile(r"^(!?)in\((.*)\)$")


def parse_selector(selector: Mapping[str, str]) -> LabelSelector:
    """Ray's dict syntax -> constraints (sorted by key). ValueError for a value that is not a selector."""
    constraints: list[LabelConstraint] = []
    for key, text in sorted(selector.items()):
        value = text.strip()
        in_set = _SET_SYNTAX.match(value)
        if in_set is not None:
            values = tuple(part.strip() for part in in_set.group(2).split(","))
            if not all(values):
                raise ValueError(f"label selector {key}: {text!r} has an empty value")
            constraints.append((key, NOT_IN if in_set.group(1) else IN, values))
        elif value.startswith("!"):
            constraints.append((key, NOT_IN, (value[1:],)))
        else:
            constraints.append((key, IN, (value,)))
    return tuple(constraints)


def format_selector(selector: LabelSelector) -> str:
    """`{gpu: in(A100, H100), zone: !westus2-1}`: how a selector appears in reasons."""
    parts = []
    for key, operator, values in selector:
        negation = "!" if operator == NOT_IN else "" if operator == IN else f"<{operator}>"
        text = values[0] if len(values) == 1 else f"in({', '.join(values)})"
        parts.append(f"{key}: {negation}{text}")
    return "{" + ", ".join(parts) + "}"


def format_selectors(selectors: Selectors) -> str:
    return " or ".join(format_selector(selector) for selector in selectors)


def satisfies(labels: Mapping[str, str], selector: LabelSelector) -> bool:
    for key, operator, values in selector:
        value = labels.get(key)
        if operator == IN:
            if value not in values:
                return False
        elif operator == NOT_IN:
            if value in values:
                return False
        else:
            return False  # Ray fails a constraint of an unknown operator
    return True


def admits(labels: Mapping[str, str], selectors: Selectors) -> bool:
    """Whether a node with `labels` may take demand with `selectors` (always, without selectors)."""
    return not selectors or any(satisfies(labels, selector) for selector in selectors)


def label_score(labels: Mapping[str, str], selectors: Selectors) -> int:
    """Ray v2's label score: len(selectors) - index of the first selector satisfied; 0 without selectors or match."""
    for index, selector in enumerate(selectors):
        if satisfies(labels, selector):
            return len(selectors) - index
    return 0


def conjunction(each: Iterable[Selectors]) -> Selectors:
    """Selectors that hold where every one of `each` holds (a STRICT_PACK group on one node): the combinations of
    one alternative from each, in priority order. () when none of them selects."""
    combined: list[LabelSelector] = [()]
    for selectors in each:
        if not selectors:
            continue
        combined = [tuple(sorted({*left, *right})) for left in combined for right in selectors]
    return tuple(dict.fromkeys(combined)) if combined != [()] else ()


def selectors_json(selectors: Sequence[LabelSelector]) -> list[list[dict[str, object]]]:
    """JSON-ready form (the head agent's wire form): [[{key, operator, values}]]."""
    return [
        [{"key": key, "operator": operator, "values": list(values)} for key, operator, values in selector]
        for selector in selectors
    ]
