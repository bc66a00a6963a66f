"""Issue 20, idle footprint: an idle daemon imports only what its config uses and has nothing
that wakes it up on a schedule.

- The API is served without aiohttp (api_listener.py): routes and allow list as before.
- The metadata reaper is one timer for the earliest expiry, and none while nothing waits to
  expire; entries still leave at their ttl.
- The snapshot is written within ``snapshot_interval_s`` of a change, and not rewritten while
  the table does not change.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys

import orjson

from logpipe.config import loads
from logpipe.enrich import MetadataTable
from logpipe.metrics import Metrics
from logpipe.parse.metadata import Announcement
from tests.daemon.test_hardening import pause, started, udp_send
from tests.helpers import await_until, run_async, running, stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_config(tmp_path, api="", metadata="") -> str:
    return f"""
[daemon]
data_dir = "{tmp_path}/data"
shutdown_timeout_s = 5
[api]
listen = "127.0.0.1:0"
{api}
[sources.syslog]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
[sources.metadata]
udp = "127.0.0.1:0"
{metadata}
[sinks.out]
type = "file"
path = "events"
batch = {{ max_age_ms = 20 }}
"""


async def http_get(address, path: str, chunks: int = 1) -> tuple[int, bytes]:
    """One GET on its own connection (``chunks`` > 1 sends the request in pieces);
    returns the status and body."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        step = -(-len(request) // chunks)
        for i in range(0, len(request), step):
            writer.write(request[i : i + step])
            await writer.drain()
            await asyncio.sleep(0)  # a loop turn between pieces, so they arrive apart: the behaviour under test
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


async def refuses_connections(address) -> bool:
    try:
        _, writer = await asyncio.open_connection(*address)
    except OSError:
        return True
    writer.close()
    return False


# --- the API, built on its first connection ---------------------------------------------


def test_api_answers_its_first_connection_and_every_later_one(tmp_path):
    async def scenario():
        async with running(loads(make_config(tmp_path))) as daemon:
            status, body = await http_get(daemon.api_address, "/health")
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            status, body = await http_get(daemon.api_address, "/metrics")
            assert status == 200
            assert b"logpipe_tap_clients 0" in body and b"logpipe_metadata_entries 0" in body
            status, body = await http_get(daemon.api_address, "/api/stats")
            assert status == 200 and "out" in json.loads(body)["sinks"]
            status, _ = await http_get(daemon.api_address, "/nowhere")
            assert status == 404

    run_async(scenario, 30)


def test_connections_that_arrive_at_once_are_all_answered(tmp_path):
    async def scenario():
        async with running(loads(make_config(tmp_path))) as daemon:
            # Several at once, one of them sending its request in pieces.
            results = await asyncio.gather(
                http_get(daemon.api_address, "/health"),
                http_get(daemon.api_address, "/health", chunks=5),
                http_get(daemon.api_address, "/api/stats"),
            )
            assert [status for status, _ in results] == [200, 200, 200]
            assert json.loads(results[1][1]) == {"status": "ok"}

    run_async(scenario, 30)


def test_allow_list_refuses_the_first_connection_too(tmp_path):
    async def scenario():
        async with running(loads(make_config(tmp_path, api='allow = ["10.0.0.0/8"]'))) as daemon:
            status, body = await http_get(daemon.api_address, "/health")
            assert status == 403 and b"address not allowed" in body
            status, _ = await http_get(daemon.api_address, "/metrics")
            assert status == 403

    run_async(scenario, 30)


def test_a_stop_before_any_api_connection_closes_the_socket(tmp_path):
    async def scenario():
        daemon = await started(make_config(tmp_path))
        address = daemon.api_address
        await daemon.shutdown()
        assert await refuses_connections(address)

    run_async(scenario, 30)


def test_a_reload_moves_the_api_before_anyone_used_it(tmp_path):
    path = tmp_path / "logpipe.toml"
    text = make_config(tmp_path)
    path.write_text(text)

    async def scenario():
        async with running(loads(text), config_path=str(path)) as daemon:
            old = daemon.api_address
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                new_port = probe.getsockname()[1]
            path.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{new_port}"', 1))
            assert await daemon.reload_from_file() == []
            assert daemon.api_address == ("127.0.0.1", new_port)
            status, body = await http_get(daemon.api_address, "/health")
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            assert await refuses_connections(old)

    run_async(scenario, 30)


def loaded(pid: int, library: str) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return library in f.read()


def test_the_shipped_config_loads_neither_aiohttp_nor_re2_not_even_when_the_api_is_used(tmp_path):
    # config/logpipe.toml as shipped, on ephemeral loopback ports and a temp data_dir.
    with open(os.path.join(ROOT, "config", "logpipe.toml")) as f:
        text = f.read()
    text = text.replace('data_dir = "./data"', f'data_dir = "{tmp_path}/data"')
    text = re.sub(r'"(0\.0\.0\.0|127\.0\.0\.1):\d+"', '"127.0.0.1:0"', text)
    text = text.replace('log_format = "console"', 'log_format = "json"')
    path = tmp_path / "logpipe.toml"
    path.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run", "-c", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        api = None
        for raw in proc.stderr:
            event = json.loads(raw)
            if event.get("event") == "listening" and event.get("component") == "api":
                api = event["address"]
            if event.get("event") == "started":
                break
        assert api is not None, "the API did not listen"
        # aiohttp's and RE2's compiled extensions are mapped once imported.
        assert not loaded(proc.pid, "aiohttp/") and not loaded(proc.pid, "re2")
        host, _, port = api.rpartition(":")
        status, _ = run_async(lambda: http_get((host, int(port)), "/health"), 20)  # type: ignore[misc]
        assert status == 200
        assert not loaded(proc.pid, "aiohttp/")  # the API is served without it
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop_process(proc)
        if proc.stderr is not None:
            proc.stderr.close()


# --- expiry without a loop ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def announce(table: MetadataTable, hostname: str, ttl_s: float) -> None:
    table.apply(Announcement("announce", None, hostname, None, ttl_s, {"service": hostname}))


def test_table_tells_its_earliest_deadline_and_reaps_up_to_it():
    clock = Clock()
    table = MetadataTable(100, 600, Metrics(), timer=clock)
    told: list[float] = []
    table.on_deadline = told.append
    assert table.next_deadline() is None
    announce(table, "late", 30)
    announce(table, "soon", 2.5)
    announce(table, "also-late", 30)  # same second as "late": nothing new to tell
    assert told == [1030, 1003]
    clock.now = 1003
    assert table.expire() == 1030
    assert [e.hostname for e in table.entries()] == ["late", "also-late"] and len(table) == 2
    clock.now = 1030
    assert table.expire() is None and len(table) == 0


def test_the_schedule_does_not_outgrow_the_table_under_re_announcements():
    clock = Clock()
    table = MetadataTable(100, 600, Metrics(), timer=clock)
    for i in range(5000):  # one container re-announcing every second with a long ttl
        clock.now = 1000.0 + i
        announce(table, "busy", 3600)
        table.expire()
    assert len(table) == 1
    assert table.next_deadline() is not None
    assert len(table._deadlines) <= 2 * len(table) + 64


def test_entries_leave_at_their_ttl_and_the_reaper_then_has_no_timer(tmp_path):
    async def scenario():
        async with running(loads(make_config(tmp_path))) as daemon:
            assert daemon.reaper.due is None  # an empty table: nothing armed
            address = daemon.metadata.addresses["udp"]
            udp_send(address, orjson.dumps({"ip": "", "hostname": "short", "service": "a", "ttl_s": 1}))
            udp_send(address, orjson.dumps({"ip": "", "hostname": "long", "service": "b", "ttl_s": 3600}))
            await await_until(lambda: len(daemon.table) == 2, 5, "two entries")
            assert daemon.reaper.due is not None and daemon.reaper.due <= daemon.table.timer() + 2
            # The indexes, not len() (which reaps by itself): only the reaper unindexes here.
            await await_until(lambda: "short" not in daemon.table.by_hostname, 10, "the short one reaped")
            assert list(daemon.table.by_hostname) == ["long"]
            assert daemon.metrics.get("logpipe_metadata_removed_total").value("expired") == 1
            # Re-armed for the long one's deadline (a timer that fired early re-arms once first).
            await await_until(lambda: (daemon.reaper.due or 0) > daemon.table.timer() + 3000, 5, "armed for the long one")
            udp_send(address, orjson.dumps({"ip": "", "hostname": "long", "op": "remove"}))
            await await_until(lambda: len(daemon.table) == 0, 5, "the long one removed")
        assert daemon.reaper.due is None and daemon.table.on_deadline is None

    run_async(scenario, 30)


# --- the snapshot, written on change only ------------------------------------------------


def test_snapshot_is_written_after_a_change_and_not_rewritten_while_nothing_changes(tmp_path):
    path = f"{tmp_path}/data/metadata.snapshot"

    def hostnames() -> set[str] | None:
        try:
            with open(path, "rb") as f:
                return {e["hostname"] for e in orjson.loads(f.read())["entries"]}
        except (FileNotFoundError, ValueError):
            return None

    async def scenario():
        async with running(loads(make_config(tmp_path, metadata="snapshot_interval_s = 1"))) as daemon:
            await pause(1.5)
            assert not os.path.exists(path)  # an empty, unchanged table is not written
            address = daemon.metadata.addresses["udp"]
            udp_send(address, orjson.dumps({"ip": "", "hostname": "db-1", "service": "postgres"}))
            await await_until(lambda: hostnames() == {"db-1"}, 10, "the snapshot with db-1")
            written = os.stat(path).st_mtime_ns
            await pause(2.5)
            assert os.stat(path).st_mtime_ns == written
            udp_send(address, orjson.dumps({"ip": "", "hostname": "web-1", "service": "nginx"}))
            await await_until(lambda: hostnames() == {"db-1", "web-1"}, 10, "the snapshot with both")

    run_async(scenario, 40)
    assert hostnames() == {"db-1", "web-1"}  # and saved at the stop
