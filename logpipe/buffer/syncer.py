"""The disk buffer's fsyncs, in one background thread so the event loop never waits for a disk.

What each mode promises is in disk.py's docstring; this module keeps those promises."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from .segment import LEDGER, Segment, close_fd, fsync_path

__all__ = ["Syncer"]


class Syncer:
    """Owns every fsync and the closing of written segment files, off the event loop.

    Only this object closes write descriptors, so the thread never fsyncs a descriptor
    that was closed (and maybe reused) under it.

    A file is due for its fsync one interval after its first unsynced write (``always``:
    at once), so one fsync covers every write of that interval. A segment deleted before
    it was due (every event in it acknowledged) is never fsynced: a sink that takes the
    data within the interval keeps it off the disk, since the kernel drops a deleted
    file's dirty pages. The thread sleeps until the next file is due, and not at all while
    nothing is unsynced, so an idle buffer costs no wakeups."""

    def __init__(self, mode: str, interval_s: float, directory: str, on_error: Callable[[OSError], None]) -> None:
        self.mode = mode
        self.interval_s = interval_s if mode == "interval" else 0.0
        self.directory = directory
        self._on_error = on_error
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._fd: int | None = None
        # monotonic time of the first write (or ledger change) not yet fsynced, else None
        self._fd_since: float | None = None
        self._meta_since: float | None = None  # ledger replaced or segments created/deleted
        # retired write descriptors: (fd, the segment to fsync or None, its first unsynced write)
        self._retiring: list[tuple[int, Segment | None, float | None]] = []
        self._stop = False
        self._stopping = threading.Event()  # ends a wait for a due time at a stop
        self._thread: threading.Thread | None = None
        if mode != "never":
            self._thread = threading.Thread(target=self._run, name=f"fsync:{directory}", daemon=True)
            self._thread.start()

    def set_fd(self, fd: int) -> None:
        with self._lock:
            self._fd = fd
            self._fd_since = None

    # Called per push: only the first write after a sync pays for a clock read and waking
    # the thread. The thread clears the mark before its fsync, and a write calls this after
    # its write(2) returned, so a write that finds the mark already set is covered by the
    # fsync that clears it.
    def written(self) -> None:
        if self._fd_since is None:
            self._fd_since = time.monotonic()
            self._wake.set()

    def meta_changed(self) -> None:
        if self._meta_since is None:
            self._meta_since = time.monotonic()
            self._wake.set()

    def retire(self, fd: int, segment: Segment | None) -> None:
        """The active descriptor ``fd`` is written no more: close it, after fsyncing what
        was written to ``segment`` unless that is None (nothing in it is needed) or it is
        deleted before it is due."""
        with self._lock:
            since = self._fd_since if segment is not None else None
            if since is None:  # every write to it is synced already
                segment = None
            if self._fd == fd:
                self._fd, self._fd_since = None, None
            if self._thread is None:
                close_fd(fd)
                return
            self._retiring.append((fd, segment, since))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            while not self._stop:
                due = self._next_due()
                if due is None:
                    break
                delay = due - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    break
                self.sync_once(time.monotonic())

    def _next_due(self) -> float | None:
        with self._lock:
            times = [t for t in (self._fd_since, self._meta_since) if t is not None]
            for _, segment, since in self._retiring:
                # nothing to sync, or deleted already: only the close is left, at once
                times.append(since if segment is not None and since is not None and not segment.deleted else 0.0)
        return min(times) + self.interval_s if times else None

    def sync_once(self, now: float | None = None) -> None:
        """fsync what is due at ``now`` (everything when None) and close what is retired."""
        horizon = None if now is None else now - self.interval_s

        def due(since: float | None) -> bool:
            return since is not None and (horizon is None or since <= horizon)

        with self._lock:
            fd = None
            if now is None or due(self._fd_since):
                fd, self._fd_since = self._fd, None
            meta = now is None or due(self._meta_since)
            if meta:
                self._meta_since = None
            closing: list[tuple[int, Segment | None, float | None]] = []
            keep: list[tuple[int, Segment | None, float | None]] = []
            for entry in self._retiring:
                _, segment, since = entry
                (closing if segment is None or segment.deleted or due(since) else keep).append(entry)
            self._retiring = keep
        # Outside the lock (the event loop never waits for a disk): only this thread closes
        # descriptors, so ``fd`` stays open until a later pass retires it. Whether a segment
        # was deleted is read before the directory's fsync below: a segment is flagged only
        # after its unlink, so that fsync makes every skipped file's unlink durable, and
        # after a crash it is gone rather than back with pages that were never written.
        wanted = [(old, segment) for old, segment, _ in closing if segment is not None]
        pending = [old for old, segment in wanted if not segment.deleted]
        skipped = len(pending) < len(wanted)
        try:
            if meta or skipped:
                ledger = os.path.join(self.directory, LEDGER)
                if os.path.exists(ledger):
                    fsync_path(ledger)
                fsync_path(self.directory)
        except OSError as e:
            self._on_error(e)
        try:
            if fd is not None:
                self._fsync(fd)
            for old in pending:
                self._fsync(old)
        except OSError as e:
            self._on_error(e)
        finally:
            for old, _, _ in closing:
                close_fd(old)

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)

    def stop(self) -> None:
        """Final fsync of everything (also in ``never`` mode: a graceful stop is cheap to make durable)."""
        if self._thread is not None:
            self._stop = True
            self._stopping.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        self.sync_once()
