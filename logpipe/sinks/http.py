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
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import structlog

from .base import SendError, Sink
from .endpoints import EndpointPool, endpoint_fault
from .http_client import ConnectError, HttpClient
from .nearness import is_near

__all__ = ["HttpPoster", "HttpSink", "RETRYABLE_STATUS", "Body"]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RESPONSE_TEXT = 2048
_PROBE_TIMEOUT_S = 5.0
# On log text level 1 keeps most of the ratio of level 6 at a third of the CPU.
GZIP_LEVEL = 1
# compression "auto": how long the answer "is this endpoint's host near" is kept before its
# name is resolved and the routing table read again (a container may move).
_NEARNESS_TTL_S = 300.0

# A request body: bytes, or pieces sent back to back (an uncompressed batch as the buffer
# holds it: no joined copy, ~3 % of the daemon's CPU at full speed and a batch of memory).
Body = bytes | list[bytes]


async def _first_address(host: str, port: int | None) -> str:
    """The address a connection to ``host`` tries first."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return str(found[0][4][0])


class HttpPoster:
    """``gzip_level`` compresses every request body; ``by_route`` instead decides per
    endpoint host: uncompressed when the host is near (nearness.py), gzip level 1 when not."""

    def __init__(self, what: str, timeout_s: float, gzip_level: int | None, ssl_context: ssl.SSLContext | None = None,
                 *, by_route: bool = False, log_component: str = "sink") -> None:
        self._what = what
        self._timeout_s = timeout_s
        self._gzip_level = None if by_route else gzip_level
        self._by_route = by_route
        self._gzip_by_host: dict[str, tuple[bool, float]] = {}  # host -> (gzip, decided at)
        self.client = HttpClient(ssl_context)  # None: the default verification for https
        self.log = structlog.get_logger().bind(component=log_component)

    def ndjson_body(self, pieces: list[bytes]) -> Body:
        """A batch's NDJSON pieces as a request body: compressed in one piece, else sent as
        they are (``by_route``: compressed in ``post`` if the endpoint wants it)."""
        if self._gzip_level:
            return self.compress(b"".join(pieces))
        return pieces

    async def _gzip_for(self, url: str) -> bool:
        """``by_route``: whether ``url``'s host is far enough to compress for."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        now = time.monotonic()
        known = self._gzip_by_host.get(host)
        if known is not None and now - known[1] < _NEARNESS_TTL_S:
            return known[0]
        try:
            address = await asyncio.wait_for(_first_address(host, parts.port), self._timeout_s)
        except (OSError, UnicodeError, IndexError, TimeoutError):
            return True  # not resolved now: as any name, not remembered (the send will tell)
        wants_gzip = not is_near(address)
        if known is None or known[0] != wants_gzip:
            self.log.info("compression_chosen", host=host, address=address,
                          compression="gzip" if wants_gzip else "none",
                          reason="reached through a gateway or a tunnel" if wants_gzip
                          else "on this host or a directly attached network")
        self._gzip_by_host[host] = (wants_gzip, now)
        return wants_gzip

    def compress(self, body: bytes) -> bytes:
        return gzip.compress(body, compresslevel=self._gzip_level) if self._gzip_level else body

    async def post(self, url: str, body: Body, headers: dict[str, str]) -> tuple[int, str]:
        """POST and return (status, text) for a 2xx; raise SendError otherwise."""
        if self._gzip_level:
            headers = {**headers, "Content-Encoding": "gzip"}
        elif self._by_route and await self._gzip_for(url):
            body = gzip.compress(b"".join(body) if isinstance(body, list) else body, compresslevel=GZIP_LEVEL)
            headers = {**headers, "Content-Encoding": "gzip"}
        try:
            resp = await self.client.request("POST", url, body, headers, timeout_s=self._timeout_s)
        except (TimeoutError, OSError) as e:
            # Failing to connect sent nothing; anything later may have reached the server.
            raise SendError(f"sending batch to {self._what}: {type(e).__name__}: {e}", retryable=True,
                            maybe_stored=not isinstance(e, ConnectError)) from None
        status, text = resp.status, resp.text()
        if 200 <= status < 300:
            return status, text
        text = text[:_MAX_RESPONSE_TEXT]
        raise SendError(
            f"sending batch to {self._what}: HTTP {status}: {text.strip()[:300]}",
            retryable=status in RETRYABLE_STATUS,
            status=status,
            response=text,
        )

    async def probe(self, method: str, url: str, headers: dict[str, str], ok: Callable[[int], bool]) -> str | None:
        """None when ``url`` answers and ``ok(status)``; else what went wrong (for a log line)."""
        try:
            resp = await self.client.request(method, url, b"", headers, timeout_s=_PROBE_TIMEOUT_S)
        except Exception as e:  # any failure is the answer to "is it reachable"
            return f"{url} unreachable: {type(e).__name__}: {e}"
        if not ok(resp.status):
            return f"{url} answered HTTP {resp.status}: {resp.text()[:200]}".rstrip(": ")
        return None

    async def close(self) -> None:
        await self.client.close()


class HttpSink(Sink):
    """A sink that POSTs to one endpoint or several of the same store (``config.url`` /
    ``config.endpoints``; ClickHouse passes its shards as ``groups``, one pool each).
    ``health_path`` is the cheap GET that probes an endpoint (and ``check()`` uses)."""

    health_path = "/"

    def __init__(self, name: str, config: Any, *, gzip: bool | None, groups: list[list[str]] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``gzip``: compress every body (True), none (False), or per endpoint by where it
        is (None: ``compression = "auto"``)."""
        super().__init__(name)
        self._http = HttpPoster(f"{self.kind} {name}", config.request_timeout_s, GZIP_LEVEL if gzip else None, ssl_context,
                                by_route=gzip is None, log_component=f"sink.{name}")
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

    async def post(self, path: str, body: Body, headers: dict[str, str], events: int,
                   pool: int = 0) -> tuple[int, str]:
        """POST ``body`` to ``path`` of one endpoint of ``pool`` (failing over); (status, text)."""
        return await self.pools[pool].run(lambda endpoint: self._http.post(endpoint.url + path, body, headers), events)

    async def probe_endpoint(self, base_url: str) -> str | None:
        return await self._http.probe("GET", base_url + self.health_path, self.probe_headers(),
                                      lambda status: status < 500 and status not in (401, 403))

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
