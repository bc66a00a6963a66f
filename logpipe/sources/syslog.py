"""Syslog listeners: UDP (one datagram, one message) and TCP (framed per connection).

``data_received`` frames the whole read and hands the list on; the UDP reader reads every
datagram the socket holds (up to a bound) and parses them together, so that the pipeline
always works on chunks.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import ssl
import struct
import termios
import time

import structlog

from ..config import SyslogSource
from ..metrics import Metrics
from ..parse.framing import StreamFramer, Truncated, truncate_datagram
from ..parse.syslog import SyslogParser
from ..pipeline import Pipeline
from .base import BindError, bind_or_explain, release, show_address
from .flow import FlowControl
from .net import AllowList, tcp_socket, udp_kernel_drops, udp_socket

__all__ = ["SyslogListeners"]

class _Counters:
    def __init__(self, metrics: Metrics, source: str, protocol: str) -> None:
        self.events = metrics.counter(
            "logpipe_received_events_total", "Messages read from sockets", ("source", "protocol")
        ).labels(source, protocol)
        self.bytes = metrics.counter("logpipe_received_bytes_total", "Bytes read from sockets", ("source", "protocol")).labels(
            source, protocol
        )
        dropped = metrics.counter("logpipe_dropped_events_total", "Events dropped, by stage and reason", ("stage", "reason"))
        self.not_allowed = dropped.labels("receiving", "not_allowed")
        self.too_many_connections = dropped.labels("receiving", "too_many_connections")
        self.idle_closed = metrics.counter(
            "logpipe_connections_closed_total", "TCP connections logpipe closed, by reason", ("source", "reason")
        ).labels(source, "idle_timeout")
        self.truncated = metrics.counter("logpipe_truncated_events_total", "Messages cut at max_line_bytes", ("source",)).labels(source)


class _TcpConnection(asyncio.Protocol):
    __slots__ = ("_owner", "_framer", "_transport", "_ip", "last_data")

    def __init__(self, owner: SyslogListeners) -> None:
        self._owner = owner
        self._framer = StreamFramer(owner.config.max_line_bytes)
        self._transport: asyncio.Transport | None = None
        self._ip: str | None = None
        self.last_data = time.monotonic()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        owner = self._owner
        peer = transport.get_extra_info("peername")
        self._ip = peer[0] if peer else None
        if self._ip is not None and not owner.allow.allowed(self._ip):
            owner.tcp_counters.not_allowed.inc()
            transport.abort()
            return
        if len(owner.connections) >= owner.config.max_connections:
            owner.tcp_counters.too_many_connections.inc()
            transport.abort()
            return
        self._transport = transport
        owner.connections.add(self)
        owner.flow.register(transport)
        owner.arm_idle_sweep()
        owner.log.debug("connection_opened", peer=self._ip, connections=len(owner.connections))

    def data_received(self, data: bytes) -> None:
        owner = self._owner
        counters = owner.tcp_counters
        counters.bytes.inc(len(data))
        self.last_data = time.monotonic()
        framer = self._framer
        before = framer.truncated
        lines = framer.feed_text(data)
        if framer.truncated != before:
            counters.truncated.inc(framer.truncated - before)
        if lines:
            counters.events.inc(len(lines))
            owner.pipeline.ingest(owner.parser.parse_lines(lines, time.time(), self._ip), True)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        owner = self._owner
        if self._transport is None:
            return
        lines = self._framer.finish()
        if lines:
            owner.tcp_counters.events.inc(len(lines))
            owner.pipeline.ingest(owner.parser.parse_lines(lines, time.time(), self._ip), True)
        owner.connections.discard(self)
        owner.flow.unregister(self._transport)
        owner.log.debug("connection_closed", peer=self._ip, error=str(exc) if exc else None)
        self._transport = None
        if not owner.connections:
            owner.all_closed.set()

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def unread_bytes(self) -> int:
        """Bytes the kernel holds for this connection that logpipe has not read (FIONREAD):
        at a stop they are lost, since TCP syslog has no acknowledgement to withhold."""
        sock = self._transport.get_extra_info("socket") if self._transport is not None else None
        if sock is None:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            return 0


class _UdpReader:
    """Reads the UDP socket itself (``loop.add_reader``): each time it is readable, every
    datagram the kernel holds, up to ``MAX_PER_TURN``, is read and parsed as one chunk.

    uvloop's datagram protocol hands over at most 32 datagrams per loop turn (libuv's read
    limit), so a backlog was worked off 32 datagrams at a time; here a chunk grows with
    the backlog, and the per-chunk costs (receive-time context, enrichment setup, encoding
    and sink offer calls) are paid once per chunk."""

    # One turn's chunk: big enough to amortize the per-chunk costs, small enough that a
    # turn stays a few milliseconds (other sockets and the sinks' timers run in between).
    MAX_PER_TURN = 1024
    _READ_SIZE = 65535  # the largest UDP payload: the kernel cuts a datagram to the read size

    def __init__(self, owner: SyslogListeners, sock) -> None:
        self._owner = owner
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self.read)

    def read(self, limit: int = MAX_PER_TURN) -> int:
        """Read and ingest up to ``limit`` datagrams; returns how many were read."""
        recvfrom = self._sock.recvfrom
        size = self._READ_SIZE
        received = []
        append = received.append
        try:
            for _ in range(limit):
                append(recvfrom(size))
        except OSError:
            pass  # BlockingIOError: the queue is empty. ICMP errors do not concern a listener.
        if received:
            self._ingest(received)
        return len(received)

    def _ingest(self, received: list) -> None:
        owner = self._owner
        counters = owner.udp_counters
        allow = owner.allow
        parse_lines = owner.parser.parse_lines
        limit = owner.config.max_line_bytes
        now = time.time()
        # One parse_lines call per sender: the receive-time context is built once, and the
        # allow list is asked once per sender, not per datagram. A sender's messages keep
        # their order; UDP gives none between senders.
        first_ip = received[0][1][0]
        groups: dict[str, list[bytes]] = {first_ip: []}
        group = groups[first_ip]
        nbytes = 0
        for data, addr in received:
            nbytes += len(data)
            ip = addr[0]
            if ip != first_ip:
                group = groups.get(ip)
                if group is None:
                    group = groups[ip] = []
                first_ip = ip
            group.append(data)
        events: list[dict] = []
        refused = 0
        truncated = 0
        for ip, datagrams in groups.items():
            if not allow.allows_all and not allow.allowed(ip):
                refused += len(datagrams)
                continue
            lines = []
            for data in datagrams:
                line = truncate_datagram(data, limit)
                if type(line) is Truncated:
                    truncated += 1
                if line:
                    lines.append(line)
            if lines:
                events += parse_lines(lines, now, ip)
        counters.bytes.inc(nbytes)
        counters.events.inc(len(events))
        if refused:
            counters.not_allowed.inc(refused)
        if truncated:
            counters.truncated.inc(truncated)
        owner.pipeline.ingest(events, False)

    def close(self) -> None:
        """Stop reading; what the kernel already holds arrived, so it is read and ingested
        first (the socket's buffer can hold tens of thousands of datagrams)."""
        if self._sock.fileno() < 0:
            return
        self._loop.remove_reader(self._sock.fileno())
        for _ in range(64):  # bounded: a sender that keeps sending must not hold up a stop
            if self.read() < self.MAX_PER_TURN:
                break
        self._sock.close()


class SyslogListeners:
    """One ``type = "syslog"`` source: its UDP and TCP (or TLS) listeners (``sources/base.py``)."""

    def __init__(self, name: str, config: SyslogSource, pipeline: Pipeline, flow: FlowControl, metrics: Metrics,
                 reuse_port: bool = False) -> None:
        self.name = name
        self.config = config
        self.pipeline = pipeline
        self.flow = flow
        self.parser = _parser(name, config)
        self.allow = AllowList(config.allow)
        self.tcp_counters = _Counters(metrics, name, "tls" if config.tls else "tcp")
        self.udp_counters = _Counters(metrics, name, "udp")
        self.connections: set[_TcpConnection] = set()
        self.all_closed = asyncio.Event()
        self.addresses: dict[str, tuple[str, int]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._udp_sock = None
        self._udp_drops_before = 0  # kernel drops counted on UDP sockets a reload replaced
        self._udp_reader: _UdpReader | None = None
        self._metrics = metrics
        self._idle_timer: asyncio.TimerHandle | None = None
        metrics.gauge("logpipe_tcp_connections", "Open syslog TCP/TLS connections", ("source",)).set_function(
            lambda: len(self.connections), name
        )
        # Read through self: a reload may replace the parser (it carries the counts over).
        metrics.counter("logpipe_parse_errors_total", "Lines stored raw because they fit neither RFC", ("source",)).set_function(
            lambda: self.parser.parse_errors, name
        )
        # The framer counts cuts at max_line_bytes; the parser counts cuts of _msg below
        # VictoriaLogs' line limit. Both are truncations of this source.
        metrics.counter("logpipe_truncated_events_total", "Messages cut at max_line_bytes", ("source",)).set_function(
            lambda: self.parser.truncated, name
        )
        self.unread_at_stop = metrics.counter(
            "logpipe_unread_bytes_at_shutdown_total", "Bytes clients sent that a stop closed unread", ("source",)
        ).labels(name)
        self.log = structlog.get_logger().bind(component=f"source.{name}")
        # A worker of daemon.workers > 1 shares the ports with the other workers.
        self.reuse_port = reuse_port

    async def start(self) -> None:
        bound = self.bind_changed(self.config)
        try:
            if "udp" in bound:
                await self._start_udp(bound.pop("udp"))
            if "tcp" in bound:
                await self._start_tcp(bound.pop("tcp"))
        finally:
            release(bound)

    async def _start_udp(self, sock) -> None:
        self._udp_reader = _UdpReader(self, sock)
        self.addresses["udp"] = sock.getsockname()[:2]
        self._metrics.counter(
            "logpipe_udp_kernel_drops_total", "Datagrams the kernel dropped before logpipe read them", ("source",)
        ).set_function(lambda: self._udp_drops_before + udp_kernel_drops(sock), self.name)
        self._udp_sock = sock
        # The kernel reports (and charges against) twice what was set; less than twice
        # what was asked means SO_RCVBUF was capped at net.core.rmem_max.
        asked = self.config.udp_receive_buffer_bytes
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.log.info("listening", protocol="udp", address=show_address(self.addresses["udp"]), receive_buffer_bytes=got)
        if got < 2 * asked:
            self.log.warning("udp_receive_buffer_capped", asked=asked, got=got // 2,
                             hint="raise net.core.rmem_max or run with CAP_NET_ADMIN; bursts will be dropped sooner")

    async def _start_tcp(self, sock) -> None:
        loop = asyncio.get_running_loop()
        tls = self.config.tls
        if tls is None:
            self._server = await loop.create_server(lambda: _TcpConnection(self), sock=sock)
        else:
            context = listener_tls_context(f"sources.{self.name}.tls", tls, sock)
            self._server = await loop.create_server(
                lambda: _TcpConnection(self),
                sock=sock,
                ssl=context,
                ssl_handshake_timeout=tls.handshake_timeout_s,
            )
        self.addresses["tcp"] = sock.getsockname()[:2]
        self.log.info("listening", protocol="tls" if tls else "tcp", address=show_address(self.addresses["tcp"]),
                      client_certificates=bool(tls and tls.client_ca))

    def arm_idle_sweep(self) -> None:
        """One sweep for all connections, a few times per timeout: no timer per connection,
        and none at all while no connection is open (an idle daemon is not woken for it)."""
        timeout = self.config.idle_timeout_s
        if not timeout or self._idle_timer is not None or not self.connections:
            return
        interval = max(0.1, min(timeout / 4, 5.0))
        self._idle_timer = asyncio.get_running_loop().call_later(interval, self._close_idle)

    def _close_idle(self) -> None:
        self._idle_timer = None
        timeout = self.config.idle_timeout_s  # read each sweep: a reload may change it
        if timeout and not self.flow.paused:  # paused connections are silent because of us
            cutoff = time.monotonic() - timeout
            idle = [c for c in self.connections if c.last_data < cutoff and not c.closing]
            for conn in idle:
                conn.close()
            if idle:
                self.tcp_counters.idle_closed.inc(len(idle))
                self.log.info("idle_connections_closed", connections=len(idle), idle_timeout_s=timeout)
        if any(not c.closing for c in self.connections):
            self.arm_idle_sweep()

    def bind_changed(self, config: SyslogSource) -> dict:
        """Reload, step 1 (may raise BindError/ValueError, then nothing changed): check the new
        settings and bind the sockets of changed addresses, while the old ones still listen."""
        _parser(self.name, config)  # an unknown timezone raises ValueError here
        AllowList(config.allow)
        bound = {}
        try:
            if config.udp and (config.udp != self.config.udp or self._udp_reader is None):
                bound["udp"] = bind_or_explain(udp_socket, f"sources.{self.name}.udp", config.udp,
                                               config.udp_receive_buffer_bytes, self.reuse_port)
            if config.tcp and (config.tcp != self.config.tcp or self._server is None):
                bound["tcp"] = bind_or_explain(tcp_socket, f"sources.{self.name}.tcp", config.tcp, self.reuse_port)
        except OSError:
            release(bound)
            raise
        return bound

    async def reconfigure(self, config: SyslogSource, bound: dict) -> None:
        """Reload, step 2: start the new sockets from ``bind_changed``, then close the
        replaced ones. Unchanged listeners and every open TCP connection stay as they are
        (connections keep their framer; new settings apply to the next chunk they read)."""
        old = self.config
        if config.timezone != old.timezone or config.parse_body != old.parse_body:
            parser = _parser(self.name, config)
            parser.parse_errors, parser.truncated = self.parser.parse_errors, self.parser.truncated
            self.parser = parser
        self.allow = AllowList(config.allow)
        self.config = config
        old_udp, old_server = self._udp_reader, self._server
        old_addresses = {k: show_address(v) for k, v in self.addresses.items()}
        if "udp" in bound or (not config.udp and old_udp is not None):
            if old_udp is not None:
                self._udp_drops_before += udp_kernel_drops(self._udp_sock)
            self._udp_reader = None
            self.addresses.pop("udp", None)
            if "udp" in bound:
                await self._start_udp(bound["udp"])
            if old_udp is not None:
                old_udp.close()
                self.log.info("stopped_listening", protocol="udp", address=old_addresses.get("udp"))
        if "tcp" in bound or (not config.tcp and old_server is not None):
            self._server = None
            self.addresses.pop("tcp", None)
            if "tcp" in bound:
                await self._start_tcp(bound["tcp"])
            if old_server is not None:
                old_server.close()  # stops accepting; its open connections keep running
                self.log.info("stopped_listening", protocol="tcp", address=old_addresses.get("tcp"))
        self.arm_idle_sweep()  # idle_timeout_s may have been switched on with connections open

    async def stop(self, quiet_s: float = 0.2, grace_s: float = 2.0) -> None:
        """Stop accepting; read what connections already sent (until each has been quiet
        for ``quiet_s``, at most ``grace_s``), then close them. Returns once every
        connection's unterminated tail has been flushed into the pipeline, so nothing read
        is still outside the buffers when they close."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._udp_reader is not None:
            self._udp_reader.close()
        if self._server is not None:
            self._server.close()
        if self.connections:
            # Lines already in the kernel's socket buffers were sent: read them. Paused
            # connections resume, since a graceful stop persists or counts what it holds.
            self.flow.release_all()
            deadline = time.monotonic() + grace_s
            while self.connections and time.monotonic() < deadline:
                newest = max(c.last_data for c in self.connections)
                wait = newest + quiet_s - time.monotonic()
                if wait <= 0:
                    break
                try:
                    await asyncio.wait_for(self.all_closed.wait(), min(wait, deadline - time.monotonic()))
                except TimeoutError:
                    pass
            unread = [c.unread_bytes() for c in self.connections]
            for conn in list(self.connections):
                conn.close()
            if any(unread):
                self.unread_at_stop.inc(sum(unread))
                self.log.warning("unread_at_shutdown", stage="receiving", bytes=sum(unread),
                                 connections=sum(1 for u in unread if u), grace_s=grace_s,
                                 hint="sent by the clients but not read before the stop; TCP syslog cannot acknowledge")
            if self.connections:
                try:
                    await asyncio.wait_for(self.all_closed.wait(), 5)
                except TimeoutError:
                    self.log.warning("connections_not_closed", stage="receiving", count=len(self.connections))


def _parser(name: str, config: SyslogSource) -> SyslogParser:
    try:
        return SyslogParser(config.timezone, config.parse_body == "auto", source=name)
    except ValueError as e:
        raise ValueError(f"sources.{name}.timezone: {e}") from None


def listener_tls_context(key: str, tls, sock) -> ssl.SSLContext:
    """``tls_context``, or BindError naming ``key`` and the files after closing ``sock``: a
    listener whose certificate cannot be loaded does not start."""
    try:
        return tls_context(tls)
    except (OSError, ssl.SSLError) as e:
        sock.close()
        raise BindError(f"{key}: cannot load {tls.cert}, {tls.key}"
                        f"{', ' + tls.client_ca if tls.client_ca else ''}: {e.strerror or e}") from None


def tls_context(tls) -> ssl.SSLContext:
    """RFC 5425 server context: TLS 1.2+, the configured certificate, and with
    ``client_ca`` a required client certificate signed by it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca:
        context.load_verify_locations(cafile=tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
