"""The ``coerce`` step and its value converters (int, float, bool, timestamp).

A converter returns ``MISSING`` for a value it cannot convert; the step then sets the
configured default or removes the field, and counts the failure (per chunk).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..config import CoerceTransform
from ..parse.timestamps import TimeValueReader
from .base import MISSING, Context, Predicate, Step

__all__ = ["coerce_step"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


def _to_int(v: object) -> object:
    kind = type(v)
    if kind is int:
        return v if _INT64_MIN <= v <= _INT64_MAX else MISSING  # type: ignore[operator]
    if kind is float:
        return int(v) if math.isfinite(v) and v == int(v) and _INT64_MIN <= v <= _INT64_MAX else MISSING  # type: ignore
    if kind is str:
        try:
            n = int(v)  # type: ignore[call-overload]
        except ValueError:
            return _to_int(_to_float(v))
        return n if _INT64_MIN <= n <= _INT64_MAX else MISSING
    return MISSING


def _to_float(v: object) -> object:
    kind = type(v)
    if kind is float or kind is int:
        f = float(v)  # type: ignore[arg-type]
    elif kind is str and len(v) < 64:  # type: ignore[arg-type]
        try:
            f = float(v)  # type: ignore[arg-type]
        except ValueError:
            return MISSING
    else:
        return MISSING
    return f if math.isfinite(f) else MISSING


def _to_bool(v: object) -> object:
    kind = type(v)
    if kind is bool:
        return v
    if kind is int and v in (0, 1):
        return bool(v)
    if kind is str:
        word = v.strip().lower()  # type: ignore[union-attr]
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return MISSING


def _timestamp_converter() -> Callable[[object], object]:
    read = TimeValueReader("UTC")

    def convert(v: object) -> object:
        stamp = read(v)
        return MISSING if stamp is None else stamp

    return convert


def coerce_step(c: CoerceTransform, when: Predicate | None, ctx: Context) -> Step:
    converters = {"int": _to_int, "float": _to_float, "bool": _to_bool, "timestamp": _timestamp_converter()}
    plan = tuple((name, converters[kind], c.defaults.get(name, MISSING)) for name, kind in c.fields.items())
    failed = ctx.failed

    def step(events: list[dict]) -> list[dict]:
        failures = 0
        for e in events:
            if when is not None and not when(e):
                continue
            for name, convert, default in plan:
                v = e.get(name, MISSING)
                if v is MISSING:
                    continue
                new = convert(v)
                if new is MISSING:
                    failures += 1
                    if default is MISSING:
                        del e[name]
                    else:
                        e[name] = default
                elif new is not v:
                    e[name] = new
        if failures:
            failed.inc(failures)
        return events

    return step
