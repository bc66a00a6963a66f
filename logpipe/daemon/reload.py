"""Reload: diff the running config against a new one by component name, build and bind
everything new, then swap it in within one event-loop turn, or refuse with reasons.

- Sinks: an unchanged sink keeps its Sink, Buffer and Deliverer; a changed one gets a new
  Sink and batch settings inside its running Deliverer (``Deliverer.replace_sink``),
  keeping its buffer and any batch in flight; a removed one leaves the pipeline at once,
  then drains its buffer and closes; an added one is assembled like at start.
- Sources: a changed source binds only its changed addresses (while the old sockets still
  listen) and keeps its open TCP connections; an added one is assembled and bound; a
  removed one stops (reading what its connections already sent).
- Lanes, transforms and the enricher are swapped on the pipeline (it is synchronous, so
  swapping references is atomic between chunks).
- Every kept sink is asked to ``reopen()`` what it holds by name (the file sink opens its
  path again), so SIGHUP after logrotate works as operators expect.
- ``daemon.log_level`` and ``log_format`` apply at once.
- Refused, with every reason, while nothing is swapped: an invalid file, an unknown
  timezone, an address that cannot be bound, a sink that cannot be built, and the settings
  only a restart applies (``RESTART_ONLY`` below and the per-component ones).
"""

from __future__ import annotations

import socket
from typing import Any

from ..config import Config, ConfigError, load
from ..enrich import Enricher
from ..logs import configure
from ..pipeline import SinkLane
from ..sinks import Sink
from ..sources.base import release
from ..transforms import Transforms
from .assemble import build_sink, build_sink_unit, build_source
from .views import count_lost

__all__ = ["reload", "reload_from_file", "restart_problems"]

RESTART_ONLY = ("data_dir", "workers")


class _Prepared:
    """What a reload built and bound before the swap; ``discard`` undoes it when refused."""

    def __init__(self) -> None:
        self.transforms: Transforms | None = None
        self.enricher: Enricher | None = None
        self.sinks: dict[str, Sink] = {}
        self.sources: dict[str, Any] = {}  # added sources, built and not started
        self.bound: dict[str, dict[str, socket.socket]] = {}  # per source name
        self.api_site: Any = None

    async def discard(self) -> None:
        for bound in self.bound.values():
            release(bound)
        if self.api_site is not None:
            await self.api_site.stop()
        for sink in self.sinks.values():
            await sink.close()


async def reload_from_file(daemon: Any) -> list[str]:
    """SIGHUP and POST /api/reload: re-read the config file and apply it. Returns the
    problems; empty means applied."""
    if daemon.config_path is None:
        problems = ["reload: the daemon has no config file to re-read"]
    else:
        try:
            return await reload(daemon, load(daemon.config_path))
        except ConfigError as e:
            problems = e.problems
    _refuse(daemon, problems)
    return problems


async def reload(daemon: Any, new: Config) -> list[str]:
    if daemon.rewrite is not None:
        new = daemon.rewrite(new)
    async with daemon._reload_lock:
        problems = restart_problems(daemon, new)
        if problems:
            _refuse(daemon, problems)
            return problems
        prepared = _Prepared()
        try:
            await _prepare(daemon, new, prepared)
        except (OSError, ValueError, ConfigError) as e:
            await prepared.discard()
            problems = [_explain(e)]
            _refuse(daemon, problems)
            return problems
        changes = await _apply(daemon, new, prepared)
        daemon.reloads.labels("ok").inc()
        daemon.log.info("reloaded", **changes)
        return []


def _explain(e: Exception) -> str:
    if isinstance(e, ConfigError):
        return "; ".join(e.problems)
    if isinstance(e, OSError) and e.strerror:
        return f"reload: {e.strerror}" + (f": {e.filename}" if e.filename else "")
    return str(e)


def _refuse(daemon: Any, problems: list[str]) -> None:
    daemon.reloads.labels("refused").inc()
    daemon.log.error("reload_refused", stage="reloading", problems=problems, hint="the running config stays")


def restart_problems(daemon: Any, new: Config) -> list[str]:
    """Every changed setting a running daemon cannot apply, named by its key."""
    old = daemon.config
    problems = [f"daemon.{key}: changing it needs a restart" for key in RESTART_ONLY
                if getattr(old.daemon, key) != getattr(new.daemon, key)]
    if (old.enrich.hold_ms > 0) != (new.enrich.hold_ms > 0):
        problems.append("enrich.hold_ms: turning the hold on or off needs a restart")
    for name, sink_config in new.sinks.items():
        if name in daemon.retiring and not daemon.retiring[name].done():
            problems.append(f"sinks.{name}: still draining after its removal; reload again once it is gone")
        before = old.sinks.get(name)
        if before is None or type(before) is not type(sink_config):
            continue
        if before.concurrency != sink_config.concurrency:
            problems.append(f"sinks.{name}.concurrency: changing it needs a restart")
        if before.buffer != sink_config.buffer and "disk" in (before.buffer.type, sink_config.buffer.type):
            problems.append(f"sinks.{name}.buffer: changing a disk buffer or the buffer type needs a restart")
    for name, source_config in new.sources.items():
        source = daemon.graph.sources.get(name)
        before = old.sources.get(name)
        if source is None or before is None or type(before) is not type(source_config):
            continue
        for key in getattr(source, "RESTART_KEYS", ()):
            if getattr(before, key) != getattr(source_config, key):
                problems.append(f"sources.{name}.{key}: changing it needs a restart")
    return problems


async def _prepare(daemon: Any, new: Config, prepared: _Prepared) -> None:
    """Build and bind everything new; raises with nothing swapped."""
    old = daemon.config
    graph = daemon.graph
    prepared.transforms = Transforms(new.transforms, graph.metrics)
    if new.enrich != old.enrich:
        prepared.enricher = Enricher(graph.table, new.enrich.pairs(), graph.metrics)
    for name, sink_config in new.sinks.items():
        if old.sinks.get(name) != sink_config:
            sink = build_sink(name, sink_config, new.daemon.data_dir, daemon.graph.metrics)
            prepared.sinks[name] = sink
            await sink.start()
    for name, source_config in new.sources.items():
        source = graph.sources.get(name)
        before = old.sources.get(name)
        if source is not None and type(before) is type(source_config):
            if before != source_config:
                prepared.bound[name] = source.bind_changed(source_config)
            continue
        added = build_source(name, source_config, graph, reuse_port=daemon.reuse_port)
        prepared.sources[name] = added
        prepared.bound[name] = added.bind_changed(source_config)
    if new.api.address != old.api.address and new.api.address and daemon.api is not None:
        prepared.api_site = await daemon.api.bind(new.api.address)


async def _apply(daemon: Any, new: Config, prepared: _Prepared) -> dict:
    old = daemon.config
    graph = daemon.graph
    units = graph.sinks
    data_dir = new.daemon.data_dir
    removed = [name for name in old.sinks if name not in new.sinks]
    added = [name for name in new.sinks if name not in old.sinks]
    changed = [name for name in new.sinks if name in old.sinks and old.sinks[name] != new.sinks[name]]
    for name in changed:
        sink_config = new.sinks[name]
        unit = units[name]
        if sink_config.buffer != old.sinks[name].buffer:  # memory only (restart_problems)
            graph.flow.set_full(name, False)
            unit.lane = SinkLane(name, unit.buffer, sink_config.buffer.when_full, graph.flow.set_full, graph.metrics)
            unit.buffer.resize(sink_config.buffer.max_bytes)
        sink = prepared.sinks.pop(name)
        idle = unit.deliverer.replace_sink(
            sink, sink_config.batch, sink_config.retry_initial_ms / 1000, sink_config.retry_max_ms / 1000
        )
        unit.sink = sink
        unit.config = sink_config
        if idle is not None:
            try:
                await idle.close()
            except Exception as e:  # the swap is done; a failing close must not undo half of it
                daemon.log.warning("sink_close_failed", stage="reloading", sink=name, error=str(e))
    for name in added:
        unit = units[name] = build_sink_unit(name, new.sinks[name], data_dir, graph.metrics, graph.flow,
                                             sink=prepared.sinks.pop(name))
        daemon.deliveries[name] = daemon.spawn(unit.deliverer.run(), f"deliver.{name}")
    # The swap: from the next chunk on, events go to the new lanes through the new transforms.
    pipeline = graph.pipeline
    pipeline.lanes = [units[name].lane for name in new.sinks]
    pipeline.transforms = prepared.transforms
    if prepared.enricher is not None:
        pipeline.enricher = prepared.enricher
    if pipeline.hold is not None:
        # Lines already held keep their index keys; new ones use the new settings.
        pipeline.hold.reconfigure(new.enrich)
    for name in removed:
        _retire_sink(daemon, name)
    for name in new.sinks:
        if name not in added and name not in changed:
            await units[name].sink.reopen()  # a file rotated by logrotate is opened again by its path
    sources_changed = await _swap_sources(daemon, new, prepared)
    if new.api.address != old.api.address:
        if daemon.api is None:
            await daemon.start_api(new.api.address)  # was off; a failure here leaves it off
        else:
            daemon.api_address = await daemon.api.swap(new.api.address, prepared.api_site)
    if (new.daemon.log_level, new.daemon.log_format) != (old.daemon.log_level, old.daemon.log_format):
        configure(new.daemon.log_level, new.daemon.log_format)
    graph.config = new
    return {"sinks_added": added, "sinks_changed": changed, "sinks_removed": removed, **sources_changed,
            "transforms": len(new.transforms)}


async def _swap_sources(daemon: Any, new: Config, prepared: _Prepared) -> dict:
    """New sockets are already bound: start them, then close the replaced ones."""
    old = daemon.config
    sources = daemon.graph.sources
    removed = [name for name in old.sources if name not in new.sources or name in prepared.sources]
    for name in removed:
        await sources.pop(name).stop()
    changed = []
    for name, source_config in new.sources.items():
        if name in prepared.sources:
            sources[name] = prepared.sources[name]
        elif old.sources.get(name) == source_config:
            continue
        else:
            changed.append(name)
        await sources[name].reconfigure(source_config, prepared.bound.pop(name, {}))
    return {"sources_added": list(prepared.sources), "sources_changed": changed,
            "sources_removed": [n for n in removed if n not in prepared.sources]}


def _retire_sink(daemon: Any, name: str) -> None:
    """A removed sink: already out of the pipeline; drain its buffer, then close. A stop
    meanwhile waits for it like for any delivery."""
    unit = daemon.graph.sinks.pop(name)
    unit.buffer.on_pressure = None
    daemon.graph.flow.set_full(name, False)
    delivery = daemon.deliveries.pop(name)

    async def drain() -> None:
        import asyncio

        unit.buffer.close()
        done, pending = await asyncio.wait([delivery], timeout=daemon.config.daemon.shutdown_timeout_s)
        if pending:
            unit.deliverer.abort()
            await asyncio.wait(pending, timeout=5)
        count_lost(daemon, name, unit.buffer, "events_lost_at_removal")
        await unit.buffer.aclose()
        await unit.sink.close()
        daemon.log.info("sink_removed", sink=name)

    daemon.retiring[name] = daemon.spawn(drain(), f"retire.{name}")
