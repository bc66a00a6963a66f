"""What ``logpipe replay`` reads, and where it stands: the I/O half of its input.

- :func:`open_source` opens one SOURCE argument: a SQLite database (``--table``), or a
  text file, gzip'd or not (detected from the content, never the name). Text files yield
  chunks of lines, SQLite tables chunks of rows in ``rowid`` order; what the lines and rows
  mean is parse/records.py's business.
- :class:`Checkpoint` records, per source, the position up to which every event has been
  confirmed by the sink (a byte offset in the uncompressed stream, or the last rowid), with
  a fingerprint of the file's first bytes (up to 64 KiB) so that a different file at the
  same path is refused instead of resumed at a foreign offset. It is replaced atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sqlite3
from collections.abc import Iterator

import orjson

__all__ = ["Source", "LineFile", "SqliteTable", "open_source", "Checkpoint", "CHUNK_BYTES", "CHUNK_ROWS"]

CHUNK_BYTES = 256 * 1024
CHUNK_ROWS = 2000
_SQLITE_MAGIC = b"SQLite format 3\0"


class Source:
    """One SOURCE argument. ``chunks(position)`` yields (items, new position) from ``position``;
    ``done_units()`` / ``total_units`` drive the progress bar. ``mtime`` is the time an event
    without a readable time of its own gets (see parse/records.py)."""

    kind = "?"
    total_units = 1

    def __init__(self, path: str) -> None:
        self.path = path
        self.key = os.path.abspath(path)
        self.mtime = os.path.getmtime(path)
        # identifies the content a checkpoint position belongs to: hash of the first bytes
        self.fingerprint = ""
        self.fingerprint_bytes = 0

    def fingerprint_for(self, length: int) -> str:
        return ""

    def grew_past(self, position: int) -> bool:
        """True if there is more to read after ``position`` than there was (appended lines)."""
        return False

    def chunks(self, position: int) -> Iterator[tuple[list, int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def done_units(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class LineFile(Source):
    """A text file. ``json_records``: JSON-object lines are records, others syslog (told
    apart per line); False reads every line as syslog (``--format syslog``)."""

    kind = "text"

    def __init__(self, path: str, json_records: bool, compressed: bool) -> None:
        super().__init__(path)
        self.json_records = json_records
        self.compressed = compressed
        self.total_units = max(os.path.getsize(path), 1)
        self._raw = open(path, "rb")
        # Up to the first 64 KiB: a rotated or rewritten file at the same path must not be
        # resumed at an offset that belonged to another file (appending keeps it valid).
        self.fingerprint_bytes = min(65536, os.path.getsize(path))
        self.fingerprint = self.fingerprint_for(self.fingerprint_bytes)
        self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb") if compressed else self._raw

    def fingerprint_for(self, length: int) -> str:
        self._raw.seek(0)
        head = self._raw.read(length)
        self._raw.seek(0)
        return hashlib.sha256(head).hexdigest()[:32] if len(head) == length else "(shorter)"

    def grew_past(self, position: int) -> bool:
        return not self.compressed and os.path.getsize(self.path) > position

    def chunks(self, position: int) -> Iterator[tuple[list[bytes], int]]:
        stream = self._stream
        if position:
            stream.seek(position)  # gzip: decompresses up to there
        while True:
            lines = stream.readlines(CHUNK_BYTES)
            if not lines:
                return
            position += sum(map(len, lines))
            yield lines, position

    def done_units(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._stream.close()
        self._raw.close()


class SqliteTable(Source):
    kind = "sqlite"

    def __init__(self, path: str, table: str) -> None:
        super().__init__(path)
        self.key = f"{os.path.abspath(path)}#{table}"
        # Read-only: the old store may still be in use by something else.
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self._table = '"' + table.replace('"', '""') + '"'
        try:
            row = self._db.execute(f"SELECT count(*), max(rowid) FROM {self._table}").fetchone()
        except sqlite3.Error as e:
            self._db.close()
            raise ValueError(f"{path}: table {table!r}: {e}") from None
        self.total_units = max(row[0] or 0, 1)
        self._done = 0

    def chunks(self, position: int) -> Iterator[tuple[list[dict], int]]:
        if position:
            self._done = self._db.execute(f"SELECT count(*) FROM {self._table} WHERE rowid <= ?", (position,)).fetchone()[0]
        while True:
            cursor = self._db.execute(
                f"SELECT rowid AS __rowid, * FROM {self._table} WHERE rowid > ? ORDER BY rowid LIMIT ?", (position, CHUNK_ROWS)
            )
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            if not rows:
                return
            position = rows[-1][0]
            self._done += len(rows)
            yield [dict(zip(names[1:], row[1:], strict=True)) for row in rows], position

    def done_units(self) -> int:
        return self._done

    def close(self) -> None:
        self._db.close()


def open_source(path: str, fmt: str = "auto", table: str | None = None) -> Source:
    """Open ``path``: a SQLite database, or a text file (gzip'd or not). ``fmt`` "syslog"
    reads every line as syslog; "auto" and "ndjson" tell JSON records from syslog lines
    line by line, so a file whose first line is cut is not misread as a whole."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_SQLITE_MAGIC):
        if not table:
            raise ValueError(f"{path}: a SQLite database: name the table with --table")
        return SqliteTable(path, table)
    return LineFile(path, fmt != "syslog", head[:2] == b"\x1f\x8b")


class Checkpoint:
    """``{"sink": NAME, "sources": {KEY: {"position": N, "done": bool}}}``, replaced atomically."""

    def __init__(self, path: str, sink: str) -> None:
        self.path = path
        self.sink = sink
        self.sources: dict[str, dict] = {}
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = orjson.loads(f.read())
            if data.get("sink") != sink:
                raise ValueError(f"{path}: checkpoint of sink {data.get('sink')!r}, not {sink!r}")
            self.sources = data.get("sources", {})

    def position(self, key: str, source: Source | None = None) -> tuple[int, bool]:
        entry = self.sources.get(key, {})
        if source is not None and entry.get("fingerprint") and (
            source.fingerprint_for(int(entry.get("fingerprint_bytes", 0))) != entry["fingerprint"]
        ):
            raise ValueError(f"{key}: its content changed since the checkpoint {self.path} was written; "
                             "delete the checkpoint to replay it from the start")
        return int(entry.get("position", 0)), bool(entry.get("done", False))

    def advance(self, source: Source, position: int, done: bool) -> None:
        self.sources[source.key] = {"position": position, "done": done, "fingerprint": source.fingerprint,
                                    "fingerprint_bytes": source.fingerprint_bytes}

    def save(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps({"sink": self.sink, "sources": self.sources}, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)
