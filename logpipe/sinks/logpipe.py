"""``type = "logpipe"``: the sending end of the typed hop, to another logpipe's ``type =
"http"`` source (an agent shipping to an aggregator).

A batch goes out as the records the buffer holds (``Batch.ndjson()``: the stored events,
unchanged), gzip'd by default, with ``Authorization: Bearer TOKEN``. The aggregator answers
200 only once every event is in its buffers, so a 200 confirms the batch.

What its answers mean here (the aggregator's side is sources/http.py):
- 400 (a line is not a JSON object) and 413 (the body is over its ``max_body_bytes``) are
  about these records: not retryable, so the deliverer splits the batch in halves until
  the bad record, or a batch small enough, is found; only a single record that is still
  refused is a dead letter.
- 401 and 403 (token or allow list) are retried: a token rotated on the aggregator before
  the agent must not turn a whole buffer into dead letters. Logged as an error once per
  streak, with the key to fix.
- 503 (its buffers are full), 429, any other status and connection errors: retried with
  backoff. Retrying can store a batch twice (a 200 lost with its connection): the hop is
  at least once, like every sink.
"""

from __future__ import annotations

import ssl

import structlog

from ..batch import Batch
from ..config import LogpipeSink, read_secret
from .base import SendError, Sink
from .http import HttpPoster

__all__ = ["Logpipe"]

_ABOUT_THE_RECORDS = frozenset({400, 413})
_CREDENTIALS = frozenset({401, 403})


class Logpipe(Sink):
    kind = "logpipe"

    def __init__(self, name: str, config: LogpipeSink) -> None:
        super().__init__(name)
        self.url = config.url.rstrip("/") + config.path
        self.headers = {"Content-Type": "application/x-ndjson"}
        token = read_secret(config.token, config.token_file, config.token_env, f"sinks.{name}.token")
        if token is not None:
            self.headers["Authorization"] = "Bearer " + token.decode()
        self._http = HttpPoster(f"logpipe {name} at {self.url}", config.request_timeout_s,
                                1 if config.compression == "gzip" else None, _client_tls(config))
        self._refused_logged = False
        self.log = structlog.get_logger().bind(component=f"sink.{name}")

    async def send(self, batch: Batch) -> None:
        try:
            await self._http.post(self.url, self._http.ndjson_body(batch.ndjson_pieces()), self.headers)
        except SendError as e:
            raise self._classify(e) from None
        self._refused_logged = False

    def _classify(self, error: SendError) -> SendError:
        status = error.status
        if status is None:
            return error
        if status in _CREDENTIALS:
            message = (f"{error} (the aggregator refused this agent: check sinks.{self.name}.token against its "
                       f"source's token, and its allow list; retrying, nothing is dropped)")
            if not self._refused_logged:
                self._refused_logged = True
                self.log.error("aggregator_refused", stage="sending", status=status, url=self.url,
                               hint=f"sinks.{self.name}.token must match the aggregator's token; batches wait meanwhile")
            return SendError(message, retryable=True, status=status, response=error.response)
        return SendError(str(error), retryable=status not in _ABOUT_THE_RECORDS, status=status, response=error.response)

    async def close(self) -> None:
        await self._http.close()

    async def check(self) -> str | None:
        """An empty POST: reachable, and the token accepted, when it answers 200."""
        try:
            async with self._http.session().post(self.url, data=b"", headers=self.headers) as resp:
                if resp.status != 200:
                    return f"{self.url} answered HTTP {resp.status}: {(await resp.text(errors='replace'))[:200]}"
        except Exception as e:  # any failure is the answer to "is it reachable"
            return f"{self.url} unreachable: {type(e).__name__}: {e}"
        return None


def _client_tls(config: LogpipeSink) -> ssl.SSLContext | None:
    if not config.url.startswith("https://") or not (config.tls_ca or config.tls_cert):
        return None
    context = ssl.create_default_context(cafile=config.tls_ca)
    if config.tls_cert:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context
