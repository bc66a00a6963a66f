"""VictoriaLogs: POST /insert/jsonline, one JSON event per line.

Traps this module exists to avoid (each seen in practice):
- A form Content-Type makes VictoriaLogs answer 200 and store nothing: always send
  ``application/stream+json``.
- It silently skips lines over 256 KiB: the parser caps ``_msg`` below that, and
  ``sources.syslog.max_line_bytes`` cannot be set above it.
- It silently skips rows outside its retention window: nothing to do on this side but
  make ``_time`` right; the README says so.

Records are already the JSON of the event, so a batch body is the records joined by
newlines: no re-encoding on the way out.
"""

from __future__ import annotations

from urllib.parse import urlencode

from ..buffer.base import Batch
from ..config import VictoriaLogsSink
from .base import Sink
from .http import HttpPoster

__all__ = ["VictoriaLogs"]


class VictoriaLogs(Sink):
    kind = "victorialogs"

    def __init__(self, name: str, config: VictoriaLogsSink) -> None:
        super().__init__(name)
        params = {"_msg_field": "_msg", "_time_field": "_time"}
        if config.stream_fields:
            params["_stream_fields"] = ",".join(config.stream_fields)
        for key, value in config.extra_fields.items():
            params.setdefault("extra_fields", "")
            params["extra_fields"] += ("," if params["extra_fields"] else "") + f"{key}={value}"
        base = config.url.rstrip("/")
        self.url = f"{base}/insert/jsonline?{urlencode(params)}"
        self.health_url = f"{base}/health"
        self.headers = {"Content-Type": "application/stream+json"}
        if config.account_id is not None:
            self.headers["AccountID"] = str(config.account_id)
        if config.project_id is not None:
            self.headers["ProjectID"] = str(config.project_id)
        self._http = HttpPoster(f"victorialogs {name}", config.request_timeout_s, 1 if config.compression == "gzip" else None)

    async def send(self, batch: Batch) -> None:
        await self._http.post(self.url, self._http.ndjson_body(batch.ndjson_pieces()), self.headers)

    async def close(self) -> None:
        await self._http.close()

    async def check(self) -> str | None:
        try:
            async with self._http.session().get(self.health_url) as resp:
                if resp.status != 200:
                    return f"{self.health_url} answered HTTP {resp.status}"
        except Exception as e:  # any failure is the answer to "is it reachable"
            return f"{self.health_url} unreachable: {type(e).__name__}: {e}"
        return None
