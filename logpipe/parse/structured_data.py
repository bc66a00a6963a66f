"""RFC 5424 STRUCTURED-DATA -> fields. Sans-IO.

Contract: :meth:`StructuredDataReader.read` takes the text and the position of a ``[`` and
returns ``({"SDID.PARAM": value}, position of MSG)``. A repeated PARAM name keeps every value,
as a list. An element without params (``[keepalive]``, RFC 5424 allows it) is the field
``SDID`` with the value ``"true"``; an SD-ID named like a header field or parser flag
(body.RESERVED) is stored as ``sd.SDID``, so an element cannot stand in for one. Only
``\\"``, ``\\\\`` and ``\\]`` are escapes (RFC 5424 6.3.3); any other backslash is
kept; a space after ``=`` is tolerated (``name= "value"``, as some senders write it).
Reading stops at the first malformed element: it and the rest stay in MSG, so nothing is
lost. Never raises on text input.

State: senders repeat a few element shapes (SD-ID and PARAM names), so the field keys are
built once per shape and cached on the reader (one per parser), bounded by clearing.
"""

from __future__ import annotations

import re

from logpipe.parse.body import RESERVED

__all__ = ["StructuredDataReader", "UNSEEN"]

_SD_VALUE = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_SD_ELEMENT = re.compile(
    rf'\[([^\s=\]"]+)((?: +[^\s=\]"]+= *{_SD_VALUE})*) *\]', re.DOTALL)
_SD_PARAM = re.compile(rf' +([^\s=\]"]+)= *{_SD_VALUE}', re.DOTALL)
# _SD_ELEMENT for an element without backslashes: where it matches, _SD_ELEMENT matches the
# same text with the same groups.
_SD_PLAIN_ELEMENT = re.compile(r'\[([^\s=\]"]+)((?: +[^\s=\]"]+= *"[^"\\]*")*) *\]')
# RFC 5424 6.3.3: only \" \\ \] are escapes; any other backslash is kept as is.
_SD_ESCAPE = re.compile(r'\\(["\\\]])')

# The pieces of a one-element shape (see plain_keys).
_PLAIN_FIRST = re.compile(r'([^\s=\]"]+) +([^\s=\]"]+)=')
_PLAIN_NEXT = re.compile(r' +([^\s=\]"]+)=')
_PLAIN_LAST = re.compile(r" *")

_CACHE_MAX = 4096

Keys = tuple[str, ...]
# A cache lookup's default: not seen yet (a seen shape has its keys, or None).
UNSEEN: Keys = ("",)


def _paramless_key(sd_id: str) -> str:
    """The field of an element without params."""
    return "sd." + sd_id if sd_id in RESERVED else sd_id


def _add_param(fields: dict[str, object], key: str, value: str) -> None:
    """A repeated SD-PARAM name keeps every value, as a list (RFC 5424 allows repeats)."""
    previous = fields.get(key)
    if previous is None:
        fields[key] = value
    elif type(previous) is list:
        previous.append(value)
    else:
        fields[key] = [previous, value]


class StructuredDataReader:
    """Reads structured data, with the field keys of the element shapes it has seen."""

    __slots__ = ("_element_keys", "plain_shapes")

    def __init__(self) -> None:
        # SD-ID + PARAM names -> their field keys, or None when a name repeats.
        self._element_keys: dict[str, Keys | None] = {}
        # parse_lines' one-element shortcut: an element's shape (its text between the
        # brackets split on '"', even pieces) -> its field keys, or None when read()
        # must read it. Read directly by the line readers; filled by plain_keys().
        self.plain_shapes: dict[tuple[str, ...], Keys | None] = {}

    def plain_keys(self, shape: tuple[str, ...]) -> Keys | None:
        """Keys when ``shape`` (of a text split into an odd number of pieces) is that of an
        element _SD_PLAIN_ELEMENT matches whole, with distinct names; read() gives that
        element these keys, in this order. Cached in ``plain_shapes``."""
        keys = None
        first = _PLAIN_FIRST.fullmatch(shape[0])
        if (len(shape) >= 2 and first is not None and _PLAIN_LAST.fullmatch(shape[-1])
                and all(_PLAIN_NEXT.fullmatch(name) for name in shape[1:-1])):
            sd_id = first.group(1)
            keys = (sd_id + "." + first.group(2),) + tuple(
                sd_id + "." + name.lstrip(" ")[:-1] for name in shape[1:-1])
            if len(set(keys)) != len(keys):
                keys = None
        if len(self.plain_shapes) >= _CACHE_MAX:
            self.plain_shapes.clear()
        self.plain_shapes[shape] = keys
        return keys

    def _keys(self, shape: str, sd_id: str, names: list[str]) -> Keys | None:
        keys = tuple(sd_id + "." + name.strip(" ")[:-1] for name in names[:-1])
        distinct = keys if len(set(keys)) == len(keys) else None
        if len(self._element_keys) >= _CACHE_MAX:
            self._element_keys.clear()
        self._element_keys[shape] = distinct
        return distinct

    def read(self, text: str, pos: int) -> tuple[dict[str, object], int]:
        """SD-ELEMENTs from ``pos`` -> ({"SDID.PARAM": value or [values]}, position of MSG)."""
        fields: dict[str, object] = {}
        n = len(text)
        while pos < n and text[pos] == "[":
            element = _SD_PLAIN_ELEMENT.match(text, pos)
            if element is not None:
                # No backslash, so no escapes: the params are ' +NAME="VALUE"' pieces that
                # split on '"' into alternating ' NAME=' and VALUE (~0.5 us less than findall).
                sd_id, params = element.groups()
                if not params:
                    fields.setdefault(_paramless_key(sd_id), "true")
                    pos = element.end()
                    continue
                pieces = params.split('"')
                # The element's shape (SD-ID and names) -> its field keys, or None when a
                # name repeats; built once per shape.
                shape = sd_id + "".join(pieces[0::2])
                keys = self._element_keys.get(shape, UNSEEN)
                if keys is UNSEEN:
                    keys = self._keys(shape, sd_id, pieces[0::2])
                if keys is not None and (not fields or fields.keys().isdisjoint(keys)):
                    fields.update(zip(keys, pieces[1::2], strict=True))
                    pos = element.end()
                    continue
                # (the names have one piece more: the text after the last value)
                for name, value in zip(pieces[0::2], pieces[1::2], strict=False):
                    _add_param(fields, sd_id + "." + name.strip(" ")[:-1], value)
                pos = element.end()
                continue
            element = _SD_ELEMENT.match(text, pos)
            if element is None:
                return fields, pos
            sd_id = element.group(1)
            params = element.group(2)
            if not params:
                fields.setdefault(_paramless_key(sd_id), "true")
            for name, value in _SD_PARAM.findall(params):
                if "\\" in value:
                    value = _SD_ESCAPE.sub(r"\1", value)
                _add_param(fields, sd_id + "." + name, value)
            pos = element.end()
        if text[pos:pos + 1] == " ":
            pos += 1
        return fields, pos
