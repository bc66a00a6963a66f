"""The metadata channel: UDP datagrams, each one announcement, into the metadata table.

Every datagram ends in exactly one ``logpipe_metadata_announcements_total{result}``
increment: ``ok``, ``removed``, ``malformed``, ``bad_hmac``, ``replayed``, ``not_allowed`` or
``rate_limited``. Nothing a sender puts in a datagram can raise out of here.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from ..config import MetadataSource
from ..enrich import MetadataTable
from ..metrics import Metrics
from ..parse.metadata import AnnouncementDecoder, AnnouncementError
from .net import AllowList, udp_socket

__all__ = ["MetadataListener"]

RESULTS = ("ok", "removed", "malformed", "bad_hmac", "replayed", "not_allowed", "rate_limited")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "MetadataListener") -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self._owner.receive(data, addr[0])

    def error_received(self, exc: Exception) -> None:
        pass


class MetadataListener:
    def __init__(self, config: MetadataSource, table: MetadataTable, metrics: Metrics, secret: bytes | None = None) -> None:
        self.config = config
        self.table = table
        self.decoder = AnnouncementDecoder(secret=secret)
        self.allow = AllowList(config.allow)
        family = metrics.counter("logpipe_metadata_announcements_total", "Announcements received, by result", ("result",))
        self._results = {r: family.labels(r) for r in RESULTS}
        self._received = metrics.counter(
            "logpipe_received_events_total", "Messages read from sockets", ("source", "protocol")
        ).labels("metadata", "udp")
        self._bytes = metrics.counter("logpipe_received_bytes_total", "Bytes read from sockets", ("source", "protocol")).labels(
            "metadata", "udp"
        )
        self.address: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self.log = structlog.get_logger().bind(component="source.metadata")

    def receive(self, data: bytes, ip: str) -> str:
        self._received.inc()
        self._bytes.inc(len(data))
        if not self.allow.allowed(ip):
            result = "not_allowed"
        else:
            try:
                result = self.table.apply(self.decoder.decode(data, ip, time.time()))
            except AnnouncementError as e:
                result = e.result
        self._results[result].inc()
        return result

    async def start(self) -> None:
        if not self.config.udp:
            return
        loop = asyncio.get_running_loop()
        # A burst of announcements (a node starting hundreds of containers) overflows the
        # default ~200 KiB receive buffer after ~170 datagrams; 4 MiB holds thousands.
        sock = udp_socket(self.config.udp, 4 * 1024 * 1024)
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self.address = sock.getsockname()[:2]
        self.log.info("listening", protocol="udp", address=f"{self.address[0]}:{self.address[1]}")

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
