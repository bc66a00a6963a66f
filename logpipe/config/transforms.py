"""``[[transforms]]``: one Struct per transform type, a tagged union on ``type``."""

from __future__ import annotations

from typing import Literal

from msgspec import field

from ..safe_regex import compile_checked
from .base import Base, PositiveInt

# --- transforms ------------------------------------------------------------------------
# One Struct per `[[transforms]]` type, tagged on `type`; logpipe/transforms/ builds each
# into a step once. Regexes are compiled here too so `logpipe validate` reports a bad or
# unsafe one (logpipe/safe_regex.py) with its key path.

Scalar = bool | int | float | str
REDACT_PRESETS = ("email", "card_number", "bearer_token", "url_password")


def _check_regex(key: str, pattern: str | None) -> None:
    if pattern is not None:
        try:
            compile_checked(pattern)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None


class Condition(Base):
    """``{ field = "F", equals = V }``, or ``contains`` / ``matches`` (regex) / ``exists``."""

    field: str
    equals: Scalar | None = None
    contains: str | None = None
    matches: str | None = None
    exists: bool | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("equals", "contains", "matches", "exists") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("field: needs exactly one of equals, contains, matches, exists")
        _check_regex("matches", self.matches)


class _TransformBase(Base, tag_field="type", kw_only=True):
    # Only events matching `when` go through the transform; the rest pass untouched.
    when: Condition | None = None
    # Label in metrics and in `logpipe test` (default "INDEX:TYPE").
    name: str | None = None


class DropTransform(_TransformBase, tag="drop", kw_only=True):
    field: str
    equals: Scalar | None = None
    contains: str | None = None
    matches: str | None = None
    absent: bool | None = None
    # Keep the events the condition matches and drop the rest.
    invert: bool = False

    def __post_init__(self) -> None:
        given = [k for k in ("equals", "contains", "matches", "absent") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("field: needs exactly one of equals, contains, matches, absent")
        if self.absent is False:
            raise ValueError("absent: only absent = true makes sense (use invert)")
        _check_regex("matches", self.matches)


class RedactTransform(_TransformBase, tag="redact", kw_only=True):
    fields: list[str] = field(default_factory=lambda: ["_msg"])
    patterns: list[str] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)
    replacement: str = "[REDACTED]"

    def __post_init__(self) -> None:
        if not self.patterns and not self.presets:
            raise ValueError("patterns: needs patterns or presets")
        for preset in self.presets:
            if preset not in REDACT_PRESETS:
                raise ValueError(f"presets: unknown preset {preset!r} (known: {', '.join(REDACT_PRESETS)})")
        for pattern in self.patterns:
            _check_regex("patterns", pattern)


class RenameTransform(_TransformBase, tag="rename", kw_only=True):
    fields: dict[str, str]  # old name -> new name


class RemoveTransform(_TransformBase, tag="remove", kw_only=True):
    fields: list[str]


class SetTransform(_TransformBase, tag="set", kw_only=True):
    # Strings may hold {field} templates; a missing field renders as "".
    fields: dict[str, Scalar]
    overwrite: bool = True


class CoerceTransform(_TransformBase, tag="coerce", kw_only=True):
    fields: dict[str, Literal["int", "float", "bool", "timestamp"]]
    # Value set when a field cannot be converted; without one the field is removed.
    defaults: dict[str, Scalar] = field(default_factory=dict)


class ParseTransform(_TransformBase, tag="parse", kw_only=True):
    field: str = "_msg"
    format: Literal["json", "logfmt", "regex"] = "json"
    pattern: str | None = None  # regex with named groups, for format = "regex"
    prefix: str = ""
    # Remove the source field after a successful parse.
    drop_field: bool = False

    def __post_init__(self) -> None:
        if (self.format == "regex") != (self.pattern is not None):
            raise ValueError('pattern: required with format = "regex", and only then')
        _check_regex("pattern", self.pattern)
        if self.pattern is not None and not compile_checked(self.pattern).groupindex:
            raise ValueError("pattern: needs at least one named group (?P<name>...)")


class SampleTransform(_TransformBase, tag="sample", kw_only=True):
    rate: PositiveInt  # keep 1 in rate events per key
    key: str | None = None  # field whose value keys the count (absent: one count)


class ThrottleTransform(_TransformBase, tag="throttle", kw_only=True):
    per_second: PositiveInt
    key: str | None = None


class Route(Base):
    when: Condition
    sinks: list[str]


class RouteTransform(_TransformBase, tag="route", kw_only=True):
    # First matching route wins; unmatched events go to `default` (absent: every sink).
    routes: list[Route]
    default: list[str] | None = None

    def __post_init__(self) -> None:
        if self.when is not None:
            raise ValueError("when: route takes no when (each route has its own)")


TransformConfig = (
    DropTransform
    | RedactTransform
    | RenameTransform
    | RemoveTransform
    | SetTransform
    | CoerceTransform
    | ParseTransform
    | SampleTransform
    | ThrottleTransform
    | RouteTransform
)


def transform_problems(transforms: list, sinks: dict) -> list[tuple[tuple[str, ...], str]]:
    """Cross-checks needing the whole config: (key path, why) per problem."""
    found: list[tuple[tuple[str, ...], str]] = []
    for i, t in enumerate(transforms):
        if isinstance(t, RouteTransform):
            at = ("transforms", str(i))
            if i != len(transforms) - 1:
                found.append((at + ("type",), "route must be the last transform"))
            for j, route in enumerate(t.routes):
                for name in route.sinks:
                    if name not in sinks:
                        found.append((at + ("routes", str(j), "sinks"), f"unknown sink {name!r}"))
            for name in t.default or ():
                if name not in sinks:
                    found.append((at + ("default",), f"unknown sink {name!r}"))
    return found


