"""The ``type = "http"`` source: POSTs of NDJSON events in their stored form, answered 200
only once every event is in the buffers. Real daemon in the test's loop, a real aiohttp
client over loopback; every refusal is checked for its status, its counter, and for
nothing of the body being stored."""

from __future__ import annotations

import asyncio
import gzip
import json
import os

import aiohttp
import pytest

from logpipe.config import ConfigError, loads
from logpipe.daemon.app import Daemon

from ..helpers import await_until, daemon_config, read_ndjson, run_async, running

TOKEN = "hop-token-1"
PATH = "/logpipe/v1/events"


def aggregator(data_dir: str, source: str = "", sink: str = "", extra: str = "") -> str:
    return daemon_config(data_dir, f"""
[sources.agents]
type = "http"
listen = "127.0.0.1:0"
token = "{TOKEN}"
{source}

[enrich]
hold_ms = 0

[sinks.out]
type = "file"
path = "out"
batch = {{ max_age_ms = 20 }}
{sink}
{extra}
""", shutdown_timeout_s=5)


def stored(data_dir, name: str = "out") -> list[dict]:
    return read_ndjson(os.path.join(str(data_dir), f"{name}.ndjson"))


def ndjson(events: list[dict]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


EVENTS = [
    {"_time": "2026-11-21T10:00:04.250000Z", "_msg": "payment retry", "hostname": "api-1", "level": "warn",
     "service": "api", "container_id": "3f2a9c1b7d4e", "status": 502, "latency_ms": 35.5, "retried": True,
     "logpipe_source": "edge", "exampleSDID@32473.eventSource": "Application"},
    {"_time": "2026-11-21T10:00:05.000001Z", "_msg": "plain", "level": "info", "service": "worker", "count": 0},
]


class Hop:
    """A started daemon with an http source, and a client session posting to it."""

    def __init__(self, daemon: Daemon, session: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.session = session
        host, port = daemon.graph.sources["agents"].addresses["listen"]
        self.url = f"http://{host}:{port}{PATH}"

    async def post(self, body: bytes, *, token: str | None = TOKEN, gzipped: bool = False, url: str | None = None,
                   headers: dict | None = None, method: str = "POST") -> tuple[int, dict, dict]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if gzipped:
            sent["Content-Encoding"] = "gzip"
        async with self.session.request(method, url or self.url, data=body, headers=sent) as resp:
            return resp.status, await resp.json(content_type=None), dict(resp.headers)

    def requests(self, status: str) -> float:
        return self.daemon.metrics.get("logpipe_http_requests_total").value("agents", status)


def run_hop(config_text: str, scenario, timeout: float = 30) -> None:
    async def main():
        async with running(loads(config_text)) as daemon:
            async with aiohttp.ClientSession() as session:
                await scenario(Hop(daemon, session))

    run_async(main, timeout=timeout)


def test_posted_events_are_stored_exactly_as_sent_with_their_types(tmp_path):
    async def scenario(hop: Hop):
        status, answer, _ = await hop.post(gzip.compress(ndjson(EVENTS)), gzipped=True)
        assert (status, answer) == (200, {"accepted": 2})
        await await_until(lambda: len(stored(tmp_path)) == 2, what="both events stored")
        received = hop.daemon.metrics.get("logpipe_received_events_total")
        assert received.value("agents", "http") == 2 and hop.requests("200") == 1

    run_hop(aggregator(str(tmp_path)), scenario)
    first, second = stored(tmp_path)
    assert first == EVENTS[0]  # numbers, booleans, labels, level, _time and the agent's source name untouched
    assert second == {**EVENTS[1], "logpipe_source": "agents"}  # named by this source only when absent


def test_an_event_without_time_gets_the_receive_time(tmp_path):
    async def scenario(hop: Hop):
        assert (await hop.post(b'{"_msg": "no clock"}\n'))[0] == 200
        await await_until(lambda: stored(tmp_path), what="stored")

    run_hop(aggregator(str(tmp_path)), scenario)
    (event,) = stored(tmp_path)
    assert event["_msg"] == "no clock" and event["_time"].endswith("Z") and len(event["_time"]) == 27


@pytest.mark.parametrize(
    "body, line, reason",
    [
        pytest.param(b'{"_msg": "a"}\n{"_msg": "b"}\n[1, 2]\n{"_msg": "d"}\n', 3, "not a JSON object", id="array"),
        pytest.param(b'{"_msg": "a"}\n\n{"_msg": "b"\n', 3, "truncated", id="cut-object-after-blank-line"),
        pytest.param(b'{"_msg": "a"}\nplain text\n', 2, "malformed", id="text"),
        pytest.param(b'"a string"\n', 1, "not a JSON object", id="string"),
        pytest.param(b'{"_msg": "\xff"}\n', 1, "UTF-8", id="invalid-utf8"),
    ],
)
def test_a_body_that_is_not_ndjson_is_400_naming_the_line_and_nothing_is_stored(tmp_path, body, line, reason):
    async def scenario(hop: Hop):
        status, answer, _ = await hop.post(body)
        assert status == 400
        assert answer["error"].startswith(f"line {line}: ") and reason in answer["error"], answer
        assert "nothing of this request was stored" in answer["error"]
        assert hop.requests("400") == 1
        assert (await hop.post(b'{"_msg": "after"}\n'))[0] == 200
        await await_until(lambda: stored(tmp_path), what="the good request stored")

    run_hop(aggregator(str(tmp_path)), scenario)
    assert [e["_msg"] for e in stored(tmp_path)] == ["after"]


def test_a_gzip_body_that_is_not_gzip_is_400(tmp_path):
    async def scenario(hop: Hop):
        status, answer, _ = await hop.post(ndjson(EVENTS), gzipped=True)
        assert status == 400 and "not valid gzip" in answer["error"]
        status, answer, _ = await hop.post(gzip.compress(ndjson(EVENTS))[:-8], gzipped=True)
        assert status == 400 and "truncated" in answer["error"]

    run_hop(aggregator(str(tmp_path)), scenario)
    assert stored(tmp_path) == []


@pytest.mark.parametrize(
    "token",
    [pytest.param(None, id="no-header"), pytest.param("wrong", id="wrong-token"), pytest.param(TOKEN + "x", id="longer")],
)
def test_a_wrong_token_is_401_and_counted(tmp_path, token):
    async def scenario(hop: Hop):
        status, answer, headers = await hop.post(ndjson(EVENTS), token=token)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in json.dumps(answer)
        assert hop.requests("401") == 1 and hop.requests("200") == 0

    run_hop(aggregator(str(tmp_path)), scenario)
    assert stored(tmp_path) == []


def test_token_from_a_file_and_a_reload_that_rotates_it(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    text = aggregator(str(tmp_path)).replace(f'token = "{TOKEN}"', f'token_file = "{token_file}"')

    async def scenario(hop: Hop):
        assert (await hop.post(b'{"_msg": "one"}\n', token="first-token"))[0] == 200
        token_file.write_text("second-token")
        # A reload of the same text re-reads the file: the old token is refused from the next request on.
        assert await hop.daemon.reload(loads(text)) == []
        assert (await hop.post(b'{"_msg": "two"}\n', token="first-token"))[0] == 401
        assert (await hop.post(b'{"_msg": "three"}\n', token="second-token"))[0] == 200
        await await_until(lambda: len(stored(tmp_path)) == 2, what="two stored")

    run_hop(text, scenario)
    assert [e["_msg"] for e in stored(tmp_path)] == ["one", "three"]


def test_a_reload_refuses_an_unreadable_token_file_and_keeps_the_old_token(tmp_path):
    async def scenario(hop: Hop):
        text = aggregator(str(tmp_path)).replace(f'token = "{TOKEN}"', f'token_file = "{tmp_path}/missing"')
        problems = await hop.daemon.reload(loads(text))
        assert problems and "sources.agents.token_file: cannot read" in problems[0]
        assert (await hop.post(b'{"_msg": "still"}\n'))[0] == 200

    run_hop(aggregator(str(tmp_path)), scenario)


def test_bodies_over_the_limit_are_413_on_the_wire_streamed_and_decompressed(tmp_path):
    limit = 16384
    big = ndjson([{"_msg": "x" * 200, "i": i} for i in range(100)])  # ~22 KB
    small = ndjson([{"_msg": "x" * 200, "i": i} for i in range(10)])  # ~2.2 KB
    bomb = gzip.compress(b'{"_msg": "' + b"a" * (8 << 20) + b'"}\n')  # 8 MiB of output from ~8 KiB

    async def streamed():
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    async def scenario(hop: Hop):
        assert len(bomb) < limit
        status, answer, _ = await hop.post(big)
        assert status == 413 and f"max_body_bytes = {limit}" in answer["error"]
        async with hop.session.post(hop.url, data=streamed(), headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 413  # chunked: no Content-Length to refuse up front
        status, answer, _ = await hop.post(bomb, gzipped=True)
        assert status == 413 and "once decompressed" in answer["error"]
        assert hop.requests("413") == 3
        assert (await hop.post(small))[0] == 200  # under the limit: fine, on the same client
        await await_until(lambda: stored(tmp_path), what="the small body stored")

    run_hop(aggregator(str(tmp_path), source=f"max_body_bytes = {limit}"), scenario)
    assert [e["i"] for e in stored(tmp_path)] == list(range(10))


def test_refusals_before_the_token_path_method_encoding_allow_list(tmp_path):
    async def scenario(hop: Hop):
        assert (await hop.post(b"{}\n", url=hop.url.replace(PATH, "/other")))[0] == 404
        status, _, headers = await hop.post(b"", method="GET")
        assert status == 405 and headers["Allow"] == "POST"
        assert (await hop.post(b"{}\n", headers={"Content-Encoding": "br"}))[0] == 415
        assert [hop.requests(s) for s in ("404", "405", "415")] == [1, 1, 1]

    run_hop(aggregator(str(tmp_path)), scenario)
    assert stored(tmp_path) == []


def test_an_address_outside_the_allow_list_is_403(tmp_path):
    async def scenario(hop: Hop):
        status, answer, _ = await hop.post(ndjson(EVENTS))
        assert status == 403 and hop.requests("403") == 1

    run_hop(aggregator(str(tmp_path), source='allow = ["10.0.0.0/8"]'), scenario)
    assert stored(tmp_path) == []


def test_a_full_buffer_is_503_with_retry_after_and_nothing_is_taken(tmp_path):
    # A sink that can never deliver (nothing listens on the discard port's neighbour: a
    # refused connection) and a buffer that one request fills.
    text = aggregator(str(tmp_path), extra="""
[sinks.stuck]
type = "logpipe"
url = "http://127.0.0.1:9"
retry_initial_ms = 5000
buffer = { max_bytes = 2000 }
""")

    async def scenario(hop: Hop):
        first = ndjson([{"_msg": "y" * 100, "i": i} for i in range(20)])  # > 2000 bytes: fills it
        assert (await hop.post(first))[0] == 200
        assert hop.daemon.pipeline.full_sinks() == ["stuck"]
        status, answer, headers = await hop.post(b'{"_msg": "refused"}\n')
        assert status == 503 and headers["Retry-After"] == "1" and "stuck" in answer["error"]
        assert hop.requests("503") == 1
        await await_until(lambda: len(stored(tmp_path)) == 20, what="the first request in the healthy sink")

    run_hop(text.replace("shutdown_timeout_s = 5", "shutdown_timeout_s = 1"), scenario)  # the stuck sink never delivers
    assert "refused" not in {e["_msg"] for e in stored(tmp_path)}


def test_an_empty_post_is_an_empty_200_for_probes(tmp_path):
    async def scenario(hop: Hop):
        status, answer, _ = await hop.post(b"")
        assert (status, answer) == (200, {"accepted": 0}) and hop.requests("200") == 1

    run_hop(aggregator(str(tmp_path)), scenario)


def test_expect_100_continue_is_answered_only_when_the_body_is_wanted(tmp_path):
    body = b'{"_msg": "after continue"}\n'

    async def request(hop: Hop, token: str) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(*hop.daemon.graph.sources["agents"].addresses["listen"])
        writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n"
                     b"Expect: 100-continue\r\n\r\n" % (PATH.encode(), token.encode(), len(body)))
        await writer.drain()
        return await reader.readuntil(b"\r\n\r\n"), reader, writer

    async def scenario(hop: Hop):
        head, reader, writer = await request(hop, TOKEN)
        assert head.startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()
        head, _, writer = await request(hop, "wrong")  # refused before the body is sent
        assert head.startswith(b"HTTP/1.1 401")
        writer.close()
        await await_until(lambda: stored(tmp_path), what="stored")

    run_hop(aggregator(str(tmp_path)), scenario)
    assert [e["_msg"] for e in stored(tmp_path)] == ["after continue"]


def test_reload_moves_the_listener_and_changes_the_path(tmp_path):
    text = aggregator(str(tmp_path))

    async def scenario(hop: Hop):
        source = hop.daemon.graph.sources["agents"]
        old_url = hop.url
        moved = text.replace(f'token = "{TOKEN}"', f'token = "{TOKEN}"\npath = "/in"').replace(
            'type = "http"\nlisten = "127.0.0.1:0"', 'type = "http"\nlisten = "127.0.0.2:0"')
        assert await hop.daemon.reload(loads(moved)) == []
        assert hop.daemon.graph.sources["agents"] is source and source.addresses["listen"][0] == "127.0.0.2"
        host, port = source.addresses["listen"]
        assert (await hop.post(b'{"_msg": "moved"}\n', url=f"http://{host}:{port}/in"))[0] == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await hop.post(b'{"_msg": "old"}\n', url=old_url)
        await await_until(lambda: stored(tmp_path), what="stored")

    run_hop(text, scenario)
    assert [e["_msg"] for e in stored(tmp_path)] == ["moved"]


def test_reload_refuses_a_tls_change(tmp_path):
    async def scenario(hop: Hop):
        text = aggregator(str(tmp_path), source='tls = { cert = "/x.pem", key = "/x.key" }')
        assert await hop.daemon.reload(loads(text)) == ["sources.agents.tls: changing it needs a restart"]

    run_hop(aggregator(str(tmp_path)), scenario)


def test_a_certificate_that_cannot_be_loaded_stops_the_start_naming_the_key(tmp_path):
    from logpipe.daemon.preflight import StartError

    config = loads(aggregator(str(tmp_path), source=f'tls = {{ cert = "{tmp_path}/none.pem", key = "{tmp_path}/none.key" }}'))

    async def main():
        daemon = Daemon(config)
        try:
            # the start's preflight names each key and path before anything binds
            with pytest.raises(StartError, match=r"^sources\.agents\.tls\.cert: cannot read .*none\.pem"):
                await daemon.start()
        finally:
            await daemon.shutdown()

    run_async(main, timeout=20)


@pytest.mark.parametrize(
    "table, expected",
    [
        pytest.param('token = "a"\ntoken_env = "B"', "sources.in.token: give at most one of token, token_file, token_env",
                     id="two-token-sources"),
        pytest.param('path = "events"', 'sources.in.path: expected "/SEGMENTS"', id="relative-path"),
        pytest.param('listen = "127.0.0.1:8686"', "sources.in.listen: 127.0.0.1:8686 (tcp) is already bound by api.listen",
                     id="on-the-api-port"),
        pytest.param("max_body_bytes = 0", "sources.in.max_body_bytes: expected int >= 1", id="zero-limit"),
        pytest.param('allow = ["nonsense"]', "sources.in.allow: not a CIDR", id="bad-cidr"),
    ],
)
def test_http_source_config_problems_name_the_key(table, expected):
    assert_problem(f'[sources.in]\ntype = "http"\n{table}\n[sinks.f]\ntype = "file"\n', expected)


def assert_problem(text: str, expected: str) -> None:
    """``text`` is refused, and one of its problems starts with ``expected``."""
    with pytest.raises(ConfigError) as caught:
        loads(text)
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems
