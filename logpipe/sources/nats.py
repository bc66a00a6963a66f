"""``type = "nats"``: events from a JetStream stream through a durable pull consumer.

Every shipper naming the same ``consumer`` pulls from the one consumer, so they split the
stream; a message one of them received and never acknowledged (it died) is redelivered by
the server after ``ack_wait_s`` to whichever shipper pulls next.

A message is acknowledged only once its events are safe in every sink (``Buffer`` docstring):
at once when every sink lane's buffer is durable (disk: the events are in the kernel when
``ingest`` returns), else when each memory-buffered sink has confirmed every event pushed
up to and including this message's. Until then the message is held, kept alive with a
progress notice every ``ack_wait_s / 3`` so the server does not hand it to another shipper.
At most ``max_in_flight`` messages are held; pulling also stops while any blocking sink
lane is full or a memory buffer is at its lead (FlowControl), so a slow sink slows the pulls.

Payloads: NDJSON of logpipe events (the nats sink's messages); a line that is not a JSON
object (another producer's text, garbage) becomes ``{"_time": receive time, "_msg": the
line, "parse_error": "true"}``, counted in ``logpipe_parse_errors_total``, and the message
is acknowledged like any other. A JSON object without ``_time`` gets the receive time.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import orjson
import structlog

from ..config import NatsSource
from ..metrics import Metrics
from ..parse.timestamps import format_time
from ..pipeline import Pipeline
from .flow import FlowControl

__all__ = ["NatsConsumer", "decode_message"]

_RETRY_S = 1.0
_STOP_WAIT_S = 10.0  # at stop: how long held messages may wait for their sinks to confirm


def decode_message(data: bytes, now: float) -> tuple[list[dict], int]:
    """(events, lines stored raw) of one message's payload."""
    events: list[dict] = []
    raw = 0
    stamp = None
    for line in data.split(b"\n") if data else [b""]:
        if not line.strip() and data:
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if type(event) is not dict:
            stamp = stamp or format_time(now)
            event = {"_time": stamp, "_msg": line.decode("utf-8", "replace"), "parse_error": "true"}
            raw += 1
        elif "_time" not in event:
            event["_time"] = stamp = stamp or format_time(now)
        events.append(event)
    return events, raw


class _Gate:
    """What FlowControl pauses: pulling, here (the transport interface it drives)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    def pause_reading(self) -> None:
        self.open.clear()

    def resume_reading(self) -> None:
        self.open.set()

    def is_closing(self) -> bool:
        return False


class _Held:
    """Messages ingested together, waiting for their memory-buffered sinks."""

    __slots__ = ("replies", "marks")

    def __init__(self, replies: list[str], marks: list[tuple[Any, int]]) -> None:
        self.replies = replies
        self.marks = marks  # (buffer, pushed_events after this ingest)

    def safe(self) -> bool:
        return all(buffer.confirmed_events >= mark for buffer, mark in self.marks)


class NatsConsumer:
    """One ``type = "nats"`` source (the Source contract, sources/base.py; it binds no socket,
    so ``bind_changed`` binds nothing and a changed config is applied by reconnecting)."""

    def __init__(self, name: str, config: NatsSource, pipeline: Pipeline, flow: FlowControl, metrics: Metrics) -> None:
        self.name = name
        self.config = config
        self.pipeline = pipeline
        self.flow = flow
        self.addresses: dict[str, tuple[str, int]] = {}
        self.log = structlog.get_logger().bind(component=f"source.{name}")
        self._received = metrics.counter(
            "logpipe_received_events_total", "Messages read from sockets", ("source", "protocol")).labels(name, "nats")
        self._bytes = metrics.counter(
            "logpipe_received_bytes_total", "Bytes read from sockets", ("source", "protocol")).labels(name, "nats")
        self._parse_errors = metrics.counter(
            "logpipe_parse_errors_total", "Lines stored raw because they fit neither RFC", ("source",)).labels(name)
        messages = metrics.counter(
            "logpipe_nats_messages_total", "JetStream messages this source received, acknowledged, or got again",
            ("source", "result"))
        self._messages_received = messages.labels(name, "received")
        self._messages_acked = messages.labels(name, "acked")
        self._messages_redelivered = messages.labels(name, "redelivered")
        self._pending = 0  # the consumer's messages not yet delivered to any shipper, last seen
        metrics.gauge("logpipe_nats_pending_messages", "The consumer's messages not yet delivered (all shippers)",
                      ("source",)).set_function(lambda: self._pending, name)
        metrics.gauge("logpipe_nats_in_flight_messages", "Messages this shipper holds unacknowledged",
                      ("source",)).set_function(lambda: self._in_flight, name)
        self._client: Any = None
        self._gate = _Gate()
        self._held: collections.deque[_Held] = collections.deque()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._confirmed = asyncio.Event()
        self._listening: set[int] = set()  # ids of buffers whose confirmations wake us
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        from ..natsconn import connect

        self._client = await connect(self.config, f"sources.{self.name}")
        self.flow.register(self._gate)
        self._stopping = False
        self._tasks = [asyncio.ensure_future(self._pull()), asyncio.ensure_future(self._acknowledge())]
        self.log.info("nats_consuming", servers=list(self.config.servers), stream=self.config.stream,
                      consumer=self.config.consumer)

    def bind_changed(self, config: NatsSource) -> dict:
        return {}

    async def reconfigure(self, config: NatsSource, bound: dict) -> None:
        """A reload: an added source starts; a changed one stops (its held messages get
        their sinks' confirmation first) and connects again with the new settings."""
        if config == self.config and self._client is not None:
            return
        if self._client is not None:
            await self.stop()
        self.config = config
        await self.start()

    async def stop(self) -> None:
        """Stop pulling; give held messages a while to be confirmed and acknowledge them (a
        message still held after that is redelivered later, to any shipper)."""
        self._stopping = True
        self._gate.open.set()
        self._room.set()
        puller = self._tasks[0] if self._tasks else None
        while puller is not None and not puller.done():
            # Again if a cancel was swallowed on the way (a client request turning it into
            # its own error): a stop must not wait on a retry loop.
            puller.cancel()
            await asyncio.wait([puller], timeout=1.0)
        if puller is not None:
            await asyncio.gather(puller, return_exceptions=True)
        deadline = time.monotonic() + _STOP_WAIT_S
        while self._held and time.monotonic() < deadline and self._client is not None and self._client.is_connected:
            self._confirmed.clear()
            await self._ack_safe()
            if self._held:
                try:
                    await asyncio.wait_for(self._confirmed.wait(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._held:
            self.log.info("nats_left_unacknowledged", messages=self._in_flight,
                          hint="the server redelivers them after ack_wait_s")
        self._held.clear()
        self._in_flight = 0
        self.flow.unregister(self._gate)
        client, self._client = self._client, None
        if client is not None:
            from ..natsconn import close

            await close(client)

    # --- pulling -------------------------------------------------------------------------

    async def _subscription(self) -> Any:
        """Bind to the durable consumer, creating it if missing; waits (logging once) while
        the stream does not exist or JetStream cannot answer."""
        import nats.js.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = self.config
        js = self._client.jetstream(timeout=5)
        logged = False
        while True:
            try:
                try:
                    await js.consumer_info(config.stream, config.consumer)
                except nats.js.errors.NotFoundError:
                    await js.add_consumer(config.stream, ConsumerConfig(
                        durable_name=config.consumer, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                        ack_wait=config.ack_wait_s, max_ack_pending=config.max_ack_pending,
                        filter_subject=config.filter_subject))
                    self.log.info("nats_consumer_created", stream=config.stream, consumer=config.consumer)
                return await js.pull_subscribe_bind(config.consumer, config.stream)
            except Exception as e:  # stream missing, JetStream electing or down: keep trying
                if self._stopping:
                    # stop() cancelled a request and the client answered with its own error
                    # (seen as a hang at shutdown while the stream was missing): end here.
                    raise asyncio.CancelledError from None
                if not logged:
                    logged = True
                    self.log.warning("nats_consumer_unavailable", stream=config.stream, consumer=config.consumer,
                                     error=f"{type(e).__name__}: {e}", retrying=True)
                await asyncio.sleep(_RETRY_S)

    async def _pull(self) -> None:
        import nats.errors

        subscription = await self._subscription()
        failing = False
        while not self._stopping:
            await self._gate.open.wait()
            if self.pipeline.full_sinks():
                # A lane that drops when full (or a lane of a UDP-only path) never pauses the
                # gate: look again shortly rather than push into it.
                await asyncio.sleep(0.05)
                continue
            room = self.config.max_in_flight - self._in_flight
            if room < min(self.config.fetch_messages, self.config.max_in_flight):
                self._room.clear()
                await self._room.wait()
                continue
            try:
                messages = await subscription.fetch(min(self.config.fetch_messages, room), timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as e:  # disconnected, reconnecting, consumer deleted, ...
                if not failing:
                    failing = True
                    self.log.warning("nats_pull_failed", error=f"{type(e).__name__}: {e}", retrying=True)
                await asyncio.sleep(_RETRY_S)
                if isinstance(e, nats.js.errors.NotFoundError):
                    subscription = await self._subscription()
                continue
            if failing:
                failing = False
                self.log.info("nats_pull_recovered")
            self._take(messages)

    def _take(self, messages: list) -> None:
        now = time.time()
        events: list[dict] = []
        replies = []
        nbytes = 0
        raw = 0
        for msg in messages:
            found, bad = decode_message(msg.data, now)
            events += found
            raw += bad
            nbytes += len(msg.data)
            replies.append(msg.reply)
            try:
                metadata = msg.metadata
                if metadata.num_delivered > 1:
                    self._messages_redelivered.inc()
                self._pending = metadata.num_pending
            except Exception:  # not a JetStream message: nothing to learn
                pass
        self._messages_received.inc(len(messages))
        self._received.inc(len(events))
        self._bytes.inc(nbytes)
        if raw:
            self._parse_errors.inc(raw)
        self.pipeline.ingest(events, True, may_hold=False)
        marks = []
        for lane in self.pipeline.lanes:
            buffer = lane.buffer
            if buffer.durable or buffer.confirmed_events >= buffer.pushed_events:
                continue
            marks.append((buffer, buffer.pushed_events))
            if id(buffer) not in self._listening:
                self._listening.add(id(buffer))
                buffer.confirm_listeners.append(self._confirmed.set)
        self._held.append(_Held(replies, marks))
        self._in_flight += len(replies)
        self._confirmed.set()

    # --- acknowledging -------------------------------------------------------------------

    async def _acknowledge(self) -> None:
        keepalive = self.config.ack_wait_s / 3
        next_keepalive = time.monotonic() + keepalive
        while True:
            self._confirmed.clear()
            await self._ack_safe()
            wait = next_keepalive - time.monotonic()
            if wait <= 0:
                await self._send_all(b"+WPI", [r for held in self._held for r in held.replies])
                next_keepalive = time.monotonic() + keepalive
                continue
            try:
                await asyncio.wait_for(self._confirmed.wait(), wait)
            except TimeoutError:
                pass

    async def _ack_safe(self) -> None:
        held = self._held
        while held and held[0].safe():
            done = held.popleft()
            await self._send_all(b"+ACK", done.replies)
            self._in_flight -= len(done.replies)
            self._messages_acked.inc(len(done.replies))
            self._room.set()

    async def _send_all(self, what: bytes, replies: list[str]) -> None:
        client = self._client
        if client is None:
            return
        try:
            for reply in replies:
                await client.publish(reply, what)
        except Exception as e:  # an ack lost to a disconnect: the message comes again (a duplicate)
            self.log.warning("nats_ack_failed", error=f"{type(e).__name__}: {e}")
