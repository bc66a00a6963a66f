"""``logpipe replay``: backfill old logs into one sink, through the daemon's own path
(parse -> enrich -> transforms -> encode once -> buffer -> batch -> deliver), without
listeners, next to a running daemon. This module is the wiring and the run; what the
inputs are and where a run stands is replay_input.py, what their lines and rows mean is
parse/records.py (sans-IO).

Sources (each SOURCE argument; gzip'd or not, detected by content, not by name):
- text: told apart line by line. A JSON-object line is a record (NDJSON, an event
  already; a dead letter is its original event); any other line is syslog, RFC 5424 or
  RFC 3164, parsed as the listeners parse it (a line fitting neither is kept raw,
  ``parse_error``). ``--format syslog`` reads every line as syslog. RFC 3164 stamps carry
  no year: it is inferred relative to the file's modification time.
- SQLite: ``--table NAME``; every column becomes a field, read in ``rowid`` order (tables
  WITHOUT ROWID are not supported).
Records and rows are normalized like live events (``--map`` renames, ``msg``/``message``
to ``_msg``, ``level``, and ``_time`` read and rewritten; see parse/records.py).

Time: ``_time`` comes from the data, never from the replay clock. An event without a
readable one (a syslog line without a stamp, a record without ``_time`` or with one that
cannot be read) gets its file's modification time; those are counted in the summary.

Resumable: the checkpoint file (JSON, replaced atomically) records for each source the
position up to which every event has been **confirmed by the sink** (or dead-lettered):
a byte offset in the uncompressed stream for files, the last rowid for SQLite. It is
advanced only when the deliverer acknowledges a batch, never when a line is merely read.
Re-running the same command skips finished sources and continues the others from there
(a run with nothing left says it was already complete).
Each file's entry also holds a hash of its first bytes (up to 64 KiB): a different file at
the same path is refused instead of being resumed at a foreign offset; an uncompressed file
that grew after it was finished is continued (its appended lines only).
- SIGINT/SIGTERM: reading stops, what is buffered is delivered (up to
  ``daemon.shutdown_timeout_s``), the checkpoint is written: resuming neither loses nor
  repeats an event.
- SIGKILL / power loss: the checkpoint lags at most the batch in flight, which is sent
  again on resume (at least once; never a loss).

Accounting: every event read is sent, dead-lettered, dropped by a transform, or routed by
a ``route`` transform to other sinks only (not this one); the summary counts each.

Rate: ``--rate N`` caps events read per second so a live daemon writing to the same store
keeps priority. The buffer is in memory (the checkpoint is the durable state; the daemon's
disk buffer directory is never touched) and bounded: reading waits while it is full.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from dataclasses import field as dc_field

import msgspec
import structlog

from .batch import Batch
from .buffer.memory import MemoryBuffer
from .config import Config
from .daemon.assemble import assemble, syslog_settings
from .parse.records import RecordReader
from .parse.syslog import SyslogParser
from .parse.timestamps import epoch_time, format_time
from .replay_input import Checkpoint, Source, open_source

__all__ = ["ReplayOptions", "Replay", "open_source", "Checkpoint", "epoch_to_time"]

MAX_BUFFER_BYTES = 64 * 1024 * 1024


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
    return epoch_time(value) or format_time(0)


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
        source, syslog = syslog_settings(config, options.source)
        # One batch in flight (acknowledgements advance the checkpoint in order) and a
        # buffer that waits for room instead of dropping.
        replace = msgspec.structs.replace
        sink_config = replace(sink_config, concurrency=1, buffer=replace(sink_config.buffer, when_full="block"))
        config = replace(config, sinks={**config.sinks, options.sink: sink_config})
        parser = SyslogParser(syslog.timezone, syslog.parse_body == "auto", source=source)
        self.reader = RecordReader(parser, syslog.max_line_bytes, options.mapping, syslog.timezone)
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
        self.fallback_times: dict[str, str] = {}  # source -> the time events without one got
        self.already_complete = False
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
        reader = self.reader
        before = reader.time_missing + reader.time_unreadable
        if source.kind == "sqlite":
            events = reader.rows(items, source.mtime)
        else:
            events = reader.lines(items, source.mtime, source.json_records)  # type: ignore[attr-defined]
        if reader.time_missing + reader.time_unreadable != before:
            self.fallback_times[source.path] = format_time(source.mtime)
        return events

    async def _read_all(self) -> None:
        rate = self.options.rate
        started = time.monotonic()
        for source in self._sources:
            start, done = self.checkpoint.position(source.key)
            if done and not source.grew_past(start):
                continue
            self._current = source
            position = start
            for items, position in source.chunks(start):
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
            finished = 0
            for source in self._sources:
                position, done = self.checkpoint.position(source.key, source)
                if done and not source.grew_past(position):
                    finished += 1
                    self._units_before += source.total_units
                    self._units_done_prior += source.total_units
            self.already_complete = finished == len(self._sources)
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
        dropped = self.metrics.get("logpipe_transform_dropped_total")
        dropped_events = int(dropped.total()) if dropped is not None else 0
        return {
            "complete": complete,
            "already_complete": self.already_complete,
            "interrupted": self.interrupted,
            "read_events": self.read_events,
            "sent_events": self.buffer.acked,
            "dead_letter_events": int(dead.total()) if dead is not None else 0,
            "unconfirmed_events": self.buffer.events,
            "dropped_by_transforms_events": dropped_events,
            # a route sent them to other sinks only: replay feeds just --sink
            "routed_elsewhere_events": self.read_events - self.buffer.pushed - dropped_events,
            "time_missing_events": self.reader.time_missing,
            "time_unreadable_events": self.reader.time_unreadable,
            "fallback_times": self.fallback_times,
            "elapsed_s": round(elapsed, 3),
            "events_per_s": round(self.buffer.acked / elapsed) if elapsed > 0 else 0,
            "checkpoint": self.checkpoint.path,
        }
