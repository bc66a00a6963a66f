"""File sink: NDJSON under ``daemon.data_dir``, rotated by size. The embedded default:
it needs no server, so ``make run`` works on a bare machine.

``PATH.ndjson`` is the live file; at ``rotate_bytes`` it becomes ``PATH.1.ndjson`` (older
ones shift up) and at most ``keep_files`` rotated files are kept. Writes run in a thread so
a slow disk never stalls the event loop; a batch is one write call.
"""

from __future__ import annotations

import asyncio
import os

from ..buffer.base import Batch
from ..config import FileSink
from .base import SendError, Sink

__all__ = ["File"]


class File(Sink):
    kind = "file"

    def __init__(self, name: str, config: FileSink, data_dir: str) -> None:
        super().__init__(name)
        base = config.path if os.path.isabs(config.path) else os.path.join(data_dir, config.path)
        self.base = base
        self.path = base + ".ndjson"
        self.rotate_bytes = config.rotate_bytes
        self.keep_files = config.keep_files
        self._file = None
        self._size = 0

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "ab")
        self._size = self._file.tell()

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        for i in range(self.keep_files, 0, -1):
            older = f"{self.base}.{i}.ndjson"
            if i == self.keep_files and os.path.exists(older):
                os.remove(older)
            elif os.path.exists(older):
                os.replace(older, f"{self.base}.{i + 1}.ndjson")
        os.replace(self.path, f"{self.base}.1.ndjson")
        self._open()

    def _write(self, body: bytes) -> None:
        if self._file is None:
            self._open()
        assert self._file is not None
        if self._size and self._size + len(body) > self.rotate_bytes:
            self._rotate()
        self._file.write(body)
        self._file.flush()
        self._size += len(body)

    async def send(self, batch: Batch) -> None:
        body = batch.ndjson()
        try:
            await asyncio.to_thread(self._write, body)
        except OSError as e:
            # A full or read-only disk may recover: keep the batch and retry.
            raise SendError(f"writing batch to {self.path}: {e.strerror}", retryable=True) from None

    async def close(self) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None

    async def check(self) -> str | None:
        directory = os.path.dirname(os.path.abspath(self.path))
        probe = directory
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.access(probe, os.W_OK):
            return f"{probe} is not writable"
        return None
