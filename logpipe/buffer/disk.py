"""Disk buffer: one sink's queue of encoded events, kept in append-only files so that
sink outages, restarts and SIGKILL lose nothing that was pushed.

Design
======

Invariants
- Every ``push`` is one ``writev(2)`` of one whole record (the chunk of events pushed) to
  the active segment, done before ``push`` returns. From then on the events survive the
  death of this process; the ``fsync`` setting only decides what survives the death of
  the *machine* (below).
- ``push`` never raises and never blocks. When a write fails (disk full, read-only, I/O
  error), ``when_full`` decides: ``block`` keeps the chunk in a bounded memory spill,
  reports the buffer full (TCP sources pause) and rewrites the spill in order when a
  retry succeeds (every second, and whenever an ack frees space); ``drop_newest`` drops
  the chunk and counts it in ``logpipe_dropped_events_total{stage="buffering",
  reason="disk_error"}``. Either way the daemon keeps running and recovers by itself.
- Events are handed out in push order; a batch is acknowledged only by ``ack`` (after the
  sink confirmed). Unacknowledged events are replayed on the next start: delivery is at
  least once. Duplicates are possible only for batches in flight at a crash (or up to a
  segment's worth when the ledger is lost), never losses.
- Reading: while the reader is right behind the writer, a pushed chunk is also kept in
  memory and handed out from there (as the NDJSON blob it was pushed as), at most twice
  the batch size asked for (1 MiB at least); past that, and after a restart, the reader
  reads the files. Memory is only a shortcut for reading: what is acknowledged, fsynced
  and replayed is decided by the files alone, exactly as without it.
- A segment file is deleted only when every event in it is acknowledged; when the whole
  buffer is acknowledged the active segment goes too, so an idle buffer holds no data.
- ``bytes``/``events`` are the real unacknowledged contents (spill included), counted
  from the segments themselves at start and kept exact after; damaged records are not
  counted. ``bytes`` uses the memory buffer's unit (``sum(len(event) + 1)``), so
  ``max_bytes`` means the same for both; the files additionally hold 32 header bytes per
  record and, at most, the acknowledged head of the oldest segment.

On-disk format (``data_dir/buffer/SINK/``)
- ``SEGMENT.seg``: records back to back (codec and layout: ``record.py``: 32-byte header
  with its own CRC-32, payload of events with a CRC-32). ``SEGMENT`` is a 20-digit id
  taken from the wall clock in microseconds and kept strictly increasing, so ids never
  repeat across restarts even if the ledger is lost. A new segment is started when the
  active one reaches ``segment_bytes`` (max_bytes / 8, between 4 KiB and 8 MiB) and at
  every start (old segments are never appended to).
- ``ledger.json``: the acknowledged position (and the read position, informational),
  one JSON line plus a line with its CRC-32, replaced atomically (temp file + rename)
  after every ack. A position is ``(segment, offset of a record, events of that record
  already done)``.
- Batch ids are ``SEGMENT:OFFSET:SKIP:COUNT`` of their first event: derived from the
  position, so a batch replayed after a restart carries the same id when it has the same
  records, and a sink can make retries idempotent.

Recovery (at construction; the buffer always starts)
- A missing or damaged ledger (unreadable, not our format, bad CRC) is rebuilt from the
  segments: everything still on disk is replayed.
- A ledger pointing at a segment that no longer exists means "from the next one".
- Each segment is checked record by record from the ack position. A record whose payload
  CRC fails is skipped exactly; a damaged header is skipped to the next valid header. A
  record cut off by the end of its file (a torn tail) is cut back with ``truncate``.
  Each counts in ``logpipe_buffer_corrupt_records_total{sink}``, and their events, where
  the header could still tell how many, in ``logpipe_dropped_events_total{stage=
  "buffering",reason="corrupt"}``. Later damage met while reading is handled the same way.
- Segments with nothing left to deliver are deleted; the ledger is written anew.

What each ``fsync`` setting promises (for data already pushed; SIGKILL loses none)
- ``always``: a background thread fsyncs after every write (group commit: writes that
  arrive during one fsync share the next). An OS crash or power loss loses at most the
  pushes of the last few milliseconds whose fsync had not completed.
- ``interval`` (default, ``fsync_interval_ms`` = 1000): a segment file is fsynced one
  interval after its first unsynced write (covering every write of that interval): an
  OS crash loses at most about that interval of pushes. Nothing written, no wakeups.
- ``never``: the kernel writes back when it likes (Linux: typically within 30 s); an OS
  crash can lose that much. A graceful stop still fsyncs once.
In every mode the ledger is fsynced with the segments; a stale ledger after a crash only
means replaying (duplicating) some acknowledged events, never losing any. A segment
deleted before its fsync fell due (every event in it acknowledged) is not fsynced: its
unlink is made durable instead (the directory's fsync), so a crash cannot bring it back
with pages that never reached the disk, and a sink that keeps up keeps the data off it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time

from ..batch import Batch, split_ndjson
from ..config import Buffer as BufferConfig
from ..metrics import Metrics
from . import record
from .reader import SegmentReader
from .recovery import Recovery
from .segment import LEDGER, Frame, Segment, close_fd, remove_file

__all__ = ["DiskBuffer", "LEDGER"]

# How often a blocked writer retries after a failed write.
RETRY_S = 1.0
# Pushed events are kept in memory for the reader (not read back from the file) up to twice
# the lead (base.py), the batch size asked for or this, whichever is largest: a healthy
# sink's reader never reads back what it was just handed (the lead pauses reading one chunk
# past it, so it also bounds this memory, as for the memory buffer); a reader that fell
# further behind (an outage) reads the file.
READ_AHEAD_MIN = 1024 * 1024


class DiskBuffer(Recovery, SegmentReader):
    """A sink's disk buffer; the module docstring is its design (recovery.py, reader.py,
    state.py, segment.py and syncer.py hold its parts)."""

    def __init__(
        self,
        name: str,
        directory: str,
        config: BufferConfig,
        metrics: Metrics,
        *,
        segment_bytes: int | None = None,
    ) -> None:
        super().__init__(name, directory, config, metrics, segment_bytes)
        self._recover()
        # A backlog kept from before a restart is an outage's: no lead until it has drained.
        self._lead_armed = not self._bytes

    # --- writing -------------------------------------------------------------------------

    def push(self, records: list[bytes], nbytes: int) -> None:
        if not records:
            return
        wall = time.time()
        self._events += len(records)
        self._bytes += nbytes
        if self._spill or not self._write_records(records, nbytes, wall):
            self._hold_or_drop(records, nbytes, wall)
        self._check_pressure()

    def push_lines(self, lines: bytes, count: int) -> None:
        if not count:
            return
        wall = time.time()
        nbytes = len(lines)
        self._events += count
        self._bytes += nbytes
        if self._spill or not self._write(*record.lines_parts(lines, count, wall), lines, count, nbytes, wall):
            self._hold_or_drop(split_ndjson(lines), nbytes, wall)
        self._check_pressure()

    def _write_records(self, records: list[bytes], nbytes: int, wall: float) -> bool:
        head, payload, as_lines = record.records_parts(records, wall)
        # Read ahead as NDJSON like pushed lines unless the events hold raw newlines.
        events: bytes | list[bytes] = b"".join((payload, b"\n")) if as_lines else records
        return self._write(head, payload, events, len(records), nbytes, wall)

    def _hold_or_drop(self, records: list[bytes], nbytes: int, wall: float) -> None:
        if self.block and self._spill_bytes + nbytes <= self.spill_max_bytes:
            self._spill.append((records, nbytes, wall))
            self._spill_bytes += nbytes
            self._schedule_retry()
            if len(self._spill) > 1:
                self._drain_spill()
            return
        self._events -= len(records)
        self._bytes -= nbytes
        self._dropped_disk.inc(len(records))

    def _write(self, head: bytes, payload: bytes | memoryview, events: bytes | list[bytes], count: int, nbytes: int,
               wall: float) -> bool:
        """Append one record of ``count`` events with one ``writev``; True once it is in the
        kernel's hands. ``events`` is what the reader hands out: kept in memory (no read
        back) while the reader is right behind the writer and the read-ahead has room."""
        seg = self._segments[-1] if self._wfd is not None else None
        size = len(head) + len(payload)
        try:
            if seg is None or seg.end >= self.segment_bytes:
                seg = self._start_segment()
            fd = self._wfd
            assert fd is not None
            written = os.writev(fd, (head, payload))
            if written < size:  # rare (a signal, a nearly full disk): write the rest
                view = memoryview(b"".join((head, payload)))[written:]
                while view:
                    view = view[os.write(fd, view) :]
        except OSError as e:
            if seg is not None and self._wfd is not None:
                try:  # cut a partial write back so the file stays whole records
                    os.ftruncate(self._wfd, seg.end)
                except OSError:
                    self._stop_writing()  # the reader never reads past ``end``
            self._write_failed(e)
            return False
        offset = seg.end
        seg.end += size
        if (self._roff == offset and self._rseg == seg.id and not self._rskip
                and self._unread_bytes + nbytes <= 2 * max(self._want_bytes, READ_AHEAD_MIN, self._lead)):
            # The reader is right behind the writer (everything unread is in ``_ahead``):
            # hand it the events at once; the file holds them for a restart.
            self._ahead.append(Frame(seg.id, offset, seg.end, events, count, 0, nbytes, wall))
            self._roff = seg.end
        else:
            seg.undecoded_events += count
            seg.undecoded_bytes += nbytes
        was_empty = not self._unread_events
        self._unread_events += count
        self._unread_bytes += nbytes
        if self._unread_oldest is None:
            self._unread_oldest = wall
        self._syncer.written()
        if self._failing is not None:
            self.log.info("buffer_write_recovered", error_was=str(self._failing))
            self._failing = None
        if was_empty or self._unread_events >= self._want_events or self._unread_bytes >= self._want_bytes:
            self._wakeup.set()
        return True

    def _start_segment(self) -> Segment:
        self._stop_writing()
        seg_id = max(self._last_id + 1, time.time_ns() // 1000)
        path = self._segment_path(seg_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._last_id = seg_id
        seg = Segment(seg_id, path)
        last = self._segments[-1] if self._segments else None
        caught_up = last is None or (self._rseg == last.id and self._roff >= last.end and not self._rskip)
        self._segments.append(seg)
        self._by_id[seg_id] = seg
        if caught_up:  # the reader moves on with the writer, so new writes can go to it directly
            if last is not None:
                self._settle(last)
            self._rseg, self._roff, self._rskip = seg_id, 0, 0
        self._wfd = fd
        self._syncer.set_fd(fd)
        self._syncer.meta_changed()
        return seg

    def _stop_writing(self, sync: bool = True) -> None:
        if self._wfd is not None:
            fd, self._wfd = self._wfd, None
            self._syncer.retire(fd, self._segments[-1] if sync else None)

    def _write_failed(self, error: OSError) -> None:
        self._write_errors.inc()
        if self._failing is None:
            # Logged once per streak of failures: a full disk must not flood the logs.
            self.log.error(
                "buffer_write_failed",
                stage="buffering",
                error=str(error),
                disk_full=error.errno == errno.ENOSPC,
                action="holding" if self.block else "dropping",
            )
        self._failing = error

    def _drain_spill(self) -> None:
        while self._spill:
            records, nbytes, wall = self._spill[0]
            if not self._write_records(records, nbytes, wall):
                self._schedule_retry()
                return
            self._spill.popleft()
            self._spill_bytes -= nbytes
        self._check_pressure()

    def _schedule_retry(self) -> None:
        if self._retry_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (direct use): the next push or ack retries
            return
        self._retry_handle = loop.call_later(RETRY_S, self._retry)

    def _retry(self) -> None:
        self._retry_handle = None
        self._drain_spill()

    # --- acknowledging -----------------------------------------------------------------

    def ack(self, batch: Batch) -> None:
        token = batch.token
        entry = self._inflight.get(token) if isinstance(token, int) else None
        if entry is None or entry.acked:
            return
        entry.acked = True
        self._events -= entry.events
        self._bytes -= entry.nbytes
        moved = False
        while self._inflight:
            token, first = next(iter(self._inflight.items()))
            if not first.acked:
                break
            del self._inflight[token]
            self._ack = first.end
            moved = True
        if moved:
            self._delete_acknowledged()
            self._write_ledger()
        if self._spill:
            self._drain_spill()  # deleting segments may have freed the space
        self._check_pressure()

    def _delete_acknowledged(self) -> None:
        ack_seg, ack_off, _ = self._ack
        everything = not self._inflight and not self._unread_events and not self._spill
        while self._segments:
            seg = self._segments[0]
            writing = seg is self._segments[-1] and self._wfd is not None
            done = seg.id < ack_seg or (seg.id == ack_seg and ack_off >= seg.end)
            if not done or (writing and not everything):
                return
            if writing:
                self._stop_writing(sync=False)  # nothing in it is needed any more
            if self._rfd is not None and self._rfd[0] == seg.id:
                close_fd(self._rfd[1])
                self._rfd = None
            self._segments.popleft()
            del self._by_id[seg.id]
            remove_file(seg.path)
            seg.deleted = True  # after the unlink: the fsync thread relies on that order
            self._syncer.meta_changed()

    # --- closing -----------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    async def aclose(self) -> None:
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        if self._spill:
            self._drain_spill()
            if self._spill:
                lost = sum(len(r) for r, _, _ in self._spill)
                self._dropped_disk.inc(lost)
                self._events -= lost
                self._bytes -= self._spill_bytes
                self._spill.clear()
                self._spill_bytes = 0
                self.log.error("buffer_spill_lost_at_shutdown", stage="buffering", events=lost,
                               error=str(self._failing))
        self._write_ledger()
        if self._wfd is not None:
            try:
                await asyncio.to_thread(os.fsync, self._wfd)
            except OSError as e:
                self._sync_failed(e)
        self._stop_writing(sync=False)
        if self._rfd is not None:
            close_fd(self._rfd[1])
            self._rfd = None
        await asyncio.to_thread(self._syncer.stop)
