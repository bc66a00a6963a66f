"""The disk buffer's state: what every part of it (recovery, reader, writer) reads and keeps
exact, the metrics it counts in, and the sizes the pipeline sees. Format and rules: disk.py."""

from __future__ import annotations

import asyncio
import collections
import os
import time

import structlog

from ..config import Buffer as BufferConfig
from ..metrics import Metrics
from .base import Buffer
from .segment import LEDGER, Frame, InFlight, Position, Segment, segment_name
from .syncer import Syncer

# Small segments let a healthy sink's data stay off the disk: a segment whose events were
# all acknowledged before its fsync fell due is deleted unsynced (syncer.py), and with one
# interval of a busy buffer spanning several segments most of them are. A larger active
# file is still being written when it falls due, and its fsync writes what the sink took
# long ago (1,000,000 lines into a healthy sink, bench_e2e with this constant set to 64 MiB:
# 29 MB to disk; at 8 MiB: 4 MB).
SEGMENT_BYTES_MAX = 8 * 1024 * 1024

__all__ = ["DiskState"]


class DiskState(Buffer):
    durable = True  # every push is in the kernel's hands before push returns

    def __init__(self, name: str, directory: str, config: BufferConfig, metrics: Metrics,
                 segment_bytes: int | None) -> None:
        super().__init__(config.max_bytes)
        self.name = name
        self.directory = directory
        self.block = config.when_full == "block"
        self.segment_bytes = segment_bytes or max(4096, min(SEGMENT_BYTES_MAX, config.max_bytes // 8))
        # The spill only exists while writes fail in block mode; it counts in ``bytes``, so
        # the lane holds sources back long before this bound, which is a last resort.
        self.spill_max_bytes = max(config.max_bytes, 1024 * 1024)
        self.log = structlog.get_logger().bind(component=f"buffer.{name}")

        dropped = metrics.counter("logpipe_dropped_events_total", "Events dropped, by stage and reason",
                                  ("stage", "reason"))
        self._dropped_disk = dropped.labels("buffering", "disk_error")
        self._dropped_corrupt = dropped.labels("buffering", "corrupt")
        self._corrupt = metrics.counter(
            "logpipe_buffer_corrupt_records_total", "Damaged disk-buffer records skipped (torn tails included)",
            ("sink",),
        ).labels(name)
        self._replayed = metrics.counter(
            "logpipe_buffer_replayed_events_total", "Unacknowledged events found in the disk buffer at start", ("sink",)
        ).labels(name)
        self._write_errors = metrics.counter(
            "logpipe_buffer_write_errors_total", "Failed disk-buffer writes (disk full, read-only, I/O error)",
            ("sink",),
        ).labels(name)
        metrics.gauge("logpipe_buffer_disk_bytes", "Bytes of the disk buffer's files", ("sink",)).set_function(
            self.disk_bytes, name
        )

        self._segments: collections.deque[Segment] = collections.deque()
        self._by_id: dict[int, Segment] = {}
        self._wfd: int | None = None  # the last segment's, while it is being written
        self._last_id = 0
        # Totals: every unacknowledged event (on disk, read ahead, in flight, spilled).
        self._events = 0
        self._bytes = 0
        # Written to disk and not yet handed out in a batch (read-ahead included).
        self._unread_events = 0
        self._unread_bytes = 0
        self._unread_oldest: float | None = None  # wall time of the oldest of those
        # Reader: frames decoded ahead, then the next undecoded position.
        self._ahead: collections.deque[Frame] = collections.deque()
        self._rseg = 0
        self._roff = 0
        self._rskip = 0
        self._rfd: tuple[int, int] | None = None  # (segment id, fd)
        self._ack: Position = (0, 0, 0)
        self._inflight: dict[int, InFlight] = {}
        self._next_token = 0
        # Spill: chunks whose write failed (block mode), rewritten in order.
        self._spill: collections.deque[tuple[list[bytes], int, float]] = collections.deque()
        self._spill_bytes = 0
        self._failing: OSError | None = None
        self._retry_handle: asyncio.TimerHandle | None = None

        self._wakeup = asyncio.Event()
        self._want_events = 1
        self._want_bytes = 1
        self._closed = False
        os.makedirs(directory, exist_ok=True)
        self._syncer = Syncer(config.fsync, config.fsync_interval_ms / 1000, directory, self._sync_failed)

    # --- sizes -----------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def events(self) -> int:
        return self._events

    @property
    def is_full(self) -> bool:
        # A spill means the disk refuses writes: hold sources back until it takes them.
        return self._bytes >= self.max_bytes or bool(self._spill)

    def _holding(self) -> bool:
        # A spill means the disk refuses writes: hold sources back until it takes them.
        return bool(self._spill)

    def oldest_age_s(self) -> float:
        oldest = None
        for entry in self._inflight.values():
            oldest = entry.written_at
            break
        if oldest is None:
            oldest = self._unread_oldest
        if oldest is None and self._spill:
            oldest = self._spill[0][2]
        return max(0.0, time.time() - oldest) if oldest is not None else 0.0

    def disk_bytes(self) -> int:
        total = 0
        for name in (LEDGER, *(segment_name(s.id) for s in self._segments)):
            try:
                total += os.stat(os.path.join(self.directory, name)).st_size
            except OSError:
                pass
        return total

    def _sync_failed(self, error: OSError) -> None:  # called from the syncer thread
        self._write_errors.inc()
        self.log.error("buffer_fsync_failed", stage="buffering", error=str(error))

    def _segment_path(self, seg_id: int) -> str:
        return os.path.join(self.directory, segment_name(seg_id))

    def _read_position(self) -> Position:
        if self._ahead:
            frame = self._ahead[0]
            return (frame.seg, frame.offset, frame.skip)
        return (self._rseg, self._roff, self._rskip)
