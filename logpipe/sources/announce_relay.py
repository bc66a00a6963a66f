"""Announcements over NATS (``[sources.NAME.nats]`` on a metadata source).

Every announcement a daemon accepts from UDP (allow list, rate limit, HMAC, replay window
passed) is published on ``subject`` as the datagram it received, with the sender's address
in the ``Logpipe-Source-Ip`` header (an announcement without ``ip`` is keyed by it). Every
daemon subscribed to the subject applies it through the same decoder, so a signed
announcement is verified again by each (a forged message on the subject is ``bad_hmac``
there too) and counted in ``logpipe_metadata_announcements_total`` like a datagram.
Allow list and rate limit are the receiving edge's: they are not applied again.

Plain NATS publish/subscribe, not JetStream: a daemon that is down misses announcements
and learns the entries again from their periodic re-announcements (and its snapshot).
The connection is opened with ``no_echo``, so a daemon never gets its own publishes back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from ..config import MetadataNats
from ..metrics import Metrics

__all__ = ["NatsRelay", "SOURCE_IP_HEADER"]

SOURCE_IP_HEADER = "Logpipe-Source-Ip"


class NatsRelay:
    def __init__(self, listener: Any, config: MetadataNats, metrics: Metrics) -> None:
        self.listener = listener
        self.config = config
        self.log = structlog.get_logger().bind(component=f"source.{listener.name}.nats")
        family = metrics.counter("logpipe_metadata_relay_total", "Announcements published to or received from NATS",
                                 ("source", "direction"))
        self._published = family.labels(listener.name, "published")
        self._received = family.labels(listener.name, "received")
        self._failed = family.labels(listener.name, "publish_failed")
        self._client: Any = None
        self._sends: set[asyncio.Task] = set()

    async def start(self) -> None:
        from ..natsconn import connect

        self._client = await connect(self.config, f"sources.{self.listener.name}.nats", no_echo=True)
        await self._client.subscribe(self.config.subject, cb=self._on_message)
        self.log.info("announcements_over_nats", subject=self.config.subject, servers=list(self.config.servers))

    def publish(self, data: bytes, ip: str) -> None:
        if self._client is None:
            return
        task = asyncio.ensure_future(self._send(data, ip))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, data: bytes, ip: str) -> None:
        try:
            await self._client.publish(self.config.subject, data, headers={SOURCE_IP_HEADER: ip})
            self._published.inc()
        except Exception as e:  # reconnecting with a full buffer, closed: the re-announcement will do
            self._failed.inc()
            self.log.warning("announcement_relay_failed", error=f"{type(e).__name__}: {e}")

    async def _on_message(self, msg: Any) -> None:
        self._received.inc()
        ip = (msg.headers or {}).get(SOURCE_IP_HEADER)
        self.listener.count(self.listener.apply(msg.data, ip))

    async def stop(self) -> None:
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            from ..natsconn import close

            await close(client)
