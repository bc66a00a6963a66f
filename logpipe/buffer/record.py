"""The disk buffer's record codec: pure functions, bytes in and bytes out, no I/O.

One *record* holds one pushed chunk of events (one ``write`` per push, not per event).
Layout, little-endian, 32-byte header then payload::

    offset size
       0    4   magic  b"\\xf0LPB"
       4    1   format 0 = events joined by b"\\n"; 1 = each event as u32 length + bytes
       5    3   reserved, zero
       8    4   count        number of events
      12    4   length       payload bytes
      16    8   written_at   unix time of the push (float64), survives restarts
      24    4   payload_crc  CRC-32 of the payload
      28    4   header_crc   CRC-32 of bytes 0..27

Why this shape:
- The header has its own CRC, so a damaged payload is skipped exactly (its length and
  event count are trusted) and counted per event; only a damaged header needs a resync.
- The magic starts with 0xF0 followed by an ASCII byte, which is invalid UTF-8: it cannot
  occur inside JSON text, so resyncing on it after a damaged header cannot be fooled by
  event contents (and a candidate must still pass the header CRC).
- Format 0 (newline-joined) is split and joined in C; events are JSON (msgspec), which
  never contains a raw newline. Any chunk where that does not hold falls back to format 1.

Invariant: :func:`decode` never raises on any input. Damage is a status:
``OK``, ``TRUNCATED`` (the buffer ends inside the record: a torn tail, or read more),
``BAD_PAYLOAD`` (header valid, payload CRC wrong: ``end`` is exact) and ``BAD_HEADER``
(``end`` is the next offset where a valid header starts, or where one might start if
more bytes were available, else the end of the buffer).
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

__all__ = [
    "MAGIC",
    "HEADER_SIZE",
    "OK",
    "TRUNCATED",
    "BAD_PAYLOAD",
    "BAD_HEADER",
    "Decoded",
    "header",
    "records_parts",
    "lines_parts",
    "encode",
    "encode_lines",
    "decode",
    "event_bytes",
]

MAGIC = b"\xf0LPB"
_HEAD = struct.Struct("<4sB3xIIdI")  # everything the header CRC covers
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size  # 32
_LEN = struct.Struct("<I")

FORMAT_LINES = 0
FORMAT_LENGTHS = 1
MAX_PAYLOAD = 0xFFFFFFFF

OK = "ok"
TRUNCATED = "truncated"
BAD_PAYLOAD = "bad_payload"
BAD_HEADER = "bad_header"


class Decoded(NamedTuple):
    status: str
    start: int
    end: int  # offset after the record (OK, BAD_PAYLOAD), the resync point (BAD_HEADER), len(buf) (TRUNCATED)
    count: int = 0  # type: ignore[assignment]  # shadows tuple.count on purpose; events; 0 when the header itself is unreadable
    nbytes: int = 0  # events' bytes in buffer units: sum(len(event) + 1)
    written_at: float = 0.0
    records: list[bytes] | None = None  # only when asked for and status is OK
    size: int = 0  # whole record (header + payload) when the header is valid
    lines: bytes | None = None  # instead of records when asked for lines and the format is 0


def event_bytes(fmt: int, count: int, length: int) -> int:
    """The events' size in buffer units (``sum(len(e) + 1)``), from the header alone."""
    if fmt == FORMAT_LINES:
        return length + 1 if count else 0
    return length - 3 * count


def header(fmt: int, count: int, payload: bytes | memoryview, written_at: float) -> bytes:
    """The 32 header bytes of a record of ``count`` events whose payload is ``payload``."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("record payload over 4 GiB")
    head = _HEAD.pack(MAGIC, fmt, count, len(payload), written_at, zlib.crc32(payload))
    return head + _CRC.pack(zlib.crc32(head))


def records_parts(records: list[bytes], written_at: float) -> tuple[bytes, bytes, bool]:
    """A record holding ``records`` (a non-empty list of events) as (header, payload,
    whether the payload is the events joined by newlines, format 0)."""
    payload = b"\n".join(records)
    fmt = FORMAT_LINES
    if payload.count(b"\n") != len(records) - 1:
        fmt = FORMAT_LENGTHS
        payload = b"".join(_LEN.pack(len(r)) + r for r in records)
    return header(fmt, len(records), payload, written_at), payload, fmt == FORMAT_LINES


def lines_parts(lines: bytes, count: int, written_at: float) -> tuple[bytes, memoryview]:
    """A record of ``count`` events given as NDJSON (each followed by a newline, none
    inside: msgspec's ``encode_lines``) as (header, payload): format 0 without a scan, a
    re-join or a copy (the payload is a view of ``lines`` without its last newline), for
    one ``writev``."""
    payload = memoryview(lines)[:-1]
    return header(FORMAT_LINES, count, payload, written_at), payload


def encode(records: list[bytes], written_at: float) -> bytes:
    """One record holding ``records`` (a non-empty list of events)."""
    head, payload, _ = records_parts(records, written_at)
    return head + payload


def encode_lines(lines: bytes, count: int, written_at: float) -> bytes:
    """``encode`` for ``count`` events given as NDJSON."""
    head, payload = lines_parts(lines, count, written_at)
    return head + payload


def _header(buf: bytes | memoryview, pos: int) -> tuple[bytes, int, int, int, float, int] | None:
    """The header fields at ``pos`` if it is complete and its CRC holds, else None."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    head = buf[pos : pos + _HEAD.size]
    if _CRC.unpack_from(buf, pos + _HEAD.size)[0] != zlib.crc32(head):
        return None
    fields = _HEAD.unpack(head)
    if fields[0] != MAGIC or fields[1] not in (FORMAT_LINES, FORMAT_LENGTHS):
        return None
    return fields


def _split(fmt: int, payload: bytes, count: int) -> list[bytes] | None:
    if fmt == FORMAT_LINES:
        records = payload.split(b"\n")
        return records if len(records) == count else None
    records = []
    pos = 0
    end = len(payload)
    for _ in range(count):
        if pos + 4 > end:
            return None
        (n,) = _LEN.unpack_from(payload, pos)
        pos += 4
        if pos + n > end:
            return None
        records.append(payload[pos : pos + n])
        pos += n
    return records if pos == end else None


def resync(buf: bytes | memoryview, pos: int) -> int:
    """The first offset >= ``pos`` where a valid header starts, or where a header is cut
    off by the end of ``buf`` (it may prove valid once more bytes are read), else len(buf)."""
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    end = len(data)
    while True:
        at = data.find(MAGIC, pos)
        if at < 0:
            # A magic cut by the end of the buffer: keep its first bytes for the next read.
            for keep in range(len(MAGIC) - 1, 0, -1):
                if end - keep >= pos and data.endswith(MAGIC[:keep]):
                    return end - keep
            return end
        if end - at < HEADER_SIZE or _header(data, at) is not None:
            return at
        pos = at + 1


def decode(buf: bytes | memoryview, pos: int = 0, want_records: bool = True, as_lines: bool = False) -> Decoded:
    """The record starting at ``pos`` in ``buf``. Never raises. ``as_lines``: a format 0
    record's events come as one NDJSON blob (``lines``, each followed by a newline: one
    copy, no split) instead of a list."""
    end = len(buf)
    if end - pos < HEADER_SIZE:
        if buf[pos : pos + len(MAGIC)] != MAGIC[: min(len(MAGIC), end - pos)]:
            return Decoded(BAD_HEADER, pos, resync(buf, pos + 1))
        return Decoded(TRUNCATED, pos, end)
    fields = _header(buf, pos)
    if fields is None:
        return Decoded(BAD_HEADER, pos, resync(buf, pos + 1))
    _, fmt, count, length, written_at, payload_crc = fields
    size = HEADER_SIZE + length
    nbytes = event_bytes(fmt, count, length)
    if pos + size > end:
        return Decoded(TRUNCATED, pos, end, count, nbytes, written_at, None, size)
    payload = buf[pos + HEADER_SIZE : pos + size]
    if zlib.crc32(payload) != payload_crc:
        return Decoded(BAD_PAYLOAD, pos, pos + size, count, nbytes, written_at, None, size)
    records = None
    if want_records and as_lines and fmt == FORMAT_LINES:
        text = payload if isinstance(payload, bytes) else bytes(payload)
        if text.count(b"\n") != count - 1:  # CRC matched but the contents disagree with the header
            return Decoded(BAD_PAYLOAD, pos, pos + size, count, nbytes, written_at, None, size)
        return Decoded(OK, pos, pos + size, count, nbytes, written_at, None, size, b"".join((payload, b"\n")))
    if want_records:
        records = _split(fmt, bytes(payload), count)
        if records is None:  # CRC matched but the contents disagree with the header
            return Decoded(BAD_PAYLOAD, pos, pos + size, count, nbytes, written_at, None, size)
    return Decoded(OK, pos, pos + size, count, nbytes, written_at, records, size)
