"""The disk buffer's bookkeeping types and small file helpers (format: disk.py's docstring).

A position is ``(segment id, offset of a record, events of that record already done)``."""

from __future__ import annotations

import os
import re

import structlog

from .base import fit_lines, fit_records

__all__ = ["SEGMENT_RE", "LEDGER", "Position", "Segment", "Frame", "InFlight", "segment_name", "close_fd",
           "fsync_path", "remove_file"]

SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
LEDGER = "ledger.json"

Position = tuple[int, int, int]


def segment_name(seg_id: int) -> str:
    return f"{seg_id:020d}.seg"


class Segment:
    __slots__ = ("id", "path", "end", "undecoded_events", "undecoded_bytes", "bad", "deleted")

    def __init__(self, seg_id: int, path: str) -> None:
        self.id = seg_id
        self.path = path
        self.end = 0  # bytes of valid records; writes append here
        # Events not yet read from this segment; what is left when the reader reaches
        # ``end`` was lost to damage found while reading.
        self.undecoded_events = 0
        self.undecoded_bytes = 0
        self.bad: set[int] = set()  # offsets of damage already counted
        # Set once the file is unlinked (every event in it acknowledged): the fsync thread
        # then skips its pending fsync, so data a healthy sink already took never goes to disk.
        self.deleted = False


class Frame:
    """A record read ahead of delivery: its events as one NDJSON blob (``bytes``, each
    followed by a newline) or, when they hold raw newlines (record format 1), a list.
    ``skip`` events of it are already handed out; in a blob they end at byte ``cut``."""

    __slots__ = ("seg", "offset", "end", "data", "count", "skip", "cut", "nbytes", "written_at")

    def __init__(self, seg: int, offset: int, end: int, data: bytes | list[bytes], count: int, skip: int,
                 nbytes: int, written_at: float) -> None:
        self.seg = seg
        self.offset = offset
        self.end = end
        self.data = data
        self.count = count
        self.skip = skip
        self.cut = 0
        if skip and type(data) is bytes:
            for _ in range(skip):
                self.cut = data.index(b"\n", self.cut) + 1
        self.nbytes = nbytes  # of the events not yet handed out
        self.written_at = written_at

    def rest(self) -> bytes | list[bytes]:
        """The events not yet handed out."""
        if type(self.data) is bytes:
            return self.data[self.cut :] if self.cut else self.data
        return self.data[self.skip :]

    def take(self, room: int, budget: int, first: bool) -> bytes | list[bytes] | None:
        """Hand out as many of the rest as fit ``room`` events and ``budget`` bytes (the
        ``first`` of a batch always fits); None when none fit."""
        data = self.data
        if type(data) is bytes:
            taken, size = fit_lines(data, room, budget, first, self.cut)
            part: bytes | list[bytes] = data[self.cut : self.cut + size]
            self.cut += size
        else:
            assert isinstance(data, list)
            taken, size = fit_records(data[self.skip :], room, budget, first)
            part = data[self.skip : self.skip + taken]
        if not taken:
            return None
        self.skip += taken
        self.nbytes -= size
        return part


class InFlight:
    __slots__ = ("end", "events", "nbytes", "written_at", "acked")

    def __init__(self, end: Position, events: int, nbytes: int, written_at: float) -> None:
        self.end = end
        self.events = events
        self.nbytes = nbytes
        self.written_at = written_at
        self.acked = False


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:  # pragma: no cover - a file we cannot delete is retried next start
        structlog.get_logger().warning("buffer_delete_failed", stage="buffering", path=path, error=str(e))
