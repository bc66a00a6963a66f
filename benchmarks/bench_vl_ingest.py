"""VictoriaLogs alone on logpipe's lines: how fast does the store ingest them with no shipper
competing for the cores?

The bench_e2e corpus goes through logpipe's own framer, parser, join and encoder in this
process first (not timed); the resulting NDJSON bodies of ``--batch`` events are then POSTed to
a fresh VictoriaLogs (``LOGPIPE_VICTORIALOGS_BIN``) with ``--concurrency`` requests in flight,
the way logpipe's sink sends them. The client only hands over ready bytes, so the rate is the
store's. Prints lines/s and VictoriaLogs' CPU per line and cores used.

    LOGPIPE_VICTORIALOGS_BIN=/opt/victorialogs/victoria-logs .venv/bin/python benchmarks/bench_vl_ingest.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import aiohttp  # noqa: E402
import bench_e2e as be  # noqa: E402

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
        daemon.table.apply(Announcement("announce", None, c["hostname"], c["container_id"], None, labels))
    framed = StreamFramer(65536).feed_text(corpus)
    bodies = []
    for start in range(0, len(framed), batch):
        events = daemon.syslog.parser.parse_lines(framed[start:start + batch], time.time(), "127.0.0.1")
        daemon.enricher.enrich(events)
        bodies.append(daemon.pipeline._encode_lines(events))
    return bodies


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> None:
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession() as session:
        async def sender() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url + "/insert/jsonline?_msg_field=_msg&_time_field=_time", data=body,
                                        headers={"Content-Type": "application/stream+json"}) as resp:
                    await resp.read()
                    if resp.status // 100 != 2:
                        raise SystemExit(f"VictoriaLogs answered HTTP {resp.status}")

        await asyncio.gather(*[sender() for _ in range(concurrency)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000, help="events per request (logpipe's default batch)")
    ap.add_argument("--concurrency", default="2,4", help="requests in flight, comma list")
    args = ap.parse_args()
    binary = os.environ.get("LOGPIPE_VICTORIALOGS_BIN")
    if not binary:
        raise SystemExit("set LOGPIPE_VICTORIALOGS_BIN to a victoria-logs binary")
    workdir = tempfile.mkdtemp(prefix="bench-vl-ingest-")
    bodies = asyncio.run(logpipe_bodies(args.lines, args.batch, workdir))
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
