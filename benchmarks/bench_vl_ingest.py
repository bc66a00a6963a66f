"""VictoriaLogs alone on logpipe's lines: how fast does the store ingest them with no shipper
competing for the cores?

The bench_e2e corpus goes through logpipe's own framer, parser, join and encoder in this
process first (not timed); the resulting NDJSON bodies of ``--batch`` events are then POSTed to
a fresh VictoriaLogs (``LOGPIPE_VICTORIALOGS_BIN``) with ``--concurrency`` requests in flight,
the way logpipe's sink sends them. The client only hands over ready bytes, so the rate is the
store's. Prints lines/s and VictoriaLogs' CPU per line and cores used.

    LOGPIPE_VICTORIALOGS_BIN=/opt/victorialogs/victoria-logs .venv/bin/python benchmarks/bench_vl_ingest.py

``--shapes`` instead compares orders of the same rows, 2 requests in flight, ``--rounds``
fresh stores each (medians; CPU counted until the store's background merges are done):
- ``nostreams``: as logpipe sends them, no ``_stream_fields``;
- ``mixed``: as logpipe sends them, ``_stream_fields=service`` (the shipped config);
- ``sorted``: each request's rows ordered by service;
- ``grouped``: one service per request (all rows grouped by service first);
- ``window:N``: each request takes the service with the most rows among the N waiting,
  as a sender that regroups a window of N rows would;
- ``without:A+B``: as ``mixed`` with the fields A and B taken out of every row (what
  those fields cost the store).

    LOGPIPE_VICTORIALOGS_BIN=... .venv/bin/python benchmarks/bench_vl_ingest.py --lines 400000 \
      --batch 8000 --shapes nostreams,mixed,sorted,grouped,window:16000,window:24000 --rounds 3

``--queries`` (with ``--shapes``) also times what an operator asks such a store by service
(QUERIES, each once to warm up and then 7 times) and its size on disk once stopped: what
streams by service buy against what they cost at ingest.

    LOGPIPE_VICTORIALOGS_BIN=... .venv/bin/python benchmarks/bench_vl_ingest.py --lines 1000000 \
      --batch 8000 --shapes nostreams,mixed --rounds 3 --queries
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import aiohttp  # noqa: E402
import bench_e2e as be  # noqa: E402
import orjson  # noqa: E402

from logpipe.config import loads  # noqa: E402
from logpipe.daemon.app import Daemon  # noqa: E402
from logpipe.parse.framing import StreamFramer  # noqa: E402
from logpipe.parse.metadata import Announcement  # noqa: E402

CONFIG = """
[daemon]
data_dir = "{data}"
[sources.syslog]
tcp = "127.0.0.1:0"
[sources.metadata]
udp = "127.0.0.1:0"
[enrich]
match_on = ["source_ip=ip", "hostname=hostname", "hostname=container_id", "app_name=container_id"]
hold_ms = 0
[sinks.out]
type = "victorialogs"
url = "http://127.0.0.1:1"
compression = "none"
"""


async def logpipe_bodies(lines: int, batch: int, workdir: str) -> list[bytes]:
    """The corpus as logpipe would send it: parsed, joined to 300 announced containers, encoded."""
    rng = random.Random(7)
    containers = be.containers(300, rng)
    messages = be.loghub_messages(os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
    corpus = be.build_corpus(lines, messages, [c["hostname"] for c in containers])
    daemon = Daemon(loads(CONFIG.format(data=os.path.join(workdir, "data"))))
    for c in containers:
        labels = {k: v for k, v in c.items() if k not in ("ip", "container_id", "hostname")}
        daemon.graph.table.apply(Announcement("announce", None, c["hostname"], c["container_id"], None, labels))
    framed = StreamFramer(65536).feed_text(corpus)
    bodies = []
    for start in range(0, len(framed), batch):
        events = daemon.graph.sources["syslog"].parser.parse_lines(framed[start:start + batch], time.time(), "127.0.0.1")
        pipeline = daemon.graph.pipeline
        pipeline.enricher.enrich(events)
        bodies.append(pipeline._encode_lines(events))
    return bodies


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def post_all(url: str, bodies: list[bytes], concurrency: int, query: str = "") -> None:
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession() as session:
        async def sender() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url + "/insert/jsonline?_msg_field=_msg&_time_field=_time" + query, data=body,
                                        headers={"Content-Type": "application/stream+json"}) as resp:
                    await resp.read()
                    if resp.status // 100 != 2:
                        raise SystemExit(f"VictoriaLogs answered HTTP {resp.status}")

        await asyncio.gather(*[sender() for _ in range(concurrency)])


def shaped(bodies: list[bytes], shape: str, batch: int) -> tuple[list[bytes], str]:
    """The same rows in another order (``--shapes``), and the query's stream fields."""
    if shape == "nostreams":
        return bodies, ""
    if shape == "mixed":
        return bodies, "&_stream_fields=service"
    rows = [row + b"\n" for body in bodies for row in body.split(b"\n") if row]
    service = [orjson.loads(row).get("service") or "" for row in rows]
    if shape == "sorted":
        out = []
        for start in range(0, len(rows), batch):
            order = sorted(range(start, min(start + batch, len(rows))), key=service.__getitem__)
            out.append(b"".join(rows[i] for i in order))
        return out, "&_stream_fields=service"
    if shape == "grouped":
        order = sorted(range(len(rows)), key=service.__getitem__)
        return [b"".join(rows[i] for i in order[s:s + batch]) for s in range(0, len(order), batch)], "&_stream_fields=service"
    if shape.startswith("without:"):
        dropped = shape.split(":", 1)[1].split("+")
        parsed = [orjson.loads(row) for row in rows]
        for fields in parsed:
            for name in dropped:
                fields.pop(name, None)
        slim = [orjson.dumps(fields) + b"\n" for fields in parsed]
        return [b"".join(slim[s:s + batch]) for s in range(0, len(slim), batch)], "&_stream_fields=service"
    if shape.startswith("window:"):
        window = int(shape.split(":")[1])
        waiting: dict[str, collections.deque[int]] = {}
        out, taken, held = [], 0, 0
        while taken < len(rows) or held:
            while held < window and taken < len(rows):
                waiting.setdefault(service[taken], collections.deque()).append(taken)
                taken += 1
                held += 1
            largest = max(waiting, key=lambda k: len(waiting[k]))
            queue = waiting[largest]
            picked = [queue.popleft() for _ in range(min(batch, len(queue)))]
            if not queue:
                del waiting[largest]
            held -= len(picked)
            out.append(b"".join(rows[i] for i in picked))
        return out, "&_stream_fields=service"
    raise SystemExit(f"--shapes: unknown shape {shape!r}")


def settled_ticks(pid: int, limit_s: float = 20.0) -> int:
    """CPU ticks once the store's background merges are done (no tick in 0.3 s), bounded."""
    ticks, deadline = cpu_ticks(pid), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = cpu_ticks(pid)
        if now == ticks:
            break
        ticks = now
    return ticks


# --queries: what an operator asks a per-project store, by a service's name (a field either
# way; a stream filter only where the rows were sent with streams).
QUERIES = (
    ("count one service's lines", "service:web | stats count() rows"),
    ("the same by stream filter", '{service="web"} | stats count() rows'),
    ("one service's last 100 lines", "service:web | sort by (_time desc) | limit 100"),
    ("a word in one service", "service:web error | stats count() rows"),
    ("a word, counted by service", "error | stats by (service) count() rows"),
)


def logsql(url: str, query: str) -> tuple[float, bytes]:
    """One LogsQL query's wall time in ms and its answer."""
    data = urllib.parse.urlencode({"query": query}).encode()
    start = time.perf_counter()
    with urllib.request.urlopen(url + "/select/logsql/query", data=data, timeout=60) as r:
        answer = r.read()
    return (time.perf_counter() - start) * 1000, answer


def measure_queries(vl: be.VictoriaLogs, streams: bool, repeats: int = 7) -> dict[str, float | None]:
    """Median ms of each of QUERIES on a settled store (None: not asked of rows without streams)."""
    with urllib.request.urlopen(vl.url + "/internal/force_flush", timeout=60) as r:
        r.read()
    settled_ticks(vl.server.proc.pid)
    out: dict[str, float | None] = {}
    for label, query in QUERIES:
        if query.startswith("{") and not streams:
            out[label] = None
            continue
        logsql(vl.url, query)  # once to warm the caches: an operator's second look
        out[label] = statistics.median(logsql(vl.url, query)[0] for _ in range(repeats))
    return out


def disk_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1e6


def compare_shapes(binary: str, workdir: str, bodies: list[bytes], args: argparse.Namespace) -> None:
    shapes = {shape: shaped(bodies, shape, args.batch) for shape in args.shapes.split(",")}
    per_run: dict[str, list[float]] = {shape: [] for shape in shapes}
    queried: dict[str, list[dict[str, float | None]]] = {shape: [] for shape in shapes}
    sizes: dict[str, list[float]] = {shape: [] for shape in shapes}
    for _ in range(args.rounds):
        for shape, (shape_bodies, query) in shapes.items():
            vl = be.VictoriaLogs(binary, workdir)
            try:
                pid = vl.server.proc.pid
                before = cpu_ticks(pid)
                asyncio.run(post_all(vl.url, shape_bodies, 2, query))
                ticks = settled_ticks(pid) - before
                if vl.rows() != args.lines:
                    raise SystemExit(f"{shape}: VictoriaLogs took {vl.rows()} rows of {args.lines}")
                if args.queries:
                    queried[shape].append(measure_queries(vl, "_stream_fields" in query))
                    vl.server.stop()  # a SIGTERM writes what it holds in memory to disk
                    sizes[shape].append(disk_mb(vl.data))
            finally:
                vl.stop()
            per_run[shape].append(ticks / os.sysconf("SC_CLK_TCK") / args.lines * 1e6)
    if args.queries:
        print_queries(queried, sizes, args.rounds)
    base = statistics.median(per_run["mixed"]) if "mixed" in per_run else None
    print(f"| shape | requests | rows per request | VictoriaLogs CPU µs per row (median of {args.rounds}) | per run |"
          + (" ÷ mixed |" if base else ""))
    print("| --- | ---: | ---: | ---: | --- |" + (" ---: |" if base else ""))
    for shape, runs in per_run.items():
        n = len(shapes[shape][0])
        median = statistics.median(runs)
        print(f"| {shape} | {n:,} | {args.lines / n:,.0f} | {median:.2f} | {' / '.join(f'{r:.2f}' for r in runs)} |"
              + (f" {median / base:.2f}x |" if base else ""))


def print_queries(queried: dict[str, list[dict[str, float | None]]], sizes: dict[str, list[float]], rounds: int) -> None:
    print(f"| query (ms, median of 7 after a warm-up; median of {rounds} stores) | " + " | ".join(queried) + " |")
    print("| --- |" + " ---: |" * len(queried))
    for label, query in QUERIES:
        cells = []
        for runs in queried.values():
            values = [run[label] for run in runs if run[label] is not None]
            cells.append(f"{statistics.median(values):.1f}" if values else "-")
        print(f"| {label}: `{query}` | " + " | ".join(cells) + " |")
    print("| on disk once stopped, MB | " + " | ".join(f"{statistics.median(v):.1f}" for v in sizes.values()) + " |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000, help="events per request (logpipe's default batch)")
    ap.add_argument("--concurrency", default="2,4", help="requests in flight, comma list")
    ap.add_argument("--shapes", default="", help="compare row orders instead (see the module docstring), comma list")
    ap.add_argument("--rounds", type=int, default=3, help="with --shapes: fresh stores per shape")
    ap.add_argument("--queries", action="store_true", help="with --shapes: also time typical queries on each store "
                    "(QUERIES) and its size on disk")
    args = ap.parse_args()
    binary = os.environ.get("LOGPIPE_VICTORIALOGS_BIN")
    if not binary:
        raise SystemExit("set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary")
    workdir = tempfile.mkdtemp(prefix="bench-vl-ingest-")
    bodies = asyncio.run(logpipe_bodies(args.lines, args.batch, workdir))
    if args.shapes:
        compare_shapes(binary, workdir, bodies, args)
        return
    size = sum(map(len, bodies))
    print(f"{args.lines:,} lines as logpipe encodes them, {size / 1e6:.1f} MB, {len(bodies)} bodies")
    print("| requests in flight | lines/s | VictoriaLogs CPU µs per line | VictoriaLogs cores |")
    print("| ---: | ---: | ---: | ---: |")
    for concurrency in map(int, args.concurrency.split(",")):
        vl = be.VictoriaLogs(binary, workdir)  # a fresh store each time
        try:
            pid = vl.server.proc.pid
            before, start = cpu_ticks(pid), time.time()
            asyncio.run(post_all(vl.url, bodies, concurrency))
            elapsed, ticks = time.time() - start, cpu_ticks(pid) - before
        finally:
            vl.stop()
        seconds = ticks / os.sysconf("SC_CLK_TCK")
        print(f"| {concurrency} | {args.lines / elapsed:,.0f} | {seconds / args.lines * 1e6:.2f} | {seconds / elapsed:.2f} |")


if __name__ == "__main__":
    main()
