"""Every problem of a config at once, each at its key path with its TOML line.

msgspec stops at the first error; the collector here descends the tree and converts each
part on its own, reporting at the deepest path that fails."""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec
from msgspec import Meta, Struct

from .base import PATTERN_NAMES

_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")


def collect(value: Any, typ: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    try:
        msgspec.convert(value, typ)
        return []
    except msgspec.ValidationError as e:
        error = str(e)
    members = _union_members(typ)
    structs = [t for t in members if isinstance(t, type) and issubclass(t, Struct)]
    if len(structs) > 1 and isinstance(value, dict):
        tag_field = structs[0].__struct_config__.tag_field
        tags = [t.__struct_config__.tag for t in structs]
        if value.get(tag_field) not in tags:
            return [(path + (tag_field,), f"expected one of {', '.join(tags)}, got {_show(value.get(tag_field))}")]
    struct_type = _struct_for(value, typ)
    if struct_type is not None and isinstance(value, dict):
        found = _collect_struct(value, struct_type, path)
        if found:
            return found
    elif get_origin(typ) is dict and isinstance(value, dict):
        _, value_type = get_args(typ)
        found = []
        for key, item in value.items():
            found += collect(item, value_type, path + (str(key),))
        if found:
            return found
    elif get_origin(typ) is list and isinstance(value, list):
        (item_type,) = get_args(typ)
        found = []
        for i, item in enumerate(value):
            found += collect(item, item_type, path + (str(i),))
        if found:
            return found
    message = _describe(error, value, typ)
    # A cross-field check names the key it is about as "key: why".
    key, sep, rest = message.partition(": ")
    if sep and struct_type is not None and key in struct_type.__struct_fields__:
        return [(path + (key,), rest)]
    if sep and struct_type is not None and key.partition(".")[0] in struct_type.__struct_fields__:
        return [(path + tuple(key.split(".")), rest)]
    return [(path, message)]


def _union_members(typ: Any) -> tuple:
    if get_origin(typ) in (Union, types.UnionType):
        return get_args(typ)
    return (typ,)


def _struct_for(value: Any, typ: Any) -> type | None:
    """The Struct type ``value`` should decode as: ``typ`` itself, the member of an
    optional, or the tagged-union member its ``type`` key names."""
    structs = [t for t in _union_members(typ) if isinstance(t, type) and issubclass(t, Struct)]
    if len(structs) == 1:
        return structs[0]
    if isinstance(value, dict):
        for t in structs:
            if t.__struct_config__.tag == value.get(t.__struct_config__.tag_field):
                return t
    return None


def _collect_struct(value: dict, typ: type, path: tuple[str, ...]) -> list:
    found = []
    info = msgspec.inspect.type_info(typ)
    known = {f.encode_name: f for f in info.fields}
    tag_field = typ.__struct_config__.tag_field
    for key in value:
        if key not in known and key != tag_field:
            found.append((path + (key,), "unknown key"))
    hints = _field_types(typ)
    for f in info.fields:
        if f.encode_name in value:
            found += collect(value[f.encode_name], hints[f.name], path + (f.encode_name,))
        elif f.required:
            found.append((path + (f.encode_name,), "required key is missing"))
    return found


def _field_types(typ: type) -> dict[str, Any]:
    return typing.get_type_hints(typ, include_extras=True)


def _describe(error: str, value: Any, typ: Any) -> str:
    """Turn msgspec's message into ``expected int >= 1, got "ten"``."""
    error = _MSGSPEC_PATH.sub("", error)
    error = error.replace("`", "")
    if error.startswith("Expected "):
        expected = error[len("Expected ") :].split(", got ")[0]
        for pattern, name in PATTERN_NAMES.items():
            if pattern in expected or pattern.replace("\\", "\\\\") in expected:
                expected = name
        bounds = _bounds(typ)
        if bounds and not any(op in expected for op in ("<", ">")):
            expected = f"{expected} {bounds}"
        return f"expected {expected}, got {_show(value)}"
    if error.startswith("Object missing required field "):
        return "required key is missing"
    if error.startswith("Object contains unknown field "):
        return "unknown key"
    if error.startswith("Invalid value "):
        return f"invalid value {_show(value)}"
    return error[:1].lower() + error[1:]


def _bounds(typ: Any) -> str:
    for member in _union_members(typ):
        if get_origin(member) is Annotated:
            for meta in member.__metadata__:
                if isinstance(meta, Meta):
                    parts = []
                    if meta.ge is not None:
                        parts.append(f">= {meta.ge}")
                    if meta.le is not None:
                        parts.append(f"<= {meta.le}")
                    return " and ".join(parts)
    return ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "an array"
    return str(value)


_SECRET_KEYS = frozenset(("secret", "password"))


def render(path: tuple[str, ...], message: str, text: str) -> str:
    name = ".".join(path) if path else "config"
    if path and path[-1] in _SECRET_KEYS:  # never echo a secret back, even a mistyped one
        message = re.sub(r", got .*$", ", got <redacted>", message)
    line = _find_line(path, text)
    return f"{name}: {message}" + (f" (line {line})" if line else "")


def _find_line(path: tuple[str, ...], text: str) -> int | None:
    """Best effort: the line of the deepest table header on ``path``, then the first line
    after it that assigns the next key."""
    if not path:
        return None
    lines = text.splitlines()
    start = 0
    depth = 0
    if len(path) > 1 and path[1].isdigit():  # [[transforms]] number N
        header = re.compile(r"^\s*\[\[\s*" + re.escape(path[0]) + r"\s*\]\]")
        starts = [i for i, line in enumerate(lines) if header.match(line)]
        if int(path[1]) < len(starts):
            start, depth = starts[int(path[1])], 2
            if depth == len(path):
                return start + 1
            key = re.compile(r"(^|[\s{,])" + re.escape(path[depth]) + r"\s*=")
            for i in range(start, len(lines)):
                if i > start and lines[i].lstrip().startswith("["):
                    break
                if key.search(lines[i]):
                    return i + 1
            return start + 1
    for d in range(len(path), 0, -1):
        header = re.compile(r"^\s*\[\[?\s*" + r"\s*\.\s*".join(re.escape(p) for p in path[:d]) + r"\s*\]\]?\s*(#.*)?$")
        for i, line in enumerate(lines):
            if header.match(line):
                start, depth = i, d
                break
        if depth:
            break
    if depth == len(path):
        return start + 1
    key = re.compile(r"(^|[\s{,])" + re.escape(path[depth]) + r"\s*=")
    for i in range(start, len(lines)):
        if i > start and lines[i].lstrip().startswith("[") and depth:
            break
        if key.search(lines[i]):
            return i + 1
    return start + 1 if depth else None
