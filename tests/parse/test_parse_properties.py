"""Property tests: the parser never raises, always yields a storable event, and reads back
a generated RFC 5424 message field for field."""

from __future__ import annotations

import calendar
import os
from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logpipe.parse.body import RESERVED
from logpipe.parse.framing import StreamFramer
from logpipe.parse.syslog import FACILITIES, SEVERITIES, SyslogParser

RECV = calendar.timegm((2026, 11, 21, 12, 0, 0)) + 0.25
# LOGPIPE_FUZZ_EXAMPLES raises the budget for the documented long run (docs-hardening.md).
FAST = settings(max_examples=int(os.environ.get("LOGPIPE_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# Bytes that look like syslog more often than uniform noise does, so the deeper branches
# (SD, stamps, tags, bodies) are reached.
_FRAGMENTS = [b"<13>", b"<191>", b"<192>", b"<7> ", b"1 ", b"100 ", b"- ", b"[", b"]", b"[a]", b"=",
              b'"', b"\\", b"2026-11-21T10:00:00", b"2026-11-21 10:00:00", b".123", b".1234567890123",
              b"Z", b"+05:30", b"Nov 21 10:00:00 ", b"NOV 21 10:00:00 ", b"Feb 29 ", b"host ",
              b"fd00:: ", b"app[12]: ", b"app[12]:", b"app: ", b": ", b"%ASA-6-1: ",
              b"%LINK-3-UPDOWN: ", b"Message forwarded from h: ", b"*", b"35: ", b"{", b"}",
              b'"msg":', b"lvl=warn ", b"\xef\xbb\xbf", b"\xff", b"\x00", b" ", b"\n", b"\t"]
syslogish = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=8)),
                     max_size=24).map(b"".join)


def assert_storable(event: dict) -> None:
    assert isinstance(event["_time"], str) and event["_time"].endswith("Z")
    assert isinstance(event["_msg"], str)
    for key, value in event.items():
        assert isinstance(key, str)
        if key in ("_time", "_msg", "hostname", "app_name", "proc_id", "msg_id"):
            assert type(value) is str and value != "-" or key == "_msg"
    orjson.dumps(event)  # every value is encodable (no lone surrogates, no huge ints)


@FAST
@given(st.one_of(st.binary(max_size=300), syslogish), st.booleans())
def test_parser_never_raises_and_event_is_storable(line: bytes, parse_body: bool) -> None:
    parser = SyslogParser(timezone="Europe/Berlin", parse_body=parse_body)
    event = parser.parse(line, RECV, "10.0.0.1")
    assert_storable(event)
    assert event["source_ip"] == "10.0.0.1"
    if "parse_error" in event:
        assert parser.parse_errors == 1


@FAST
@given(st.lists(syslogish, max_size=8), st.integers(min_value=64, max_value=512))
def test_framer_then_parser_never_raise(chunks: list[bytes], max_line: int) -> None:
    framer = StreamFramer(max_line)
    parser = SyslogParser(max_msg_bytes=1024)
    lines = []
    for chunk in chunks:
        lines += framer.feed(chunk)
    lines += framer.finish()
    for event in parser.parse_lines(lines, RECV, None):
        assert_storable(event)
        assert len(orjson.dumps(event)) <= 1024


printusascii = st.text(alphabet=[chr(c) for c in range(33, 127)], min_size=1, max_size=32)
header_value = printusascii.filter(lambda v: v != "-")
sd_name = st.text(alphabet=[chr(c) for c in range(33, 127) if chr(c) not in '= ]"'],
                  min_size=1, max_size=16)
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


def sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@st.composite
def rfc5424_messages(draw):
    pri = draw(st.integers(0, 191))
    stamp = draw(st.none() | st.datetimes(min_value=datetime(1900, 1, 1),
                                          max_value=datetime(2100, 1, 1)))
    offset = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    fields = {name: draw(st.none() | header_value)
              for name in ("hostname", "app_name", "proc_id", "msg_id")}
    elements = draw(st.dictionaries(sd_name, st.lists(st.tuples(sd_name, unicode_text),
                                                      max_size=4), max_size=3))
    msg = draw(st.none() | unicode_text.filter(lambda m: not m.startswith("\ufeff")))
    bom = draw(st.booleans())

    expected: dict = {}
    if stamp is None:
        wire_stamp = "-"
        expected["_time"] = "2026-11-21T12:00:00.250000Z"
    else:
        zone = timezone(timedelta(minutes=offset))
        local = stamp.replace(tzinfo=zone)
        wire_stamp = local.isoformat(timespec="microseconds")
        utc = local.astimezone(UTC).replace(tzinfo=None)
        expected["_time"] = utc.isoformat(timespec="microseconds") + "Z"
    sd_text = ""
    for sd_id, params in elements.items():
        sd_text += "[" + sd_id + "".join(f' {n}="{sd_escape(v)}"' for n, v in params) + "]"
        if not params:  # an element without params: its SD-ID, "sd." + it when reserved
            expected.setdefault("sd." + sd_id if sd_id in RESERVED else sd_id, "true")
        for name, value in params:
            key = f"{sd_id}.{name}"
            if key not in expected:
                expected[key] = value
            elif isinstance(expected[key], list):
                expected[key].append(value)
            else:
                expected[key] = [expected[key], value]
    wire = f"<{pri}>1 {wire_stamp} " + " ".join(v or "-" for v in fields.values())
    wire += " " + (sd_text or "-")
    if msg is not None:
        wire += " " + ("\ufeff" if bom else "") + msg
    expected["_msg"] = msg or ""
    expected.update({k: v for k, v in fields.items() if v is not None})
    expected["facility"] = FACILITIES[pri >> 3]
    expected["severity"] = SEVERITIES[pri & 7]
    return wire.encode(), expected


@FAST
@given(rfc5424_messages())
def test_generated_rfc5424_round_trips_field_for_field(message) -> None:
    wire, expected = message
    event = SyslogParser(parse_body=False).parse(wire, RECV, None)
    event.pop("level")
    assert event == expected


# Pieces of RFC 5424 headers and structured data around parse_lines' shortcuts (one plain
# SD-ELEMENT read by the header regex, the byte-5 guess between the two fast regexes).
_HEADER_FRAGMENTS = [b"<13>", b"<0>", b"<013>", b"<134>", b"<191>", b"1 ", b"12 ", b"123 ", b"- ",
                     b"2026-11-21T10:00:00.123456Z ", b"2026-11-21T10:00:00Z ", b"Nov 21 10:00:00 ",
                     b"host ", b"app ", b"42 ", b"ID7 ", b"\t", b"\x0b", "\u00a0".encode(),
                     b"[x@1", b"[meta@32473", b" a=", b" b=", b"=", b'"v"', b'"', b"\\", b"]",
                     b"] ", b"][", b" ", b"msg", b"\xef\xbb\xbf", b"[x@1 a=\"1\"] ", b"[x@1]", b"[x@1 ] ",
                     b" a= "]
headerish = st.lists(st.sampled_from(_HEADER_FRAGMENTS), max_size=20).map(b"".join)


@FAST
@given(st.lists(st.one_of(headerish, syslogish), min_size=1, max_size=6), st.booleans())
def test_batch_fast_paths_give_the_per_line_event(lines: list[bytes], parse_body: bool) -> None:
    batch = SyslogParser(parse_body=parse_body).parse_lines(lines, RECV, "10.0.0.1")
    one = SyslogParser(parse_body=parse_body)
    for line, event in zip(lines, batch, strict=True):
        expected = one.parse(line, RECV, "10.0.0.1")
        assert (type(event), list(event.items())) == (type(expected), list(expected.items()))


@FAST
@given(st.one_of(rfc5424_messages().map(lambda message: message[0]), syslogish),
       st.sampled_from([b" ", b"\n", b"\r\n", b"\t ", b"   "]))
def test_whitespace_before_the_header_changes_nothing(line: bytes, whitespace: bytes) -> None:
    if line.startswith(b"\xef\xbb\xbf"):
        return  # a BOM is only removed at the very start of the line
    parser = SyslogParser()
    event = parser.parse(line, RECV, None)
    if "parse_error" not in event:
        assert parser.parse(whitespace + line, RECV, None) == event


months = st.sampled_from(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
tag_name = st.text(alphabet=[chr(c) for c in range(33, 127) if chr(c) not in "[]:%"], min_size=1, max_size=12)


@st.composite
def bsd_messages(draw):
    """``<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`` with the month in a drawn spelling."""
    month = draw(months)
    spelled = draw(st.sampled_from([month, month.upper(), month.lower()]))
    stamp = f"{draw(st.integers(1, 28)):2d} {draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:00"
    # (a first word "-" is no hostname; one starting with "%" is a Cisco mnemonic's place)
    host = draw(printusascii.filter(lambda h: h[-1] != ":" and "[" not in h and h[0] not in "-%"))
    pid = draw(st.none() | st.integers(0, 99999).map(str))
    colon = ":" + (draw(st.sampled_from([" ", ""])) if pid is not None else " ")
    tag = draw(tag_name) + (f"[{pid}]" if pid is not None else "") + colon
    msg = draw(unicode_text)
    pri = draw(st.none() | st.integers(0, 191))
    spaces = draw(st.sampled_from(["", " ", "  "])) if pri is not None else ""
    head = "" if pri is None else f"<{pri}>"
    return ((head + spaces + f"{spelled} {stamp} {host} {tag}{msg}").encode(),
            (head + f"{month} {stamp} {host} {tag}{msg}").encode())


@FAST
@given(bsd_messages())
def test_month_case_and_spaces_after_pri_read_like_the_usual_spelling(message) -> None:
    wire, usual = message
    parser = SyslogParser(parse_body=False)
    event = parser.parse(wire, RECV, None)
    assert event == parser.parse(usual, RECV, None)
    assert "parse_error" not in event and "hostname" in event and "app_name" in event
    assert parser.parse_lines([wire], RECV, None) == [event]
