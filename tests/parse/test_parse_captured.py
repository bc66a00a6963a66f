"""Wire bytes captured from real senders on this kind of machine, fed through the framer and
the parser exactly as the TCP listener does.

syslog-ng 3.38.1 (Debian's syslog-ng-core), receiving from util-linux `logger` 2.38.1 and
forwarding with its two default templates, captured on a local TCP socket:
- ``network()`` destination: the legacy BSD format, LF-terminated;
- ``syslog()`` destination: RFC 5424 with RFC 6587 octet counting, whose count includes a
  trailing LF (the framer strips it);
- with a ``network()`` *source*, syslog-ng reads an RFC 5424 datagram as RFC 3164 and forwards
  it mangled ("localhost 1 2026-...") unless the source has ``flags(syslog-protocol)``: such a
  line must still be stored, with its text intact.
"""

from logpipe.parse.framing import StreamFramer
from logpipe.parse.syslog import SyslogParser

RECEIVED = 1_763_744_400.0  # 2025-11-21T17:00:00Z; the captures are from Nov 21

SYSLOG_NG_NETWORK = (
    b"<156>Nov 21 16:59:01 vm web[4242]: GET /health 200\n"
    b"<27>Nov 21 16:59:01 vm worker: job failed\n"
)
SYSLOG_NG_SYSLOG = (
    b"65 <156>1 2026-11-21T16:59:01+00:00 vm web 4242 - - GET /health 200\n"
    b'122 <27>1 2026-11-21T16:59:01+00:00 vm worker - JOB7 [timeQuality tzKnown="1" isSynced="0"]'
    b'[meta@32473 job="a\\"b"] job failed\n'
)
SYSLOG_NG_MANGLED_5424 = (
    b'<27>Nov 21 16:58:51 localhost 1 2026-11-21T16:58:51.948202+00:00 vm worker - JOB7 [timeQuality tzKnown="1" '
    b'isSynced="0"][meta@32473 job="a\\"b"] job failed\n'
)


def parse_stream(data: bytes, chunk: int | None = None) -> list[dict]:
    framer = StreamFramer(65536)
    parser = SyslogParser("UTC")
    lines = []
    step = chunk or len(data)
    for i in range(0, len(data), step):
        lines += framer.feed(data[i : i + step])
    lines += framer.finish()
    return parser.parse_lines(lines, RECEIVED, "127.0.0.1")


def test_syslog_ng_network_destination_legacy_format():
    for chunk in (None, 1, 7):
        web, worker = parse_stream(SYSLOG_NG_NETWORK, chunk)
        assert (web["_msg"], web["hostname"], web["app_name"], web["proc_id"]) == ("GET /health 200", "vm", "web", "4242")
        assert (web["facility"], web["severity"], web["level"]) == ("local3", "warning", "warn")
        assert web["_time"].endswith("-11-21T16:59:01.000000Z")
        assert (worker["_msg"], worker["app_name"], worker["facility"], worker["severity"]) == ("job failed", "worker", "daemon", "err")
        assert "proc_id" not in worker and "parse_error" not in worker


def test_syslog_ng_syslog_destination_rfc5424_octet_counted():
    for chunk in (None, 1, 13):
        web, worker = parse_stream(SYSLOG_NG_SYSLOG, chunk)
        assert web["_time"] == "2026-11-21T16:59:01.000000Z"
        assert (web["_msg"], web["hostname"], web["app_name"], web["proc_id"]) == ("GET /health 200", "vm", "web", "4242")
        assert "msg_id" not in web
        assert (worker["_msg"], worker["msg_id"], worker["severity"]) == ("job failed", "JOB7", "err")
        assert worker["meta@32473.job"] == 'a"b'
        assert worker["timeQuality.tzKnown"] == "1"


def test_syslog_ng_mangled_rfc5424_keeps_its_text():
    (event,) = parse_stream(SYSLOG_NG_MANGLED_5424)
    assert event["severity"] == "err" and "parse_error" not in event
    assert event["_msg"].endswith('[meta@32473 job="a\\"b"] job failed')
