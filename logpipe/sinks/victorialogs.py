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

from ..batch import Batch
from ..config import VictoriaLogsSink
from .http import HttpSink

__all__ = ["VictoriaLogs"]


class VictoriaLogs(HttpSink):
    kind = "victorialogs"
    health_path = "/health"

    def __init__(self, name: str, config: VictoriaLogsSink) -> None:
        super().__init__(name, config, gzip=config.uses_gzip())
        params = {"_msg_field": "_msg", "_time_field": "_time"}
        if config.stream_fields:
            params["_stream_fields"] = ",".join(config.stream_fields)
        for key, value in config.extra_fields.items():
            params.setdefault("extra_fields", "")
            params["extra_fields"] += ("," if params["extra_fields"] else "") + f"{key}={value}"
        self.path = f"/insert/jsonline?{urlencode(params)}"
        self.headers = {"Content-Type": "application/stream+json"}
        if config.account_id is not None:
            self.headers["AccountID"] = str(config.account_id)
        if config.project_id is not None:
            self.headers["ProjectID"] = str(config.project_id)

    async def send(self, batch: Batch) -> None:
        await self.post(self.path, self._http.ndjson_body(batch.ndjson_pieces()), self.headers, len(batch))
