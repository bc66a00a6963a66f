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
- A partial failure (``PartialSendError``, per-record answers) confirms the records it
  does not name, dead-letters its rejected records at once (no splitting: the destination
  already said which ones) and retries its retryable records as a smaller batch.
- Each sink's loop is its own task: a slow or dead sink never stalls another's delivery.
- While the buffer holds more than two batches, a batch may be as large as the sink's
  ``backlog_limits`` allow (ClickHouse merges a backlog into fewer, larger inserts).
- While a sink is failing, a backoff of more than a second probes it about once a second
  (``Sink.probe()``: one cheap, bounded request). A probe that succeeds after one that failed
  means the sink came back: the batch is retried at once, not when the backoff runs out. The
  backoff itself keeps growing with every failed send, and a sink that answers probes but
  fails sends gets no early retries: only the down -> up change of the probe ends a wait.
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

from .batch import Batch
from .buffer.base import Buffer
from .config import Batch as BatchConfig
from .metrics import Metrics
from .sinks.base import PartialSendError, SendError, Sink

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


# While a sink keeps failing, one summary line this often (attempts, buffered events, error).
FAILING_SUMMARY_S = 60.0
# While a sink is failing: how often it is probed (at most, over all its send loops), and
# how long one probe may take before it counts as "not answering".
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0


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
        self._metrics = metrics
        self._bind_endpoints(sink)
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
        probes = metrics.counter("logpipe_sink_probes_total", "Probes of a failing sink, by whether it answered",
                                 ("sink", "answered"))
        self._probes_answered, self._probes_unanswered = probes.labels(name, "true"), probes.labels(name, "false")
        self._came_back = metrics.counter(
            "logpipe_sink_came_back_total", "Failing sink found answering a probe again (retried at once)", ("sink",)
        ).labels(name)
        self.failing_since: float | None = None  # monotonic time of the first failure in a row
        self._probe_failed = False  # a probe of this failing streak found the sink not answering
        self._probing = False
        self._probed_at = float("-inf")
        self.came_back_at: float | None = None  # monotonic time a probe last found the failing sink back
        self._summarized_at = 0.0
        self._attempts = 0
        self.last_error: str | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()  # ends a backoff early: abort() or a new sink
        self._sending: list[Sink] = []  # the sink of each send() running (concurrency > 1: several)
        self._retired: list[Sink] = []  # replaced sinks to close once their send returns
        buffer.set_lead(self._lead_bytes())

    def _lead_bytes(self) -> int:
        # Enough ready data for every send loop's next batch and one more, so a healthy
        # sink never waits for input because reading was paused.
        return self.batch.max_bytes * (self.concurrency + 2)

    async def run(self) -> None:
        """Deliver until the buffer is closed and drained, or ``abort()``."""
        if self.concurrency == 1:
            await self._run_one()
        else:
            await asyncio.gather(*(self._run_one() for _ in range(self.concurrency)))

    async def _run_one(self) -> None:
        while True:
            async with self._take_lock:  # self.batch is read per batch: a reload may replace it
                max_events, max_bytes = self._batch_limits()
                batch = await self.buffer.next_batch(max_events, max_bytes, self.batch.max_age_ms / 1000)
            if batch is None:
                return
            if await self._deliver(batch):
                self.buffer.ack(batch)
                self._latency.observe(time.monotonic() - batch.created)
            else:
                return  # aborted: the batch stays unacknowledged

    def _batch_limits(self) -> tuple[int, int]:
        max_events, max_bytes = self.batch.max_events, self.batch.max_bytes
        if self.buffer.events > 2 * max_events or self.buffer.bytes > 2 * max_bytes:
            return self.sink.backlog_limits(max_events, max_bytes)
        return max_events, max_bytes

    def _bind_endpoints(self, sink: Sink) -> None:
        for pool in sink.endpoint_pools():
            pool.bind_metrics(self._metrics)

    def abort(self) -> None:
        """Stop retrying (shutdown deadline passed)."""
        self._stopping.set()
        self._wake.set()

    def replace_sink(self, sink: Sink, batch: BatchConfig, retry_initial_s: float, retry_max_s: float) -> Sink | None:
        """Reload: deliver from now on through ``sink`` with these settings. The buffer and
        any batch in flight stay here, so nothing is lost: a batch being retried is retried
        on the new sink at once. Returns the old sink if it is idle (the caller closes it);
        otherwise it is closed here when its running send returns."""
        old = self.sink
        self._bind_endpoints(sink)
        self.sink, self.batch = sink, batch
        self.buffer.set_lead(self._lead_bytes())
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self._wake.set()
        if old in self._sending:
            self._retired.append(old)
            return None
        return old

    async def _deliver(self, batch: Batch) -> bool:
        """True once every record is confirmed or dead-lettered; False if aborted."""
        pending = [batch]
        delay = self.retry_initial_s
        while pending:
            current = pending[-1]
            try:
                await self._send(current)
            except PartialSendError as e:
                pending.pop()
                self._errors_final.inc()
                failed = len(e.rejected) + len(e.retryable_records)
                self._sent_events.inc(len(current) - failed)
                for record, error in e.rejected:
                    self.dead_letters.write([record], SendError(error, retryable=False, response=e.response))
                if e.rejected:
                    self._dead.inc(len(e.rejected))
                    self.log.error("dead_letter_written", stage="sending", error=str(e), events=len(e.rejected),
                                   directory=self.dead_letters.directory)
                if e.retryable_records:
                    records = e.retryable_records
                    pending.append(Batch(current.id + ".r", records, sum(map(len, records)) + len(records), current.created))
                    self._note_failure(e)
                    if await self._wait(random.uniform(0, delay)):
                        return False
                    delay = min(delay * 2, self.retry_max_s)
                continue
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
                if len(current) > 1:
                    left, right = current.split()
                    pending += [right, left]
                else:
                    self.dead_letters.write(current.records, e)
                    self._dead.inc(len(current))
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
            self._sent_events.inc(len(current))
            self._sent_bytes.inc(current.nbytes)
            self._batch_events.observe(len(current))
            self.log.debug("batch_sent", events=len(current), bytes=current.nbytes, batch=current.id)
            if self.failing_since is not None:
                now = time.monotonic()
                back = self.came_back_at
                if back is not None and back < self.failing_since:
                    back = None  # it came back in an earlier streak
                self.log.info("sink_recovered", failed_for_s=round(now - self.failing_since, 1),
                              buffered_events=self.buffer.events,
                              after_probe_s=None if back is None else round(now - back, 2))
                self.failing_since = None
                self._probe_failed = False
                self.last_error = None
                self.buffer.set_sink_failing(False)
        return True

    def _note_failure(self, error: SendError) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = self._summarized_at = now
            self._attempts = 0
            self.buffer.set_sink_failing(True)
            # The first failure of a streak, then a summary a minute: a dead sink must not
            # flood the logs, and must not go quiet either.
            self.log.warning("send_failed", stage="sending", error=str(error), retrying=True)
        elif now - self._summarized_at >= FAILING_SUMMARY_S:
            self._summarized_at = now
            self.log.warning("sink_still_failing", stage="sending", failing_for_s=round(now - self.failing_since),
                             attempts=self._attempts, buffered_events=self.buffer.events, error=str(error))
        self._attempts += 1
        self.log.debug("send_attempt_failed", error=str(error), status=error.status)
        self.last_error = str(error)

    async def _send(self, batch: Batch) -> None:
        sink = self.sink
        self._sending.append(sink)
        try:
            await sink.send(batch)
        finally:
            self._sending.remove(sink)
            if self._retired:
                await self._close_retired()

    async def _close_retired(self) -> None:
        # Only sinks no other send is still using (concurrency > 1).
        retired = [s for s in self._retired if s not in self._sending]
        self._retired = [s for s in self._retired if s in self._sending]
        for sink in retired:
            try:
                await sink.close()
            except Exception as e:  # a replaced sink failing to close must not stop delivery
                self.log.warning("sink_close_failed", stage="reloading", error=str(e))

    async def _wait(self, seconds: float) -> bool:
        """Sleep for a backoff; True if aborted meanwhile. A replaced sink ends it early, and
        so does a probe finding the sink back."""
        self._wake.clear()
        started = time.monotonic()
        deadline = started + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), min(remaining, PROBE_INTERVAL_S))
                break
            except TimeoutError:
                pass
            if deadline - time.monotonic() > 0 and await self._came_back_since(started):
                break
        return self._stopping.is_set()

    async def _came_back_since(self, started: float) -> bool:
        """Probe the sink unless one of its send loops did within the interval; True if a
        probe since ``started`` found it answering after a probe that found it down."""
        if self.came_back_at is not None and self.came_back_at > started:
            return True
        if self._probing or time.monotonic() - self._probed_at < PROBE_INTERVAL_S * 0.9:
            return False
        self._probing = True
        try:
            answers = await self._probe()
        finally:
            self._probing = False
            self._probed_at = time.monotonic()
        if answers is None:
            return False
        (self._probes_answered if answers else self._probes_unanswered).inc()
        if not answers:
            self._probe_failed = True
            return False
        if not self._probe_failed:
            return False  # it answers probes and fails sends: the backoff paces the retries
        self._probe_failed = False
        self.came_back_at = time.monotonic()
        self._came_back.inc()
        self.log.info("sink_answering", stage="sending", retrying=True,
                      failing_for_s=round(self.came_back_at - (self.failing_since or self.came_back_at), 1))
        return True

    async def _probe(self) -> bool | None:
        """One probe, bounded by PROBE_TIMEOUT_S and cut short by abort() or a new sink."""
        probe = asyncio.ensure_future(self.sink.probe())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((probe, woken), timeout=PROBE_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if not probe.done():
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            return None if self._wake.is_set() else False  # woken: no answer either way
        try:
            return probe.result()
        except Exception as e:  # a bug in a probe must not stop delivery: the backoff goes on
            self.log.debug("sink_probe_failed", error=f"{type(e).__name__}: {e}")
            return None
