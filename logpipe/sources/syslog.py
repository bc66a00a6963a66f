"""Syslog listeners: UDP (one datagram, one message) and TCP (framed per connection).

``data_received`` frames the whole read and hands the list on; UDP datagrams that arrive
in the same event-loop turn are gathered and parsed together (one ``call_soon`` per burst)
so that the pipeline always works on chunks.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import structlog

from ..config import SyslogSource
from ..metrics import Metrics
from ..parse.framing import StreamFramer, Truncated, truncate_datagram
from ..parse.syslog import SyslogParser
from ..pipeline import FlowControl, Pipeline
from .net import AllowList, tcp_socket, udp_kernel_drops, udp_socket

__all__ = ["SyslogListeners"]

SOURCE = "syslog"


class _Counters:
    def __init__(self, metrics: Metrics, protocol: str) -> None:
        self.events = metrics.counter(
            "logpipe_received_events_total", "Messages read from sockets", ("source", "protocol")
        ).labels(SOURCE, protocol)
        self.bytes = metrics.counter("logpipe_received_bytes_total", "Bytes read from sockets", ("source", "protocol")).labels(
            SOURCE, protocol
        )
        dropped = metrics.counter("logpipe_dropped_events_total", "Events dropped, by stage and reason", ("stage", "reason"))
        self.not_allowed = dropped.labels("receiving", "not_allowed")
        self.too_many_connections = dropped.labels("receiving", "too_many_connections")
        self.idle_closed = metrics.counter(
            "logpipe_connections_closed_total", "TCP connections logpipe closed, by reason", ("source", "reason")
        ).labels(SOURCE, "idle_timeout")
        self.truncated = metrics.counter("logpipe_truncated_events_total", "Messages cut at max_line_bytes", ("source",)).labels(SOURCE)


class _TcpConnection(asyncio.Protocol):
    __slots__ = ("_owner", "_framer", "_transport", "_ip", "last_data")

    def __init__(self, owner: "SyslogListeners") -> None:
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

    def data_received(self, data: bytes) -> None:
        owner = self._owner
        counters = owner.tcp_counters
        counters.bytes.inc(len(data))
        self.last_data = time.monotonic()
        framer = self._framer
        before = framer.truncated
        lines = framer.feed(data)
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
        self._transport = None
        if not owner.connections:
            owner.all_closed.set()

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "SyslogListeners") -> None:
        self._owner = owner
        self._pending: list[tuple[bytes, str]] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self._pending.append((data, addr[0]))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for a listener are noise

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        owner = self._owner
        counters = owner.udp_counters
        allow = owner.allow
        parse = owner.parser.parse
        limit = owner.config.max_line_bytes
        now = time.time()
        events = []
        nbytes = 0
        refused = 0
        truncated = 0
        first_ip = pending[0][1]
        if allow.allows_all and all(ip == first_ip for _, ip in pending):
            # The common burst: one sender, no allow list. Parsed as one list (the
            # receive-time context once, no call per datagram): ~1 us less per datagram.
            lines = []
            for data, _ip in pending:
                nbytes += len(data)
                line = truncate_datagram(data, limit)
                if type(line) is Truncated:
                    truncated += 1
                if line:
                    lines.append(line)
            events = owner.parser.parse_lines(lines, now, first_ip)
            pending = []
        for data, ip in pending:
            nbytes += len(data)
            if not allow.allows_all and not allow.allowed(ip):
                refused += 1
                continue
            line = truncate_datagram(data, limit)
            if len(line) < len(data.rstrip(b"\r\n\x00")):
                truncated += 1
            if line:
                events.append(parse(line, now, ip))
        counters.bytes.inc(nbytes)
        counters.events.inc(len(events))
        if refused:
            counters.not_allowed.inc(refused)
        if truncated:
            counters.truncated.inc(truncated)
        owner.pipeline.ingest(events, False)


class SyslogListeners:
    """The ``[sources.syslog]`` listeners. ``start`` binds; ``stop`` closes them."""

    def __init__(self, config: SyslogSource, pipeline: Pipeline, flow: FlowControl, metrics: Metrics) -> None:
        self.config = config
        self.pipeline = pipeline
        self.flow = flow
        self.parser = SyslogParser(config.timezone, config.parse_body == "auto")
        self.allow = AllowList(config.allow)
        self.tcp_counters = _Counters(metrics, "tls" if config.tls else "tcp")
        self.udp_counters = _Counters(metrics, "udp")
        self.connections: set[_TcpConnection] = set()
        self.all_closed = asyncio.Event()
        self.addresses: dict[str, tuple[str, int]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._udp_sock = None
        self._udp_drops_before = 0  # kernel drops counted on UDP sockets a reload replaced
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._metrics = metrics
        self._idle_timer: asyncio.TimerHandle | None = None
        metrics.gauge("logpipe_tcp_connections", "Open syslog TCP/TLS connections", ("source",)).set_function(
            lambda: len(self.connections), SOURCE
        )
        # Read through self: a reload may replace the parser (it carries the counts over).
        metrics.counter("logpipe_parse_errors_total", "Lines stored raw because they fit neither RFC", ("source",)).set_function(
            lambda: self.parser.parse_errors, SOURCE
        )
        # The framer counts cuts at max_line_bytes; the parser counts cuts of _msg below
        # VictoriaLogs' line limit. Both are truncations of this source.
        metrics.counter("logpipe_truncated_events_total", "Messages cut at max_line_bytes", ("source",)).set_function(
            lambda: self.parser.truncated, SOURCE
        )
        self.log = structlog.get_logger().bind(component="source.syslog")
        # Set by a worker of daemon.workers > 1 (logpipe/workers.py), which shares the ports.
        self.reuse_port = False

    async def start(self) -> None:
        if self.config.udp:
            await self._start_udp(udp_socket(self.config.udp, self.config.udp_receive_buffer_bytes, self.reuse_port))
        if self.config.tcp:
            await self._start_tcp(tcp_socket(self.config.tcp, self.reuse_port))

    async def _start_udp(self, sock) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        self._udp_transport, self._udp_protocol = transport, protocol  # type: ignore[assignment]
        self.addresses["udp"] = sock.getsockname()[:2]
        self._metrics.counter(
            "logpipe_udp_kernel_drops_total", "Datagrams the kernel dropped before logpipe read them", ("source",)
        ).set_function(lambda: self._udp_drops_before + udp_kernel_drops(sock), SOURCE)
        self._udp_sock = sock
        self.log.info("listening", protocol="udp", address=_show(self.addresses["udp"]))

    async def _start_tcp(self, sock) -> None:
        loop = asyncio.get_running_loop()
        tls = self.config.tls
        if tls is None:
            self._server = await loop.create_server(lambda: _TcpConnection(self), sock=sock)
        else:
            self._server = await loop.create_server(
                lambda: _TcpConnection(self),
                sock=sock,
                ssl=tls_context(tls),
                ssl_handshake_timeout=tls.handshake_timeout_s,
            )
        self.addresses["tcp"] = sock.getsockname()[:2]
        self.log.info("listening", protocol="tls" if tls else "tcp", address=_show(self.addresses["tcp"]),
                      client_certificates=bool(tls and tls.client_ca))
        if self.config.idle_timeout_s and self._idle_timer is None:
            self._schedule_idle_sweep()

    def _schedule_idle_sweep(self) -> None:
        # One sweep for all connections, a few times per timeout: no timer per connection.
        interval = max(0.1, min(self.config.idle_timeout_s / 4, 5.0)) if self.config.idle_timeout_s else 5.0
        self._idle_timer = asyncio.get_running_loop().call_later(interval, self._close_idle)

    def _close_idle(self) -> None:
        self._schedule_idle_sweep()
        timeout = self.config.idle_timeout_s  # read each sweep: a reload may change it
        if not timeout or self.flow.paused:
            return  # off, or silent because we paused them rather than idle
        cutoff = time.monotonic() - timeout
        idle = [c for c in self.connections if c.last_data < cutoff and not c.closing]
        for conn in idle:
            conn.close()
        if idle:
            self.tcp_counters.idle_closed.inc(len(idle))
            self.log.info("idle_connections_closed", connections=len(idle), idle_timeout_s=timeout)

    def bind_changed(self, config: SyslogSource) -> dict:
        """Reload, step 1 (may raise OSError/ValueError, then nothing changed): check the new
        settings and bind the sockets of changed addresses, while the old ones still listen."""
        SyslogParser(config.timezone)  # an unknown timezone raises ValueError here
        AllowList(config.allow)
        bound = {}
        try:
            if config.udp and (config.udp != self.config.udp or self._udp_transport is None):
                bound["udp"] = _bind(udp_socket, "udp", config.udp, config.udp_receive_buffer_bytes, self.reuse_port)
            if config.tcp and (config.tcp != self.config.tcp or self._server is None):
                bound["tcp"] = _bind(tcp_socket, "tcp", config.tcp, self.reuse_port)
        except ValueError:
            for sock in bound.values():
                sock.close()
            raise
        return bound

    async def reconfigure(self, config: SyslogSource, bound: dict) -> None:
        """Reload, step 2: start the new sockets from ``bind_changed``, then close the
        replaced ones. Unchanged listeners and every open TCP connection stay as they are
        (connections keep their framer; new settings apply to the next chunk they read)."""
        old = self.config
        if config.timezone != old.timezone or config.parse_body != old.parse_body:
            parser = SyslogParser(config.timezone, config.parse_body == "auto")
            parser.parse_errors, parser.truncated = self.parser.parse_errors, self.parser.truncated
            self.parser = parser
        self.allow = AllowList(config.allow)
        self.config = config
        old_udp, old_udp_protocol, old_server = self._udp_transport, self._udp_protocol, self._server
        old_addresses = {k: _show(v) for k, v in self.addresses.items()}
        if "udp" in bound or (not config.udp and old_udp is not None):
            if old_udp is not None:
                self._udp_drops_before += udp_kernel_drops(self._udp_sock)
            self._udp_transport = self._udp_protocol = None
            self.addresses.pop("udp", None)
            if "udp" in bound:
                await self._start_udp(bound["udp"])
            if old_udp is not None:
                old_udp.close()
                if old_udp_protocol is not None:
                    old_udp_protocol.flush()
                self.log.info("stopped_listening", protocol="udp", address=old_addresses.get("udp"))
        if "tcp" in bound or (not config.tcp and old_server is not None):
            self._server = None
            self.addresses.pop("tcp", None)
            if "tcp" in bound:
                await self._start_tcp(bound["tcp"])
            if old_server is not None:
                old_server.close()  # stops accepting; its open connections keep running
                self.log.info("stopped_listening", protocol="tcp", address=old_addresses.get("tcp"))

    async def stop(self, quiet_s: float = 0.2, grace_s: float = 2.0) -> None:
        """Stop accepting; read what connections already sent (until each has been quiet
        for ``quiet_s``, at most ``grace_s``), then close them. Returns once every
        connection's unterminated tail has been flushed into the pipeline, so nothing read
        is still outside the buffers when they close."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._udp_transport is not None:
            self._udp_transport.close()
            if self._udp_protocol is not None:
                self._udp_protocol.flush()
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
            for conn in list(self.connections):
                conn.close()
            if self.connections:
                try:
                    await asyncio.wait_for(self.all_closed.wait(), 5)
                except TimeoutError:
                    self.log.warning("connections_not_closed", stage="receiving", count=len(self.connections))


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


def _bind(make, protocol: str, address: str, *args):
    try:
        return make(address, *args)
    except OSError as e:
        raise ValueError(f"sources.syslog.{protocol}: cannot bind {address}: {e.strerror or e}") from None


def _show(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
