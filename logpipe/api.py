"""HTTP API on ``api.listen``: /health, /metrics (Prometheus text), /api/stats (JSON),
/api/tap (streamed JSON lines of sampled events) and POST /api/reload.

Imported only when the API gets its first connection (``api_listener.py`` owns the socket):
aiohttp is the largest import of the daemon.

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
from aiohttp import web

from .metrics import Metrics
from .sources.net import quiet_bad_http_requests

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Pipeline

__all__ = ["Control", "build_app", "start_app", "TapHub"]

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


def build_app(daemon: Control, hub: TapHub) -> web.Application:
    from .sources.net import AllowList

    allowed: list = [None, None]  # [the config's cidr list, its AllowList]; rebuilt after a reload

    @web.middleware
    async def only_allowed(request: web.Request, handler):
        cidrs = daemon.config.api.allow
        if allowed[0] is not cidrs:
            allowed[:] = [cidrs, AllowList(cidrs)]
        allow = allowed[1]
        if not allow.allows_all and not allow.allowed(request.remote or ""):
            raise web.HTTPForbidden(text="address not allowed")
        return await handler(request)

    app = web.Application(middlewares=[only_allowed])

    async def health(_request: web.Request) -> web.Response:
        problems = daemon.health_problems(daemon.config.api.unhealthy_after_s)
        if problems:
            return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=daemon.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(daemon.stats())

    async def tap(request: web.Request) -> web.StreamResponse:
        sink = request.query.get("sink") or None
        try:
            limit = int(request.query.get("limit", "0"))
            rate = float(request.query.get("rate", DEFAULT_TAP_RATE))
            if limit < 0 or rate <= 0:
                raise ValueError
        except ValueError:
            return web.json_response({"error": "limit must be an integer >= 0 and rate a number > 0"}, status=400)
        if sink is not None and sink not in daemon.sinks:
            return web.json_response({"error": f"no sink named {sink!r}", "sinks": sorted(daemon.sinks)}, status=404)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        client = hub.subscribe(sink, rate, daemon.config.api.tap_queue_events)
        sent = 0
        try:
            while (not limit or sent < limit) and not hub.closed:
                await client.ready.wait()
                client.ready.clear()
                lines = []
                while client.queue and (not limit or sent < limit):
                    lines.append(client.queue.popleft())
                    sent += 1
                if lines:
                    await response.write(b"\n".join(lines) + b"\n")
        except ConnectionResetError:
            pass  # the client went away
        finally:
            hub.unsubscribe(client)
        return response

    async def reload(_request: web.Request) -> web.Response:
        problems = await daemon.reload_from_file()
        if problems:
            return web.json_response({"status": "refused", "problems": problems}, status=400)
        return web.json_response({"status": "reloaded"})

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/api/tap", tap)
    app.router.add_post("/api/reload", reload)
    return app


async def start_app(daemon: Control) -> tuple[web.AppRunner, TapHub]:
    """The app's runner, set up, and its tap hub. ``api_listener.py`` calls this on the
    API's first connection and hands every connection to ``runner.server``."""
    quiet_bad_http_requests()
    hub = TapHub(daemon.pipeline, daemon.metrics)
    runner = web.AppRunner(build_app(daemon, hub), access_log=None, handle_signals=False)
    await runner.setup()
    return runner, hub
