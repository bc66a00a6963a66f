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
from .buffer.base import Buffer
from .buffer.memory import MemoryBuffer
from .config import Config, parse_address
from .deliver import DeadLetters, Deliverer
from .enrich import Enricher, MetadataTable
from .metrics import Metrics
from .pipeline import FlowControl, Pipeline, SinkLane
from .sinks import Sink, build as build_sink
from .sources.metadata import MetadataListener
from .sources.syslog import SyslogListeners
from .transforms import Transforms

__all__ = ["Daemon"]


def build_buffer(name: str, config: Any, data_dir: str, metrics: Metrics) -> Buffer:
    if config.buffer.type == "disk":
        from .buffer.disk import DiskBuffer

        return DiskBuffer(name, os.path.join(data_dir, "buffer", name), config.buffer, metrics)
    return MemoryBuffer(name, config.buffer.max_bytes)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
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
            self.deliverers[name] = Deliverer(
                sink,
                buffer,
                sink_config.batch,
                retry_initial_s=sink_config.retry_initial_ms / 1000,
                retry_max_s=sink_config.retry_max_ms / 1000,
                dead_letters=DeadLetters(data_dir, name),
                metrics=self.metrics,
                concurrency=sink_config.concurrency,
            )
            lanes.append(SinkLane(name, buffer, sink_config.buffer.when_full, self.flow, self.metrics))
        self.pipeline = Pipeline(self.enricher, self.transforms, lanes, self.metrics)
        self.syslog = (
            SyslogListeners(config.sources.syslog, self.pipeline, self.flow, self.metrics) if config.sources.syslog else None
        )
        self.metadata = MetadataListener(metadata_config, self.table, self.metrics) if metadata_config else None
        self.api_address: tuple[str, int] | None = None
        self._api_runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.ready = asyncio.Event()
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
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def start(self) -> None:
        os.makedirs(self.config.daemon.data_dir, exist_ok=True)
        for sink in self.sinks.values():
            await sink.start()
        for name, deliverer in self.deliverers.items():
            self._tasks.append(asyncio.create_task(deliverer.run(), name=f"deliver.{name}"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        if self.metadata:
            await self.metadata.start()
        if self.syslog:
            await self.syslog.start()
        if self.config.api.listen:
            await self._start_api(self.config.api.listen)
        self.ready.set()
        self.log.info("started", sinks=sorted(self.sinks), pid=os.getpid())

    async def _start_api(self, listen: str) -> None:
        host, port = parse_address(listen)
        self._api_runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False)
        await self._api_runner.setup()
        site = web.TCPSite(self._api_runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp keeps the bound sockets here; port 0 needs the real one
        sock = server.sockets[0] if server and server.sockets else None  # type: ignore[union-attr]
        self.api_address = sock.getsockname()[:2] if sock else (host, port)
        self.log.info("listening", component="api", protocol="http", address=f"{self.api_address[0]}:{self.api_address[1]}")

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.table.expire()

    async def shutdown(self) -> None:
        self.log.info("stopping")
        if self.syslog:
            await self.syslog.stop()
        if self.metadata:
            await self.metadata.stop()
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
                "failing": d.failing_since is not None,
                "last_error": d.last_error,
            }
            for name, d in self.deliverers.items()
        }
        out["metadata_entries"] = len(self.table)
        return out
