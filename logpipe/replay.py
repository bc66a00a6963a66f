"""``logpipe replay``: backfill old logs into one sink, through the daemon's own path
(parse -> enrich -> transforms -> encode once -> buffer -> batch -> deliver), without
listeners, next to a running daemon.

Sources (each SOURCE argument; gzip'd or not, detected by content, not by name):
- NDJSON: one JSON object per line, already an event. ``--map NEW=OLD`` renames fields;
  a numeric ``_time`` (epoch s/ms/us/ns) becomes RFC 3339. A line that is not a JSON
  object is not lost: it is parsed as a syslog line (so it lands raw, ``parse_error``).
- raw syslog: one message per line, RFC 5424 or RFC 3164, parsed as the listeners parse.
  RFC 3164 stamps carry no year: it is inferred relative to the file's modification time
  (lines up to a year older than the file). Lines without a stamp get that time too.
- SQLite: ``--table NAME``; every column becomes a field (``--map`` renames), read in
  ``rowid`` order (tables WITHOUT ROWID are not supported).

Original timestamps are kept (``_time`` comes from the data, never from the replay clock,
except as said above for stamp-less syslog lines).

Resumable: the checkpoint file (JSON, replaced atomically) records for each source the
position up to which every event has been **confirmed by the sink** (or dead-lettered):
a byte offset in the uncompressed stream for files, the last rowid for SQLite. It is
advanced only when the deliverer acknowledges a batch, never when a line is merely read.
Re-running the same command skips finished sources and continues the others from there.
Each file's entry also holds a hash of its first bytes (up to 64 KiB): a different file at
the same path is refused instead of being resumed at a foreign offset; an uncompressed file
that grew after it was finished is continued (its appended lines only).
- SIGINT/SIGTERM: reading stops, what is buffered is delivered (up to
  ``daemon.shutdown_timeout_s``), the checkpoint is written: resuming neither loses nor
  repeats an event.
- SIGKILL / power loss: the checkpoint lags at most the batch in flight, which is sent
  again on resume (at least once; never a loss).

Rate: ``--rate N`` caps events read per second so a live daemon writing to the same store
keeps priority. The buffer is in memory (the checkpoint is the durable state; the daemon's
disk buffer directory is never touched) and bounded: reading waits while it is full.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field as dc_field
from typing import Iterator

import msgspec
import orjson
import structlog

from .buffer.base import Batch
from .buffer.memory import MemoryBuffer
from .config import Config
from .daemon.assemble import assemble, syslog_settings
from .parse.framing import truncate_datagram
from .parse.syslog import SyslogParser
from .parse.timestamps import format_time

__all__ = ["ReplayOptions", "Replay", "open_source", "Checkpoint"]

CHUNK_BYTES = 256 * 1024
CHUNK_ROWS = 2000
MAX_BUFFER_BYTES = 64 * 1024 * 1024
_SQLITE_MAGIC = b"SQLite format 3\0"


@dataclass
class ReplayOptions:
    sink: str
    sources: list[str]
    source: str | None = None  # the syslog source whose timezone and parse_body apply
    checkpoint: str | None = None
    rate: float | None = None
    format: str = "auto"  # auto | ndjson | syslog
    table: str | None = None
    mapping: dict[str, str] = dc_field(default_factory=dict)  # new name -> old name
    progress: bool = True


def epoch_to_time(value: float) -> str:
    """Seconds, milliseconds, microseconds or nanoseconds since the epoch -> ``_time``."""
    magnitude = abs(value)
    if magnitude >= 1e17:
        value /= 1e9
    elif magnitude >= 1e14:
        value /= 1e6
    elif magnitude >= 1e11:
        value /= 1e3
    return format_time(value)


def remap(event: dict, mapping: dict[str, str]) -> dict:
    for new, old in mapping.items():
        if old in event:
            event[new] = event.pop(old)
    when = event.get("_time")
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        event["_time"] = epoch_to_time(float(when))
    return event


# --- sources ------------------------------------------------------------------------------


class Source:
    """One SOURCE argument. ``chunks(position)`` yields (items, new position) from ``position``;
    ``done_units()`` / ``total_units`` drive the progress bar."""

    kind = "?"
    total_units = 1

    def __init__(self, path: str) -> None:
        self.path = path
        self.key = os.path.abspath(path)
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
    def __init__(self, path: str, kind: str, compressed: bool) -> None:
        super().__init__(path)
        self.kind = kind
        self.compressed = compressed
        self.total_units = max(os.path.getsize(path), 1)
        self.mtime = os.path.getmtime(path)
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
            yield [dict(zip(names[1:], row[1:])) for row in rows], position

    def done_units(self) -> int:
        return self._done

    def close(self) -> None:
        self._db.close()


def open_source(path: str, fmt: str = "auto", table: str | None = None) -> Source:
    """Detect what ``path`` holds (SQLite, gzip, NDJSON or syslog text) and open it."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_SQLITE_MAGIC):
        if not table:
            raise ValueError(f"{path}: a SQLite database: name the table with --table")
        return SqliteTable(path, table)
    compressed = head[:2] == b"\x1f\x8b"
    kind = fmt
    if kind == "auto":
        opener = gzip.open if compressed else open
        kind = "syslog"
        with opener(path, "rb") as f:  # type: ignore[operator]
            for line in f:
                if line.strip():
                    kind = "ndjson" if line.lstrip().startswith(b"{") else "syslog"
                    break
    return LineFile(path, kind, compressed)


# --- checkpoint ---------------------------------------------------------------------------


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


# --- the run ------------------------------------------------------------------------------


class _AckedBuffer(MemoryBuffer):
    """A memory buffer that counts records pushed and acknowledged. One deliverer acks
    batches in the order it took them, so the acknowledged records are always a prefix of
    the pushed ones: ``acked`` is a position in the replay's record stream."""

    def __init__(self, name: str, max_bytes: int, on_ack) -> None:
        super().__init__(name, max_bytes)
        self.pushed = 0
        self.acked = 0
        self._on_ack = on_ack

    def push(self, records: list[bytes], nbytes: int) -> None:
        self.pushed += len(records)
        super().push(records, nbytes)

    def push_lines(self, lines: bytes, count: int) -> None:
        self.pushed += count
        super().push_lines(lines, count)

    def ack(self, batch: Batch) -> None:
        super().ack(batch)
        self.acked += len(batch)
        self._on_ack()


class Replay:
    def __init__(self, config: Config, options: ReplayOptions) -> None:
        if options.sink not in config.sinks:
            raise ValueError(f"--sink {options.sink}: no such sink (have: {', '.join(sorted(config.sinks))})")
        self.config = config
        self.options = options
        self.log = structlog.get_logger().bind(component="replay")
        data_dir = config.daemon.data_dir
        sink_config = config.sinks[options.sink]
        self.checkpoint = Checkpoint(
            options.checkpoint or os.path.join(data_dir, "replay", f"{options.sink}.checkpoint.json"), options.sink
        )
        _, syslog = syslog_settings(config, options.source)
        # One batch in flight (acknowledgements advance the checkpoint in order) and a
        # buffer that waits for room instead of dropping.
        replace = msgspec.structs.replace
        sink_config = replace(sink_config, concurrency=1, buffer=replace(sink_config.buffer, when_full="block"))
        config = replace(config, sinks={options.sink: sink_config})
        self.parser = SyslogParser(syslog.timezone, syslog.parse_body == "auto")  # SOURCE-FIELD
        self.max_line = syslog.max_line_bytes
        self.buffer = _AckedBuffer(options.sink, min(sink_config.buffer.max_bytes, MAX_BUFFER_BYTES), self._acknowledged)
        graph = assemble(config, sink_names=[options.sink], make_buffer=lambda _name, _config: self.buffer, offline=True)
        self.metrics = graph.metrics
        unit = graph.sinks[options.sink]
        self.sink, self.deliverer, self.pipeline = unit.sink, unit.deliverer, graph.pipeline
        self._room = asyncio.Event()
        self._room.set()
        self.buffer.on_pressure = lambda full: self._room.clear() if full else self._room.set()
        self.shutdown_timeout_s = config.daemon.shutdown_timeout_s
        # (records pushed when the mark was made, source, position, source finished)
        self._marks: list[tuple[int, Source, int, bool]] = []
        self._stop = asyncio.Event()
        self.read_events = 0
        self.interrupted = False
        self._sources: list[Source] = []
        self._units_before = 0  # progress units of sources finished before this run
        self._current: Source | None = None
        self._units_done_prior = 0

    # --- acknowledgement -> checkpoint -------------------------------------------------

    def _acknowledged(self) -> None:
        acked = self.buffer.acked
        marks = self._marks
        advanced = False
        i = 0
        while i < len(marks) and marks[i][0] <= acked:
            _, source, position, done = marks[i]
            self.checkpoint.advance(source, position, done)
            advanced = True
            i += 1
        if i:
            del marks[:i]
        if advanced:
            self.checkpoint.save()

    def _mark(self, source: Source, position: int, done: bool) -> None:
        self._marks.append((self.buffer.pushed, source, position, done))
        if self.buffer.pushed <= self.buffer.acked:
            self._acknowledged()

    # --- reading ---------------------------------------------------------------------------

    def _events(self, source: Source, items: list) -> list[dict]:
        mapping = self.options.mapping
        if source.kind == "sqlite":
            return [remap(row, mapping) for row in items]
        recv_time = source.mtime  # type: ignore[attr-defined]
        max_line = self.max_line
        if source.kind == "syslog":
            lines = [truncate_datagram(line, max_line) for line in items]
            return self.parser.parse_lines([line for line in lines if line], recv_time, None)
        events = []
        loads = orjson.loads
        for line in items:
            line = line.strip()
            if not line:
                continue
            try:
                event = loads(line)
            except orjson.JSONDecodeError:
                event = None
            if isinstance(event, dict):
                events.append(remap(event, mapping))
            else:  # kept, as a raw line with parse_error
                events.append(self.parser.parse(truncate_datagram(line, max_line), recv_time, None))
        return events

    async def _read_all(self) -> None:
        rate = self.options.rate
        started = time.monotonic()
        for source in self._sources:
            position, done = self.checkpoint.position(source.key)
            if done and not source.grew_past(position):
                continue
            self._current = source
            for items, position in source.chunks(position):
                if self._stop.is_set():
                    return
                if not self._room.is_set():
                    await self._wait_or_stop(self._room)
                    if self._stop.is_set():
                        return
                events = self._events(source, items)
                self.read_events += len(events)
                self.pipeline.ingest(events, True)
                self._mark(source, position, False)
                if rate:
                    ahead = started + self.read_events / rate - time.monotonic()
                    if ahead > 0:
                        try:
                            await asyncio.wait_for(self._stop.wait(), ahead)
                        except TimeoutError:
                            pass
                else:
                    await asyncio.sleep(0)  # let the deliverer run between chunks
            self._mark(source, position, True)
            self._units_done_prior += source.total_units
            self._current = None

    async def _wait_or_stop(self, event: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    # --- progress ---------------------------------------------------------------------------

    def _progress_line(self, elapsed: float) -> str:
        total = sum(s.total_units for s in self._sources) or 1
        done = self._units_done_prior + (self._current.done_units() if self._current else 0)
        fraction = min(done / total, 1.0)
        rate = self.buffer.acked / elapsed if elapsed > 0 else 0.0
        base = self._units_before / total
        run_fraction = fraction - base
        eta = elapsed * (1 - fraction) / run_fraction if run_fraction > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "--:--:--"
        width = 24
        filled = int(width * fraction)
        return (f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}%  read {self.read_events:,}  "
                f"sent {self.buffer.acked:,}  {rate:,.0f} ev/s  ETA {eta_text}")

    async def _report_progress(self, started: float) -> None:
        tty = sys.stderr.isatty()
        interval = 0.25 if tty else 5.0
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), interval)
            except TimeoutError:
                pass
            line = self._progress_line(time.monotonic() - started)
            sys.stderr.write(("\r" + line) if tty else (line + "\n"))
            sys.stderr.flush()
            if self._stop.is_set():
                return

    # --- run ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self._stop.is_set():
            self.interrupted = True
            self._stop.set()

    async def run(self, install_signals: bool = True) -> dict:
        try:
            for path in self.options.sources:
                self._sources.append(open_source(path, self.options.format, self.options.table))
            for source in self._sources:
                position, done = self.checkpoint.position(source.key, source)
                if done and not source.grew_past(position):
                    self._units_before += source.total_units
                    self._units_done_prior += source.total_units
        except BaseException:
            for source in self._sources:
                source.close()
            raise
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        started = time.monotonic()
        await self.sink.start()
        delivery = asyncio.create_task(self.deliverer.run(), name=f"deliver.{self.options.sink}")
        progress = asyncio.create_task(self._report_progress(started)) if self.options.progress else None
        try:
            await self._read_all()
            self.buffer.close()
            done, _ = await asyncio.wait([delivery], timeout=self.shutdown_timeout_s)
            if not done:
                self.deliverer.abort()
                await asyncio.wait([delivery], timeout=5)
        finally:
            if not delivery.done():
                delivery.cancel()
            if progress is not None:
                self._stop.set()
                await progress
                if sys.stderr.isatty():
                    sys.stderr.write("\n")
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self.sink.close()
            await self.buffer.aclose()
            for source in self._sources:
                source.close()
            self.checkpoint.save()
        elapsed = time.monotonic() - started
        complete = all(self.checkpoint.position(s.key)[1] for s in self._sources)
        dead = self.metrics.get("logpipe_dead_letter_events_total")
        return {
            "complete": complete,
            "interrupted": self.interrupted,
            "read_events": self.read_events,
            "sent_events": self.buffer.acked,
            "dead_letter_events": int(dead.total()) if dead is not None else 0,
            "unconfirmed_events": self.buffer.events,
            "elapsed_s": round(elapsed, 3),
            "events_per_s": round(self.buffer.acked / elapsed) if elapsed > 0 else 0,
            "checkpoint": self.checkpoint.path,
        }
