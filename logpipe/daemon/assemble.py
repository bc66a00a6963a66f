"""The one place components are built and wired: ``assemble(config) -> Graph``.

Everything a running daemon, a reload, ``logpipe test``, ``logpipe replay`` and each worker
needs comes from here, so a new source or sink type is added in one table below and nowhere
else. Assembling binds no socket and starts no task: ``daemon/app.py`` does that (and a reload
assembles the new config's components the same way before swapping them in by name).

The graph, in the order data flows:

    sources (by name) -> pipeline: enrich (+ hold) -> transforms -> lanes (one per sink)
                                                                   -> buffer -> deliverer -> sink
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..buffer.base import Buffer
from ..config import Config, HttpSource, MetadataSource, NatsSource, SourceConfig, SyslogSource, read_secret
from ..deliver import DeadLetters, Deliverer
from ..enrich import Enricher, MetadataTable
from ..hold import Hold
from ..metrics import Metrics
from ..pipeline import Pipeline, SinkLane
from ..sinks import Sink
from ..sinks import build as build_sink
from ..sources.base import Source
from ..sources.flow import FlowControl
from ..transforms import Transforms

__all__ = [
    "Graph", "SinkUnit", "assemble", "build_buffer", "build_sink", "build_sink_unit", "build_source", "syslog_settings",
]

# Used when a config has no metadata source (the table still exists: `logpipe test
# --metadata` and the workers' forwarded announcements fill it).
_TABLE_ENTRIES = 100_000
_TABLE_TTL_S = 600


class SinkUnit:
    """One sink with everything in front of it: its lane into the pipeline, its buffer and
    its delivery loop."""

    __slots__ = ("name", "config", "sink", "buffer", "deliverer", "lane")

    def __init__(self, name: str, config: Any, sink: Sink, buffer: Buffer, deliverer: Deliverer, lane: SinkLane) -> None:
        self.name = name
        self.config = config
        self.sink = sink
        self.buffer = buffer
        self.deliverer = deliverer
        self.lane = lane


class Graph:
    """The assembled components of one config, not yet started."""

    def __init__(self, config: Config, metrics: Metrics, table: MetadataTable, flow: FlowControl, pipeline: Pipeline,
                 sinks: dict[str, SinkUnit], sources: dict[str, Source]) -> None:
        self.config = config
        self.metrics = metrics
        self.table = table
        self.flow = flow
        self.pipeline = pipeline
        self.sinks = sinks
        self.sources = sources


def build_buffer(name: str, config: Any, data_dir: str, metrics: Metrics) -> Buffer:
    if config.buffer.type == "disk":
        from ..buffer.disk import DiskBuffer

        return DiskBuffer(name, os.path.join(data_dir, "buffer", name), config.buffer, metrics)
    from ..buffer.memory import MemoryBuffer

    return MemoryBuffer(name, config.buffer.max_bytes)


def build_sink_unit(name: str, config: Any, data_dir: str, metrics: Metrics, flow: FlowControl | None,
                    sink: Sink | None = None, buffer: Buffer | None = None) -> SinkUnit:
    """``sink`` and ``buffer`` are given by a reload that keeps them, or by replay (its own
    acknowledgement-counting buffer)."""
    sink = sink or build_sink(name, config, data_dir, metrics)
    buffer = buffer or build_buffer(name, config, data_dir, metrics)
    deliverer = Deliverer(
        sink,
        buffer,
        config.batch,
        retry_initial_s=config.retry_initial_ms / 1000,
        retry_max_s=config.retry_max_ms / 1000,
        dead_letters=DeadLetters(data_dir, name),
        metrics=metrics,
        concurrency=config.concurrency,
    )
    lane = SinkLane(name, buffer, config.buffer.when_full, flow.set_full if flow else None, metrics)
    return SinkUnit(name, config, sink, buffer, deliverer, lane)


def build_source(name: str, config: SourceConfig, graph: Graph, *, reuse_port: bool = False) -> Source:
    """The source table: one line per source type."""
    if isinstance(config, SyslogSource):
        from ..sources.syslog import SyslogListeners

        return SyslogListeners(name, config, graph.pipeline, graph.flow, graph.metrics, reuse_port=reuse_port)
    if isinstance(config, MetadataSource):
        from ..sources.metadata import MetadataListener

        secret = read_secret(config.secret, config.secret_file, config.secret_env, f"sources.{name}.secret")
        return MetadataListener(name, config, graph.table, graph.metrics, secret=secret)
    if isinstance(config, NatsSource):
        from ..sources.nats import NatsConsumer

        return NatsConsumer(name, config, graph.pipeline, graph.flow, graph.metrics)
    if isinstance(config, HttpSource):
        from ..sources.http import HttpListener

        return HttpListener(name, config, graph.pipeline, graph.metrics, reuse_port=reuse_port)
    raise ValueError(f"sources.{name}: unsupported type")  # pragma: no cover - config rejects it


def syslog_settings(config: Config, source: str | None = None) -> tuple[str | None, SyslogSource]:
    """The syslog source whose parsing settings (timezone, parse_body, max_line_bytes) an
    offline run (``logpipe test``, ``replay``) uses: the named one, else the first; the
    defaults when the config has none. Raises ValueError for an unknown name."""
    found = config.sources_of(SyslogSource)
    if source is not None:
        if source not in found:
            raise ValueError(f"--source {source}: no syslog source of that name (have: {', '.join(found) or 'none'})")
        return source, found[source]
    for name, settings in found.items():
        return name, settings
    return None, SyslogSource()


def assemble(
    config: Config,
    *,
    metrics: Metrics | None = None,
    table: MetadataTable | None = None,
    sink_names: list[str] | None = None,
    make_buffer: Callable[[str, Any], Buffer] | None = None,
    offline: bool = False,
    reuse_port: bool = False,
) -> Graph:
    """Build every component ``config`` names, wired, nothing bound or started.

    ``sink_names`` limits the sinks (replay: one; ``logpipe test``: none); ``make_buffer``
    replaces the configured buffers; ``offline`` builds no listener and no enrichment
    hold (``logpipe test``, replay: lines are read from files, nothing waits); ``reuse_port`` binds the syslog sockets with SO_REUSEPORT (workers)."""
    metrics = metrics or Metrics()
    metadata = list(config.sources_of(MetadataSource).values())
    if table is None:
        table = MetadataTable(
            max((m.max_entries for m in metadata), default=_TABLE_ENTRIES),
            metadata[0].ttl_s if metadata else _TABLE_TTL_S,
            metrics,
        )
    flow = FlowControl()
    data_dir = config.daemon.data_dir
    sinks: dict[str, SinkUnit] = {}
    for name, sink_config in config.sinks.items():
        if sink_names is not None and name not in sink_names:
            continue
        buffer = make_buffer(name, sink_config) if make_buffer else None
        sinks[name] = build_sink_unit(name, sink_config, data_dir, metrics, flow, buffer=buffer)
    enricher = Enricher(table, config.enrich.pairs(), metrics)
    pipeline = Pipeline(enricher, Transforms(config.transforms, metrics), [u.lane for u in sinks.values()], metrics)
    if metadata and config.enrich.hold_ms > 0 and not offline:
        enrich = config.enrich
        pipeline.hold = Hold(enrich.hold_ms, enrich.hold_max_events, enrich.hold_max_bytes, enrich.pairs(),
                             pipeline.release, metrics)
        table.on_store = pipeline.hold.announced
    graph = Graph(config, metrics, table, flow, pipeline, sinks, {})
    if not offline:
        for name, source_config in config.sources.items():
            graph.sources[name] = build_source(name, source_config, graph, reuse_port=reuse_port)
    return graph
