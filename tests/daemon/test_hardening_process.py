"""Issue 8, process level: random bytes, 1 MiB lines and invalid UTF-8 on every listener
(syslog UDP and TCP, metadata UDP, the HTTP API) never crash the daemon and never lose the
good lines sent after them. The daemon runs as a subprocess (tests/helpers.DaemonProcess)."""

from __future__ import annotations

import os
import random
import socket

from tests.helpers import DaemonProcess, daemon_config, read_ndjson, wait_until

CONFIG = daemon_config("data", """
[sources.syslog]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
max_line_bytes = 65536
[sources.metadata]
udp = "127.0.0.1:0"
[enrich]
hold_ms = 200
[sinks.out]
type = "file"
path = "events"
batch = { max_age_ms = 20 }
""", log_format="json", shutdown_timeout_s=5)


def _junk() -> list[bytes]:
    rng = random.Random(8)
    return [
        rng.randbytes(4096),
        b"\xff\xfe\xc3\x28 invalid utf-8 \xed\xa0\x80 \xf0\x28\x8c\x28",
        b"<14>1 2026-01-01T00:00:00Z h app - - - " + b"x" * (1024 * 1024),
        bytes(range(256)) * 16,
    ]


def _stored(workdir) -> list[dict]:
    return read_ndjson(os.path.join(workdir, "data", "events.ndjson"))


def _good(n: int, via: str) -> bytes:
    return f"<14>1 2026-01-01T00:00:00Z good app - - - good {via} {n}\n".encode()


def test_junk_on_every_listener_neither_crashes_nor_loses_later_good_lines(tmp_path):
    daemon = DaemonProcess(str(tmp_path), CONFIG)
    try:
        junk = _junk()
        # syslog TCP: junk and good lines interleaved on one connection, then a fresh one
        with socket.create_connection(daemon.tcp, timeout=10) as s:
            for i, chunk in enumerate(junk):
                s.sendall(chunk + b"\n" + _good(i, "tcp"))
        with socket.create_connection(daemon.tcp, timeout=10) as s:
            s.sendall(junk[0])  # no newline: the tail is flushed when the connection closes
        with socket.create_connection(daemon.tcp, timeout=10) as s:
            s.sendall(_good(99, "tcp"))
        # syslog UDP, metadata UDP: the largest datagrams loopback carries, random and invalid
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for target in (daemon.udp, daemon.metadata):
                for chunk in junk:
                    u.sendto(chunk[:65000], target)
            for i in range(5):
                u.sendto(_good(i, "udp"), daemon.udp)
        # the HTTP API: garbage requests and a 1 MiB header line
        for chunk in junk:
            host, port = daemon.api.split(":")
            with socket.create_connection((host, int(port)), timeout=10) as s:
                try:
                    s.sendall(chunk + b"\r\n\r\n")
                    s.recv(1024)
                except OSError:
                    pass  # the server may close on us mid-send; that is the point
        expected = {f"good tcp {i}" for i in range(len(junk))} | {"good tcp 99"} | {f"good udp {i}" for i in range(5)}
        wait_until(lambda: expected <= {e.get("_msg") for e in _stored(tmp_path)}, 15, "the good lines")
        assert daemon.proc.poll() is None
        stats = daemon.stats()
        assert stats["metrics"]["logpipe_metadata_announcements_total"].get("result=malformed", 0) >= 1
        assert stats["metrics"]["logpipe_truncated_events_total"]["source=syslog"] >= 1
        assert not [e for e in daemon.events if e.get("level") in ("error", "critical") or e.get("event") == "unparsed"], daemon.events
    finally:
        assert daemon.stop() == 0
