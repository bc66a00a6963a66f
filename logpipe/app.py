"""Wiring and lifecycle: build everything from a Config, bind, run, drain on stop.

Order of a graceful stop (SIGTERM/SIGINT), which is what makes it lose nothing:
1. close the listeners and every TCP connection (each connection's unterminated tail is
   flushed into the pipeline) and flush the UDP burst being gathered;
2. close the buffers: each delivery loop sends everything left, without waiting for
   ``max_age_ms``;
3. after ``daemon.shutdown_timeout_s`` stop retrying; what a memory buffer still holds is
   counted (``dropped_events_total{stage="shutdown"}``) and logged; a disk buffer keeps it;
4. close sinks and buffers, then the API.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import structlog
from aiohttp import web

from .api import build_app
from .buffer.base import LOW_WATERMARK, Buffer
from .buffer.memory import MemoryBuffer
from .config import Config, ConfigError, load, parse_address, read_secret
from .deliver import DeadLetters, Deliverer
from .enrich import Enricher, MetadataTable
from .hold import Hold
from .metrics import Metrics
from .pipeline import FlowControl, Pipeline, SinkLane
from .sinks import Sink, build as build_sink
from .sources.metadata import RESULTS as ANNOUNCEMENT_RESULTS, MetadataListener
from .sources.syslog import SyslogListeners
from .transforms import Transforms

__all__ = ["Daemon"]


def build_buffer(name: str, config: Any, data_dir: str, metrics: Metrics) -> Buffer:
    if config.buffer.type == "disk":
        from .buffer.disk import DiskBuffer

        return DiskBuffer(name, os.path.join(data_dir, "buffer", name), config.buffer, metrics)
    return MemoryBuffer(name, config.buffer.max_bytes)


def _quiet_bad_http_requests() -> None:
    """aiohttp logs a traceback for every malformed request a client sends; that is the
    client's problem, and a flood of them would flood our logs. Real handler errors stay."""
    import logging

    from aiohttp.http_exceptions import HttpProcessingError

    class _DropClientErrors(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            exc = record.exc_info[1] if record.exc_info else None
            return not isinstance(exc, HttpProcessingError)

    server_logger = logging.getLogger("aiohttp.server")
    if not any(type(f).__name__ == "_DropClientErrors" for f in server_logger.filters):
        server_logger.addFilter(_DropClientErrors())


def build_deliverer(name: str, config: Any, sink: Sink, buffer: Buffer, data_dir: str, metrics: Metrics) -> Deliverer:
    return Deliverer(
        sink,
        buffer,
        config.batch,
        retry_initial_s=config.retry_initial_ms / 1000,
        retry_max_s=config.retry_max_ms / 1000,
        dead_letters=DeadLetters(data_dir, name),
        metrics=metrics,
        concurrency=config.concurrency,
    )


class Daemon:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path  # re-read on SIGHUP and POST /api/reload
        self.metrics = Metrics()
        self.log = structlog.get_logger().bind(component="daemon")
        self.started = time.time()
        data_dir = config.daemon.data_dir
        metadata_config = config.sources.metadata
        self.table = MetadataTable(
            metadata_config.max_entries if metadata_config else 100_000,
            metadata_config.ttl_s if metadata_config else 600,
            self.metrics,
        )
        self.enricher = Enricher(self.table, config.enrich.pairs(), self.metrics)
        self.transforms = Transforms(config.transforms, self.metrics)
        self.flow = FlowControl()
        self.sinks: dict[str, Sink] = {}
        self.buffers: dict[str, Buffer] = {}
        self.deliverers: dict[str, Deliverer] = {}
        lanes = []
        for name, sink_config in config.sinks.items():
            sink = build_sink(name, sink_config, data_dir)
            buffer = build_buffer(name, sink_config, data_dir, self.metrics)
            self.sinks[name] = sink
            self.buffers[name] = buffer
            self.deliverers[name] = build_deliverer(name, sink_config, sink, buffer, data_dir, self.metrics)
            lanes.append(SinkLane(name, buffer, sink_config.buffer.when_full, self.flow, self.metrics))
        self.pipeline = Pipeline(self.enricher, self.transforms, lanes, self.metrics)
        self.syslog = (
            SyslogListeners(config.sources.syslog, self.pipeline, self.flow, self.metrics) if config.sources.syslog else None
        )
        if metadata_config and config.enrich.hold_ms > 0:
            self.pipeline.hold = Hold(
                config.enrich.hold_ms,
                config.enrich.hold_max_events,
                config.enrich.hold_max_bytes,
                config.enrich.pairs(),
                self.pipeline.release,
                self.metrics,
            )
            self.table.on_store = self.pipeline.hold.announced
        self.metadata = None
        # Read once at start; a reload keeps it (a changed secret needs a restart).
        self._metadata_secret: bytes | None = None
        if metadata_config:
            self._metadata_secret = read_secret(
                metadata_config.secret, metadata_config.secret_file, metadata_config.secret_env, "secret"
            )
            self.metadata = MetadataListener(metadata_config, self.table, self.metrics, secret=self._metadata_secret)
        self.snapshot_path = os.path.join(data_dir, "metadata.snapshot")
        self.api_address: tuple[str, int] | None = None
        self._api_runner: web.AppRunner | None = None
        self._api_site: web.TCPSite | None = None
        self._background: set[asyncio.Task] = set()
        self.tap_hub = None  # api.TapHub, once the API is built
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.ready = asyncio.Event()
        # Every metric the spec names exists from startup, even without a metadata source.
        announcements = self.metrics.counter("logpipe_metadata_announcements_total", "Announcements received, by result", ("result",))
        for result in ANNOUNCEMENT_RESULTS:
            announcements.labels(result)
        self._reload_lock = asyncio.Lock()
        self._reloads = self.metrics.counter("logpipe_reloads_total", "Config reloads, by result", ("result",))
        self._reloads.labels("ok")
        self._reloads.labels("refused")
        self._shutdown_dropped = self.metrics.counter(
            "logpipe_dropped_events_total", "Events dropped, by stage and reason", ("stage", "reason")
        ).labels("shutdown", "sink_unavailable")

    # --- lifecycle ------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)

    async def start(self) -> None:
        os.makedirs(self.config.daemon.data_dir, exist_ok=True)
        for sink in self.sinks.values():
            await sink.start()
        for name, deliverer in self.deliverers.items():
            self._tasks.append(asyncio.create_task(deliverer.run(), name=f"deliver.{name}"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        if self.metadata:
            self.restore_metadata()
            if self.config.sources.metadata.snapshot_interval_s:  # type: ignore[union-attr]
                self._tasks.append(asyncio.create_task(self._snapshots(), name="snapshots"))
            await self.metadata.start()
        if self.syslog:
            await self.syslog.start()
        if self.config.api.listen:
            await self._start_api(self.config.api.listen)
        self.ready.set()
        self.log.info("started", sinks=sorted(self.sinks), pid=os.getpid())

    async def _start_api(self, listen: str) -> None:
        _quiet_bad_http_requests()
        host, port = parse_address(listen)
        self._api_runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False)
        await self._api_runner.setup()
        site = web.TCPSite(self._api_runner, host, port, reuse_address=True)
        await site.start()
        self._api_site = site
        server = site._server  # aiohttp keeps the bound sockets here; port 0 needs the real one
        sock = server.sockets[0] if server and server.sockets else None  # type: ignore[union-attr]
        self.api_address = sock.getsockname()[:2] if sock else (host, port)
        self.log.info("listening", component="api", protocol="http", address=f"{self.api_address[0]}:{self.api_address[1]}")

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.table.expire()

    # --- metadata snapshot (issue 8) ----------------------------------------------------

    def restore_metadata(self) -> None:
        try:
            with open(self.snapshot_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as e:
            self.log.warning("metadata_snapshot_unreadable", path=self.snapshot_path, error=e.strerror)
            return
        try:
            restored = self.table.restore_bytes(data)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.log.warning("metadata_snapshot_damaged", path=self.snapshot_path, error=str(e)[:200])
            return
        self.log.info("metadata_restored", entries=restored)

    def write_metadata_snapshot(self, data: bytes | None = None) -> None:
        """Atomic: a temp file, fsync, rename; a crash leaves the old snapshot or the new."""
        if data is None:
            data = self.table.snapshot_bytes()
        tmp = self.snapshot_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snapshot_path)

    async def _snapshots(self) -> None:
        interval = self.config.sources.metadata.snapshot_interval_s  # type: ignore[union-attr]
        while True:
            await asyncio.sleep(interval)
            try:
                # Serialise on the loop (a consistent view), write in a thread.
                await asyncio.to_thread(self.write_metadata_snapshot, self.table.snapshot_bytes())
            except OSError as e:
                self.log.warning("metadata_snapshot_failed", path=self.snapshot_path, error=e.strerror)

    async def shutdown(self) -> None:
        self.log.info("stopping")
        if self.syslog:
            await self.syslog.stop()
        if self.metadata:
            await self.metadata.stop()
        if self.pipeline.hold is not None:
            # Held lines go into the buffers while they still accept (the delivery promise).
            self.pipeline.hold.flush()
        if self.metadata:
            try:
                self.write_metadata_snapshot()
            except OSError as e:
                self.log.warning("metadata_snapshot_failed", path=self.snapshot_path, error=e.strerror)
        for buffer in self.buffers.values():
            buffer.close()
        deliveries = [t for t in self._tasks if t.get_name().startswith("deliver.")]
        if deliveries:
            done, pending = await asyncio.wait(deliveries, timeout=self.config.daemon.shutdown_timeout_s)
            if pending:
                for deliverer in self.deliverers.values():
                    deliverer.abort()
                await asyncio.wait(pending, timeout=5)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name, buffer in self.buffers.items():
            if isinstance(buffer, MemoryBuffer) and buffer.events:
                self._shutdown_dropped.inc(buffer.events)
                self.log.error("events_lost_at_shutdown", stage="sending", sink=name, events=buffer.events,
                               hint="the sink stayed unavailable; a disk buffer would have kept them")
            await buffer.aclose()
        for sink in self.sinks.values():
            await sink.close()
        if self.tap_hub is not None:
            self.tap_hub.close()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        self.log.info("stopped")

    # --- views for the API ----------------------------------------------------------

    def health_problems(self, unhealthy_after_s: float) -> list[str]:
        problems = []
        if not self.ready.is_set():
            problems.append("sources are not bound yet")
        now = time.monotonic()
        for name, deliverer in self.deliverers.items():
            since = deliverer.failing_since
            if since is not None and now - since > unhealthy_after_s:
                problems.append(f"sink {name} failing for {now - since:.0f}s: {deliverer.last_error}")
        return problems

    def stats(self) -> dict:
        out: dict[str, Any] = {"uptime_s": round(time.time() - self.started, 3), "metrics": {}}
        for family in self.metrics.families():
            series = {}
            for labels, value in family.items():
                key = ",".join(f"{k}={v}" for k, v in zip(family.labelnames, labels)) or "_"
                series[key] = value if not hasattr(value, "count") else {"count": value.count, "sum": value.sum}
            out["metrics"][family.name] = series
        out["listeners"] = {}
        if self.syslog:
            out["listeners"].update({f"syslog.{k}": f"{h}:{p}" for k, (h, p) in self.syslog.addresses.items()})
        if self.metadata and self.metadata.address:
            out["listeners"]["metadata.udp"] = f"{self.metadata.address[0]}:{self.metadata.address[1]}"
        out["sinks"] = {
            name: {
                "type": self.sinks[name].kind,
                "buffer_events": self.buffers[name].events,
                "buffer_bytes": self.buffers[name].bytes,
                "buffer_max_bytes": self.buffers[name].max_bytes,
                "failing": d.failing_since is not None,
                "last_error": d.last_error,
            }
            for name, d in self.deliverers.items()
        }
        out["metadata_entries"] = len(self.table)
        hold = self.pipeline.hold
        if hold is not None:
            out["enrich_hold"] = {"events": hold.events, "bytes": hold.bytes}
        return out

    # --- reload ---------------------------------------------------------------------
    # A reload swaps what can change under a running daemon, in one event-loop turn once
    # everything new has been built and bound (the pipeline is synchronous, so swapping
    # references is atomic between chunks):
    # - unchanged sinks keep their Sink, Buffer and Deliverer;
    # - a changed sink gets a new Sink and batch settings inside its running Deliverer
    #   (Deliverer.replace_sink), keeping its buffer and any batch in flight;
    # - a removed sink leaves the pipeline at once, then drains its buffer and closes;
    # - lanes, transforms and the enricher are swapped on the pipeline;
    # - a listener whose address changed is bound anew before the old one closes; the
    #   others, and every open TCP connection, are not touched.
    # Anything that fails before the swap (invalid file, unknown timezone, an address that
    # cannot be bound, a sink that cannot be built) refuses the whole reload: the running
    # config stays, and the problems are logged and returned.

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self.reload_from_file(), name="reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload_from_file(self) -> list[str]:
        """SIGHUP and POST /api/reload: re-read ``config_path`` and apply it. Returns the
        problems; empty means applied."""
        if self.config_path is None:
            problems = ["reload: the daemon has no config file to re-read"]
        else:
            try:
                return await self.reload(load(self.config_path))
            except ConfigError as e:
                problems = e.problems
        self._refuse(problems)
        return problems

    async def reload(self, new: Config) -> list[str]:
        async with self._reload_lock:
            problems = self._reload_problems(new)
            if problems:
                self._refuse(problems)
                return problems
            prepared = _Prepared()
            try:
                await self._prepare_reload(new, prepared)
            except (OSError, ValueError) as e:
                await prepared.discard()
                problems = [str(e) if isinstance(e, ValueError) else f"reload: {e.strerror or e}"]
                self._refuse(problems)
                return problems
            changes = await self._apply_reload(new, prepared)
            self._reloads.labels("ok").inc()
            self.log.info("reloaded", **changes)
            return []

    def _refuse(self, problems: list[str]) -> None:
        self._reloads.labels("refused").inc()
        self.log.error("reload_refused", stage="reloading", problems=problems, hint="the running config stays")

    def _reload_problems(self, new: Config) -> list[str]:
        old = self.config
        problems = []
        if new.daemon.data_dir != old.daemon.data_dir:
            problems.append("daemon.data_dir: changing it needs a restart")
        for name, sink_config in new.sinks.items():
            if any(t.get_name() == f"deliver.retire.{name}" and not t.done() for t in self._tasks):
                problems.append(f"sinks.{name}: still draining after its removal; reload again once it is gone")
            before = old.sinks.get(name)
            if before is None or before.buffer == sink_config.buffer:
                continue
            if before.buffer.type != "memory" or sink_config.buffer.type != "memory":
                problems.append(f"sinks.{name}.buffer: changing a disk buffer or the buffer type needs a restart")
        return problems

    async def _prepare_reload(self, new: Config, prepared: "_Prepared") -> None:
        """Build and bind everything new; raises OSError/ValueError with nothing swapped."""
        old = self.config
        prepared.transforms = Transforms(new.transforms, self.metrics)
        if new.enrich != old.enrich:
            prepared.enricher = Enricher(self.table, new.enrich.pairs(), self.metrics)
        for name, sink_config in new.sinks.items():
            if old.sinks.get(name) != sink_config:
                sink = build_sink(name, sink_config, new.daemon.data_dir)
                prepared.sinks[name] = sink
                await sink.start()
        syslog_config = new.sources.syslog
        if syslog_config is not None and syslog_config != old.sources.syslog:
            if self.syslog is None:
                prepared.syslog = SyslogListeners(syslog_config, self.pipeline, self.flow, self.metrics)
                prepared.syslog_bound = prepared.syslog.bind_changed(syslog_config)
            else:
                prepared.syslog_bound = self.syslog.bind_changed(syslog_config)
        metadata_config = new.sources.metadata
        if metadata_config is not None and (self.metadata is None or metadata_config.udp != old.sources.metadata.udp):
            prepared.metadata = MetadataListener(metadata_config, self.table, self.metrics, secret=self._metadata_secret)
            await prepared.metadata.start()
        if new.api.listen != old.api.listen and new.api.listen and self._api_runner is not None:
            host, port = parse_address(new.api.listen)
            prepared.api_site = web.TCPSite(self._api_runner, host, port, reuse_address=True)
            await prepared.api_site.start()

    async def _apply_reload(self, new: Config, prepared: "_Prepared") -> dict:
        old = self.config
        data_dir = new.daemon.data_dir
        lanes = {lane.name: lane for lane in self.pipeline.lanes}
        removed = [name for name in old.sinks if name not in new.sinks]
        added = [name for name in new.sinks if name not in old.sinks]
        changed = [name for name in new.sinks if name in old.sinks and old.sinks[name] != new.sinks[name]]
        for name in changed:
            sink_config = new.sinks[name]
            buffer = self.buffers[name]
            if sink_config.buffer != old.sinks[name].buffer:  # memory only (checked above)
                buffer.max_bytes = sink_config.buffer.max_bytes
                buffer._low = int(buffer.max_bytes * LOW_WATERMARK)
                buffer.on_pressure = None
                self.flow.set_full(name, False)
                lanes[name] = SinkLane(name, buffer, sink_config.buffer.when_full, self.flow, self.metrics)
                buffer._pressure = False
                buffer._check_pressure()
            sink = prepared.sinks.pop(name)
            idle = self.deliverers[name].replace_sink(
                sink, sink_config.batch, sink_config.retry_initial_ms / 1000, sink_config.retry_max_ms / 1000
            )
            self.sinks[name] = sink
            if idle is not None:
                try:
                    await idle.close()
                except Exception as e:  # the swap is done; a failing close must not undo half of it
                    self.log.warning("sink_close_failed", stage="reloading", sink=name, error=str(e))
        for name in added:
            sink_config = new.sinks[name]
            sink = prepared.sinks.pop(name)
            buffer = build_buffer(name, sink_config, data_dir, self.metrics)
            self._add_sink(name, sink_config, sink, buffer, data_dir)
            lanes[name] = SinkLane(name, buffer, sink_config.buffer.when_full, self.flow, self.metrics)
        # The swap: from the next chunk on, events go to the new lanes through the new transforms.
        self.pipeline.lanes = [lanes[name] for name in new.sinks]
        self.pipeline.transforms = prepared.transforms
        if prepared.enricher is not None:
            self.pipeline.enricher = self.enricher = prepared.enricher
        if self.pipeline.hold is not None:
            # Lines already held keep their index keys; new ones use the new settings.
            self.pipeline.hold.reconfigure(new.enrich)
        self.transforms = prepared.transforms
        for name in removed:
            self._retire_sink(name)
        # Sources: new sockets are already bound; start them, then close the replaced ones.
        syslog_config = new.sources.syslog
        if prepared.syslog is not None:
            self.syslog = prepared.syslog
            await self.syslog.reconfigure(syslog_config, prepared.syslog_bound)
        elif self.syslog is not None and syslog_config is None:
            await self.syslog.stop()
            self.syslog = None
        elif self.syslog is not None and syslog_config != old.sources.syslog:
            await self.syslog.reconfigure(syslog_config, prepared.syslog_bound)
        metadata_config = new.sources.metadata
        if prepared.metadata is not None:
            if self.metadata is not None:
                await self.metadata.stop()
            self.metadata = prepared.metadata
        elif self.metadata is not None and metadata_config is None:
            await self.metadata.stop()
            self.metadata = None
        elif self.metadata is not None and metadata_config != old.sources.metadata:
            self.metadata.reconfigure(metadata_config)
            before = old.sources.metadata
            pending = [k for k in ("max_entries", "secret", "secret_file", "secret_env", "replay_window_s", "rate_per_s",
                                   "rate_burst", "max_labels", "max_label_value_bytes", "snapshot_interval_s")
                       if getattr(before, k) != getattr(metadata_config, k)]
            if pending:
                self.log.warning("reload_needs_restart", stage="reloading",
                                 keys=[f"sources.metadata.{k}" for k in pending], hint="applied at the next start")
        if new.api.listen != old.api.listen:
            await self._swap_api_site(new.api.listen, prepared.api_site)
        self.config = new
        return {"sinks_added": added, "sinks_changed": changed, "sinks_removed": removed,
                "transforms": len(new.transforms)}

    def _add_sink(self, name: str, sink_config: Any, sink: Sink, buffer: Buffer, data_dir: str) -> None:
        self.sinks[name] = sink
        self.buffers[name] = buffer
        self.deliverers[name] = deliverer = build_deliverer(name, sink_config, sink, buffer, data_dir, self.metrics)
        self._tasks.append(asyncio.create_task(deliverer.run(), name=f"deliver.{name}"))

    def _retire_sink(self, name: str) -> None:
        """A removed sink: already out of the pipeline; drain its buffer, then close.
        Named ``deliver.*`` so that a shutdown meanwhile waits for it like any delivery."""
        sink, buffer, deliverer = self.sinks.pop(name), self.buffers.pop(name), self.deliverers.pop(name)
        buffer.on_pressure = None
        self.flow.set_full(name, False)
        task = next(t for t in self._tasks if t.get_name() == f"deliver.{name}")
        self._tasks.remove(task)

        async def drain() -> None:
            buffer.close()
            done, pending = await asyncio.wait([task], timeout=self.config.daemon.shutdown_timeout_s)
            if pending:
                deliverer.abort()
                await asyncio.wait(pending, timeout=5)
            if isinstance(buffer, MemoryBuffer) and buffer.events:
                self._shutdown_dropped.inc(buffer.events)
                self.log.error("events_lost_at_removal", stage="reloading", sink=name, events=buffer.events,
                               hint="the removed sink stayed unavailable; a disk buffer would have kept them")
            await buffer.aclose()
            await sink.close()
            self.log.info("sink_removed", sink=name)

        self._tasks.append(asyncio.create_task(drain(), name=f"deliver.retire.{name}"))

    async def _swap_api_site(self, listen: str | None, site: web.TCPSite | None) -> None:
        old = self._api_site
        if site is not None:
            self._api_site = site
            server = site._server
            sock = server.sockets[0] if server and server.sockets else None  # type: ignore[union-attr]
            if sock is not None:
                self.api_address = sock.getsockname()[:2]
                self.log.info("listening", component="api", protocol="http",
                              address=f"{self.api_address[0]}:{self.api_address[1]}")
        elif listen and self._api_runner is None:
            await self._start_api(listen)
            return
        if old is not None:
            # Closes the listening socket only: the request that asked for this reload
            # (and any other open connection) is answered on its own connection.
            await old.stop()
            if site is None:
                self._api_site = None


class _Prepared:
    """What a reload built and bound before the swap; ``discard`` undoes it when refused."""

    def __init__(self) -> None:
        self.transforms: Transforms | None = None
        self.enricher: Enricher | None = None
        self.sinks: dict[str, Sink] = {}
        self.syslog: SyslogListeners | None = None
        self.syslog_bound: dict = {}
        self.metadata: MetadataListener | None = None
        self.api_site: web.TCPSite | None = None

    async def discard(self) -> None:
        for sock in self.syslog_bound.values():
            sock.close()
        if self.metadata is not None:
            await self.metadata.stop()
        if self.api_site is not None:
            await self.api_site.stop()
        for sink in self.sinks.values():
            await sink.close()
