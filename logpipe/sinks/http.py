"""The one POST every HTTP sink makes, with the failure classification they share, and
``HttpSink``: the base of every HTTP sink, which sends through its endpoint pools
(``url`` or ``endpoints``; see endpoints.py).

Retryable: connection errors, timeouts, 408, 429 and 5xx. Anything else non-2xx is the
destination refusing the data, which retrying will not change. Sinks with a finer view
(ClickHouse's error codes) classify before falling back to this.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from typing import Any

import aiohttp
import aiohttp.payload

from .base import SendError, Sink
from .endpoints import EndpointPool, endpoint_fault

__all__ = ["HttpPoster", "HttpSink", "RETRYABLE_STATUS"]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RESPONSE_TEXT = 2048


class HttpPoster:
    def __init__(self, what: str, timeout_s: float, gzip_level: int | None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._what = what
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._gzip_level = gzip_level
        self._ssl = ssl_context  # None: aiohttp's default verification for https
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
            self._session = aiohttp.ClientSession(timeout=self._timeout, raise_for_status=False, connector=connector)
        return self._session

    def ndjson_body(self, pieces: list[bytes]) -> bytes | aiohttp.payload.Payload:
        """A batch's NDJSON pieces as a request body: compressed in one piece, else sent as
        they are (no joined copy of the batch: ~3 % of the daemon's CPU at full speed, and
        one batch less of memory per request in flight)."""
        if self._gzip_level:
            return self.compress(b"".join(pieces))
        return pieces[0] if len(pieces) == 1 else _Pieces(pieces)

    def compress(self, body: bytes) -> bytes:
        # Level 1: on log text it keeps most of the ratio of level 6 at a third of the CPU.
        return gzip.compress(body, compresslevel=self._gzip_level) if self._gzip_level else body

    async def post(self, url: str, body: bytes | aiohttp.payload.Payload, headers: dict[str, str]) -> tuple[int, str]:
        """POST and return (status, text) for a 2xx; raise SendError otherwise."""
        if self._gzip_level:
            headers = {**headers, "Content-Encoding": "gzip"}
        try:
            async with self.session().post(url, data=body, headers=headers) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            # Failing to connect sent nothing; anything later may have reached the server.
            unsent = isinstance(e, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
            raise SendError(f"sending batch to {self._what}: {type(e).__name__}: {e}", retryable=True,
                            maybe_stored=not unsent) from None
        if 200 <= status < 300:
            return status, text
        text = text[:_MAX_RESPONSE_TEXT]
        raise SendError(
            f"sending batch to {self._what}: HTTP {status}: {text.strip()[:300]}",
            retryable=status in RETRYABLE_STATUS,
            status=status,
            response=text,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpSink(Sink):
    """A sink that POSTs to one endpoint or several of the same store (``config.url`` /
    ``config.endpoints``; ClickHouse passes its shards as ``groups``, one pool each).
    ``health_path`` is the cheap GET that probes an endpoint (and ``check()`` uses)."""

    health_path = "/"
    _PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)

    def __init__(self, name: str, config: Any, *, gzip: bool, groups: list[list[str]] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(name)
        self._http = HttpPoster(f"{self.kind} {name}", config.request_timeout_s, 1 if gzip else None, ssl_context)
        sharded = groups is not None and len(groups) > 1
        self.pools = [
            EndpointPool(name, urls, probe=self.probe_endpoint, backoff_initial_s=config.retry_initial_ms / 1000,
                         backoff_max_s=config.retry_max_ms / 1000, shard=i if sharded else None,
                         is_fault=self.is_endpoint_fault)
            for i, urls in enumerate(groups or [config.endpoint_urls()])
        ]

    def is_endpoint_fault(self, error: SendError) -> bool:
        return endpoint_fault(error)

    def probe_headers(self) -> dict[str, str]:
        return {}

    async def post(self, path: str, body: bytes | aiohttp.payload.Payload, headers: dict[str, str], events: int,
                   pool: int = 0) -> tuple[int, str]:
        """POST ``body`` to ``path`` of one endpoint of ``pool`` (failing over); (status, text)."""
        return await self.pools[pool].run(lambda endpoint: self._http.post(endpoint.url + path, body, headers), events)

    async def probe_endpoint(self, base_url: str) -> str | None:
        url = base_url + self.health_path
        try:
            async with self._http.session().get(url, headers=self.probe_headers(), timeout=self._PROBE_TIMEOUT) as resp:
                if resp.status >= 500 or resp.status in (401, 403):
                    return f"{url} answered HTTP {resp.status}"
        except Exception as e:  # any failure is the answer to "is it reachable"
            return f"{url} unreachable: {type(e).__name__}: {e}"
        return None

    async def probe(self) -> bool:
        """True when every pool (every shard) has an endpoint that answers its health GET."""
        for pool in self.pools:
            answers = await asyncio.gather(*(self.probe_endpoint(endpoint.url) for endpoint in pool.endpoints))
            if all(problem is not None for problem in answers):
                return False
        return True

    def endpoint_pools(self) -> list[EndpointPool]:
        return self.pools

    async def check(self) -> str | None:
        urls = [endpoint.url for pool in self.pools for endpoint in pool.endpoints]
        problems = await asyncio.gather(*(self.probe_endpoint(url) for url in urls))
        found = [p for p in problems if p]
        return "; ".join(found) if found else None

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()
        await self._http.close()


class _Pieces(aiohttp.payload.Payload):
    """Bytes pieces sent back to back as one body, with their total as Content-Length."""

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__(pieces, content_type="application/octet-stream")
        self._size = sum(map(len, pieces))

    async def write(self, writer: Any) -> None:
        for piece in self._value:
            await writer.write(piece)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        if content_length is None or content_length >= self._size:
            await self.write(writer)
            return
        for piece in self._value:
            if content_length <= 0:
                break
            await writer.write(piece[:content_length])
            content_length -= len(piece)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"".join(self._value)
