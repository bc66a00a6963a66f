"""The listener's name on its events: SyslogParser(source="NAME") -> logpipe_source.

Contract (syslog.py, "Where from"): every event the parser produces carries
``logpipe_source`` right after ``source_ip`` (where ``source_ip`` would be when the sender is
unknown), before body fields; a body or structured data cannot forge it; without a source
the events are exactly as before.
"""

from __future__ import annotations

import orjson
import pytest

from logpipe.parse.body import BodyEvent
from logpipe.parse.framing import Truncated
from logpipe.parse.syslog import SyslogParser
from tests.parse.test_parse_syslog import IP, RECV, RECV_TEXT, header

NAME = "edge-udp"

LINES = [
    pytest.param(b"<13>Nov 20 07:00:33 web-1 nginx[12]: GET / 200", id="rfc3164-fast"),
    pytest.param(b"Nov 20 07:00:33 web-1 nginx: no pri", id="rfc3164-no-pri"),
    pytest.param(b"<30> Nov 20 07:00:33 web-1 nginx[12]: space after pri", id="rfc3164-slow"),
    pytest.param(b"<14>1 2026-11-21T10:00:00.123456Z h app 7 - - fast", id="rfc5424-fast"),
    pytest.param(b'<14>1 2026-11-21T10:00:00Z h app 7 ID1 [x@1 a="1"][keepalive] sd', id="rfc5424-sd"),
    pytest.param(b'<14>1 - h app - - - {"msg":"json","n":1}', id="json-body"),
    pytest.param(b'<14>Nov 20 07:00:33 h app[1]: lvl=warn msg="logfmt body"', id="logfmt-body"),
    pytest.param(b"<132>disk almost full", id="content-only"),
    pytest.param(b"not syslog at all", id="raw"),
    pytest.param(b"<999>1 - - - - - - pri too big", id="raw-pri"),
]


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("source_ip", [IP, None])
def test_source_name_follows_the_sender_on_every_event(line: bytes, source_ip: str | None) -> None:
    plain = SyslogParser().parse(line, RECV, source_ip)
    named = SyslogParser(source=NAME).parse(line, RECV, source_ip)
    assert named["logpipe_source"] == NAME
    # The same event with one field inserted: after source_ip, before any body field.
    names = list(named)
    at = names.index("logpipe_source")
    assert names[:at] + names[at + 1:] == list(plain)
    assert set(names[at + 1:]) == set(getattr(plain, "body_keys", ()))
    if source_ip is not None:
        assert names[at - 1] == "source_ip"
    assert {key: value for key, value in named.items() if key != "logpipe_source"} == plain
    assert type(named) is type(plain)


@pytest.mark.parametrize("line", LINES)
def test_parse_lines_gives_the_named_event_parse_gives(line: bytes) -> None:
    one = SyslogParser(source=NAME).parse(line, RECV, IP)
    batch = SyslogParser(source=NAME).parse_lines([line, line.decode("utf-8", "replace")], RECV, IP)
    assert [list(event.items()) for event in batch] == [list(one.items())] * 2


def test_whole_event_order_with_a_body() -> None:
    event = SyslogParser(source=NAME).parse(b'<14>1 - h api - - [x@1 k="v"] {"msg":"slow","ms":3}', RECV, IP)
    assert list(event.items()) == [
        ("_time", RECV_TEXT), ("_msg", "slow"), ("hostname", "h"), ("app_name", "api"),
        *header(14).items(), ("x@1.k", "v"), ("source_ip", IP), ("logpipe_source", NAME), ("ms", 3)]


def test_without_a_source_there_is_no_field() -> None:
    for param in LINES:
        line = param.values[0]
        assert "logpipe_source" not in SyslogParser().parse(line, RECV, IP)
        assert "logpipe_source" not in SyslogParser(source=None).parse_lines([line], RECV, IP)[0]


@pytest.mark.parametrize("line", [
    pytest.param(b'<14>1 - h app - - - {"logpipe_source":"forged","msg":"x"}', id="json"),
    pytest.param(b"<14>Nov 20 07:00:33 h app[1]: logpipe_source=forged msg=x", id="logfmt"),
    pytest.param(b'{"logpipe_source":"forged","msg":"x"}', id="json-raw-line"),
])
@pytest.mark.parametrize("source", [NAME, None])
def test_a_body_cannot_forge_the_source(line: bytes, source: str | None) -> None:
    for event in (SyslogParser(source=source).parse(line, RECV, IP),
                  SyslogParser(source=source).parse_lines([line], RECV, IP)[0]):
        assert isinstance(event, BodyEvent)
        assert event["body.logpipe_source"] == "forged"
        assert event.get("logpipe_source") == source
        assert "body.logpipe_source" in event.body_keys


def test_structured_data_cannot_forge_the_source() -> None:
    event = SyslogParser(source=NAME).parse(b"<14>1 - h app - - [logpipe_source] x", RECV, IP)
    assert event["logpipe_source"] == NAME and event["sd.logpipe_source"] == "true"


def test_truncated_and_capped_events_keep_the_source() -> None:
    parser = SyslogParser(max_msg_bytes=4096, source=NAME)
    cut = parser.parse(Truncated(b"<13>Nov 20 07:00:33 h app: cut her"), RECV, IP)
    assert cut["truncated"] == "true" and cut["logpipe_source"] == NAME
    long_sd = b'<13>1 - h a - - [x@1 big="' + b"v" * 6000 + b'"] ' + b"m" * 6000
    for event in (parser.parse(long_sd, RECV, IP), parser.parse_lines([long_sd], RECV, IP)[0]):
        assert event["truncated"] == "true" and event["logpipe_source"] == NAME
        assert len(orjson.dumps(event)) <= 4096
