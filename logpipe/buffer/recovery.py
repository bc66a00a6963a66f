"""Disk buffer recovery at start and the ledger (rules: disk.py's docstring, "Recovery").

The buffer always starts: a damaged ledger is rebuilt from the segments, damaged records
are skipped and counted, a torn tail is cut back."""

from __future__ import annotations

import os
import zlib

import orjson

from . import record
from .segment import LEDGER, SEGMENT_RE, Position, Segment, close_fd, remove_file
from .state import DiskState

__all__ = ["Recovery"]

# Read at a time by the start's check of a segment (a record larger than this is read whole).
SCAN_BLOCK = 4 * 1024 * 1024


class Recovery(DiskState):
    def _recover(self) -> None:
        ids = []
        for entry in os.listdir(self.directory):
            match = SEGMENT_RE.match(entry)
            if match:
                ids.append(int(match.group(1)))
            elif entry.endswith(".tmp"):
                remove_file(os.path.join(self.directory, entry))
        ids.sort()
        self._last_id = ids[-1] if ids else 0
        ack = self._read_ledger()
        rebuilt = ack is None
        if ack is None:
            ack = (ids[0], 0, 0) if ids else (0, 0, 0)
        # A ledger may point at a segment deleted after it was written: start at the next.
        if ids and not any(i == ack[0] for i in ids):
            later = [i for i in ids if i > ack[0]]
            ack = (later[0], 0, 0) if later else (ack[0], 0, 0)
        corrupt_records = 0
        corrupt_events = 0
        for seg_id in ids:
            seg = Segment(seg_id, self._segment_path(seg_id))
            if seg_id < ack[0]:
                remove_file(seg.path)  # acknowledged already; its deletion was interrupted
                continue
            start, skip = (ack[1], ack[2]) if seg_id == ack[0] else (0, 0)
            records, events = self._scan(seg, start, skip)
            corrupt_records += records
            corrupt_events += events
            if seg.undecoded_events == 0:
                remove_file(seg.path)
                continue
            self._segments.append(seg)
            self._by_id[seg_id] = seg
            if len(self._segments) == 1:
                ack = (seg_id, start, skip)
        if self._segments and self._segments[0].id != ack[0]:
            ack = (self._segments[0].id, 0, 0)
        self._ack = ack
        self._rseg, self._roff, self._rskip = ack
        events = sum(s.undecoded_events for s in self._segments)
        nbytes = sum(s.undecoded_bytes for s in self._segments)
        self._events = self._unread_events = events
        self._bytes = self._unread_bytes = nbytes
        if corrupt_records:
            self._corrupt.inc(corrupt_records)
            self._dropped_corrupt.inc(corrupt_events)
            self.log.error("buffer_corrupt_records_skipped", stage="buffering", records=corrupt_records,
                           events=corrupt_events)
        if rebuilt and ids:
            self.log.warning("buffer_ledger_rebuilt", stage="buffering", segments=len(self._segments))
        if events:
            self._replayed.inc(events)
            self.log.info("buffer_replaying", events=events, bytes=nbytes, segments=len(self._segments))
        self._write_ledger()
        self._syncer.meta_changed()
        self._check_pressure()

    def _scan(self, seg: Segment, start: int, skip: int) -> tuple[int, int]:
        """Check ``seg`` from ``start`` (a record boundary: the ledger's CRC vouches for
        it); fill its counts, cut a torn tail. Returns the (records, events) found damaged.
        Reads ``SCAN_BLOCK`` at a time, so a start costs that much memory, not a segment."""
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.log.error("buffer_segment_unreadable", stage="buffering", segment=seg.id, error=str(e))
            return (1, 0)
        try:
            return self._scan_file(seg, fd, start, skip)
        except OSError as e:
            self.log.error("buffer_segment_unreadable", stage="buffering", segment=seg.id, error=str(e))
            return (1, 0)
        finally:
            close_fd(fd)

    def _scan_file(self, seg: Segment, fd: int, start: int, skip: int) -> tuple[int, int]:
        size = os.fstat(fd).st_size
        if start > size:
            seg.end = size
            return (0, 0)
        pos = start
        data = b""
        base = start  # file offset of data[0]
        want = 0  # > 0: read (at least) this much from ``pos`` next
        resyncing = False  # a damaged stretch ran into the end of the block
        bad_records = bad_events = 0
        first = True
        while pos < size:
            if want or pos - base >= len(data):
                data = os.pread(fd, max(want, SCAN_BLOCK), pos)
                base, want = pos, 0
            decoded = record.decode(data, pos - base, want_records=first and skip > 0)
            status = decoded.status
            if status == record.TRUNCATED and base + len(data) < size:
                # Cut by the block, not by the file: read again from this record, whole.
                want = max(decoded.size, 1)
                continue
            if status == record.OK:
                count, nbytes = decoded.count, decoded.nbytes
                if first and skip:
                    done = decoded.records[:skip]  # type: ignore[index]
                    count -= len(done)
                    nbytes -= sum(map(len, done)) + len(done)
                if count > 0:
                    if self._unread_oldest is None:
                        self._unread_oldest = decoded.written_at
                    seg.undecoded_events += count
                    seg.undecoded_bytes += nbytes
                pos = base + decoded.end
            elif status == record.TRUNCATED:
                bad_records += 1
                bad_events += decoded.count
                self.log.warning("buffer_torn_tail_cut", stage="buffering", segment=seg.id, offset=pos,
                                 cut_bytes=size - pos)
                try:
                    os.truncate(seg.path, pos)
                except OSError as e:  # the reader never reads past ``end`` anyway
                    self.log.error("buffer_truncate_failed", stage="buffering", segment=seg.id, error=str(e))
                size = pos
                break
            else:
                if not (resyncing and status == record.BAD_HEADER):  # one damaged stretch counts once
                    bad_records += 1
                    if status == record.BAD_PAYLOAD:
                        bad_events += decoded.count
                seg.bad.add(pos)
                pos = base + decoded.end
                resyncing = status == record.BAD_HEADER and decoded.end >= len(data)
                first = False
                continue
            resyncing = False
            first = False
        seg.end = size if pos >= size else pos
        return bad_records, bad_events

    def _read_ledger(self) -> Position | None:
        path = os.path.join(self.directory, LEDGER)
        try:
            with open(path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            self.log.warning("buffer_ledger_unreadable", stage="buffering", error=str(e))
            return None
        try:
            body, crc_line, _ = text.split(b"\n")
            if int(crc_line, 16) != zlib.crc32(body):
                raise ValueError("CRC mismatch")
            ack = orjson.loads(body)["ack"]
            position = (int(ack[0]), int(ack[1]), int(ack[2]))
            if min(position) < 0:
                raise ValueError("negative position")
            return position
        except (ValueError, KeyError, TypeError, IndexError, orjson.JSONDecodeError) as e:
            self.log.warning("buffer_ledger_damaged", stage="buffering", error=str(e))
            return None

    def _write_ledger(self) -> None:
        body = orjson.dumps(
            {"version": 1, "ack": list(self._ack), "read": list(self._read_position()), "last_segment": self._last_id}
        )
        path = os.path.join(self.directory, LEDGER)
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(body + b"\n" + b"%08x\n" % zlib.crc32(body))
            os.replace(tmp, path)
        except OSError as e:
            # A stale ledger only means replaying acknowledged events after a restart.
            self._write_errors.inc()
            self.log.warning("buffer_ledger_write_failed", stage="buffering", error=str(e))
            return
        self._syncer.meta_changed()
