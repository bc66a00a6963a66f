"""The API's HTTP/1.1 (api_listener.py) as a client sees it on the wire: keep-alive and
pipelining, HEAD, wrong methods, and every malformed or oversized request answered with its
status and the connection closed, the daemon unharmed."""

from __future__ import annotations

import asyncio
import json
import re

from logpipe.config import loads
from tests.daemon.test_hardening import udp_send
from tests.daemon.test_idle import dechunk, make_config
from tests.helpers import run_async, running


async def exchange(address, data: bytes) -> bytes:
    """Send ``data`` as is, read until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def statuses(raw: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_keep_alive_pipelining_head_and_methods(tmp_path):
    async def scenario():
        async with running(loads(make_config(tmp_path))) as daemon:
            raw = await exchange(daemon.api_address,
                                 b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                                 b"GET /api/stats?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert statuses(raw) == [200, 200, 405, 200]
            first, rest = raw.split(b"\r\n\r\n", 1)
            assert b"Content-Length: 15" in first and rest.startswith(b'{"status":"ok"}HTTP/1.1 200')
            head_answer = rest[len(b'{"status":"ok"}'):].split(b"\r\n\r\n", 1)
            assert b"text/plain" in head_answer[0] and head_answer[1].startswith(b"HTTP/1.1 405")  # HEAD: no body
            assert b"Allow: GET" in raw and raw.rstrip().endswith(b"}") and b'"sinks"' in raw.split(b"\r\n\r\n")[-1]

    run_async(scenario, 30)


def test_malformed_and_oversized_requests_get_their_status_and_the_daemon_keeps_answering(tmp_path):
    async def scenario():
        async with running(loads(make_config(tmp_path))) as daemon:
            bad = {
                b"GARBAGE\r\n\r\n": 400,
                b"GET health HTTP/1.1\r\n\r\n": 400,
                b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n": 400,
                b"GET /health HTTP/2.0\r\n\r\n": 505,
                b"GET /health HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n": 431,
                b"GET /health HTTP/1.1\r\nX: " + b"a" * 20_000: 431,  # no end of head in sight
                b"POST /api/reload HTTP/1.1\r\nContent-Length: 100000\r\n\r\n": 413,
                b"POST /api/reload HTTP/1.1\r\nContent-Length: -1\r\n\r\n": 400,
                b"POST /api/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": 411,
                b"\xff\xfe\x00\r\n\r\n": 400,
            }
            for request, status in bad.items():
                raw = await exchange(daemon.api_address, request)
                assert statuses(raw) == [status], request[:40]
                assert b"Connection: close" in raw
            raw = await exchange(daemon.api_address, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert statuses(raw) == [200] and json.loads(raw.split(b"\r\n\r\n", 1)[1]) == {"status": "ok"}

    run_async(scenario, 30)


def test_a_tap_streams_chunked_until_its_limit(tmp_path):
    async def scenario():
        async with running(loads(make_config(tmp_path))) as daemon:
            reader, writer = await asyncio.open_connection(*daemon.api_address)
            writer.write(b"GET /api/tap?limit=3&rate=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
            syslog = daemon.syslog.addresses["udp"]
            for i in range(5):
                udp_send(syslog, f"<14>Dec  5 08:00:00 h app: tapped {i}".encode())
            body = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return dechunk(body)


    lines = run_async(scenario, 30).splitlines()
    assert len(lines) == 3 and all(json.loads(line)["event"]["_msg"].startswith("tapped") for line in lines)


def test_hostile_requests_are_answered_or_closed_and_the_api_keeps_answering(tmp_path):
    """Seeded garbage and mutations of a valid request, 300 connections, each answered with a
    status or closed within the timeout; then the API still answers /health."""
    import random

    valid = b"POST /api/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    rng = random.Random(20)

    def mutate() -> bytes:
        kind = rng.randrange(4)
        if kind == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(len(data))
            if kind == 1:
                data[i] = rng.randrange(256)
            elif kind == 2:
                del data[i]
            else:
                data[i:i] = rng.choice([b"\r\n", b":", b" ", b"\x00", b"9" * 30, b"\r\n\r\n"])
        return bytes(data)

    async def scenario():
        async with running(loads(make_config(tmp_path))) as daemon:
            for _ in range(300):
                request = mutate()
                reader, writer = await asyncio.open_connection(*daemon.api_address)
                writer.write(request)
                writer.write_eof()
                try:
                    raw = await asyncio.wait_for(reader.read(), 10)
                finally:
                    writer.close()
                assert raw == b"" or re.match(rb"HTTP/1\.1 \d{3} ", raw), (request, raw[:80])
            raw = await exchange(daemon.api_address, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert statuses(raw) == [200]

    run_async(scenario, 120)


def test_a_client_that_half_closes_after_its_request_gets_the_answer_and_the_close(tmp_path):
    async def scenario():
        async with running(loads(make_config(tmp_path))) as daemon:
            reader, writer = await asyncio.open_connection(*daemon.api_address)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write_eof()
            raw = await asyncio.wait_for(reader.read(), 5)  # keep-alive, yet closed once answered
            writer.close()
            return raw

    assert statuses(run_async(scenario, 30)) == [200, 200]
