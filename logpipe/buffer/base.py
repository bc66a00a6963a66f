"""The buffer contract: what sits between the pipeline and one sink's delivery loop.

A record is one encoded event (JSON bytes, no trailing newline). The pipeline pushes
chunks of records; the delivery loop takes batches and acknowledges them once the sink
has confirmed. Until acknowledged, a batch's records still count in the buffer's size.

Contract:
- ``push(records, nbytes)`` is synchronous and never blocks or drops: the caller (the
  pipeline's sink lane) applies ``when_full`` *before* pushing, using ``is_full``.
- ``push_lines(lines, count)`` is ``push`` for ``count`` records given as one NDJSON
  blob (each record followed by ``\n``), the form the pipeline encodes a chunk in. A
  buffer that keeps the blob whole (memory) hands it on whole: the sinks that send NDJSON
  (``Batch.ndjson()``) then never split and re-join the records. By default it is split.
- ``next_batch(max_events, max_bytes, max_age_s)`` waits until there are ``max_events``
  records or ``max_bytes`` bytes, or the oldest waiting record is ``max_age_s`` old, then
  returns up to those limits (a single record larger than ``max_bytes`` forms a batch of
  its own). After ``close()`` it returns what is left without waiting, then ``None``.
- ``ack(batch)`` forgets the batch for good.
- Pressure: ``on_pressure(True)`` is called when the size reaches ``max_bytes`` and
  ``on_pressure(False)`` when it falls back under the low watermark; sources pause and
  resume reading on these edges (hysteresis keeps them from flapping).
- Lead: while the sink confirms batches, reading runs at most ``lead`` bytes ahead of it
  (the delivery loop sets it to a few batches): past that, pressure is signalled as if
  full, so TCP sources pause until the sink has caught up. Reading faster than the sink
  takes buys no throughput: it fills memory (423 MB peak RSS at full speed with the 256 MiB
  memory default, every byte a queue) and takes the event loop from delivery (a disk buffer
  without a lead delivered ~15,000 lines/s while a sender pushed 170,000/s, 190,000/s once it
  stopped). While the sink fails the lead is lifted and the buffer absorbs the outage up to
  ``max_bytes``; after it, the lead returns only once the backlog has drained under it, so
  senders are not held for the whole catch-up. Drops (``is_full``) happen only at
  ``max_bytes``: a UDP source, which cannot be paused, is never dropped at the lead.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable

from ..batch import Batch, split_ndjson

__all__ = ["Buffer", "LOW_WATERMARK", "fit_records", "fit_lines"]

# Resume reading when the buffer has drained to this fraction of max_bytes.
LOW_WATERMARK = 0.8


class Buffer:
    """Base class with the pressure bookkeeping; subclasses implement storage.

    For a source that acknowledges upstream (nats): ``durable`` says that what ``push`` took
    survives a crash of logpipe (disk). A buffer that is not durable counts
    ``pushed_events`` and ``confirmed_events`` (events the sink confirmed, in push order) and
    calls each of ``confirm_listeners`` when the latter grows, so the source can wait for
    delivery instead."""

    _wakeup: asyncio.Event  # set by push/close; each subclass creates it
    durable = False
    pushed_events = 0
    confirmed_events = 0

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pressure = False
        self._lead = 0  # 0: no lead, pressure at max_bytes only
        self._lead_armed = True  # False from an outage until the backlog is under the lead
        self._sink_failing = False
        self.on_pressure: Callable[[bool], None] | None = None
        self.confirm_listeners: list[Callable[[], None]] = []

    # size, as counted against max_bytes: waiting plus unacknowledged
    @property
    def bytes(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def events(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def is_full(self) -> bool:
        return self.bytes >= self.max_bytes

    def oldest_age_s(self) -> float:
        """Age of the oldest unacknowledged record, 0 when empty."""
        return 0.0

    def _holding(self) -> bool:
        """Pressure regardless of size (the disk buffer while the disk refuses writes)."""
        return False

    def _check_pressure(self) -> None:
        size = self.bytes
        limit = self.max_bytes
        if self._lead:
            if not self._lead_armed and not self._sink_failing and size < self._lead * LOW_WATERMARK:
                self._lead_armed = True  # caught up after an outage
            if self._lead_armed:
                limit = min(limit, self._lead)
        holding = self._holding()
        if not self._pressure and (size >= limit or holding):
            self._pressure = True
            if self.on_pressure:
                self.on_pressure(True)
        elif self._pressure and size < limit * LOW_WATERMARK and not holding:
            self._pressure = False
            if self.on_pressure:
                self.on_pressure(False)

    def resize(self, max_bytes: int) -> None:
        """A new ``max_bytes`` (reload): the watermarks follow, and pressure is signalled
        again from the new limits, so a buffer that is now below them resumes its sources."""
        self.max_bytes = max_bytes
        if self._pressure and self.on_pressure:
            self.on_pressure(False)
        self._pressure = False
        self._check_pressure()

    def set_lead(self, lead_bytes: int) -> None:
        """How far reading may run ahead of a healthy sink (module docstring, "Lead")."""
        self._lead = lead_bytes
        self._check_pressure()

    def set_sink_failing(self, failing: bool) -> None:
        """The delivery loop's view of its sink: failing (retrying) or confirming batches.
        A failing sink lifts the lead until the backlog has drained under it again."""
        self._sink_failing = failing
        if failing:
            self._lead_armed = False
        self._check_pressure()

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        """``next_batch``'s wait: until a push or close sets ``_wakeup``, or ``timeout``."""
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            pass

    # ``builtins.bytes``: inside this class ``bytes`` names the property above.
    def push(self, records: list[builtins.bytes], nbytes: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def push_lines(self, lines: builtins.bytes, count: int) -> None:
        self.push(split_ndjson(lines), len(lines))

    async def next_batch(self, max_events: int, max_bytes: int, max_age_s: float) -> Batch | None:  # pragma: no cover
        raise NotImplementedError

    def ack(self, batch: Batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        """Stop waiting for more: ``next_batch`` drains what is left, then returns None."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release files and persist state. Unacknowledged data of a durable buffer stays."""


def now() -> float:
    return time.monotonic()


def fit_records(records: list[bytes], room: int, budget: int, first: bool) -> tuple[int, int]:
    """How many of ``records`` (at most ``room``) fit in ``budget`` bytes, and their size;
    the ``first`` record of a batch always fits."""
    taken = 0
    size = 0
    for record in records[:room]:
        if (taken or not first) and size + len(record) + 1 > budget:
            break
        size += len(record) + 1
        taken += 1
    return taken, size


def fit_lines(lines: bytes, room: int, budget: int, first: bool, start: int = 0) -> tuple[int, int]:
    """``fit_records`` for an NDJSON blob from offset ``start``: the size is where to cut
    it (``start + size``)."""
    taken = 0
    cut = start
    while taken < room:
        end = lines.find(b"\n", cut) + 1
        if (taken or not first) and end - start > budget:
            break
        cut = end
        taken += 1
    return taken, cut - start
