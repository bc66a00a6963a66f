"""HTTP API on ``api.listen``: /health, /metrics (Prometheus text), /api/stats (JSON).

Read-only views of the running daemon; nothing here is on the ingest path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # pragma: no cover
    from .app import Daemon

__all__ = ["build_app"]

# A sink failing for longer than this turns /health to 503.
UNHEALTHY_AFTER_S = 60.0


def build_app(daemon: "Daemon") -> web.Application:
    from .sources.net import AllowList

    allow = AllowList(daemon.config.api.allow)

    @web.middleware
    async def only_allowed(request: web.Request, handler):
        if not allow.allows_all and not allow.allowed(request.remote or ""):
            raise web.HTTPForbidden(text="address not allowed")
        return await handler(request)

    app = web.Application(middlewares=[only_allowed])

    async def health(_request: web.Request) -> web.Response:
        problems = daemon.health_problems(UNHEALTHY_AFTER_S)
        if problems:
            return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=daemon.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(daemon.stats())

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/stats", stats)
    return app
