"""Lifecycle only: start the assembled graph, run until told to stop, drain on stop.

Order of a graceful stop (SIGTERM/SIGINT), which is what makes it lose nothing:
1. close the listeners and every TCP connection (each connection's unterminated tail is
   flushed into the pipeline) and flush the UDP burst being gathered;
2. close the buffers: each delivery loop sends everything left, without waiting for
   ``max_age_ms``;
3. after ``daemon.shutdown_timeout_s`` stop retrying; what a memory buffer still holds is
   counted (``dropped_events_total{stage="shutdown"}``) and logged; a disk buffer keeps it;
4. close sinks and buffers, then the API.

A second SIGTERM/SIGINT during the stop skips the wait for the sinks (step 3 at once).

Every long-running task (delivery loops, snapshots, a removed sink's drain) belongs to one
TaskGroup entered at ``start`` and left at ``shutdown``.

Idle costs nothing: no task polls. Delivery loops sleep on their buffers, the snapshot
writer on a change of the table, the metadata reaper is one timer armed for the earliest
expiry, and the API (``api_listener.py``) keeps a timer only while a connection is open.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog

from ..config import Config, MetadataSource, SyslogSource
from ..metrics import Metrics
from ..sources.metadata import RESULTS as ANNOUNCEMENT_RESULTS
from . import views
from .assemble import Graph, SinkUnit, assemble
from .expiry import Reaper
from .preflight import StartError, environment_problems, lock_data_dir
from .snapshot import MetadataSnapshot

__all__ = ["Daemon"]


class Daemon:
    def __init__(self, config: Config, config_path: str | None = None, *, reuse_port: bool = False,
                 rewrite: Callable[[Config], Config] | None = None) -> None:
        """``rewrite`` turns every config this daemon runs, the reloaded ones too (a
        worker's overrides of ports, data_dir and file paths)."""
        self.config_path = config_path  # re-read on SIGHUP and POST /api/reload
        self.reuse_port = reuse_port
        self.rewrite = rewrite
        if rewrite is not None:
            config = rewrite(config)
        self.graph: Graph = assemble(config, reuse_port=reuse_port)
        self.log = structlog.get_logger().bind(component="daemon")
        self.started = time.time()
        self.snapshot = MetadataSnapshot(os.path.join(config.daemon.data_dir, "metadata.snapshot"), self.graph.table)
        self.reaper = Reaper(self.graph.table)
        self.api_address: tuple[str, int] | None = None
        self.api: Any = None  # api_listener.ApiServer once started
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._lock_fd: int | None = None
        self._housekeeping: list[asyncio.Task] = []
        self.deliveries: dict[str, asyncio.Task] = {}
        self.retiring: dict[str, asyncio.Task] = {}
        self._reload_lock = asyncio.Lock()
        metrics = self.metrics
        # Every metric the spec names exists from startup, even without a metadata source.
        announcements = metrics.counter("logpipe_metadata_announcements_total", "Announcements received, by result",
                                        ("result",))
        for result in ANNOUNCEMENT_RESULTS:
            announcements.labels(result)
        self.reloads = metrics.counter("logpipe_reloads_total", "Config reloads, by result", ("result",))
        self.reloads.labels("ok")
        self.reloads.labels("refused")
        self.shutdown_dropped = metrics.counter(
            "logpipe_dropped_events_total", "Events dropped, by stage and reason", ("stage", "reason")
        ).labels("shutdown", "sink_unavailable")

    # --- the graph, as the rest of the control plane reads it -------------------------

    @property
    def config(self) -> Config:
        return self.graph.config

    @property
    def metrics(self) -> Metrics:
        return self.graph.metrics

    @property
    def table(self) -> Any:
        return self.graph.table

    @property
    def pipeline(self) -> Any:
        return self.graph.pipeline

    @property
    def sinks(self) -> dict[str, SinkUnit]:
        return self.graph.sinks

    @property
    def syslog(self) -> Any:
        """The first syslog source (the one named ``syslog`` in the classic layout)."""
        return self._first(SyslogSource)

    @property
    def metadata(self) -> Any:
        """The first metadata source."""
        return self._first(MetadataSource)

    def _first(self, kind: type) -> Any:
        return next((s for s in self.graph.sources.values() if isinstance(s.config, kind)), None)

    def health_problems(self, unhealthy_after_s: float) -> list[str]:
        return views.health_problems(self.graph, self.ready.is_set(), unhealthy_after_s)

    def stats(self) -> dict:
        return views.stats(self.graph, self.started)

    # --- lifecycle ------------------------------------------------------------------

    def request_stop(self) -> None:
        if self._stop.is_set():
            self._force.set()
            self.log.warning("stop_forced", hint="a second signal: delivery attempts end now")
            for unit in self.sinks.values():
                unit.deliverer.abort()
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

    def spawn(self, coro: Any, name: str) -> asyncio.Task:
        assert self._tasks is not None, "the daemon is not started"
        return self._tasks.create_task(coro, name=name)

    async def start(self) -> None:
        problems = environment_problems(self.config)
        if problems:
            raise StartError("; ".join(problems))
        os.makedirs(self.config.daemon.data_dir, exist_ok=True)
        self._lock_fd = lock_data_dir(self.config.daemon.data_dir)
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        for unit in self.sinks.values():
            await unit.sink.start()
        for name, unit in self.sinks.items():
            self.deliveries[name] = self.spawn(unit.deliverer.run(), f"deliver.{name}")
        metadata = self.config.sources_of(MetadataSource)
        if metadata:
            self.snapshot.restore()
            # The table is saved as often as its most eager source asks (0 = only at stop).
            interval = min((m.snapshot_interval_s for m in metadata.values() if m.snapshot_interval_s), default=0)
            if interval:
                self.snapshot.watch()
                self._housekeeping.append(self.spawn(self.snapshot.every(interval), "snapshots"))
        # Even without a metadata source: a worker's table is filled by its supervisor.
        self.reaper.start()
        for source in self.graph.sources.values():
            await source.start()
        if self.config.api.address:
            await self.start_api(self.config.api.address)
        self.ready.set()
        self.log.info("started", sources=sorted(self.graph.sources), sinks=sorted(self.sinks), pid=os.getpid())

    async def start_api(self, listen: str) -> None:
        from ..api_listener import ApiServer

        self.api = ApiServer(self)
        self.api_address = await self.api.start(listen)

    async def shutdown(self) -> None:
        self.log.info("stopping")
        for source in self.graph.sources.values():
            await source.stop()
        hold = self.pipeline.hold
        if hold is not None:
            # Held lines go into the buffers while they still accept (the delivery promise).
            hold.flush()
        self.reaper.stop()
        self.snapshot.unwatch()
        if self.config.sources_of(MetadataSource):
            self.snapshot.save_now()
        for unit in self.sinks.values():
            unit.buffer.close()
        draining = [t for t in (*self.deliveries.values(), *self.retiring.values()) if not t.done()]
        if draining:
            await self._drain(draining)
        for task in self._housekeeping:
            task.cancel()
        if self._tasks is not None:
            await self._tasks.__aexit__(None, None, None)
            self._tasks = None
        for name, unit in self.sinks.items():
            views.count_lost(self, name, unit.buffer, "events_lost_at_shutdown")
            await unit.buffer.aclose()
        for unit in self.sinks.values():
            await unit.sink.close()
        if self.api is not None:
            await self.api.stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the data_dir lock
            self._lock_fd = None
        self.log.info("stopped")

    async def _drain(self, draining: list[asyncio.Task]) -> None:
        """Wait for the delivery loops to send what is left, logging progress; stop retrying
        at ``shutdown_timeout_s`` or at a second signal."""
        deadline = time.monotonic() + self.config.daemon.shutdown_timeout_s
        force = asyncio.ensure_future(self._force.wait())
        try:
            while draining and not self._force.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                done, _ = await asyncio.wait([*draining, force], timeout=min(left, 5.0),
                                             return_when=asyncio.FIRST_COMPLETED)
                draining = [t for t in draining if not t.done()]
                if draining and not done:
                    waiting = {n: u.buffer.events for n, u in self.sinks.items() if u.buffer.events}
                    self.log.info("draining", sinks=waiting, seconds_left=round(max(0.0, deadline - time.monotonic())))
        finally:
            force.cancel()
        if draining:
            for unit in self.sinks.values():
                unit.deliverer.abort()
            await asyncio.wait(draining, timeout=5)

    # --- reload ---------------------------------------------------------------------

    def _on_sighup(self) -> None:
        if self._tasks is not None:
            self.spawn(self.reload_from_file(), "reload")

    async def reload_from_file(self) -> list[str]:
        from .reload import reload_from_file

        return await reload_from_file(self)

    async def reload(self, new: Config) -> list[str]:
        from .reload import reload

        return await reload(self, new)
