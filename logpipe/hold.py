"""The late-arrival hold: events whose join found nothing wait up to ``enrich.hold_ms`` for
an announcement that matches them, then go on (tagged if one came, untagged if not).

Chunk-wise, never a task or timer per event:
- the pipeline hands over the misses of a chunk (``add``); each waits in one FIFO with its
  deadline (all deadlines are ``now + hold_ms``, so FIFO order is deadline order) and is
  indexed by every ``(announcement key, value)`` it could be joined by;
- a stored announcement (``MetadataTable.on_store``) looks its identifiers up in that
  index and marks what waits for it ready; one ``call_soon`` per loop turn releases
  everything ready as one chunk;
- one ``call_at`` timer, for the oldest deadline, releases every expired event as one chunk.

Invariants:
- Bounded: at most ``max_events`` events and about ``max_bytes`` bytes wait; an event that
  does not fit goes on at once, untagged, counted (``logpipe_enrich_hold_full_total``).
- Every event added leaves exactly once: by announcement, by deadline or by ``flush``
  (shutdown), through ``release`` (the pipeline's enrich-again-and-forward path).
- Only events with a value for at least one ``match_on`` field are held: nothing could
  ever be announced for the others.
- A source past its first seconds is not held again: when held events expire untagged,
  their identifiers are remembered as unannounced for ``UNANNOUNCED_S``; a later event
  whose identifiers are *all* remembered goes on at once (a new container behind the same
  IP still has a new hostname, so it is still held). An announcement for an identifier
  forgets it at once. Without this, every line of a host that never announces (network
  gear, the Docker host itself) would wait ``hold_ms`` and cost hold bookkeeping forever.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import msgspec

from .enrich import SHORT_ID, Entry
from .metrics import Metrics
from .parse.body import BodyEvent

__all__ = ["Hold"]

# A held event waits as its JSON (msgspec, the encoding the sinks get: an exact round trip
# for parsed events), ~2.5x smaller than the dict (~740 bytes of dict and fields beyond the
# message text): the hold is where a burst from new containers sits for seconds. Decoding
# costs ~1.5 us per held event at release, on a small share of the lines. The bytes counted,
# measured with tracemalloc for four match_on pairs (tests/daemon/test_hardening.py checks
# that they cover it): per event its JSON plus its item and index slots (~250), per distinct
# identifier its index entry (~240). Identifiers are shared: before, each event kept its
# own (key, value) tuples and sets held the index, ~1,200 bytes per line of 350 instead of 600.
_ITEM_OVERHEAD = 270
_IDENTIFIER_OVERHEAD = 260
_encoder = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(dict).decode
# How long identifiers whose held lines expired untagged skip the hold. Measured on 200,000
# lines from unannounced hosts (benchmarks/bench_hold.py): 8.3 us/line and every line 2 s
# late while held, 3.35 us/line and no added latency once they are remembered (3.0 without
# the hold).
UNANNOUNCED_S = 60.0
_UNANNOUNCED_LIMIT = 65536


class _Held:
    __slots__ = ("event", "body_keys", "holdable", "deadline", "waits", "done")

    def __init__(self, event: bytes, body_keys: frozenset[str] | None, holdable: bool, deadline: float,
                 waits: tuple[_Waiters, ...]) -> None:
        self.event = event
        self.body_keys = body_keys  # a BodyEvent's provenance: the join needs it after the release
        self.holdable = holdable
        self.deadline = deadline
        self.waits = waits  # the index entries it is in: an item holds no identifier of its own
        self.done = False


class _Waiters(list[_Held]):
    """The held items one identifier could release, carrying that identifier (items share
    it instead of each keeping its own (key, value) tuples). A list, not a set: an item
    that leaves is only marked done and counted off ``live``; the list is dropped when
    nothing in it is live and compacted when most of it is done (amortized O(1) per item).
    ~10 bytes per entry where a set took ~70."""

    __slots__ = ("identifier", "live")

    def __init__(self, identifier: tuple[str, str]) -> None:
        super().__init__()
        self.identifier = identifier
        self.live = 0


class Hold:
    def __init__(
        self,
        hold_ms: int,
        max_events: int,
        max_bytes: int,
        match_on: list[tuple[str, str]],
        release: Callable[[list[dict], bool], None],
        metrics: Metrics,
    ) -> None:
        self.hold_s = hold_ms / 1000
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._match_on = match_on
        self._release = release
        self._queue: deque[_Held] = deque()
        self._index: dict[tuple[str, str], _Waiters] = {}
        self._scratch = bytearray()
        self._ready: list[_Held] = []
        self.events = 0
        self.bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._ready_scheduled = False
        self._unannounced: dict[tuple[str, str], float] = {}  # identifier -> remembered until
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False  # after flush (shutdown) nothing more is held
        self._full = metrics.counter(
            "logpipe_enrich_hold_full_total", "Unmatched events sent on untagged because the hold was full"
        ).labels()
        metrics.gauge("logpipe_enrich_hold_events", "Events waiting in the enrichment hold").set_function(lambda: self.events)
        metrics.gauge("logpipe_enrich_hold_bytes", "Approximate bytes waiting in the enrichment hold").set_function(
            lambda: self.bytes
        )

    def reconfigure(self, enrich) -> None:
        """Reload: new ``match_on`` and bounds apply to lines held from now on. Turning
        the hold on or off (``hold_ms`` to or from 0) needs a restart; 0 here holds
        nothing new."""
        self.hold_s = enrich.hold_ms / 1000
        self.max_events = enrich.hold_max_events
        self.max_bytes = enrich.hold_max_bytes
        self._match_on = enrich.pairs()

    def add(self, events: list[dict], holdable: bool) -> list[dict]:
        """Hold what can be held; return the events that go on now (no identifier, or the
        hold is full)."""
        if self.closed or self.hold_s <= 0:
            return events
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        deadline = now + self.hold_s
        passing = []
        full = 0
        index = self._index
        unannounced = self._unannounced
        match_on = self._match_on
        scratch = self._scratch
        for event in events:
            keys = []
            # Checked while the keys are built: every line of a host that never announces
            # comes here (a generator over the keys cost ~0.3 us more per line).
            remembered = bool(unannounced)
            for line_field, key in match_on:
                value = event.get(line_field)
                if value is not None and value != "":
                    identifier = (key, value)
                    keys.append(identifier)
                    if remembered and unannounced.get(identifier, 0.0) <= now:
                        remembered = False
            if not keys or remembered:  # remembered: a source past its first seconds, no one is coming
                passing.append(event)
                continue
            # Into a reused buffer, then copied at its size: encode() returns its growth
            # buffer, ~100 bytes over the JSON, and a held line keeps it for seconds.
            _encoder.encode_into(event, scratch)
            data = bytes(scratch)
            nbytes = len(data) + _ITEM_OVERHEAD
            if self.events >= self.max_events or self.bytes + nbytes > self.max_bytes:
                full += 1
                passing.append(event)
                continue
            waits = []
            for k in keys:
                waiters = index.get(k)
                if waiters is None:
                    waiters = index[k] = _Waiters(k)
                    self.bytes += _IDENTIFIER_OVERHEAD
                waits.append(waiters)
            item = _Held(data, getattr(event, "body_keys", None), holdable, deadline, tuple(waits))
            for waiters in waits:
                waiters.append(item)
                waiters.live += 1
            self._queue.append(item)
            self.events += 1
            self.bytes += nbytes
        if full:
            self._full.inc(full)
        if self._queue and self._timer is None:
            self._timer = self._loop.call_at(self._queue[0].deadline, self._expire)
        return passing

    def announced(self, entry: Entry) -> None:
        """``MetadataTable.on_store``: what waits for this entry is released this loop turn."""
        values = [("ip", entry.ip), ("hostname", entry.hostname), ("container_id", entry.container_id)]
        if entry.container_id and len(entry.container_id) > SHORT_ID:
            values.append(("container_id", entry.container_id[:SHORT_ID]))
        if self._unannounced:
            for k in values:
                self._unannounced.pop(k, None)
        if not self.events:
            return
        ready = self._ready
        for k in values:
            if k[1] is None:
                continue
            items = self._index.get(k)
            if items:
                for item in list(items):
                    if not item.done:
                        self._take(item)
                        ready.append(item)
        if ready and not self._ready_scheduled and self._loop is not None:
            self._ready_scheduled = True
            self._loop.call_soon(self._release_ready)

    def flush(self) -> None:
        """Release everything now (shutdown: before the buffers close). From then on
        nothing is held: tails of connections that close later go straight on."""
        self.closed = True
        items = [item for item in self._queue if not item.done]
        for item in items:
            self._take(item)
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._emit(self._ready + items)
        self._ready = []

    def _take(self, item: _Held) -> None:
        item.done = True
        self.events -= 1
        self.bytes -= len(item.event) + _ITEM_OVERHEAD
        index = self._index
        for waiters in item.waits:
            waiters.live -= 1
            if not waiters.live:
                if index.get(waiters.identifier) is waiters:
                    del index[waiters.identifier]
                    self.bytes -= _IDENTIFIER_OVERHEAD
            elif len(waiters) > 2 * waiters.live + 16:
                waiters[:] = [i for i in waiters if not i.done]

    def _release_ready(self) -> None:
        self._ready_scheduled = False
        ready, self._ready = self._ready, []
        self._emit(ready)

    def _expire(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        queue = self._queue
        expired = []
        unannounced = self._unannounced
        remember_until = now + UNANNOUNCED_S
        while queue and (queue[0].done or queue[0].deadline <= now):
            item = queue.popleft()
            if not item.done:
                self._take(item)
                expired.append(item)
                for waiters in item.waits:
                    unannounced[waiters.identifier] = remember_until
        if len(unannounced) > _UNANNOUNCED_LIMIT:
            # Bounded: forgetting only means a few lines are held once more.
            self._unannounced = {k: t for k, t in unannounced.items() if t > now}
            if len(self._unannounced) > _UNANNOUNCED_LIMIT:
                self._unannounced = {}
        if queue:
            self._timer = self._loop.call_at(queue[0].deadline, self._expire)
        self._emit(expired)

    def _emit(self, items: list[_Held]) -> None:
        if not items:
            return
        tcp = [_thaw(i) for i in items if i.holdable]
        udp = [_thaw(i) for i in items if not i.holdable]
        for i in items:
            i.event = b""  # the queue may still reference the item until its deadline
            i.waits = ()
        if tcp:
            self._release(tcp, True)
        if udp:
            self._release(udp, False)


def _thaw(item: _Held) -> dict:
    """The held event as it was added: same fields, types and order, a BodyEvent again."""
    event = _decode(item.event)
    if item.body_keys is None:
        return event
    body_event = BodyEvent(event)
    body_event.body_keys = item.body_keys
    return body_event
