"""What the API and ``logpipe top`` show of a running graph, as plain data."""

from __future__ import annotations

import time
from typing import Any

from ..buffer.memory import MemoryBuffer
from .assemble import Graph

__all__ = ["health_problems", "stats", "count_lost"]


def health_problems(graph: Graph, ready: bool, unhealthy_after_s: float) -> list[str]:
    problems = []
    if not ready:
        problems.append("sources are not bound yet")
    now = time.monotonic()
    for name, unit in graph.sinks.items():
        since = unit.deliverer.failing_since
        if since is not None and now - since > unhealthy_after_s:
            problems.append(f"sink {name} failing for {now - since:.0f}s: {unit.deliverer.last_error}")
    return problems


def stats(graph: Graph, started: float) -> dict:
    out: dict[str, Any] = {"uptime_s": round(time.time() - started, 3), "metrics": {}}
    for family in graph.metrics.families():
        series = {}
        for labels, value in family.items():
            key = ",".join(f"{k}={v}" for k, v in zip(family.labelnames, labels, strict=True)) or "_"
            series[key] = value if not hasattr(value, "count") else {"count": value.count, "sum": value.sum}
        out["metrics"][family.name] = series
    listeners = out["listeners"] = {}
    for name, source in graph.sources.items():
        for key, (host, port) in source.addresses.items():
            listeners[f"{name}.{key}"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    out["sinks"] = {
        name: {
            "type": unit.sink.kind,
            "buffer_events": unit.buffer.events,
            "buffer_bytes": unit.buffer.bytes,
            "buffer_max_bytes": unit.buffer.max_bytes,
            "failing": unit.deliverer.failing_since is not None,
            "last_error": unit.deliverer.last_error,
            "endpoints": [state for pool in unit.sink.endpoint_pools() for state in pool.snapshot()],
        }
        for name, unit in graph.sinks.items()
    }
    out["metadata_entries"] = len(graph.table)
    hold = graph.pipeline.hold
    if hold is not None:
        out["enrich_hold"] = {"events": hold.events, "bytes": hold.bytes}
    return out


def count_lost(daemon: Any, name: str, buffer: Any, event: str) -> None:
    """At stop (or a sink's removal): what a memory buffer still holds is lost, counted and
    logged; a disk buffer keeps it for the next start, and says how much."""
    if not buffer.events:
        return
    if isinstance(buffer, MemoryBuffer):
        daemon.shutdown_dropped.inc(buffer.events)
        daemon.log.error(event, stage="sending", sink=name, events=buffer.events,
                         hint="the sink stayed unavailable; a disk buffer would have kept them")
    else:
        daemon.log.warning("events_kept_in_disk_buffer", sink=name, events=buffer.events, bytes=buffer.bytes,
                           hint="sent after the next start")
