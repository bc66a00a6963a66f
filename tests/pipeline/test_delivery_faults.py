"""Delivery promise under faults, with real processes: the daemon runs as a subprocess
(``python -m logpipe run -c CONFIG``), lines arrive over real TCP on loopback, and each
test counts what reached the destination: lost and duplicated lines are both reported.

Sinks used: VictoriaLogs itself (skipped without LOGPIPE_VICTORIALOGS_BIN); a minimal
VictoriaLogs-compatible HTTP server in this process (POST /insert/jsonline, answering 503
or 204 as the test decides), so an outage can be switched on and off; the file sink.
These tests are slow-ish (a few seconds each, real processes): ~20 s for the file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import pytest

from logpipe.buffer import record

from ..helpers import DaemonProcess as Logpipe
from ..helpers import FakeVictoriaLogs as FakeInsert
from ..helpers import daemon_config, file_messages, stop_process
from ..helpers import wait_until as _wait_until

TIMEOUT = 60.0


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "condition"):
    """These scenarios move tens of thousands of lines through real processes: allow 60 s."""
    return _wait_until(predicate, timeout, what)




def config(data_dir: str, sink: str, buffer: str, *, batch: str = "{ max_events = 1000, max_age_ms = 100 }") -> str:
    return daemon_config(data_dir, f"""[sources.syslog]
tcp = "127.0.0.1:0"

[sinks.out]
{sink}
batch = {batch}
buffer = {buffer}
retry_initial_ms = 50
retry_max_ms = 300
""", log_format="json", log_level="info", shutdown_timeout_s=2)


def vl_sink(url: str) -> str:
    return f'type = "victorialogs"\nurl = "{url}"\ncompression = "gzip"'


def file_sink() -> str:
    return 'type = "file"\npath = "delivered"'


# --- senders and what arrived --------------------------------------------------------------

MARK = re.compile(r"fault-(\w+) seq=(\d+)")


def lines(tag: str, start: int, count: int, pad: int = 0) -> bytes:
    filler = " " + "x" * pad if pad else ""
    return b"".join(b"<14>1 - host app - - - fault-%s seq=%d%s\n" % (tag.encode(), i, filler.encode()) for i in range(start, start + count))


def send_tcp(address: tuple[str, int], data: bytes, sndbuf: int | None = None) -> None:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.sendall(data)


def tally(messages, tag: str, expected: set[int]) -> tuple[set[int], int, Counter]:
    """(missing, duplicated count, counts) of the seq numbers seen for ``tag``."""
    seen: Counter = Counter()
    for message in messages:
        match = MARK.search(message)
        if match and match.group(1) == tag:
            seen[int(match.group(2))] += 1
    missing = expected - set(seen)
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    return missing, duplicated, seen


def report(label: str, missing: set[int], duplicated: int) -> None:
    # Shown with -rA / -s; the assertions below are what the test promises.
    print(f"{label}: lost={len(missing)} duplicated={duplicated}")


# --- a VictoriaLogs-shaped HTTP server whose availability the test controls ------------------


@pytest.fixture
def fake_insert():
    server = FakeInsert()
    yield server
    server.close()


@pytest.fixture
def refused_url():
    """A URL on a port that is bound but never listens: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield "http://127.0.0.1:%d" % sock.getsockname()[1]
    sock.close()


# --- (b) SIGKILL after the lines are in the buffer -------------------------------------------


def test_sigkill_with_lines_in_the_disk_buffer_loses_nothing(tmp_path, refused_url):
    data_dir = str(tmp_path / "data")
    buffer = '{ type = "disk", max_bytes = 100000000, fsync = "never" }'
    total = 5000
    daemon = Logpipe(str(tmp_path), config(data_dir, vl_sink(refused_url), buffer))
    try:
        for start in range(0, total, 1000):  # several connections, several chunks
            send_tcp(daemon.tcp, lines("b", start, 1000))
        wait_until(lambda: daemon.buffer_events("out") == total, what="all lines in the buffer")
    finally:
        daemon.kill()  # SIGKILL: no flush, no ledger write, nothing graceful
    # Same sink name, now a file sink that works: the buffer is replayed into it.
    daemon = Logpipe(str(tmp_path), config(data_dir, file_sink(), buffer))
    try:
        wait_until(lambda: daemon.buffer_events("out") == 0, what="the replay to drain")
        replayed = daemon.metric("logpipe_buffer_replayed_events_total", "sink=out")
    finally:
        assert daemon.stop() == 0
    missing, duplicated, _ = tally(file_messages(data_dir), "b", set(range(total)))
    report("sigkill", missing, duplicated)
    assert replayed == total
    assert not missing and duplicated == 0


def test_sigkill_while_delivering_loses_nothing(tmp_path, fake_insert):
    """Killed mid-stream with batches in flight: nothing lost; duplicates are only the
    batches the sink had confirmed but whose ack had not reached the ledger."""
    data_dir = str(tmp_path / "data")
    buffer = '{ type = "disk", max_bytes = 100000000, fsync = "interval" }'
    total = 20000
    fake_insert.down = False
    daemon = Logpipe(str(tmp_path), config(data_dir, vl_sink(fake_insert.url), buffer, batch="{ max_events = 200, max_age_ms = 50 }"))
    try:
        sender = threading.Thread(target=send_tcp, args=(daemon.tcp, lines("k", 0, total)))
        sender.start()
        wait_until(lambda: len(fake_insert.messages) >= 2000, what="delivery to be under way")
    finally:
        daemon.kill()
        sender.join(TIMEOUT)
    received_before_kill = len(fake_insert.messages)
    daemon = Logpipe(str(tmp_path), config(data_dir, vl_sink(fake_insert.url), buffer))
    try:
        wait_until(lambda: daemon.buffer_events("out") == 0, what="the replay to drain")
    finally:
        daemon.stop()
    # What the first daemon read before SIGKILL is the promise; the rest of the stream
    # was never read (the connection died with it).
    missing, duplicated, seen = tally(fake_insert.messages, "k", set())
    accepted = max(seen) + 1
    missing, duplicated, _ = tally(fake_insert.messages, "k", set(range(accepted)))
    report(f"sigkill mid-delivery (accepted {accepted}, delivered before kill {received_before_kill})", missing, duplicated)
    assert not missing
    assert duplicated <= 200 * 2  # at most the batches in flight at the kill


# --- (c) damaged segments --------------------------------------------------------------------


def segment_records(directory: str) -> list[tuple[str, list[tuple[int, int, list[bytes]]]]]:
    """Every segment with its records: (offset, end, events)."""
    out = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".seg"):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        records, pos = [], 0
        while pos < len(data):
            decoded = record.decode(data, pos)
            assert decoded.status == record.OK
            records.append((pos, decoded.end, decoded.records))
            pos = decoded.end
        out.append((os.path.join(directory, name), records))
    return out


def seqs(events: list[bytes]) -> set[int]:
    return {int(MARK.search(json.loads(e)["_msg"]).group(2)) for e in events}


def test_truncated_and_flipped_segments_deliver_every_intact_record_and_count_the_bad(tmp_path, refused_url):
    data_dir = str(tmp_path / "data")
    # max_bytes / 8 = 25 kB segments: the lines below fill several.
    buffer = '{ type = "disk", max_bytes = 200000, fsync = "never" }'
    total = 1500
    daemon = Logpipe(str(tmp_path), config(data_dir, vl_sink(refused_url), buffer))
    try:
        for start in range(0, total, 100):
            send_tcp(daemon.tcp, lines("c", start, 100))
        wait_until(lambda: daemon.buffer_events("out") == total, what="all lines in the buffer")
    finally:
        assert daemon.stop() == 0  # graceful: the data stays on disk
    segments = segment_records(os.path.join(data_dir, "buffer", "out"))
    assert len(segments) >= 3
    # Segment 0: cut in the middle of its last record (a torn write).
    path0, records0 = segments[0]
    torn_offset, torn_end, torn_events = records0[-1]
    os.truncate(path0, torn_offset + (torn_end - torn_offset) // 2)
    # Segment 1: flip a byte inside the payload of its first record.
    path1, records1 = segments[1]
    flip_offset, _, flipped_events = records1[0]
    with open(path1, "r+b") as f:
        f.seek(flip_offset + record.HEADER_SIZE + 10)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x08]))
    bad = seqs(torn_events) | seqs(flipped_events)
    intact = set(range(total)) - bad

    daemon = Logpipe(str(tmp_path), config(data_dir, file_sink(), buffer))
    try:
        wait_until(lambda: daemon.buffer_events("out") == 0, what="the replay to drain")
        corrupt = daemon.metric("logpipe_buffer_corrupt_records_total", "sink=out")
        dropped = daemon.metric("logpipe_dropped_events_total", "stage=buffering,reason=corrupt")
    finally:
        assert daemon.stop() == 0
    missing, duplicated, seen = tally(file_messages(data_dir), "c", intact)
    report("damaged segments", missing, duplicated)
    assert not missing and duplicated == 0
    assert not (set(seen) & bad)
    assert corrupt == 2
    assert dropped == len(bad)


# --- (d) max_bytes reached ---------------------------------------------------------------------


def test_full_buffer_with_block_holds_tcp_senders_back_and_drops_nothing(tmp_path, fake_insert):
    data_dir = str(tmp_path / "data")
    buffer = '{ type = "disk", max_bytes = 200000, when_full = "block", fsync = "never" }'
    total = 40000  # ~10 MB: far more than the buffer and the sockets' buffers hold
    daemon = Logpipe(str(tmp_path), config(data_dir, vl_sink(fake_insert.url), buffer))
    try:
        payload = lines("d", 0, total, pad=200)
        sender = threading.Thread(target=send_tcp, args=(daemon.tcp, payload, 65536))
        sender.start()
        wait_until(lambda: daemon.stats()["sinks"]["out"]["buffer_bytes"] >= 200000, what="the buffer to fill")
        wait_until(lambda: daemon.logged("sources_paused"), what="sources to pause")
        # Held back: with the sink down, the sender stays blocked and reading stopped.
        received = daemon.metric("logpipe_received_events_total", "source=syslog,protocol=tcp")
        assert sender.is_alive() and received < total
        fake_insert.down = False
        sender.join(TIMEOUT)
        assert not sender.is_alive()
        wait_until(lambda: len(fake_insert.messages) >= total, what="every line to be delivered")
        wait_until(lambda: daemon.buffer_events("out") == 0, what="the buffer to drain")
        dropped = daemon.metric("logpipe_dropped_events_total", "stage=buffering,reason=buffer_full")
    finally:
        assert daemon.stop() == 0
    missing, duplicated, _ = tally(fake_insert.messages, "d", set(range(total)))
    report("block", missing, duplicated)
    assert dropped == 0
    assert not missing and duplicated == 0


def test_full_buffer_with_drop_newest_counts_every_drop_exactly(tmp_path, fake_insert):
    data_dir = str(tmp_path / "data")
    buffer = '{ type = "disk", max_bytes = 100000, when_full = "drop_newest", fsync = "never" }'
    total = 5000
    daemon = Logpipe(str(tmp_path), config(data_dir, vl_sink(fake_insert.url), buffer))
    try:
        send_tcp(daemon.tcp, lines("e", 0, total, pad=100))
        wait_until(
            lambda: daemon.metric("logpipe_received_events_total", "source=syslog,protocol=tcp") == total,
            what="every line to be read",
        )
        dropped = daemon.metric("logpipe_dropped_events_total", "stage=buffering,reason=buffer_full")
        buffered = daemon.buffer_events("out")
        assert dropped > 0 and buffered + dropped == total
        fake_insert.down = False
        wait_until(lambda: daemon.buffer_events("out") == 0, what="the buffer to drain")
    finally:
        assert daemon.stop() == 0
    missing, duplicated, seen = tally(fake_insert.messages, "e", set(range(total)))
    report(f"drop_newest (dropped {dropped:.0f})", set(), duplicated)
    assert len(seen) == buffered and duplicated == 0
    assert len(missing) == dropped


# --- (a) VictoriaLogs down while lines arrive ---------------------------------------------------

VL_BIN = os.environ.get("LOGPIPE_VICTORIALOGS_BIN")


class VictoriaLogs:
    def __init__(self, data: str, port: int = 0) -> None:
        self.data = data
        self.proc = subprocess.Popen(
            [VL_BIN, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}"],  # type: ignore[list-item]
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.port = port
        self._log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        if not port:
            self.port = wait_until(self._bound_port, 20, "VictoriaLogs to listen")
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._healthy, 20, "VictoriaLogs /health")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.append(line.decode(errors="replace"))

    def _bound_port(self):
        for line in list(self._log):
            match = re.search(r"started server at http://127\.0\.0\.1:(\d+)/", line)
            if match:
                return int(match.group(1))
        return None

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def messages(self, query: str) -> list[str]:
        urllib.request.urlopen(self.url + "/internal/force_flush", timeout=10).close()
        data = f"query={query}".encode()
        with urllib.request.urlopen(self.url + "/select/logsql/query", data=data, timeout=30) as resp:
            return [json.loads(line)["_msg"] for line in resp if line.strip()]

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.mark.victorialogs
@pytest.mark.skipif(not VL_BIN, reason="set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary to run")
def test_victorialogs_outage_while_20000_lines_arrive_loses_nothing(tmp_path):
    """The issue's scenario with the outage shortened from 20 s to 3 s (the buffer cannot
    tell the difference; the suite's time can). LOGPIPE_OUTAGE_S=20 runs the full one."""
    outage_s = float(os.environ.get("LOGPIPE_OUTAGE_S", "3"))
    total = 20000
    vl_data = str(tmp_path / "vl")
    store = VictoriaLogs(vl_data)
    data_dir = str(tmp_path / "data")
    buffer = '{ type = "disk", max_bytes = 100000000, when_full = "block", fsync = "interval" }'
    daemon = Logpipe(str(tmp_path), config(data_dir, vl_sink(store.url), buffer, batch="{ max_events = 2000, max_age_ms = 200 }"))
    port = store.port
    try:
        store.stop()
        outage_started = time.monotonic()
        senders = [threading.Thread(target=send_tcp, args=(daemon.tcp, lines("a", s, 5000))) for s in range(0, total, 5000)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(TIMEOUT)
        wait_until(lambda: daemon.buffer_events("out") == total, what="all lines in the buffer")
        wait_until(
            lambda: time.monotonic() - outage_started >= outage_s
            and daemon.metric("logpipe_send_errors_total", "sink=out,retryable=true") >= 3,
            timeout=outage_s + 60,
            what=f"a {outage_s:.0f} s outage with failed sends",
        )
        store = VictoriaLogs(vl_data, port)  # same port, same data
        wait_until(lambda: daemon.buffer_events("out") == 0, what="the backlog to drain")
    finally:
        daemon.stop()
    messages = wait_until(lambda: (m := store.messages('"fault-a"')) and len(m) >= total and m, 30, "rows to be queryable")
    store.stop()
    missing, duplicated, _ = tally(messages, "a", set(range(total)))
    report("victorialogs outage", missing, duplicated)
    assert not missing and duplicated == 0
