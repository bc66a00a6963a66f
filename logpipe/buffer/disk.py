"""Disk buffer: one sink's queue of encoded events, kept in append-only files so that
sink outages, restarts and SIGKILL lose nothing that was pushed.

Design
======

Invariants
- Every ``push`` is one ``write(2)`` of one whole record (the chunk of events pushed) to
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
  active one reaches ``segment_bytes`` (max_bytes / 8, between 4 KiB and 64 MiB) and at
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
- ``interval`` (default, ``fsync_interval_ms`` = 1000): fsync at most every interval when
  something was written: an OS crash loses at most about that interval of pushes.
- ``never``: the kernel writes back when it likes (Linux: typically within 30 s); an OS
  crash can lose that much. A graceful stop still fsyncs once.
In every mode the ledger is fsynced with the segments; a stale ledger after a crash only
means replaying (duplicating) some acknowledged events, never losing any.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import re
import threading
import time
import zlib

import orjson
import structlog

from ..config import Buffer as BufferConfig
from ..metrics import Metrics
from . import record
from ..batch import Batch, split_ndjson
from .base import Buffer

__all__ = ["DiskBuffer"]

SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
LEDGER = "ledger.json"
# Blocks read at a time when replaying; big enough that a syscall's cost is amortized.
READ_BLOCK = 1024 * 1024
# How often a blocked writer retries after a failed write.
RETRY_S = 1.0


class _Segment:
    __slots__ = ("id", "path", "end", "undecoded_events", "undecoded_bytes", "bad")

    def __init__(self, seg_id: int, path: str) -> None:
        self.id = seg_id
        self.path = path
        self.end = 0  # bytes of valid records; writes append here
        # Events not yet read from this segment; what is left when the reader reaches
        # ``end`` was lost to damage found while reading.
        self.undecoded_events = 0
        self.undecoded_bytes = 0
        self.bad: set[int] = set()  # offsets of damage already counted


class _Frame:
    """A record read ahead of delivery; ``skip`` events of it are already handed out."""

    __slots__ = ("seg", "offset", "end", "records", "skip", "nbytes", "written_at")

    def __init__(self, seg: int, offset: int, end: int, records: list[bytes], skip: int, nbytes: int, written_at: float):
        self.seg = seg
        self.offset = offset
        self.end = end
        self.records = records
        self.skip = skip
        self.nbytes = nbytes  # of the events not yet handed out
        self.written_at = written_at


class _InFlight:
    __slots__ = ("end", "events", "nbytes", "written_at", "acked")

    def __init__(self, end: tuple[int, int, int], events: int, nbytes: int, written_at: float) -> None:
        self.end = end
        self.events = events
        self.nbytes = nbytes
        self.written_at = written_at
        self.acked = False


class _Syncer:
    """Owns every fsync and the closing of written segment files, off the event loop.

    Only this object closes write descriptors, so the thread never fsyncs a descriptor
    that was closed (and maybe reused) under it."""

    def __init__(self, mode: str, interval_s: float, directory: str, on_error) -> None:
        self.mode = mode
        self.interval_s = interval_s
        self.directory = directory
        self._on_error = on_error
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._fd: int | None = None
        self._dirty = False
        self._meta_dirty = False  # ledger replaced or segments created/deleted
        self._retiring: list[tuple[int, bool]] = []
        self._stop = False
        self._thread: threading.Thread | None = None
        if mode != "never":
            self._thread = threading.Thread(target=self._run, name=f"fsync:{directory}", daemon=True)
            self._thread.start()

    def set_fd(self, fd: int | None) -> None:
        with self._lock:
            self._fd = fd

    def written(self) -> None:
        self._dirty = True
        if self.mode == "always":
            self._wake.set()

    def meta_changed(self) -> None:
        self._meta_dirty = True
        if self.mode == "always":
            self._wake.set()

    def retire(self, fd: int, sync: bool) -> None:
        if self._thread is None:
            _close(fd)
            return
        with self._lock:
            self._retiring.append((fd, sync))
        self._wake.set()

    def _run(self) -> None:
        while True:
            if self.mode == "always":
                self._wake.wait()
            else:
                self._wake.wait(self.interval_s)
            self._wake.clear()
            stop = self._stop
            self.sync_once()
            if stop:
                return

    def sync_once(self) -> None:
        with self._lock:
            fd = self._fd if self._dirty else None
            self._dirty = False
            meta, self._meta_dirty = self._meta_dirty, False
            retiring, self._retiring = self._retiring, []
        # Outside the lock (the event loop never waits for a disk): only this thread
        # closes descriptors, so ``fd`` stays open until a later pass retires it.
        try:
            if fd is not None:
                os.fsync(fd)
            for old, sync in retiring:
                if sync:
                    os.fsync(old)
        except OSError as e:
            self._on_error(e)
        finally:
            for old, _ in retiring:
                _close(old)
        if meta:
            try:
                ledger = os.path.join(self.directory, LEDGER)
                if os.path.exists(ledger):
                    _fsync_path(ledger)
                _fsync_path(self.directory)
            except OSError as e:
                self._on_error(e)

    def stop(self) -> None:
        """Final fsync of everything (also in ``never`` mode: a graceful stop is cheap to make durable)."""
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._dirty = True
        self._meta_dirty = True
        self.sync_once()


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskBuffer(Buffer):
    durable = True  # every push is in the kernel's hands before push returns

    def __init__(
        self,
        name: str,
        directory: str,
        config: BufferConfig,
        metrics: Metrics,
        *,
        segment_bytes: int | None = None,
    ) -> None:
        super().__init__(config.max_bytes)
        self.name = name
        self.directory = directory
        self.block = config.when_full == "block"
        self.segment_bytes = segment_bytes or max(4096, min(64 * 1024 * 1024, config.max_bytes // 8))
        # The spill only exists while writes fail in block mode; it counts in ``bytes``, so
        # the lane holds sources back long before this bound, which is a last resort.
        self.spill_max_bytes = max(config.max_bytes, 1024 * 1024)
        self.log = structlog.get_logger().bind(component=f"buffer.{name}")

        dropped = metrics.counter("logpipe_dropped_events_total", "Events dropped, by stage and reason", ("stage", "reason"))
        self._dropped_disk = dropped.labels("buffering", "disk_error")
        self._dropped_corrupt = dropped.labels("buffering", "corrupt")
        self._corrupt = metrics.counter(
            "logpipe_buffer_corrupt_records_total", "Damaged disk-buffer records skipped (torn tails included)", ("sink",)
        ).labels(name)
        self._replayed = metrics.counter(
            "logpipe_buffer_replayed_events_total", "Unacknowledged events found in the disk buffer at start", ("sink",)
        ).labels(name)
        self._write_errors = metrics.counter(
            "logpipe_buffer_write_errors_total", "Failed disk-buffer writes (disk full, read-only, I/O error)", ("sink",)
        ).labels(name)
        metrics.gauge("logpipe_buffer_disk_bytes", "Bytes of the disk buffer's files", ("sink",)).set_function(
            self.disk_bytes, name
        )

        self._segments: collections.deque[_Segment] = collections.deque()
        self._by_id: dict[int, _Segment] = {}
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
        self._ahead: collections.deque[_Frame] = collections.deque()
        self._rseg = 0
        self._roff = 0
        self._rskip = 0
        self._rfd: tuple[int, int] | None = None  # (segment id, fd)
        self._ack: tuple[int, int, int] = (0, 0, 0)
        self._inflight: dict[int, _InFlight] = {}
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
        self._syncer = _Syncer(config.fsync, config.fsync_interval_ms / 1000, directory, self._sync_failed)
        self._recover()

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

    def _check_pressure(self) -> None:
        size = self._bytes
        if not self._pressure and (size >= self.max_bytes or self._spill):
            self._pressure = True
            if self.on_pressure:
                self.on_pressure(True)
        elif self._pressure and size < self._low and not self._spill:
            self._pressure = False
            if self.on_pressure:
                self.on_pressure(False)

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
        for name in (LEDGER, *(f"{s.id:020d}.seg" for s in self._segments)):
            try:
                total += os.stat(os.path.join(self.directory, name)).st_size
            except OSError:
                pass
        return total

    # --- recovery ----------------------------------------------------------------------

    def _recover(self) -> None:
        ids = []
        for entry in os.listdir(self.directory):
            match = SEGMENT_RE.match(entry)
            if match:
                ids.append(int(match.group(1)))
            elif entry.endswith(".tmp"):
                _remove(os.path.join(self.directory, entry))
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
            seg = _Segment(seg_id, self._segment_path(seg_id))
            if seg_id < ack[0]:
                _remove(seg.path)  # acknowledged already; its deletion was interrupted
                continue
            start, skip = (ack[1], ack[2]) if seg_id == ack[0] else (0, 0)
            records, events = self._scan(seg, start, skip)
            corrupt_records += records
            corrupt_events += events
            if seg.undecoded_events == 0:
                _remove(seg.path)
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
            self.log.error("buffer_corrupt_records_skipped", stage="buffering", records=corrupt_records, events=corrupt_events)
        if rebuilt and ids:
            self.log.warning("buffer_ledger_rebuilt", stage="buffering", segments=len(self._segments))
        if events:
            self._replayed.inc(events)
            self.log.info("buffer_replaying", events=events, bytes=nbytes, segments=len(self._segments))
        self._write_ledger()
        self._syncer.meta_changed()
        self._check_pressure()

    def _scan(self, seg: _Segment, start: int, skip: int) -> tuple[int, int]:
        """Check ``seg`` from ``start`` (a record boundary: the ledger's CRC vouches for
        it); fill its counts, cut a torn tail. Returns the (records, events) found damaged."""
        try:
            with open(seg.path, "rb") as f:
                data = f.read()
        except OSError as e:
            self.log.error("buffer_segment_unreadable", stage="buffering", segment=seg.id, error=str(e))
            return (1, 0)
        if start > len(data):
            seg.end = len(data)
            return (0, 0)
        pos = start
        bad_records = bad_events = 0
        first = True
        while pos < len(data):
            decoded = record.decode(data, pos, want_records=first and skip > 0)
            status = decoded.status
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
                pos = decoded.end
            elif status == record.TRUNCATED:
                bad_records += 1
                bad_events += decoded.count
                self.log.warning("buffer_torn_tail_cut", stage="buffering", segment=seg.id, offset=pos, cut_bytes=len(data) - pos)
                try:
                    os.truncate(seg.path, pos)
                except OSError as e:  # the reader never reads past ``end`` anyway
                    self.log.error("buffer_truncate_failed", stage="buffering", segment=seg.id, error=str(e))
                data = data[:pos]
                break
            else:
                bad_records += 1
                if status == record.BAD_PAYLOAD:
                    bad_events += decoded.count
                seg.bad.add(pos)
                pos = decoded.end
            first = False
        seg.end = len(data) if pos >= len(data) else pos
        return bad_records, bad_events

    def _read_ledger(self) -> tuple[int, int, int] | None:
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

    def _segment_path(self, seg_id: int) -> str:
        return os.path.join(self.directory, f"{seg_id:020d}.seg")

    # --- writing -------------------------------------------------------------------------

    def push(self, records: list[bytes], nbytes: int) -> None:
        if not records:
            return
        wall = time.time()
        self._events += len(records)
        self._bytes += nbytes
        if self._spill or not self._write(record.encode(records, wall), len(records), nbytes, wall):
            self._hold_or_drop(records, nbytes, wall)
        self._check_pressure()

    def push_lines(self, lines: bytes, count: int) -> None:
        if not count:
            return
        wall = time.time()
        nbytes = len(lines)
        self._events += count
        self._bytes += nbytes
        if self._spill or not self._write(record.encode_lines(lines, count, wall), count, nbytes, wall):
            self._hold_or_drop(split_ndjson(lines), nbytes, wall)
        self._check_pressure()

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

    def _write(self, data: bytes, count: int, nbytes: int, wall: float) -> bool:
        """Append one encoded record of ``count`` events; True once it is in the kernel's hands."""
        seg = self._segments[-1] if self._wfd is not None else None
        try:
            if seg is None or seg.end >= self.segment_bytes:
                seg = self._start_segment()
            fd = self._wfd
            assert fd is not None
            view = memoryview(data)
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
        seg.end += len(data)
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

    def _start_segment(self) -> _Segment:
        self._stop_writing()
        seg_id = max(self._last_id + 1, time.time_ns() // 1000)
        path = self._segment_path(seg_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._last_id = seg_id
        seg = _Segment(seg_id, path)
        self._segments.append(seg)
        self._by_id[seg_id] = seg
        self._wfd = fd
        self._syncer.set_fd(fd)
        self._syncer.meta_changed()
        return seg

    def _stop_writing(self, sync: bool = True) -> None:
        if self._wfd is not None:
            fd, self._wfd = self._wfd, None
            self._syncer.set_fd(None)
            self._syncer.retire(fd, sync)

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
            if not self._write(record.encode(records, wall), len(records), nbytes, wall):
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

    def _sync_failed(self, error: OSError) -> None:  # called from the syncer thread
        self._write_errors.inc()
        self.log.error("buffer_fsync_failed", stage="buffering", error=str(error))

    # --- reading -----------------------------------------------------------------------

    def _read_position(self) -> tuple[int, int, int]:
        if self._ahead:
            frame = self._ahead[0]
            return (frame.seg, frame.offset, frame.skip)
        return (self._rseg, self._roff, self._rskip)

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
        records: list[bytes] = []
        nbytes = 0
        start: tuple[int, int, int] | None = None
        written_at = 0.0
        end = (0, 0, 0)
        ahead = self._ahead
        while len(records) < max_events:
            if not ahead and not await self._read_ahead(max_bytes):
                break
            frame = ahead[0]
            if start is None:
                start = (frame.seg, frame.offset, frame.skip)
                written_at = frame.written_at
            remaining = frame.records[frame.skip :]
            room = max_events - len(records)
            if len(remaining) <= room and (nbytes + frame.nbytes <= max_bytes or not records):
                records += remaining
                nbytes += frame.nbytes
                ahead.popleft()
                end = (frame.seg, frame.end, 0)
                continue
            taken = 0
            size = 0
            for event in remaining[:room]:
                if (records or taken) and nbytes + size + len(event) + 1 > max_bytes:
                    break
                size += len(event) + 1
                taken += 1
            if taken:
                records += remaining[:taken]
                nbytes += size
                frame.skip += taken
                frame.nbytes -= size
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
        self._unread_events -= len(records)
        self._unread_bytes -= nbytes
        if ahead:
            self._unread_oldest = ahead[0].written_at
        elif not self._unread_events:
            self._unread_oldest = None
        # else: the next record's time is unknown until read; the last one's is a close,
        # earlier bound (at worst a batch goes out a little before max_age).
        token = self._next_token
        self._next_token += 1
        self._inflight[token] = _InFlight(end, len(records), nbytes, written_at)
        batch_id = f"{start[0]}:{start[1]}:{start[2]}:{len(records)}"
        created = time.monotonic() - max(0.0, time.time() - written_at)
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

    def _decode_block(self, seg: _Segment, data: bytes, offset: int) -> bool:
        pos = 0
        found = False
        while pos < len(data):
            decoded = record.decode(data, pos)
            status = decoded.status
            if status == record.OK:
                records = decoded.records
                assert records is not None
                nbytes = decoded.nbytes
                skip = 0
                if self._rskip and offset + pos == self._roff:
                    skip = min(self._rskip, len(records))
                    nbytes -= sum(map(len, records[:skip])) + skip
                self._rskip = 0
                seg.undecoded_events -= len(records) - skip
                seg.undecoded_bytes -= nbytes
                if skip < len(records):
                    self._ahead.append(_Frame(seg.id, offset + pos, offset + decoded.end, records, skip, nbytes, decoded.written_at))
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
                    self.log.error("buffer_corrupt_record_skipped", stage="buffering", segment=seg.id, offset=offset + pos)
                pos = seg.end - offset if status == record.TRUNCATED else decoded.end
        if pos == 0 and not found:
            # A record bigger than the block: read exactly it next time.
            decoded = record.decode(data, 0, want_records=False)
            if decoded.size and offset + decoded.size <= seg.end:
                self._roff = offset  # caller reads again with a size that fits
                return self._read_whole(seg, offset, decoded.size)
        self._roff = offset + pos
        return found

    def _read_whole(self, seg: _Segment, offset: int, size: int) -> bool:
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

    def _settle(self, seg: _Segment) -> None:
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
        if self._rfd is not None and self._rfd[0] == seg.id and seg is not (self._segments[-1] if self._segments else None):
            _close(self._rfd[1])
            self._rfd = None

    def _read_fd(self, seg: _Segment) -> int | None:
        if self._rfd is not None:
            if self._rfd[0] == seg.id:
                return self._rfd[1]
            _close(self._rfd[1])
            self._rfd = None
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.log.error("buffer_segment_unreadable", stage="buffering", segment=seg.id, error=str(e))
            return None
        self._rfd = (seg.id, fd)
        return fd

    # --- acknowledging -----------------------------------------------------------------

    def ack(self, batch: Batch) -> None:
        entry = self._inflight.get(batch.token)  # type: ignore[arg-type]
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
                _close(self._rfd[1])
                self._rfd = None
            self._segments.popleft()
            del self._by_id[seg.id]
            _remove(seg.path)
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
                self.log.error("buffer_spill_lost_at_shutdown", stage="buffering", events=lost, error=str(self._failing))
        self._write_ledger()
        if self._wfd is not None:
            try:
                await asyncio.to_thread(os.fsync, self._wfd)
            except OSError as e:
                self._sync_failed(e)
        self._stop_writing(sync=False)
        if self._rfd is not None:
            _close(self._rfd[1])
            self._rfd = None
        await asyncio.to_thread(self._syncer.stop)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:  # pragma: no cover - a file we cannot delete is retried next start
        structlog.get_logger().warning("buffer_delete_failed", stage="buffering", path=path, error=str(e))
