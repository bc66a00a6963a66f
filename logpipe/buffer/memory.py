"""In-memory buffer: a deque of pushed chunks, bounded in bytes by the sink lane.

Lead: reading runs at most a few batches ahead of a healthy sink (base.py, "Lead").

Nothing here survives the process. On a graceful stop the delivery loop drains it into
the sink for up to ``daemon.shutdown_timeout_s``; what the sink still refuses then is
counted as dropped with reason ``shutdown`` and logged (use the disk buffer to keep it).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import itertools
import time
from typing import Any

from ..batch import Batch
from .base import Buffer, fit_lines, fit_records

__all__ = ["MemoryBuffer"]


class MemoryBuffer(Buffer):
    def __init__(self, name: str, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.name = name
        # Each chunk: [records, nbytes, arrival time, count], where records is a list or
        # an NDJSON blob (push_lines); the head chunk is sliced in place when a batch takes
        # only part of it (a blob at a record's newline).
        self._chunks: collections.deque[list[Any]] = collections.deque()
        self._waiting_events = 0
        self._waiting_bytes = 0
        self._inflight_events = 0
        self._inflight_bytes = 0
        self._inflight_oldest: dict[int, float] = {}
        self._seq = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._want_events = 1
        self._want_bytes = 1
        self._closed = False
        # Delivery positions (Buffer docstring): batches leave in push order, each ends at
        # a position; confirmed_events moves over the acknowledged prefix.
        self._taken_events = 0
        self._batch_ends: dict[int, list[Any]] = {}  # seq -> [end position, acknowledged]

    @property
    def bytes(self) -> int:
        return self._waiting_bytes + self._inflight_bytes

    @property
    def events(self) -> int:
        return self._waiting_events + self._inflight_events

    def oldest_age_s(self) -> float:
        times = list(self._inflight_oldest.values())
        if self._chunks:
            times.append(self._chunks[0][2])
        return time.monotonic() - min(times) if times else 0.0

    def push(self, records: list[builtins.bytes], nbytes: int) -> None:
        if records:
            self._append([records, nbytes, time.monotonic(), len(records)])

    def push_lines(self, lines: builtins.bytes, count: int) -> None:
        if count:
            self._append([lines, len(lines), time.monotonic(), count])

    def _append(self, chunk: list[Any]) -> None:
        was_empty = not self._chunks
        self.pushed_events += chunk[3]
        self._chunks.append(chunk)
        self._waiting_events += chunk[3]
        self._waiting_bytes += chunk[1]
        # Wake the delivery loop only on the edges it cares about, not on every chunk.
        if was_empty or self._waiting_events >= self._want_events or self._waiting_bytes >= self._want_bytes:
            self._wakeup.set()
        self._check_pressure()

    async def next_batch(self, max_events: int, max_bytes: int, max_age_s: float) -> Batch | None:
        self._want_events, self._want_bytes = max_events, max_bytes
        while True:
            if self._chunks:
                if self._closed or self._waiting_events >= max_events or self._waiting_bytes >= max_bytes:
                    return self._take(max_events, max_bytes)
                wait = self._chunks[0][2] + max_age_s - time.monotonic()
                if wait <= 0:
                    return self._take(max_events, max_bytes)
            elif self._closed:
                return None
            else:
                wait = None
            await self._sleep_until_woken(wait)

    def _take(self, max_events: int, max_bytes: int) -> Batch:
        parts: list[Any] = []  # record lists and NDJSON blobs, in order
        count = 0
        nbytes = 0
        chunks = self._chunks
        created = chunks[0][2]
        while chunks and count < max_events:
            chunk = chunks[0]
            payload, chunk_bytes, _, chunk_count = chunk
            room = min(max_events - count, chunk_count)
            if chunk_count <= room and nbytes + chunk_bytes <= max_bytes:
                parts.append(payload)
                count += chunk_count
                nbytes += chunk_bytes
                chunks.popleft()
                continue
            # Take part of the head chunk: as many records as fit both limits (a first
            # record larger than max_bytes still goes, alone, or it would never leave).
            fit = fit_records if type(payload) is list else fit_lines
            taken, size = fit(payload, room, max_bytes - nbytes, count == 0)
            if taken == 0:
                break
            if type(payload) is list:
                parts.append(payload[:taken])
                chunk[0] = payload[taken:]
            else:
                parts.append(payload[:size])
                chunk[0] = payload[size:]
            count += taken
            nbytes += size
            chunk[1] = chunk_bytes - size
            chunk[3] = chunk_count - taken
            break
        self._waiting_events -= count
        self._waiting_bytes -= nbytes
        self._inflight_events += count
        self._inflight_bytes += nbytes
        seq = next(self._seq)
        self._inflight_oldest[seq] = created
        self._taken_events += count
        self._batch_ends[seq] = [self._taken_events, False]
        name = f"{self.name}-{seq}"
        if all(type(part) is list for part in parts):
            return Batch(name, [record for part in parts for record in part], nbytes, created, token=seq)
        # NDJSON when any part is: the blobs go on whole, the rare record list is joined.
        lines = [part if type(part) is bytes else b"\n".join([*part, b""]) for part in parts]
        return Batch(name, None, nbytes, created, token=seq, lines=lines, count=count)

    def ack(self, batch: Batch) -> None:
        token = batch.token
        if not isinstance(token, int) or self._inflight_oldest.pop(token, None) is None:
            return
        self._inflight_events -= len(batch)
        self._inflight_bytes -= batch.nbytes
        self._batch_ends[token][1] = True
        ends = self._batch_ends
        confirmed = self.confirmed_events
        while ends:
            seq, (end, acknowledged) = next(iter(ends.items()))
            if not acknowledged:
                break
            del ends[seq]
            confirmed = end
        if confirmed != self.confirmed_events:
            self.confirmed_events = confirmed
            for listener in self.confirm_listeners:
                listener()
        self._check_pressure()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

