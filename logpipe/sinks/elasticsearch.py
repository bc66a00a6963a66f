"""Elasticsearch ``_bulk``: one action line and one document line per event (NDJSON).

Serves Elasticsearch, OpenSearch and VictoriaLogs (``url = ".../insert/elasticsearch"``;
its ingestion parameters go in ``query``).

- Index: ``index`` is a template, ``{field}`` from the event (``index_missing_value`` when
  absent; characters Elasticsearch forbids in index names become ``_``, and it is
  lowercased), then ``strftime`` of the event's ``_time`` in UTC (receive day if ``_time``
  is unusable).
- Document: the record as it is, with ``_time`` also under ``timestamp_field`` (data
  streams require ``@timestamp``). The record is spliced, not re-encoded.
- Answers: a non-2xx status is classified as for every HTTP sink (``http.py``). A 2xx with
  ``"errors": true`` is read per item: 2xx items are confirmed; 429 and 5xx items are
  retried; any other item status is a rejection (mapping conflict, bad document) and goes
  to the dead letters with its error. The sink reports that as ``PartialSendError`` and the
  deliverer does the rest. A 2xx whose body cannot be read as a bulk answer is retried
  (the documents may be stored twice: at least once).
- Credentials go in the ``Authorization`` header (basic or ``ApiKey``), never in the URL
  and never in logs or errors.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson

from ..batch import Batch
from ..config import ElasticsearchSink as ElasticsearchSinkConfig
from .base import PartialSendError, SendError
from .http import RETRYABLE_STATUS, HttpSink

__all__ = ["Elasticsearch", "IndexTemplate"]

_FIELD = re.compile(r"\{([A-Za-z0-9_.@-]+)\}")
# Elasticsearch index names: lowercase, none of \ / * ? " < > | space , # :
_BAD_INDEX_CHARS = re.compile(r'[\\/*?"<>| ,#:]')
_MAX_ERROR_TEXT = 500


class IndexTemplate:
    """``logs-{service}-%Y.%m.%d`` + event -> index name. Built once per sink."""

    def __init__(self, template: str, missing: str) -> None:
        self.parts: list[tuple[bool, str]] = []  # (is_field, text)
        pos = 0
        for m in _FIELD.finditer(template):
            if m.start() > pos:
                self.parts.append((False, template[pos : m.start()]))
            self.parts.append((True, m[1]))
            pos = m.end()
        if pos < len(template):
            self.parts.append((False, template[pos:]))
        self.missing = missing
        self.uses_time = "%" in template
        self._day_cache: dict[str, datetime] = {}

    def _when(self, value: object) -> datetime:
        if isinstance(value, str) and len(value) >= 19:
            day = value[:19]
            cached = self._day_cache.get(day)
            if cached is not None:
                return cached
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
            except ValueError:
                when = None
            if when is not None:
                if len(self._day_cache) > 10_000:
                    self._day_cache.clear()
                self._day_cache[day] = when
                return when
        return datetime.now(UTC)

    def render(self, event: dict) -> str:
        when = self._when(event.get("_time")) if self.uses_time else None
        out = []
        for is_field, text in self.parts:
            if is_field:
                value = event.get(text)
                value = self.missing if value is None or value == "" else str(value)
                out.append(_BAD_INDEX_CHARS.sub("_", value).lower())
            else:
                # strftime on the template's own text only: a field value with % stays as is
                out.append(when.strftime(text) if when is not None and "%" in text else text)
        return "".join(out)


class Elasticsearch(HttpSink):
    kind = "elasticsearch"

    def __init__(self, name: str, config: ElasticsearchSinkConfig) -> None:
        super().__init__(name, config, gzip=config.compression == "gzip")
        self.path = "/_bulk" + (f"?{urlencode(config.query)}" if config.query else "")
        self.index = IndexTemplate(config.index, config.index_missing_value)
        self.action = config.action
        self.timestamp_key = orjson.dumps(config.timestamp_field) if config.timestamp_field else None
        self.headers = {"Content-Type": "application/x-ndjson"}
        if config.api_key is not None:
            self.headers["Authorization"] = f"ApiKey {config.api_key}"
        elif config.user is not None:
            token = base64.b64encode(f"{config.user}:{config.password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self._actions: dict[str, bytes] = {}

    def _action_line(self, index: str) -> bytes:
        line = self._actions.get(index)
        if line is None:
            if len(self._actions) > 10_000:
                self._actions.clear()
            line = orjson.dumps({self.action: {"_index": index}})
            self._actions[index] = line
        return line

    def body(self, records: list[bytes]) -> bytes:
        out = bytearray()
        loads = orjson.loads
        stamp = self.timestamp_key
        for record in records:
            event = loads(record)
            out += self._action_line(self.index.render(event))
            out += b"\n"
            when = event.get("_time")
            if stamp is not None and when is not None and self.timestamp_key not in record:
                # Splice "@timestamp": <_time> in front of the record's own keys.
                out += b"{" + stamp + b":" + orjson.dumps(when) + (b"," + record[1:] if len(record) > 2 else b"}")
            else:
                out += record
            out += b"\n"
        return bytes(out)

    async def send(self, batch: Batch) -> None:
        body = self.body(batch.records)
        _status, text = await self.post(self.path, self._http.compress(body), self.headers, len(batch))
        self._check_items(batch.records, text)

    def _check_items(self, records: list[bytes], text: str) -> None:
        try:
            answer = orjson.loads(text) if text.strip() else {}
        except orjson.JSONDecodeError:
            raise SendError(
                f"sending batch to {self.kind} {self.name}: unreadable bulk answer: {text[:200]!r}", retryable=True
            ) from None
        if not isinstance(answer, dict) or not answer.get("errors"):
            return  # VictoriaLogs answers {"errors": false, "items": []}
        items = answer.get("items")
        if not isinstance(items, list) or len(items) != len(records):
            raise SendError(
                f"sending batch to {self.kind} {self.name}: bulk answer has errors but "
                f"{len(items) if isinstance(items, list) else 'no'} items for {len(records)} documents",
                retryable=True,
                response=text[:2048],
            )
        rejected: list[tuple[bytes, str]] = []
        retry: list[bytes] = []
        for record, item in zip(records, items, strict=True):
            result = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
            status = result.get("status", 0) if isinstance(result, dict) else 0
            if isinstance(status, int) and 200 <= status < 300:
                continue
            if status in RETRYABLE_STATUS:
                retry.append(record)
                continue
            error = result.get("error") if isinstance(result, dict) else None
            if isinstance(error, dict):
                reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
            else:
                reason = str(error)
            rejected.append((record, f"HTTP {status}: {reason}"[:_MAX_ERROR_TEXT]))
        if rejected or retry:
            raise PartialSendError(
                f"sending batch to {self.kind} {self.name}: {len(rejected)} document(s) rejected, "
                f"{len(retry)} to retry, of {len(records)}",
                rejected=rejected,
                retryable_records=retry,
            )

    def probe_headers(self) -> dict[str, str]:
        return self.headers
