"""``type = "http"``: the receiving end of the typed hop between daemons (an aggregator).

A sender (another logpipe's ``type = "logpipe"`` sink, or anything that speaks the same
POST) sends NDJSON events in their stored form; they enter the pipeline as they are, with
the types, labels, ``level`` and ``_time`` the sender stored: nothing is parsed again.

One request, in order (every request ends in one ``logpipe_http_requests_total{source,
status}`` increment):

1. the peer's address against ``allow`` (403), the path (404), the method (405), the
   bearer token (401, constant-time compare), the Content-Encoding (415: ``gzip`` or none);
2. a full sink buffer answers 503 with ``Retry-After`` before the body is read;
3. the body is read up to ``max_body_bytes`` and gzip is undone within the same bound
   (413 either way, a declared Content-Length above it without reading);
4. every line must be a JSON object, or 400 names the first line that is not, and nothing
   of the body is ingested;
5. the buffers are asked again (reading awaited): 503 if one filled meanwhile;
6. ``pipeline.ingest(events, holdable=True, may_hold=False)``, then 200
   ``{"accepted": N}``. When ingest returns every event is in its sinks' buffers (a disk
   buffer has written it to the kernel, so a SIGKILL of this process loses nothing that
   was answered 200); a sender may forget a batch once it has the 200.

A sender that goes away mid-body is counted as status ``499`` (nothing ingested).

``logpipe_source``: an event that has one keeps it (the agent's source name: the hop
changes nothing the agent stored); one without gets this source's name. ``_time``: an
event without one gets the receive time, as a syslog line without a timestamp does.

aiohttp is imported only by this module, so a config without an http source never loads
its server side. Its automatic request decompression is off: gzip is undone here, bounded.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..config import HttpSource, read_secret
from ..metrics import Metrics
from ..parse.events import BadBody, BodyTooLarge, decode_events, gunzip
from ..parse.timestamps import format_time
from ..pipeline import Pipeline
from .base import bind_or_explain, show_address
from .net import AllowList, quiet_bad_http_requests, tcp_socket
from .syslog import listener_tls_context

__all__ = ["HttpListener", "STATUSES"]

STATUSES = ("200", "400", "401", "403", "404", "405", "413", "415", "499", "503")
_ENCODINGS = {"": False, "identity": False, "gzip": True, "x-gzip": True}
# How long a graceful stop lets a request that is being read finish before it is cut off
# (its sender gets no answer and sends the batch again).
_STOP_GRACE_S = 5.0


class _Refused(Exception):
    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.headers = headers


class HttpListener:
    """One ``type = "http"`` source (``sources/base.py``)."""

    # The TLS context belongs to the listening socket: a new one needs a restart.
    RESTART_KEYS = ("tls",)
    # A reload re-reads token_file / token_env even when the config text is unchanged, so
    # rotating the token is: write the file, SIGHUP.
    REREAD_ON_RELOAD = True

    def __init__(self, name: str, config: HttpSource, pipeline: Pipeline, metrics: Metrics, *,
                 reuse_port: bool = False) -> None:
        self.name = name
        self.config = config
        self.pipeline = pipeline
        self.reuse_port = reuse_port
        self.addresses: dict[str, tuple[str, int]] = {}
        self._token = self._read_token(config)
        self._allow = AllowList(config.allow)
        self._prepared: tuple[HttpSource, bytes | None] | None = None  # bind_changed -> reconfigure
        self._listener: asyncio.base_events.Server | None = None
        self._web: web.Server | None = None
        self.log = structlog.get_logger().bind(component=f"source.{name}")
        self._events = metrics.counter(
            "logpipe_received_events_total", "Messages read from sockets", ("source", "protocol")).labels(name, "http")
        self._bytes = metrics.counter(
            "logpipe_received_bytes_total", "Bytes read from sockets", ("source", "protocol")).labels(name, "http")
        requests = metrics.counter("logpipe_http_requests_total", "Requests to an http source, by answer", ("source", "status"))
        self._requests = {status: requests.labels(name, status) for status in STATUSES}

    def _read_token(self, config: HttpSource) -> bytes | None:
        """Raises ConfigError naming the key (a token file that cannot be read, say)."""
        return read_secret(config.token, config.token_file, config.token_env, f"sources.{self.name}.token")

    # --- lifecycle (sources/base.py) ------------------------------------------------

    async def start(self) -> None:
        bound = self.bind_changed(self.config)
        self._apply_prepared(self.config)
        await self._serve(bound["listen"])

    def bind_changed(self, config: HttpSource) -> dict:
        """Reload, step 1: read the new token and bind a changed address while the old
        socket still listens. Raises (nothing changed) on a bad token source or address."""
        token = self._read_token(config)
        AllowList(config.allow)
        self._prepared = (config, token)
        if config.listen != self.config.listen or self._listener is None:
            key = f"sources.{self.name}.listen"
            return {"listen": bind_or_explain(tcp_socket, key, config.listen, self.reuse_port)}
        return {}

    async def reconfigure(self, config: HttpSource, bound: dict) -> None:
        """Reload, step 2: the new token, allow list, path and limits apply to the next
        request; a moved listener serves on its new socket before the old one closes (open
        connections finish on the old one)."""
        self._apply_prepared(config)
        if "listen" in bound:
            old, old_address = self._listener, self.addresses.get("listen")
            await self._serve(bound["listen"])
            if old is not None:
                old.close()
                self.log.info("stopped_listening", protocol="http", address=show_address(old_address) if old_address else None)

    def _apply_prepared(self, config: HttpSource) -> None:
        if self._prepared is not None and self._prepared[0] is config:
            self._token = self._prepared[1]
        self._prepared = None
        self._allow = AllowList(config.allow)
        self.config = config

    async def _serve(self, sock: Any) -> None:
        tls = self.config.tls
        context = listener_tls_context(f"sources.{self.name}.tls", tls, sock) if tls is not None else None
        if self._web is None:
            quiet_bad_http_requests()
            self._web = web.Server(self._handle, auto_decompress=False, access_log=None)
        self._listener = await asyncio.get_running_loop().create_server(
            self._web, sock=sock, ssl=context, ssl_handshake_timeout=tls.handshake_timeout_s if tls else None)
        self.addresses["listen"] = sock.getsockname()[:2]
        self.log.info("listening", protocol="https" if tls else "http", address=show_address(self.addresses["listen"]),
                      path=self.config.path, token=self._token is not None, client_certificates=bool(tls and tls.client_ca))

    async def stop(self) -> None:
        """Stop accepting; requests being read may finish (up to a few seconds), so that
        every request answered 200 is in the buffers before they close."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._web is not None:
            await self._web.shutdown(_STOP_GRACE_S)

    # --- one request ----------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        try:
            accepted = await self._receive(request)
        except _Refused as refused:
            self._requests[str(refused.status)].inc()
            return _json(refused.status, {"error": str(refused)}, refused.headers)
        self._requests["200"].inc()
        return _json(200, {"accepted": accepted})

    async def _receive(self, request: web.BaseRequest) -> int:
        """The events ingested, or _Refused with the answer."""
        config = self.config
        if not self._allow.allows_all and not self._allow.allowed(request.remote or ""):
            raise _Refused(403, "address not allowed")
        if request.path != config.path:
            raise _Refused(404, f"events are POSTed to {config.path}")
        if request.method != "POST":
            raise _Refused(405, "POST only", {"Allow": "POST"})
        if self._token is not None and not _bearer_matches(request.headers.get("Authorization"), self._token):
            raise _Refused(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="logpipe"'})
        gzipped = _ENCODINGS.get(request.headers.get("Content-Encoding", "").strip().lower())
        if gzipped is None:
            raise _Refused(415, "Content-Encoding must be gzip or none")
        self._refuse_if_full()
        limit = config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Refused(413, f"body is larger than max_body_bytes = {limit}")
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            # Every refusal above came before the body was sent (curl waits 1 s for this otherwise).
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(request, limit)
        try:
            if gzipped:
                body = gunzip(body, limit)
            events = decode_events(body)
        except BodyTooLarge as e:
            raise _Refused(413, f"{e} (max_body_bytes = {limit})") from None
        except BadBody as e:
            raise _Refused(400, f"{e}; nothing of this request was stored") from None
        if events:
            self._refuse_if_full()  # reading awaited: a buffer may have filled meanwhile
            self._stamp(events)
            self._events.inc(len(events))
            self.pipeline.ingest(events, True, may_hold=False)
        return len(events)

    async def _read_body(self, request: web.BaseRequest, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                self._bytes.inc(len(chunk))
                if size > limit:
                    raise _Refused(413, f"body is larger than max_body_bytes = {limit}")
                chunks.append(chunk)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            raise _Refused(499, f"the sender went away mid-body: {type(e).__name__}") from None
        except HttpProcessingError as e:  # broken chunked framing, say
            raise _Refused(400, f"body framing: {e.message}") from None
        return b"".join(chunks)

    def _refuse_if_full(self) -> None:
        full = self.pipeline.full_sinks()
        if full:
            raise _Refused(503, f"buffers full: {', '.join(full)}", {"Retry-After": "1"})

    def _stamp(self, events: list[dict]) -> None:
        name = self.name
        now: str | None = None
        for event in events:
            if "logpipe_source" not in event:
                event["logpipe_source"] = name
            if "_time" not in event:
                now = now or format_time(time.time())
                event["_time"] = now


def _bearer_matches(header: str | None, token: bytes) -> bool:
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token)


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)

