"""Elasticsearch sink: the _bulk request (aiohttp test server), per-item errors through the
deliverer (rejected -> dead letters, 429 items retried, the rest confirmed once), auth, and
delivery into a real VictoriaLogs' /insert/elasticsearch/_bulk."""

from __future__ import annotations

import asyncio
import glob
import os

import orjson
import pytest
from aiohttp import web

from logpipe.batch import Batch
from logpipe.buffer.memory import MemoryBuffer
from logpipe.config import Batch as BatchConfig
from logpipe.config import ElasticsearchSink
from logpipe.deliver import DeadLetters, Deliverer
from logpipe.metrics import Metrics
from logpipe.sinks.base import PartialSendError, SendError
from logpipe.sinks.elasticsearch import Elasticsearch, IndexTemplate

from ..helpers import VictoriaLogsServer, await_until, run_async, serve_http, victorialogs_bin


def batch(events: list[dict], batch_id: str = "b") -> Batch:
    records = [orjson.dumps(e) for e in events]
    return Batch(batch_id, records, sum(map(len, records)) + len(records), 0.0)


async def serve(handler):
    return await serve_http(("POST", "/_bulk", handler), ("POST", "/es/_bulk", handler))


@pytest.mark.parametrize(
    "template,event,index",
    [
        pytest.param("logs-{service}-%Y.%m.%d", {"service": "api", "_time": "2024-02-03T23:59:59.999999Z"}, "logs-api-2024.02.03", id="field-and-day"),
        pytest.param("logs-{service}-%Y.%m.%d", {"_time": "2024-02-03T01:00:00Z"}, "logs-unknown-2024.02.03", id="missing-field"),
        pytest.param("logs-{service}", {"service": "Pay/Ments %Y"}, "logs-pay_ments_%y", id="value-sanitized-not-strftimed"),
        pytest.param("{a}-{b}-%Y", {"a": "x", "b": 1, "_time": "2023-12-31T23:00:00-02:00"}, "x-1-2024", id="offset-to-utc"),
    ],
)
def test_index_template(template, event, index):
    assert IndexTemplate(template, "unknown").render(event) == index


def test_bulk_request_shape_and_basic_auth():
    seen = {}

    async def handler(request):
        seen["headers"] = dict(request.headers)
        seen["query"] = dict(request.query)
        seen["body"] = await request.read()
        return web.json_response({"took": 1, "errors": False, "items": [{"create": {"status": 201}}] * 2})

    async def scenario():
        runner, url = await serve(handler)
        sink = Elasticsearch("es", ElasticsearchSink(url=url + "/es", user="elastic", password="s3cret",
                                                     query={"_msg_field": "_msg"}))
        await sink.send(batch([
            {"_time": "2024-02-03T04:05:06.000000Z", "_msg": "a", "service": "api"},
            {"_msg": "b"},
        ]))
        await sink.close()
        await runner.cleanup()

    run_async(scenario)
    lines = seen["body"].splitlines()
    assert [orjson.loads(x) for x in lines] == [
        {"create": {"_index": "logs-api-2024.02.03"}},
        {"@timestamp": "2024-02-03T04:05:06.000000Z", "_time": "2024-02-03T04:05:06.000000Z", "_msg": "a", "service": "api"},
        {"create": {"_index": orjson.loads(lines[2])["create"]["_index"]}},
        {"_msg": "b"},
    ]
    assert orjson.loads(lines[2])["create"]["_index"].startswith("logs-unknown-")
    assert seen["body"].endswith(b"\n")
    assert seen["headers"]["Authorization"] == "Basic ZWxhc3RpYzpzM2NyZXQ="
    assert seen["headers"]["Content-Type"] == "application/x-ndjson"
    assert seen["query"] == {"_msg_field": "_msg"}


def test_api_key_header_and_secret_kept_out_of_errors():
    seen = {}

    async def handler(request):
        seen["auth"] = request.headers.get("Authorization")
        return web.Response(status=401, text="unauthorized")

    async def scenario():
        runner, url = await serve(handler)
        sink = Elasticsearch("es", ElasticsearchSink(url=url, api_key="VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="))
        with pytest.raises(SendError) as info:
            await sink.send(batch([{"_msg": "a"}]))
        await sink.close()
        await runner.cleanup()
        return info.value

    error = run_async(scenario)
    assert seen["auth"] == "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
    assert not error.retryable and "VnVhQ2Zh" not in str(error) and "ApiKey" not in str(error)


def bulk_answer(statuses: list[int]) -> dict:
    items = []
    for status in statuses:
        result = {"_index": "logs", "status": status}
        if status >= 300:
            result["error"] = {"type": "mapper_parsing_exception" if status == 400 else "es_rejected_execution_exception",
                               "reason": f"status {status}"}
        items.append({"create": result})
    return {"took": 3, "errors": any(s >= 300 for s in statuses), "items": items}


def test_per_item_errors_are_reported_as_partial():
    async def handler(request):
        return web.json_response(bulk_answer([201, 400, 429, 201]))

    async def scenario():
        runner, url = await serve(handler)
        sink = Elasticsearch("es", ElasticsearchSink(url=url, compression="none"))
        with pytest.raises(PartialSendError) as info:
            await sink.send(batch([{"_msg": f"m{i}"} for i in range(4)]))
        await sink.close()
        await runner.cleanup()
        return info.value

    error = run_async(scenario)
    assert [(orjson.loads(r)["_msg"], why) for r, why in error.rejected] == [("m1", "HTTP 400: mapper_parsing_exception: status 400")]
    assert [orjson.loads(r)["_msg"] for r in error.retryable_records] == ["m2"]


def test_deliverer_dead_letters_rejected_items_retries_429_items_and_acks_the_rest(tmp_path):
    """Bulk 1: m0 ok, m1 rejected (400), m2 throttled (429), m3 ok. Bulk 2 (the retry) holds m2
    alone and succeeds. Each document is stored once; m1 is a dead letter with its error."""
    stored: list[str] = []
    requests: list[list[str]] = []

    async def handler(request):
        lines = (await request.read()).splitlines()
        docs = [orjson.loads(x)["_msg"] for x in lines[1::2]]
        requests.append(docs)
        statuses = [400 if d == "m1" else 429 if d == "m2" and len(requests) == 1 else 201 for d in docs]
        stored.extend(d for d, s in zip(docs, statuses, strict=True) if s == 201)
        return web.json_response(bulk_answer(statuses))

    async def scenario():
        runner, url = await serve(handler)
        metrics = Metrics()
        sink = Elasticsearch("es", ElasticsearchSink(url=url))
        buffer = MemoryBuffer("es", 10**8)
        deliverer = Deliverer(sink, buffer, BatchConfig(max_events=100, max_age_ms=1), retry_initial_s=0.001,
                              retry_max_s=0.01, dead_letters=DeadLetters(str(tmp_path), "es"), metrics=metrics)
        task = asyncio.create_task(deliverer.run())
        records = [orjson.dumps({"_msg": f"m{i}"}) for i in range(4)]
        buffer.push(records, sum(map(len, records)) + len(records))
        await await_until(lambda: buffer.events == 0, what="batch acknowledged")
        buffer.close()
        await task
        await sink.close()
        await runner.cleanup()
        return metrics

    metrics = run_async(scenario)
    assert requests == [["m0", "m1", "m2", "m3"], ["m2"]]
    assert sorted(stored) == ["m0", "m2", "m3"]
    (path,) = glob.glob(os.path.join(tmp_path, "dead-letter", "es", "*.ndjson"))
    with open(path, "rb") as f:
        dead = [orjson.loads(x) for x in f.read().splitlines()]
    assert [(d["event"], d["error"]) for d in dead] == [({"_msg": "m1"}, "HTTP 400: mapper_parsing_exception: status 400")]
    assert metrics.get("logpipe_dead_letter_events_total").value("es") == 1
    assert metrics.get("logpipe_sent_events_total").value("es") == 3


@pytest.mark.parametrize("body", ["not json", '{"errors": true, "items": []}'])
def test_unreadable_bulk_answer_is_retryable(body):
    async def handler(request):
        return web.Response(status=200, text=body)

    async def scenario():
        runner, url = await serve(handler)
        sink = Elasticsearch("es", ElasticsearchSink(url=url))
        with pytest.raises(SendError) as info:
            await sink.send(batch([{"_msg": "a"}]))
        await sink.close()
        await runner.cleanup()
        return info.value

    error = run_async(scenario)
    assert error.retryable and not isinstance(error, PartialSendError)


@pytest.mark.victorialogs
@pytest.mark.skipif(victorialogs_bin() is None, reason="set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary")
def test_real_victorialogs_bulk_endpoint(tmp_path):
    server = VictoriaLogsServer(victorialogs_bin(), str(tmp_path / "vl"))
    server.start()
    try:
        config = ElasticsearchSink(url=server.url + "/insert/elasticsearch",
                                   query={"_msg_field": "_msg", "_time_field": "_time", "_stream_fields": "service"})
        events = [{"_time": f"2024-03-04T05:06:{i % 60:02d}.{i:06d}Z", "_msg": f"bulk line {i}", "service": "api",
                   "i": str(i)} for i in range(2000)]

        async def scenario():
            sink = Elasticsearch("es", config)
            for start in range(0, len(events), 500):
                await sink.send(batch(events[start : start + 500]))
            await sink.close()

        run_async(scenario)
        rows = server.query("service:api")
        assert len(rows) == 2000
        by_i = {r["i"]: r for r in rows}
        assert len(by_i) == 2000
        assert by_i["7"]["_msg"] == "bulk line 7"
        assert by_i["7"]["_time"] == "2024-03-04T05:06:07.000007Z"
    finally:
        server.stop()
