"""Shared helpers for the ClickHouse sink tests: a sink config, and running the real
Deliverer + MemoryBuffer over it until everything pushed is acknowledged."""

from __future__ import annotations

import asyncio
import glob
import os

import orjson

from logpipe.buffer.memory import MemoryBuffer
from logpipe.config import ClickHouseSink, loads
from logpipe.deliver import DeadLetters, Deliverer
from logpipe.metrics import Metrics
from logpipe.sinks.clickhouse import ClickHouse


def sink_config(url: str, extra: str = "", **keys: str) -> ClickHouseSink:
    lines = [f"{k} = {v}" for k, v in keys.items()]
    text = f'[sinks.ch]\ntype = "clickhouse"\nurl = "{url}"\nretry_initial_ms = 20\nretry_max_ms = 300\nrequest_timeout_s = 5\n'
    text += "\n".join(lines) + "\n" + extra
    return loads(text).sinks["ch"]  # type: ignore[return-value]


def event(i: int, service: str | None = "api", **fields) -> bytes:
    e = {"_time": f"2024-05-01T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}456Z", "_msg": f"line {i}", "level": "info"}
    if service is not None:
        e["service"] = service
    e.update(fields)
    return orjson.dumps(e)


class Delivery:
    """A Deliverer feeding a ClickHouse sink from a MemoryBuffer, in a running loop."""

    def __init__(self, config: ClickHouseSink, data_dir: str, max_events: int | None = None) -> None:
        self.sink = ClickHouse("ch", config)
        self.buffer = MemoryBuffer("ch", 64 * 1024 * 1024)
        batch = config.batch
        if max_events is not None:
            batch = type(batch)(max_events=max_events, max_bytes=batch.max_bytes, max_age_ms=20)
        else:
            batch = type(batch)(max_events=batch.max_events, max_bytes=batch.max_bytes, max_age_ms=20)
        self.metrics = Metrics()
        self.dead_dir = os.path.join(data_dir, "dead-letter", "ch")
        self.deliverer = Deliverer(
            self.sink,
            self.buffer,
            batch,
            retry_initial_s=config.retry_initial_ms / 1000,
            retry_max_s=config.retry_max_ms / 1000,
            dead_letters=DeadLetters(data_dir, "ch"),
            metrics=self.metrics,
        )
        self.task: asyncio.Task | None = None

    def push(self, records: list[bytes]) -> None:
        self.buffer.push(records, sum(map(len, records)) + len(records))

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.deliverer.run())

    async def finish(self, timeout: float = 20) -> None:
        """Close the buffer and wait until every record is confirmed or dead-lettered."""
        self.buffer.close()
        assert self.task is not None
        try:
            await asyncio.wait_for(self.task, timeout)
        finally:
            await self.sink.close()
        assert self.buffer.events == 0

    def dead_letters(self) -> list[dict]:
        out = []
        for path in sorted(glob.glob(os.path.join(self.dead_dir, "*.ndjson"))):
            with open(path, "rb") as f:
                out += [orjson.loads(line) for line in f if line.strip()]
        return out
