"""Sinks: where batches go. See ``base.Sink`` for the contract; ``build`` picks one by type."""

from __future__ import annotations

from ..config import ClickHouseSink, ElasticsearchSink, FileSink, NatsSink, SinkConfig, SyslogSink, VictoriaLogsSink
from ..metrics import Metrics
from .base import SendError, Sink

__all__ = ["SendError", "Sink", "build"]


def build(name: str, config: SinkConfig, data_dir: str, metrics: Metrics | None = None) -> Sink:
    """``metrics``: for sinks with counters of their own (nats)."""
    if isinstance(config, VictoriaLogsSink):
        from .victorialogs import VictoriaLogs

        return VictoriaLogs(name, config)
    if isinstance(config, FileSink):
        from .file import File

        return File(name, config, data_dir)
    if isinstance(config, ClickHouseSink):
        from .clickhouse import ClickHouse

        return ClickHouse(name, config)
    if isinstance(config, SyslogSink):
        from .syslog import Syslog

        return Syslog(name, config)
    if isinstance(config, ElasticsearchSink):
        from .elasticsearch import Elasticsearch

        return Elasticsearch(name, config)
    if isinstance(config, NatsSink):
        from .nats import Nats

        return Nats(name, config, data_dir, metrics)
    raise ValueError(f"sinks.{name}: unsupported type")  # pragma: no cover - config rejects it
