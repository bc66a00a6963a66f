"""Two real VictoriaLogs processes as the endpoints of one sink: 20,000 lines while one is
stopped (SIGTERM: VictoriaLogs acknowledges before it persists, so SIGKILL would lose
acknowledged lines on its side) and later restarted on its port. Every line must be
stored; lines stored twice must not exceed the sink's possible-duplicate count."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from logpipe.buffer.memory import MemoryBuffer
from logpipe.config import loads
from logpipe.deliver import DeadLetters, Deliverer
from logpipe.metrics import Metrics
from logpipe.sinks import build
from tests.helpers import VictoriaLogsServer, await_until, run_async, victorialogs_bin

pytestmark = pytest.mark.skipif(victorialogs_bin() is None, reason="set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary")

LINES = 20_000
CHUNK = 500


def test_one_of_two_victorialogs_stopped_and_restarted_loses_nothing(tmp_path, capsys):
    binary = victorialogs_bin()
    a = VictoriaLogsServer(binary, str(tmp_path / "a"))
    b = VictoriaLogsServer(binary, str(tmp_path / "b"))
    a.start()
    b.start()
    a_port = a.port
    config = loads(
        f'[sinks.vl]\ntype = "victorialogs"\nendpoints = ["{a.url}", "{b.url}"]\n'
        "batch = { max_events = 500, max_age_ms = 50 }\nconcurrency = 2\n"
        "retry_initial_ms = 50\nretry_max_ms = 500\nrequest_timeout_s = 5\n"
    ).sinks["vl"]

    async def scenario():
        sink = build("vl", config, str(tmp_path))
        buffer = MemoryBuffer("vl", 64 << 20)
        deliverer = Deliverer(sink, buffer, config.batch, retry_initial_s=0.05, retry_max_s=0.5,
                              dead_letters=DeadLetters(str(tmp_path), "vl"), metrics=Metrics(), concurrency=2)
        task = asyncio.get_running_loop().create_task(deliverer.run())
        pool = sink.endpoint_pools()[0]
        a_state = lambda: pool.snapshot()[0]  # noqa: E731 - endpoints keep their config order
        at_restart = None
        for chunk in range(LINES // CHUNK):
            records = [orjson.dumps({"_msg": f"seq={i}", "_time": "2024-05-01T10:00:00Z", "service": "ep"})
                       for i in range(chunk * CHUNK, (chunk + 1) * CHUNK)]
            buffer.push(records, sum(map(len, records)) + len(records))
            await await_until(lambda: buffer.events < 2 * CHUNK, 30, "the sink to keep up")
            await asyncio.sleep(0.1)  # pacing the load (~5,000 lines/s), not a synchronization
            if chunk == 10:
                await asyncio.to_thread(a.stop)  # SIGTERM, with batches in flight to it
            if chunk == 25:
                await asyncio.to_thread(a.start, a_port)
                await await_until(lambda: a_state()["up"], 30, "the probe to bring the restarted endpoint back")
                at_restart = a_state()["requests"]
        buffer.close()
        await asyncio.wait_for(task, 60)
        await sink.close()
        return pool.snapshot(), at_restart

    try:
        states, at_restart = run_async(scenario, timeout=180)
        stored = Counter(row["_msg"] for server in (a, b) for row in server.query("service:ep", limit=2 * LINES))
    finally:
        a.stop()
        b.stop()
    missing = {f"seq={i}" for i in range(LINES)} - set(stored)
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:5]}"
    duplicates = sum(stored.values()) - LINES
    possible = sum(s["possible_duplicate_events"] for s in states)
    with capsys.disabled():
        print(f"\n  {LINES} lines stored; duplicates found {duplicates}, reported as possible {possible}; "
              f"endpoint a: {states[0]['requests']} requests, {states[0]['errors']} errors")
    assert duplicates <= possible
    assert states[0]["errors"] >= 1  # it did go down under load
    assert states[0]["up"] and states[0]["requests"] > at_restart  # and took batches again after the restart
    assert states[1]["errors"] == 0
