"""The ClickHouse sink's request shapes, value conversion and failure handling, against a
small aiohttp server on 127.0.0.1 that speaks enough of ClickHouse's HTTP interface."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from logpipe.batch import Batch
from logpipe.sinks.base import SendError
from logpipe.sinks.clickhouse import ClickHouse, classify, converter, parse_timestamp
from tests.clickhouse_helpers import Delivery, event, sink_config
from tests.helpers import run_async, serve_http

TYPES = {"ts": "DateTime64(3)", "d": "DateTime", "level": "LowCardinality(String)", "status": "UInt16", "msg": "String", "service": "String"}


class FakeClickHouse:
    """Answers version/settings/DESCRIBE; records INSERTs; ``fail[table]`` is a list of
    (status, text) answers used (and consumed) before inserts into it succeed."""

    def __init__(self, version: str = "24.3.1.1", types: dict[str, str] = TYPES, settings: tuple[str, ...] | None = None) -> None:
        self.version = version
        self.types = types
        modern = not version.startswith("18.")
        # Settings the server knows (answers to the system.settings query).
        self.settings = settings if settings is not None else (
            ("insert_deduplication_token", "input_format_defaults_for_omitted_fields") if modern else ())
        self.inserts: list[dict] = []
        self.fail: dict[str, list[tuple[int, str]]] = {}
        self.bad_messages: set[str] = set()  # rows with these `msg` are refused, naming the row
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has undone Content-Encoding: gzip already
        query = request.query.get("query") or body.decode()
        if query.startswith("SELECT version()"):
            return web.Response(text=self.version + "\n")
        if query.startswith("SELECT name FROM system.settings"):
            return web.Response(text="".join(f"{name}\n" for name in self.settings if f"'{name}'" in query))
        if query.startswith("DESCRIBE"):
            return web.Response(text="".join(orjson.dumps({"name": n, "type": t}).decode() + "\n" for n, t in self.types.items()))
        if query.startswith("INSERT INTO"):
            table = query.split("`.`")[1].split("`")[0]
            answers = self.fail.get(table)
            if answers:
                status, text = answers.pop(0)
                return web.Response(status=status, text=text)
            rows = [orjson.loads(line) for line in body.splitlines() if line]
            for number, row in enumerate(rows, 1):
                if row.get("msg") in self.bad_messages:
                    return web.Response(status=500, text=f"Code: 27, e.displayText() = DB::Exception: Cannot parse input: (at row {number})\n")
            self.inserts.append({"table": table, "params": dict(request.query), "headers": dict(request.headers), "rows": rows, "url": str(request.url)})
            return web.Response(text="")
        return web.Response(status=500, text=f"Code: 62, e.displayText() = unexpected query {query[:80]}")

    async def __aenter__(self) -> FakeClickHouse:
        self.runner, self.url = await serve_http(("POST", "/", self.handle))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


COLUMNS = '{ ts = "_time", d = "_time", level = "level", status = "status", msg = "_msg", service = "service" }'


def test_insert_request_has_credentials_in_headers_gzip_body_and_dedup_token():
    async def scenario():
        async with FakeClickHouse() as fake:
            config = sink_config(fake.url, table='"logs_{service}"', default_table='"other"', columns=COLUMNS, user='"u"', password='"pw!"')
            sink = ClickHouse("ch", config)
            await sink.send(Batch("b-7", [event(1, "api", status="404"), event(2, None)], 0, 0.0))
            await sink.close()
            return fake

    fake = run_async(scenario)
    by_table = {i["table"]: i for i in fake.inserts}
    assert set(by_table) == {"logs_api", "other"}
    api = by_table["logs_api"]
    assert api["params"]["query"] == "INSERT INTO `logs`.`logs_api` FORMAT JSONEachRow"
    assert api["params"]["insert_deduplication_token"].startswith("b-7:logs_api:")
    assert "input_format_skip_unknown_fields" not in api["params"]
    assert api["headers"]["X-ClickHouse-User"] == "u" and api["headers"]["X-ClickHouse-Key"] == "pw!"
    assert api["headers"]["Content-Encoding"] == "gzip"
    assert "pw!" not in api["url"] and "u" not in api["params"].values()
    assert api["rows"] == [
        {"ts": 1714557601.001, "d": 1714557601, "level": "info", "status": 404, "msg": "line 1", "service": "api"}
    ]
    assert by_table["other"]["rows"][0]["msg"] == "line 2" and "service" not in by_table["other"]["rows"][0]


def test_without_columns_every_field_is_sent_with_skip_unknown_fields_and_no_token_on_old_servers():
    async def scenario():
        async with FakeClickHouse(version="18.16.1") as fake:
            sink = ClickHouse("ch", sink_config(fake.url, table='"app"', compression='"none"'))
            await sink.send(Batch("b-1", [event(3, "api", extra={"a": 1})], 0, 0.0))
            await sink.close()
            return fake

    insert = run_async(scenario).inserts[0]
    assert insert["params"]["input_format_skip_unknown_fields"] == "1"
    assert "insert_deduplication_token" not in insert["params"]
    assert "Content-Encoding" not in insert["headers"]
    assert insert["rows"][0]["extra"] == {"a": 1} and insert["rows"][0]["_msg"] == "line 3"


def test_a_table_that_fails_retryably_does_not_make_the_other_table_insert_twice(tmp_path):
    async def scenario():
        async with FakeClickHouse() as fake:
            fake.fail["logs_worker"] = [(500, "Code: 252, e.displayText() = DB::Exception: Too many parts (300)")] * 2
            config = sink_config(fake.url, table='"logs_{service}"', default_table='"other"', columns=COLUMNS, min_insert_interval_ms="0")
            d = Delivery(config, str(tmp_path))
            d.push([event(i, "api" if i % 2 else "worker") for i in range(10)])
            d.start()
            await d.finish()
            return fake

    fake = run_async(scenario)
    assert [i["table"] for i in fake.inserts].count("logs_api") == 1
    assert [i["table"] for i in fake.inserts].count("logs_worker") == 1
    assert sorted(r["msg"] for i in fake.inserts for r in i["rows"]) == sorted(f"line {i}" for i in range(10))


def test_a_data_error_naming_a_row_inserts_the_rest_at_once_and_dead_letters_that_row(tmp_path):
    async def scenario():
        async with FakeClickHouse() as fake:
            fake.bad_messages = {"line 2"}
            config = sink_config(fake.url, table='"app"', columns=COLUMNS, min_insert_interval_ms="0")
            d = Delivery(config, str(tmp_path))
            d.push([event(i) for i in range(6)])
            d.start()
            await d.finish()
            return fake, d

    fake, d = run_async(scenario)
    # The rest in one insert (one part, not a bisection's worth); "line 2" then fails alone.
    assert [[r["msg"] for r in i["rows"]] for i in fake.inserts] == [["line 0", "line 1", "line 3", "line 4", "line 5"]]
    dead = d.dead_letters()
    assert [x["event"]["_msg"] for x in dead] == ["line 2"] and "Code: 27" in dead[0]["response"]


def test_missing_table_is_retryable_and_logged_once_per_streak(tmp_path, capsys):
    async def scenario():
        async with FakeClickHouse() as fake:
            fake.fail["app"] = [(404, "Code: 60, e.displayText() = DB::Exception: Table logs.app doesn't exist.")] * 4
            config = sink_config(fake.url, table='"app"', columns=COLUMNS, min_insert_interval_ms="0")
            d = Delivery(config, str(tmp_path))
            d.push([event(i) for i in range(3)])
            d.start()
            await d.finish()
            return fake, d

    fake, d = run_async(scenario)
    out = capsys.readouterr().out
    assert out.count("clickhouse_table_missing") == 1 and out.count("clickhouse_table_found") == 1
    assert len(fake.inserts) == 1 and len(fake.inserts[0]["rows"]) == 3 and d.dead_letters() == []


@pytest.mark.parametrize(
    ("status", "text", "retryable"),
    [
        pytest.param(None, None, True, id="connection-error"),
        pytest.param(503, "", True, id="503"),
        pytest.param(500, "Code: 252, e.displayText() = Too many parts", True, id="too-many-parts"),
        pytest.param(500, "Code: 241. DB::Exception: Memory limit exceeded", True, id="memory"),
        pytest.param(404, "Code: 60. DB::Exception: Table doesn't exist", True, id="missing-table"),
        pytest.param(404, "Code: 81, Database nodb doesn't exist", True, id="missing-database"),
        pytest.param(500, "Code: 193, Wrong password for user", True, id="wrong-password"),
        pytest.param(500, "Code: 117, Unknown field found while parsing JSONEachRow", False, id="incorrect-data"),
        pytest.param(500, "Code: 53, Type mismatch", False, id="type-mismatch"),
        pytest.param(500, "Code: 27, Cannot parse input", False, id="cannot-parse"),
        pytest.param(500, "Code: 26, Cannot parse JSON string", False, id="cannot-parse-quoted"),
        pytest.param(400, "Code: 6. DB::Exception: Cannot parse string", False, id="modern-400"),
        pytest.param(400, "Code: 999. something new", False, id="unknown-code-400"),
        pytest.param(500, "Code: 999. something new", True, id="unknown-code-500"),
        pytest.param(413, "Request Entity Too Large", False, id="proxy-413"),
        pytest.param(401, "Unauthorized", True, id="proxy-401"),
    ],
)
def test_error_classification(status, text, retryable):
    assert classify(status, text) is retryable


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2024-05-01T10:00:01.5Z", (1714557601, 500_000_000), id="rfc3339-utc"),
        pytest.param("2024-05-01T12:00:01+02:00", (1714557601, 0), id="offset"),
        pytest.param("2024-05-01 10:00:01", (1714557601, 0), id="space-no-zone"),
        pytest.param(1714557601, (1714557601, 0), id="unix-seconds"),
        pytest.param(1714557601250, (1714557601, 250_000_000), id="unix-millis"),
        pytest.param("1714557601", (1714557601, 0), id="digits"),
        pytest.param("2024-02-30T00:00:00Z", None, id="no-such-day"),
        pytest.param("yesterday", None, id="text"),
        pytest.param(True, None, id="bool"),
    ],
)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("column_type", "value", "expected"),
    [
        pytest.param("UInt16", "200", 200, id="uint-from-text"),
        pytest.param("UInt16", 70000, "omit", id="uint-out-of-range"),
        pytest.param("UInt16", "abc", "omit", id="uint-from-words"),
        pytest.param("Int32", 2.0, 2, id="int-from-integral-float"),
        pytest.param("Int32", 2.5, "omit", id="int-from-fraction"),
        pytest.param("Nullable(Float64)", "1.5", 1.5, id="float-from-text"),
        pytest.param("String", 42, "42", id="string-from-number"),
        pytest.param("LowCardinality(String)", {"a": 1}, '{"a":1}', id="string-from-object"),
        pytest.param("DateTime", "2024-05-01T10:00:01.9Z", 1714557601, id="datetime-whole-seconds"),
        pytest.param("DateTime('UTC')", "2024-05-01T10:00:01Z", 1714557601, id="datetime-with-zone"),
        pytest.param("DateTime64(6)", "2024-05-01T10:00:01.123456789Z", b"1714557601.123456", id="datetime64-exact-digits"),
        pytest.param("Date", "2024-05-01T23:59:59Z", "2024-05-01", id="date"),
        pytest.param("Array(String)", ["a"], ["a"], id="other-passes-through"),
    ],
)
def test_column_value_conversion(column_type, value, expected):
    convert, _, _ = converter(column_type)
    got = convert(value) if convert else value
    if expected == "omit":
        assert got is not None and not isinstance(got, (int, float, str))
    elif isinstance(expected, bytes):
        assert orjson.dumps({"v": got}) == b'{"v":' + expected + b"}"
    else:
        assert got == expected


def test_a_configured_column_the_table_lacks_is_retried_not_dead_lettered():
    async def scenario():
        async with FakeClickHouse() as fake:
            config = sink_config(fake.url, table='"app"', columns='{ nope = "_msg" }')
            sink = ClickHouse("ch", config)
            with pytest.raises(SendError) as caught:
                await sink.send(Batch("b", [event(1)], 0, 0.0))
            await sink.close()
            return caught.value

    error = run_async(scenario)
    assert error.retryable and "has no column(s) nope" in str(error)


def test_clickhouse_schema_command_prints_modern_and_old_forms(capsys):
    from logpipe.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["clickhouse-schema", "-c", "config/clickhouse.toml"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.count("CREATE TABLE `logs`.`logs_other`") == 2
    assert "ORDER BY (`service`, `level`, `hostname`, `ts`)" in out
    assert "`ts` DateTime64(6) CODEC(Delta, ZSTD(1))" in out and "`ts` DateTime,\n" in out
    assert "multiIf(`level` = 'debug', 3," in out
