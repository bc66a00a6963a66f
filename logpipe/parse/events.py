"""Stored events on the wire: the body of a POST to an ``http`` source. Sans-IO.

The body is NDJSON, one event per line in logpipe's stored form (what a sink's buffer
holds: ``{"_time": ..., "_msg": ..., "service": ..., "status": 200}``), optionally gzip'd.

Contract:
- ``gunzip(body, limit)`` undoes gzip (one or more members) and raises :class:`BodyTooLarge`
  as soon as the output would pass ``limit`` bytes: a small body that expands into
  gigabytes is refused after at most ``limit + 1`` bytes of output, never inflated whole.
  Anything that is not complete gzip raises :class:`BadBody`.
- ``decode_events(body)`` returns every line as a dict, or raises :class:`BadBody` naming
  the first line (1-based, counting every ``\\n``) that is not a JSON object: then nothing
  of the body is returned, so a caller never stores half of a body. Blank lines and a
  trailing ``\\r`` are ignored (and, as msgspec's ``decode_lines`` reads NDJSON, objects
  separated by other whitespace on one line count as lines too). Values keep their JSON types.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

__all__ = ["BadBody", "BodyTooLarge", "decode_events", "gunzip"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_DECODER = msgspec.json.Decoder(dict[str, Any])
_REASON_CHARS = 200


class BadBody(ValueError):
    """The body is not NDJSON of objects (or not gzip); the message names the line."""


class BodyTooLarge(ValueError):
    """Decompressed, the body is larger than the limit."""


def gunzip(body: bytes, limit: int) -> bytes:
    out: list[bytes] = []
    budget = limit
    rest = body
    while rest:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        try:
            # max_length 0 would mean "no limit": budget + 1 is never 0.
            piece = inflater.decompress(rest, budget + 1)
        except zlib.error as e:
            raise BadBody(f"body is not valid gzip: {e}") from None
        if len(piece) > budget or inflater.unconsumed_tail:
            raise BodyTooLarge(f"body is larger than {limit} bytes once decompressed")
        if not inflater.eof:
            raise BadBody("body is not valid gzip: truncated")
        out.append(piece)
        budget -= len(piece)
        rest = inflater.unused_data
    return b"".join(out)


def decode_events(body: bytes) -> list[dict[str, Any]]:
    try:
        return _DECODER.decode_lines(body)
    except msgspec.DecodeError as e:
        first_error = str(e)
    # The slow path runs only for a bad body: find the line to name.
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            _DECODER.decode(line)
        except msgspec.DecodeError as e:
            raise BadBody(f"line {number}: {_reason(e)}") from None
    raise BadBody(f"body is not NDJSON: {first_error[:_REASON_CHARS]}")  # pragma: no cover - lines decoded alone


def _reason(error: msgspec.DecodeError) -> str:
    text = str(error)
    if text.startswith("Expected `object`"):
        text = "not a JSON object (" + text.partition(" - ")[0].replace("`", "") + ")"
    return text.replace("`", "")[:_REASON_CHARS]
