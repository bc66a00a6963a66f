"""The daemon as a process, one behaviour per test: backpressure, oversize lines,
malformed announcements, TTL expiry, and a graceful stop that loses nothing."""

from __future__ import annotations

import socket
import threading
import time

import orjson
import pytest

from ..helpers import DaemonProcess, FakeVictoriaLogs, daemon_config, wait_until


def config(data_dir: str, sink: str, *, syslog_extra: str = "", metadata_extra: str = "", batch: str = "") -> str:
    return daemon_config(data_dir, f"""
[sources.syslog]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
{syslog_extra}

[sources.metadata]
udp = "127.0.0.1:0"
{metadata_extra}

[enrich]
hold_ms = 0

[sinks.out]
{sink}
batch = {batch or "{ max_events = 500, max_age_ms = 50 }"}
""", log_format="json", shutdown_timeout_s=10)


@pytest.fixture
def fake_vl():
    server = FakeVictoriaLogs(down=False)
    yield server
    server.close()


def vl_sink(url: str, buffer: str = "") -> str:
    return f'type = "victorialogs"\nurl = "{url}"\ncompression = "none"\nretry_initial_ms = 20\nretry_max_ms = 200\n{buffer}'


def test_tcp_sender_is_held_back_while_the_sink_is_down_then_everything_arrives(tmp_path, fake_vl):
    fake_vl.down = True
    buffer = 'buffer = { type = "memory", max_bytes = 200000, when_full = "block" }'
    daemon = DaemonProcess(str(tmp_path), config(str(tmp_path / "data"), vl_sink(fake_vl.url, buffer)))
    line_count = 0
    blocked = threading.Event()
    done = threading.Event()
    sent_lines: list[int] = []

    def sender() -> None:
        nonlocal line_count
        with socket.create_connection(daemon.tcp, timeout=30) as sock:
            sock.setblocking(False)
            pending = b""
            deadline = time.monotonic() + 60
            # Bounded: at most 400,000 lines (~40 MB) and 60 s.
            while line_count < 400_000 and time.monotonic() < deadline:
                if not pending:
                    pending = b"".join(b"<14>Nov 21 10:00:00 h app: line %08d padding-padding-padding\n" % (line_count + i) for i in range(100))
                    line_count += 100
                try:
                    n = sock.send(pending)
                    pending = pending[n:]
                except BlockingIOError:
                    blocked.set()
                    if done.wait(0.005):
                        break
            sock.setblocking(True)
            if pending:
                sock.sendall(pending)
            sent_lines.append(line_count)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        wait_until(blocked.is_set, 30, "the sender to be held back")
        wait_until(lambda: daemon.stats()["sinks"]["out"]["buffer_bytes"] >= 200000, 30, "the buffer to fill")
        # Held back, not dropped: the daemon stopped reading, nothing is counted as lost.
        assert daemon.metric("logpipe_dropped_events_total", "stage=buffering,reason=buffer_full") == 0
        assert line_count < 400_000
        done.set()
        fake_vl.down = False
        thread.join(60)
        assert sent_lines, "sender did not finish"
        total = sent_lines[0]
        wait_until(lambda: len(fake_vl.messages) >= total, 60, "every line to arrive")
    finally:
        done.set()
        fake_vl.down = False
        assert daemon.stop() == 0
    seqs = [int(m.rsplit("line ", 1)[1].split()[0]) for m in fake_vl.messages]
    assert sorted(seqs) == list(range(total)), "lost or duplicated lines"
    assert any("sources_paused" == e.get("event") for e in daemon.events)
    assert any("sources_resumed" == e.get("event") for e in daemon.events)


def test_oversize_lines_are_truncated_counted_and_the_stream_continues(tmp_path, fake_vl):
    daemon = DaemonProcess(
        str(tmp_path), config(str(tmp_path / "data"), vl_sink(fake_vl.url), syslog_extra="max_line_bytes = 1024")
    )
    try:
        big = b"<14>Nov 21 10:00:00 h app: big " + "é".encode() * 5000
        with socket.create_connection(daemon.tcp, timeout=10) as sock:
            sock.sendall(big + b"\n" + b"<14>Nov 21 10:00:00 h app: after-tcp\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(big, daemon.udp)
            sock.sendto(b"<14>Nov 21 10:00:00 h app: after-udp", daemon.udp)
        wait_until(lambda: len(fake_vl.events) >= 4, 20, "four events")
        assert daemon.metric("logpipe_truncated_events_total", "source=syslog") == 2
    finally:
        assert daemon.stop() == 0
    truncated = [e for e in fake_vl.events if e.get("truncated") == "true"]
    assert len(truncated) == 2
    for event in truncated:
        assert event["_msg"].startswith("big é") and len(event["_msg"].encode()) < 1024
        assert "\ufffd" not in event["_msg"]  # cut on a character boundary
    assert sorted(e["_msg"] for e in fake_vl.events if "truncated" not in e) == ["after-tcp", "after-udp"]


def test_malformed_announcements_are_counted_and_change_nothing(tmp_path, fake_vl):
    daemon = DaemonProcess(str(tmp_path), config(str(tmp_path / "data"), vl_sink(fake_vl.url)))
    hostile = [b"", b"not json", b"[1,2,3]", b'{"hostname": {"x": 1}}', b"\xff" * 100, b'{"ip": ""}', b"{" * 10000]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for payload in hostile:
                sock.sendto(payload, daemon.metadata)
            sock.sendto(orjson.dumps({"ip": "", "hostname": "good", "service": "svc"}), daemon.metadata)
        wait_until(lambda: daemon.metric("logpipe_metadata_announcements_total", "result=ok") == 1, 10, "the good one")
        assert daemon.metric("logpipe_metadata_announcements_total", "result=malformed") == len(hostile)
        assert daemon.metric("logpipe_metadata_entries", "_") == 1
    finally:
        assert daemon.stop() == 0


def test_announcement_expires_after_its_ttl(tmp_path, fake_vl):
    daemon = DaemonProcess(str(tmp_path), config(str(tmp_path / "data"), vl_sink(fake_vl.url)))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(orjson.dumps({"ip": "", "hostname": "short", "service": "a", "ttl_s": 1}), daemon.metadata)
            sock.sendto(orjson.dumps({"ip": "", "hostname": "long", "service": "b"}), daemon.metadata)
        wait_until(lambda: daemon.metric("logpipe_metadata_entries", "_") == 2, 10, "two entries")
        wait_until(lambda: daemon.metric("logpipe_metadata_entries", "_") == 1, 10, "the short one to expire")
        with socket.create_connection(daemon.tcp, timeout=10) as sock:
            sock.sendall(b"<14>Nov 21 10:00:00 short app: s\n<14>Nov 21 10:00:00 long app: l\n")
        wait_until(lambda: len(fake_vl.events) == 2, 10, "two events")
    finally:
        assert daemon.stop() == 0
    by_host = {e["hostname"]: e for e in fake_vl.events}
    assert "service" not in by_host["short"] and by_host["long"]["service"] == "b"


def test_sigterm_delivers_everything_that_was_waiting_in_a_batch(tmp_path, fake_vl):
    # Batches would wait an hour to fill; SIGTERM must flush them anyway.
    daemon = DaemonProcess(
        str(tmp_path),
        config(str(tmp_path / "data"), vl_sink(fake_vl.url), batch="{ max_events = 100000, max_age_ms = 3600000 }"),
    )
    with socket.create_connection(daemon.tcp, timeout=10) as sock:
        sock.sendall(b"".join(b"<14>Nov 21 10:00:00 h app: pending %d\n" % i for i in range(3000)))
        sock.sendall(b"<14>Nov 21 10:00:00 h app: unterminated tail")  # no LF: flushed at close
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"<14>Nov 21 10:00:00 h app: udp pending", daemon.udp)
        wait_until(lambda: daemon.stats()["sinks"]["out"]["buffer_events"] >= 3001, 10, "lines in the buffer")
        assert fake_vl.messages == []
        assert daemon.stop() == 0  # SIGTERM while the connection is still open
    messages = sorted(fake_vl.messages)
    assert len(messages) == 3002
    assert "unterminated tail" in messages and "udp pending" in messages
    assert any(e.get("event") == "stopped" for e in daemon.events)


def test_a_dead_sink_never_stalls_a_live_one(tmp_path, fake_vl):
    fake_vl.down = True  # the "dead" sink: answers 503 forever
    dead = vl_sink(fake_vl.url, 'buffer = { type = "memory", max_bytes = 20000, when_full = "drop_newest" }')
    text = config(str(tmp_path / "data"), dead).replace("[sinks.out]", "[sinks.dead]")
    text = text.replace("shutdown_timeout_s = 10", "shutdown_timeout_s = 1")  # the dead sink never drains
    text += f'\n[sinks.live]\ntype = "file"\npath = "{tmp_path / "live"}"\nbatch = {{ max_events = 500, max_age_ms = 50 }}\n'
    daemon = DaemonProcess(str(tmp_path), text)
    try:
        with socket.create_connection(daemon.tcp, timeout=10) as sock:
            for start in range(0, 5000, 500):
                sock.sendall(b"".join(b"<14>Nov 21 10:00:00 h app: n %d\n" % i for i in range(start, start + 500)))
        wait_until(lambda: daemon.metric("logpipe_sent_events_total", "sink=live") == 5000, 20, "the live sink to get everything")
        dropped = daemon.metric("logpipe_sink_dropped_events_total", "sink=dead,reason=buffer_full")
        buffered = daemon.stats()["sinks"]["dead"]["buffer_events"]
        assert dropped > 0 and dropped + buffered == 5000  # every line either buffered or counted
    finally:
        assert daemon.stop() == 0
    lines = (tmp_path / "live.ndjson").read_bytes().splitlines()
    assert sorted(int(orjson.loads(x)["_msg"].split()[1]) for x in lines) == list(range(5000))
