"""The sink contract.

A sink knows one destination: how to send a batch there and which of its failures are
worth retrying. It does not retry, back off, buffer or dead-letter: ``deliver.py`` does
that for every sink alike.

- ``send(batch)`` returns when the destination has confirmed every record, or raises
  :class:`SendError`. ``retryable=False`` means "these records will never be accepted"
  (the deliverer splits the batch to find the bad records and dead-letters them);
  ``retryable=True`` means "try again later" (connection refused, timeouts, 429, 5xx).
- A destination that answers per record (Elasticsearch ``_bulk``) raises
  :class:`PartialSendError` when only some records failed: every record of the batch not
  named in it counts as confirmed; ``rejected`` records go to the dead letters with their
  own error, ``retryable_records`` are sent again (with backoff) as a smaller batch.
- ``close()`` releases connections; it is called once, after the last ``send``.
- ``reopen()`` (SIGHUP, reload) lets go of files or connections held by name and opens
  them again, so a rotated file is let go; it never raises (a failure shows up as the
  next ``send``'s error). Most sinks have nothing to reopen.
- A sink also exposes ``check()``: an optional, cheap reachability probe for
  ``logpipe validate`` (returns an error text or None).
- A sink with several endpoints (``endpoints``, ClickHouse ``shards``) lists their pools in
  ``endpoint_pools()``, for metrics, /api/stats and ``logpipe top``.
- ``probe()`` asks cheaply whether the destination answers at all (one bounded request, a
  connect, a look at a connection's state): True if it does, False if not, None when the sink
  has no cheap way to tell (the default). While a sink is failing the deliverer probes it
  about once a second and retries at once when a probe that failed starts succeeding, instead
  of waiting out its backoff (deliver.py). A probe is not a send: a sink that answers probes
  but fails sends is still retried only at the backoff's pace.
- ``backlog_limits`` lets a sink take a bigger batch while the buffer holds a backlog (the
  ClickHouse part guard: one insert per table per interval, so it needs more per insert).
"""

from __future__ import annotations

from ..batch import Batch

__all__ = ["SendError", "PartialSendError", "Sink", "Batch"]


class SendError(Exception):
    """Sending failed. ``response`` is what the destination answered, if anything.
    ``maybe_stored``: the request went out and no answer came back (a timeout, a connection
    lost mid-request): the destination may have stored the batch anyway."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, response: str | None = None,
                 maybe_stored: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.response = response
        self.maybe_stored = maybe_stored


class PartialSendError(SendError):
    """Some records of a batch failed, each on its own; the others are confirmed.

    ``rejected``: (record, error text) pairs the destination will never accept.
    ``retryable_records``: records to send again later (per-record 429/5xx).
    """

    def __init__(
        self, message: str, *, rejected: list[tuple[bytes, str]], retryable_records: list[bytes], response: str | None = None
    ) -> None:
        super().__init__(message, retryable=bool(retryable_records), response=response)
        self.rejected = rejected
        self.retryable_records = retryable_records


class Sink:
    kind = "sink"

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        """Open sessions or files; called inside the running event loop."""

    async def send(self, batch: Batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def reopen(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def check(self) -> str | None:
        return None

    async def probe(self) -> bool | None:
        """Does the destination answer? None: no cheap way to tell (keep to the backoff)."""
        return None

    def endpoint_pools(self) -> list:
        return []

    def backlog_limits(self, max_events: int, max_bytes: int) -> tuple[int, int]:
        """Batch limits while the buffer holds more than two batches: the configured ones."""
        return max_events, max_bytes
