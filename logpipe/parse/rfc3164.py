"""RFC 3164 headers, read leniently as real senders write them -> events. Sans-IO.

Contract: :meth:`Rfc3164Reader.read` takes the text after the optional ``<PRI>`` and the
spaces after it (at ``start``; ``pri`` is -1 without one) and returns an event, or None
when the line has neither PRI nor a valid stamp (the caller stores it raw). The header is:

- an optional stamp: ``Mmm dd hh:mm:ss`` (month in any letter case) with optional year,
  fraction (any number of digits, or a bare ``.``) and Cisco ``*``/counter/``UTC:``
  decorations; or ISO 8601 as rsyslog writes it. After a PRI the ISO stamp may have a space
  instead of ``T`` when it carries a zone (``2026-11-20 07:00:33.5+01:00``); without a zone
  that is Python logging's asctime, and the line stays content.
- an optional hostname: the first word after the stamp, unless it ends in ``:`` or holds
  ``[`` (then it is the tag), but an IPv6 address ending in ``::`` is a hostname. AIX's
  ``Message forwarded from HOST:`` names it, and so does Cisco's ``seq: *stamp: HOST
  %FAC-SEV-MNEMONIC:`` (the hostname after the stamp's colon).
- an optional ``tag[pid]:`` / ``tag:`` / ``tag[pid]`` (the space after the colon optional
  after ``[pid]``); an empty tag (``: `` alone) is removed.

A line with PRI but no valid stamp is all content (RFC 3164 4.3.2), a tag still recognized.
Cisco ``%FAC[-SUB]-SEV-MNEMONIC:`` messages keep the whole text in ``_msg`` and give the
mnemonic as ``msg_id``.
"""

from __future__ import annotations

import re

from logpipe.parse.header import PRI_NAMES, Event, Received
from logpipe.parse.timestamps import TimestampResolver

__all__ = ["Rfc3164Reader", "TAG_PATTERN", "HOST_TAG_PATTERN"]

# The header up to the end of the stamp. Groups: 1 Cisco origin hostname, 2 month (any
# three letters: the stamp resolver knows the months, in any letter case, and a case-
# insensitive list costs ~0.12 us on every line that reaches this regex), 3 day, 4 year,
# 5 clock, 6 fraction, 7 zone, 8 year after the clock, 9 ISO stamp, 10 colon ending a
# Cisco stamp.
_STAMP = re.compile(
    r"(?:\d{1,10}: ){0,2}"  # Cisco: syslog counter and/or "service sequence-numbers"
    r"(?:([^\s:]{1,255}): (?:\d{1,10}: )?)?"  # Cisco: "logging origin-id hostname"
    r"[*.]?"  # Cisco: clock not synchronized (*) or synchronized after a loss (.)
    r"(?:([A-Za-z]{3}) {1,2}(\d{1,2})"
    r"(?: (\d{4}))? (\d\d:\d\d:\d\d)(?:\.(\d*))?"
    # "UTC:" (Cisco show-timezone) or "CST 1987" (RFC 3164's example 3)
    r"(?: ([A-Z]{3,5})(?=:| \d{4} ))?(?: (\d{4})(?= ))?"
    r"|(\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[Zz]|[+-]\d\d:?\d\d)?))"
    r"(:)?(?: +|$)"
)
# _STAMP after a PRI: the ISO stamp may have a space for "T" when it carries a zone (lines
# without PRI do not pay for the alternative: ~0.13 us on a log4j line).
_STAMP_AFTER_PRI = re.compile(_STAMP.pattern.replace(
    r"[Tt]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[Zz]|[+-]\d\d:?\d\d)?",
    r"(?:[Tt]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[Zz]|[+-]\d\d:?\d\d)?"
    r"| \d\d:\d\d:\d\d(?:[.,]\d+)?(?:[Zz]|[+-]\d\d:?\d\d))", 1))
_UTC_ZONES = frozenset({"UTC", "GMT", "UCT", "UT"})
# tag[pid]: / tag: / tag[pid] at the start of the content ('%' starts a Cisco mnemonic);
# after "[pid]:" the space is optional ("root[8539]:msg").
TAG_PATTERN = r"([^\s\[\]:%][^\s\[\]:]{0,127})(?:\[([^\]\s]{0,128})\](?:: ?| |$)|:(?: |$))"
_TAG = re.compile(TAG_PATTERN)
# macOS names processes with spaces ("Microsoft Word[14463]: "); a spaced tag is taken
# only with a numeric pid and the colon, so prose is not mistaken for one.
_SPACED_TAG = re.compile(r"([^\s\[\]:%][^\[\]:]{0,63}?)\[(\d{1,10})\]: ")
# The common case in one match: "hostname tag[pid]: " (a hostname never ends in ':' and
# holds no '['; otherwise that first word is the tag, decided on the slow path).
HOST_TAG_PATTERN = r"([^ \[]*[^ \[:]) " + TAG_PATTERN
_HOST_TAG = re.compile(HOST_TAG_PATTERN)
_CISCO_MNEMONIC = re.compile(r"%([A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)?-[0-7]-[A-Za-z0-9_]+):")
_CISCO_COUNTER = re.compile(r"(?:\d{1,10}: ){1,2}(?=%)")
# "seq: *Mmm dd hh:mm:ss: HOSTNAME %FAC-SEV-MNEMONIC:" (IOS with the hostname after the stamp)
_CISCO_HOST = re.compile(r"([^\s:%\[]+) (?=" + _CISCO_MNEMONIC.pattern + ")")
# AIX relays: "Message forwarded from HOSTNAME: tag[pid]: msg"
_AIX_FORWARDED = re.compile(r"Message forwarded from ([^\s:\[]+): ")
# An IPv6 address that ends in "::" ("fd00::", "2001:db8::"), as a hostname.
_IPV6_HOST = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{1,4}){0,6}::")


class Rfc3164Reader:
    """Reads RFC 3164 lines for one parser (its timestamp caches)."""

    __slots__ = ("_times",)

    def __init__(self, times: TimestampResolver) -> None:
        self._times = times

    def read(self, text: str, start: int, pri: int, context: Received) -> Event | None:
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
                    facility, severity, level = PRI_NAMES[pri]
                    return {"_time": time_text, "_msg": text[m.end():], "hostname": hostname,
                            "app_name": app_name, "proc_id": proc_id, "facility": facility,
                            "severity": severity, "level": level}
                event: Event = {"_time": time_text, "_msg": text[m.end():]}
                if hostname != "-":
                    event["hostname"] = hostname
                event["app_name"] = app_name
                if proc_id:
                    event["proc_id"] = proc_id
                if pri >= 0:
                    event["facility"], event["severity"], event["level"] = PRI_NAMES[pri]
                return event
        # The general reader (inline: raw lines end here, and a call costs ~40 ns).
        m = (_STAMP if pri < 0 else _STAMP_AFTER_PRI).match(text, start)
        time_text = None
        if m is not None:
            (origin, month, day, year, clock, frac, zone, year_after, iso,
             cisco_colon) = m.groups()
            if iso is not None:
                if iso[10] != " ":
                    time_text = self._times.rfc3339(iso)
                else:  # after a PRI, with a zone (_STAMP_AFTER_PRI)
                    time_text = self._times.rfc3339(iso.replace(" ", "T", 1))
            else:
                time_text = self._times.bsd(month, day, year or year_after, clock, frac,
                                            zone in _UTC_ZONES, context[2], context[3])
        if m is None or time_text is None:
            # No stamp, or an impossible one (Feb 30).
            if pri < 0:
                return None  # neither PRI nor stamp: not syslog
            # RFC 3164 4.3.2: after a PRI without a valid stamp, the rest is CONTENT.
            content = text[start:]
            counter = _CISCO_COUNTER.match(content)
            if counter is not None:
                content = content[counter.end():]
            return _content_event(context[1], content, None, pri)
        return _content_event(time_text, *_hostname(text[m.end():], origin, cisco_colon), pri)


def _hostname(content: str, origin: str | None, cisco_colon: str | None) -> tuple[str, str | None]:
    """The content after a stamp -> (content after the hostname, the hostname or None)."""
    if origin is not None:
        return content, origin
    if cisco_colon:
        host = _CISCO_HOST.match(content)
        if host is None:
            return content, None
        return content[host.end():], host.group(1)
    if content[:1] == "%":
        return content, None
    if content[:1] == "M" and content[:23] == "Message forwarded from ":
        forwarded = _AIX_FORWARDED.match(content)
        if forwarded is not None:
            return content[forwarded.end():], forwarded.group(1)
    space = content.find(" ")
    first = content if space < 0 else content[:space]
    # A first word ending in ':' or holding '[' is the tag: no hostname.
    hostname = None
    if first and ((first[-1] != ":" and "[" not in first) or _IPV6_HOST.fullmatch(first)):
        hostname = first
        content = "" if space < 0 else content[space + 1:]
    # An empty tag: ": msg" (Cisco ASA writes "hostname : %ASA-...").
    if content[:1] == ":" and (len(content) == 1 or content[1] == " "):
        content = content[2:]
    return content, hostname


def _content_event(time_text: str, content: str, hostname: str | None, pri: int) -> Event:
    """The event of what follows the header's hostname: a Cisco mnemonic or a tag, then MSG."""
    event: Event = {"_time": time_text, "_msg": content}
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
        event["facility"], event["severity"], event["level"] = PRI_NAMES[pri]
    return event
