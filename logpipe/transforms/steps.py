"""The field steps: ``drop``, ``rename``, ``remove``, ``set``, ``parse``, ``sample`` and
``throttle``, each built once from its config into a chunk step.

``sample`` and ``throttle`` keep state per key value; at most ``MAX_KEYS`` keys are held
(beyond that the state is reset), so hostile key values cannot grow memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..config import (
    Condition,
    DropTransform,
    ParseTransform,
    RemoveTransform,
    RenameTransform,
    SampleTransform,
    SetTransform,
    ThrottleTransform,
)
from ..parse.body import RESERVED, decode_body, normalize_level
from ..safe_regex import compile_checked
from .base import Context, Predicate, Step, as_text, change_each, drop_where
from .conditions import condition

__all__ = [
    "MAX_KEYS",
    "drop_step",
    "rename_step",
    "remove_step",
    "set_step",
    "parse_step",
    "sample_step",
    "throttle_step",
]

MAX_KEYS = 10_000


def drop_step(c: DropTransform, when: Predicate | None, ctx: Context) -> Step:
    if c.absent:
        name = c.field
        matched: Predicate = lambda e: name not in e  # noqa: E731
    else:
        matched = condition(Condition(field=c.field, equals=c.equals, contains=c.contains, matches=c.matches))
    if c.invert:
        return drop_where(lambda e: not matched(e), when)
    return drop_where(matched, when)


def rename_step(c: RenameTransform, when: Predicate | None, ctx: Context) -> Step:
    pairs = tuple(c.fields.items())

    def change(e: dict) -> None:
        for old, new in pairs:
            if old in e:
                e[new] = e.pop(old)

    return change_each(change, when)


def remove_step(c: RemoveTransform, when: Predicate | None, ctx: Context) -> Step:
    names = tuple(c.fields)

    def change(e: dict) -> None:
        for name in names:
            e.pop(name, None)

    return change_each(change, when)


_TEMPLATE = re.compile(r"\{([^{}]+)\}")


def _template(text: str) -> Callable[[dict], object] | None:
    """``"{app_name}-{level}"`` -> renderer; None when ``text`` has no ``{field}``."""
    parts = _TEMPLATE.split(text)
    if len(parts) == 1:
        return None
    literals, names = parts[0::2], parts[1::2]

    def render(e: dict) -> str:
        out = [literals[0]]
        for name, literal in zip(names, literals[1:], strict=True):
            v = e.get(name)
            out.append("" if v is None else as_text(v))
            out.append(literal)
        return "".join(out)

    return render


def set_step(c: SetTransform, when: Predicate | None, ctx: Context) -> Step:
    constants = []
    templates = []
    for name, value in c.fields.items():
        render = _template(value) if type(value) is str else None
        (templates if render else constants).append((name, render or value))
    overwrite = c.overwrite

    def change(e: dict) -> None:
        # Templates read the event before this step changes it.
        rendered = [(name, render(e)) for name, render in templates]
        for name, value in constants + rendered:
            if overwrite or name not in e:
                e[name] = value

    return change_each(change, when)


def parse_step(c: ParseTransform, when: Predicate | None, ctx: Context) -> Step:
    source, prefix, drop_field, fmt = c.field, c.prefix, c.drop_field, c.format
    regex = compile_checked(c.pattern) if c.pattern else None
    failed = ctx.failed

    def decode(text: str) -> dict | None:
        if regex is not None:
            return regex.named_groups(text)
        is_json = text.lstrip()[:1] == "{"
        if is_json != (fmt == "json"):
            return None
        return decode_body(text)

    def step(events: list[dict]) -> list[dict]:
        failures = 0
        for e in events:
            if when is not None and not when(e):
                continue
            v = e.get(source)
            fields = decode(v) if type(v) is str else None
            if not fields:
                failures += 1
                continue
            if drop_field:
                del e[source]
            if not prefix:
                level = next((fields[k] for k in ("level", "lvl", "severity", "loglevel") if k in fields), None)
                for key in [k for k in fields if k in RESERVED]:
                    fields["body." + key] = fields.pop(key)
                if level is not None and normalize_level(level) is not None:
                    e["level"] = normalize_level(level)
            for key, value in fields.items():
                e[prefix + key] = value
        if failures:
            failed.inc(failures)
        return events

    return step


def _key_of(name: str | None) -> Callable[[dict], object]:
    if name is None:
        return lambda e: None
    return lambda e: e.get(name)


def sample_step(c: SampleTransform, when: Predicate | None, ctx: Context) -> Step:
    rate, key_of = c.rate, _key_of(c.key)
    seen: dict[object, int] = {}

    def drops(e: dict) -> bool:
        key = key_of(e)
        if type(key) not in (str, int, float, bool, type(None)):
            key = as_text(key)
        n = seen.get(key, 0)
        if n == 0 and len(seen) >= MAX_KEYS:
            seen.clear()
        seen[key] = n + 1 if n + 1 < rate else 0
        return n != 0

    return drop_where(drops, when)


def throttle_step(c: ThrottleTransform, when: Predicate | None, ctx: Context) -> Step:
    limit, key_of, clock = c.per_second, _key_of(c.key), ctx.clock
    counts: dict[object, int] = {}
    window = [-1]

    def step(events: list[dict]) -> list[dict]:
        now = int(clock())
        if now != window[0]:
            window[0] = now
            counts.clear()
        kept = []
        for e in events:
            if when is None or when(e):
                key = key_of(e)
                if type(key) not in (str, int, float, bool, type(None)):
                    key = as_text(key)
                n = counts.get(key, 0)
                if n >= limit:
                    continue
                if n == 0 and len(counts) >= MAX_KEYS:
                    counts.clear()
                counts[key] = n + 1
            kept.append(e)
        return kept

    return step
