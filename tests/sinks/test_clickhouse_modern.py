"""What only modern ClickHouse accepts, checked in-process with chdb (a modern ClickHouse
engine from PyPI): the generated modern DDL, and rows the sink converts for DateTime64,
DateTime and LowCardinality columns. Skipped when chdb is not installed."""

from __future__ import annotations

import time

import orjson
import pytest

from logpipe.sinks.clickhouse_ddl import create_table_sql
from logpipe.sinks.clickhouse_values import TableSchema
from tests.clickhouse_helpers import event, sink_config

chdb_session = pytest.importorskip("chdb.session", reason="chdb (modern ClickHouse in-process) is not installed")

pytestmark = pytest.mark.clickhouse


@pytest.fixture
def chdb(tmp_path):
    session = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        yield session
    finally:
        session.close()


@pytest.mark.parametrize(
    "columns",
    [
        pytest.param(None, id="standard-fields"),
        pytest.param('{ ts = "_time", level = "level", service = "service", status = "status", bytes = "bytes", msg = "_msg" }', id="mapped"),
    ],
)
def test_modern_ddl_is_accepted_and_stores_converted_rows(chdb, columns):
    keys = {"columns": columns} if columns else {}
    config = sink_config("http://127.0.0.1:8123", table='"app"', **keys)
    chdb.query("CREATE DATABASE IF NOT EXISTS logs")
    chdb.query(create_table_sql(config, "app", modern=True, if_not_exists=True))
    types = {r["name"]: r["type"] for r in map(orjson.loads, chdb.query("DESCRIBE TABLE logs.app", "JSONEachRow").bytes().splitlines())}
    schema = TableSchema(types, {})
    mapping = list(config.columns.items())
    body = b""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for i in range(3):
        # Recent times: rows already past the TTL are dropped by the server on insert.
        e = orjson.loads(event(i, "api", status=str(200 + i), bytes=10, _time=f"{today}T10:00:0{i}.00{i}456Z"))
        row = {c: e[f] for c, f in mapping if f in e} if mapping else e
        body += orjson.dumps(schema.convert(row)) + b"\n"
    time_column = "ts" if mapping else "_time"
    chdb.query(
        "INSERT INTO logs.app SETTINGS input_format_skip_unknown_fields=1, insert_deduplication_token='t1' FORMAT JSONEachRow "
        + body.decode()
    )
    # The same token again: dropped as a retry (the table has a deduplication window).
    chdb.query("INSERT INTO logs.app SETTINGS input_format_skip_unknown_fields=1, insert_deduplication_token='t1' FORMAT JSONEachRow " + body.decode())
    got = chdb.query(f"SELECT toString({time_column}) AS t, toTypeName({time_column}) AS type FROM logs.app ORDER BY t", "JSONEachRow").bytes()
    rows = [orjson.loads(line) for line in got.splitlines()]
    assert [r["t"] for r in rows] == [f"{today} 10:00:0{i}.00{i}456" for i in range(3)]
    assert rows[0]["type"] == "DateTime64(6)"
    if mapping:
        statuses = chdb.query("SELECT status FROM logs.app ORDER BY status", "CSV").bytes().split()
        assert statuses == [b"200", b"201", b"202"]
    ddl = chdb.query("SHOW CREATE TABLE logs.app", "TSVRaw").bytes().decode()
    assert "TTL" in ddl and "LowCardinality(String)" in ddl and "non_replicated_deduplication_window = 1000" in ddl
