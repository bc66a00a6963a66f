"""Message bodies -> fields: JSON objects and logfmt, and ``level`` normalization. Sans-IO.

The rule (spec, "Precise rules" -> Bodies):
- A message that is a JSON object (surrounding whitespace allowed), or logfmt with at least
  two ``key=value`` pairs and nothing else (``lvl=warn msg="retry in 5 seconds"``), adds its
  top-level keys as fields. Prose that merely contains ``k=v`` pairs is not logfmt: every
  token must be a pair, so ``authentication failure; uid=0 euid=0`` stays text.
- ``msg``, else ``message``, becomes ``_msg`` and is not repeated as a field; otherwise
  ``_msg`` stays the whole body.
- The first present of ``level``, ``lvl``, ``severity``, ``loglevel`` sets ``level`` when its
  value normalizes (:func:`normalize_level`); an unknown value leaves ``level`` alone.
- A body key named like a header field or parser flag (:data:`RESERVED`), or like a field
  the line already has (structured data), is stored as ``body.KEY``.

Value types: JSON strings, integers (within int64), finite floats and booleans keep their
JSON type; JSON ``null`` is dropped (VictoriaLogs stores an empty value as no field, and a
null would fail a non-Nullable ClickHouse column); integers beyond int64 and non-finite
floats become their decimal text (encoders cannot write them); nested objects and arrays
become their JSON text. logfmt values are always strings. A duplicated key keeps its last
value. ``msg``/``message`` that is null counts as absent; any other non-string becomes JSON
text.

Provenance for the label join: an event that got body fields is a :class:`BodyEvent`, a
``dict`` subclass (JSON encoders treat it as a dict) whose ``body_keys`` names the fields
that came from the body. Events without a body stay plain dicts, so this costs nothing on
the common path. :func:`apply_labels` implements the spec's join rule with it: labels never
overwrite the line's own fields, except that a body key colliding with a label moves to
``body.KEY`` and the label takes its name.

State: :class:`BodyReader` (one per parser) keeps the two speed-ups that learn from a
source's bodies (the skip of typed JSON decoding after a failure, and the merge decisions
per key sequence); :func:`decode_body` and :func:`apply_body` are the same rule without
them, for callers that see one body at a time. No module-level mutable state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, NamedTuple, cast

import msgspec

__all__ = [
    "BODY_STARTS",
    "HEADER_FIELDS",
    "LEVEL_KEYS",
    "RESERVED",
    "BodyEvent",
    "BodyReader",
    "decode_body",
    "apply_body",
    "apply_labels",
    "as_msg",
    "level_of",
    "normalize_level",
    "scalar_text",
]

# Header field names (spec): a body key with one of these names is stored as body.KEY,
# whether or not this line has the field.
HEADER_FIELDS = frozenset({
    "_time", "_msg", "hostname", "app_name", "proc_id", "msg_id", "facility",
    "severity", "source_ip", "level",
})
# The parser's own flags and the listener's name (SyslogParser's ``source``) are protected
# the same way, so a body can never fake them.
RESERVED = HEADER_FIELDS | {"parse_error", "truncated", "logpipe_source"}

# Spec: normalized level keywords; 0-7 read as syslog severities.
_LEVEL_WORDS = {
    "emerg": "emerg", "emergency": "emerg", "panic": "emerg",
    "alert": "alert",
    "crit": "crit", "critical": "crit", "fatal": "crit",
    "err": "error", "error": "error",
    "warn": "warn", "warning": "warn",
    "notice": "notice",
    "info": "info", "information": "info", "informational": "info",
    "debug": "debug", "trace": "debug", "verbose": "debug",
}
SEVERITY_LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
_LEVEL_WORDS.update({str(i): name for i, name in enumerate(SEVERITY_LEVELS)})
LEVEL_KEYS = ("level", "lvl", "severity", "loglevel")  # the first present sets ``level``
_LEVEL_KEYS = LEVEL_KEYS
# The first characters of a message that can be a JSON body ("{", or whitespace before it):
# with "=" for logfmt, the parsers' test for "may have a body" before calling apply (one set
# lookup instead of two slices and str.isspace).
# (Every character str.isspace() accepts, spelled out: tests/parse/test_parse_body.py checks it.)
BODY_STARTS = frozenset(
    "{\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_json_decode = msgspec.json.Decoder().decode
# The common JSON body: every value a string, a bool, an int64 or a finite float, which is
# the answer as decoded. Typed decoding checks that in C instead of a loop over the values;
# anything else (null, nesting, a big number) is a ValidationError and takes the general
# path (measured 0.53 -> 0.25 us for the benchmark's JSON body). A failure costs ~0.5 us
# for the exception, so after one a BodyReader skips the attempt for the next _TYPED_SKIPS
# bodies: a source of nested bodies pays it once per 17 (cheap, and no worse when the
# guess is wrong).
_INT64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]
_FINITE = Annotated[float, msgspec.Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]
_json_decode_plain = cast(  # its values are objects to the event that takes them
    Callable[[str], dict[str, object]],
    msgspec.json.Decoder(dict[str, str | bool | _INT64 | _FINITE]).decode)
_TYPED_SKIPS = 16
_json_encode = msgspec.json.Encoder().encode

# One logfmt pair: key (no space, '=' or '"'), '=', then a quoted Go-style string or a bare
# value (possibly empty, as in "logname= uid=0"). Pairs are separated by whitespace, so
# the match is unambiguous and linear (no catastrophic backtracking).
_PAIR = r'[^\s="]+=(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^\s"]*)'
_LOGFMT = re.compile(rf"\s*{_PAIR}(?:\s+{_PAIR})+\s*", re.DOTALL)
# The same pair with groups: key, quoted value (without quotes), bare value.
_LOGFMT_PAIR = re.compile(r'([^\s="]+)=(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s"]*))', re.DOTALL)
# One pass that both validates and extracts: each whitespace-separated token is a pair
# (groups 1-3, ending at whitespace or the end) or anything else (group 4: not logfmt).
# It accepts exactly what _LOGFMT.fullmatch accepts, and replaces that match plus a
# findall (measured 2.25 -> ~1.2 us for a four-pair line).
_LOGFMT_TOKENS = re.compile(
    r'\s*(?:([^\s="]+)=(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s"]*))(?=\s|\Z)|(\S+))', re.DOTALL)
# Prose rarely starts with "key=": checked first, so text is not scanned twice for nothing.
_LOGFMT_START = re.compile(r'\s*[^\s="]+=')
_LOGFMT_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


class BodyEvent(dict[str, object]):
    """An event with fields from its message body; ``body_keys`` names them (after any
    ``body.`` renaming). Encodes exactly like a dict."""

    __slots__ = ("body_keys",)

    body_keys: frozenset[str]


def normalize_level(value: object) -> str | None:
    """``"WARNING"`` -> ``"warn"``, ``3`` / ``"3"`` -> ``"error"``; unknown -> None."""
    if type(value) is str:
        return _LEVEL_WORDS.get(value.strip().lower())
    if type(value) is int and 0 <= value <= 7:
        return SEVERITY_LEVELS[value]
    return None


def _unescape_logfmt(match: re.Match[str]) -> str:
    code = match.group(1)
    if len(code) == 5:
        return chr(int(code[1:], 16))
    return _ESCAPES.get(code, code)


def _json_value(value: object) -> object:
    kind = type(value)
    if kind is str or kind is bool:
        return value
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)  # type: ignore[operator]
    if kind is float:
        return value if math.isfinite(value) else str(value)  # type: ignore[arg-type]
    return _json_encode(value).decode()


def decode_body(text: str) -> dict[str, object] | None:
    """The top-level fields of a JSON-object or logfmt message, or None when it is
    neither. Never raises. (Stateless: typed JSON decoding is tried on every body.)"""
    first = text[:1]
    if first == "{" or (first.isspace() and text.lstrip()[:1] == "{"):
        try:
            return _json_decode_plain(text)
        except msgspec.ValidationError:  # not plain: the general decode below
            return _decode_json(text)
        except (msgspec.DecodeError, RecursionError, ValueError):
            return None
    return _decode_logfmt(text)


def _decode_json(text: str) -> dict[str, object] | None:
    """A JSON object's fields with every value made storable (see the module rule)."""
    try:
        decoded = _json_decode(text)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None
    if type(decoded) is not dict:
        return None
    # Skipped bodies may be plain: then the decoded dict is the answer.
    for value in decoded.values():
        kind = type(value)
        if kind is str or kind is bool:
            continue
        if kind is int and _INT64_MIN <= value <= _INT64_MAX:
            continue
        if kind is float and math.isfinite(value):
            continue
        return {key: _json_value(value) for key, value in decoded.items() if value is not None}
    return decoded


def _decode_logfmt(text: str) -> dict[str, object] | None:
    """The fields of a logfmt message, or None when it is not one."""
    if "=" not in text or _LOGFMT_START.match(text) is None:
        return None
    if "\\" not in text:
        fields = _logfmt_plain(text)
        if fields is not None:
            return fields
    tokens = _LOGFMT_TOKENS.findall(text)
    if len(tokens) < 2:
        return None
    for token in tokens:
        if token[3]:
            return None
    if "\\" not in text:  # no escapes: one comprehension (measured 2x the loop below)
        return {key: quoted or bare for key, quoted, bare, _ in tokens}
    fields = {}
    for key, quoted, bare, _ in tokens:
        if "\\" in quoted:
            quoted = _LOGFMT_ESCAPE.sub(_unescape_logfmt, quoted)
            # A \uD800-style escape would leave a lone surrogate that no encoder takes.
            quoted = quoted.encode("utf-8", "replace").decode("utf-8")
        fields[key] = quoted or bare
    return fields


def _logfmt_plain(text: str) -> dict[str, object] | None:
    """The logfmt fields of ``text`` (which has no backslash), or None when it is not
    plainly logfmt: the caller then asks _LOGFMT_TOKENS, which decides.

    Without backslashes every '"' delimits a quoted value, so str.split finds the values at
    memchr speed where the regex walks the long quoted msg one character at a time
    (measured 1.75 -> ~1.0 us for the benchmark's logfmt body, dict included). With each
    quoted value cut down to one '"', the text must be whitespace-separated ``key=bare`` or
    ``key="`` tokens: that is exactly what the regex accepts, with the same fields."""
    parts = text.split('"')
    if not len(parts) % 2:  # an unpaired quote
        return None
    tokens = '"'.join(parts[::2]).split()
    if len(tokens) < 2:
        return None
    quoted = 1  # parts[1], parts[3], ... are the quoted values, in order
    fields: dict[str, object] = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        if not (key and eq):
            return None
        if value == '"':
            value = parts[quoted]
            quoted += 2
        fields[key] = value
    # Each '"' left in the text was a whole value, so no other key or value holds one.
    return fields if quoted == len(parts) else None


def as_msg(value: object) -> str:
    """A ``msg``/``message`` value as ``_msg`` text: a string as is, anything else as JSON."""
    return value if type(value) is str else _json_encode(value).decode()


_as_msg = as_msg


def scalar_text(value: object) -> str | None:
    """A JSON scalar as the text a label or an SD-PARAM carries: a string as is, a boolean
    as ``true``/``false``, a number as Python writes it; ``None`` for anything else (null,
    arrays, objects), which each caller handles its own way (refuse, or JSON text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def level_of(fields: Mapping[str, object]) -> str | None:
    """The normalized value of the first present of :data:`LEVEL_KEYS`; None when there is
    none or it does not normalize (then ``level`` is left alone)."""
    for key in LEVEL_KEYS:
        if key in fields:
            return normalize_level(fields[key])
    return None


class _Shape(NamedTuple):
    """How apply_body merges bodies with one key sequence, worked out once (:func:`_shape`)."""

    msg_key: str | None  # "msg", else "message", else None
    level_key: str | None  # the first present of _LEVEL_KEYS
    unreserved: frozenset[str]  # the remaining keys that clash only if the line has them
    moves: tuple[tuple[str, str], ...]  # (body key, field name) in the order they are added
    body_keys: frozenset[str]


# Bodies of a source repeat a few key sequences (every benchmark body has one of two), and
# each needs the same msg/level/clash decisions: a BodyReader caches them per sequence.
# Bounded in entries and in keys per entry, so hostile bodies cannot grow it (a longer
# sequence is worked out anew for each body).
_SHAPES_MAX = 1024
_SHAPE_KEYS_MAX = 16


def _shape(keys: tuple[str, ...]) -> _Shape:
    """Runs the general path's steps on the key names alone, for a line with none of them."""
    renamed = dict(zip(keys, keys, strict=True))  # field name -> body key
    msg_key = "msg" if "msg" in renamed else "message" if "message" in renamed else None
    if msg_key is not None:
        del renamed[msg_key]
    level_key = next((key for key in _LEVEL_KEYS if key in renamed), None)
    unreserved = renamed.keys() - RESERVED  # before renaming: a "body.X" key can be replaced
    for key in [key for key in renamed if key in RESERVED]:
        renamed["body." + key] = renamed.pop(key)
    return _Shape(msg_key, level_key, frozenset(unreserved),
                  tuple((key, name) for name, key in renamed.items()), frozenset(renamed))


class BodyReader:
    """:func:`apply_body` for one source's stream of bodies, with what it learns from them
    (see the module's "State"). Same results as :func:`apply_body`. Not thread-safe."""

    __slots__ = ("_typed_skips", "_shapes")

    def __init__(self) -> None:
        self._typed_skips = 0  # JSON bodies left that skip _json_decode_plain
        self._shapes: dict[tuple[str, ...], _Shape] = {}

    def apply(self, event: dict[str, object], text: str) -> dict[str, object]:
        """Adds the body fields of ``text`` (the message) to ``event`` per the module rule.
        Returns ``event`` unchanged when the message is no JSON object or logfmt, otherwise a
        :class:`BodyEvent` holding the merged fields. Never raises."""
        first = text[:1]
        if first == "{" or (first.isspace() and text.lstrip()[:1] == "{"):
            fields: dict[str, object] | None
            if self._typed_skips:
                self._typed_skips -= 1
                fields = _decode_json(text)
            else:
                try:
                    fields = _json_decode_plain(text)
                except msgspec.ValidationError:  # not plain: likely the next bodies neither
                    self._typed_skips = _TYPED_SKIPS
                    fields = _decode_json(text)
                except (msgspec.DecodeError, RecursionError, ValueError):
                    return event
        else:
            fields = _decode_logfmt(text)
        if fields is None:
            return event
        keys = tuple(fields)
        shape = self._shapes.get(keys)
        if shape is None:
            shape = _shape(keys)
            if len(keys) <= _SHAPE_KEYS_MAX:
                if len(self._shapes) >= _SHAPES_MAX:
                    self._shapes.clear()
                self._shapes[keys] = shape
        msg_key, level_key, unreserved, moves, body_keys = shape
        # A key the line already has (structured data) is the one case the shape does not
        # know; it is rare and left to the general path.
        if event.keys().isdisjoint(unreserved):
            # The general path's result with its decisions taken from the shape (measured
            # ~0.3 us less for a four-key body); inline, as a call costs ~0.07 us more.
            merged = BodyEvent(event)
            if msg_key is not None:
                msg = fields[msg_key]
                merged["_msg"] = msg if type(msg) is str else _as_msg(msg)
            if level_key is not None:
                value = fields[level_key]
                level = _LEVEL_WORDS.get(value) if type(value) is str else None
                if level is None:
                    level = normalize_level(value)
                if level is not None:
                    merged["level"] = level
            for key, name in moves:
                merged[name] = fields[key]
            merged.body_keys = body_keys
            return merged
        return _apply_general(event, fields)


def apply_body(event: dict[str, object], text: str) -> dict[str, object]:
    """Adds the body fields of ``text`` (the message) to ``event`` per the module rule.
    Returns ``event`` unchanged when the message is no JSON object or logfmt, otherwise a
    :class:`BodyEvent` holding the merged fields. Never raises. (Stateless; a parser uses
    its :class:`BodyReader`.)"""
    fields = decode_body(text)
    if fields is None:
        return event
    return _apply_general(event, fields)


def _apply_general(event: dict[str, object], fields: dict[str, object]) -> BodyEvent:
    """The module rule, step by step (consumes ``fields``)."""
    merged = BodyEvent(event)
    if "msg" in fields:
        msg = fields.pop("msg")
        merged["_msg"] = msg if type(msg) is str else _as_msg(msg)
    elif "message" in fields:
        msg = fields.pop("message")
        merged["_msg"] = msg if type(msg) is str else _as_msg(msg)
    level = level_of(fields)
    if level is not None:
        merged["level"] = level
    if not (fields.keys().isdisjoint(RESERVED) and fields.keys().isdisjoint(event.keys())):
        clashes = []
        for key in fields:
            if key in RESERVED or key in event:
                clashes.append(key)
        for key in clashes:
            fields["body." + key] = fields.pop(key)
    merged.update(fields)
    merged.body_keys = frozenset(fields)
    return merged


def apply_labels(event: dict[str, object], labels: Mapping[str, object]) -> None:
    """Joins metadata labels onto ``event`` in place, per the spec: a label never
    overwrites a field the line provided (header or structured data), but a body key
    that collides with a label is moved to ``body.KEY`` and the label takes its name."""
    body_keys = getattr(event, "body_keys", ())
    for key, value in labels.items():
        if key in event:
            if key not in body_keys:
                continue
            event["body." + key] = event.pop(key)
        event[key] = value
