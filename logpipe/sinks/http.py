"""The one POST every HTTP sink makes, with the failure classification they share.

Retryable: connection errors, timeouts, 408, 429 and 5xx. Anything else non-2xx is the
destination refusing the data, which retrying will not change. Sinks with a finer view
(ClickHouse's error codes) classify before falling back to this.
"""

from __future__ import annotations

import asyncio
import gzip

import aiohttp

from .base import SendError

__all__ = ["HttpPoster", "RETRYABLE_STATUS"]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RESPONSE_TEXT = 2048


class HttpPoster:
    def __init__(self, what: str, timeout_s: float, gzip_level: int | None) -> None:
        self._what = what
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._gzip_level = gzip_level
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, raise_for_status=False)
        return self._session

    def compress(self, body: bytes) -> bytes:
        # Level 1: on log text it keeps most of the ratio of level 6 at a third of the CPU.
        return gzip.compress(body, compresslevel=self._gzip_level) if self._gzip_level else body

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
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
