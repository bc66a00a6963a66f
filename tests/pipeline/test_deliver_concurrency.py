"""Delivery with ``concurrency`` > 1: several batches in flight to one sink, every record
delivered exactly once and acknowledged, with the memory and the disk buffer."""

import asyncio

import orjson
import pytest

from logpipe.buffer.disk import DiskBuffer
from logpipe.buffer.memory import MemoryBuffer
from logpipe.config import Batch as BatchConfig
from logpipe.config import Buffer as BufferConfig
from logpipe.deliver import DeadLetters, Deliverer
from logpipe.metrics import Metrics
from logpipe.sinks.base import Sink

from ..helpers import await_until, run_async


class GatedSink(Sink):
    """Holds every send until released, so concurrent sends are observable."""

    def __init__(self):
        super().__init__("gated")
        self.stored = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = asyncio.Event()

    async def send(self, batch):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.release.wait()
            self.stored += batch.records
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_concurrent_batches_deliver_every_record_once(tmp_path, kind):
    metrics = Metrics()
    sink = GatedSink()
    records = [orjson.dumps({"_msg": f"m{i}", "i": i}) for i in range(1000)]

    async def scenario():
        if kind == "memory":
            buffer = MemoryBuffer("gated", 10**9)
        else:
            buffer = DiskBuffer("gated", str(tmp_path / "buf"), BufferConfig(type="disk"), metrics)
        deliverer = Deliverer(
            sink, buffer, BatchConfig(max_events=100, max_age_ms=1), retry_initial_s=0.001, retry_max_s=0.01,
            dead_letters=DeadLetters(str(tmp_path), "gated"), metrics=metrics, concurrency=3,
        )
        task = asyncio.create_task(deliverer.run())
        for start in range(0, 1000, 50):
            chunk = records[start:start + 50]
            buffer.push(chunk, sum(map(len, chunk)) + len(chunk))
        await await_until(lambda: sink.in_flight == 3, 10, "three batches in flight")
        sink.release.set()
        await await_until(lambda: len(sink.stored) == 1000, 10, "delivery")
        buffer.close()
        await asyncio.wait_for(task, 10)
        assert buffer.events == 0
        await buffer.aclose()

    run_async(scenario)
    assert sink.max_in_flight == 3
    assert sorted(sink.stored, key=lambda r: orjson.loads(r)["i"]) == records
