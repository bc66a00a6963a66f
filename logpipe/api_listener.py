"""The API's listening socket and its HTTP/1.1 connections (the routes are in ``api.py``).

Why not aiohttp's server: importing aiohttp costs ~12 MB of RSS, most of an idle daemon's
footprint beyond the interpreter, and the API is five routes that health checks and
Prometheus hit all day in every per-project stack. What they need is here:

- Requests are read whole before they are answered: a head of at most 16 KiB (431 past it),
  a body of at most 64 KiB by Content-Length (413 past it; 411 for a chunked request body).
  A malformed request is answered 400 and the connection closed; nothing a client sends
  can raise out of here.
- One request at a time per connection, keep-alive for HTTP/1.1 unless ``Connection:
  close``; reading pauses while a request is answered, so pipelined requests wait in order.
- An idle or slow connection is closed after ``IDLE_S`` (a timer only while it is open: an
  API nobody calls costs no wakeups).
- /api/tap is streamed with chunked encoding until its limit, the client leaves, or
  shutdown; writing waits while the client's socket is full (the tap hub drops what a
  slow reader cannot take, counted).

A reload that moves the API binds the new address before closing the old (``bind`` then
``swap``); connections already open are answered on their own connection.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog

from .api import Api, Reply, TapHub, TapRequest

if TYPE_CHECKING:  # pragma: no cover
    from .api import Control

__all__ = ["ApiServer"]

IDLE_S = 60.0
_MAX_HEAD = 16 * 1024
_MAX_BODY = 64 * 1024


class _Connection(asyncio.Protocol):
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buffer = bytearray()
        self.busy = False
        self.eof = False  # the client has sent all it will
        self.writable = asyncio.Event()
        self.writable.set()
        self.tap: Any = None  # the tap client while streaming
        self._idle: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.server.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next_request()

    def eof_received(self) -> bool:
        self.eof = True
        return self.busy  # half-closed while answering: finish the answer, then close

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        self.writable.set()
        if self.tap is not None:
            self.tap.ready.set()  # the stream notices the client left

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # --- requests ---------------------------------------------------------------------

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(IDLE_S, self._close)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD:
                self._refuse(431)
            return
        if end > _MAX_HEAD:
            self._refuse(431)
            return
        try:
            method, target, version, headers = _parse_head(bytes(self.buffer[:end]))
        except ValueError:
            self._refuse(400)
            return
        if not version.startswith("HTTP/1."):
            self._refuse(505)
            return
        if "transfer-encoding" in headers:
            self._refuse(411)
            return
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self._refuse(400)
            return
        if length > _MAX_BODY:
            self._refuse(413)
            return
        if len(self.buffer) < end + 4 + length:
            return  # the body is still coming
        del self.buffer[: end + 4 + length]
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self.busy = True
        if self._idle is not None:
            self._idle.cancel()
        assert self.transport is not None
        self.transport.pause_reading()
        self.server.spawn(self._answer(method, target, keep))

    async def _answer(self, method: str, target: str, keep: bool) -> None:
        path, _, query_text = target.partition("?")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(query_text).items()}
        try:
            reply = await self.server.api.handle(method, path, query, self.peer)
        except Exception as e:  # a bug in a view must not take the connection's client down silently
            self.server.log.error("api_request_failed", path=path, error=f"{type(e).__name__}: {e}")
            reply = Reply(500, b"internal error", "text/plain; charset=utf-8")
        if isinstance(reply, TapRequest):
            await self._stream_tap(reply)
            keep = False
        else:
            self._write(reply, keep, head_only=method == "HEAD")
        self.busy = False
        if self.transport is None:
            return
        if not keep or (self.eof and not self.buffer):
            self.transport.close()
            return
        self.transport.resume_reading()
        self._arm_idle()
        if self.buffer:
            self._next_request()

    def _write(self, reply: Reply, keep: bool, head_only: bool = False) -> None:
        if self.transport is None:
            return
        lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
                 f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}"]
        lines += [f"{k}: {v}" for k, v in reply.headers.items()]
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(head if head_only else head + reply.body)

    def _refuse(self, status: int) -> None:
        self.buffer.clear()
        self._write(Reply(status, HTTPStatus(status).phrase.encode(), "text/plain; charset=utf-8"), keep=False)
        self._close()

    async def _stream_tap(self, request: TapRequest) -> None:
        if self.transport is None:
            return
        hub = self.server.tap_hub
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                             b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        client = self.tap = hub.subscribe(request.sink, request.rate, self.server.daemon.config.api.tap_queue_events)
        limit, sent = request.limit, 0
        try:
            while (not limit or sent < limit) and not hub.closed and self.transport is not None:
                await client.ready.wait()
                client.ready.clear()
                lines = []
                while client.queue and (not limit or sent < limit):
                    lines.append(client.queue.popleft())
                    sent += 1
                if lines and self.transport is not None:
                    data = b"\n".join(lines) + b"\n"
                    self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
                    await self.writable.wait()
            if self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
        finally:
            hub.unsubscribe(client)
            self.tap = None


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise ValueError("bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError("bad header line")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


class ApiServer:
    """The API's listening site: started once, moved by a reload, stopped last."""

    def __init__(self, daemon: Control) -> None:
        self.daemon = daemon
        self.tap_hub = TapHub(daemon.pipeline, daemon.metrics)
        self.api = Api(daemon, self.tap_hub)
        self.connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.log = structlog.get_logger().bind(component="api")

    async def start(self, listen: str) -> tuple[str, int]:
        self._server = await self.bind(listen)
        return self._announce(self._server)

    async def bind(self, listen: str) -> asyncio.Server:
        from .sources.base import BindError
        from .sources.net import tcp_socket

        try:
            # Bound here, not by create_server(host, port): that resolves the host on
            # libuv's thread pool, four threads an idle daemon has no other use for.
            sock = tcp_socket(listen)
        except OSError as e:
            raise BindError(f"api.listen: cannot bind {listen}: {e.strerror or e}") from None
        return await asyncio.get_running_loop().create_server(lambda: _Connection(self), sock=sock)

    def _announce(self, server: asyncio.Server) -> tuple[str, int]:
        address = server.sockets[0].getsockname()[:2]  # port 0 needs the real one
        self.log.info("listening", protocol="http", address=f"{address[0]}:{address[1]}")
        return address

    async def swap(self, listen: str | None, server: asyncio.Server | None) -> tuple[str, int] | None:
        """Reload: serve on ``server`` (bound by ``bind``), or nowhere when ``listen`` is None.
        Closes the old listening socket only: the request that asked for this reload (and
        any other open connection) is answered on its own connection."""
        old, self._server = self._server, server
        address = self._announce(server) if server is not None else None
        if old is not None:
            old.close()
        return address

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="api.request")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.tap_hub.close()  # ends every tap stream
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        left = list(self._tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        for conn in list(self.connections):
            conn._close()
