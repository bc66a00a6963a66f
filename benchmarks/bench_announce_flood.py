"""Announcement flood: N distinct announcements (distinct hostnames, container ids and
source addresses) through the decoder, the per-address rate limiter and the metadata
table, in-process. Prints a table: entries kept, evictions, memory before/after.

    .venv/bin/python benchmarks/bench_announce_flood.py [N] [MAX_ENTRIES]

Memory: tracemalloc's live Python allocations made since the table turned over once, at a
checkpoint (4 x MAX_ENTRIES announcements) and at the end, and the process RSS at both.
Bounded means end ~= checkpoint however large N is; ``rss_series_mib`` is the RSS at every
tenth of the flood (it plateaus once the table is full). tracemalloc undercounts at the
checkpoint: containers allocated before tracing started (the big index dicts, the TTL heap)
are only counted once they are next resized or compacted, so the traced figures can step
up once between checkpoint and end; compare the RSS series. ``--no-trace`` skips tracemalloc
(about 3x faster). ``--rate-limiter`` also passes every announcement through the
per-address token bucket (its dict is bounded at 65,536 addresses, so its size oscillates
below that and blurs the checkpoint/end comparison).
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import orjson

from logpipe.enrich import MetadataTable
from logpipe.metrics import Metrics
from logpipe.parse.metadata import AnnouncementDecoder
from logpipe.sources.metadata import RateLimiter


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def flood(n: int, max_entries: int, trace: bool = True, rate_limiter: bool = False) -> dict:
    metrics = Metrics()
    table = MetadataTable(max_entries, 600, metrics)
    decoder = AnnouncementDecoder()
    limiter = RateLimiter(100, 200)
    now = time.time()
    warm = max_entries * 2  # the table is full and has turned over once
    checkpoint = max_entries * 4
    out: dict = {"n": n, "max_entries": max_entries}
    start = time.perf_counter()
    for i in range(n):
        if i == warm:
            out["rss_full_mib"] = rss_mib()
            if trace:
                tracemalloc.start()
        if i and i % (n // 10) == 0:
            out.setdefault("rss_series_mib", []).append(round(rss_mib()))
        if i == checkpoint:
            out["rss_checkpoint_mib"] = rss_mib()
            if trace:
                out["traced_checkpoint_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        data = orjson.dumps({"hostname": f"host-{i}", "container_id": f"{i:064x}", "service": "svc", "image": "img:1"})
        if not rate_limiter or limiter.allow(ip, time.monotonic()):
            table.apply(decoder.decode(data, ip, now))
    out["seconds"] = round(time.perf_counter() - start, 2)
    if trace and tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["traced_end_mib"] = round(current / 2**20, 2)
        out["traced_peak_mib"] = round(peak / 2**20, 2)
    out["rss_end_mib"] = rss_mib()
    out["entries"] = len(table)
    out["index_sizes"] = (len(table.by_ip), len(table.by_hostname), len(table.by_container_id))
    out["evicted"] = metrics.get("logpipe_metadata_removed_total").value("evicted")
    out["rate_buckets"] = len(limiter._buckets)
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 1_000_000
    max_entries = int(args[1]) if len(args) > 1 else 100_000
    result = flood(n, max_entries, trace="--no-trace" not in sys.argv, rate_limiter="--rate-limiter" in sys.argv)
    print(f"{'metric':<24} value")
    for key, value in result.items():
        print(f"{key:<24} {value}")
