"""The metadata table on disk: restored at start, saved at stop and within
``snapshot_interval_s`` of a change, so a restart does not forget the containers that
announced themselves.

The writer sleeps until the table changes (``MetadataTable.on_change``), then waits the
interval, gathering every change of that interval into one write. A table that does not
change (an idle daemon; entries that only expire, which a restore skips anyway) is never
rewritten and never wakes the loop.
"""

from __future__ import annotations

import asyncio
import os

import structlog

from ..enrich import MetadataTable

__all__ = ["MetadataSnapshot"]


class MetadataSnapshot:
    def __init__(self, path: str, table: MetadataTable) -> None:
        self.path = path
        self.table = table
        self.log = structlog.get_logger().bind(component="metadata")
        self._changed = asyncio.Event()

    def restore(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as e:
            self.log.warning("metadata_snapshot_unreadable", path=self.path, error=e.strerror)
            return
        try:
            restored = self.table.restore_bytes(data)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.log.warning("metadata_snapshot_damaged", path=self.path, error=str(e)[:200])
            return
        self.log.info("metadata_restored", entries=restored)

    def write(self, data: bytes) -> None:
        """Atomic: a temp file, fsync, rename; a crash leaves the old snapshot or the new."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def save_now(self) -> None:
        try:
            self.write(self.table.snapshot_bytes())
        except OSError as e:
            self.log.warning("metadata_snapshot_failed", path=self.path, error=e.strerror)

    def watch(self) -> None:
        """From now on a change of the table wakes ``every``."""
        self.table.on_change = self._changed.set

    def unwatch(self) -> None:
        self.table.on_change = None

    async def every(self, interval_s: float) -> None:
        """Save within ``interval_s`` of each change (after ``watch``); runs until cancelled."""
        while True:
            await self._changed.wait()
            await asyncio.sleep(interval_s)
            self._changed.clear()  # a change from here on is in this write or wakes the next
            try:
                # Serialise on the loop (a consistent view), write in a thread.
                await asyncio.to_thread(self.write, self.table.snapshot_bytes())
            except OSError as e:
                self.log.warning("metadata_snapshot_failed", path=self.path, error=e.strerror)
