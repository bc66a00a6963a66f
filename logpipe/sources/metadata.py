"""The metadata channel: UDP datagrams, each one announcement, into the metadata table.

Every datagram ends in exactly one ``logpipe_metadata_announcements_total{result}``
increment: ``ok``, ``removed``, ``malformed``, ``bad_hmac``, ``replayed``, ``not_allowed`` or
``rate_limited``. Nothing a sender puts in a datagram can raise out of here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from ..config import MetadataSource
from ..enrich import MetadataTable
from ..metrics import Metrics
from ..parse.metadata import AnnouncementDecoder, AnnouncementError
from .base import bind_or_explain, show_address
from .net import AllowList, udp_socket

__all__ = ["MetadataListener"]

RESULTS = ("ok", "removed", "malformed", "bad_hmac", "replayed", "not_allowed", "rate_limited")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: MetadataListener) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self._owner.receive(data, addr[0])

    def error_received(self, exc: Exception) -> None:
        pass


class RateLimiter:
    """A token bucket per source address: ``rate_per_s`` sustained, ``burst`` at once.
    The buckets dict is bounded: at ``max_addresses`` the full (idle) buckets are
    forgotten, and if that frees nothing, all are (a fresh bucket is a full one, so
    forgetting only ever errs towards admitting)."""

    def __init__(self, rate_per_s: float, burst: float, max_addresses: int = 65536) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: dict[str, list[float]] = {}  # ip -> [tokens, last refill]

    def allow(self, ip: str, now: float) -> bool:
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._forget_idle(now)
            bucket = self._buckets[ip] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def _forget_idle(self, now: float) -> None:
        full = [ip for ip, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for ip in full:
            del self._buckets[ip]
        if len(self._buckets) >= self.max_addresses:
            self._buckets.clear()


class MetadataListener:
    """One ``type = "metadata"`` source (``sources/base.py``). Every metadata source feeds
    the one table; an announcement without ``ttl_s`` gets this source's ``ttl_s``."""

    # A burst of announcements (a node starting hundreds of containers) overflows the
    # default ~200 KiB receive buffer after ~170 datagrams; 4 MiB holds thousands.
    RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
    # Settings read once, at start: a reload that changes them is refused (daemon/reload.py).
    RESTART_KEYS = ("secret", "secret_file", "secret_env", "replay_window_s", "rate_per_s", "rate_burst", "max_labels",
                    "max_label_value_bytes", "nats")

    def __init__(self, name: str, config: MetadataSource, table: MetadataTable, metrics: Metrics,
                 secret: bytes | None = None) -> None:
        self.name = name
        self.config = config
        self.table = table
        self.decoder = AnnouncementDecoder(
            secret=secret,
            replay_window_s=config.replay_window_s,
            max_labels=config.max_labels,
            max_value_bytes=config.max_label_value_bytes,
        )
        self.rate = RateLimiter(config.rate_per_s, config.rate_burst)
        self.allow = AllowList(config.allow)
        family = metrics.counter("logpipe_metadata_announcements_total", "Announcements received, by result", ("result",))
        self._results = {r: family.labels(r) for r in RESULTS}
        self._received = metrics.counter(
            "logpipe_received_events_total", "Messages read from sockets", ("source", "protocol")
        ).labels(name, "udp")
        self._bytes = metrics.counter("logpipe_received_bytes_total", "Bytes read from sockets", ("source", "protocol")).labels(
            name, "udp"
        )
        self.addresses: dict[str, tuple[str, int]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self.log = structlog.get_logger().bind(component=f"source.{name}")
        self._relay: Any = None  # sources/announce_relay.NatsRelay with config.nats
        if config.nats is not None:
            from .announce_relay import NatsRelay

            self._relay = NatsRelay(self, config.nats, metrics)

    @property
    def address(self) -> tuple[str, int] | None:
        return self.addresses.get("udp")

    def receive(self, data: bytes, ip: str) -> str:
        self._received.inc()
        self._bytes.inc(len(data))
        if not self.allow.allowed(ip):
            result = "not_allowed"
        elif not self.rate.allow(ip, time.monotonic()):
            result = "rate_limited"
        else:
            result = self.apply(data, ip)
            if self._relay is not None and result in ("ok", "removed"):
                self._relay.publish(data, ip)
        self._results[result].inc()
        return result

    def apply(self, data: bytes, ip: str | None) -> str:
        """Verify and decode one announcement (HMAC, replay window, limits) into the table."""
        try:
            return self.table.apply(self.decoder.decode(data, ip, time.time()), self.config.ttl_s)
        except AnnouncementError as e:
            return e.result

    def count(self, result: str) -> None:
        self._results[result].inc()

    async def start(self) -> None:
        await self.reconfigure(self.config, self.bind_changed(self.config))
        if self._relay is not None:
            await self._relay.start()

    def bind_changed(self, config: MetadataSource) -> dict:
        AllowList(config.allow)
        if config.udp and (config.udp != self.config.udp or self._transport is None):
            return {"udp": bind_or_explain(udp_socket, f"sources.{self.name}.udp", config.udp, self.RECEIVE_BUFFER_BYTES)}
        return {}

    async def reconfigure(self, config: MetadataSource, bound: dict) -> None:
        """Start a newly bound socket before the replaced one closes; the allow list and
        ``ttl_s`` apply to the next datagram."""
        self.allow = AllowList(config.allow)
        self.config = config
        old = self._transport
        if "udp" in bound:
            sock = bound["udp"]
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
            self.addresses["udp"] = sock.getsockname()[:2]
            self.log.info("listening", protocol="udp", address=show_address(self.addresses["udp"]))
        elif not config.udp:
            self._transport = None
            self.addresses.pop("udp", None)
        if old is not None and old is not self._transport:
            old.close()

    async def stop(self) -> None:
        if self._relay is not None:
            await self._relay.stop()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
