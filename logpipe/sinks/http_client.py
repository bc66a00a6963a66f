"""The HTTP/1.1 client of the HTTP sinks: a request with a known-length body, the answer's
status and body, keep-alive connections per origin, TLS.

Why not aiohttp's client: importing it costs ~12 MB of RSS in every daemon with an HTTP sink
(the per-project stack is one of thousands), for features the sinks never use (cookies,
redirects, proxies, multipart, streaming answers). What the sinks need is this module.

- One request at a time per connection; a connection goes back to the idle list only when
  its answer was read to the end and neither side asked to close it. An idle connection the
  server has closed (EOF seen) or that has been idle for ``IDLE_S`` is not reused: servers
  close idle connections (ClickHouse after 3 s) and a POST on a connection the server is
  closing fails after it may have been read.
- ``timeout_s`` bounds the whole request: connecting, sending, the answer.
- ``ConnectError`` means nothing was sent (refused, unresolvable, connect timeout, TLS
  handshake failed); any other error after the connection was open leaves it unknown
  whether the server took the request.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from urllib.parse import unquote, urlsplit

__all__ = ["HttpClient", "Response", "ConnectError", "ProtocolError"]

IDLE_S = 2.0
_MAX_IDLE_PER_ORIGIN = 8
_MAX_HEAD = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class ConnectError(OSError):
    """The connection could not be made: the request was not sent."""


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x as expected."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # names lowercased; a repeated header keeps its last value
        self.body = body

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _Connection:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing() and now - self.idle_since < IDLE_S

    def close(self) -> None:
        self.writer.close()


Origin = tuple[str, str, int]


class HttpClient:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context  # None: the default verifying context for https
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False

    async def request(self, method: str, url: str, body: bytes | list[bytes] = b"",
                      headers: dict[str, str] | None = None, *, timeout_s: float) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectError(f"not an http(s) URL: {url!r}")
        origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        pieces = [body] if isinstance(body, bytes) else body
        host = parts.netloc.rpartition("@")[2]
        if parts.username is not None:  # http://user:password@host/ means Basic auth, as curl reads it
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode(), **(headers or {})}
        conn = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await self._connection(origin)
                try:
                    await self._send(conn, method, target, host, pieces, headers or {})
                    response, keep = await self._answer(conn, method)
                except BaseException:
                    conn.close()
                    raise
        except TimeoutError:
            if conn is None:
                raise ConnectError(f"connecting to {origin[1]}:{origin[2]} timed out after {timeout_s} s") from None
            raise
        if keep and not self._closed:
            conn.idle_since = time.monotonic()
            idle = self._idle.setdefault(origin, [])
            if len(idle) < _MAX_IDLE_PER_ORIGIN:
                idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        return response

    async def _connection(self, origin: Origin) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        scheme, host, port = origin
        context = None
        if scheme == "https":
            if self._ssl is None:  # made once: loading the system's CAs costs milliseconds
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=_MAX_HEAD)
        except OSError as e:  # refused, unreachable, unresolvable, TLS handshake (SSLError)
            raise ConnectError(f"cannot connect to {host}:{port}: {e}") from None
        return _Connection(reader, writer)

    @staticmethod
    async def _send(conn: _Connection, method: str, target: str, host: str, pieces: list[bytes],
                    headers: dict[str, str]) -> None:
        length = sum(map(len, pieces))
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "User-Agent: logpipe"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if length or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer = conn.writer
        # Every piece to the transport, one drain: no turn of the event loop per piece.
        writer.write(head)
        for piece in pieces:
            writer.write(piece)
        await writer.drain()

    @staticmethod
    async def _answer(conn: _Connection, method: str) -> tuple[Response, bool]:
        reader = conn.reader
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                raise ConnectionResetError("the server closed the connection before answering") from (
                    None if not e.partial else e)
            except asyncio.LimitOverrunError:
                raise ProtocolError("the answer's head is over 64 KiB") from None
            status, version, headers = _parse_head(head)
            if status >= 200 or status == 101:
                break  # 1xx (100 Continue, 103 Early Hints): the real answer follows
        length_text = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
            body = b""
        elif chunked:
            body = await _read_chunked(reader)
        elif length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise ProtocolError(f"bad Content-Length: {length_text!r}") from None
            body = await reader.readexactly(length)
        else:
            body = await reader.read()  # until the server closes: the only end it gave
            keep = False
        return Response(status, headers, body), keep

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(code), version, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size: {size_line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
