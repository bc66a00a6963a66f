"""Recovery after an outage: once a failing sink answers again, delivery resumes within about
a probe interval, not when the retry backoff runs out, and a sink that is still down (or that
answers probes but fails sends) is not hammered.

Every scenario runs the daemon as a subprocess with ``retry_initial_ms`` of a minute: without
probing, the first failed send would wait up to 60 s (full jitter) before the next attempt.
The bounds below are behavioural with a wide margin (a probe a second; the machine is shared),
and every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import shutil
import socket
import threading
import time
from collections import Counter

import pytest

from logpipe.config import loads
from logpipe.sinks import build

from ..helpers import (
    DaemonProcess,
    VictoriaLogsServer,
    daemon_config,
    free_port,
    run_async,
    victorialogs_bin,
    wait_until,
)

TIMEOUT = 60.0
# Time from the sink answering again to the first delivered event: ~1 s expected (one probe
# interval); a backoff of up to 60 s is what it replaces.
RESUME_BOUND_S = 10.0


def config(data_dir: str, sink: str, *, retry_initial_ms: int = 60_000) -> str:
    return daemon_config(data_dir, f"""[sources.syslog]
tcp = "127.0.0.1:0"

[sinks.out]
{sink}
batch = {{ max_events = 500, max_age_ms = 100 }}
buffer = {{ type = "memory" }}
retry_initial_ms = {retry_initial_ms}
retry_max_ms = 120000
""", log_format="json", log_level="info", shutdown_timeout_s=2)


MARK = re.compile(r"recover seq=(\d+)")


def send_lines(address: tuple[str, int], start: int, count: int) -> None:
    data = b"".join(b"<14>1 - host app - - - recover seq=%d\n" % i for i in range(start, start + count))
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)


def assert_each_once(messages: list[str], total: int) -> None:
    counts = Counter(int(m.group(1)) for text in messages if (m := MARK.search(text or "")))
    missing = set(range(total)) - counts.keys()
    duplicated = {seq: n for seq, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:5]}"
    assert not duplicated, f"{len(duplicated)} lines stored more than once"


def sent(daemon: DaemonProcess) -> float:
    return daemon.metric("logpipe_sent_events_total", "sink=out")


def probes(daemon: DaemonProcess, answered: bool) -> float:
    return daemon.metric("logpipe_sink_probes_total", f"sink=out,answered={'true' if answered else 'false'}")


class FlakyStore:
    """A VictoriaLogs-shaped server: GET /health and POST /insert/jsonline both answer 503
    while ``down``; ``probes_only`` makes /health answer 200 while inserts still fail."""

    def __init__(self) -> None:
        self.down = True
        self.probes_only = False
        self.messages: list[str] = []
        self.gets: list[float] = []
        self.posts: list[float] = []
        lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with lock:
                    owner.gets.append(time.monotonic())
                    status = 503 if owner.down and not owner.probes_only else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    owner.posts.append(time.monotonic())
                    if owner.down:
                        status = 503
                    else:
                        owner.messages += [json.loads(line).get("_msg") for line in body.splitlines() if line]
                        status = 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store():
    server = FlakyStore()
    yield server
    server.close()


def vl_sink(url: str) -> str:
    return f'type = "victorialogs"\nurl = "{url}"\ncompression = "none"'


def test_http_sink_resumes_within_seconds_of_answering_and_probes_about_once_a_second(tmp_path, store):
    total = 2000
    daemon = DaemonProcess(str(tmp_path), config(str(tmp_path / "data"), vl_sink(store.url)))
    try:
        send_lines(daemon.tcp, 0, total)
        down_from = time.monotonic()
        wait_until(lambda: probes(daemon, answered=False) >= 4, TIMEOUT, "four unanswered probes")
        posts_while_down = len(store.posts)
        gets_while_down = len(store.gets)
        down_for = time.monotonic() - down_from
        store.down = False
        back_at = time.monotonic()
        wait_until(lambda: sent(daemon) >= total, TIMEOUT, "the backlog to be delivered")
        resumed_after = min(store.posts[posts_while_down:]) - back_at
        assert resumed_after < RESUME_BOUND_S, f"delivery resumed {resumed_after:.1f} s after the sink answered"
        # A failed send per send loop (two), then probes: a probe resends nothing while the
        # sink is down. The backoff is jittered over (0, 60 s), so a loop's retry may still
        # fall inside the outage now and then (seen: 3 inserts): at most one more per loop.
        assert posts_while_down <= 4, f"{posts_while_down} inserts while down (two send loops)"
        assert gets_while_down <= down_for / 1.0 + 2, f"{gets_while_down} probes in {down_for:.1f} s"
        wait_until(lambda: daemon.logged("sink_recovered"), 10, "sink_recovered logged")
        assert daemon.logged("sink_answering"), "the log says when the sink came back"
        assert daemon.logged("sink_recovered")[0]["after_probe_s"] is not None
        assert daemon.metric("logpipe_sink_came_back_total", "sink=out") >= 1
    finally:
        assert daemon.stop() == 0
    assert_each_once(store.messages, total)


def test_sink_answering_probes_but_failing_sends_keeps_the_backoff(tmp_path, store):
    store.probes_only = True  # /health is fine, every insert fails
    daemon = DaemonProcess(str(tmp_path), config(str(tmp_path / "data"), vl_sink(store.url), retry_initial_ms=2000))
    try:
        send_lines(daemon.tcp, 0, 100)
        wait_until(lambda: probes(daemon, answered=True) >= 5, TIMEOUT, "five answered probes")
        # Waits of uniform(0, 2), (0, 4), (0, 8) s ...: a handful of sends in ~5 s, and no
        # early retry for probes that merely answer.
        assert len(store.posts) <= 6, f"{len(store.posts)} inserts while the sink kept failing them"
        assert daemon.metric("logpipe_sink_came_back_total", "sink=out") == 0
        store.probes_only = store.down = False
        wait_until(lambda: sent(daemon) >= 100, TIMEOUT, "delivery once inserts succeed")
    finally:
        assert daemon.stop() == 0
    assert_each_once(store.messages, 100)


def sink(text: str, data_dir: str):
    return build("out", loads("[sinks.out]\n" + text).sinks["out"], data_dir)


def test_sink_probes_say_whether_the_destination_answers(tmp_path, store):
    refused = f"http://127.0.0.1:{free_port()}"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")

    async def scenario():
        answers = {}
        store.down = False
        for label, text in {
            "http one endpoint answers": f'type = "victorialogs"\nendpoints = ["{refused}", "{store.url}"]',
            "http none answers": f'type = "victorialogs"\nurl = "{refused}"',
            "file writable": 'type = "file"\npath = "a/b/delivered"',
            "file under a regular file": f'type = "file"\npath = "{blocked}/x/delivered"',
            "syslog tcp refused": f'type = "syslog"\naddress = "127.0.0.1:{free_port()}"\nprotocol = "tcp"',
            "syslog udp": 'type = "syslog"\naddress = "127.0.0.1:9"\nprotocol = "udp"',
        }.items():
            s = sink(text, str(tmp_path))
            try:
                answers[label] = await s.probe()
            finally:
                await s.close()
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        s = sink(f'type = "syslog"\naddress = "127.0.0.1:{port}"\nprotocol = "tcp"', str(tmp_path))
        answers["syslog tcp listening"] = await s.probe()
        await s.close()
        server.close()
        return answers

    assert run_async(scenario) == {
        "http one endpoint answers": True, "http none answers": False, "file writable": True,
        "file under a regular file": False, "syslog tcp refused": False, "syslog udp": None,
        "syslog tcp listening": True,
    }


def file_lines(path: str) -> list[str]:
    with open(path, "rb") as f:
        return [json.loads(line)["_msg"] for line in f if line.strip()]


def test_file_sink_resumes_when_its_directory_can_be_made_again(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    blocker = data_dir / "out"
    blocker.write_text("a file where the sink's directory should be\n")
    total = 1000
    daemon = DaemonProcess(str(tmp_path), config(str(data_dir), 'type = "file"\npath = "out/delivered"'))
    try:
        send_lines(daemon.tcp, 0, total)
        wait_until(lambda: probes(daemon, answered=False) >= 3, TIMEOUT, "three unanswered probes")
        errors = daemon.metric("logpipe_send_errors_total", "sink=out,retryable=true")
        os.remove(blocker)
        back_at = time.monotonic()
        wait_until(lambda: sent(daemon) >= total, TIMEOUT, "the backlog to be written")
        resumed_after = time.monotonic() - back_at
        assert resumed_after < RESUME_BOUND_S, f"writing resumed {resumed_after:.1f} s after the fix"
        assert errors <= 2  # probes, not retried writes, while the directory could not be made
    finally:
        assert daemon.stop() == 0
    assert_each_once(file_lines(str(data_dir / "out" / "delivered.ndjson")), total)


@pytest.mark.victorialogs
@pytest.mark.skipif(not victorialogs_bin(), reason="set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary to run")
def test_victorialogs_stopped_and_restarted_resumes_within_seconds(tmp_path):
    vl_data = str(tmp_path / "vl")
    store = VictoriaLogsServer(victorialogs_bin(), vl_data)  # type: ignore[arg-type]
    store.start()
    port = store.port
    daemon = DaemonProcess(str(tmp_path), config(str(tmp_path / "data"), vl_sink(store.url)))
    first, total = 500, 3000
    try:
        send_lines(daemon.tcp, 0, first)
        wait_until(lambda: sent(daemon) >= first, TIMEOUT, "delivery before the outage")
        store.stop()  # SIGTERM
        send_lines(daemon.tcp, first, total - first)
        wait_until(lambda: probes(daemon, answered=False) >= 3, TIMEOUT, "three unanswered probes")
        store.start(port)  # same data, same port; returns once /health answers
        back_at = time.monotonic()
        wait_until(lambda: sent(daemon) > first, TIMEOUT, "the first batch after the outage")
        resumed_after = time.monotonic() - back_at
        assert resumed_after < RESUME_BOUND_S, f"delivery resumed {resumed_after:.1f} s after /health answered"
        wait_until(lambda: sent(daemon) >= total, TIMEOUT, "the backlog to be delivered")
    finally:
        assert daemon.stop() == 0
    try:
        rows = wait_until(lambda: (r := store.query('"recover seq"')) and len(r) >= total and r, 30, "rows queryable")
        assert_each_once([row["_msg"] for row in rows], total)
    finally:
        store.stop()
        shutil.rmtree(vl_data, ignore_errors=True)
