"""File sink: NDJSON under ``daemon.data_dir``, rotated by size. The embedded default:
it needs no server, so ``make run`` works on a bare machine.

``PATH.ndjson`` is the live file; at ``rotate_bytes`` it becomes ``PATH.1.ndjson`` (older
ones shift up) and at most ``keep_files`` rotated files are kept. Writes run in a thread so
a slow disk never stalls the event loop.

Invariants (what "sent" means here):
- A batch is confirmed only once every byte of it is in the file named ``PATH.ndjson``
  *now*: before each batch the sink compares the path's device and inode with the open
  file's (one ``stat``). A file moved away or deleted (logrotate ``create``, ``mv; rm``) is
  closed and the path opened anew, so no confirmed line goes into a file nobody can read.
- A file that shrank under us (logrotate ``copytruncate``) is followed: the file is opened
  with ``O_APPEND``, so the next batch starts at its new end, never at the old offset (which
  would leave a hole of NULs). Lines written between logrotate's copy and its truncation
  are lost: that is ``copytruncate``'s own race; prefer ``create`` with a SIGHUP.
- A batch is written with unbuffered ``os.write`` calls from one starting offset. If one
  fails (a full disk, EIO), the file is cut back to that offset before the error is
  reported, so the retry cannot store any line twice; if even the cut fails, it is done
  before the next write. Nothing of a failed batch counts as sent.
- ``reopen()`` (SIGHUP, reload) closes the file and opens the path again, creating it.
"""

from __future__ import annotations

import asyncio
import os
import threading

import structlog

from ..batch import Batch
from ..config import FileSink
from .base import SendError, Sink

__all__ = ["File"]

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class File(Sink):
    kind = "file"

    def __init__(self, name: str, config: FileSink, data_dir: str) -> None:
        super().__init__(name)
        base = config.path if os.path.isabs(config.path) else os.path.join(data_dir, config.path)
        self.base = base
        self.path = base + ".ndjson"
        self.rotate_bytes = config.rotate_bytes
        self.keep_files = config.keep_files
        self.log = structlog.get_logger().bind(component=f"sink.{name}")
        self._fd: int | None = None
        self._identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the open file
        self._size = 0  # the open file's length after our last write
        self._torn_at: int | None = None  # a failed batch's start that could not be cut back yet
        # send() (with concurrency > 1), reopen() and close() run in threads: one at a time.
        self._lock = threading.Lock()

    # -- the open file ------------------------------------------------------------------

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        st = os.fstat(fd)
        self._fd, self._identity, self._size, self._torn_at = fd, (st.st_dev, st.st_ino), st.st_size, None

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _follow_path(self) -> None:
        """Make the open file the one the path names, at its current length."""
        if self._fd is None:
            self._open()
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._identity:
            self.log.info("file_sink_reopened", path=self.path, reason="deleted" if st is None else "replaced")
            self._close_file()
            self._open()
            return
        if st.st_size < self._size:
            self.log.info("file_sink_truncated", path=self.path, size=st.st_size, was=self._size)
            if self._torn_at is not None and self._torn_at > st.st_size:
                self._torn_at = None  # the torn tail went with the truncation
        self._size = st.st_size

    def _rotate(self) -> None:
        self._close_file()
        for i in range(self.keep_files, 0, -1):
            older = f"{self.base}.{i}.ndjson"
            if i == self.keep_files and os.path.exists(older):
                os.remove(older)
            elif os.path.exists(older):
                os.replace(older, f"{self.base}.{i + 1}.ndjson")
        os.replace(self.path, f"{self.base}.1.ndjson")
        self._open()

    # -- writing ------------------------------------------------------------------------

    def _write(self, body: bytes) -> None:
        with self._lock:
            self._follow_path()
            assert self._fd is not None
            if self._torn_at is not None:
                os.ftruncate(self._fd, self._torn_at)
                self._size, self._torn_at = self._torn_at, None
            if self._size and self._size + len(body) > self.rotate_bytes:
                self._rotate()
            self._append(self._fd, body)

    def _append(self, fd: int, body: bytes) -> None:
        start = self._size
        view = memoryview(body)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            if len(view) < len(body):  # part of the batch is in the file: take it back out
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    self._torn_at = start
            raise
        self._size = start + len(body)

    async def send(self, batch: Batch) -> None:
        body = batch.ndjson()
        try:
            await asyncio.to_thread(self._write, body)
        except OSError as e:
            # A full or read-only disk may recover: keep the batch and retry.
            raise SendError(f"writing batch to {self.path}: {e.strerror or e}", retryable=True) from None

    async def reopen(self) -> None:
        await asyncio.to_thread(self._reopen)

    def _reopen(self) -> None:
        with self._lock:
            self._close_file()
            try:
                self._open()
            except OSError as e:  # the next send tries again and reports it as its error
                self.log.warning("file_sink_reopen_failed", stage="sending", path=self.path, error=str(e.strerror or e))

    async def close(self) -> None:
        await asyncio.to_thread(self._close_locked)

    def _close_locked(self) -> None:
        with self._lock:
            self._close_file()

    async def check(self) -> str | None:
        directory = os.path.dirname(os.path.abspath(self.path))
        probe = directory
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.access(probe, os.W_OK):
            return f"{probe} is not writable"
        return None

    async def probe(self) -> bool:
        """The file's directory, or the nearest of its parents that exists (the sink creates
        the rest), is a writable directory. A full disk passes: its sends keep the backoff."""
        return await asyncio.to_thread(self._directory_writable)

    def _directory_writable(self) -> bool:
        directory = os.path.dirname(os.path.abspath(self.path))
        while not os.path.lexists(directory):
            directory = os.path.dirname(directory)
        return os.path.isdir(directory) and os.access(directory, os.W_OK)
