"""Delivery: buffer -> sink -> ack, one loop per sink. The only place that retries.

Rules:
- A batch is acknowledged to the buffer only after the sink confirmed it, or after every
  record it holds is either confirmed or written to the dead-letter directory.
- A retryable failure is retried with jittered exponential backoff (full jitter, capped at
  ``retry_max_ms``) for as long as it takes: accepted data is never dropped because a
  destination is down. Only shutdown ends the retrying, and then the batch stays
  unacknowledged (a disk buffer replays it on the next start).
- A non-retryable failure of a batch of several records splits it in halves and sends
  each: only records that fail alone are dead letters (spec, "Dead letters").
- Each sink's loop is its own task: a slow or dead sink never stalls another's delivery.
- ``concurrency`` > 1 runs that many send loops for one sink. Batches are taken from the
  buffer one at a time (a lock: buffers take batches serially), sent and acknowledged
  concurrently; both buffers accept acknowledgements in any order.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import orjson
import structlog

from .buffer.base import Batch, Buffer
from .config import Batch as BatchConfig
from .metrics import Metrics
from .sinks.base import SendError, Sink

__all__ = ["Deliverer", "DeadLetters"]


class DeadLetters:
    """Appends rejected records as NDJSON to ``data_dir/dead-letter/SINK/YYYY-MM-DD.ndjson``."""

    def __init__(self, data_dir: str, sink: str) -> None:
        self.directory = os.path.join(data_dir, "dead-letter", sink)
        self.sink = sink

    def write(self, records: list[bytes], error: SendError) -> None:
        os.makedirs(self.directory, exist_ok=True)
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        lines = []
        for record in records:
            try:
                event: Any = orjson.Fragment(record)
                line = orjson.dumps(
                    {"time": stamp, "sink": self.sink, "error": str(error), "response": error.response, "event": event}
                )
            except orjson.JSONEncodeError:  # pragma: no cover - records are JSON already
                line = orjson.dumps({"time": stamp, "sink": self.sink, "error": str(error), "event_text": record.decode("utf-8", "replace")})
            lines.append(line)
        path = os.path.join(self.directory, time.strftime("%Y-%m-%d", time.gmtime(now)) + ".ndjson")
        with open(path, "ab") as f:
            f.write(b"\n".join(lines) + b"\n")


class Deliverer:
    def __init__(
        self,
        sink: Sink,
        buffer: Buffer,
        batch: BatchConfig,
        *,
        retry_initial_s: float,
        retry_max_s: float,
        dead_letters: DeadLetters,
        metrics: Metrics,
        concurrency: int = 1,
    ) -> None:
        self.sink = sink
        self.concurrency = max(1, concurrency)
        self._take_lock = asyncio.Lock()
        self.buffer = buffer
        self.batch = batch
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.dead_letters = dead_letters
        self.log = structlog.get_logger().bind(component=f"sink.{sink.name}")
        name = sink.name
        self._sent_events = metrics.counter("logpipe_sent_events_total", "Events confirmed by the sink", ("sink",)).labels(name)
        self._sent_bytes = metrics.counter("logpipe_sent_bytes_total", "Encoded bytes confirmed by the sink", ("sink",)).labels(name)
        errors = metrics.counter("logpipe_send_errors_total", "Failed send attempts", ("sink", "retryable"))
        self._errors_retryable = errors.labels(name, "true")
        self._errors_final = errors.labels(name, "false")
        self._dead = metrics.counter("logpipe_dead_letter_events_total", "Events written to the dead-letter directory", ("sink",)).labels(name)
        self._latency = metrics.histogram(
            "logpipe_batch_latency_seconds", "From a batch's oldest event entering the buffer to the sink confirming it", ("sink",)
        ).labels(name)
        self._batch_events = metrics.histogram(
            "logpipe_batch_events", "Events per batch sent", ("sink",), buckets=(1, 10, 100, 1000, 10000, 100000)
        ).labels(name)
        self.failing_since: float | None = None  # monotonic time of the first failure in a row
        self.last_error: str | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Deliver until the buffer is closed and drained, or ``abort()``."""
        if self.concurrency == 1:
            await self._run_one()
        else:
            await asyncio.gather(*(self._run_one() for _ in range(self.concurrency)))

    async def _run_one(self) -> None:
        max_age_s = self.batch.max_age_ms / 1000
        while True:
            async with self._take_lock:
                batch = await self.buffer.next_batch(self.batch.max_events, self.batch.max_bytes, max_age_s)
            if batch is None:
                return
            if await self._deliver(batch):
                self.buffer.ack(batch)
                self._latency.observe(time.monotonic() - batch.created)
            else:
                return  # aborted: the batch stays unacknowledged

    def abort(self) -> None:
        """Stop retrying (shutdown deadline passed)."""
        self._stopping.set()

    async def _deliver(self, batch: Batch) -> bool:
        """True once every record is confirmed or dead-lettered; False if aborted."""
        pending = [batch]
        delay = self.retry_initial_s
        while pending:
            current = pending[-1]
            try:
                await self.sink.send(current)
            except SendError as e:
                if e.retryable:
                    self._errors_retryable.inc()
                    self._note_failure(e)
                    if await self._wait(random.uniform(0, delay)):
                        return False
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                self._errors_final.inc()
                pending.pop()
                if len(current.records) > 1:
                    left, right = current.split()
                    pending += [right, left]
                else:
                    self.dead_letters.write(current.records, e)
                    self._dead.inc(len(current.records))
                    self.log.error("dead_letter_written", stage="sending", error=str(e), directory=self.dead_letters.directory)
                continue
            except Exception as e:  # a bug in a sink must not kill delivery: retry, loudly
                self._errors_retryable.inc()
                self._note_failure(SendError(f"sink raised {type(e).__name__}: {e}", retryable=True))
                if await self._wait(random.uniform(0, delay)):
                    return False
                delay = min(delay * 2, self.retry_max_s)
                continue
            pending.pop()
            delay = self.retry_initial_s
            self._sent_events.inc(len(current.records))
            self._sent_bytes.inc(current.nbytes)
            self._batch_events.observe(len(current.records))
            if self.failing_since is not None:
                self.log.info("sink_recovered", failed_for_s=round(time.monotonic() - self.failing_since, 1))
                self.failing_since = None
                self.last_error = None
        return True

    def _note_failure(self, error: SendError) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            # Logged on the first failure of a streak only: a dead sink must not flood logs.
            self.log.warning("send_failed", stage="sending", error=str(error), retrying=True)
        self.last_error = str(error)

    async def _wait(self, seconds: float) -> bool:
        """Sleep for a backoff; True if aborted meanwhile."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return True
        except TimeoutError:
            return False
