"""Header shapes real devices and libraries send that the first parser read wrong (issue 19).

The shapes were collected by reading other parsers' test suites (influxdata/go-syslog,
syslog-loose as Vector uses it, VRL's parse_syslog, syslog-ng's msgparse and syslogformat
tests, EasyPost's RFC 5424 parser); the lines below are written for this table. Each row
is the whole expected event, checked through ``parse`` and through ``parse_lines`` (which
must give the identical event, field order included). ``benchmarks/fidelity_parse.py``
scores any version of the parser against this table, field by field.
"""

from __future__ import annotations

import pytest

from logpipe.parse.framing import StreamFramer
from logpipe.parse.syslog import SyslogParser
from tests.parse.test_parse_syslog import IP, RECV, RECV_TEXT, header


def event(time: str, msg: str, pri: int | None = None, **fields: str) -> dict:
    """An expected event: header fields in their stored order, then structured data."""
    out: dict = {"_time": time if time.endswith("Z") else time + ".000000Z", "_msg": msg}
    for key in ("hostname", "app_name", "proc_id", "msg_id"):
        if key in fields:
            out[key] = fields.pop(key)
    if pri is not None:
        out.update(header(pri))
    out.update({key.replace("__", "."): value for key, value in fields.items()})
    out["source_ip"] = IP
    return out


SHAPES = [
    # -- a space between <PRI> and the stamp or the tag --------------------------------------
    pytest.param(b"<30> Nov 20 08:15:02 edge-7 ntpd[611]: time reset +0.2s",
                 event("2026-11-20T08:15:02", "time reset +0.2s", 30, hostname="edge-7",
                       app_name="ntpd", proc_id="611"),
                 id="space-after-pri-bsd"),
    pytest.param(b"<30>  Nov 20 08:15:02.25 edge-7 ntpd[611]: two spaces and a fraction",
                 event("2026-11-20T08:15:02.250000Z", "two spaces and a fraction", 30,
                       hostname="edge-7", app_name="ntpd", proc_id="611"),
                 id="two-spaces-after-pri-bsd-fraction"),
    pytest.param(b"<86> 2026-11-20T09:00:01+01:00 bastion sshd[9]: Accepted publickey",
                 event("2026-11-20T08:00:01", "Accepted publickey", 86, hostname="bastion",
                       app_name="sshd", proc_id="9"),
                 id="space-after-pri-iso"),
    pytest.param(b"<54> 2026-11-20T09:00:01+00:00 printer :",
                 event("2026-11-20T09:00:01", "", 54, hostname="printer"),
                 id="space-after-pri-iso-host-empty-tag"),
    pytest.param(b"<13> cupsd[77]: job 4 done",
                 event(RECV_TEXT, "job 4 done", 13, app_name="cupsd", proc_id="77"),
                 id="space-after-pri-tag-no-stamp"),
    pytest.param(b"<13> disk almost full",
                 event(RECV_TEXT, "disk almost full", 13),
                 id="space-after-pri-content-only"),
    # -- RFC 5424 structured-data elements without parameters --------------------------------
    pytest.param(b"<14>1 2026-11-21T10:00:00Z lb1 haproxy 5 - [keepalive] ping",
                 event("2026-11-21T10:00:00", "ping", 14, hostname="lb1", app_name="haproxy",
                       proc_id="5", keepalive="true"),
                 id="sd-element-without-params"),
    pytest.param(b'<14>1 2026-11-21T10:00:00Z lb1 haproxy 5 - [origin software="hap"][keepalive]',
                 event("2026-11-21T10:00:00", "", 14, hostname="lb1", app_name="haproxy",
                       proc_id="5", origin__software="hap", keepalive="true"),
                 id="sd-paramless-after-params-no-msg"),
    pytest.param(b'<14>1 2026-11-21T10:00:00Z lb1 haproxy 5 - [keepalive][origin ip="192.0.2.5"] up',
                 event("2026-11-21T10:00:00", "up", 14, hostname="lb1", app_name="haproxy",
                       proc_id="5", keepalive="true", origin__ip="192.0.2.5"),
                 id="sd-paramless-before-params"),
    pytest.param(b"<14>1 - - - - - [hb@32473]",
                 event(RECV_TEXT, "", 14, **{"hb@32473": "true"}),
                 id="sd-paramless-only-content"),
    pytest.param(b"<14>1 - h a - - [hb@32473 ] x",
                 event(RECV_TEXT, "x", 14, hostname="h", app_name="a", **{"hb@32473": "true"}),
                 id="sd-paramless-trailing-space"),
    pytest.param(b"<14>1 - h a - - [hostname][level] x",
                 event(RECV_TEXT, "x", 14, hostname="h", app_name="a",
                       **{"sd.hostname": "true", "sd.level": "true"}),
                 id="sd-paramless-named-like-a-header-field"),
    pytest.param(b'<14>1 - h a - - [x@1 k= "v"] m',
                 event(RECV_TEXT, "m", 14, hostname="h", app_name="a", **{"x@1.k": "v"}),
                 id="sd-space-after-equals"),
    # -- RFC 3164 stamps in other shapes ----------------------------------------------------
    pytest.param(b"<190>NOV 20 07:00:33 10.1.1.8-1 CLILOG[4411]: user admin logged in",
                 event("2026-11-20T07:00:33", "user admin logged in", 190, hostname="10.1.1.8-1",
                       app_name="CLILOG", proc_id="4411"),
                 id="upper-case-month"),
    pytest.param(b"<13>DEC 31 23:59:59 h app: last year",
                 event("2025-12-31T23:59:59", "last year", 13, hostname="h", app_name="app"),
                 id="upper-case-month-year-inference"),
    pytest.param(b"<13>nov 20 07:00:33 h app: lower case",
                 event("2026-11-20T07:00:33", "lower case", 13, hostname="h", app_name="app"),
                 id="lower-case-month"),
    pytest.param(b"<13>2026-11-20 07:00:33.5+01:00 h app[3]: iso with a space",
                 event("2026-11-20T06:00:33.500000Z", "iso with a space", 13, hostname="h",
                       app_name="app", proc_id="3"),
                 id="iso-space-instead-of-t"),
    pytest.param(b"<13>2026-11-20 07:00:33Z h app: iso with a space, zulu",
                 event("2026-11-20T07:00:33", "iso with a space, zulu", 13, hostname="h",
                       app_name="app"),
                 id="iso-space-instead-of-t-zulu"),
    # Python logging's asctime ("2026-11-20 07:00:33,123") has no zone: such a line stays
    # content, so a level word is never read as a hostname.
    pytest.param(b"<11>2026-11-20 07:00:33,123 ERROR myapp: boom",
                 event(RECV_TEXT, "2026-11-20 07:00:33,123 ERROR myapp: boom", 11),
                 id="iso-space-without-zone-is-content"),
    pytest.param(b"<13>2026-11-20T07:00:33.123456789012+00:00 h app: twelve digits",
                 event("2026-11-20T07:00:33.123456Z", "twelve digits", 13, hostname="h",
                       app_name="app"),
                 id="iso-more-than-nine-fraction-digits"),
    pytest.param(b"<7>2026-11-20T07:00:33.15600000000000000000000000000000+01:00 relay app[1]: x",
                 event("2026-11-20T06:00:33.156000Z", "x", 7, hostname="relay", app_name="app",
                       proc_id="1"),
                 id="iso-long-zero-fraction"),
    pytest.param(b"<13>Nov 20 07:00:33.1234567891 h app: ten digits",
                 event("2026-11-20T07:00:33.123456Z", "ten digits", 13, hostname="h",
                       app_name="app"),
                 id="bsd-more-than-nine-fraction-digits"),
    pytest.param(b"<13>Nov 20 07:00:33. h app: a bare dot",
                 event("2026-11-20T07:00:33", "a bare dot", 13, hostname="h", app_name="app"),
                 id="bsd-bare-dot"),
    pytest.param(b"<7>2026-11-20T07:00:33.156+01:00",
                 event("2026-11-20T06:00:33.156000Z", "", 7),
                 id="iso-stamp-only"),
    # -- RFC 5424 VERSION of up to three digits ------------------------------------------------
    pytest.param(b"<165>100 - relay7 - - - -",
                 event(RECV_TEXT, "", 165, hostname="relay7"),
                 id="rfc5424-version-three-digits"),
    pytest.param(b"<165>23 2026-11-21T10:00:00Z relay7 app - - - two-digit version",
                 event("2026-11-21T10:00:00", "two-digit version", 165, hostname="relay7",
                       app_name="app"),
                 id="rfc5424-version-two-digits"),
    pytest.param(b"1 2026-11-21T10:00:00.25Z h app 5 - - no pri",
                 event("2026-11-21T10:00:00.250000Z", "no pri", None, hostname="h", app_name="app",
                       proc_id="5"),
                 id="rfc5424-without-pri"),
    # -- whitespace before <PRI> ------------------------------------------------------------
    pytest.param(b"\n<14>1 2026-11-21T10:00:00Z h app 7 - - after a newline",
                 event("2026-11-21T10:00:00", "after a newline", 14, hostname="h", app_name="app",
                       proc_id="7"),
                 id="newline-before-pri"),
    pytest.param(b"   <34>Nov 20 07:00:33 h su: after spaces",
                 event("2026-11-20T07:00:33", "after spaces", 34, hostname="h", app_name="su"),
                 id="spaces-before-pri"),
    pytest.param(b"\t<13>plain",
                 event(RECV_TEXT, "plain", 13),
                 id="tab-before-pri"),
    # -- empty tag -------------------------------------------------------------------------
    pytest.param(b"<13>Nov 20 07:00:33 : a lone colon",
                 event("2026-11-20T07:00:33", "a lone colon", 13),
                 id="empty-tag-after-stamp"),
    pytest.param(b"<13>Nov 20 07:00:33 :",
                 event("2026-11-20T07:00:33", "", 13),
                 id="empty-tag-nothing-else"),
    pytest.param(b"Nov 20 07:00:33 gw01 : after host",
                 event("2026-11-20T07:00:33", "after host", None, hostname="gw01"),
                 id="empty-tag-after-hostname"),
    # -- IPv6 hostnames ---------------------------------------------------------------------
    pytest.param(b"<0>Nov 20 07:00:33 fd00:: kernel: link up",
                 event("2026-11-20T07:00:33", "link up", 0, hostname="fd00::", app_name="kernel"),
                 id="ipv6-host-ending-in-double-colon"),
    pytest.param(b"<0>Nov 20 07:00:33 2001:db8:: ntpd[4]: sync",
                 event("2026-11-20T07:00:33", "sync", 0, hostname="2001:db8::", app_name="ntpd",
                       proc_id="4"),
                 id="ipv6-host-ending-in-double-colon-pid"),
    pytest.param(b"<0>Nov 20 07:00:33 2001:db8::7 ntpd[4]: sync",
                 event("2026-11-20T07:00:33", "sync", 0, hostname="2001:db8::7", app_name="ntpd",
                       proc_id="4"),
                 id="ipv6-host"),
    # -- Cisco: the hostname after the stamp -----------------------------------------------
    pytest.param(b"<187>112: *Nov 20 07:00:33: core-sw1 %LINK-3-UPDOWN: Interface Gi1/0/2, "
                 b"changed state to down",
                 event("2026-11-20T07:00:33", "%LINK-3-UPDOWN: Interface Gi1/0/2, changed state to down",
                       187, hostname="core-sw1", msg_id="LINK-3-UPDOWN"),
                 id="cisco-seq-stamp-hostname-mnemonic"),
    pytest.param(b"<189>113: Nov 20 07:00:33.120: core-sw1.example.net %SEC-6-IPACCESSLOGP: "
                 b"list 101 denied",
                 event("2026-11-20T07:00:33.120000Z", "%SEC-6-IPACCESSLOGP: list 101 denied", 189,
                       hostname="core-sw1.example.net", msg_id="SEC-6-IPACCESSLOGP"),
                 id="cisco-seq-stamp-fraction-hostname"),
    pytest.param(b"<190>Nov 20 2026 07:00:33: %PIX-6-302014: Teardown TCP connection 1",
                 event("2026-11-20T07:00:33", "%PIX-6-302014: Teardown TCP connection 1", 190,
                       msg_id="PIX-6-302014"),
                 id="cisco-pix-year-colon"),
    # -- tags ------------------------------------------------------------------------------
    pytest.param(b"<13>Nov 20 07:00:33 h tagger[42]:no space after the colon",
                 event("2026-11-20T07:00:33", "no space after the colon", 13, hostname="h",
                       app_name="tagger", proc_id="42"),
                 id="tag-pid-colon-without-space"),
    pytest.param(b"<13>Nov 20 07:00:33 h ctl/snmpd[2499]:",
                 event("2026-11-20T07:00:33", "", 13, hostname="h", app_name="ctl/snmpd",
                       proc_id="2499"),
                 id="tag-with-slash-no-msg"),
    pytest.param(b"<38>Nov 20 07:00:33 Message forwarded from aix7: sshd[5120]: Accepted publickey",
                 event("2026-11-20T07:00:33", "Accepted publickey", 38, hostname="aix7",
                       app_name="sshd", proc_id="5120"),
                 id="aix-message-forwarded-from"),
    # -- what already worked and must keep working ------------------------------------------
    pytest.param(b"<166>Nov 20 07:00:33 ABC-1-234 Some message here",
                 event("2026-11-20T07:00:33", "Some message here", 166, hostname="ABC-1-234"),
                 id="hostname-then-prose"),
    pytest.param(b"<13>Nov 20 07:00:33 2026 linksys app: year after the clock",
                 event("2026-11-20T07:00:33", "year after the clock", 13, hostname="linksys",
                       app_name="app"),
                 id="year-after-clock"),
    pytest.param(b"<28>1 2026-11-21T10:00:00.250-03:00 MX204 LS1:rpd 6589 - - bgp: %DAEMON-4: x",
                 event("2026-11-21T13:00:00.250000Z", "bgp: %DAEMON-4: x", 28, hostname="MX204",
                       app_name="LS1:rpd", proc_id="6589"),
                 id="rfc5424-colon-in-app-name"),
    pytest.param(b"   not syslog at all",
                 {"_time": RECV_TEXT, "_msg": "   not syslog at all", "parse_error": "true",
                  "source_ip": IP},
                 id="raw-keeps-leading-whitespace"),
]


@pytest.mark.parametrize(("line", "expected"), SHAPES)
def test_shape_parses_to_event(line: bytes, expected: dict) -> None:
    assert SyslogParser().parse(line, RECV, IP) == expected


@pytest.mark.parametrize(("line", "expected"), SHAPES)
def test_shape_parse_lines_gives_the_identical_event(line: bytes, expected: dict) -> None:
    one = SyslogParser().parse(line, RECV, IP)
    batch = SyslogParser().parse_lines([line, line.decode("utf-8", "replace")], RECV, IP)
    assert [list(e.items()) for e in batch] == [list(one.items())] * 2


@pytest.mark.parametrize("feed", ["feed", "feed_text"])
@pytest.mark.parametrize(("line", "expected"), SHAPES)
def test_shape_framed_byte_by_byte_with_trailing_data(line: bytes, expected: dict, feed: str) -> None:
    """As the TCP source reads it: framed (byte by byte, another message after it), then
    parse_lines; feed_text is what the daemon uses, feed gives bytes."""
    if line[:1] == b"\n":
        pytest.skip("for the framer, a LF ends the frame before")
    framer = StreamFramer(65536)
    out: list = []
    for byte in line + b"\n<13>1 - - - - - - next\n":
        out += getattr(framer, feed)(bytes([byte]))
    events = SyslogParser().parse_lines(out, RECV, IP)
    assert events[0] == expected and events[1]["_msg"] == "next"
    # A whole chunk at once takes the framer's one-decode path.
    chunk = getattr(StreamFramer(65536), feed)(line + b"\n<13>1 - - - - - - next\n")
    assert SyslogParser().parse_lines(chunk, RECV, IP)[0] == expected
