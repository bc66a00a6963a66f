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

Clusters: ``endpoints`` spreads inserts over several servers (a Distributed table on each),
failing over between them; ``shards`` gives one endpoint pool per shard (its replicas) and
sends each row to shard ``halfMD5(shard_by) % len(shards)``, the shard a Distributed table
with that sharding key would pick, so each shard's local table gets its rows directly.
``settings`` pass through to every insert; on servers that know them, the settings the
guarantees above depend on are pinned (CLICKHOUSE_PINNED_SETTINGS: an insert is confirmed
once stored, and the token works under ``async_insert``). Value conversion: clickhouse_values.py.

Catch-up: while the buffer holds a backlog the deliverer hands over up to
``catch_up_batches`` batches' worth at once (``backlog_limits``), so the one insert per
table per interval carries more rows and a backlog drains at the steady insert rate.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from urllib.parse import urlencode

import orjson
import structlog
from cachetools import LRUCache

from ..batch import Batch
from ..config import ClickHouseSink, read_secret
from ..config.sinks import CLICKHOUSE_PINNED_SETTINGS, clickhouse_setting
from .base import SendError
from .clickhouse_ddl import create_table_sql
from .clickhouse_values import TableSchema, converter, parse_timestamp
from .endpoints import Endpoint, endpoint_fault
from .http import HttpPoster, HttpSink

__all__ = ["ClickHouse", "classify", "error_code", "converter", "parse_timestamp", "shard_of"]

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
# Decoding and encoding a batch yield to the event loop this often (rows), and bodies over
# this size are compressed in a thread: a catch-up batch is several batches' worth.
_YIELD_EVERY = 5000
_COMPRESS_OFF_LOOP = 4 << 20
# Settings whose presence the sink checks at connect (besides the configured ones).
_PROBED_SETTINGS = ("insert_deduplication_token", "input_format_defaults_for_omitted_fields",
                    "allow_experimental_low_cardinality_type", "async_insert", *CLICKHOUSE_PINNED_SETTINGS)


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


def shard_of(value: object, shards: int) -> int:
    """The shard a Distributed table with sharding key ``halfMD5(column)`` picks for a
    String column holding ``value`` (the JSON text of a non-string, as the sink stores it)."""
    text = "" if value is None else value if isinstance(value, str) else orjson.dumps(value).decode()
    digest = hashlib.md5(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % shards


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


class ClickHouse(HttpSink):
    kind = "clickhouse"
    health_path = "/ping"

    def __init__(self, name: str, config: ClickHouseSink) -> None:
        super().__init__(name, config, gzip=config.compression == "gzip", groups=config.shard_urls())
        self.config = config
        self.log = structlog.get_logger().bind(component=f"sink.{name}")
        # A fresh connection per request: inserts are large and at least a second apart,
        # and a pooled connection the server closed while idle (keep_alive_timeout, 3-10 s)
        # fails the next insert with "broken pipe", which would look like an outage.
        self.headers = {"Content-Type": "application/x-ndjson", "Connection": "close"}
        if config.user is not None:
            self.headers["X-ClickHouse-User"] = config.user
        password = read_secret(config.password, config.password_file, config.password_env, "password")
        if password is not None:
            self.headers["X-ClickHouse-Key"] = password.decode()
        self._plain = HttpPoster(f"clickhouse {name}", config.request_timeout_s, None)  # queries: tiny bodies
        self._template = _Template(config.table, config.default_table)
        self._mapping = list(config.columns.items())
        self._shard_by = config.shard_by if len(self.pools) > 1 else None
        self._interval_s = config.min_insert_interval_ms / 1000
        self._schemas: LRUCache[str, TableSchema] = LRUCache(_MAX_TABLES_CACHED)
        self._last_insert: LRUCache[tuple[int, str], float] = LRUCache(_MAX_TABLES_CACHED)
        self._missing_logged: set[str] = set()
        self._lineage = _Lineage()
        self.version: str | None = None
        self.version_tuple: tuple[int, ...] = ()
        self.supports_dedup_token = False
        self._settings_known: set[str] = set()
        self._insert_settings: dict[str, str] = {}

    # --- requests -------------------------------------------------------------------------

    def is_endpoint_fault(self, error: SendError) -> bool:
        # A missing table is the schema's trouble, not the server's: no failover for it.
        return endpoint_fault(error) and error_code(error.response) not in MISSING_TABLE

    async def _query(self, sql: str, shard: int = 0) -> str:
        """Run a statement on one endpoint of ``shard``; SendError classified by ClickHouse's code."""
        what = f"running {sql.split(' ', 2)[0]} on clickhouse {self.name}"

        async def attempt(endpoint: Endpoint) -> str:
            try:
                _, text = await self._plain.post(endpoint.url + "/", sql.encode(), self.headers)
            except SendError as e:
                raise self._reclassify(e, what) from None
            return text

        return await self.pools[shard].run(attempt)

    def _reclassify(self, e: SendError, what: str) -> SendError:
        detail = (e.response or str(e)).strip().splitlines()[0][:300] if e.response else str(e).split(": ", 1)[-1]
        return SendError(f"{what}: {detail}", retryable=classify(e.status, e.response), status=e.status,
                         response=e.response, maybe_stored=e.maybe_stored)

    async def _ensure_ready(self, shard: int = 0) -> None:
        if self.version is not None:
            return
        version = (await self._query("SELECT version()", shard)).strip()
        wanted = sorted({*_PROBED_SETTINGS, *self.config.settings})
        names = await self._query(
            "SELECT name FROM system.settings WHERE name IN (" + ", ".join(f"'{n}'" for n in wanted) + ")", shard)
        known = set(names.split())
        unknown = sorted(set(self.config.settings) - known)
        if unknown:
            # A config mistake: retried (loudly) until the config or the server changes.
            raise SendError(f"clickhouse {self.name}: server {version} has no setting(s) "
                            f"{', '.join('settings.' + n for n in unknown)}", retryable=True)
        self._settings_known = known
        self._insert_settings = self._pinned_settings(known)
        self.supports_dedup_token = "insert_deduplication_token" in known
        self.version_tuple = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
        self.version = version
        self.log.info("clickhouse_connected", version=version, dedup_token=self.supports_dedup_token,
                      settings=self._insert_settings)

    def _pinned_settings(self, known: set[str]) -> dict[str, str]:
        """The configured settings, plus the pins this server knows. A server with
        async_insert but no async_insert_deduplicate ignores the token of an async insert:
        there logpipe turns async inserts off unless the config asks for them."""
        settings = {key: clickhouse_setting(value) for key, value in self.config.settings.items()}
        settings.update({key: value for key, value in CLICKHOUSE_PINNED_SETTINGS.items() if key in known})
        if "async_insert" in known and "async_insert_deduplicate" not in known:
            if "async_insert" not in settings:
                settings["async_insert"] = "0"
            elif settings["async_insert"] != "0":
                self.log.warning("clickhouse_dedup_token_ignored", reason="async_insert without async_insert_deduplicate",
                                 hint="a retried insert may be stored twice")
        return settings

    async def server_features(self) -> tuple[tuple[int, ...], bool]:
        """(version, has non_replicated_deduplication_window) of the first shard's server."""
        await self._ensure_ready()
        found = await self._query(
            "SELECT name FROM system.merge_tree_settings WHERE name = 'non_replicated_deduplication_window'")
        return self.version_tuple, bool(found.strip())

    @property
    def modern_ddl(self) -> bool:
        return self.version_tuple >= (20, 1)

    async def _schema(self, table: str, shard: int) -> TableSchema:
        schema = self._schemas.get(table)  # every shard has the same table
        if schema is not None:
            return schema
        describe = f"DESCRIBE TABLE `{self.config.database}`.`{table}` FORMAT JSONEachRow"
        try:
            text = await self._query(describe, shard)
        except SendError as e:
            if error_code(e.response) not in MISSING_TABLE:
                raise
            if not self.config.create_table:
                self._report_missing(table, e)
                raise SendError(str(e), retryable=True, status=e.status, response=e.response) from None
            await self._create(table)
            text = await self._query(describe, shard)
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
        schema = TableSchema(types, dict(self.config.column_defaults))
        self._schemas[table] = schema
        return schema

    async def _create(self, table: str) -> None:
        # create_table is refused with several endpoints or shards: one server here.
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
        groups: dict[tuple[int, str], list[tuple[bytes, dict]]] = {}
        undecodable = []
        shard_by, shards = self._shard_by, len(self.pools)
        for n, record in enumerate(batch.records, 1):
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a merged backlog batch must not stall the sources for seconds
            if id(record) in done:
                continue
            try:
                event = orjson.loads(record)
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                undecodable.append(record)
                continue
            shard = shard_of(event.get(shard_by), shards) if shard_by else 0
            groups.setdefault((shard, self._template.render(event)), []).append((record, event))
        if not groups and not undecodable:
            return
        retryable: SendError | None = None
        rejected: SendError | None = None
        for (shard, table), items in groups.items():
            try:
                await self._ensure_ready(shard)
                await self._insert_table(table, shard, items, batch.id, done)
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

    def backlog_limits(self, max_events: int, max_bytes: int) -> tuple[int, int]:
        return max_events * self.config.catch_up_batches, max_bytes * self.config.catch_up_batches

    async def _rows(self, schema: TableSchema, items: list[tuple[bytes, dict]]) -> list[bytes]:
        mapping = self._mapping
        dumps = orjson.dumps
        rows = []
        for n, (_, event) in enumerate(items, 1):
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if mapping:
                row = {column: event[field] for column, field in mapping if field in event}
            else:
                row = event
            # Copied: an orjson result that outlives the call keeps its ~8 KiB working
            # allocation (50,000 rows = 400 MB, and page faults at ~15 us a row).
            rows.append(bytes(memoryview(dumps(schema.convert(row)))))
        return rows

    async def _insert_table(self, table: str, shard: int, items: list[tuple[bytes, dict]], batch_id: str,
                            done: set[int]) -> None:
        schema = await self._schema(table, shard)
        rows = await self._rows(schema, items)
        records = [record for record, _ in items]
        last_rejection: SendError | None = None
        for _ in range(_MAX_ROW_EXCLUSIONS + 1):
            try:
                await self._post_rows(table, shard, rows, batch_id)
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

    async def _post_rows(self, table: str, shard: int, rows: list[bytes], batch_id: str) -> None:
        body = b"\n".join(rows) + b"\n"
        settings: dict[str, str] = {}
        if not self._mapping:
            settings["input_format_skip_unknown_fields"] = "1"
        if "input_format_defaults_for_omitted_fields" in self._settings_known:
            settings["input_format_defaults_for_omitted_fields"] = "1"
        settings.update(self._insert_settings)
        if self.supports_dedup_token:
            digest = hashlib.blake2b(body, digest_size=12).hexdigest()
            settings["insert_deduplication_token"] = f"{batch_id}:{table}:{digest}"
        qualified = f"{self.config.database}.{table}"
        query = "/?" + urlencode({"query": f"INSERT INTO `{self.config.database}`.`{table}` FORMAT JSONEachRow", **settings})
        what = f"sending batch to clickhouse {self.name} table {qualified}"
        # zlib lets go of the GIL: a large body is compressed off the event loop.
        compressed = await asyncio.to_thread(self._http.compress, body) if len(body) > _COMPRESS_OFF_LOOP else \
            self._http.compress(body)

        async def attempt(endpoint: Endpoint) -> None:
            try:
                await self._http.post(endpoint.url + query, compressed, self.headers)
            except SendError as e:
                raise self._reclassify(e, what) from None

        await self._pace((shard, table))
        try:
            await self.pools[shard].run(attempt, len(rows))
        except SendError as error:
            if error_code(error.response) in MISSING_TABLE:
                self._schemas.pop(table, None)
                if self.config.create_table:
                    await self._create(table)
                else:
                    self._report_missing(table, error)
                error.retryable = True
            elif not error.retryable:
                self._schemas.pop(table, None)  # the table may have changed: read it again
            raise error from None
        self._last_insert[(shard, table)] = time.monotonic()
        if table in self._missing_logged:
            self._missing_logged.discard(table)
            self.log.info("clickhouse_table_found", table=qualified)

    async def _pace(self, key: tuple[int, str]) -> None:
        last = self._last_insert.get(key)
        if last is not None:
            wait = last + self._interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # parts, not throughput, are the scarce resource

    async def close(self) -> None:
        await super().close()
        await self._plain.close()
