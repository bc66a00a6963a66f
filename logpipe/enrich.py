"""The metadata table and the join that tags events with it.

Invariants:
- The table holds at most ``max_entries`` entries; at the limit the least recently
  *announced* entry is evicted (lookups do not refresh recency) and counted.
- An entry is found by any of its identifiers: ip, hostname, container_id, and the
  12-character short form of a container_id (Docker's default tag and hostname).
  When two entries claim the same identifier, the latest announcement owns it.
- An entry is used only until it expires (``ttl_s``, per entry or the default); expired
  entries are never joined even before they are reaped.
- Joining never overwrites a field the line provided.
- A snapshot (``snapshot_bytes``/``restore_bytes``) carries each entry's expiry as wall-clock
  time; restoring gives an entry only the time it has left and skips expired ones.
- ``on_store`` (the enrichment hold) is told of every stored entry.

Storage is a ``cachetools.TLRUCache`` (per-entry TTL, LRU order by announcement), keyed by
the entry's primary identifier; three plain dicts index it for the join. The cache's
``expire`` and ``popitem`` are the only ways entries leave, and both unindex.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cachetools
import orjson

from .metrics import Metrics
from .parse.body import apply_labels
from .parse.metadata import Announcement

__all__ = ["Entry", "MetadataTable", "Enricher"]

SHORT_ID = 12


class Entry:
    __slots__ = ("key", "ip", "hostname", "container_id", "labels", "labels_but_hostname", "ttl_s", "expires")

    def __init__(self, key: tuple[str, str], ann: Announcement, ttl_s: float) -> None:
        self.key = key
        self.ip = ann.ip
        self.hostname = ann.hostname
        self.container_id = ann.container_id
        self.labels = ann.labels
        # Almost every line has a hostname, which a label never overwrites; without it the
        # labels usually name no field of the line and join with one dict.update.
        self.labels_but_hostname = {k: v for k, v in ann.labels.items() if k != "hostname"}
        self.ttl_s = ttl_s
        self.expires = 0.0  # set by the cache when stored


class _EntryCache(cachetools.TLRUCache):
    def __init__(self, maxsize: int, timer: Callable[[], float], on_remove: Callable[[Entry, str], None]) -> None:
        super().__init__(maxsize, ttu=self._ttu, timer=timer)
        self._on_remove = on_remove

    @staticmethod
    def _ttu(_key: Any, entry: Entry, now: float) -> float:
        entry.expires = now + entry.ttl_s
        return entry.expires

    def expire(self, time: float | None = None) -> list:
        expired = super().expire(time)
        for _key, entry in expired:
            self._on_remove(entry, "expired")
        return expired

    def popitem(self) -> tuple:
        key, entry = super().popitem()
        self._on_remove(entry, "evicted")
        return key, entry


class MetadataTable:
    def __init__(
        self,
        max_entries: int,
        default_ttl_s: float,
        metrics: Metrics,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_ttl_s = default_ttl_s
        self.timer = timer
        self.by_ip: dict[str, Entry] = {}
        self.by_hostname: dict[str, Entry] = {}
        self.by_container_id: dict[str, Entry] = {}
        self._cache = _EntryCache(max_entries, timer, self._unindex)
        # Called with every stored entry (the enrichment hold re-checks what waits for it).
        self.on_store: Callable[[Entry], None] | None = None
        self._removed = metrics.counter(
            "logpipe_metadata_removed_total", "Metadata entries that left the table, by reason", ("reason",)
        )
        metrics.gauge("logpipe_metadata_entries", "Entries in the metadata table").set_function(self.__len__)

    def __len__(self) -> int:
        return len(self._cache)

    def index(self, key: str) -> dict[str, Entry]:
        """The index an announcement key (``ip``, ``hostname``, ``container_id``) joins on."""
        return {"ip": self.by_ip, "hostname": self.by_hostname, "container_id": self.by_container_id}[key]

    def apply(self, ann: Announcement, default_ttl_s: float | None = None) -> str:
        """Store or remove; returns the metric result (``ok`` or ``removed``)."""
        if ann.op == "remove":
            for entry in self._matching(ann):
                self._cache.pop(entry.key, None)
                self._unindex(entry, "removed")
            return "removed"
        return self._store(ann, ann.ttl_s or default_ttl_s or self.default_ttl_s)

    def _store(self, ann: Announcement, ttl_s: float) -> str:
        if ann.container_id:
            key = ("container_id", ann.container_id)
        elif ann.hostname:
            key = ("hostname", ann.hostname)
        else:
            key = ("ip", ann.ip or "")
        old = self._cache.get(key)
        if old is not None:
            self._unindex(old, None)
        entry = Entry(key, ann, ttl_s)
        self._cache[key] = entry  # may expire or evict others, which unindexes them
        if ann.ip:
            self.by_ip[ann.ip] = entry
        if ann.hostname:
            self.by_hostname[ann.hostname] = entry
        if ann.container_id:
            self.by_container_id[ann.container_id] = entry
            if len(ann.container_id) > SHORT_ID:
                self.by_container_id[ann.container_id[:SHORT_ID]] = entry
        if self.on_store is not None:
            self.on_store(entry)
        return "ok"

    def expire(self) -> None:
        """Reap expired entries (the join already ignores them; this frees memory)."""
        self._cache.expire()

    def entries(self) -> list[Entry]:
        now = self.timer()
        return [e for e in self._cache.values() if e.expires > now]

    # --- persistence --------------------------------------------------------------
    # The snapshot stores each entry's expiry as wall-clock unix time: the table's timer
    # is monotonic and means nothing to the next process.

    def snapshot_bytes(self) -> bytes:
        now = self.timer()
        wall = time.time()
        entries = [
            {"ip": e.ip, "hostname": e.hostname, "container_id": e.container_id, "labels": e.labels,
             "expires_at": round(wall + (e.expires - now), 3)}
            for e in self._cache.values()
            if e.expires > now
        ]
        return orjson.dumps({"version": 1, "written_at": wall, "entries": entries})

    def restore_bytes(self, data: bytes) -> int:
        """Load a snapshot; entries already expired (by the wall clock) are skipped.
        Returns how many were restored. Raises ValueError on a damaged snapshot."""
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("entries"), list):
            raise ValueError("not a metadata snapshot (version 1)")
        wall = time.time()
        restored = 0
        for item in doc["entries"]:
            remaining = item["expires_at"] - wall
            if remaining <= 0:
                continue
            labels = {str(k): str(v) for k, v in item["labels"].items()}
            ann = Announcement("announce", item["ip"], item["hostname"], item["container_id"], None, labels)
            if not (ann.ip or ann.hostname or ann.container_id):
                continue
            self._store(ann, remaining)
            restored += 1
        return restored

    def _matching(self, ann: Announcement) -> list[Entry]:
        found: dict[int, Entry] = {}
        for value, index in ((ann.ip, self.by_ip), (ann.hostname, self.by_hostname), (ann.container_id, self.by_container_id)):
            if value and value in index:
                entry = index[value]
                found[id(entry)] = entry
        return list(found.values())

    def _unindex(self, entry: Entry, reason: str | None) -> None:
        for value, index in (
            (entry.ip, self.by_ip),
            (entry.hostname, self.by_hostname),
            (entry.container_id, self.by_container_id),
            (entry.container_id[:SHORT_ID] if entry.container_id else None, self.by_container_id),
        ):
            if value and index.get(value) is entry:
                del index[value]
        if reason is not None:
            self._removed.labels(reason).inc()


class Enricher:
    """Joins events to the table per ``enrich.match_on``, in order; first hit wins.

    Built once; ``enrich`` is the per-chunk hot path. Labels never overwrite fields the
    line has; a body field that collides with a label is stored as ``body.KEY`` (spec):
    the parser returns events with body fields as ``BodyEvent``, which names them.
    """

    def __init__(self, table: MetadataTable, match_on: list[tuple[str, str]], metrics: Metrics) -> None:
        self.table = table
        self._plan = [(line_field, table.index(key)) for line_field, key in match_on]
        enrich_total = metrics.counter("logpipe_enrich_total", "Events joined to the metadata table, by result", ("result",))
        self._hits = enrich_total.labels("hit")
        self._misses = enrich_total.labels("miss")
        self.held = enrich_total.labels("held")

    def count_misses(self, n: int) -> None:
        self._misses.inc(n)

    def enrich(self, events: list[dict], count_misses: bool = True) -> list[dict]:
        """Tag what the table knows; return the events that found nothing (counted as
        misses unless the caller will hold them and count them later)."""
        # An empty index (no announcement carries an ip, say) cannot match: skip its lookups.
        plan = [step for step in self._plan if step[1]]
        now = self.table.timer()
        hits = 0
        missed = []
        for event in events:
            for line_field, index in plan:
                value = event.get(line_field)
                if value is None:
                    continue
                entry = index.get(value)
                if entry is None or entry.expires <= now:
                    continue
                # Usually no label (but hostname) names a field of the line: one C-level
                # check and one update, for plain and body events alike.
                labels = entry.labels_but_hostname if "hostname" in event else entry.labels
                if labels.keys().isdisjoint(event.keys()):
                    event.update(labels)
                    hits += 1
                    break
                labels = entry.labels
                if type(event) is dict:
                    for key, label in labels.items():
                        if key not in event:
                            event[key] = label
                else:  # a BodyEvent: a body key that collides with a label moves to body.KEY
                    apply_labels(event, labels)
                hits += 1
                break
            else:
                missed.append(event)
        self._hits.inc(hits)
        if count_misses:
            self._misses.inc(len(missed))
        return missed
