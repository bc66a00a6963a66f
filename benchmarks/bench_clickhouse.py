"""Rows/s through the ClickHouse sink into a real clickhouse-server (Debian 18.16).

Starts its own server (tests/clickhouse_server.py) in a temp dir, then for each shape sends
batches of 50,000 events (the sink's default batch) through ClickHouse.send and reports
rows/s end to end (decode + map + convert + encode + gzip + HTTP + server insert), and the
sink-side CPU share. Bounded: a fixed number of batches per shape.

    .venv/bin/python benchmarks/bench_clickhouse.py [--batches N]
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

from logpipe.batch import Batch  # noqa: E402
from logpipe.config import loads  # noqa: E402
from logpipe.sinks.clickhouse import ClickHouse  # noqa: E402
from tests.clickhouse_server import BINARY, ClickHouseServer  # noqa: E402

TABLE = """CREATE TABLE logs.{name} (
    ts DateTime, level String, service String, hostname String, status UInt16, bytes UInt64, msg String
) ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (service, level, ts)"""
COLUMNS = '{ ts = "_time", level = "level", service = "service", hostname = "hostname", status = "status", bytes = "bytes", msg = "_msg" }'


def events(n: int, services: int) -> list[bytes]:
    out = []
    for i in range(n):
        out.append(
            orjson.dumps(
                {
                    "_time": f"2026-05-01T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}456Z",
                    "_msg": f"GET /api/v1/items/{i} HTTP/1.1 200 in {i % 97} ms user=u{i % 1000}",
                    "level": "info",
                    "hostname": f"host-{i % 8}",
                    "service": f"svc{i % services}",
                    "status": str(200 + i % 5),
                    "bytes": 1000 + i,
                    "source_ip": "10.0.3.7",
                    "container_id": "3f2a9c1b7d4e",
                }
            )
        )
    return out


async def run_shape(url: str, name: str, table: str, columns: str | None, services: int, batches: int, size: int) -> tuple:
    text = f'[sinks.bench]\ntype = "clickhouse"\nurl = "{url}"\ntable = "{table}"\ndefault_table = "other"\nmin_insert_interval_ms = 0\n'
    if columns:
        text += f"columns = {columns}\n"
    sink = ClickHouse("bench", loads(text).sinks["bench"])  # type: ignore[arg-type]
    records = events(size, services)
    await sink.send(Batch("warmup", records[:100], 0, 0.0))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for b in range(batches):
        await sink.send(Batch(f"{name}-{b}", records, 0, 0.0))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    await sink.close()
    rows = batches * size
    return name, rows, rows / wall, cpu / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--size", type=int, default=50_000)
    args = parser.parse_args()
    if BINARY is None:
        sys.exit("clickhouse-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        server = ClickHouseServer(tmp)
        server.start()
        try:
            server.query("CREATE DATABASE logs")
            for t in ["app", "other"] + [f"t_svc{i}" for i in range(20)]:
                server.query(TABLE.format(name=t))
            version = server.query("SELECT version()").strip()
            shapes = [
                ("mapped columns, 1 table", "app", COLUMNS, 1),
                ("mapped columns, 20 tables (t_{service})", "t_{service}", COLUMNS, 20),
                ("all fields + skip_unknown, 1 table", "app", None, 1),
            ]
            results = [asyncio.run(run_shape(server.url, n, t, c, s, args.batches, args.size)) for n, t, c, s in shapes]
            stored = int(server.query("SELECT sum(rows) FROM system.parts WHERE database = 'logs' AND active"))
        finally:
            server.stop()
    print(f"clickhouse-server {version}, batch {args.size} events, {args.batches} batches per shape, 2 cores shared with the server")
    print(f"{'shape':<42} {'rows':>9} {'rows/s':>10} {'sink CPU':>9}")
    for name, rows, rate, cpu in results:
        print(f"{name:<42} {rows:>9} {rate:>10,.0f} {cpu:>8.0%}")
    print(f"rows stored (incl. warmups): {stored}")


if __name__ == "__main__":
    main()
