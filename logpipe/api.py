"""HTTP API on ``api.listen``: /health, /metrics (Prometheus text), /api/stats (JSON),
/api/tap (streamed JSON lines of sampled events) and POST /api/reload.

The routes (``Api``) answer with whole replies, or a ``TapRequest`` the connection streams;
``api_listener.py`` speaks HTTP/1.1 to the clients.

Nothing here is on the ingest path, except the tap while someone is tapping:
- With no client, ``Pipeline.tap`` is None and ingestion pays one attribute test per chunk.
- Each client gets at most ``rate`` events per second (a token bucket; a chunk is sampled
  evenly, not just its head), queued up to ``api.tap_queue_events``; a client that reads
  slower than that loses the newest events, counted in ``logpipe_tap_dropped_events_total``.
  Only sampled events are encoded, so the cost is bounded by the clients' rates.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .metrics import Metrics

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Pipeline

__all__ = ["Api", "Control", "Reply", "TapHub", "TapRequest"]

DEFAULT_TAP_RATE = 100  # events per second per client unless ?rate= says otherwise


class _TapClient:
    __slots__ = ("sink", "rate", "tokens", "stamp", "queue", "cap", "ready", "dropped")

    def __init__(self, sink: str | None, rate: float, cap: int) -> None:
        self.sink = sink
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()
        self.queue: collections.deque[bytes] = collections.deque()
        self.cap = cap
        self.ready = asyncio.Event()
        self.dropped = 0

    def offer(self, events: list[dict], sinks: list[str], now: float, dropped_counter) -> None:
        if self.sink is not None and self.sink not in sinks:
            return
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        take = min(int(self.tokens), len(events))
        if take <= 0:
            return
        self.tokens -= take
        step = len(events) / take
        room = self.cap - len(self.queue)
        if take > room:
            self.dropped += take - room
            dropped_counter.inc(take - room)
            take = room
        for i in range(take):
            self.queue.append(orjson.dumps({"sinks": sinks, "event": events[int(i * step)]}))
        if take:
            self.ready.set()


class TapHub:
    """The tapping clients of one daemon. Installs ``Pipeline.tap`` while any is connected."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.clients: set[_TapClient] = set()
        self.closed = False
        self._dropped = metrics.counter(
            "logpipe_tap_dropped_events_total", "Sampled events a slow /api/tap client did not read in time"
        ).labels()
        metrics.gauge("logpipe_tap_clients", "Connected /api/tap clients").set_function(lambda: len(self.clients))

    def subscribe(self, sink: str | None, rate: float, cap: int) -> _TapClient:
        client = _TapClient(sink, rate, cap)
        self.clients.add(client)
        self.pipeline.tap = self.offer
        return client

    def unsubscribe(self, client: _TapClient) -> None:
        self.clients.discard(client)
        if not self.clients:
            self.pipeline.tap = None

    def close(self) -> None:
        """Shutdown: end every tap stream so the API can close without waiting for them."""
        self.closed = True
        self.pipeline.tap = None
        for client in self.clients:
            client.ready.set()

    def offer(self, events: list[dict], sinks: list[str]) -> None:
        now = time.monotonic()
        for client in self.clients:
            client.offer(events, sinks, now, self._dropped)


class Control(Protocol):
    """What the API reads and asks of the daemon (``daemon/app.py``), without importing it."""

    config: Any
    metrics: Metrics
    pipeline: Any
    sinks: dict[str, Any]

    def health_problems(self, unhealthy_after_s: float) -> list[str]: ...

    def stats(self) -> dict: ...

    async def reload_from_file(self) -> list[str]: ...


class Reply:
    """A whole answer: status, body, its type, and any extra headers."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes, content_type: str = "application/json",
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


class TapRequest:
    """An answer streamed for as long as the client reads (``api_listener`` writes it)."""

    __slots__ = ("sink", "limit", "rate")

    def __init__(self, sink: str | None, limit: int, rate: float) -> None:
        self.sink, self.limit, self.rate = sink, limit, rate


def json_reply(value: object, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(value))


_ROUTES = {"/health": "GET", "/metrics": "GET", "/api/stats": "GET", "/api/tap": "GET", "/api/reload": "POST"}


class Api:
    """The API's routes over the daemon (``Control``), for ``api_listener``'s connections."""

    def __init__(self, daemon: Control, hub: TapHub) -> None:
        self.daemon = daemon
        self.hub = hub
        self._allowed: tuple[object, Any] = (None, None)  # (the config's cidr list, its AllowList)

    def allows(self, peer: str) -> bool:
        cidrs = self.daemon.config.api.allow
        if self._allowed[0] is not cidrs:  # rebuilt after a reload
            from .sources.net import AllowList

            self._allowed = (cidrs, AllowList(cidrs))
        allow = self._allowed[1]
        return bool(allow.allows_all or allow.allowed(peer))

    async def handle(self, method: str, path: str, query: dict[str, str], peer: str) -> Reply | TapRequest:
        if not self.allows(peer):
            return Reply(403, b"address not allowed", "text/plain; charset=utf-8")
        wanted = _ROUTES.get(path)
        if wanted is None:
            return Reply(404, b"not found", "text/plain; charset=utf-8")
        if method != wanted and not (method == "HEAD" and wanted == "GET"):
            return Reply(405, b"method not allowed", "text/plain; charset=utf-8", {"Allow": wanted})
        daemon = self.daemon
        if path == "/health":
            problems = daemon.health_problems(daemon.config.api.unhealthy_after_s)
            if problems:
                return json_reply({"status": "unhealthy", "problems": problems}, 503)
            return json_reply({"status": "ok"})
        if path == "/metrics":
            return Reply(200, daemon.metrics.render().encode(), "text/plain; charset=utf-8",
                         {"X-Content-Type-Options": "nosniff"})
        if path == "/api/stats":
            return json_reply(daemon.stats())
        if path == "/api/reload":
            problems = await daemon.reload_from_file()
            if problems:
                return json_reply({"status": "refused", "problems": problems}, 400)
            return json_reply({"status": "reloaded"})
        sink = query.get("sink") or None
        try:
            limit = int(query.get("limit", "0"))
            rate = float(query.get("rate", DEFAULT_TAP_RATE))
            if limit < 0 or not rate > 0:
                raise ValueError
        except ValueError:
            return json_reply({"error": "limit must be an integer >= 0 and rate a number > 0"}, 400)
        if sink is not None and sink not in daemon.sinks:
            return json_reply({"error": f"no sink named {sink!r}", "sinks": sorted(daemon.sinks)}, 404)
        return TapRequest(sink, limit, rate)
