"""VictoriaLogs sink request shape, against an aiohttp test server (the real server is in
test_e2e_victorialogs.py)."""

import pytest
from aiohttp import web

from logpipe.batch import Batch
from logpipe.config import VictoriaLogsSink
from logpipe.sinks.base import SendError
from logpipe.sinks.victorialogs import VictoriaLogs

from ..helpers import run_async, serve_http


async def serve(handler):
    return await serve_http(("POST", "/insert/jsonline", handler))


def test_compression_auto_is_none_for_loopback_and_decided_per_endpoint_otherwise():
    def gzip(**kw):
        return VictoriaLogsSink(**kw).uses_gzip()

    assert gzip(url="http://127.0.0.1:9428") is False
    assert gzip(url="http://localhost:9428") is False
    assert gzip(endpoints=["http://[::1]:9428", "http://127.0.0.2:9428"]) is False
    assert gzip(url="http://victorialogs:9428") is None  # a name: where it resolves decides (test_nearness.py)
    assert gzip(endpoints=["http://127.0.0.1:9428", "http://10.0.0.5:9428"]) is None
    assert gzip(url="http://10.0.0.5:9428", compression="none") is False
    assert gzip(url="http://127.0.0.1:9428", compression="gzip") is True
    assert VictoriaLogsSink().concurrency == 2
    assert VictoriaLogs("vl", VictoriaLogsSink(url="http://victorialogs:9428"))._http._by_route


def test_request_shape():
    seen = {}

    async def handler(request):
        seen["query"] = dict(request.query)
        seen["headers"] = dict(request.headers)
        # aiohttp's server undoes Content-Encoding itself: this is the decompressed body.
        seen["body"] = await request.read()
        return web.Response(status=200)

    async def scenario():
        runner, url = await serve(handler)
        sink = VictoriaLogs("vl", VictoriaLogsSink(url=url, stream_fields=["service", "container_id"], account_id=3, project_id=4,
                                                compression="gzip"))
        await sink.send(Batch("b1", [b'{"_msg":"a"}', b'{"_msg":"b"}'], 26, 0.0))
        await sink.close()
        await runner.cleanup()

    run_async(scenario)
    assert seen["query"] == {"_msg_field": "_msg", "_time_field": "_time", "_stream_fields": "service,container_id"}
    assert seen["headers"]["Content-Type"] == "application/stream+json"
    assert seen["headers"]["Content-Encoding"] == "gzip"
    assert (seen["headers"]["AccountID"], seen["headers"]["ProjectID"]) == ("3", "4")
    assert seen["body"] == b'{"_msg":"a"}\n{"_msg":"b"}\n'


@pytest.mark.parametrize("status,retryable", [(429, True), (500, True), (503, True), (400, False), (413, False)])
def test_error_classification(status, retryable):
    async def handler(request):
        return web.Response(status=status, text="nope")

    async def scenario():
        runner, url = await serve(handler)
        sink = VictoriaLogs("vl", VictoriaLogsSink(url=url, compression="none"))
        try:
            with pytest.raises(SendError) as info:
                await sink.send(Batch("b1", [b"{}"], 3, 0.0))
            return info.value
        finally:
            await sink.close()
            await runner.cleanup()

    error = run_async(scenario)
    assert error.retryable is retryable and error.status == status and error.response == "nope"


def test_connection_refused_is_retryable():
    async def scenario():
        sink = VictoriaLogs("vl", VictoriaLogsSink(url="http://127.0.0.1:1"))
        try:
            with pytest.raises(SendError) as info:
                await sink.send(Batch("b1", [b"{}"], 3, 0.0))
            return info.value
        finally:
            await sink.close()

    assert run_async(scenario).retryable is True


def test_uncompressed_batch_is_sent_in_its_pieces_with_one_content_length():
    seen = {}

    async def handler(request):
        seen["headers"] = dict(request.headers)
        seen["body"] = await request.read()
        return web.Response(status=204)

    pieces = [b'{"_msg":"a"}\n{"_msg":"b"}\n', b'{"_msg":"c"}\n', b'{"_msg":"' + b"d" * 100_000 + b'"}\n']

    async def scenario():
        runner, url = await serve(handler)
        sink = VictoriaLogs("vl", VictoriaLogsSink(url=url, compression="none"))
        await sink.send(Batch("b1", None, sum(map(len, pieces)), 0.0, lines=pieces, count=4))
        await sink.close()
        await runner.cleanup()

    run_async(scenario)
    assert seen["headers"]["Content-Type"] == "application/stream+json"
    assert "Content-Encoding" not in seen["headers"] and "Transfer-Encoding" not in seen["headers"]
    assert int(seen["headers"]["Content-Length"]) == sum(map(len, pieces))
    assert seen["body"] == b"".join(pieces)
