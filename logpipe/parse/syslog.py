"""Syslog lines -> events: RFC 5424 and RFC 3164 as real senders write them. Sans-IO.

Contract (the spec's "A stored event" and "Precise rules" -> Parsing):
- ``SyslogParser.parse(line, recv_time, source_ip)`` takes one framed message (bytes, as
  the framer or a UDP datagram gives it) and returns one event, a dict of the spec's field
  names. It never raises and never drops: a line that fits neither RFC, or whose PRI is over
  191, is stored raw (``_msg`` = the whole line, ``_time`` = receive time,
  ``parse_error = "true"``) and counted in ``parse_errors``.
- The shape decides the format. Whitespace before the header is skipped.
  ``<PRI>VERSION SP TIMESTAMP ...`` with a valid stamp (or ``-``) is RFC 5424 (rfc5424.py),
  and so is ``V SP TIMESTAMP ...`` without PRI (a one-digit version) when the stamp is a
  real one.
  Otherwise RFC 3164, read leniently (rfc3164.py): an optional PRI (spaces after it
  skipped), a stamp, an optional hostname, an optional ``tag[pid]:`` / ``tag:``. A line
  with PRI but no stamp is all content (RFC 3164 4.3.2, and what Python's
  ``SysLogHandler`` sends), a tag still recognized. A line with neither PRI nor stamp is
  raw.
- Values are str, except body fields (see body.py) and repeated structured-data params
  (a list of str). NILVALUE (``-``) and missing header fields are absent. ``facility``,
  ``severity`` and the syslog ``level`` exist only when the line has a PRI.
- Text: invalid UTF-8 becomes U+FFFD; a BOM at the start of the line or of an RFC 5424 MSG
  is removed; NUL and other control characters are kept as sent (the JSON encoders escape
  them), so ``_msg`` is exactly what the sender wrote.
- Cisco ``%FAC[-SUB]-SEV-MNEMONIC:`` messages keep the whole text (mnemonic included) in
  ``_msg`` and carry the mnemonic, without ``%``, as ``msg_id``: it is what RFC 5424 calls
  a MSGID, "the type of message".
- Size: an event whose JSON encoding would exceed ``max_msg_bytes`` (VictoriaLogs skips
  lines over 256 KiB; the default leaves 4 KiB for labels) has its ``_msg`` cut on a
  character boundary (body fields are given up first, keeping the text), and gets
  ``truncated = "true"``. The cut keeps the longest prefix whose *encoded* size fits (a
  control character takes 6 bytes in JSON), and a message that was not empty is never
  emptied: other fields are given up before its last character. ``truncated`` counts these,
  except lines the framer already cut (it counts those). A ``Truncated`` line is flagged too.
- No clock reads: ``recv_time`` supplies the receive time and the RFC 3164 year.
- Where from: ``source_ip`` (the sender's address) follows the header fields; a parser built
  with ``source="NAME"`` (the listener's name) adds ``logpipe_source = NAME`` right after it
  to every event it produces, raw and truncated ones included; body fields and labels come
  after both. Without ``source`` the field is absent. A body key named ``logpipe_source`` is
  stored as ``body.logpipe_source`` (body.RESERVED), so a sender cannot forge it.

Layout: this module dispatches and finishes events; rfc5424.py, rfc3164.py and
structured_data.py read one line's header; readers.py holds parse_lines' readers for the
common shapes, chosen by table. A parser's caches live on the objects it builds (no
module-level mutable state).

Speed: ``parse_lines`` is the hot path (one call per TCP read or UDP burst). Per-batch work
(receive-time text, year) is done once per call; each distinct timestamp second is
converted once (timestamps.py); the regexes are anchored and built once; the size check
runs only for lines long enough to possibly reach the cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import orjson

from logpipe.parse.body import BODY_STARTS, BodyReader
from logpipe.parse.framing import Truncated
from logpipe.parse.header import FACILITIES, PRI_VALUES, SEVERITIES, Event, Received
from logpipe.parse.readers import LineReaders
from logpipe.parse.rfc3164 import Rfc3164Reader
from logpipe.parse.rfc5424 import VERSION_DIGITS, Rfc5424Reader
from logpipe.parse.structured_data import StructuredDataReader
from logpipe.parse.timestamps import (
    TimestampResolver,
    format_second,
    format_time,
    parse_timezone,
)

__all__ = ["SyslogParser", "format_time", "FACILITIES", "SEVERITIES"]

# Fields that the size cap never removes (it cuts _msg first, then drops the largest
# other fields, which only a pathological line needs).
_KEPT_BY_CAP = frozenset({"_time", "_msg", "truncated", "parse_error", "logpipe_source"})
# A stored event's JSON is at most ~6 bytes per line byte (a control character becomes
# \u00XX) and a body can repeat the text once more; below this factor no check is needed.
_CAP_EXPANSION = 16
_CAP_SLACK = 1024
_ASCII_WHITESPACE = " \t\n\r\v\f"
_WHITESPACE = frozenset(_ASCII_WHITESPACE)

Line = bytes | str


class SyslogParser:
    """One listener's parser: its timezone, body setting and caches. Not thread-safe."""

    def __init__(self, timezone: str = "UTC", parse_body: bool = True,
                 max_msg_bytes: int = 256 * 1024 - 4096, *, source: str | None = None) -> None:
        self.parse_errors = 0
        self.truncated = 0
        times = TimestampResolver(parse_timezone(timezone))
        structured_data = StructuredDataReader()
        self._body = BodyReader()
        self._rfc5424 = Rfc5424Reader(times, structured_data)
        self._rfc3164 = Rfc3164Reader(times)
        self._readers = LineReaders(times, structured_data, self._body, parse_body, source)
        self._source = source
        self._parse_body = parse_body
        self._max_bytes = max_msg_bytes
        # Lines up to this many bytes cannot produce an event over max_msg_bytes.
        self._unchecked_bytes = max(0, (max_msg_bytes - _CAP_SLACK) // _CAP_EXPANSION)
        self._recv_cache: Received = (float("nan"), "", 0, 0.0)
        # (start of the last receive second, its "YYYY-MM-DDTHH:MM:SS")
        self._recv_second: tuple[float, str] = (float("nan"), "")

    # -- public -----------------------------------------------------------------------

    def parse(self, line: Line, recv_time: float, source_ip: str | None) -> Event:
        """One message -> one event. Never raises."""
        return self._parse_one(line, self._receive_context(recv_time), source_ip)

    def parse_lines(self, lines: Sequence[Line], recv_time: float, source_ip: str | None) -> list[Event]:
        """Many messages received together -> their events, in order. Never raises."""
        context = self._receive_context(recv_time)
        readers = self._readers
        readers.begin(context, source_ip)
        # The common shapes are read by one anchored regex each (readers.py), the readers
        # chosen by the line's lead-in (readers.READERS; its rows are unpacked once per
        # batch, and events are never empty, so "or" tries the next reader). Any line they
        # do not fully cover (long, Truncated, BOM, PRI over 191, an invalid stamp, a shape
        # they do not know, ...) takes _parse_one, which gives the same event.
        ((plain, plain_match),), no_space, space = readers.table
        (bsd, bsd_match), (bsd_next, bsd_next_match) = no_space
        (rfc5424, rfc5424_match), (rfc5424_next, rfc5424_next_match) = space
        unchecked = self._unchecked_bytes
        parse_one = self._parse_one
        events: list[Event] = []
        append = events.append
        for line in lines:
            # A str line is one the framer decoded already (StreamFramer.feed_text).
            if type(line) is str:
                text = line if len(line) <= unchecked else None
            elif type(line) is bytes and len(line) <= unchecked:
                text = line.decode("utf-8", "replace")
            else:
                text = None  # Truncated, or long enough to need the size check
            # (No fast shape fits in 6 characters.)
            if text is not None and len(text) > 6:
                try:
                    if text[0] != "<":
                        event = plain(text, plain_match)
                    elif text[5] >= "A" or text[5] != " " != text[6]:  # (a month's letter first)
                        event = bsd(text, bsd_match) or bsd_next(text, bsd_next_match)
                    else:
                        event = rfc5424(text, rfc5424_match) or rfc5424_next(text, rfc5424_next_match)
                    if event is not None:
                        append(event)
                        continue
                except Exception:  # noqa: BLE001 - _parse_one below stores it, never raising
                    pass
            append(parse_one(line, context, source_ip, text))
        return events

    # -- internals --------------------------------------------------------------------

    def _receive_context(self, recv_time: float) -> Received:
        """(recv_time, its _time text, its UTC year, the latest acceptable BSD stamp)."""
        cached = self._recv_cache
        if cached[0] == recv_time:
            return cached
        # One call per datagram is common for UDP: reuse the formatted second (format_time
        # costs ~1 us, this ~0.3 us). Same rounding as format_time, which handles the rest.
        second = self._recv_second
        if 0.0 <= recv_time - second[0] < 1.0:
            micro = round((recv_time - second[0]) * 1e6)
            text = (second[1] + f".{micro:06d}Z") if micro < 1_000_000 else format_time(recv_time)
        else:
            text = format_time(recv_time)
            if 0.0 <= recv_time < 1e11:
                whole = int(recv_time)
                self._recv_second = (float(whole), format_second(whole))
        context = (recv_time, text, int(text[:4]), recv_time + 86400.0)
        self._recv_cache = context
        return context

    def _parse_one(self, line: Line, context: Received, source_ip: str | None,
                   text: str | None = None) -> Event:
        """``text``, when given, is ``line`` decoded (parse_lines has done it already)."""
        try:
            if text is None:
                text = line if isinstance(line, str) else line.decode("utf-8", "replace")
            first = text[:1]
            if first == "\ufeff":
                text = text[1:]
                first = text[:1]
            event = None
            pri = -1
            start = 0
            if first in _WHITESPACE:
                # Whitespace before the header (a stray newline, indentation) is skipped; a
                # raw line keeps it.
                start = len(text) - len(text.lstrip(_ASCII_WHITESPACE))
                first = text[start:start + 1]
            if first == "<":
                close = text.find(">", start + 2, start + 5)
                if close > 0:
                    pri = PRI_VALUES.get(text[start + 1:close], -1)
                    if pri > 191:
                        return self._raw(line, text, context, source_ip)
                    if pri >= 0:
                        start = close + 1
                        if text[start:start + 1] in VERSION_DIGITS:
                            event = self._rfc5424.read(text, start, pri, context)
                        elif text[start:start + 1] == " ":  # "<7> Aug 29 ...": RFC 3164 only
                            start = len(text) - len(text[start:].lstrip(" "))
            elif first in VERSION_DIGITS and text[start + 1:start + 2] == " ":
                event = self._rfc5424.read(text, start, -1, context)  # RFC 5424 without PRI
            if event is None:
                event = self._rfc3164.read(text, start, pri, context)
                if event is None:
                    return self._raw(line, text, context, source_ip)
            return self._finish(event, line, source_ip, cast(str, event["_msg"]))
        except Exception:  # noqa: BLE001 - the contract is "never raises": store it raw
            return self._raw(line, None, context, source_ip)

    def _finish(self, event: Event, line: Line, source_ip: str | None, msg: str) -> Event:
        """The parts every event gets: its sender, the truncation flag, the size cap, the body."""
        if source_ip is not None:
            event["source_ip"] = source_ip
        if self._source is not None:
            event["logpipe_source"] = self._source
        if type(line) is Truncated:
            event["truncated"] = "true"
        if len(line) > self._unchecked_bytes:
            return self._finish_long(event, type(line) is Truncated)
        # A body is JSON (first non-space "{") or logfmt (needs "="): most messages are prose
        # and skip the call (decode_body's own first test, so the result is the same).
        if self._parse_body and ("=" in msg or msg[:1] in BODY_STARTS):
            return self._body.apply(event, msg)
        return event

    def _raw(self, line: Line, text: str | None, context: Received, source_ip: str | None) -> Event:
        self.parse_errors += 1
        try:
            if text is None:
                text = line if isinstance(line, str) else line.decode("utf-8", "replace")
            return self._finish({"_time": context[1], "_msg": text, "parse_error": "true"}, line, source_ip,
                                text)
        except Exception:  # noqa: BLE001 - last resort, still nothing lost that fits
            event: Event = {"_time": context[1], "_msg": repr(line)[: self._unchecked_bytes],
                            "parse_error": "true"}
            if source_ip is not None:
                event["source_ip"] = source_ip
            if self._source is not None:
                event["logpipe_source"] = self._source
            return event

    def _finish_long(self, event: Event, framer_truncated: bool) -> Event:
        """Body and size cap for a line long enough to reach ``max_msg_bytes``."""
        limit = self._max_bytes
        if self._parse_body:
            with_body = self._body.apply(event, cast(str, event["_msg"]))
            if with_body is not event and len(orjson.dumps(with_body)) <= limit:
                return with_body
            # No body, or too big with its body fields: keep the text (cut below).
        if len(orjson.dumps(event)) <= limit:
            return event
        event["truncated"] = "true"
        if not framer_truncated:
            self.truncated += 1
        msg = cast(str, event["_msg"])
        event["_msg"] = ""
        while True:
            # The limit is on encoded bytes: a control character takes 6, a quote 2.
            room = limit - len(orjson.dumps(event)) + 2  # the event holds '""' for _msg now
            event["_msg"] = _longest_prefix_within(msg, room)
            if event["_msg"] or not msg:
                break
            # Not one character fits beside the other fields: give up the largest of them.
            droppable = [k for k in event if k not in _KEPT_BY_CAP]
            if not droppable:
                break
            del event[max(droppable, key=lambda k: len(orjson.dumps(event[k])))]
        size = len(orjson.dumps(event))
        while size > limit:
            droppable = [k for k in event if k not in _KEPT_BY_CAP]
            if not droppable:
                break
            largest = max(droppable, key=lambda k: len(orjson.dumps(event[k])))
            del event[largest]
            size = len(orjson.dumps(event))
        return event


def _longest_prefix_within(text: str, room: int) -> str:
    """The longest prefix of ``text`` whose JSON string encoding (quotes included) is at
    most ``room`` bytes. Binary search: ~18 encodings for a 256 KiB message, and only
    for a message over the cap."""
    dumps = orjson.dumps
    if len(dumps(text)) <= room:
        return text
    low, high = 0, min(len(text), max(room, 0))  # every character takes at least a byte
    while low < high:
        middle = (low + high + 1) // 2
        if len(dumps(text[:middle])) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low]
