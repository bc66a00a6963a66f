"""The disk buffer's reader: batches in push order from the segments, read ahead in blocks.

Damage met while reading (the files changed after the start) is skipped and counted like
damage found at the start (disk.py's docstring, "Recovery")."""

from __future__ import annotations

import asyncio
import os
import time

from ..batch import Batch, split_ndjson
from . import record
from .segment import Frame, InFlight, Position, Segment, close_fd
from .state import DiskState

__all__ = ["SegmentReader"]

# Blocks read at a time when replaying; big enough that a syscall's cost is amortized.
READ_BLOCK = 1024 * 1024


class SegmentReader(DiskState):
    async def next_batch(self, max_events: int, max_bytes: int, max_age_s: float) -> Batch | None:
        self._want_events, self._want_bytes = max_events, max_bytes
        while True:
            if self._unread_events:
                oldest = self._unread_oldest if self._unread_oldest is not None else time.time()
                wait = oldest + max_age_s - time.time()
                if self._closed or self._unread_events >= max_events or self._unread_bytes >= max_bytes or wait <= 0:
                    batch = await self._take(max_events, max_bytes)
                    if batch is not None:
                        return batch
                    continue  # what was counted proved damaged; counts are corrected
            elif self._closed:
                return None
            else:
                wait = None
            await self._sleep_until_woken(wait)

    async def _take(self, max_events: int, max_bytes: int) -> Batch | None:
        parts: list[bytes | list[bytes]] = []  # NDJSON blobs, and record lists where events hold newlines
        count = 0
        nbytes = 0
        start: Position | None = None
        written_at = 0.0
        end = (0, 0, 0)
        ahead = self._ahead
        while count < max_events:
            if not ahead and not await self._read_ahead(max_bytes):
                break
            frame = ahead[0]
            if start is None:
                start = (frame.seg, frame.offset, frame.skip)
                written_at = frame.written_at
            left = frame.count - frame.skip
            room = max_events - count
            if left <= room and (nbytes + frame.nbytes <= max_bytes or not count):
                parts.append(frame.rest())
                count += left
                nbytes += frame.nbytes
                ahead.popleft()
                end = (frame.seg, frame.end, 0)
                continue
            size = frame.nbytes
            part = frame.take(min(room, left), max_bytes - nbytes, not count)
            if part is not None:
                parts.append(part)
                count += left - (frame.count - frame.skip)
                nbytes += size - frame.nbytes
                end = (frame.seg, frame.offset, frame.skip)
            break
        if start is None:
            if self._unread_events:
                # Nothing readable is left, so the count was wrong: fix it rather than
                # spin (and say so: it means a bug or files changed under us).
                self.log.error("buffer_count_corrected", stage="buffering", events=self._unread_events)
                self._events -= self._unread_events
                self._bytes -= self._unread_bytes
                self._unread_events = self._unread_bytes = 0
                self._unread_oldest = None
                self._check_pressure()
            return None
        self._unread_events -= count
        self._unread_bytes -= nbytes
        if ahead:
            self._unread_oldest = ahead[0].written_at
        elif not self._unread_events:
            self._unread_oldest = None
        # else: the next record's time is unknown until read; the last one's is a close,
        # earlier bound (at worst a batch goes out a little before max_age).
        token = self._next_token
        self._next_token += 1
        self._inflight[token] = InFlight(end, count, nbytes, written_at)
        batch_id = f"{start[0]}:{start[1]}:{start[2]}:{count}"
        created = time.monotonic() - max(0.0, time.time() - written_at)
        if all(type(part) is bytes for part in parts):
            # The blobs go on whole: a sink sending NDJSON never splits and re-joins them.
            return Batch(batch_id, None, nbytes, created, token=token, lines=parts, count=count)  # type: ignore[arg-type]
        records: list[bytes] = []
        for part in parts:
            records += split_ndjson(part) if isinstance(part, bytes) else part
        return Batch(batch_id, records, nbytes, created, token=token)

    async def _read_ahead(self, max_bytes: int) -> bool:
        """Decode the next records into ``_ahead``; False when nothing more is written."""
        while True:
            seg = self._by_id.get(self._rseg)
            if seg is None or self._roff >= seg.end:
                if seg is not None:
                    self._settle(seg)
                later = [s for s in self._segments if s.id > self._rseg]
                if seg is not None and seg is self._segments[-1] and self._wfd is not None:
                    return False  # caught up with the writer
                if not later:
                    return False
                self._rseg, self._roff, self._rskip = later[0].id, 0, 0
                continue
            fd = self._read_fd(seg)
            if fd is None:  # unreadable: its records are lost; counted by _settle
                self._roff = seg.end
                continue
            offset = self._roff
            size = min(seg.end - offset, max(READ_BLOCK, max_bytes + record.HEADER_SIZE))
            try:
                data = await asyncio.to_thread(os.pread, fd, size, offset)
            except OSError as e:
                self.log.error("buffer_read_failed", stage="buffering", segment=seg.id, error=str(e))
                self._corrupt.inc()
                self._roff = seg.end
                continue
            if not data:
                self._roff = seg.end
                continue
            if self._decode_block(seg, data, offset):
                return True

    def _decode_block(self, seg: Segment, data: bytes, offset: int) -> bool:
        pos = 0
        found = False
        while pos < len(data):
            decoded = record.decode(data, pos, as_lines=True)
            status = decoded.status
            if status == record.OK:
                events: bytes | list[bytes] | None = decoded.lines if decoded.lines is not None else decoded.records
                assert events is not None
                count = decoded.count
                nbytes = decoded.nbytes
                skip = 0
                if self._rskip and offset + pos == self._roff:
                    skip = min(self._rskip, count)
                frame = Frame(seg.id, offset + pos, offset + decoded.end, events, count, skip, nbytes,
                              decoded.written_at)
                if skip:  # a restart inside this record: its first events were acknowledged
                    done = frame.cut if isinstance(events, bytes) else sum(len(e) + 1 for e in events[:skip])
                    frame.nbytes -= done
                self._rskip = 0
                seg.undecoded_events -= count - skip
                seg.undecoded_bytes -= frame.nbytes
                if skip < count:
                    self._ahead.append(frame)
                    found = True
                pos = decoded.end
            elif status == record.TRUNCATED and offset + len(data) < seg.end:
                break  # the record continues past this block: read again from it
            else:
                # Damage found while reading (the file changed after start): skip it; the
                # counts are settled when the reader leaves the segment.
                if offset + pos not in seg.bad:
                    seg.bad.add(offset + pos)
                    self._corrupt.inc()
                    self._dropped_corrupt.inc(decoded.count)
                    self.log.error("buffer_corrupt_record_skipped", stage="buffering", segment=seg.id,
                                   offset=offset + pos)
                pos = seg.end - offset if status == record.TRUNCATED else decoded.end
        if pos == 0 and not found:
            # A record bigger than the block: read exactly it next time.
            decoded = record.decode(data, 0, want_records=False)
            if decoded.size and offset + decoded.size <= seg.end:
                self._roff = offset  # caller reads again with a size that fits
                return self._read_whole(seg, offset, decoded.size)
        self._roff = offset + pos
        return found

    def _read_whole(self, seg: Segment, offset: int, size: int) -> bool:
        fd = self._read_fd(seg)
        try:
            data = os.pread(fd, size, offset) if fd is not None else b""
        except OSError:
            data = b""
        if len(data) < size:
            self._corrupt.inc()
            self._roff = seg.end
            return False
        return self._decode_block(seg, data, offset)

    def _settle(self, seg: Segment) -> None:
        """The reader reached ``seg.end``: events counted in but never read were lost."""
        if seg.undecoded_events:
            lost_events, lost_bytes = seg.undecoded_events, seg.undecoded_bytes
            seg.undecoded_events = seg.undecoded_bytes = 0
            self._unread_events -= lost_events
            self._unread_bytes -= lost_bytes
            self._events -= lost_events
            self._bytes -= lost_bytes
            if not self._unread_events:
                self._unread_oldest = None
            self._check_pressure()
        writing = self._segments[-1] if self._segments else None
        if self._rfd is not None and self._rfd[0] == seg.id and seg is not writing:
            close_fd(self._rfd[1])
            self._rfd = None

    def _read_fd(self, seg: Segment) -> int | None:
        if self._rfd is not None:
            if self._rfd[0] == seg.id:
                return self._rfd[1]
            close_fd(self._rfd[1])
            self._rfd = None
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.log.error("buffer_segment_unreadable", stage="buffering", segment=seg.id, error=str(e))
            return None
        self._rfd = (seg.id, fd)
        return fd
