"""ClickHouse: HTTP ``INSERT INTO db.table FORMAT JSONEachRow``, one insert per table.

A batch's records are the JSON of whole events. The sink maps each to a row (the
``columns`` mapping, or every field with ``input_format_skip_unknown_fields=1``), picks its
table (``table`` may be a template over event fields, ``default_table`` when the field is
missing), converts values to the column types it read once per table with DESCRIBE, and
sends one gzip body per table.

Invariants:
- Nothing is dropped: a row that fails goes back to ``deliver.py`` as a non-retryable
  error (split, isolated, dead-lettered with the server's message); a missing table or
  database, a refused login or a server in trouble is retryable, forever.
- No duplicates from our own retries. A batch may span tables, and ``deliver.py`` retries
  or splits the *whole* batch. So the sink remembers which records of the batch in flight
  (and of the halves split from it, whose ids extend its id) the server has confirmed,
  and never sends them again. Across restarts, or when a request timed out after the
  server stored it, ``insert_deduplication_token`` (batch id + table + body digest) makes
  the server drop the repeat, where the server supports it and the table keeps a
  deduplication window (README).
- One part per table per insert, at most one insert per table per
  ``min_insert_interval_ms``: many small services must not cause a part storm.
- When one row of a table's insert is bad the server names it (``at row N``): the sink
  inserts the others at once (one part, not a bisection's worth) and leaves only the bad
  rows for ``deliver.py`` to isolate.
- Credentials travel in X-ClickHouse-User / X-ClickHouse-Key headers, never in the URL
  or a log line.

Values: integer/float columns get a number or the configured ``column_defaults`` value
(or the key is omitted, so the server's default applies); DateTime gets integer unix
seconds and DateTime64 fractional unix seconds, forms both old (18.16) and new servers
parse with no timezone ambiguity (text would be read in the server's timezone); Date gets
``YYYY-MM-DD``; String gets JSON text for non-strings. A timestamp that cannot be read is
sent as it is, so the server rejects that row and it is dead-lettered rather than stored
with a wrong time.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import hashlib
import math
import re
import time
from typing import Any, Callable
from urllib.parse import urlencode

import orjson
import structlog
from cachetools import LRUCache

from ..buffer.base import Batch
from ..config import ClickHouseSink, read_secret
from .base import SendError, Sink
from .clickhouse_ddl import create_table_sql
from .http import HttpPoster

__all__ = ["ClickHouse", "classify", "error_code"]

# Server error codes. Data errors: this row will never be accepted as it is.
DATA_ERRORS = frozenset(
    {6, 25, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 130, 131, 321, 349, 1001}
)
MISSING_TABLE = frozenset({60, 81})
_CODE = re.compile(r"Code: (\d+)")
_AT_ROW = re.compile(r"\(at row (\d+)\)")
# Retries of a table's insert that drop one named bad row each before giving the rest of
# the work to deliver.py's bisection.
_MAX_ROW_EXCLUSIONS = 16
_MAX_TABLES_CACHED = 10_000


def error_code(text: str | None) -> int | None:
    match = _CODE.search(text or "")
    return int(match.group(1)) if match else None


def classify(status: int | None, text: str | None) -> bool:
    """True if retrying may succeed. Unknown server codes are retried (never drop data
    because of a server-side problem) unless the server itself says "bad request"."""
    code = error_code(text)
    if code is not None:
        if code in DATA_ERRORS:
            return False
        return status != 400
    if status is None:
        return True  # connection error, timeout
    return status not in (400, 413, 422)


class _Template:
    """``logs_{service}`` -> table name per event; invalid characters become ``_``."""

    _PART = re.compile(r"\{([^}]+)\}")
    _UNSAFE = re.compile(r"[^A-Za-z0-9_]")

    def __init__(self, template: str, default: str | None) -> None:
        self.fixed = None if "{" in template else template
        self.pieces = self._PART.split(template)  # literal, field, literal, field, ...
        self.default = default

    def render(self, event: dict) -> str:
        if self.fixed is not None:
            return self.fixed
        out = []
        for i, piece in enumerate(self.pieces):
            if i % 2 == 0:
                out.append(piece)
                continue
            value = event.get(piece)
            if value is None or value == "" or isinstance(value, (dict, list)):
                return self.default  # type: ignore[return-value]
            out.append(self._UNSAFE.sub("_", str(value)))
        return "".join(out)[:200]


# --- value conversion ---------------------------------------------------------------------

_MISSING = object()  # "omit this key"
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?\s*(Z|z|[+-]\d\d:?\d\d)?")


def parse_timestamp(value: Any) -> tuple[int, int] | None:
    """(unix seconds, nanoseconds) from RFC 3339 text or a unix number, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        magnitude = abs(value)
        scale = 1 if magnitude < 1e11 else 1e3 if magnitude < 1e14 else 1e6 if magnitude < 1e17 else 1e9
        if isinstance(value, int) and scale != 1:
            ns = value * (1_000_000_000 // int(scale))
            return ns // 1_000_000_000, ns % 1_000_000_000
        seconds = value / scale
        whole = math.floor(seconds)
        return int(whole), int(round((seconds - whole) * 1e9)) % 1_000_000_000
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        text = value.strip()
        if text.isdigit():
            return parse_timestamp(int(text))
        return None
    y, mo, d, h, mi, s, frac, tz = match.groups()
    try:
        dt.date(int(y), int(mo), int(d))
    except ValueError:
        return None
    if int(h) > 23 or int(mi) > 59 or int(s) > 60:
        return None
    seconds = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    nanos = int((frac or "0").ljust(9, "0")[:9])
    return seconds, nanos


_INT_RANGES = {
    f"{sign}Int{bits}": ((0, 2**bits - 1) if sign == "U" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    for sign in ("", "U")
    for bits in (8, 16, 32, 64, 128, 256)
}


def _to_int(value: Any, low: int, high: int) -> Any:
    if isinstance(value, bool):
        number: Any = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                f = float(text)
                number = int(f) if math.isfinite(f) and f.is_integer() else None
            except ValueError:
                number = None
    else:
        number = None
    if number is None or not (low <= number <= high):
        return _MISSING
    return number


def _to_float(value: Any) -> Any:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return _MISSING
    else:
        return _MISSING
    return number if math.isfinite(number) else _MISSING


def _to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _to_datetime(value: Any) -> Any:
    parsed = parse_timestamp(value)
    return _MISSING if parsed is None or parsed[0] < 0 else parsed[0]


def _to_datetime64(precision: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        parsed = parse_timestamp(value)
        if parsed is None:
            return _MISSING
        seconds, nanos = parsed
        if precision == 0:
            return seconds
        digits = str(nanos).rjust(9, "0")[:precision]
        # A JSON number with exactly these digits: a float could round the last ones.
        return orjson.Fragment(f"{seconds}.{digits}".encode())

    return convert


def _to_date(value: Any) -> Any:
    parsed = parse_timestamp(value)
    if parsed is None:
        return _MISSING
    return time.strftime("%Y-%m-%d", time.gmtime(parsed[0]))


def converter(column_type: str) -> tuple[Callable[[Any], Any] | None, bool, bool]:
    """(convert or None for pass-through, nullable, is_timestamp) for a ClickHouse type."""
    nullable = False
    inner = column_type.strip()
    while True:
        match = re.fullmatch(r"(Nullable|LowCardinality)\((.*)\)", inner)
        if not match:
            break
        nullable = nullable or match.group(1) == "Nullable"
        inner = match.group(2).strip()
    base = inner.split("(", 1)[0]
    if base in _INT_RANGES:
        low, high = _INT_RANGES[base]
        return (lambda v: _to_int(v, low, high)), nullable, False
    if base in ("Float32", "Float64"):
        return _to_float, nullable, False
    if base == "Bool":
        return (lambda v: _to_int(v, 0, 1)), nullable, False
    if base in ("String", "FixedString"):
        return _to_string, nullable, False
    if base == "DateTime":
        return _to_datetime, nullable, True
    if base == "DateTime64":
        precision = int(re.match(r"DateTime64\((\d+)", inner).group(1)) if "(" in inner else 3  # type: ignore[union-attr]
        return _to_datetime64(precision), nullable, True
    if base in ("Date", "Date32"):
        return _to_date, nullable, True
    return None, nullable, False


class _TableSchema:
    """Per-column converters of one table, built once from DESCRIBE."""

    def __init__(self, types: dict[str, str], defaults: dict[str, Any]) -> None:
        self.types = types
        self.plans: dict[str, tuple[Callable[[Any], Any], bool, bool, Any]] = {}
        for column, column_type in types.items():
            convert, nullable, is_time = converter(column_type)
            if convert is not None:
                self.plans[column] = (convert, nullable, is_time, defaults.get(column, _MISSING))

    def convert(self, row: dict) -> dict:
        plans = self.plans
        for column in [c for c in row if c in plans]:
            value = row[column]
            convert, nullable, is_time, default = plans[column]
            if value is None:
                if not nullable:
                    del row[column]
                continue
            converted = convert(value)
            if converted is _MISSING:
                if default is not _MISSING:
                    row[column] = default
                elif is_time:
                    pass  # keep it: the server rejects the row and it is dead-lettered
                else:
                    del row[column]
            else:
                row[column] = converted
        return row


class _Lineage:
    """The records of the batch in flight that the server already has (by identity:
    split halves share the record objects of the batch they came from)."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.done: set[int] = set()

    def enter(self, batch_id: str) -> set[int]:
        if self.root is None or not (batch_id == self.root or batch_id.startswith(self.root + ".")):
            self.root = batch_id
            self.done = set()
        return self.done


class ClickHouse(Sink):
    kind = "clickhouse"

    def __init__(self, name: str, config: ClickHouseSink) -> None:
        super().__init__(name)
        self.config = config
        self.log = structlog.get_logger().bind(component=f"sink.{name}")
        self.base_url = config.url.rstrip("/") + "/"
        # A fresh connection per request: inserts are large and at least a second apart,
        # and a pooled connection the server closed while idle (keep_alive_timeout, 3-10 s)
        # fails the next insert with "broken pipe", which would look like an outage.
        self.headers = {"Content-Type": "application/x-ndjson", "Connection": "close"}
        if config.user is not None:
            self.headers["X-ClickHouse-User"] = config.user
        password = read_secret(config.password, config.password_file, config.password_env, "password")
        if password is not None:
            self.headers["X-ClickHouse-Key"] = password.decode()
        self._http = HttpPoster(f"clickhouse {name}", config.request_timeout_s, 1 if config.compression == "gzip" else None)
        self._plain = HttpPoster(f"clickhouse {name}", config.request_timeout_s, None)  # queries: tiny bodies
        self._template = _Template(config.table, config.default_table)
        self._mapping = list(config.columns.items())
        self._interval_s = config.min_insert_interval_ms / 1000
        self._schemas: LRUCache[str, _TableSchema] = LRUCache(_MAX_TABLES_CACHED)
        self._last_insert: LRUCache[str, float] = LRUCache(_MAX_TABLES_CACHED)
        self._missing_logged: set[str] = set()
        self._lineage = _Lineage()
        self.version: str | None = None
        self.version_tuple: tuple[int, ...] = ()
        self.supports_dedup_token = False
        self._settings_known: set[str] = set()

    # --- requests -------------------------------------------------------------------------

    def _url(self, query: str, settings: dict[str, str] | None = None) -> str:
        return self.base_url + "?" + urlencode({"query": query, **(settings or {})})

    async def _query(self, sql: str) -> str:
        """Run a statement; SendError classified by ClickHouse's code."""
        try:
            _, text = await self._plain.post(self.base_url, sql.encode(), self.headers)
        except SendError as e:
            raise self._reclassify(e, f"running {sql.split(' ', 2)[0]} on clickhouse {self.name}") from None
        return text

    def _reclassify(self, e: SendError, what: str) -> SendError:
        detail = (e.response or str(e)).strip().splitlines()[0][:300] if e.response else str(e).split(": ", 1)[-1]
        return SendError(f"{what}: {detail}", retryable=classify(e.status, e.response), status=e.status, response=e.response)

    async def _ensure_ready(self) -> None:
        if self.version is not None:
            return
        version = (await self._query("SELECT version()")).strip()
        names = await self._query(
            "SELECT name FROM system.settings WHERE name IN "
            "('insert_deduplication_token', 'input_format_defaults_for_omitted_fields', 'allow_experimental_low_cardinality_type')"
        )
        self._settings_known = set(names.split())
        self.supports_dedup_token = "insert_deduplication_token" in self._settings_known
        self.version_tuple = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
        self.version = version
        self.log.info("clickhouse_connected", version=version, dedup_token=self.supports_dedup_token)

    @property
    def modern_ddl(self) -> bool:
        return self.version_tuple >= (20, 1)

    async def _schema(self, table: str) -> _TableSchema:
        schema = self._schemas.get(table)
        if schema is not None:
            return schema
        qualified = f"`{self.config.database}`.`{table}`"
        try:
            text = await self._query(f"DESCRIBE TABLE {qualified} FORMAT JSONEachRow")
        except SendError as e:
            if error_code(e.response) not in MISSING_TABLE:
                raise
            if not self.config.create_table:
                self._report_missing(table, e)
                raise SendError(str(e), retryable=True, status=e.status, response=e.response) from None
            await self._create(table)
            text = await self._query(f"DESCRIBE TABLE {qualified} FORMAT JSONEachRow")
        types = {}
        for line in text.splitlines():
            if line.strip():
                row = orjson.loads(line)
                if row.get("default_type") not in ("MATERIALIZED", "ALIAS"):
                    types[row["name"]] = row["type"]
        missing = [c for c, _ in self._mapping if c not in types]
        if missing:
            # A config mistake, not bad data: wait for the table to be fixed, loudly.
            error = SendError(
                f"sending batch to clickhouse {self.name}: table {self.config.database}.{table} has no column(s) {', '.join(missing)}",
                retryable=True,
            )
            self._report_missing(table, error)
            raise error
        schema = _TableSchema(types, dict(self.config.column_defaults))
        self._schemas[table] = schema
        return schema

    async def _create(self, table: str) -> None:
        await self._query(f"CREATE DATABASE IF NOT EXISTS `{self.config.database}`")
        await self._query(create_table_sql(self.config, table, modern=self.modern_ddl, if_not_exists=True))
        self.log.warning("clickhouse_table_created", table=f"{self.config.database}.{table}")

    def _report_missing(self, table: str, error: SendError) -> None:
        if table not in self._missing_logged:  # once per streak, not once per retry
            self._missing_logged.add(table)
            self.log.error(
                "clickhouse_table_missing",
                stage="sending",
                table=f"{self.config.database}.{table}",
                error=str(error),
                retrying=True,
                hint="create it (logpipe clickhouse-schema) or set create_table = true",
            )

    # --- the batch ------------------------------------------------------------------------

    async def send(self, batch: Batch) -> None:
        done = self._lineage.enter(batch.id)
        groups: dict[str, list[tuple[bytes, dict]]] = {}
        undecodable = []
        for record in batch.records:
            if id(record) in done:
                continue
            try:
                event = orjson.loads(record)
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                undecodable.append(record)
                continue
            groups.setdefault(self._template.render(event), []).append((record, event))
        if not groups and not undecodable:
            return
        await self._ensure_ready()
        retryable: SendError | None = None
        rejected: SendError | None = None
        for table, items in groups.items():
            try:
                await self._insert_table(table, items, batch.id, done)
            except SendError as e:
                if e.retryable:
                    retryable = retryable or e
                else:
                    rejected = rejected or e
        if retryable is not None:
            raise retryable
        if rejected is not None:
            raise rejected
        if undecodable:
            raise SendError(f"sending batch to clickhouse {self.name}: record is not a JSON object", retryable=False)

    def _rows(self, schema: _TableSchema, items: list[tuple[bytes, dict]]) -> list[bytes]:
        mapping = self._mapping
        dumps = orjson.dumps
        rows = []
        for _, event in items:
            if mapping:
                row = {column: event[field] for column, field in mapping if field in event}
            else:
                row = event
            # Copied: an orjson result that outlives the call keeps its ~8 KiB working
            # allocation (50,000 rows = 400 MB, and page faults at ~15 us a row).
            rows.append(bytes(memoryview(dumps(schema.convert(row)))))
        return rows

    async def _insert_table(self, table: str, items: list[tuple[bytes, dict]], batch_id: str, done: set[int]) -> None:
        schema = await self._schema(table)
        rows = self._rows(schema, items)
        records = [record for record, _ in items]
        last_rejection: SendError | None = None
        for _ in range(_MAX_ROW_EXCLUSIONS + 1):
            try:
                await self._post_rows(table, rows, batch_id)
            except SendError as e:
                if e.retryable:
                    raise
                row_number = self._bad_row(e, len(rows))
                if row_number is None:
                    raise
                # The insert stored nothing (one block, atomic): drop the named row and
                # insert the rest now; deliver.py isolates the dropped one.
                del rows[row_number - 1]
                del records[row_number - 1]
                last_rejection = e
                if not rows:
                    raise
                continue
            done.update(map(id, records))
            if last_rejection is not None:
                raise last_rejection
            return
        raise last_rejection  # type: ignore[misc]

    @staticmethod
    def _bad_row(error: SendError, count: int) -> int | None:
        match = _AT_ROW.search(error.response or "")
        if match is None or count < 2:
            return None
        number = int(match.group(1))
        return number if 1 <= number <= count else None

    async def _post_rows(self, table: str, rows: list[bytes], batch_id: str) -> None:
        body = b"\n".join(rows) + b"\n"
        settings: dict[str, str] = {}
        if not self._mapping:
            settings["input_format_skip_unknown_fields"] = "1"
        if "input_format_defaults_for_omitted_fields" in self._settings_known:
            settings["input_format_defaults_for_omitted_fields"] = "1"
        if self.supports_dedup_token:
            digest = hashlib.blake2b(body, digest_size=12).hexdigest()
            settings["insert_deduplication_token"] = f"{batch_id}:{table}:{digest}"
        url = self._url(f"INSERT INTO `{self.config.database}`.`{table}` FORMAT JSONEachRow", settings)
        await self._pace(table)
        try:
            await self._http.post(url, self._http.compress(body), self.headers)
        except SendError as e:
            error = self._reclassify(e, f"sending batch to clickhouse {self.name} table {self.config.database}.{table}")
            if error_code(e.response) in MISSING_TABLE:
                self._schemas.pop(table, None)
                if self.config.create_table:
                    await self._create(table)
                else:
                    self._report_missing(table, error)
                error.retryable = True
            elif not error.retryable:
                self._schemas.pop(table, None)  # the table may have changed: read it again
            raise error from None
        self._last_insert[table] = time.monotonic()
        if table in self._missing_logged:
            self._missing_logged.discard(table)
            self.log.info("clickhouse_table_found", table=f"{self.config.database}.{table}")

    async def _pace(self, table: str) -> None:
        last = self._last_insert.get(table)
        if last is not None:
            wait = last + self._interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # parts, not throughput, are the scarce resource

    async def close(self) -> None:
        await self._http.close()
        await self._plain.close()

    async def check(self) -> str | None:
        try:
            await self._query("SELECT 1")
        except SendError as e:
            return str(e)
        return None
