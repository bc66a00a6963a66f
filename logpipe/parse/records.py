"""Exported logs -> events, as the live path would have made them: the reading half of
``logpipe replay``. Sans-IO: lines and rows in, events out; the fallback time is passed in.

Contract:
- Text lines are told apart one by one (``RecordReader.lines``): a line whose first
  non-space character is ``{`` and that decodes as a JSON object is a *record* (an event
  already, e.g. an NDJSON export); any other line is syslog text, parsed exactly as the
  listeners parse it (so a line cut at the front of an NDJSON file is stored raw with
  ``parse_error``, and the lines after it are still records). ``json_records=False``
  (``--format syslog``) reads every line as syslog.
- A dead letter (``{"time", "sink", "error", "response", "event": {...}}``, as deliver.py
  writes them) is its original ``event``, not the wrapper.
- A record, and a SQLite row, is normalized like a live event (:meth:`RecordReader.record`):
  1. ``mapping`` renames fields (``NEW: OLD``), first;
  2. without a ``_msg``, ``msg``, else ``message``, becomes ``_msg`` (the body rule; a
     non-string is kept as JSON text, null counts as absent);
  3. the first present of ``level``, ``lvl``, ``severity``, ``loglevel`` sets ``level``
     when its value normalizes (the body rule);
  4. ``_time`` is read as a transform's ``coerce = "timestamp"`` reads it (RFC 3339 /
     ISO 8601 text, or epoch s/ms/us/ns by magnitude; an offset-less stamp is in the
     listener's timezone) and written as every ``_time`` is. A record without one gets the
     fallback time (the replay passes its file's modification time, the same time a
     stamp-less syslog line gets) and is counted in ``time_missing``; one whose ``_time``
     cannot be read gets the fallback too, keeps the original as ``body._time``, is
     flagged ``parse_error = "true"`` and counted in ``time_unreadable``. So no event
     leaves here with a ``_time`` a store would reject or replace with its own clock.
"""

from __future__ import annotations

import orjson

from .body import as_msg, level_of
from .framing import truncate_datagram
from .syslog import SyslogParser
from .timestamps import TimeValueReader, format_time

__all__ = ["RecordReader", "dead_letter_event"]

_DEAD_LETTER_KEYS = frozenset({"time", "sink", "error", "response", "event", "event_text"})


def dead_letter_event(record: dict) -> dict | bytes | None:
    """The original event of a dead-letter line (bytes when only its text was kept), or
    None when ``record`` is not one."""
    if "sink" not in record or "error" not in record or not record.keys() <= _DEAD_LETTER_KEYS:
        return None
    event = record.get("event")
    if isinstance(event, dict):
        return event
    text = record.get("event_text")
    return text.encode() if isinstance(text, str) else None


class RecordReader:
    """One replay's reader: its parser, ``--map`` and time counters. Not thread-safe."""

    def __init__(self, parser: SyslogParser, max_line_bytes: int, mapping: dict[str, str] | None = None,
                 timezone: str = "UTC") -> None:
        self.parser = parser
        self.max_line_bytes = max_line_bytes
        self.mapping = dict(mapping or {})
        self._read_time = TimeValueReader(timezone)
        self.time_missing = 0  # records without a _time: given the fallback time
        self.time_unreadable = 0  # records whose _time could not be read: fallback, flagged
        self._fallback: tuple[float, str] = (float("nan"), "")

    def lines(self, lines: list[bytes], fallback_time: float, json_records: bool = True) -> list[dict]:
        """Lines of a text file (with or without their newline) -> events, in order; blank
        lines are skipped."""
        if not json_records:
            return self._syslog(lines, fallback_time)
        events: list[dict] = []
        pending: list[bytes] = []  # a run of syslog lines, parsed together
        loads = orjson.loads
        for line in lines:
            stripped = line.strip()
            if stripped[:1] != b"{":
                if stripped:
                    pending.append(line)
                continue
            try:
                record = loads(stripped)
            except orjson.JSONDecodeError:
                record = None
            if type(record) is not dict:
                pending.append(line)
                continue
            original = dead_letter_event(record)
            if type(original) is bytes:  # a dead letter whose event was not JSON: its text
                pending.append(original)
                continue
            if pending:
                events += self._syslog(pending, fallback_time)
                pending = []
            events.append(self.record(original if original is not None else record, fallback_time))
        if pending:
            events += self._syslog(pending, fallback_time)
        return events

    def rows(self, rows: list[dict], fallback_time: float) -> list[dict]:
        """Rows of a table (column -> value) -> events."""
        return [self.record(row, fallback_time) for row in rows]

    def record(self, event: dict, fallback_time: float) -> dict:
        """One record normalized per the module rule (in place; returned)."""
        for new, old in self.mapping.items():
            if old in event:
                event[new] = event.pop(old)
        if event.get("_msg") is None:
            event.pop("_msg", None)
            for key in ("msg", "message"):
                if event.get(key) is not None:
                    event["_msg"] = as_msg(event.pop(key))
                    break
        level = level_of(event)
        if level is not None:
            event["level"] = level
        given = event.get("_time")
        if given is None:
            self.time_missing += 1
            event["_time"] = self._fallback_text(fallback_time)
        else:
            stamp = self._read_time(given)
            if stamp is None:
                self.time_unreadable += 1
                event["body._time"] = given
                event["_time"] = self._fallback_text(fallback_time)
                event["parse_error"] = "true"
            else:
                event["_time"] = stamp
        return event

    def _fallback_text(self, when: float) -> str:
        if self._fallback[0] != when:
            self._fallback = (when, format_time(when))
        return self._fallback[1]

    def _syslog(self, lines: list[bytes], recv_time: float) -> list[dict]:
        limit = self.max_line_bytes
        framed = [truncate_datagram(line, limit) for line in lines]
        return self.parser.parse_lines([line for line in framed if line], recv_time, None)
