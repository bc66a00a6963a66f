"""Several endpoints of one destination behind one sink: spread, fail over, probe, rejoin.

A sink sends every request through ``EndpointPool.run(attempt)``, which calls
``attempt(endpoint)`` on one endpoint at a time:

- Requests are spread round-robin over the healthy endpoints.
- A failure that says "this endpoint is in trouble" (connection error, timeout, 408, 425,
  429, 5xx: ``endpoint_fault``) marks the endpoint down, and the same request is tried at
  once on the next healthy endpoint. Attempts are strictly one after another, so a batch is
  never in flight to two endpoints. When every endpoint tried has failed, ``run`` raises a
  retryable error and the deliverer backs off, as it does for a single URL.
- Any other failure (the destination refused the data) is raised at once: another endpoint
  of the same store would refuse it too.
- A down endpoint gets no requests. A background probe (the sink's cheap GET) checks it
  with exponential backoff; the first probe that succeeds brings it back. While *no*
  endpoint is healthy each request tries all of them (the request is the probe), so a
  single endpoint behaves exactly as a plain ``url`` always has.
- A failure after the request went out (a timeout, a connection lost before the answer)
  is ambiguous: the server may have stored the batch, and sending it again (here or after
  the deliverer's backoff) may store it twice. Those events are counted per endpoint in
  ``logpipe_sink_endpoint_possible_duplicate_events_total``. Refused connections and 5xx
  answers are not counted: nothing was stored.

Per-endpoint state and counts are plain attributes until ``bind_metrics`` hands them to
the daemon's registry (``logpipe_sink_endpoint_*{sink,endpoint}``); ``snapshot()`` is what
/api/stats and ``logpipe top`` show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog

from ..metrics import Child, Metrics
from .base import SendError

__all__ = ["Endpoint", "EndpointPool", "endpoint_fault", "FAULT_STATUS"]

T = TypeVar("T")

# Answers meaning "this endpoint cannot take it now", as opposed to "nobody will".
FAULT_STATUS = frozenset({408, 425, 429})


def endpoint_fault(error: SendError) -> bool:
    """True if ``error`` is the endpoint's trouble, so another endpoint should try."""
    if not error.retryable:
        return False
    return error.status is None or error.status >= 500 or error.status in FAULT_STATUS


def _label(url: str) -> str:
    """The URL as shown in metrics and logs: no credentials, no trailing slash."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


class Endpoint:
    __slots__ = ("url", "label", "up", "down_since", "last_error", "next_probe", "requests", "errors",
                 "possible_duplicates")

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.label = _label(url)
        self.up = True
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.next_probe: float | None = None
        self.requests = Child()
        self.errors = Child()
        self.possible_duplicates = Child()


class EndpointPool:
    """The endpoints of one destination (or of one ClickHouse shard)."""

    def __init__(
        self,
        sink: str,
        urls: list[str],
        *,
        probe: Callable[[str], Awaitable[str | None]] | None,
        backoff_initial_s: float,
        backoff_max_s: float,
        shard: int | None = None,
        is_fault: Callable[[SendError], bool] = endpoint_fault,
    ) -> None:
        if not urls:
            raise ValueError(f"sinks.{sink}: an endpoint pool needs at least one URL")
        self.sink = sink
        self.endpoints = [Endpoint(url) for url in urls]
        self.shard = shard
        self._probe = probe
        self._is_fault = is_fault
        self._backoff = (backoff_initial_s, max(backoff_initial_s, backoff_max_s))
        self._next = 0
        self._probes: dict[Endpoint, asyncio.Task] = {}
        self._bound = False
        self._closed = False
        self.log = structlog.get_logger().bind(component=f"sink.{sink}")

    def __len__(self) -> int:
        return len(self.endpoints)

    def order(self) -> list[Endpoint]:
        """The endpoints one request tries, in turn: the healthy ones from the next in the
        rotation, or all of them when none is healthy."""
        candidates = [ep for ep in self.endpoints if ep.up] or self.endpoints
        start = self._next % len(candidates)
        self._next += 1
        return candidates[start:] + candidates[:start]

    async def run(self, attempt: Callable[[Endpoint], Awaitable[T]], events: int = 0) -> T:
        """``attempt`` on one endpoint after another until one succeeds; ``events`` is how
        many events the request carries (for the possible-duplicate count)."""
        order = self.order()
        failed: SendError | None = None
        for endpoint in order:
            endpoint.requests.inc()
            try:
                result = await attempt(endpoint)
            except SendError as e:
                endpoint.errors.inc()
                if e.maybe_stored and events:
                    endpoint.possible_duplicates.inc(events)
                if not self._is_fault(e):
                    if not endpoint.up:
                        self._mark_up(endpoint)  # it answered: reachable, the request is the problem
                    raise
                self._mark_down(endpoint, e)
                failed = e
                continue
            if not endpoint.up:
                self._mark_up(endpoint)
            return result
        assert failed is not None
        if len(order) == 1:
            raise failed
        raise SendError(f"all {len(order)} endpoints failed, last: {failed}", retryable=True, status=failed.status,
                        response=failed.response, maybe_stored=failed.maybe_stored)

    def _mark_down(self, endpoint: Endpoint, error: SendError) -> None:
        endpoint.last_error = str(error)
        if not endpoint.up:
            return
        endpoint.up = False
        endpoint.down_since = time.monotonic()
        if len(self.endpoints) > 1:  # one endpoint: the deliverer's retries are the probe
            self.log.warning("endpoint_down", stage="sending", endpoint=endpoint.label, shard=self.shard, error=str(error))
            if self._probe is not None and not self._closed and endpoint not in self._probes:
                self._probes[endpoint] = asyncio.get_running_loop().create_task(self._probe_until_up(endpoint))

    def _mark_up(self, endpoint: Endpoint) -> None:
        down_for = time.monotonic() - endpoint.down_since if endpoint.down_since is not None else 0.0
        endpoint.up = True
        endpoint.down_since = endpoint.next_probe = None
        endpoint.last_error = None
        if len(self.endpoints) > 1:
            self.log.info("endpoint_up", endpoint=endpoint.label, shard=self.shard, down_for_s=round(down_for, 1))

    async def _probe_until_up(self, endpoint: Endpoint) -> None:
        assert self._probe is not None
        delay, cap = self._backoff
        try:
            while not endpoint.up and not self._closed:
                endpoint.next_probe = time.monotonic() + delay
                await asyncio.sleep(delay)  # the backoff between probes
                if endpoint.up:
                    break  # a request (while none was healthy) brought it back
                problem = await self._probe(endpoint.url)
                if problem is None:
                    self._mark_up(endpoint)
                    break
                endpoint.last_error = problem
                delay = min(delay * 2, cap)
        finally:
            self._probes.pop(endpoint, None)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._probes.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- what operators see -----------------------------------------------------------------

    def bind_metrics(self, metrics: Metrics) -> None:
        """Count into ``metrics`` from now on (keeping what was counted before)."""
        if self._bound:
            return
        self._bound = True
        labels = ("sink", "endpoint")
        families = {
            "requests": metrics.counter("logpipe_sink_endpoint_requests_total", "Requests sent to each endpoint of a sink", labels),
            "errors": metrics.counter("logpipe_sink_endpoint_errors_total", "Failed requests per endpoint of a sink", labels),
            "possible_duplicates": metrics.counter(
                "logpipe_sink_endpoint_possible_duplicate_events_total",
                "Events of requests that timed out or lost their connection after being sent (the endpoint may "
                "have stored them) and were sent again", labels),
        }
        up = metrics.gauge("logpipe_sink_endpoint_up", "1 while an endpoint of a sink takes requests, 0 while it is down", labels)
        for endpoint in self.endpoints:
            for attr, family in families.items():
                child = family.labels(self.sink, endpoint.label)
                child.inc(getattr(endpoint, attr).value)
                setattr(endpoint, attr, child)
            up.set_function(lambda endpoint=endpoint: 1.0 if endpoint.up else 0.0, self.sink, endpoint.label)

    def snapshot(self) -> list[dict]:
        now = time.monotonic()
        out = []
        for endpoint in self.endpoints:
            state: dict = {"endpoint": endpoint.label, "up": endpoint.up, "requests": int(endpoint.requests.value),
                           "errors": int(endpoint.errors.value),
                           "possible_duplicate_events": int(endpoint.possible_duplicates.value)}
            if self.shard is not None:
                state["shard"] = self.shard
            if not endpoint.up:
                state["down_for_s"] = round(now - (endpoint.down_since or now), 1)
                if endpoint.next_probe is not None:
                    state["next_probe_in_s"] = round(max(0.0, endpoint.next_probe - now), 1)
                state["last_error"] = endpoint.last_error
            out.append(state)
        return out
