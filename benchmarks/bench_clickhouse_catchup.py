"""ClickHouse catch-up after an outage: how fast a disk-buffered backlog drains (issue 20).

A real clickhouse-server (Debian 18.16) on loopback, the sink wired as the daemon wires it
(build_sink_unit: disk buffer, deliverer, ClickHouse sink, default batch 50,000 events /
16 MB / 5 s), one table.

The same scenario three times: a load of RATE events/s into the disk buffer; after STEADY s
the server is stopped (SIGTERM) for OUTAGE s and started again. The catch-up rate is the
rows confirmed from the server answering again until the backlog is gone (the buffer back
under one batch), divided by that time, with the load still arriving (retry_max_ms = 200,
so the deliverer's backoff adds at most 0.2 s).

1. reference, no part guard (min_insert_interval_ms = 0, catch_up_batches = 1): plain
   batches as fast as the sink and the server go, on this machine under this load. This is
   the steady insert rate the other two are compared with.
2. part guard (min_insert_interval_ms = 1000), catch_up_batches = 1: the old behaviour,
   one batch per table per second.
3. part guard, catch_up_batches = 4 (the default; --catch-up): a backlog merged into
   larger inserts.

The part guard caps the old behaviour at max_events rows per second per table; it binds
only where the sink and server insert faster than that. --batch 10000 makes it bind on any
machine (then --catch-up 16 keeps the merge bound near the default's 200,000 rows).

    .venv/bin/python benchmarks/bench_clickhouse_catchup.py [--rate 10000] [--outage 60] [--steady 10]
        [--batch 50000] [--catch-up 4] [--all-fields]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

import orjson

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from logpipe.config import loads  # noqa: E402
from logpipe.daemon.assemble import build_sink_unit  # noqa: E402
from logpipe.metrics import Metrics  # noqa: E402
from tests.clickhouse_server import BINARY, ClickHouseServer  # noqa: E402

# {ts}/{msg}: ts/msg with the columns mapping, the event's own _time/_msg without it.
TABLE = """CREATE TABLE logs.{name} (
    {ts} DateTime, level String, service String, hostname String, status UInt16, bytes UInt64, {msg} String
) ENGINE = MergeTree PARTITION BY toYYYYMM({ts}) ORDER BY (service, level, {ts})"""
COLUMNS = '{ ts = "_time", level = "level", service = "service", hostname = "hostname", status = "status", bytes = "bytes", msg = "_msg" }'


def event(i: int) -> bytes:
    return orjson.dumps({
        "_time": f"2026-05-01T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}456Z",
        "_msg": f"GET /api/v1/items/{i} HTTP/1.1 200 in {i % 97} ms user=u{i % 1000}",
        "level": "info", "hostname": f"host-{i % 8}", "service": f"svc{i % 20}", "status": str(200 + i % 5),
        "bytes": 1000 + i, "source_ip": "10.0.3.7", "container_id": "3f2a9c1b7d4e",
    })


def unit(url: str, data_dir: str, metrics: Metrics, *, table: str, mapped: bool, interval_ms: int, catch_up: int,
         batch: int):
    columns = f"columns = {COLUMNS}\n" if mapped else ""
    config = loads(
        f'[sinks.ch]\ntype = "clickhouse"\nurl = "{url}"\ntable = "{table}"\n{columns}'
        f"batch = {{ max_events = {batch}, max_bytes = 16000000, max_age_ms = 5000 }}\n"
        f"min_insert_interval_ms = {interval_ms}\ncatch_up_batches = {catch_up}\n"
        # a quick retry after the restart: the wait for the backoff is not what is measured
        "retry_initial_ms = 100\nretry_max_ms = 200\n"
        'buffer = { type = "disk", max_bytes = 4000000000, fsync = "never" }\n'
    ).sinks["ch"]
    return build_sink_unit("ch", config, data_dir, metrics, None)


def sent(metrics: Metrics) -> float:
    return metrics.get("logpipe_sent_events_total").value("ch")  # type: ignore[union-attr]


def inserts(metrics: Metrics) -> int:
    family = metrics.get("logpipe_batch_events")
    return sum(child.count for _, child in family.items()) if family else 0  # type: ignore[union-attr]


def push(buffer, start: int, count: int) -> None:
    records = [event(i) for i in range(start, start + count)]
    buffer.push(records, sum(map(len, records)) + len(records))


async def outage_run(server: ClickHouseServer, data_dir: str, table: str, interval_ms: int, catch_up: int, rate: int,
                     steady_s: float, outage_s: float, mapped: bool, batch: int) -> dict:
    # Start each run on an idle server: the parts of the run before are still being merged.
    deadline = time.monotonic() + 120
    while server.query("SELECT count() FROM system.merges").strip() != "0" and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    metrics = Metrics()
    u = unit(server.url, data_dir, metrics, table=table, mapped=mapped, interval_ms=interval_ms, catch_up=catch_up,
             batch=batch)
    loop = asyncio.get_running_loop()
    deliver = loop.create_task(u.deliverer.run())
    pushed = 0
    began = time.monotonic()
    stop_load = asyncio.Event()

    async def load() -> None:
        nonlocal pushed
        while not stop_load.is_set():
            due = int((time.monotonic() - began) * rate) - pushed
            if due > 0:
                push(u.buffer, pushed, due)
                pushed += due
            await asyncio.sleep(0.05)  # pacing the load

    loader = loop.create_task(load())
    await asyncio.sleep(steady_s)
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(outage_s)
    backlog_at_restart = u.buffer.events
    await asyncio.to_thread(server.restart)  # returns once the server answers /ping
    restarted, rows0, inserts0 = time.monotonic(), sent(metrics), inserts(metrics)
    while sent(metrics) == rows0:
        await asyncio.sleep(0.01)
    first_ack = time.monotonic()
    max_events = u.config.batch.max_events
    while u.buffer.events > max_events:  # until the backlog is gone
        await asyncio.sleep(0.05)
    drained = time.monotonic()
    rows, count = sent(metrics) - rows0, inserts(metrics) - inserts0
    stop_load.set()
    await loader
    u.buffer.close()
    await deliver
    await u.sink.close()
    await u.buffer.aclose()
    msg = "msg" if mapped else "_msg"
    stored, unique = map(int, server.query(f"SELECT count(), uniqExact({msg}) FROM logs.{table} FORMAT TSV").split())
    return {"name": f"min_insert_interval_ms {interval_ms}, catch_up_batches {catch_up}", "backlog": backlog_at_restart,
            "first_ack_s": first_ack - restarted,
            "drain_s": drained - restarted, "rate": rows / (drained - restarted), "inserts": count,
            "rows_per_insert": rows / max(count, 1), "missing": pushed - unique, "duplicates": stored - unique}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=10_000, help="steady load, events/s")
    parser.add_argument("--outage", type=float, default=60, help="seconds the server is down")
    parser.add_argument("--steady", type=float, default=10, help="seconds of load before the outage")
    parser.add_argument("--all-fields", action="store_true", help="no columns mapping: every field, skip_unknown_fields")
    parser.add_argument("--batch", type=int, default=50_000, help="batch.max_events (default: the sink's 50,000)")
    parser.add_argument("--catch-up", type=int, default=4, help="catch_up_batches of the third run (default 4)")
    args = parser.parse_args()
    if BINARY is None:
        sys.exit("clickhouse-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        server = ClickHouseServer(os.path.join(tmp, "server"))
        server.start()
        try:
            server.query("CREATE DATABASE logs")
            mapped = not args.all_fields
            shapes = [("reference", 0, 1), ("guard_1", 1000, 1), ("guard_n", 1000, args.catch_up)]
            for name, _, _ in shapes:
                server.query(TABLE.format(name=name, ts="ts" if mapped else "_time", msg="msg" if mapped else "_msg"))
            version = server.query("SELECT version()").strip()
            runs = [asyncio.run(outage_run(server, os.path.join(tmp, name), name, interval, catch_up, args.rate,
                                           args.steady, args.outage, mapped, args.batch))
                    for name, interval, catch_up in shapes]
        finally:
            server.stop()
    print(f"clickhouse-server {version}; {'all fields' if args.all_fields else 'mapped columns (7)'}, 1 table; load "
          f"{args.rate:,} events/s, outage {args.outage:.0f} s, batch {args.batch:,} events, disk buffer")
    steady = runs[0]["rate"]
    print(f"{'run':<46}{'backlog':>9}{'drain s':>8}{'rows/s':>8}{'of ref':>7}{'inserts':>8}{'rows/ins':>9}"
          f"{'miss':>5}{'dup':>4}")
    for r in runs:
        print(f"{r['name']:<46}{r['backlog']:>9,}{r['drain_s']:>8.1f}{r['rate']:>8,.0f}{r['rate'] / steady:>7.0%}"
              f"{r['inserts']:>8}{r['rows_per_insert']:>9,.0f}{r['missing']:>5}{r['duplicates']:>4}")

if __name__ == "__main__":
    main()
