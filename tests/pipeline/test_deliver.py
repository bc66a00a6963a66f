"""Delivery: retries until confirmed, splits to isolate rejected records, dead-letters them."""

import glob
import os
import pathlib

import orjson
import pytest

from logpipe.buffer.memory import MemoryBuffer
from logpipe.config import Batch as BatchConfig
from logpipe.deliver import DeadLetters, Deliverer
from logpipe.metrics import Metrics
from logpipe.sinks.base import SendError, Sink

from ..helpers import await_until, run_async


class ScriptedSink(Sink):
    """Fails the first ``outages`` sends (retryable); rejects any batch holding a poisoned record."""

    def __init__(self, outages=0):
        super().__init__("scripted")
        self.outages = outages
        self.stored = []
        self.attempts = 0

    async def send(self, batch):
        self.attempts += 1
        if self.outages:
            self.outages -= 1
            raise SendError("connection refused", retryable=True)
        if any(b"poison" in r for r in batch.records):
            raise SendError("bad row", retryable=False, status=400, response="cannot parse row")
        self.stored += batch.records


def make(sink, tmp_path, max_events=100):
    metrics = Metrics()
    buffer = MemoryBuffer("scripted", 10**9)
    deliverer = Deliverer(
        sink, buffer, BatchConfig(max_events=max_events, max_age_ms=1),
        retry_initial_s=0.001, retry_max_s=0.01, dead_letters=DeadLetters(str(tmp_path), "scripted"), metrics=metrics,
    )
    return buffer, deliverer, metrics


def events(n, poison=()):
    return [orjson.dumps({"_msg": "poison" if i in poison else f"m{i}", "i": i}) for i in range(n)]


def test_retryable_failures_are_retried_until_delivered(tmp_path):
    sink = ScriptedSink(outages=5)
    buffer, deliverer, metrics = make(sink, tmp_path)

    async def scenario():
        task = __import__("asyncio").create_task(deliverer.run())
        recs = events(20)
        buffer.push(recs, sum(map(len, recs)) + 20)
        await await_until(lambda: len(sink.stored) == 20, 10, "delivery")
        buffer.close()
        await task

    run_async(scenario)
    assert sink.stored == events(20)
    assert metrics.get("logpipe_send_errors_total").value("scripted", "true") == 5
    assert metrics.get("logpipe_sent_events_total").value("scripted") == 20
    assert buffer.events == 0


@pytest.mark.parametrize("pushed_as", ["records", "ndjson"])
def test_one_bad_record_is_isolated_and_dead_lettered(tmp_path, pushed_as):
    sink = ScriptedSink()
    buffer, deliverer, metrics = make(sink, tmp_path)

    async def scenario():
        import asyncio

        task = asyncio.create_task(deliverer.run())
        recs = events(16, poison={11})
        if pushed_as == "ndjson":  # the pipeline's form: one blob, split only to isolate
            buffer.push_lines(b"".join(r + b"\n" for r in recs), 16)
        else:
            buffer.push(recs, sum(map(len, recs)) + 16)
        buffer.close()
        await task

    run_async(scenario)
    good = [r for r in events(16, poison={11}) if b"poison" not in r]
    assert sorted(sink.stored) == sorted(good)
    assert metrics.get("logpipe_dead_letter_events_total").value("scripted") == 1
    files = glob.glob(os.path.join(tmp_path, "dead-letter", "scripted", "*.ndjson"))
    lines = [orjson.loads(line) for f in files for line in pathlib.Path(f).read_bytes().splitlines()]
    assert len(lines) == 1
    assert lines[0]["event"] == {"_msg": "poison", "i": 11}
    assert lines[0]["sink"] == "scripted" and "bad row" in lines[0]["error"] and lines[0]["response"] == "cannot parse row"


def test_abort_leaves_batch_unacknowledged(tmp_path):
    sink = ScriptedSink(outages=10**9)
    buffer, deliverer, _ = make(sink, tmp_path)

    async def scenario():
        import asyncio

        task = asyncio.create_task(deliverer.run())
        buffer.push(events(3), 100)
        await await_until(lambda: sink.attempts >= 3, 10, "retries")
        deliverer.abort()
        await asyncio.wait_for(task, 5)

    run_async(scenario)
    assert sink.stored == [] and buffer.events == 3


def test_deliverer_sets_the_lead_and_reports_the_sink_failing_and_recovering(tmp_path):
    sink = ScriptedSink(outages=3)
    buffer, deliverer, _ = make(sink, tmp_path)
    assert buffer._lead == deliverer.batch.max_bytes * 3  # one send loop + 2 batches ahead
    states = []
    real = buffer.set_sink_failing
    buffer.set_sink_failing = lambda failing: (states.append(failing), real(failing))

    async def scenario():
        import asyncio

        task = asyncio.create_task(deliverer.run())
        recs = events(5)
        buffer.push(recs, sum(map(len, recs)) + 5)
        await await_until(lambda: len(sink.stored) == 5, 10, "delivery")
        buffer.close()
        await task

    run_async(scenario)
    assert states == [True, False]  # one edge each way for the whole outage
