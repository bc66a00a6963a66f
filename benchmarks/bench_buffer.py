"""Buffer throughput: events/s pushed (written) and taken back out (read + ack), for the
disk buffer under each fsync setting and for the memory buffer.

Events are realistic encoded syslog events (~270 bytes of JSON); they are pushed in
chunks of ``--chunk`` events, as the pipeline pushes one TCP read or UDP burst at a time,
and read back in batches of 10,000 events (the default ``batch.max_events``). For the
disk buffer, "replayed" is measured after reopening the directory, i.e. the restart
path: recovery scan of every segment, then reading from the files.

    .venv/bin/python benchmarks/bench_buffer.py [--events 500000] [--chunk 64] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

import orjson

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from logpipe.buffer.disk import DiskBuffer  # noqa: E402
from logpipe.buffer.memory import MemoryBuffer  # noqa: E402
from logpipe.config import Buffer as BufferConfig  # noqa: E402
from logpipe.logs import configure  # noqa: E402
from logpipe.metrics import Metrics  # noqa: E402


def make_chunks(total: int, size: int) -> list[tuple[list[bytes], int]]:
    chunks = []
    for start in range(0, total, size):
        events = [
            orjson.dumps(
                {
                    "_time": "2026-11-21T16:10:54.951123Z",
                    "_msg": f"Accepted publickey for deploy from 10.0.3.{i % 250} port {40000 + i % 20000} ssh2",
                    "hostname": "api-1",
                    "app_name": "sshd",
                    "proc_id": str(1000 + i % 5000),
                    "facility": "auth",
                    "severity": "info",
                    "level": "info",
                    "source_ip": "10.0.3.7",
                    "service": "api",
                    "container_id": "3f2a9c1b7d4e",
                }
            )
            for i in range(start, min(total, start + size))
        ]
        chunks.append((events, sum(map(len, events)) + len(events)))
    return chunks


async def drain(buffer) -> int:
    buffer.close()
    n = 0
    while (batch := await buffer.next_batch(10_000, 4_000_000, 1.0)) is not None:
        n += len(batch)
        buffer.ack(batch)
    return n


async def bench_memory(chunks, total) -> tuple[float, float]:
    buffer = MemoryBuffer("bench", 1 << 40)
    t0 = time.perf_counter()
    for records, nbytes in chunks:
        buffer.push(records, nbytes)
    t1 = time.perf_counter()
    assert await drain(buffer) == total
    t2 = time.perf_counter()
    return total / (t1 - t0), total / (t2 - t1)


async def bench_disk(chunks, total, fsync: str, root: str) -> tuple[float, float, int]:
    directory = tempfile.mkdtemp(prefix=f"bench-{fsync}-", dir=root)
    config = BufferConfig(type="disk", max_bytes=1 << 40, fsync=fsync, fsync_interval_ms=1000)
    try:
        buffer = DiskBuffer("bench", directory, config, Metrics(), segment_bytes=64 * 1024 * 1024)
        t0 = time.perf_counter()
        for records, nbytes in chunks:
            buffer.push(records, nbytes)
        await buffer.aclose()  # includes the final fsync: the writes are on disk
        t1 = time.perf_counter()
        disk = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
        t2 = time.perf_counter()
        again = DiskBuffer("bench", directory, config, Metrics(), segment_bytes=64 * 1024 * 1024)
        assert await drain(again) == total
        t3 = time.perf_counter()
        await again.aclose()
        return total / (t1 - t0), total / (t3 - t2), disk
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure("warning")  # the replay's info line would break the table
    chunks = make_chunks(args.events, args.chunk)
    raw = sum(n for _, n in chunks)
    print(f"{args.events} events of {raw / args.events:.0f} B in chunks of {args.chunk}; best of {args.rounds}; dir {args.dir}")
    print()
    print("| buffer | written (events/s) | replayed (events/s) | disk bytes / event bytes |")
    print("| --- | ---: | ---: | ---: |")
    results = [await bench_memory(chunks, args.events) for _ in range(args.rounds)]
    print(f"| memory | {max(r[0] for r in results):,.0f} | {max(r[1] for r in results):,.0f} | - |")
    for fsync in ("never", "interval", "always"):
        results = [await bench_disk(chunks, args.events, fsync, args.dir) for _ in range(args.rounds)]
        print(
            f"| disk, fsync={fsync} | {max(r[0] for r in results):,.0f} | {max(r[1] for r in results):,.0f} "
            f"| {results[0][2] / raw:.3f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
