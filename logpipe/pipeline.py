"""The synchronous middle of the daemon: parsed events in, encoded records into each sink's
buffer. Called once per chunk (a TCP read, a burst of datagrams), never per line, and never
awaits: sources call it straight from their protocol callbacks.

Each chunk of events is encoded once (msgspec's NDJSON ``encode_lines``, ~0.2 us per event
less than one call per event) and the same blob goes to every sink's buffer.
With a ``route`` transform, each event has a target list (parallel to the events, never a
field of the event) and each lane gets only the records routed to it, still encoded once.
Not orjson here: its result keeps the ~8 KiB working allocation behind it once the record
outlives the call (glibc fragments the shrunk remainder), so a buffer of records cost ~8 KiB
each (1.6 GB peak RSS for 200,000 buffered lines) and the page faults made encoding 15 us
per event. msgspec writes the same bytes into a right-sized object (0.6 us).

Flow control: a sink lane whose buffer is full applies its ``when_full``:
- ``block``: the chunk is still accepted (it was already read), and every TCP source is
  paused until the buffer drains below its low watermark; senders feel the backpressure
  through TCP. UDP cannot be held back, so a UDP chunk that meets a full buffer is dropped
  and counted (reason ``buffer_full``).
- ``drop_newest``: the chunk is dropped and counted (reason ``buffer_full``).

Late arrivals (``enrich.hold_ms`` > 0, see hold.py): the events of a chunk that found no
metadata wait in the hold and re-enter here (``release``) as a chunk of their own, enriched
again, with the flow-control mode (``holdable``) of the source they came from. Held events
and their neighbours from the same TCP connection may therefore reach the sinks in a
different order; stores order by ``_time``.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import structlog

from .buffer.base import Buffer
from .enrich import Enricher
from .metrics import Metrics
from .transforms import Transforms

__all__ = ["Pipeline", "SinkLane"]


class SinkLane:
    """One sink's entrance. ``on_full(name, full, routine)`` is called on its buffer's
    pressure edges when ``when_full = "block"`` (the sources' flow control pauses reading)."""

    def __init__(self, name: str, buffer: Buffer, when_full: str, on_full: Callable[[str, bool, bool], None] | None,
                 metrics: Metrics) -> None:
        self.name = name
        self.buffer = buffer
        self.block = when_full == "block"
        self.log = structlog.get_logger().bind(component=f"sink.{name}")
        dropped = metrics.counter("logpipe_dropped_events_total", "Events dropped, by stage and reason", ("stage", "reason"))
        self._dropped_full = dropped.labels("buffering", "buffer_full")
        self._sink_dropped_full = metrics.counter(
            "logpipe_sink_dropped_events_total", "Events one sink dropped, by reason", ("sink", "reason")
        ).labels(name, "buffer_full")
        metrics.gauge("logpipe_buffer_events", "Events in the sink's buffer, unacknowledged included", ("sink",)).set_function(
            lambda: buffer.events, name
        )
        metrics.gauge("logpipe_buffer_bytes", "Bytes in the sink's buffer, unacknowledged included", ("sink",)).set_function(
            lambda: buffer.bytes, name
        )
        metrics.gauge("logpipe_buffer_oldest_age_seconds", "Age of the oldest unacknowledged event", ("sink",)).set_function(
            buffer.oldest_age_s, name
        )
        if self.block and on_full is not None:
            buffer.on_pressure = lambda full: on_full(name, full, not buffer.is_full)

    def offer(self, records: list[bytes], nbytes: int, holdable: bool) -> None:
        if self._accepts(len(records), holdable):
            self.buffer.push(records, nbytes)

    def offer_lines(self, lines: bytes, count: int, holdable: bool) -> None:
        """``offer`` for records encoded as one NDJSON blob."""
        if self._accepts(count, holdable):
            self.buffer.push_lines(lines, count)

    def _accepts(self, count: int, holdable: bool) -> bool:
        if self.buffer.is_full and not (self.block and holdable):
            self._dropped_full.inc(count)
            self._sink_dropped_full.inc(count)
            # Per chunk, and the log's repeat limiter keeps one line per 10 s with a count.
            self.log.warning("events_dropped", stage="buffering", sink=self.name, reason="buffer_full", events=count,
                             when_full="block" if self.block else "drop_newest")
            return False
        return True


class Pipeline:
    def __init__(self, enricher: Enricher, transforms: Transforms, lanes: list[SinkLane], metrics: Metrics) -> None:
        self.enricher = enricher
        self.transforms = transforms
        self.lanes = lanes
        # Set while someone is tapping (api.TapHub): called with the events after the
        # transforms and the names of the sinks they go to.
        self.tap: Callable[[list[dict], list[str]], None] | None = None
        encoder = msgspec.json.Encoder()
        self._dumps = encoder.encode
        self._encode_lines = encoder.encode_lines
        self.hold = None  # a hold.Hold when enrich.hold_ms > 0 (set by the daemon)

    def full_sinks(self) -> list[str]:
        """Sinks whose buffer is full now. A source that answers its senders (http, nats)
        asks before ``ingest`` and refuses the chunk (429/503, no ack) instead of pushing."""
        return [lane.name for lane in self.lanes if lane.buffer.is_full]

    def ingest(self, events: list[dict], holdable: bool, may_hold: bool = True) -> None:
        """Enrich, transform, encode once, and hand the records to every sink lane.
        ``holdable`` says whether the source can be paused (TCP) or not (UDP).
        ``may_hold=False`` skips the enrichment hold: when this returns, every event is in
        its sinks' buffers (a disk buffer has written it to the kernel), which is what a
        source that acknowledges to its sender (http, nats) needs before it answers."""
        if not events:
            return
        hold = self.hold if may_hold else None
        if hold is None:
            self.enricher.enrich(events)
        else:
            missed = self.enricher.enrich(events, count_misses=False)
            if missed:
                passing = hold.add(missed, holdable)
                held = len(missed) - len(passing)
                if held:
                    self.enricher.held.inc(held)
                    held_ids = {id(e) for e in missed} - {id(e) for e in passing}
                    events = [e for e in events if id(e) not in held_ids]
                if passing:
                    self.enricher.count_misses(len(passing))
                if not events:
                    return
        self._forward(events, holdable)

    def release(self, events: list[dict], holdable: bool) -> None:
        """Events coming out of the hold: enrich again (counted hit or miss), forward."""
        self.enricher.enrich(events)
        self._forward(events, holdable)

    def _forward(self, events: list[dict], holdable: bool) -> None:
        if self.transforms.routed:
            self._ingest_routed(events, holdable)
            return
        if self.transforms:
            events = self.transforms.apply(events)
            if not events:
                return
        if self.tap is not None:
            self.tap(events, [lane.name for lane in self.lanes])
        lines = self._encode_lines(events)
        for lane in self.lanes:
            lane.offer_lines(lines, len(events), holdable)

    def _ingest_routed(self, events: list[dict], holdable: bool) -> None:
        events, targets = self.transforms.apply_routed(events)
        if not events:
            return
        if self.tap is not None:  # one call per distinct target, only while tapping
            groups: dict = {}
            for event, target in zip(events, targets, strict=True):
                groups.setdefault(target, []).append(event)
            for target, group in groups.items():
                self.tap(group, [lane.name for lane in self.lanes] if target is None else list(target))
        dumps = self._dumps
        records = [dumps(e) for e in events]
        for lane in self.lanes:
            name = lane.name
            mine = [r for r, t in zip(records, targets, strict=True) if t is None or name in t]
            if mine:
                lane.offer(mine, sum(map(len, mine)) + len(mine), holdable)
