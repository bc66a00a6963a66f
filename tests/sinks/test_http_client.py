"""The sinks' HTTP/1.1 client against raw servers on loopback: answers framed every way a
server may frame them, keep-alive reuse and its limits, and which failures mean "not sent"."""

from __future__ import annotations

import asyncio
import socket

import pytest

from logpipe.sinks.http_client import ConnectError, HttpClient, ProtocolError

from ..helpers import await_until, run_async


async def raw_server(answers: list[bytes], seen: list[bytes], *, close_after: bool = False):
    """Answers each request (read up to its Content-Length) with the next of ``answers``;
    records each request and the connection it came on (``seen``)."""
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                seen.append((len(connections), head + body))
                writer.write(answers.pop(0))
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_answers_by_length_chunked_and_until_close_and_connections_are_reused():
    async def scenario():
        seen: list = []
        answers = [
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n",
            b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 4\r\n\r\noops",
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
        ]
        server, url = await raw_server(answers, seen)
        client = HttpClient()
        got = []
        got.append(await client.request("POST", url + "/insert?x=1", [b"a\n", b"b\n"], {"X-Test": "1"}, timeout_s=5))
        got.append(await client.request("GET", url + "/", timeout_s=5))
        got.append(await client.request("POST", url + "/", b"", timeout_s=5))
        got.append(await client.request("POST", url + "/", b"z", timeout_s=5))
        got.append(await client.request("GET", url + "/", timeout_s=5))
        await client.close()
        server.close()
        return got, seen

    got, seen = run_async(scenario)
    assert [(r.status, r.body) for r in got] == [
        (204, b""), (200, b"hello"), (200, b"abcde"), (500, b"oops"), (200, b"until the end")]
    first = seen[0][1]
    assert first.startswith(b"POST /insert?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-Test: 1\r\n" in first and b"\r\nContent-Length: 4\r\n" in first and first.endswith(b"\r\n\r\na\nb\n")
    # the first four on one connection; the 500 said close, so the last needed a new one
    assert [conn for conn, _ in seen] == [1, 1, 1, 1, 2]


def test_a_connection_the_server_closed_while_idle_is_not_reused():
    async def scenario():
        seen: list = []
        answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"] * 2
        server, url = await raw_server(answers, seen, close_after=True)
        client = HttpClient()
        first = await client.request("GET", url + "/", timeout_s=5)
        idle = client._idle[("http", "127.0.0.1", server.sockets[0].getsockname()[1])]
        await await_until(lambda: idle[0].reader.at_eof(), 5, "the server's close to reach the idle connection")
        second = await client.request("GET", url + "/", timeout_s=5)
        await client.close()
        server.close()
        return first.status, second.status, [conn for conn, _ in seen]

    assert run_async(scenario) == (200, 200, [1, 2])


def test_refused_and_unresolvable_are_connect_errors_and_a_silent_server_times_out_after_sending():
    async def scenario():
        client = HttpClient()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: refused
        errors = []
        for url in (f"http://127.0.0.1:{port}/", "http://no-such-host.invalid/"):
            with pytest.raises(ConnectError) as e:
                await client.request("POST", url, b"x", timeout_s=5)
            errors.append(str(e.value))

        done = asyncio.Event()

        async def silent(reader, writer):
            await reader.read(100)
            await done.wait()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        with pytest.raises(TimeoutError) as timed_out:
            await client.request("POST", url, b"x", timeout_s=0.3)
        done.set()
        server.close()
        await server.wait_closed()
        await client.close()
        return errors, timed_out.value

    errors, timed_out = run_async(scenario)
    assert "cannot connect to 127.0.0.1" in errors[0] and "no-such-host.invalid" in errors[1]
    assert not isinstance(timed_out, ConnectError)  # it was sent: the server may have it


def test_an_answer_that_is_not_http_is_a_protocol_error():
    async def scenario():
        server, url = await raw_server([b"SSH-2.0-OpenSSH\r\n\r\n"], [])
        client = HttpClient()
        with pytest.raises(ProtocolError) as e:
            await client.request("GET", url + "/", timeout_s=5)
        await client.close()
        server.close()
        return str(e.value)

    assert "not an HTTP/1.x status line" in run_async(scenario)


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_the_host_header():
    async def scenario():
        seen: list = []
        server, url = await raw_server([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], seen)
        client = HttpClient()
        await client.request("POST", url.replace("http://", "http://user:p%40ss@") + "/", b"x", timeout_s=5)
        await client.close()
        server.close()
        return seen[0][1]

    request = run_async(scenario)
    assert b"\r\nHost: 127.0.0.1:" in request and b"user" not in request.split(b"Authorization")[0]
    assert b"\r\nAuthorization: Basic dXNlcjpwQHNz\r\n" in request  # user:p@ss
