"""Syslog sink: RFC 5424 formatting (checked by parsing it back with our own parser),
octet-counted TCP framing, reconnects, UDP, and delivery into a real syslog-ng over TCP and
TLS (marked ``syslog_ng``; skipped with a reason when syslog-ng is not installed)."""

from __future__ import annotations

import asyncio
import socket
import tempfile

import orjson
import pytest

from logpipe.batch import Batch
from logpipe.buffer.memory import MemoryBuffer
from logpipe.config import Batch as BatchConfig
from logpipe.config import SyslogSink
from logpipe.deliver import DeadLetters, Deliverer
from logpipe.metrics import Metrics
from logpipe.parse.framing import StreamFramer
from logpipe.parse.syslog import SyslogParser
from logpipe.sinks.base import SendError
from logpipe.sinks.syslog import MessageFormatter, Syslog

from ..helpers import await_until, run_async, wait_until
from ..syslog_ng_server import SD_ID, SyslogNg, make_certificates, syslog_ng_bin


def batch(events: list[dict], batch_id: str = "b") -> Batch:
    records = [orjson.dumps(e) for e in events]
    return Batch(batch_id, records, sum(map(len, records)) + len(records), 0.0)


EVENT = {
    "_time": "2024-05-06T07:08:09.123456Z",
    "_msg": "disk full on /data",
    "hostname": "web-1",
    "app_name": "api",
    "proc_id": "42",
    "msg_id": "DISK",
    "facility": "local3",
    "severity": "err",
    "level": "error",
    "source_ip": "10.0.0.7",
    "service": 'we"ird]na\\me',
    "exampleSDID@32473.eventSource": "Application",
    "bytes": 123,
}


def parse_back(message: bytes) -> dict:
    return SyslogParser("UTC").parse_lines([message], 0.0, None)[0]


def test_message_round_trips_through_an_rfc5424_parser():
    head, msg = MessageFormatter(SD_ID, "user", "info").format(EVENT)
    assert head.startswith(b"<155>1 2024-05-06T07:08:09.123456Z web-1 api 42 DISK [")
    event = parse_back(head + msg)
    assert event["_msg"] == "disk full on /data"
    assert (event["facility"], event["severity"], event["hostname"], event["app_name"]) == ("local3", "err", "web-1", "api")
    assert event["_time"] == "2024-05-06T07:08:09.123456Z"
    assert event[f"{SD_ID}.service"] == 'we"ird]na\\me'  # escapes undone by the parser
    assert event[f"{SD_ID}.bytes"] == "123"
    assert event[f"{SD_ID}.source_ip"] == "10.0.0.7"
    assert event[f"{SD_ID}.exampleSDID@32473.eventSource"] == "Application"


@pytest.mark.parametrize(
    "event,prefix",
    [
        pytest.param({"_msg": "x"}, b"<14>1 - - - - - - ", id="nothing-known-is-nil"),
        pytest.param({"_msg": "x", "level": "warn"}, b"<12>1 - - - - - [", id="severity-from-level"),
        pytest.param({"_msg": "x", "severity": "notice", "level": "error"}, b'<11>1 - - - - - [logpipe@32473 severity="notice" level="error"] ',
                     id="severity-from-the-normalized-level-not-the-pri"),
        pytest.param({"_msg": "x", "severity": "err", "level": "error"}, b'<11>1 - - - - - [logpipe@32473 level="error"] ',
                     id="severity-agreeing-with-the-level-is-not-repeated"),
        pytest.param({"_msg": "x", "severity": "crit", "level": "odd"}, b"<10>1 - - - - - [", id="unknown-level-falls-back-to-severity"),
        pytest.param({"_msg": "x", "source_ip": "1.2.3.4"}, b"<14>1 - 1.2.3.4 - - - [", id="hostname-from-source-ip"),
        pytest.param({"_msg": "x", "_time": "2024-01-01T00:00:00Z"}, b"<14>1 2024-01-01T00:00:00Z - ", id="no-fraction"),
        pytest.param({"_msg": "x", "_time": "yesterday"}, b"<14>1 - - ", id="bad-time-is-nil"),
        pytest.param({"_msg": "x", "app_name": "a b\u00e9" + "x" * 60}, b"<14>1 - - a_b_" + b"x" * 44 + b" - - ", id="app-name-cut-to-48"),
        pytest.param({"_msg": "x", "facility": ["odd"]}, b"<14>1 - ", id="odd-facility-uses-default"),
    ],
)
def test_header_fields(event, prefix):
    head, _ = MessageFormatter(SD_ID, "user", "info").format(event)
    assert head.startswith(prefix), head


def test_sd_param_names_are_made_legal_and_cut_to_32():
    head, _ = MessageFormatter(SD_ID, "user", "info").format({"a b=c]\"d": "v", "k" * 40: "w"})
    assert b' a_b_c__d="v"' in head and (b" " + b"k" * 32 + b'="w"') in head


def test_tcp_frames_are_octet_counted():
    sink = Syslog("s", SyslogSink(address="127.0.0.1:1"))
    payload = sink.frames(batch([{"_msg": "one\nwith newline"}, {"_msg": "h\u00e9"}]).records)
    framer = StreamFramer(65536)
    messages = framer.feed(payload)
    assert [parse_back(m)["_msg"] for m in messages] == ["one\nwith newline", "h\u00e9"]


class Receiver:
    """A plain TCP server on loopback collecting bytes per connection."""

    def __init__(self) -> None:
        self.connections: list[bytearray] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None

    async def start(self, port: int = 0) -> int:
        async def handle(reader, writer):
            data = bytearray()
            self.connections.append(data)
            self.writers.append(writer)
            while chunk := await reader.read(65536):
                data += chunk
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", port)
        return self.server.sockets[0].getsockname()[1]

    def messages(self) -> list[str]:
        out = []
        for data in self.connections:
            out += [parse_back(m)["_msg"] for m in StreamFramer(65536).feed(bytes(data))]
        return out


def test_one_connection_across_batches_and_reconnect_after_the_peer_closes():
    async def scenario():
        receiver = Receiver()
        port = await receiver.start()
        sink = Syslog("s", SyslogSink(address=f"127.0.0.1:{port}"))
        await sink.send(batch([{"_msg": "a"}, {"_msg": "b"}]))
        await sink.send(batch([{"_msg": "c"}]))
        await await_until(lambda: len(receiver.messages()) == 3, what="3 messages")
        assert len(receiver.connections) == 1 and sink.connects == 1
        receiver.writers[0].close()  # the peer hangs up between batches
        await await_until(lambda: sink._reader.at_eof(), what="EOF seen")
        await sink.send(batch([{"_msg": "d"}]))
        await await_until(lambda: len(receiver.messages()) == 4, what="4 messages")
        assert receiver.messages() == ["a", "b", "c", "d"] and sink.connects == 2
        await sink.close()
        receiver.server.close()

    run_async(scenario, timeout=20)


def test_connection_refused_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused

        async def scenario():
            sink = Syslog("s", SyslogSink(address=f"127.0.0.1:{port}"))
            with pytest.raises(SendError) as info:
                await sink.send(batch([{"_msg": "a"}]))
            assert info.value.retryable
            await sink.close()

        run_async(scenario, timeout=20)


def test_deliverer_rides_out_a_receiver_outage():
    """Receiver down at first: the deliverer retries with backoff until it comes up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario():
        metrics = Metrics()
        sink = Syslog("s", SyslogSink(address=f"127.0.0.1:{port}"))
        buffer = MemoryBuffer("s", 10**8)
        with tempfile.TemporaryDirectory() as tmp:
            deliverer = Deliverer(sink, buffer, BatchConfig(max_events=10, max_age_ms=1), retry_initial_s=0.01,
                                  retry_max_s=0.05, dead_letters=DeadLetters(tmp, "s"), metrics=metrics)
            task = asyncio.create_task(deliverer.run())
            records = [orjson.dumps({"_msg": f"m{i}"}) for i in range(25)]
            buffer.push(records, sum(map(len, records)) + len(records))
            await await_until(lambda: deliverer.failing_since is not None, what="first failure")
            receiver = Receiver()
            await receiver.start(port)
            await await_until(lambda: len(receiver.messages()) == 25, what="all 25 after recovery")
            assert receiver.messages() == [f"m{i}" for i in range(25)]
            buffer.close()
            await task
            await sink.close()
            receiver.server.close()

    run_async(scenario, timeout=30)


def test_udp_datagrams_one_message_each_and_long_ones_cut():
    async def scenario():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp.setblocking(False)
            port = udp.getsockname()[1]
            sink = Syslog("s", SyslogSink(address=f"127.0.0.1:{port}", protocol="udp", udp_max_bytes=600))
            await sink.send(batch([{"_msg": "short"}, {"_msg": "\u00e9" * 1000}]))
            got = []

            def receive():
                try:
                    got.append(udp.recv(65536))
                except BlockingIOError:
                    pass
                return len(got) == 2

            await await_until(receive, what="2 datagrams")
            await sink.close()
        assert parse_back(got[0])["_msg"] == "short"
        assert len(got[1]) <= 600 and set(parse_back(got[1])["_msg"]) == {"\u00e9"}
        assert sink.truncated == 1

    run_async(scenario, timeout=20)


# --- a real syslog-ng ---------------------------------------------------------------------

needs_syslog_ng = pytest.mark.skipif(syslog_ng_bin() is None, reason="syslog-ng not installed (apt-get install syslog-ng-core)")


@pytest.fixture
def syslog_ng(tmp_path):
    certs = make_certificates(str(tmp_path))
    server = SyslogNg(syslog_ng_bin(), str(tmp_path), certs)
    server.start()
    yield server
    server.stop()


def labelled_events(n: int, tag: str) -> list[dict]:
    return [
        {"_time": f"2024-05-06T07:08:{i % 60:02d}.{i:06d}Z", "_msg": f"{tag} line {i} \u00e9 ]\"\\", "hostname": "web-1",
         "app_name": "api", "proc_id": "7", "msg_id": "REQ", "facility": "local0", "severity": "info",
         "service": "checkout", "container_id": "3f2a9c1b7d4e", "i": i, "path": 'a"b]c\\d'}
        for i in range(n)
    ]


async def deliver_all(sink: Syslog, events: list[dict], per_batch: int) -> None:
    for start in range(0, len(events), per_batch):
        await sink.send(batch(events[start : start + per_batch], f"b{start}"))


def check_received(server: SyslogNg, events: list[dict], tag: str) -> None:
    lines = [line for line in server.lines() if line[7].startswith(tag + " ")]
    assert len(lines) == len(events)
    by_msg = {line[7]: line for line in lines}
    assert len(by_msg) == len(events)  # every line once
    for e in events:
        host, program, pid, msgid, pri, _isodate, sdata, msg = by_msg[e["_msg"]]
        assert (host, program, pid, msgid, pri) == ("web-1", "api", "7", "REQ", str(16 * 8 + 6))
        assert sdata == (
            f'[{SD_ID} level="info" service="checkout" container_id="3f2a9c1b7d4e" i="{e["i"]}" path="a\\"b\\]c\\\\d"]'
            if "level" in e else
            f'[{SD_ID} service="checkout" container_id="3f2a9c1b7d4e" i="{e["i"]}" path="a\\"b\\]c\\\\d"]'
        )


@pytest.mark.syslog_ng
@needs_syslog_ng
@pytest.mark.parametrize("protocol", ["tcp", "tls"])
def test_real_syslog_ng_receives_every_line_once_with_structured_data(syslog_ng, protocol):
    events = labelled_events(3000, protocol)
    if protocol == "tls":
        c = syslog_ng.certs
        config = SyslogSink(address=f"127.0.0.1:{syslog_ng.tls_port}", protocol="tls", tls_ca=c["ca"],
                            tls_cert=c["client_cert"], tls_key=c["client_key"])
    else:
        config = SyslogSink(address=f"127.0.0.1:{syslog_ng.tcp_port}")

    async def scenario():
        sink = Syslog("s", config)
        await deliver_all(sink, events, 500)
        assert sink.connects == 1
        await sink.close()

    run_async(scenario, timeout=60)
    wait_until(lambda: len([x for x in syslog_ng.lines() if x[7].startswith(protocol + " ")]) >= len(events),
               timeout=20, what="syslog-ng wrote every line")
    check_received(syslog_ng, events, protocol)


@pytest.mark.syslog_ng
@needs_syslog_ng
def test_tls_without_client_certificate_is_refused_and_retryable(syslog_ng):
    config = SyslogSink(address=f"127.0.0.1:{syslog_ng.tls_port}", protocol="tls", tls_ca=syslog_ng.certs["ca"])

    async def scenario():
        sink = Syslog("s", config)
        with pytest.raises(SendError) as info:
            # TLS 1.3: our handshake completes before the server checks the certificate;
            # the sink waits for its verdict before writing, so the batch is not "sent".
            await sink.send(batch([{"_msg": "nocert"}]))
        assert info.value.retryable
        await sink.close()

    run_async(scenario, timeout=30)
    assert not [x for x in syslog_ng.lines() if x[7] == "nocert"]


@pytest.mark.syslog_ng
@needs_syslog_ng
def test_real_syslog_ng_restart_mid_stream_loses_nothing(syslog_ng, tmp_path):
    """syslog-ng goes away between batches: the sink notices the closed connection, the
    deliverer retries with backoff until syslog-ng is back on the same port, and every line
    arrives exactly once (nothing was written to the dead connection)."""
    events = labelled_events(1000, "restart")
    records = [orjson.dumps(e) for e in events]

    async def scenario():
        metrics = Metrics()
        sink = Syslog("s", SyslogSink(address=f"127.0.0.1:{syslog_ng.tcp_port}"))
        buffer = MemoryBuffer("s", 10**8)
        deliverer = Deliverer(sink, buffer, BatchConfig(max_events=100, max_age_ms=1), retry_initial_s=0.01,
                              retry_max_s=0.1, dead_letters=DeadLetters(str(tmp_path), "s"), metrics=metrics)
        task = asyncio.create_task(deliverer.run())
        buffer.push(records[:500], sum(map(len, records[:500])) + 500)
        await await_until(lambda: buffer.events == 0, timeout=20, what="first half confirmed")
        await asyncio.to_thread(syslog_ng.stop)
        buffer.push(records[500:], sum(map(len, records[500:])) + 500)
        await await_until(lambda: deliverer.failing_since is not None, timeout=20, what="sink failing")
        await asyncio.to_thread(syslog_ng.start, True)
        await await_until(lambda: buffer.events == 0, timeout=30, what="second half confirmed")
        buffer.close()
        await task
        await sink.close()
        return sink.connects

    connects = run_async(scenario, timeout=90)
    assert connects >= 2
    wait_until(lambda: len([x for x in syslog_ng.lines() if x[7].startswith("restart ")]) >= 1000, timeout=20,
               what="syslog-ng wrote every line")
    check_received(syslog_ng, events, "restart")


@pytest.mark.syslog_ng
@needs_syslog_ng
def test_daemon_forwards_enriched_lines_to_syslog_ng_over_tls(syslog_ng, tmp_path):
    """The whole path: RFC 3164 lines over TCP into the daemon, joined with an announced
    container's labels, through a disk buffer and the TLS syslog sink into syslog-ng;
    the labels and the body fields arrive as structured data."""
    from ..helpers import DaemonProcess, daemon_config

    c = syslog_ng.certs
    config = daemon_config(f"{tmp_path}/data", f"""
[sources.syslog]
tcp = "127.0.0.1:0"
[sources.metadata]
udp = "127.0.0.1:0"
[enrich]
hold_ms = 0
[sinks.fwd]
type = "syslog"
address = "127.0.0.1:{syslog_ng.tls_port}"
protocol = "tls"
tls_ca = "{c['ca']}"
tls_cert = "{c['client_cert']}"
tls_key = "{c['client_key']}"
buffer = {{ type = "disk" }}
batch = {{ max_events = 100, max_age_ms = 20 }}
""", log_format="json")
    daemon = DaemonProcess(str(tmp_path), config)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(orjson.dumps({"container_id": "3f2a9c1b7d4e", "service": "checkout", "hostname": "shop-1"}),
                       daemon.metadata)
        wait_until(lambda: daemon.stats().get("metadata_entries") == 1, what="announcement applied")
        with socket.create_connection(daemon.tcp) as tcp:
            tcp.sendall(b"".join(
                b"<134>Mar  5 06:07:08 shop-1 app[9]: "
                + orjson.dumps({"msg": f"e2e {i}", "order": i, **({"level": "error"} if i == 3 else {})}) + b"\n"
                for i in range(200)
            ))
        wait_until(lambda: len([x for x in syslog_ng.lines() if x[7].startswith("e2e ")]) >= 200, timeout=30,
                   what="200 forwarded lines")
    finally:
        daemon.stop()
    lines = {x[7]: x for x in syslog_ng.lines() if x[7].startswith("e2e ")}
    assert len(lines) == 200 and len([x for x in syslog_ng.lines() if x[7].startswith("e2e ")]) == 200
    host, program, pid, _msgid, pri, _iso, sdata, _msg = lines["e2e 7"]
    assert (host, program, pid, pri) == ("shop-1", "app", "9", "134")
    assert 'order="7"' in sdata and 'service="checkout"' in sdata and 'container_id="3f2a9c1b7d4e"' in sdata
    assert sdata.startswith(f"[{SD_ID} ")
    # A JSON "level":"error" line goes out as err, not as its PRI's info: a SIEM filtering
    # on severity sees it; the PRI's own severity stays in the structured data.
    pri, sdata = lines["e2e 3"][4], lines["e2e 3"][6]
    assert pri == str(16 * 8 + 3) and 'severity="info"' in sdata and 'level="error"' in sdata
