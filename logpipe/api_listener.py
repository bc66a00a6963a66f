"""The API's listening socket, without aiohttp until someone connects.

Importing aiohttp and building the app costs ~14 MB of RSS (most of an idle daemon's
footprint beyond the interpreter), paid for nothing when nobody asks. So the API address is
bound at start by a plain asyncio server (a port that cannot be bound still fails the
start), and its first connection imports ``api.py`` and builds the app. That connection and
every later one is served by aiohttp's own request handler: a connection accepted while the
app is being built waits with reading paused, then is handed over with whatever it already
sent. On the wire nothing differs from an aiohttp TCPSite (routes, allow list, tap, reload).

A reload that moves the API binds the new address before closing the old (``bind`` then
``swap``); connections already open are answered on their own connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:  # pragma: no cover
    from .api import Control

__all__ = ["ApiServer"]


class _Waiting(asyncio.Protocol):
    """A connection accepted before the app exists: holds it, reading paused, until
    ``ApiServer`` hands it to the app's request handler."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()  # what arrived despite the pause
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]
        self.api._adopt(self)

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.eof = True
        return True  # keep it open: the handler decides, as it would have

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def hand_over(self, factory: Any) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        handler = factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.data:
            handler.data_received(bytes(self.data))
        if self.eof:
            if not handler.eof_received():
                transport.close()
            return
        transport.resume_reading()


class ApiServer:
    """The API's listening site: started once, moved by a reload, stopped last."""

    def __init__(self, daemon: Control) -> None:
        self.daemon = daemon
        self.tap_hub: Any = None  # api.TapHub once built
        self._runner: Any = None  # aiohttp AppRunner once built
        self._handler_factory: Any = None  # aiohttp's web.Server: a protocol factory
        self._building: asyncio.Task | None = None
        self._waiting: list[_Waiting] = []
        self._server: asyncio.Server | None = None
        self._stopped = False
        self.log = structlog.get_logger().bind(component="api")

    @property
    def built(self) -> bool:
        """Whether aiohttp and the app are loaded (after the first connection)."""
        return self._handler_factory is not None

    async def start(self, listen: str) -> tuple[str, int]:
        self._server = await self.bind(listen)
        return self._announce(self._server)

    async def bind(self, listen: str) -> asyncio.Server:
        from .sources.base import BindError
        from .sources.net import tcp_socket

        try:
            # Bound here, not by create_server(host, port): that resolves the host on
            # libuv's thread pool, four threads an idle daemon has no other use for.
            sock = tcp_socket(listen)
        except OSError as e:
            raise BindError(f"api.listen: cannot bind {listen}: {e.strerror or e}") from None
        return await asyncio.get_running_loop().create_server(self._connection, sock=sock)

    def _announce(self, server: asyncio.Server) -> tuple[str, int]:
        address = server.sockets[0].getsockname()[:2]  # port 0 needs the real one
        self.log.info("listening", protocol="http", address=f"{address[0]}:{address[1]}")
        return address

    async def swap(self, listen: str | None, server: asyncio.Server | None) -> tuple[str, int] | None:
        """Reload: serve on ``server`` (bound by ``bind``), or nowhere when ``listen`` is None.
        Closes the old listening socket only: the request that asked for this reload (and
        any other open connection) is answered on its own connection."""
        old, self._server = self._server, server
        address = self._announce(server) if server is not None else None
        if old is not None:
            old.close()
        return address

    async def stop(self) -> None:
        self._stopped = True
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._building is not None:
            self._building.cancel()
            await asyncio.wait([self._building])
            self._building = None
        for waiting in self._waiting:
            if waiting.transport is not None:
                waiting.transport.close()
        self._waiting.clear()
        if self._runner is not None:
            self.tap_hub.close()
            await self._runner.cleanup()
            self._runner = None

    # --- the first connection builds the app ---------------------------------------

    def _connection(self) -> asyncio.BaseProtocol:
        if self._handler_factory is not None:
            return self._handler_factory()
        return _Waiting(self)

    def _adopt(self, conn: _Waiting) -> None:
        if self._stopped:
            conn.transport.close()  # type: ignore[union-attr]
            return
        if self._handler_factory is not None:  # built between accepting it and now
            conn.hand_over(self._handler_factory)
            return
        self._waiting.append(conn)
        if self._building is None:
            self._building = asyncio.get_running_loop().create_task(self._build(), name="api.build")

    async def _build(self) -> None:
        try:
            from .api import start_app

            self._runner, self.tap_hub = await start_app(self.daemon)
        except Exception as e:  # never leave a connection hanging on a broken build
            self.log.error("api_start_failed", error=f"{type(e).__name__}: {e}")
            waiting, self._waiting = self._waiting, []
            for conn in waiting:
                if conn.transport is not None:
                    conn.transport.close()
            self._building = None  # the next connection tries again
            return
        self._handler_factory = self._runner.server
        waiting, self._waiting = self._waiting, []
        for conn in waiting:
            conn.hand_over(self._handler_factory)
        self._building = None
