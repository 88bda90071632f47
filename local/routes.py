"""Azure Functions route templates (`clusters/{name}/reconcile`) matched against request paths.

Supported, as ASP.NET routing reads them: literal segments (case-insensitive), `{name}`, `{name?}` (optional, last
segments only), `{name:int}` / `{name:alpha}` / `{name:guid}` / `{name:bool}` constraints, and a final `{*rest}`.
When several templates match, the most specific wins: literal > constrained > plain > optional > catch-all,
segment by segment, which is the precedence the Functions host uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

__all__ = ["RouteMatch", "RouteTable", "RouteTemplate", "RouteTemplateError"]

T = TypeVar("T")


class RouteTemplateError(ValueError):
    """A route template the local host cannot read."""


_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": lambda value: re.fullmatch(r"-?\d+", value) is not None,
    "alpha": lambda value: re.fullmatch(r"[A-Za-z]+", value) is not None,
    "guid": lambda value: re.fullmatch(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}", value) is not None,
    "bool": lambda value: value.lower() in ("true", "false"),
}

_PARAMETER = re.compile(
    r"^\{(?P<catch_all>\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<constraint>\w+))?(?P<optional>\?)?\}$"
)

# Lower sorts first: how specific a segment is.
_LITERAL, _CONSTRAINED, _PLAIN, _OPTIONAL, _CATCH_ALL = range(5)


@dataclass(frozen=True)
class _Segment:
    kind: int
    text: str  # the literal (lower-cased) or the parameter name
    constraint: str | None = None

    def accepts(self, value: str) -> bool:
        if self.kind == _LITERAL:
            return value.lower() == self.text
        return self.constraint is None or _CONSTRAINTS[self.constraint](value)


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        parts = [part for part in template.strip("/").split("/") if part]
        segments = tuple(_parse_segment(part, template) for part in parts)
        for index, segment in enumerate(segments):
            after = segments[index + 1 :]
            if segment.kind == _CATCH_ALL and after:
                raise RouteTemplateError(f"route {template!r}: a catch-all parameter must be the last segment")
            if segment.kind == _OPTIONAL and any(later.kind not in (_OPTIONAL, _CATCH_ALL) for later in after):
                raise RouteTemplateError(f"route {template!r}: only the last segments may be optional")
        names = [segment.text for segment in segments if segment.kind != _LITERAL]
        if len(names) != len(set(names)):
            raise RouteTemplateError(f"route {template!r} names a parameter twice")
        return cls(template.strip("/"), segments)

    @property
    def precedence(self) -> tuple[int, ...]:
        return tuple(segment.kind for segment in self.segments)

    def match(self, path_segments: Sequence[str]) -> dict[str, str] | None:
        """Route parameters (URL-decoded) when the path matches, else None."""
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.kind == _CATCH_ALL:
                rest = "/".join(unquote(part) for part in path_segments[index:])
                if rest:
                    values[segment.text] = rest
                return values
            if index >= len(path_segments):
                return values if segment.kind == _OPTIONAL else None
            value = unquote(path_segments[index])
            if not segment.accepts(value):
                return None
            if segment.kind != _LITERAL:
                values[segment.text] = value
        return values if len(path_segments) == len(self.segments) else None


def _parse_segment(part: str, template: str) -> _Segment:
    if "{" not in part and "}" not in part:
        return _Segment(_LITERAL, part.lower())
    match = _PARAMETER.match(part)
    if match is None:
        raise RouteTemplateError(
            f"route {template!r}: segment {part!r} is not supported locally (use a literal or one whole {{parameter}})"
        )
    constraint = match["constraint"]
    if constraint is not None and constraint not in _CONSTRAINTS:
        raise RouteTemplateError(
            f"route {template!r}: constraint {constraint!r} is not supported locally ({', '.join(_CONSTRAINTS)})"
        )
    if match["catch_all"]:
        return _Segment(_CATCH_ALL, match["name"])
    if match["optional"]:
        return _Segment(_OPTIONAL, match["name"], constraint)
    return _Segment(_CONSTRAINED if constraint else _PLAIN, match["name"], constraint)


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    target: T | None  # None when the path matched but no route allows the method
    route_params: dict[str, str]
    allowed_methods: tuple[str, ...]


class RouteTable(Generic[T]):
    """Templates with the methods each allows, mapped to a target (the function to run)."""

    def __init__(self, entries: Iterable[tuple[str, Sequence[str], T]]) -> None:
        parsed = [
            (RouteTemplate.parse(template), tuple(m.upper() for m in methods), target)
            for template, methods, target in entries
        ]
        self._entries = sorted(parsed, key=lambda entry: entry[0].precedence)

    def resolve(self, method: str, path: str) -> RouteMatch[T] | None:
        """The most specific route for (method, path); None when no template matches the path at all."""
        path_segments = [part for part in path.split("/") if part]
        allowed: list[str] = []
        for template, methods, target in self._entries:
            route_params = template.match(path_segments)
            if route_params is None:
                continue
            if method.upper() in methods:
                return RouteMatch(target, route_params, methods)
            allowed.extend(m for m in methods if m not in allowed)
        if not allowed:
            return None
        return RouteMatch(None, {}, tuple(allowed))
