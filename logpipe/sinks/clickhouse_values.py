"""ClickHouse values: event field values converted to what a column of a given type
accepts in JSONEachRow, planned once per table (``TableSchema``) from DESCRIBE.

Integer/float columns get a number or the configured ``column_defaults`` value (or the key
is omitted, so the server's default applies); DateTime gets integer unix seconds and
DateTime64 fractional unix seconds, forms both old (18.16) and new servers parse with no
timezone ambiguity (text would be read in the server's timezone); Date gets
``YYYY-MM-DD``; String gets JSON text for non-strings. A timestamp that cannot be read is
sent as it is, so the server rejects that row and it is dead-lettered rather than stored
with a wrong time.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["TableSchema", "converter", "parse_timestamp"]

_MISSING = object()  # "omit this key"
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?\s*(Z|z|[+-]\d\d:?\d\d)?")


def parse_timestamp(value: Any) -> tuple[int, int] | None:
    """(unix seconds, nanoseconds) from RFC 3339 text or a unix number, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        magnitude = abs(value)
        scale = 1 if magnitude < 1e11 else 1e3 if magnitude < 1e14 else 1e6 if magnitude < 1e17 else 1e9
        if isinstance(value, int) and scale != 1:
            ns = value * (1_000_000_000 // int(scale))
            return ns // 1_000_000_000, ns % 1_000_000_000
        seconds = value / scale
        whole = math.floor(seconds)
        return int(whole), int(round((seconds - whole) * 1e9)) % 1_000_000_000
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        text = value.strip()
        if text.isdigit():
            return parse_timestamp(int(text))
        return None
    y, mo, d, h, mi, s, frac, tz = match.groups()
    try:
        dt.date(int(y), int(mo), int(d))
    except ValueError:
        return None
    if int(h) > 23 or int(mi) > 59 or int(s) > 60:
        return None
    seconds = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    nanos = int((frac or "0").ljust(9, "0")[:9])
    return seconds, nanos


_INT_RANGES = {
    f"{sign}Int{bits}": ((0, 2**bits - 1) if sign == "U" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    for sign in ("", "U")
    for bits in (8, 16, 32, 64, 128, 256)
}


def _to_int(value: Any, low: int, high: int) -> Any:
    if isinstance(value, bool):
        number: Any = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                f = float(text)
                number = int(f) if math.isfinite(f) and f.is_integer() else None
            except ValueError:
                number = None
    else:
        number = None
    if number is None or not (low <= number <= high):
        return _MISSING
    return number


def _to_float(value: Any) -> Any:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return _MISSING
    else:
        return _MISSING
    return number if math.isfinite(number) else _MISSING


def _to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _to_datetime(value: Any) -> Any:
    parsed = parse_timestamp(value)
    return _MISSING if parsed is None or parsed[0] < 0 else parsed[0]


def _to_datetime64(precision: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        parsed = parse_timestamp(value)
        if parsed is None:
            return _MISSING
        seconds, nanos = parsed
        if precision == 0:
            return seconds
        digits = str(nanos).rjust(9, "0")[:precision]
        # A JSON number with exactly these digits: a float could round the last ones.
        return orjson.Fragment(f"{seconds}.{digits}".encode())

    return convert


def _to_date(value: Any) -> Any:
    parsed = parse_timestamp(value)
    if parsed is None:
        return _MISSING
    return time.strftime("%Y-%m-%d", time.gmtime(parsed[0]))


def converter(column_type: str) -> tuple[Callable[[Any], Any] | None, bool, bool]:
    """(convert or None for pass-through, nullable, is_timestamp) for a ClickHouse type."""
    nullable = False
    inner = column_type.strip()
    while True:
        match = re.fullmatch(r"(Nullable|LowCardinality)\((.*)\)", inner)
        if not match:
            break
        nullable = nullable or match.group(1) == "Nullable"
        inner = match.group(2).strip()
    base = inner.split("(", 1)[0]
    if base in _INT_RANGES:
        low, high = _INT_RANGES[base]
        return (lambda v: _to_int(v, low, high)), nullable, False
    if base in ("Float32", "Float64"):
        return _to_float, nullable, False
    if base == "Bool":
        return (lambda v: _to_int(v, 0, 1)), nullable, False
    if base in ("String", "FixedString"):
        return _to_string, nullable, False
    if base == "DateTime":
        return _to_datetime, nullable, True
    if base == "DateTime64":
        precision = int(re.match(r"DateTime64\((\d+)", inner).group(1)) if "(" in inner else 3  # type: ignore[union-attr]
        return _to_datetime64(precision), nullable, True
    if base in ("Date", "Date32"):
        return _to_date, nullable, True
    return None, nullable, False


class TableSchema:
    """Per-column converters of one table, built once from DESCRIBE."""

    def __init__(self, types: dict[str, str], defaults: dict[str, Any]) -> None:
        self.types = types
        self.plans: dict[str, tuple[Callable[[Any], Any], bool, bool, Any]] = {}
        for column, column_type in types.items():
            convert, nullable, is_time = converter(column_type)
            if convert is not None:
                self.plans[column] = (convert, nullable, is_time, defaults.get(column, _MISSING))

    def convert(self, row: dict) -> dict:
        plans = self.plans
        for column in [c for c in row if c in plans]:
            value = row[column]
            convert, nullable, is_time, default = plans[column]
            if value is None:
                if not nullable:
                    del row[column]
                continue
            converted = convert(value)
            if converted is _MISSING:
                if default is not _MISSING:
                    row[column] = default
                elif is_time:
                    pass  # keep it: the server rejects the row and it is dead-lettered
                else:
                    del row[column]
            else:
                row[column] = converted
        return row
