"""Syslog lines -> events: RFC 5424 and RFC 3164 as real senders write them. Sans-IO.

Contract (the spec's "A stored event" and "Precise rules" -> Parsing):
- ``SyslogParser.parse(line, recv_time, source_ip)`` takes one framed message (bytes, as
  the framer or a UDP datagram gives it) and returns one event, a dict of the spec's field
  names. It never raises and never drops: a line that fits neither RFC, or whose PRI is over
  191, is stored raw (``_msg`` = the whole line, ``_time`` = receive time,
  ``parse_error = "true"``) and counted in ``parse_errors``.
- The shape decides the format. ``<PRI>VERSION SP TIMESTAMP ...`` with a valid stamp (or
  ``-``) is RFC 5424. Otherwise RFC 3164, read leniently: an optional PRI, a stamp
  (``Mmm dd hh:mm:ss``, with optional year, fraction and Cisco ``*``/counter/``UTC:``
  decorations, or ISO 8601 as rsyslog writes it), an optional hostname, an optional
  ``tag[pid]:`` / ``tag:``. A line with PRI but no stamp is all content (RFC 3164 4.3.2,
  and what Python's ``SysLogHandler`` sends), a tag still recognized. A line with neither
  PRI nor stamp is raw.
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
  emptied: other fields are given up before its last character. ``truncated`` counts these, except lines the framer already cut
  (it counts those). A ``Truncated`` line is flagged too.
- No clock reads: ``recv_time`` supplies the receive time and the RFC 3164 year.

Speed: ``parse_lines`` is the hot path (one call per TCP read or UDP burst). Per-batch work
(receive-time text, year) is done once per call; each distinct timestamp second is
converted once (timestamps.py); the regexes are anchored and built once; the size check
runs only for lines long enough to possibly reach the cap.
"""

from __future__ import annotations

import re

import orjson

from logpipe.parse.body import apply_body
from logpipe.parse.framing import Truncated
from logpipe.parse.timestamps import (
    TimestampResolver,
    format_second,
    format_time,
    parse_timezone,
)

__all__ = ["SyslogParser", "format_time", "FACILITIES", "SEVERITIES"]

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
# PRI value -> (facility, severity, level); built once, indexed per line.
_PRI_NAMES = tuple(
    (FACILITIES[pri >> 3], SEVERITIES[pri & 7], _LEVELS[pri & 7]) for pri in range(192))

# "<PRI>" digits -> value, for every 1-3 digit string (leading zeros are lenient; values
# over 191 are kept so the line can be stored raw). A lookup beats re.match by ~0.15 us.
_PRI_VALUES = {f"{value:0{width}d}": value for width in (1, 2, 3) for value in range(10**width)}
# RFC 5424 header after PRI: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, then SD.
_RFC5424 = re.compile(r"([1-9]\d?) (\S+) (\S+) (\S+) (\S+) (\S+)(?: |$)")
_VERSION_DIGITS = frozenset("123456789")
_SD_VALUE = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_SD_ELEMENT = re.compile(
    rf'\[([^\s=\]"]+)((?: +[^\s=\]"]+={_SD_VALUE})*) *\]', re.DOTALL)
_SD_PARAM = re.compile(rf' +([^\s=\]"]+)={_SD_VALUE}', re.DOTALL)
# _SD_ELEMENT for an element without backslashes: where it matches, _SD_ELEMENT matches the
# same text with the same groups.
_SD_PLAIN_ELEMENT = re.compile(r'\[([^\s=\]"]+)((?: +[^\s=\]"]+="[^"\\]*")*) *\]')
# RFC 5424 6.3.3: only \" \\ \] are escapes; any other backslash is kept as is.
_SD_ESCAPE = re.compile(r'\\(["\\\]])')

# RFC 3164 header up to the end of the stamp. Groups: 1 Cisco origin hostname, 2 month,
# 3 day, 4 year, 5 clock, 6 fraction, 7 zone, 8 year after the clock, 9 ISO stamp,
# 10 colon ending a Cisco stamp.
_RFC3164 = re.compile(
    r"(?:\d{1,10}: ){0,2}"  # Cisco: syslog counter and/or "service sequence-numbers"
    r"(?:([^\s:]{1,255}): (?:\d{1,10}: )?)?"  # Cisco: "logging origin-id hostname"
    r"[*.]?"  # Cisco: clock not synchronized (*) or synchronized after a loss (.)
    r"(?:(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(\d{1,2})"
    r"(?: (\d{4}))? (\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?"
    # "UTC:" (Cisco show-timezone) or "CST 1987" (RFC 3164's example 3)
    r"(?: ([A-Z]{3,5})(?=:| \d{4} ))?(?: (\d{4})(?= ))?"
    r"|(\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:[Zz]|[+-]\d\d:?\d\d)?))"
    r"(:)?(?: +|$)"
)
_UTC_ZONES = frozenset({"UTC", "GMT", "UCT", "UT"})
# tag[pid]: / tag: / tag[pid] at the start of the content ('%' starts a Cisco mnemonic).
_TAG_RE = r"([^\s\[\]:%][^\s\[\]:]{0,127})(?:\[([^\]\s]{0,128})\]:?|:)(?: |$)"
_TAG = re.compile(_TAG_RE)
# macOS names processes with spaces ("Microsoft Word[14463]: "); a spaced tag is taken
# only with a numeric pid and the colon, so prose is not mistaken for one.
_SPACED_TAG = re.compile(r"([^\s\[\]:%][^\[\]:]{0,63}?)\[(\d{1,10})\]: ")
# The common case in one match: "hostname tag[pid]: " (a hostname never ends in ':' and
# holds no '['; otherwise that first word is the tag, decided on the slow path).
_HOST_TAG = re.compile(r"([^ \[]*[^ \[:]) " + _TAG_RE)
_CISCO_MNEMONIC = re.compile(r"%([A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)?-[0-7]-[A-Za-z0-9_]+):")
_CISCO_COUNTER = re.compile(r"(?:\d{1,10}: ){1,2}(?=%)")

# parse_lines' fast paths. Each covers a subset of what _parse_one reads (ASCII digits
# only, exact shapes) and must give the same event for it; the sub-patterns are those of
# _HOST_TAG and _RFC5424. "<PRI>" digits -> (facility, severity, level) for PRI <= 191.
_PRI_FIELDS = {digits: _PRI_NAMES[value] for digits, value in _PRI_VALUES.items()
               if value <= 191}
_FAST_3164 = re.compile(
    r"(?:<([0-9]{1,3})>)?"
    r"(?:((?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-3][0-9] "
    r"[0-9][0-9]:[0-9][0-9]:[0-9][0-9])"
    # the ISO stamp rsyslog writes, up to the first space (as _rfc3164 reads it)
    r"|([0-9]{4}-[0-9][0-9]-[0-9][0-9]T[^ ]*)) " + _HOST_TAG.pattern + "(.*)", re.DOTALL)
# _FAST_3164 with the PRI required, for lines starting with "<" (the optional group costs
# ~50 ns): on those both match the same way (_FAST_3164 tries the PRI first, and without
# it needs a month or a digit at "<").
_FAST_3164_PRI = re.compile(_FAST_3164.pattern.replace(
    r"(?:<([0-9]{1,3})>)?", r"<([0-9]{1,3})>", 1), re.DOTALL)
# Groups: PRI, a "...:ss.ffffffZ" stamp and its second, any other stamp, HOSTNAME,
# APP-NAME, PROCID, MSGID, then the structured data: one SD-ELEMENT without a backslash
# followed by " MSG" or the end (its text between the brackets, checked by _sd_plain_keys),
# or "[" for any other (neither group for "-"); last, MSG without its BOM.
_FAST_5424 = re.compile(
    r"<([0-9]{1,3})>[1-9][0-9]? "
    r"(?:(([0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9])\.[0-9]{6}Z)"
    r"|(\S+)) (\S+) (\S+) (\S+) (\S+) "
    r'(?:-(?: |\Z)|\[([^\s=\]"]+ [^\]\\]*)\](?: |\Z)|(?=(\[)))'
    "\ufeff?(.*)", re.DOTALL)

# Fields that the size cap never removes (it cuts _msg first, then drops the largest
# other fields, which only a pathological line needs).
_KEPT_BY_CAP = frozenset({"_time", "_msg", "truncated", "parse_error"})
# A stored event's JSON is at most ~6 bytes per line byte (a control character becomes
# \u00XX) and a body can repeat the text once more; below this factor no check is needed.
_CAP_EXPANSION = 16
_CAP_SLACK = 1024


class SyslogParser:
    """One listener's parser: its timezone, body setting and caches. Not thread-safe."""

    def __init__(self, timezone: str = "UTC", parse_body: bool = True,
                 max_msg_bytes: int = 256 * 1024 - 4096) -> None:
        self.parse_errors = 0
        self.truncated = 0
        self._times = TimestampResolver(parse_timezone(timezone))
        self._parse_body = parse_body
        self._max_bytes = max_msg_bytes
        # Lines up to this many bytes cannot produce an event over max_msg_bytes.
        self._unchecked_bytes = max(0, (max_msg_bytes - _CAP_SLACK) // _CAP_EXPANSION)
        self._recv_cache: tuple[float, str, int, float] = (float("nan"), "", 0, 0.0)
        # (start of the last receive second, its "YYYY-MM-DDTHH:MM:SS")
        self._recv_second: tuple[float, str] = (float("nan"), "")

    # -- public -----------------------------------------------------------------------

    def parse(self, line: bytes, recv_time: float, source_ip: str | None) -> dict:
        """One message -> one event. Never raises."""
        return self._parse_one(line, self._receive_context(recv_time), source_ip)

    def parse_lines(self, lines: list[bytes | str], recv_time: float,
                    source_ip: str | None) -> list[dict]:
        """Many messages received together -> their events, in order. Never raises."""
        context = self._receive_context(recv_time)
        parse_one = self._parse_one
        # The common shapes are parsed right here: one anchored regex per line reads the
        # whole header (a call per line and the slices of _parse_one cost ~0.5 us). Any
        # line they do not fully cover (long, Truncated, BOM, PRI over 191, an invalid stamp,
        # a header shape they do not know, ...) takes _parse_one, which gives the same event.
        times = self._times
        if context[2] != times.bsd_year:
            times.new_year(context[2])
        classic_cache = times.classic_candidates
        utc_seconds = times.utc_seconds
        limit = context[3]
        unchecked = self._unchecked_bytes
        parse_body = self._parse_body
        pri_fields = _PRI_FIELDS.get
        match_3164 = _FAST_3164.match
        match_3164_pri = _FAST_3164_PRI.match
        match_5424 = _FAST_5424.match
        # "Mmm dd hh:mm:ss" -> _time for this batch (its receive time fixes the year).
        batch_stamps: dict[str, str | None] = {}
        events = []
        append = events.append
        for line in lines:
            # A str line is one the framer decoded already (StreamFramer.feed_text).
            if type(line) is str:
                text = line
            elif type(line) is bytes and len(line) <= unchecked:
                text = line.decode("utf-8", "replace")
            else:
                text = None  # Truncated, or long enough to need the size check
            event = None
            try:
                # (No fast shape fits in 5 characters.)
                if text is not None and 5 < len(text) <= unchecked:
                    # The shapes exclude each other, so which regex is tried first only
                    # decides what a failed match costs (~0.1-0.2 us); a line is tried
                    # against each that can match it. Without "<" only RFC 3164 can.
                    # Character 5 guesses for 2-3 digit PRIs: "<PRI>V " puts a digit or
                    # a space there, "<PRI>Mmm" a letter.
                    if text[0] != "<":
                        m5 = None
                        m = match_3164(text)
                    elif text[5] < "A":
                        m5 = match_5424(text)
                        m = match_3164_pri(text) if m5 is None else None
                    else:
                        m = match_3164_pri(text)
                        m5 = match_5424(text) if m is None else None
                    if m is not None:
                        pri, stamp, iso_stamp, hostname, app_name, proc_id, msg = m.groups()
                        names = pri_fields(pri) if pri is not None else ()
                        if iso_stamp is not None:
                            time_text = times.rfc3339(iso_stamp)
                        else:
                            time_text = batch_stamps.get(stamp, "")
                            if time_text == "":
                                time_text = None
                                candidates = classic_cache.get(stamp)
                                if candidates is None:
                                    time_text = times.classic(stamp, context[2], limit)
                                else:
                                    for epoch, candidate in candidates:
                                        if epoch <= limit:
                                            time_text = candidate
                                            break
                                batch_stamps[stamp] = time_text
                        if names is not None and time_text is not None:
                            if names and proc_id and hostname != "-" and source_ip is not None:
                                event = {"_time": time_text, "_msg": msg, "hostname": hostname,
                                         "app_name": app_name, "proc_id": proc_id,
                                         "facility": names[0], "severity": names[1],
                                         "level": names[2], "source_ip": source_ip}
                            else:
                                event = {"_time": time_text, "_msg": msg}
                                if hostname != "-":
                                    event["hostname"] = hostname
                                event["app_name"] = app_name
                                if proc_id:
                                    event["proc_id"] = proc_id
                                if names:
                                    event["facility"] = names[0]
                                    event["severity"] = names[1]
                                    event["level"] = names[2]
                                if source_ip is not None:
                                    event["source_ip"] = source_ip
                    elif m5 is not None:
                        (pri, utc_stamp, utc_second, stamp, hostname, app_name, proc_id,
                         msg_id, sd_text, sd_open, msg) = m5.groups()
                        names = pri_fields(pri)
                        if utc_stamp is not None:
                            # The common "...:ss.ffffffZ" is its own _time when valid.
                            valid = utc_seconds.get(utc_second)
                            if valid is None:
                                valid = times.utc_second_valid(utc_second)
                            time_text = utc_stamp if valid else None
                        elif stamp == "-":
                            time_text = context[1]
                        else:
                            time_text = times.rfc3339(stamp)
                        if names is not None and time_text is not None:
                            sd = sd_keys = None
                            if sd_text is not None:
                                # One SD-ELEMENT: its text split on '"' alternates the
                                # SD-ID and names (the element's shape) with the values;
                                # an even count of pieces is an unclosed quote.
                                pieces = sd_text.split('"')
                                if len(pieces) & 1:
                                    shape = tuple(pieces[0::2])
                                    sd_keys = _SD_PLAIN_KEYS.get(shape, False)
                                    if sd_keys is False:
                                        sd_keys = _sd_plain_keys(shape)
                            if sd_keys is None and (sd_open or sd_text):
                                # Any other structured data: the general reader, from "[".
                                sd, pos = _structured_data(
                                    text, m5.start(10) if sd_open else m5.start(9) - 1)
                                msg = text[pos:]
                                if msg[:1] == "\ufeff":
                                    msg = msg[1:]
                            if (hostname != "-" and app_name != "-" and proc_id != "-"
                                    and msg_id == "-"):
                                # The usual header (as _rfc5424_event builds it, inline).
                                event = {"_time": time_text, "_msg": msg, "hostname": hostname,
                                         "app_name": app_name, "proc_id": proc_id,
                                         "facility": names[0], "severity": names[1],
                                         "level": names[2]}
                            else:
                                event = _rfc5424_event(time_text, msg, hostname, app_name,
                                                       proc_id, msg_id, names)
                            if sd_keys is not None:
                                # (event.update(zip(...)) costs ~0.2 us more for two)
                                value = 1
                                for key in sd_keys:
                                    event[key] = pieces[value]
                                    value += 2
                            elif sd:
                                event.update(sd)
                            if source_ip is not None:
                                event["source_ip"] = source_ip
                    if event is not None:
                        # A body is JSON ("{" first) or logfmt (has "="): most prose is
                        # neither and skips the call (same test as in _parse_one).
                        if parse_body and ("=" in msg or msg[:1] == "{" or msg[:1].isspace()):
                            event = apply_body(event, msg)
                        append(event)
                        continue
            except Exception:  # noqa: BLE001 - _parse_one below stores it, never raising
                pass
            append(parse_one(line, context, source_ip, text))
        return events

    # -- internals --------------------------------------------------------------------

    def _receive_context(self, recv_time: float) -> tuple[float, str, int, float]:
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

    def _parse_one(self, line: bytes, context: tuple[float, str, int, float],
                   source_ip: str | None, text: str | None = None) -> dict:
        """``text``, when given, is ``line`` decoded (parse_lines has done it already)."""
        try:
            if text is None:
                text = line.decode("utf-8", "replace")
            if text[:1] == "\ufeff":
                text = text[1:]
            event = None
            pri = -1
            start = 0
            if text[:1] == "<":
                close = text.find(">", 2, 5)
                if close > 0:
                    pri = _PRI_VALUES.get(text[1:close], -1)
                    if pri > 191:
                        return self._raw(line, text, context, source_ip)
                    if pri >= 0:
                        start = close + 1
                        if text[start:start + 1] in _VERSION_DIGITS:
                            event = self._rfc5424(text, start, pri, context)
            if event is None:
                event = self._rfc3164(text, start, pri, context)
                if event is None:
                    return self._raw(line, text, context, source_ip)
            return self._finish(event, line, source_ip, event["_msg"])
        except Exception:  # noqa: BLE001 - the contract is "never raises": store it raw
            return self._raw(line, None, context, source_ip)

    def _finish(self, event: dict, line: bytes, source_ip: str | None, msg: str) -> dict:
        """The parts every event gets: its sender, the truncation flag, the size cap, the body."""
        if source_ip is not None:
            event["source_ip"] = source_ip
        if type(line) is Truncated:
            event["truncated"] = "true"
        if len(line) > self._unchecked_bytes:
            return self._finish_long(event, type(line) is Truncated)
        # A body is JSON (first non-space "{") or logfmt (needs "="): most messages are prose
        # and skip the call (decode_body's own first test, so the result is the same).
        if self._parse_body and ("=" in msg or msg[:1] == "{" or msg[:1].isspace()):
            return apply_body(event, msg)
        return event

    def _raw(self, line: bytes, text: str | None, context: tuple[float, str, int, float],
             source_ip: str | None) -> dict:
        self.parse_errors += 1
        try:
            if text is None:
                text = line if type(line) is str else line.decode("utf-8", "replace")
            return self._finish({"_time": context[1], "_msg": text, "parse_error": "true"}, line, source_ip, text)
        except Exception:  # noqa: BLE001 - last resort, still nothing lost that fits
            return {"_time": context[1], "_msg": repr(line)[: self._unchecked_bytes],
                    "parse_error": "true"}

    def _rfc5424(self, text: str, start: int, pri: int,
                 context: tuple[float, str, int, float]) -> dict | None:
        m = _RFC5424.match(text, start)
        if m is None:
            return None
        _version, stamp, hostname, app_name, proc_id, msg_id = m.groups()
        if stamp == "-":
            time_text = context[1]
        else:
            time_text = self._times.rfc3339(stamp)
            if time_text is None:
                return None  # not an RFC 5424 stamp: let RFC 3164 read it as content
        pos = m.end()
        sd: dict | None = None
        if text[pos:pos + 1] == "[":
            sd, pos = _structured_data(text, pos)
        elif text[pos:pos + 2] == "- " or pos + 1 == len(text) and text[pos] == "-":
            pos += 2
        msg = text[pos:]
        if msg[:1] == "\ufeff":
            msg = msg[1:]
        event = _rfc5424_event(time_text, msg, hostname, app_name, proc_id, msg_id, _PRI_NAMES[pri])
        if sd:
            event.update(sd)
        return event

    def _rfc3164(self, text: str, start: int, pri: int,
                 context: tuple[float, str, int, float]) -> dict | None:
        # Fast paths for most of what is sent: "Mmm dd hh:mm:ss hostname tag[pid]: msg", and
        # the ISO stamp rsyslog writes, "2026-11-21T10:00:00.5+01:00 hostname tag[pid]: msg".
        # They differ only in the stamp; the header after it is built once, inline (a helper
        # call would cost on every line).
        time_text = None
        end = start + 15
        if text[end - 6:end - 5] == ":" and text[end:end + 1] == " ":
            time_text = self._times.classic(text[start:end], context[2], context[3])
        elif text[start + 4:start + 5] == "-" and text[start + 10:start + 11] == "T":
            end = text.find(" ", start)
            if end > 0:
                time_text = self._times.rfc3339(text[start:end])
        if time_text is not None:
            m = _HOST_TAG.match(text, end + 1)
            if m is not None:
                hostname, app_name, proc_id = m.groups()
                if proc_id and pri >= 0 and hostname != "-":
                    # The usual header, built in one presized literal (same keys, same order).
                    facility, severity, level = _PRI_NAMES[pri]
                    return {"_time": time_text, "_msg": text[m.end():], "hostname": hostname, "app_name": app_name,
                            "proc_id": proc_id, "facility": facility, "severity": severity, "level": level}
                event: dict = {"_time": time_text, "_msg": text[m.end():]}
                if hostname != "-":
                    event["hostname"] = hostname
                event["app_name"] = app_name
                if proc_id:
                    event["proc_id"] = proc_id
                if pri >= 0:
                    event["facility"], event["severity"], event["level"] = _PRI_NAMES[pri]
                return event
        m = _RFC3164.match(text, start)
        hostname = None
        time_text = None
        if m is not None:
            (origin, month, day, year, clock, frac, zone, year_after, iso,
             cisco_colon) = m.groups()
            if iso is not None:
                time_text = self._times.rfc3339(iso)
            else:
                time_text = self._times.bsd(month, day, year or year_after, clock, frac,
                                            zone in _UTC_ZONES, context[2], context[3])
        if time_text is None:
            # No stamp, or an impossible one (Feb 30).
            if pri < 0:
                return None  # neither PRI nor stamp: not syslog
            # RFC 3164 4.3.2: after a PRI without a valid stamp, the rest is CONTENT.
            time_text = context[1]
            content = text[start:]
            counter = _CISCO_COUNTER.match(content)
            if counter is not None:
                content = content[counter.end():]
        else:
            content = text[m.end():]  # type: ignore[union-attr]
            if origin is not None:
                hostname = origin
            elif not cisco_colon and content[:1] != "%":
                space = content.find(" ")
                first = content if space < 0 else content[:space]
                # A first word ending in ':' or holding '[' is the tag: no hostname.
                if first and first[-1] != ":" and "[" not in first:
                    hostname = first
                    content = "" if space < 0 else content[space + 1:]
                    if content[:2] == ": ":  # Cisco ASA: "hostname : %ASA-..."
                        content = content[2:]
        event = {"_time": time_text, "_msg": content}
        if hostname is not None and hostname != "-":
            event["hostname"] = hostname
        if content[:1] == "%":
            mnemonic = _CISCO_MNEMONIC.match(content)
            if mnemonic is not None:
                event["msg_id"] = mnemonic.group(1)
        else:
            tag = _TAG.match(content) or _SPACED_TAG.match(content)
            if tag is not None:
                event["app_name"] = tag.group(1)
                if tag.group(2):
                    event["proc_id"] = tag.group(2)
                event["_msg"] = content[tag.end():]
        if pri >= 0:
            event["facility"], event["severity"], event["level"] = _PRI_NAMES[pri]
        return event

    def _finish_long(self, event: dict, framer_truncated: bool) -> dict:
        """Body and size cap for a line long enough to reach ``max_msg_bytes``."""
        limit = self._max_bytes
        if self._parse_body:
            with_body = apply_body(event, event["_msg"])
            if with_body is not event and len(orjson.dumps(with_body)) <= limit:
                return with_body
            # No body, or too big with its body fields: keep the text (cut below).
        if len(orjson.dumps(event)) <= limit:
            return event
        event["truncated"] = "true"
        if not framer_truncated:
            self.truncated += 1
        msg = event["_msg"]
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


# Bounded by clearing, like the stamp caches; a pure function of the shape.
_SD_KEYS: dict[str, tuple[str, ...] | None] = {}


def _sd_keys(shape: str, sd_id: str, names: list[str]) -> tuple[str, ...] | None:
    keys = tuple(sd_id + "." + name.lstrip(" ")[:-1] for name in names[:-1])
    if len(set(keys)) != len(keys):
        keys = None  # type: ignore[assignment]
    if len(_SD_KEYS) >= 4096:
        _SD_KEYS.clear()
    _SD_KEYS[shape] = keys
    return keys


# parse_lines' one-element shortcut: the element's shape (its text between the brackets,
# split on '"', even pieces) -> its field keys, or None when _structured_data must read it
# (not a plain element, or a repeated name).
_SD_PLAIN_KEYS: dict[tuple[str, ...], tuple[str, ...] | None] = {}
_SD_PLAIN_FIRST = re.compile(r'([^\s=\]"]+) +([^\s=\]"]+)=')
_SD_PLAIN_NEXT = re.compile(r' +([^\s=\]"]+)=')
_SD_PLAIN_LAST = re.compile(r" *")


def _sd_plain_keys(shape: tuple[str, ...]) -> tuple[str, ...] | None:
    """Keys when ``shape`` (of a text split into an odd number of pieces) is that of an
    element _SD_PLAIN_ELEMENT matches whole, with distinct names; _structured_data gives
    that element these keys, in this order."""
    keys = None
    first = _SD_PLAIN_FIRST.fullmatch(shape[0])
    if (len(shape) >= 2 and first is not None and _SD_PLAIN_LAST.fullmatch(shape[-1])
            and all(_SD_PLAIN_NEXT.fullmatch(name) for name in shape[1:-1])):
        sd_id = first.group(1)
        keys = (sd_id + "." + first.group(2),) + tuple(
            sd_id + "." + name.lstrip(" ")[:-1] for name in shape[1:-1])
        if len(set(keys)) != len(keys):
            keys = None
    if len(_SD_PLAIN_KEYS) >= 4096:
        _SD_PLAIN_KEYS.clear()
    _SD_PLAIN_KEYS[shape] = keys
    return keys


def _rfc5424_event(time_text: str, msg: str, hostname: str, app_name: str, proc_id: str, msg_id: str,
                   names: tuple[str, str, str]) -> dict:
    """The event of an RFC 5424 header, fields in their stored order; "-" is absent."""
    if hostname != "-" and app_name != "-" and proc_id != "-" and msg_id == "-":
        # The usual header, built in one presized literal (same keys, same order).
        return {"_time": time_text, "_msg": msg, "hostname": hostname, "app_name": app_name,
                "proc_id": proc_id, "facility": names[0], "severity": names[1], "level": names[2]}
    event = {"_time": time_text, "_msg": msg}
    if hostname != "-":
        event["hostname"] = hostname
    if app_name != "-":
        event["app_name"] = app_name
    if proc_id != "-":
        event["proc_id"] = proc_id
    if msg_id != "-":
        event["msg_id"] = msg_id
    event["facility"], event["severity"], event["level"] = names
    return event


def _add_sd_param(fields: dict, key: str, value: str) -> None:
    """A repeated SD-PARAM name keeps every value, as a list (RFC 5424 allows repeats)."""
    previous = fields.get(key)
    if previous is None:
        fields[key] = value
    elif type(previous) is list:
        previous.append(value)
    else:
        fields[key] = [previous, value]


def _structured_data(text: str, pos: int) -> tuple[dict, int]:
    """SD-ELEMENTs from ``pos`` -> ({"SDID.PARAM": value or [values]}, position of MSG).
    Stops at the first malformed element, leaving the rest to MSG so nothing is lost."""
    fields: dict = {}
    n = len(text)
    while pos < n and text[pos] == "[":
        element = _SD_PLAIN_ELEMENT.match(text, pos)
        if element is not None:
            # No backslash, so no escapes: the params are ' +NAME="VALUE"' pieces that
            # split on '"' into alternating ' NAME=' and VALUE (~0.5 us less than findall).
            sd_id, params = element.groups()
            pieces = params.split('"')
            # The element's shape (SD-ID and names) -> its field keys, or None when a name
            # repeats; senders repeat a few shapes, so keys are built once per shape.
            shape = sd_id + "".join(pieces[0::2])
            keys = _SD_KEYS.get(shape, False)
            if keys is False:
                keys = _sd_keys(shape, sd_id, pieces[0::2])
            if keys is not None and (not fields or fields.keys().isdisjoint(keys)):
                fields.update(zip(keys, pieces[1::2]))
                pos = element.end()
                continue
            for name, value in zip(pieces[0::2], pieces[1::2]):
                _add_sd_param(fields, sd_id + "." + name.lstrip(" ")[:-1], value)
            pos = element.end()
            continue
        element = _SD_ELEMENT.match(text, pos)
        if element is None:
            return fields, pos
        sd_id = element.group(1)
        params = element.group(2)
        if params:
            for name, value in _SD_PARAM.findall(params):
                if "\\" in value:
                    value = _SD_ESCAPE.sub(r"\1", value)
                _add_sd_param(fields, sd_id + "." + name, value)
        pos = element.end()
    if text[pos:pos + 1] == " ":
        pos += 1
    return fields, pos
