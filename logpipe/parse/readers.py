"""parse_lines' readers: the common header shapes, one anchored regex each. Sans-IO.

Contract: each reader takes one decoded line (longer than 5 characters, short enough to
need no size check) and returns its finished event (header, sender, body), or None when
the line is not exactly its shape. A None is no verdict: the line then takes the per-line
path (SyslogParser._parse_one), which must give the same event for every line a reader
reads, so the readers only cover a subset of what the per-line readers accept (ASCII
digits only, exact shapes). The tests feed both paths the same lines.

Which readers a line is tried against is chosen by table (:data:`READERS`, as h11 chooses
its readers by state) from the line's lead-in: without ``<`` only RFC 3164 can match;
after a 2-3 digit ``<PRI>``, RFC 5424's ``V `` puts a space at character 5 or 6, where
RFC 3164 has a month's letters or an ISO stamp's digits, which decides the first guess.
The shapes exclude each other, so the order only decides what a failed match costs
(~0.1-0.2 us). The parser unpacks the rows once per batch (indexing the table per line
cost ~20 ns, 1.5 %).

Speed: a reader reads the batch's state from its own slots (set once per batch by
:meth:`LineReaders.begin`); a line is one call, one match, one dict literal.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from logpipe.parse.body import BODY_STARTS, BodyReader
from logpipe.parse.header import PRI_FIELDS, Event, Received
from logpipe.parse.rfc3164 import HOST_TAG_PATTERN
from logpipe.parse.rfc5424 import rfc5424_event
from logpipe.parse.structured_data import UNSEEN, StructuredDataReader
from logpipe.parse.timestamps import TimestampResolver

__all__ = ["LineReaders", "READERS"]

Match = Callable[[str], "re.Match[str] | None"]

# "[<PRI>]Mmm dd hh:mm:ss host tag[pid]: msg" or the same with the ISO stamp rsyslog writes
# (up to the first space, as the per-line reader reads it). Groups: PRI, classic stamp,
# ISO stamp, HOSTNAME, tag, pid, MSG. The months are spelled as a tree: re tries a list's
# words one by one (a December line paid ~75 ns for the eleven before it).
_BSD = re.compile(
    r"(?:<([0-9]{1,3})>)?"
    r"(?:((?:J(?:an|u[nl])|Feb|Ma[ry]|A(?:pr|ug)|Sep|Oct|Nov|Dec) [ 0-3][0-9] "
    r"[0-9][0-9]:[0-9][0-9]:[0-9][0-9])"
    r"|([0-9]{4}-[0-9][0-9]-[0-9][0-9]T[^ ]*)) " + HOST_TAG_PATTERN + "(.*)", re.DOTALL)
# _BSD with the PRI required, for lines starting with "<" (the optional group costs ~50 ns):
# on those both match the same way (_BSD tries the PRI first, and without it needs a month
# or a digit at "<").
_BSD_PRI = re.compile(_BSD.pattern.replace(r"(?:<([0-9]{1,3})>)?", r"<([0-9]{1,3})>", 1), re.DOTALL)
# Groups: PRI, a "...:ss.ffffffZ" stamp and its second, any other stamp, HOSTNAME,
# APP-NAME, PROCID, MSGID, then the structured data: one SD-ELEMENT without a backslash
# followed by " MSG" or the end (its text between the brackets, checked by plain_keys),
# or "[" for any other (neither group for "-"); last, MSG without its BOM.
_RFC5424 = re.compile(
    r"<([0-9]{1,3})>[1-9][0-9]{0,2} "
    r"(?:(([0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9])\.[0-9]{6}Z)"
    r"|(\S+)) (\S+) (\S+) (\S+) (\S+) "
    r'(?:-(?: |\Z)|\[([^\s=\]"]+ [^\]\\]*)\](?: |\Z)|(?=(\[)))'
    "\ufeff?(.*)", re.DOTALL)


_pri_fields = PRI_FIELDS.get


class LineReaders:
    """One parser's readers and the state of the batch being read. Not thread-safe."""

    __slots__ = ("_times", "_sd", "_apply_body", "_parse_body", "_source", "_received", "_source_ip",
                 "_stamps", "_classic", "_utc_seconds", "_plain_shapes", "table")

    def __init__(self, times: TimestampResolver, structured_data: StructuredDataReader,
                 body: BodyReader, parse_body: bool, source: str | None) -> None:
        self._times = times
        self._sd = structured_data
        # The caches read on every line, held here to save an attribute load each (they
        # are cleared in place, never replaced).
        self._classic = times.classic_candidates
        self._utc_seconds = times.utc_seconds
        self._plain_shapes = structured_data.plain_shapes
        self._apply_body = body.apply
        self._parse_body = parse_body
        self._source = source  # the parser's name for its events (logpipe_source), or None
        self._received: Received = (float("nan"), "", 0, 0.0)
        self._source_ip: str | None = None
        # "Mmm dd hh:mm:ss" -> _time for this batch (its receive time fixes the year).
        self._stamps: dict[str, str | None] = {}
        # READERS with each name bound to this object's reader.
        self.table = tuple(tuple((getattr(self, name), match) for name, match in row) for row in READERS)

    def begin(self, received: Received, source_ip: str | None) -> None:
        """Set the batch's receive context and sender."""
        if received[2] != self._times.bsd_year:
            self._times.new_year(received[2])
        self._received = received
        self._source_ip = source_ip
        self._stamps = {}

    def bsd(self, text: str, match: Match) -> Event | None:
        """``[<PRI>]Mmm dd hh:mm:ss host tag[pid]: msg`` and the same with an ISO stamp."""
        m = match(text)
        if m is None:
            return None
        pri, stamp, iso_stamp, hostname, app_name, proc_id, msg = m.groups()
        names = _pri_fields(pri) if pri is not None else ()
        if names is None:
            return None  # PRI over 191
        if iso_stamp is not None:
            time_text = self._times.rfc3339(iso_stamp)
        else:
            stamps = self._stamps
            time_text = stamps.get(stamp, "")
            if time_text == "":
                time_text = None
                received = self._received
                limit = received[3]
                candidates = self._classic.get(stamp)
                if candidates is None:
                    time_text = self._times.classic(stamp, received[2], limit)
                else:
                    for epoch, candidate in candidates:
                        if epoch <= limit:
                            time_text = candidate
                            break
                stamps[stamp] = time_text
        if time_text is None:
            return None
        source_ip = self._source_ip
        # The usual headers, with and without PRI, in one presized literal each (same keys,
        # same order as below; a file line without PRI measured 0.05 us less so).
        if proc_id and hostname != "-" and source_ip is not None:
            if names:
                event: Event = {"_time": time_text, "_msg": msg, "hostname": hostname,
                                "app_name": app_name, "proc_id": proc_id, "facility": names[0],
                                "severity": names[1], "level": names[2], "source_ip": source_ip}
            else:
                event = {"_time": time_text, "_msg": msg, "hostname": hostname, "app_name": app_name,
                         "proc_id": proc_id, "source_ip": source_ip}
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
        # Both readers end with these lines (the listener's name, the body): a shared method
        # measured +1.5-2 % per line for its call, so each has its copy.
        if self._source is not None:
            event["logpipe_source"] = self._source
        if self._parse_body and ("=" in msg or msg[:1] in BODY_STARTS):
            return self._apply_body(event, msg)
        return event

    def rfc5424(self, text: str, match: Match) -> Event | None:
        """``<PRI>V stamp host app procid msgid SD msg``; one plain SD element read here."""
        m = match(text)
        if m is None:
            return None
        (pri, utc_stamp, utc_second, stamp, hostname, app_name, proc_id, msg_id, sd_text,
         sd_open, msg) = m.groups()
        names = _pri_fields(pri)
        if names is None:
            return None
        if utc_stamp is not None:
            # The common "...:ss.ffffffZ" is its own _time when valid.
            valid = self._utc_seconds.get(utc_second)
            if valid is None:
                valid = self._times.utc_second_valid(utc_second)
            if not valid:
                return None
            time_text = utc_stamp
        else:
            resolved = self._received[1] if stamp == "-" else self._times.rfc3339(stamp)
            if resolved is None:
                return None
            time_text = resolved
        sd = sd_keys = None
        if sd_text is not None:
            # One SD-ELEMENT: its text split on '"' alternates the SD-ID and names (the
            # element's shape) with the values; an even count of pieces is an unclosed quote.
            pieces = sd_text.split('"')
            if len(pieces) & 1:
                shape = tuple(pieces[0::2])
                sd_keys = self._plain_shapes.get(shape, UNSEEN)
                if sd_keys is UNSEEN:
                    sd_keys = self._sd.plain_keys(shape)
        if sd_keys is None and (sd_open or sd_text):
            # Any other structured data: the general reader, from "[".
            sd, pos = self._sd.read(text, m.start(10) if sd_open else m.start(9) - 1)
            msg = text[pos:]
            if msg[:1] == "\ufeff":
                msg = msg[1:]
        if hostname != "-" and app_name != "-" and proc_id != "-" and msg_id == "-":
            # The usual header (as rfc5424_event builds it, inline).
            event: Event = {"_time": time_text, "_msg": msg, "hostname": hostname,
                            "app_name": app_name, "proc_id": proc_id, "facility": names[0],
                            "severity": names[1], "level": names[2]}
        else:
            event = rfc5424_event(time_text, msg, hostname, app_name, proc_id, msg_id, names)
        if sd_keys is not None:
            # (event.update(zip(...)) costs ~0.2 us more for two)
            value = 1
            for key in sd_keys:
                event[key] = pieces[value]
                value += 2
        elif sd:
            event.update(sd)
        source_ip = self._source_ip
        if source_ip is not None:
            event["source_ip"] = source_ip
        if self._source is not None:
            event["logpipe_source"] = self._source
        if self._parse_body and ("=" in msg or msg[:1] in BODY_STARTS):
            return self._apply_body(event, msg)
        return event


# The line's lead-in -> the readers to try, in order, each with its regex: lines without
# "<"; "<" and no space at characters 5 and 6; "<" and a space at 5 or 6.
READERS: tuple[tuple[tuple[str, Match], ...], ...] = (
    (("bsd", _BSD.match),),
    (("bsd", _BSD_PRI.match), ("rfc5424", _RFC5424.match)),
    (("rfc5424", _RFC5424.match), ("bsd", _BSD_PRI.match)),
)
