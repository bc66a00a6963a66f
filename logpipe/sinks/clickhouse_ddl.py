"""Recommended ClickHouse tables for a clickhouse sink: pure, config in, SQL text out.

Used by ``logpipe clickhouse-schema`` (printed for an operator to review) and by the sink
when ``create_table = true`` (executed as ``CREATE TABLE IF NOT EXISTS``).

What the modern form encodes, and why:
- LowCardinality(String) for fields with few distinct values (level, service, host...):
  dictionary-encoded, several times smaller and faster to filter.
- ORDER BY the low-cardinality columns first, then time: rows of one service sit together,
  so a query for one service reads a narrow range and compresses well.
- Daily partitions when the longest retention is short (TTL drops whole days cheaply),
  monthly otherwise (fewer partitions, fewer parts).
- Delta+ZSTD for the timestamp, ZSTD for text.
- A TTL whose retention depends on the level (debug goes first).
- ``non_replicated_deduplication_window``: without it a plain MergeTree ignores
  ``insert_deduplication_token`` and a retried insert can duplicate rows.

The old form (for servers before 20.1, such as Debian's 18.16) drops what those servers
reject: DateTime64, codecs, TTL, table-level dedup settings; LowCardinality is experimental
there, so it uses plain String.

With a cluster name the tables are ``ReplicatedMergeTree ... ON CLUSTER`` (replicas of a
shard share a ZooKeeper path built from the ``{shard}``/``{replica}`` macros, and drop a
retried block by default) plus one Distributed table over them. Knowing the server
(``ServerInfo``: ``--server-version`` or a probe) the output is one statement set for it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..config import ClickHouseSink

__all__ = ["TableDesign", "ServerInfo", "design", "create_table_sql", "schema_text", "server_info", "STANDARD_FIELDS"]

# non_replicated_deduplication_window exists in every release with insert_deduplication_token
# (22.x); from --server-version alone it is only assumed from here on (a probe asks the server).
_DEDUP_WINDOW_FROM = (22, 3)
_MODERN_FROM = (20, 1)


class ServerInfo(NamedTuple):
    version: tuple[int, ...]
    dedup_window: bool  # MergeTree knows non_replicated_deduplication_window

    @property
    def modern(self) -> bool:
        return self.version >= _MODERN_FROM


def server_info(version: str) -> ServerInfo:
    """``"18.16"`` / ``"24.3.1.1"`` -> what that release accepts. Raises ValueError."""
    parts = re.findall(r"\d+", version)
    if not re.fullmatch(r"\s*\d+(\.\d+)*\s*", version) or not parts:
        raise ValueError(f"expected a ClickHouse version such as 18.16 or 24.3, got {version!r}")
    numbers = tuple(int(p) for p in parts[:3])
    return ServerInfo(numbers, numbers >= _DEDUP_WINDOW_FROM)

# Event fields (spec, "A stored event") that a table without a `columns` mapping gets.
STANDARD_FIELDS = (
    "_time",
    "service",
    "level",
    "hostname",
    "app_name",
    "container_id",
    "service_id",
    "source_ip",
    "facility",
    "severity",
    "proc_id",
    "msg_id",
    "_msg",
)

# Fields with few distinct values; the order is the ORDER BY preference.
_LOW_CARDINALITY = ("service", "app_name", "level", "hostname", "service_id", "facility", "severity", "msg_id", "source_ip")
_ORDER_BY_PREFERENCE = ("service", "app_name", "level", "hostname")
_TIME_FIELDS = ("_time", "timestamp", "time", "ts")
_INTEGER_NAMES = re.compile(r"(^|_)(status|code|port|pid)$")
_BYTES_NAMES = re.compile(r"(^|_)(bytes|size|length|count)$")
_FLOAT_NAMES = re.compile(r"(^|_)(duration|latency|elapsed|seconds|ms)$")


class TableDesign:
    """Columns (name, field, modern type, old type) and the time/level columns."""

    def __init__(self, columns: list[tuple[str, str, str, str]], time_column: str | None, level_column: str | None) -> None:
        self.columns = columns
        self.time_column = time_column
        self.level_column = level_column


def design(config: ClickHouseSink) -> TableDesign:
    mapping = dict(config.columns) if config.columns else {f: f for f in STANDARD_FIELDS}
    columns = []
    time_column = level_column = None
    for column, event_field in mapping.items():
        explicit = config.column_types.get(column)
        if explicit:
            modern = old = explicit
        elif event_field in _TIME_FIELDS or column in _TIME_FIELDS:
            modern, old = "DateTime64(6)", "DateTime"
        elif event_field in _LOW_CARDINALITY or column in _LOW_CARDINALITY:
            modern, old = "LowCardinality(String)", "String"
        elif _INTEGER_NAMES.search(column):
            modern = old = "UInt16" if column.endswith("status") else "Int64"
        elif _BYTES_NAMES.search(column):
            modern = old = "UInt64"
        elif _FLOAT_NAMES.search(column):
            modern = old = "Float64"
        else:
            modern = old = "String"
        if time_column is None and (event_field == "_time" or column in _TIME_FIELDS) and "Date" in modern:
            time_column = column
        if level_column is None and event_field == "level":
            level_column = column
        columns.append((column, event_field, modern, old))
    return TableDesign(columns, time_column, level_column)


def _order_by(table: TableDesign, modern: bool) -> list[str]:
    lc = [c for c, f, m, _ in table.columns if m.startswith("LowCardinality")]
    by_field = {f: c for c, f, _, _ in table.columns}
    first = [by_field[f] for f in _ORDER_BY_PREFERENCE if f in by_field and by_field[f] in lc][:3]
    if not first:
        first = lc[:2]
    keys = [f"`{c}`" for c in first]
    if table.time_column:
        keys.append(f"`{table.time_column}`")
    return keys or ["tuple()"]


def create_table_sql(config: ClickHouseSink, table: str, *, modern: bool, if_not_exists: bool = False,
                     cluster: str | None = None, dedup_window: bool = True) -> str:
    d = design(config)
    lines = []
    for column, _field, modern_type, old_type in d.columns:
        if modern:
            if column == d.time_column:
                codec = " CODEC(Delta, ZSTD(1))"
            elif modern_type.startswith("LowCardinality"):
                codec = ""
            elif modern_type == "String":
                codec = " CODEC(ZSTD(3))"
            else:
                codec = " CODEC(ZSTD(1))"
            lines.append(f"    `{column}` {modern_type}{codec}")
        else:
            lines.append(f"    `{column}` {old_type}")
    retention = dict(config.retention_days)
    default_days = retention.pop("default", 30)
    longest = max([default_days, *retention.values()])
    time_col = f"`{d.time_column}`" if d.time_column else None
    on_cluster = f" ON CLUSTER `{cluster}`" if cluster else ""
    parts = [f"CREATE TABLE {'IF NOT EXISTS ' if if_not_exists else ''}`{config.database}`.`{table}`{on_cluster}",
             "(", ",\n".join(lines), ")"]
    if cluster:
        parts.append(f"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{config.database}/{table}', '{{replica}}')")
    else:
        parts.append("ENGINE = MergeTree")
    if time_col:
        if modern and longest <= 90:
            parts.append(f"PARTITION BY toYYYYMMDD({time_col})")
        else:
            parts.append(f"PARTITION BY toYYYYMM({time_col})")
    order = _order_by(d, modern)
    parts.append(f"ORDER BY ({', '.join(order)})")
    if modern and time_col:
        if d.level_column and retention:
            cases = ", ".join(f"`{d.level_column}` = '{_quote(level)}', {days}" for level, days in sorted(retention.items()))
            parts.append(f"TTL addDays(toDateTime({time_col}), multiIf({cases}, {default_days}))")
        else:
            parts.append(f"TTL toDateTime({time_col}) + INTERVAL {default_days} DAY")
    if modern and dedup_window and not cluster:  # replicated tables keep a dedup window by default
        parts.append("SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000")
    else:
        parts.append("SETTINGS index_granularity = 8192")
    return "\n".join(parts)


def cluster_tables(config: ClickHouseSink, table: str) -> tuple[str, str]:
    """(local, distributed) names: with ``shards`` the sink inserts into each shard's local
    ``table`` and queries go to ``table_all``; without, it inserts into the Distributed
    ``table`` over ``table_local``."""
    return (table, f"{table}_all") if config.shards else (f"{table}_local", table)


def distributed_sql(config: ClickHouseSink, table: str, cluster: str) -> str:
    local, distributed = cluster_tables(config, table)
    key = "rand()"
    if config.shard_by:
        column = next((c for c, f, _, _ in design(config).columns if f == config.shard_by), None)
        if column is not None:
            key = f"halfMD5(`{column}`)"  # the sink's shard_of(): same shard for the same value
    return (f"CREATE TABLE `{config.database}`.`{distributed}` ON CLUSTER `{cluster}` AS `{config.database}`.`{local}`\n"
            f"ENGINE = Distributed(`{cluster}`, `{config.database}`, `{local}`, {key})")


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def tables_to_show(config: ClickHouseSink) -> list[str]:
    if "{" in config.table:
        return [config.default_table or "default"]
    return [config.table]


def schema_text(sinks: dict[str, ClickHouseSink], *, cluster: str | None = None, server: ServerInfo | None = None) -> str:
    """What ``logpipe clickhouse-schema`` prints: for every configured table, both forms
    (for review), or with ``server`` the one form that server accepts (to pipe into it)."""
    out = []
    forms = [(server.modern, None)] if server else [
        (True, "-- ClickHouse 20.1 and later:"),
        (False, "-- older servers (no DateTime64, codecs, TTL; LowCardinality is experimental there):"),
    ]
    on_cluster = f" ON CLUSTER `{cluster}`" if cluster else ""
    for name, config in sinks.items():
        for table in tables_to_show(config):
            local, distributed = cluster_tables(config, table) if cluster else (table, None)
            out.append(f"-- sink {name}: table {config.database}.{local}"
                       + (f", Distributed {config.database}.{distributed} on cluster {cluster}" if cluster else ""))
            if server:
                out.append(f"-- for ClickHouse {'.'.join(map(str, server.version))}")
            if "{" in config.table:
                out.append(
                    f"-- table is the template {config.table!r}: every table it names gets this structure, e.g.\n"
                    f"--   CREATE TABLE `{config.database}`.`{config.table.split('{')[0]}api` AS `{config.database}`.`{table}`;\n"
                    "-- (with create_table = true the sink creates them itself)"
                )
            out.append(f"CREATE DATABASE IF NOT EXISTS `{config.database}`{on_cluster};")
            for modern, heading in forms:
                if heading:
                    out.append(heading)
                dedup_window = server.dedup_window if server else True
                out.append(create_table_sql(config, local, modern=modern, cluster=cluster, dedup_window=dedup_window) + ";")
                if cluster:
                    out.append(distributed_sql(config, table, cluster) + ";")
            out.append("")
    return "\n".join(out)
