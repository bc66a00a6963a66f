"""The syslog UDP listener reads its socket directly: a backlog is read and parsed as one
chunk (not 32 datagrams a turn), each sender's messages keep their order and source_ip,
refused senders are counted, and a stop ingests what the kernel already held. Real sockets
on 127.0.0.1; the backlog is queued while the loop cannot run, so what the listener reads
in its first turn is known."""

from __future__ import annotations

import socket

from logpipe.config import SyslogSource
from logpipe.metrics import Metrics
from logpipe.sources.flow import FlowControl
from logpipe.sources.net import udp_socket
from logpipe.sources.syslog import SyslogListeners, _UdpReader

from ..helpers import await_until, run_async


class RecordingPipeline:
    def __init__(self) -> None:
        self.chunks: list[list[dict]] = []

    def ingest(self, events: list[dict], holdable: bool) -> None:
        assert holdable is False  # UDP cannot be paused
        self.chunks.append(events)

    @property
    def events(self) -> list[dict]:
        return [e for chunk in self.chunks for e in chunk]


def start(config: SyslogSource):
    pipeline = RecordingPipeline()
    metrics = Metrics()
    listeners = SyslogListeners("syslog", config, pipeline, FlowControl(), metrics)  # type: ignore[arg-type]
    return listeners, pipeline, metrics


def sender(ip: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    return s


def line(host: str, i: int) -> bytes:
    return f"<14>Nov 21 10:00:00 {host} app: message {i}".encode()


def test_a_backlog_is_one_chunk_and_each_sender_keeps_its_order():
    async def scenario():
        listeners, pipeline, metrics = start(SyslogSource(udp="127.0.0.1:0", allow=["127.0.0.2/32", "127.0.0.3/32"]))
        await listeners.start()
        address = listeners.addresses["udp"]
        a, b, refused = sender("127.0.0.2"), sender("127.0.0.3"), sender("127.0.0.4")
        try:
            # Queued before the loop runs again: interleaved senders, more than libuv's 32.
            for i in range(300):
                a.sendto(line("a", i), address)
                b.sendto(line("b", i), address)
                refused.sendto(line("x", i), address)
            await await_until(lambda: len(pipeline.events) >= 600, what="600 events")
        finally:
            for s in (a, b, refused):
                s.close()
            await listeners.stop()
        assert [len(c) for c in pipeline.chunks] == [600]
        for host, ip in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
            mine = [e for e in pipeline.events if e["hostname"] == host]
            assert [e["_msg"] for e in mine] == [f"message {i}" for i in range(300)]
            assert {e["source_ip"] for e in mine} == {ip}
        assert metrics.get("logpipe_dropped_events_total").value("receiving", "not_allowed") == 300
        assert metrics.get("logpipe_received_events_total").value("syslog", "udp") == 600

    run_async(scenario, timeout=30)


def test_a_turn_reads_at_most_max_per_turn_and_the_rest_next_turn():
    async def scenario():
        listeners, pipeline, _ = start(SyslogSource(udp="127.0.0.1:0"))
        await listeners.start()
        n = _UdpReader.MAX_PER_TURN + 10
        s = sender("127.0.0.1")
        try:
            for i in range(n):
                s.sendto(line("h", i), listeners.addresses["udp"])
            await await_until(lambda: len(pipeline.events) >= n, what=f"{n} events")
        finally:
            s.close()
            await listeners.stop()
        assert [len(c) for c in pipeline.chunks] == [_UdpReader.MAX_PER_TURN, 10]
        assert [e["_msg"] for e in pipeline.events] == [f"message {i}" for i in range(n)]

    run_async(scenario, timeout=30)


def test_stop_ingests_what_the_socket_already_holds():
    async def scenario():
        listeners, pipeline, _ = start(SyslogSource(udp="127.0.0.1:0", max_line_bytes=64))
        await listeners.start()
        s = sender("127.0.0.1")
        try:
            for i in range(2500):  # more than two turns' worth, never read before the stop
                s.sendto(line("h", i), listeners.addresses["udp"])
            s.sendto(b"<14>Nov 21 10:00:00 h app: " + b"y" * 100 + b"\r\n", listeners.addresses["udp"])
        finally:
            s.close()
        await listeners.stop()
        assert len(pipeline.events) == 2501
        assert pipeline.events[-1]["_msg"] == "y" * (64 - len("<14>Nov 21 10:00:00 h app: "))
        assert listeners.udp_counters.truncated.value == 1

    run_async(scenario, timeout=30)


def test_the_receive_buffer_is_what_was_asked_for():
    sock = udp_socket("127.0.0.1:0", 32 * 1024 * 1024)
    try:
        # Linux reports twice the size set (bookkeeping included); as root SO_RCVBUFFORCE
        # is not capped by net.core.rmem_max, otherwise it is.
        with open("/proc/sys/net/core/rmem_max") as f:
            cap = int(f.read())
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.setsockopt(socket.SOL_SOCKET, 33, 4096)  # SO_RCVBUFFORCE
                privileged = True
            except OSError:
                privileged = False
        assert got == 2 * (32 * 1024 * 1024 if privileged else min(cap, 32 * 1024 * 1024))
    finally:
        sock.close()
