"""RFC 5424 headers -> events, one line at a time. Sans-IO.

Contract: :meth:`Rfc5424Reader.read` takes the text after ``<PRI>`` (at ``start``) and
returns the event of ``VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP
STRUCTURED-DATA [SP MSG]``, or None when the text is not that shape or its stamp is no RFC
3339 stamp (the caller then reads it as RFC 3164). VERSION is 1-3 digits (RFC 5424's
grammar), not checked further. ``-`` (NILVALUE) fields are absent, a ``-`` stamp is the
receive time, a BOM before MSG is removed, structured data is read by structured_data.py.
Without a PRI (``pri`` -1: a line that starts ``1 2026-...``) the stamp must be a real one,
and the event has no facility, severity or level. :func:`rfc5424_event` builds the header part, fields in their stored
order, for this reader and parse_lines' readers alike.
"""

from __future__ import annotations

import re

from logpipe.parse.header import PRI_NAMES, Event, Received
from logpipe.parse.structured_data import StructuredDataReader
from logpipe.parse.timestamps import TimestampResolver

__all__ = ["Rfc5424Reader", "rfc5424_event", "VERSION_DIGITS"]

# The header after PRI: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, then SD.
_HEADER = re.compile(r"([1-9]\d{0,2}) (\S+) (\S+) (\S+) (\S+) (\S+)(?: |$)")
# A line whose PRI is followed by one of these may be RFC 5424.
VERSION_DIGITS = frozenset("123456789")


def rfc5424_event(time_text: str, msg: str, hostname: str, app_name: str, proc_id: str,
                  msg_id: str, names: tuple[str, str, str] | None) -> Event:
    """The event of an RFC 5424 header, fields in their stored order; "-" is absent, as are
    the PRI's names when ``names`` is None (no PRI)."""
    if hostname != "-" and app_name != "-" and proc_id != "-" and msg_id == "-" and names:
        # The usual header, built in one presized literal (same keys, same order).
        return {"_time": time_text, "_msg": msg, "hostname": hostname, "app_name": app_name,
                "proc_id": proc_id, "facility": names[0], "severity": names[1], "level": names[2]}
    event: Event = {"_time": time_text, "_msg": msg}
    if hostname != "-":
        event["hostname"] = hostname
    if app_name != "-":
        event["app_name"] = app_name
    if proc_id != "-":
        event["proc_id"] = proc_id
    if msg_id != "-":
        event["msg_id"] = msg_id
    if names:
        event["facility"], event["severity"], event["level"] = names
    return event


class Rfc5424Reader:
    """Reads RFC 5424 lines for one parser (its timestamp and structured-data caches)."""

    __slots__ = ("_times", "_sd")

    def __init__(self, times: TimestampResolver, structured_data: StructuredDataReader) -> None:
        self._times = times
        self._sd = structured_data

    def read(self, text: str, start: int, pri: int, context: Received) -> Event | None:
        m = _HEADER.match(text, start)
        if m is None:
            return None
        _version, stamp, hostname, app_name, proc_id, msg_id = m.groups()
        if stamp == "-" and pri >= 0:
            time_text = context[1]
        else:
            resolved = self._times.rfc3339(stamp)
            if resolved is None:
                return None  # not an RFC 5424 stamp: let RFC 3164 read it as content
            time_text = resolved
        pos = m.end()
        sd = None
        if text[pos:pos + 1] == "[":
            sd, pos = self._sd.read(text, pos)
        elif text[pos:pos + 2] == "- " or pos + 1 == len(text) and text[pos] == "-":
            pos += 2
        msg = text[pos:]
        if msg[:1] == "\ufeff":
            msg = msg[1:]
        event = rfc5424_event(time_text, msg, hostname, app_name, proc_id, msg_id,
                              PRI_NAMES[pri] if pri >= 0 else None)
        if sd:
            event.update(sd)
        return event
