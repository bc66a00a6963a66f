"""``type = "logpipe"``: the sending end of the typed hop, to another logpipe's ``type =
"http"`` source (an agent shipping to its aggregators).

A batch goes out as the records the buffer holds (``Batch.ndjson()``: the stored events,
unchanged), gzip'd by default, with ``Authorization: Bearer TOKEN``. The aggregator answers
200 only once every event is in its buffers, so a 200 confirms the batch.

``url`` or ``endpoints``: an HTTP sink (http.py), so several aggregators share the batches
and take over from one another (endpoints.py); one batch is never in flight to two of them.

What its answers mean here (the aggregator's side is sources/http.py):
- 400 (a line is not a JSON object) and 413 (the body is over its ``max_body_bytes``) are
  about these records: not retryable and not tried on another aggregator, so the deliverer
  splits the batch in halves until the bad record, or a batch small enough, is found; only
  a single record that is still refused is a dead letter.
- 401 and 403 (token or allow list) are retried: a token rotated on the aggregator before
  the agent must not turn a whole buffer into dead letters. Logged as an error once per
  streak, with the key to fix.
- 503 (its buffers are full), 429, any other status and connection errors: retried with
  backoff. Retrying can store a batch twice (a 200 lost with its connection): the hop is
  at least once, like every sink.
- With several endpoints every retryable answer, 401/403 included, is that aggregator's
  trouble (its buffers, its token, its path): the batch moves on to the next one at once
  and the refusing aggregator is probed until it takes an empty POST again.
"""

from __future__ import annotations

import ssl

import structlog

from ..batch import Batch
from ..config import LogpipeSink, read_secret
from .base import SendError
from .endpoints import Endpoint
from .http import Body, HttpSink

__all__ = ["Logpipe"]

_ABOUT_THE_RECORDS = frozenset({400, 413})
_CREDENTIALS = frozenset({401, 403})


class Logpipe(HttpSink):
    kind = "logpipe"

    def __init__(self, name: str, config: LogpipeSink) -> None:
        super().__init__(name, config, gzip=config.compression == "gzip", ssl_context=_client_tls(config))
        self.path = config.path
        self.headers = {"Content-Type": "application/x-ndjson"}
        token = read_secret(config.token, config.token_file, config.token_env, f"sinks.{name}.token")
        if token is not None:
            self.headers["Authorization"] = "Bearer " + token.decode()
        self._refused_logged = False
        self.log = structlog.get_logger().bind(component=f"sink.{name}")

    async def send(self, batch: Batch) -> None:
        body = self._http.ndjson_body(batch.ndjson_pieces())
        await self.pools[0].run(lambda endpoint: self._post(endpoint, body), len(batch))
        self._refused_logged = False

    async def _post(self, endpoint: Endpoint, body: Body) -> None:
        try:
            await self._http.post(endpoint.url + self.path, body, self.headers)
        except SendError as e:
            raise self._classify(e, endpoint.label) from None

    def _classify(self, error: SendError, endpoint: str) -> SendError:
        status = error.status
        if status is None:
            return error
        if status in _CREDENTIALS:
            message = (f"{error} (the aggregator {endpoint} refused this agent: check sinks.{self.name}.token "
                       f"against its source's token, and its allow list; retrying, nothing is dropped)")
            if not self._refused_logged:
                self._refused_logged = True
                self.log.error("aggregator_refused", stage="sending", status=status, url=endpoint,
                               hint=f"sinks.{self.name}.token must match the aggregator's token; "
                                    "batches wait meanwhile")
            return SendError(message, retryable=True, status=status, response=error.response)
        return SendError(str(error), retryable=status not in _ABOUT_THE_RECORDS, status=status, response=error.response)

    def is_endpoint_fault(self, error: SendError) -> bool:
        # Only 400 and 413 are about the records (any aggregator would refuse them).
        return error.retryable

    async def probe_endpoint(self, base_url: str) -> str | None:
        """An empty POST: reachable, the token accepted and its buffers not full, when it
        answers 200 (``logpipe validate`` and the probe of a down endpoint)."""
        return await self._http.probe("POST", base_url + self.path, self.headers, lambda status: status == 200)


def _client_tls(config: LogpipeSink) -> ssl.SSLContext | None:
    """The client context for https aggregators with a CA or a client certificate of their
    own (config checks that every endpoint is https then); None: the default verification."""
    if not (config.tls_ca or config.tls_cert):
        return None
    context = ssl.create_default_context(cafile=config.tls_ca)
    if config.tls_cert:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context
