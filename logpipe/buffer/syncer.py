"""The disk buffer's fsyncs, in one background thread so the event loop never waits for a disk.

What each mode promises is in disk.py's docstring; this module keeps those promises."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from .segment import LEDGER, close_fd, fsync_path

__all__ = ["Syncer"]


class Syncer:
    """Owns every fsync and the closing of written segment files, off the event loop.

    Only this object closes write descriptors, so the thread never fsyncs a descriptor
    that was closed (and maybe reused) under it.

    The thread sleeps until something is unsynced: the first write (or ledger change, or
    retired descriptor) after a sync wakes it; ``interval`` then waits out the interval
    before the fsync, so one fsync covers every write of that interval, and an idle buffer
    costs no wakeups at all."""

    def __init__(self, mode: str, interval_s: float, directory: str, on_error: Callable[[OSError], None]) -> None:
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
        self._stopping = threading.Event()  # ends the interval's wait at a stop
        self._thread: threading.Thread | None = None
        if mode != "never":
            self._thread = threading.Thread(target=self._run, name=f"fsync:{directory}", daemon=True)
            self._thread.start()

    def set_fd(self, fd: int | None) -> None:
        with self._lock:
            self._fd = fd

    # Called per push: only the first write after a sync pays for waking the thread (the
    # thread takes its snapshot after the write(2) returned, so a write that finds the flag
    # already set is covered by the fsync that follows).
    def written(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._wake.set()

    def meta_changed(self) -> None:
        if not self._meta_dirty:
            self._meta_dirty = True
            self._wake.set()

    def retire(self, fd: int, sync: bool) -> None:
        if self._thread is None:
            close_fd(fd)
            return
        with self._lock:
            self._retiring.append((fd, sync))
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.mode == "interval":
                self._stopping.wait(self.interval_s)
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
                close_fd(old)
        if meta:
            try:
                ledger = os.path.join(self.directory, LEDGER)
                if os.path.exists(ledger):
                    fsync_path(ledger)
                fsync_path(self.directory)
            except OSError as e:
                self._on_error(e)

    def stop(self) -> None:
        """Final fsync of everything (also in ``never`` mode: a graceful stop is cheap to make durable)."""
        if self._thread is not None:
            self._stop = True
            self._stopping.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._dirty = True
        self._meta_dirty = True
        self.sync_once()


