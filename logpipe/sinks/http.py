"""The one POST every HTTP sink makes, with the failure classification they share.

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

from .base import SendError

__all__ = ["HttpPoster", "RETRYABLE_STATUS"]

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
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise SendError(f"sending batch to {self._what}: {type(e).__name__}: {e}", retryable=True) from None
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
