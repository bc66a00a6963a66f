"""Several endpoints behind one HTTP sink (sinks/endpoints.py): spreading, failover on
refused connections / 5xx / timeouts, no failover for refused data, probing back, the
possible-duplicate count, metrics, /api/stats and `logpipe top`. Against small aiohttp
stores on 127.0.0.1 whose health the test switches."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import web

from logpipe.batch import Batch
from logpipe.buffer.memory import MemoryBuffer
from logpipe.config import ConfigError, loads
from logpipe.deliver import DeadLetters, Deliverer
from logpipe.metrics import Metrics
from logpipe.sinks import build
from logpipe.sinks.base import SendError
from tests.helpers import await_until, run_async, serve_http


class FakeStore:
    """A VictoriaLogs-shaped endpoint: ``mode`` is "ok", "503", "400" or "slow" (stores the
    batch, then answers after ``slow_s``: the client times out first). GET /health follows
    ``mode``. ``stop()`` closes the port (connection refused), ``start()`` reopens it."""

    active = 0  # requests being handled by any FakeStore right now
    most_active = 0

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.slow_s = 2.0
        self.lines: list[dict] = []
        self.posts = 0
        self.port = 0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def insert(self, request: web.Request) -> web.Response:
        FakeStore.active += 1
        FakeStore.most_active = max(FakeStore.most_active, FakeStore.active)
        try:
            body = await request.read()
            self.posts += 1
            if self.mode in ("503", "400"):
                return web.Response(status=int(self.mode), text="no")
            self.lines += [orjson.loads(line) for line in body.splitlines() if line]
            if self.mode == "slow":
                await asyncio.sleep(self.slow_s)  # the slow endpoint the test is about, not a synchronization
            return web.Response(status=204)
        finally:
            FakeStore.active -= 1

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.mode == "ok" else 503, text="OK")

    async def start(self) -> FakeStore:
        self.runner, url = await serve_http(("POST", "/insert/jsonline", self.insert), ("GET", "/health", self.health),
                                            port=self.port)
        self.port = int(url.rpartition(":")[2])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def messages(self) -> list[str]:
        return [line["_msg"] for line in self.lines]


def vl_config(urls: list[str], extra: str = ""):
    endpoints = ", ".join(f'"{u}"' for u in urls)
    text = (f'[sinks.vl]\ntype = "victorialogs"\nendpoints = [{endpoints}]\ncompression = "none"\n'
            f"retry_initial_ms = 20\nretry_max_ms = 200\nrequest_timeout_s = 1\n{extra}")
    return loads(text).sinks["vl"]


def batch(name: str, count: int) -> Batch:
    records = [orjson.dumps({"_msg": f"{name}-{i}", "_time": "2024-05-01T10:00:00Z"}) for i in range(count)]
    return Batch(name, records, sum(map(len, records)) + count, time.monotonic())


def states(sink) -> dict[str, dict]:
    return {s["endpoint"]: s for pool in sink.endpoint_pools() for s in pool.snapshot()}


def test_batches_are_spread_over_healthy_endpoints_one_endpoint_at_a_time(tmp_path):
    async def scenario():
        a, b = await FakeStore().start(), await FakeStore().start()
        FakeStore.most_active = 0
        config = vl_config([a.url, b.url], "batch = { max_events = 10, max_age_ms = 20 }\nconcurrency = 2\n")
        sink = build("vl", config, str(tmp_path))
        buffer = MemoryBuffer("vl", 1 << 20)
        metrics = Metrics()
        deliverer = Deliverer(sink, buffer, config.batch, retry_initial_s=0.02, retry_max_s=0.2,
                              dead_letters=DeadLetters(str(tmp_path), "vl"), metrics=metrics, concurrency=2)
        records = [orjson.dumps({"_msg": f"line-{i}"}) for i in range(200)]
        buffer.push(records, sum(map(len, records)) + len(records))
        buffer.close()
        await asyncio.wait_for(deliverer.run(), 20)
        await sink.close()
        await a.stop()
        await b.stop()
        return a, b, metrics, states(sink)

    a, b, metrics, seen = run_async(scenario)
    stored = a.messages() + b.messages()
    assert sorted(stored) == sorted(f"line-{i}" for i in range(200))  # each line once
    assert a.posts == b.posts == 10
    assert FakeStore.most_active <= 2  # concurrency 2: two batches, never one batch twice
    assert seen[a.url]["requests"] == 10 and seen[a.url]["up"] and seen[b.url]["errors"] == 0
    text = metrics.render()
    assert f'logpipe_sink_endpoint_requests_total{{sink="vl",endpoint="{a.url}"}} 10' in text
    assert f'logpipe_sink_endpoint_up{{sink="vl",endpoint="{b.url}"}} 1' in text


@pytest.mark.parametrize("failure", ["503", "refused"])
def test_a_failing_endpoint_is_skipped_then_probed_back(failure, tmp_path):
    async def scenario():
        a, b = await FakeStore("503" if failure == "503" else "ok").start(), await FakeStore().start()
        if failure == "refused":
            await a.stop()
        sink = build("vl", vl_config([a.url, b.url]), str(tmp_path))
        for i in range(4):
            await sink.send(batch(f"b{i}", 5))  # the first goes to a, fails over to b
        down = states(sink)[a.url]
        # a recovers: the background probe (GET /health) brings it back without a batch
        if failure == "refused":
            await a.start()
        a.mode = "ok"
        await await_until(lambda: states(sink)[a.url]["up"], 5, "the probe to bring a back")
        for i in range(4, 8):
            await sink.send(batch(f"b{i}", 5))
        up = states(sink)[a.url]
        await sink.close()
        await a.stop()
        await b.stop()
        return a, b, down, up

    a, b, down, up = run_async(scenario)
    assert not down["up"] and down["errors"] == 1 and down["possible_duplicate_events"] == 0
    assert "last_error" in down and "down_for_s" in down
    assert sorted(a.messages() + b.messages()) == sorted(f"b{i}-{j}" for i in range(8) for j in range(5))
    assert len(b.messages()) == 4 * 5 + 2 * 5 and len(a.messages()) == 2 * 5  # rejoined: back in the rotation
    assert up["up"] and up["errors"] == 1


def test_refused_data_is_not_sent_to_another_endpoint(tmp_path):
    async def scenario():
        a, b = await FakeStore("400").start(), await FakeStore().start()
        sink = build("vl", vl_config([a.url, b.url]), str(tmp_path))
        with pytest.raises(SendError) as caught:
            await sink.send(batch("bad", 3))
        seen = states(sink)
        await sink.close()
        await a.stop()
        await b.stop()
        return a, b, caught.value, seen

    a, b, error, seen = run_async(scenario)
    assert not error.retryable and error.status == 400
    assert a.posts == 1 and b.posts == 0
    assert seen[a.url]["up"] and seen[a.url]["errors"] == 1  # it answered: not an endpoint failure


def test_a_timeout_fails_over_and_counts_the_events_as_possible_duplicates(tmp_path):
    async def scenario():
        a, b = await FakeStore("slow").start(), await FakeStore().start()
        sink = build("vl", vl_config([a.url, b.url]), str(tmp_path))
        await sink.send(batch("t", 7))  # a stores it but answers after the 1 s timeout
        seen = states(sink)
        await await_until(lambda: len(a.lines) == 7, 5, "the slow endpoint to store")
        await sink.close()
        await a.stop()
        await b.stop()
        return a, b, seen

    a, b, seen = run_async(scenario)
    assert a.messages() == b.messages() == [f"t-{i}" for i in range(7)]  # stored twice: the ambiguity
    assert seen[a.url]["possible_duplicate_events"] == 7 and not seen[a.url]["up"]
    assert seen[b.url]["possible_duplicate_events"] == 0


def test_when_every_endpoint_fails_the_error_is_retryable_and_names_them_all(tmp_path):
    async def scenario():
        a, b = await FakeStore("503").start(), await FakeStore("503").start()
        sink = build("vl", vl_config([a.url, b.url]), str(tmp_path))
        errors = []
        for _ in range(2):  # the second send has no healthy endpoint: it tries both again
            with pytest.raises(SendError) as caught:
                await sink.send(batch("x", 2))
            errors.append(caught.value)
        await sink.close()
        await a.stop()
        await b.stop()
        return a, b, errors

    a, b, errors = run_async(scenario)
    assert all(e.retryable and "all 2 endpoints failed" in str(e) for e in errors)
    assert a.posts == b.posts == 2


def test_one_url_keeps_its_old_errors(tmp_path):
    async def scenario():
        a = await FakeStore("503").start()
        sink = build("vl", loads(f'[sinks.vl]\ntype = "victorialogs"\nurl = "{a.url}"\n').sinks["vl"], str(tmp_path))
        with pytest.raises(SendError) as caught:
            await sink.send(batch("x", 2))
        await sink.close()
        await a.stop()
        return caught.value

    error = run_async(scenario)
    assert error.retryable and error.status == 503 and "all" not in str(error)


@pytest.mark.parametrize(
    "keys,expected",
    [
        pytest.param('type = "victorialogs"\nendpoints = ["http://a:9428", "a:9428"]',
                     'sinks.s.endpoints.1: expected "http(s)://HOST[:PORT]", got \'a:9428\'', id="not-a-url"),
        pytest.param('type = "victorialogs"\nendpoints = ["http://a:9428", "http://a:9428/"]',
                     "sinks.s.endpoints.1: 'http://a:9428/' is already endpoints.0", id="duplicate"),
        pytest.param('type = "victorialogs"\nurl = "http://a:9428"\nendpoints = ["http://b:9428"]',
                     "sinks.s.endpoints: give either url", id="url-and-endpoints"),
        pytest.param('type = "elasticsearch"\nendpoints = ["http://u:p@es:9200"]',
                     "sinks.s.endpoints.0: expected", id="credentials-in-url"),
        pytest.param('type = "clickhouse"\nendpoints = ["http://a:70000"]', "sinks.s.endpoints.0: Port out of range",
                     id="bad-port"),
        pytest.param('type = "clickhouse"\nshards = [["http://a:8123"], []]\nshard_by = "service"',
                     "sinks.s.shards.1: a shard needs at least one replica URL", id="empty-shard"),
        pytest.param('type = "clickhouse"\nshards = [["http://a:8123"], ["http://b:8123", "ftp://c"]]\nshard_by = "service"',
                     "sinks.s.shards.1.1: expected", id="bad-replica"),
        pytest.param('type = "clickhouse"\nshards = [["http://a:8123"], ["http://b:8123"]]',
                     "sinks.s.shard_by: required with more than one shard", id="no-shard-by"),
        pytest.param('type = "clickhouse"\nshards = [["http://a:8123"]]\nurl = "http://b:8123"',
                     "sinks.s.shards: give either shards or url/endpoints", id="shards-and-url"),
        pytest.param('type = "clickhouse"\nshard_by = "service"', "sinks.s.shard_by: only with shards", id="shard-by-alone"),
        pytest.param('type = "clickhouse"\nendpoints = ["http://a:8123", "http://b:8123"]\ncreate_table = true',
                     "sinks.s.create_table: not with several endpoints", id="create-table-on-cluster"),
        pytest.param('type = "clickhouse"\nsettings = { async_insert_deduplicate = 0 }',
                     "sinks.s.settings.async_insert_deduplicate: logpipe needs 1", id="unpinned-setting"),
        pytest.param('type = "clickhouse"\nsettings = { insert_deduplication_token = "x" }',
                     "sinks.s.settings.insert_deduplication_token: not a setting logpipe can pass through", id="own-setting"),
    ],
)
def test_bad_endpoint_configs_name_the_key(keys, expected):
    with pytest.raises(ConfigError) as caught:
        loads(f"[sinks.s]\n{keys}\n")
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_stats_and_top_show_each_endpoint(tmp_path):
    from logpipe.daemon.assemble import assemble
    from logpipe.daemon.views import stats
    from logpipe.top import render

    config = loads(f'[daemon]\ndata_dir = "{tmp_path}"\n[sinks.vl]\ntype = "victorialogs"\n'
                   'endpoints = ["http://127.0.0.1:1", "http://user:pw@127.0.0.1:2/"]\n'
                   '[sinks.f]\ntype = "file"\n')
    graph = assemble(config, offline=True)
    current = stats(graph, time.time())
    endpoints = current["sinks"]["vl"]["endpoints"]
    assert [e["endpoint"] for e in endpoints] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]  # no credentials
    assert all(e["up"] and e["requests"] == 0 for e in endpoints)
    assert current["sinks"]["f"]["endpoints"] == []
    assert "logpipe_sink_endpoint_up" in current["metrics"]
    endpoints[1].update(up=False, requests=4, errors=4, possible_duplicate_events=1200)
    frame = render("http://x", None, current, 1.0)
    rows = [line for line in frame.splitlines() if "127.0.0.1:" in line]
    assert rows[0].split() == ["http://127.0.0.1:1", "up", "-", "0", "0", "0"]
    assert rows[1].split() == ["http://127.0.0.1:2", "DOWN", "-", "4", "4", "1.2k"]
    assert all(len(line) <= 80 for line in frame.splitlines())
