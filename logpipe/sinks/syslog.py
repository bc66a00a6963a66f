"""Syslog out: each event as one RFC 5424 message, over TCP with octet counting (RFC 6587),
TLS (RFC 5425) or UDP (RFC 5426).

The message:
- HEADER from the event: PRI from ``facility`` and the normalized ``level`` (which a JSON or
  logfmt body may have set over the line's own PRI; ``severity`` when there is no known
  ``level``; the sink's defaults otherwise). A ``severity`` the PRI does not carry is sent
  as a parameter, TIMESTAMP from ``_time``
  (microseconds, UTC), HOSTNAME (``hostname``, else ``source_ip``), APP-NAME, PROCID, MSGID.
  Absent fields are NILVALUE. Header values are cut to RFC 5424's lengths, and characters
  outside printable US-ASCII become ``_``.
- STRUCTURED-DATA: one SD-ELEMENT ``[SD_ID name="value" ...]`` with every other field
  (labels, body fields, ``level``, ``source_ip``, and the structured data the line came in
  with, as ``SDID.PARAM``). Names are cut to 32 characters with ``=``, space, ``]``, ``"``
  and non-ASCII replaced by ``_``; values are text (non-strings as JSON) with ``"``, ``\\``
  and ``]`` escaped.
- MSG: ``_msg`` as UTF-8, without BOM.

What "confirmed" means (the sink contract): syslog has no application-level
acknowledgement, so a completed ``write`` only proves the bytes reached our kernel; a
connection that dies right after can lose them.
- TCP/TLS: ``send`` returns only once the peer's TCP stack has acknowledged every byte of
  the batch (the socket's unsent+unacknowledged queue, ``SIOCOUTQ``, is empty), or raises a
  retryable error and the whole batch is sent again on a new connection. Delivery is
  therefore at least once up to the receiver's kernel: a retry after a connection died
  mid-batch can duplicate the part the peer had already read; a receiver that crashes with
  data still in its socket buffer loses it (only RELP would close that gap).
- TLS 1.3: the client's handshake completes before the server has checked our
  certificate, so a new TLS connection waits ``TLS_VERDICT_S`` for a refusal (alert or
  close) before its first batch; without that wait, a refused certificate would look like
  delivered data.
- UDP: at most once; a datagram is confirmed when handed to the kernel.

One connection is kept open across batches; a closed or broken connection is noticed before
the next write and reopened (the deliverer backs off between failed attempts).
"""

from __future__ import annotations

import asyncio
import fcntl
import re
import ssl
import struct
import sys
import termios
import time

import orjson

from ..batch import Batch
from ..config import SyslogSink as SyslogSinkConfig
from ..config import parse_address
from ..parse.body import scalar_text
from .base import SendError, Sink

__all__ = ["Syslog", "format_message", "MessageFormatter"]

FACILITIES = {
    name: code
    for code, name in enumerate(
        "kern user mail daemon auth syslog lpr news uucp cron authpriv ftp ntp security console solaris-cron".split()
    )
}
FACILITIES.update({f"local{i}": 16 + i for i in range(8)})
SEVERITIES = {name: code for code, name in enumerate("emerg alert crit err warning notice info debug".split())}
LEVEL_SEVERITY = {name: code for code, name in enumerate("emerg alert crit error warn notice info debug".split())}
HEADER_FIELDS = frozenset({"_time", "_msg", "hostname", "app_name", "proc_id", "msg_id", "facility", "severity"})
_HEADER_BUT_SEVERITY = HEADER_FIELDS - {"severity"}

# How long a new TLS connection waits for the server to refuse it (see _await_tls_verdict).
TLS_VERDICT_S = 0.25

_NOT_HEADER_CHARS = re.compile(r"[^!-~]")
_NOT_NAME_CHARS = re.compile(r'[^!-~]|[= \]"]')
_SD_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\", "]": "\\]"})
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\d*(Z|[+-]\d\d:\d\d)$")


def _header(value: object, limit: int) -> str:
    if value is None or value == "":
        return "-"
    text = _NOT_HEADER_CHARS.sub("_", value if isinstance(value, str) else str(value))[:limit]
    return text


def _timestamp(value: object) -> str:
    if not isinstance(value, str):
        return "-"
    m = _TIME.match(value)
    if m is None:
        return "-"
    # RFC 5424 allows at most six fraction digits.
    head = value[:19]
    return head + (m[1] or "") + m[2]


def _param_name(name: str) -> str:
    return _NOT_NAME_CHARS.sub("_", name)[:32] or "_"


def _param_value(value: object) -> str:
    text = scalar_text(value)
    if text is None:
        text = orjson.dumps(value).decode()
    return text.translate(_SD_ESCAPES)


class MessageFormatter:
    """Event dict -> RFC 5424 message bytes (without framing). Built once per sink."""

    def __init__(self, sd_id: str, facility: str, severity: str) -> None:
        self.sd_id = sd_id
        self.default_facility = FACILITIES[facility]
        self.default_severity = SEVERITIES[severity]

    def pri(self, event: dict) -> int:
        # The normalized level first: a JSON body's "level":"error" overrides the PRI it
        # came with, and a SIEM filtering on severity must see the error.
        # str() so that an odd value (a list from a replayed file) cannot raise here.
        facility = FACILITIES.get(str(event.get("facility")), self.default_facility)
        severity = LEVEL_SEVERITY.get(str(event.get("level")))
        if severity is None:
            severity = SEVERITIES.get(str(event.get("severity")), self.default_severity)
        return facility * 8 + severity

    def format(self, event: dict) -> tuple[bytes, bytes]:
        """(HEADER SP STRUCTURED-DATA SP, MSG): kept apart so UDP can cut the MSG alone."""
        hostname = event.get("hostname") or event.get("source_ip")
        pri = self.pri(event)
        # ``severity`` is in the header only when the PRI says it; otherwise (the level won)
        # it travels as a parameter, so the line's own PRI is not lost.
        header = HEADER_FIELDS if SEVERITIES.get(str(event.get("severity"))) == pri & 7 else _HEADER_BUT_SEVERITY
        params = [
            f'{_param_name(k)}="{_param_value(v)}"' for k, v in event.items() if k not in header and v is not None
        ]
        sd = f"[{self.sd_id} {' '.join(params)}]" if params else "-"
        head = (
            f"<{pri}>1 {_timestamp(event.get('_time'))} {_header(hostname, 255)} "
            f"{_header(event.get('app_name'), 48)} {_header(event.get('proc_id'), 128)} "
            f"{_header(event.get('msg_id'), 32)} {sd} "
        )
        msg = event.get("_msg")
        if msg is None:
            msg = ""
        elif not isinstance(msg, str):
            msg = orjson.dumps(msg).decode()
        return head.encode("utf-8", "replace"), msg.encode("utf-8", "replace")


def format_message(formatter: MessageFormatter, record: bytes) -> bytes:
    head, msg = formatter.format(orjson.loads(record))
    return head + msg


def _unacknowledged_bytes(sock) -> int | None:
    """Bytes the peer's TCP has not acknowledged yet (Linux SIOCOUTQ); None if unknown."""
    if sys.platform != "linux" or sock is None:
        return None
    fd = sock.fileno()
    if fd < 0:
        raise ConnectionResetError("connection closed before the peer acknowledged the batch")
    try:
        raw = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return struct.unpack("i", raw)[0]


class _Discard(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable on a later send: UDP is at most once anyway


class Syslog(Sink):
    kind = "syslog"

    def __init__(self, name: str, config: SyslogSinkConfig) -> None:
        super().__init__(name)
        self.host, self.port = parse_address(config.address)
        self.protocol = config.protocol
        self.formatter = MessageFormatter(config.sd_id, config.facility, config.severity)
        self.timeout_s = float(config.request_timeout_s)
        self.udp_max_bytes = config.udp_max_bytes
        self.ssl: ssl.SSLContext | None = None
        self.server_hostname = config.tls_server_name or self.host
        if config.protocol == "tls":
            context = ssl.create_default_context(cafile=config.tls_ca)
            if config.tls_cert:
                context.load_cert_chain(config.tls_cert, config.tls_key)
            self.ssl = context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self.truncated = 0  # UDP messages cut to udp_max_bytes
        self.connects = 0

    # --- framing ------------------------------------------------------------------------

    def frames(self, records: list[bytes]) -> bytes:
        """A batch as one octet-counted byte string: ``MSG-LEN SP MSG`` per record."""
        out = bytearray()
        fmt = self.formatter.format
        loads = orjson.loads
        for record in records:
            head, msg = fmt(loads(record))
            out += b"%d " % (len(head) + len(msg))
            out += head
            out += msg
        return bytes(out)

    def datagrams(self, records: list[bytes]) -> list[bytes]:
        out = []
        limit = self.udp_max_bytes
        for record in records:
            head, msg = self.formatter.format(orjson.loads(record))
            if len(head) + len(msg) > limit:
                self.truncated += 1
                room = max(limit - len(head), 0)
                msg = msg[:room].decode("utf-8", "ignore").encode()  # cut on a character boundary
            out.append(head + msg)
        return out

    # --- connection -----------------------------------------------------------------------

    def _connection_usable(self) -> bool:
        writer, reader = self._writer, self._reader
        if writer is None or reader is None or writer.is_closing():
            return False
        # A syslog server never talks back: EOF or data both mean the peer is gone or confused.
        return not reader.at_eof() and not reader._buffer  # type: ignore[attr-defined]

    async def _connect(self) -> None:
        await self._drop_connection()
        what = f"{self.protocol}://{self.host}:{self.port}"
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl, server_hostname=self.server_hostname if self.ssl else None
                ),
                self.timeout_s,
            )
        except ssl.SSLCertVerificationError as e:
            raise SendError(f"sending batch to syslog {what}: TLS verification failed: {e.verify_message}", retryable=True) from None
        except (TimeoutError, OSError, ssl.SSLError) as e:
            raise SendError(f"sending batch to syslog {what}: connecting: {type(e).__name__}: {e}", retryable=True) from None
        if self.ssl is not None:
            await self._await_tls_verdict(what)
        self.connects += 1

    async def _await_tls_verdict(self, what: str) -> None:
        """TLS 1.3 finishes the client's handshake before the server has checked the client
        certificate: a refusal arrives as an alert just after, and bytes written meanwhile
        are acknowledged by the server's TCP and then discarded. So give the server
        ``TLS_VERDICT_S`` to refuse before the first batch goes out on a new connection."""
        reader = self._reader
        assert reader is not None
        try:
            data = await asyncio.wait_for(reader.read(1), TLS_VERDICT_S)
        except TimeoutError:
            return  # no alert, no close: accepted
        except (OSError, ssl.SSLError) as e:
            await self._drop_connection()
            raise SendError(f"sending batch to syslog {what}: TLS refused after handshake: {type(e).__name__}: {e}",
                            retryable=True) from None
        await self._drop_connection()
        reason = "closed the connection (client certificate refused?)" if not data else "sent unexpected data"
        raise SendError(f"sending batch to syslog {what}: server {reason} right after the TLS handshake", retryable=True)

    async def _drop_connection(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (TimeoutError, OSError, ssl.SSLError):
                pass

    async def _wait_acknowledged(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        deadline = time.monotonic() + self.timeout_s
        pause = 0.0005
        while True:
            pending = _unacknowledged_bytes(sock)
            if pending is None or pending == 0:
                return
            if writer.is_closing() or (self._reader is not None and self._reader.at_eof()):
                raise ConnectionResetError("connection closed before the peer acknowledged the batch")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pending} bytes unacknowledged after {self.timeout_s:.0f}s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    # --- the contract ---------------------------------------------------------------------

    async def send(self, batch: Batch) -> None:
        if self.protocol == "udp":
            await self._send_udp(batch)
            return
        payload = self.frames(batch.records)
        if not self._connection_usable():
            await self._connect()
        writer = self._writer
        assert writer is not None
        try:
            writer.write(payload)
            await asyncio.wait_for(writer.drain(), self.timeout_s)
            await self._wait_acknowledged(writer)
        except (TimeoutError, OSError, ssl.SSLError) as e:
            await self._drop_connection()
            raise SendError(
                f"sending batch to syslog {self.protocol}://{self.host}:{self.port}: {type(e).__name__}: {e}", retryable=True
            ) from None

    async def _send_udp(self, batch: Batch) -> None:
        if self._udp is None or self._udp.is_closing():
            try:
                self._udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    _Discard, remote_addr=(self.host, self.port)
                )
            except OSError as e:
                raise SendError(f"sending batch to syslog udp://{self.host}:{self.port}: {e}", retryable=True) from None
        for datagram in self.datagrams(batch.records):
            self._udp.sendto(datagram)

    async def close(self) -> None:
        await self._drop_connection()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def probe(self) -> bool | None:
        """TCP/TLS: a connection (kept for the next send); UDP cannot tell."""
        if self.protocol == "udp":
            return None
        if self._connection_usable():
            return True
        try:
            await self._connect()
        except SendError:
            return False
        except asyncio.CancelledError:  # cut off (probe timeout): a TLS verdict may not have come
            await self._drop_connection()
            raise
        return True

    async def check(self) -> str | None:
        if self.protocol == "udp":
            return None
        try:
            await self._connect()
        except SendError as e:
            return str(e)
        finally:
            await self._drop_connection()
        return None
