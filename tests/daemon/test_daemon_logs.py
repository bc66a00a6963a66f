"""The daemon's own logs say what changed: a sink that starts failing, keeps failing (a
summary a minute) and recovers; events dropped at a full buffer; debug lines per batch and
connection when asked for."""

from __future__ import annotations

import socket

import structlog

from logpipe import deliver
from logpipe.config import loads
from logpipe.daemon.app import Daemon

from ..helpers import FakeVictoriaLogs, await_until, run_async


def test_a_failing_sink_logs_its_first_failure_a_summary_while_failing_and_its_recovery(tmp_path, monkeypatch):
    monkeypatch.setattr(deliver, "FAILING_SUMMARY_S", 0.2)
    server = FakeVictoriaLogs(down=True)
    text = f"""
[daemon]
data_dir = "{tmp_path}"
[api]
enabled = false
[sources.syslog]
tcp = "127.0.0.1:0"
[enrich]
hold_ms = 0
[sinks.vl]
type = "victorialogs"
url = "{server.url}"
retry_initial_ms = 20
retry_max_ms = 50
batch = {{ max_age_ms = 20 }}
"""

    async def scenario():
        import asyncio

        daemon = Daemon(loads(text))
        with structlog.testing.capture_logs() as logs:
            await daemon.start()
            try:
                _, writer = await asyncio.open_connection(*daemon.syslog.addresses["tcp"])
                writer.write(b"<14>Nov 21 10:00:00 h app: one\n")
                await writer.drain()
                await await_until(lambda: any(e["event"] == "sink_still_failing" for e in logs), what="a summary")
                server.down = False
                await await_until(lambda: any(e["event"] == "sink_recovered" for e in logs), what="recovery")
                writer.close()
            finally:
                await daemon.shutdown()
        return logs

    try:
        logs = run_async(scenario, timeout=30)
    finally:
        server.close()
    events = [e["event"] for e in logs]
    assert events.count("send_failed") == 1
    summary = next(e for e in logs if e["event"] == "sink_still_failing")
    assert summary["attempts"] >= 1 and summary["buffered_events"] == 1 and summary["log_level"] == "warning"
    assert events.index("send_failed") < events.index("sink_still_failing") < events.index("sink_recovered")


def test_udp_lines_dropped_at_a_full_buffer_are_logged(tmp_path):
    text = f"""
[daemon]
data_dir = "{tmp_path}"
shutdown_timeout_s = 1
[api]
enabled = false
[sources.syslog]
udp = "127.0.0.1:0"
[enrich]
hold_ms = 0
[sinks.vl]
type = "victorialogs"
url = "http://127.0.0.1:9"
buffer = {{ max_bytes = 1 }}
"""

    async def scenario():
        daemon = Daemon(loads(text))
        with structlog.testing.capture_logs() as logs:
            await daemon.start()
            try:
                address = daemon.syslog.addresses["udp"]
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.sendto(b"<14>Nov 21 10:00:00 h app: fills the buffer", address)
                    await await_until(lambda: daemon.sinks["vl"].buffer.is_full, what="a full buffer")
                    sock.sendto(b"<14>Nov 21 10:00:00 h app: dropped", address)
                await await_until(lambda: any(e["event"] == "events_dropped" for e in logs), what="a drop logged")
            finally:
                await daemon.shutdown()
        return logs

    logs = run_async(scenario, timeout=30)
    dropped = next(e for e in logs if e["event"] == "events_dropped")
    assert dropped["sink"] == "vl" and dropped["reason"] == "buffer_full" and dropped["log_level"] == "warning"


def test_a_dead_sink_that_fills_its_blocking_buffer_pauses_the_sources_and_is_named(tmp_path):
    """What the README states: with when_full = "block" a full buffer pauses every TCP
    source, so the healthy sink beside it waits too; the log names the sink that did it."""
    text = f"""
[daemon]
data_dir = "{tmp_path}"
shutdown_timeout_s = 1
[api]
enabled = false
[sources.syslog]
tcp = "127.0.0.1:0"
[enrich]
hold_ms = 0
[sinks.healthy]
type = "file"
batch = {{ max_age_ms = 20 }}
[sinks.dead]
type = "victorialogs"
url = "http://127.0.0.1:9"
buffer = {{ max_bytes = 2000, when_full = "block" }}
"""

    async def scenario():
        import asyncio

        daemon = Daemon(loads(text))
        with structlog.testing.capture_logs() as logs:
            await daemon.start()
            try:
                _, writer = await asyncio.open_connection(*daemon.syslog.addresses["tcp"])
                writer.write(b"<14>Nov 21 10:00:00 h app: a line long enough to fill a small buffer soon\n" * 100)
                await writer.drain()
                await await_until(lambda: any(e["event"] == "sources_paused" for e in logs), what="sources paused")
                writer.close()
            finally:
                await daemon.shutdown()
        return logs

    logs = run_async(scenario, timeout=30)
    paused = next(e for e in logs if e["event"] == "sources_paused")
    assert paused["sinks"] == ["dead"]
