"""Buffer cost in the daemon's shape: CPU per event through push, next_batch and ack.

The pipeline pushes each TCP read as one NDJSON blob of a few hundred encoded events
(``push_lines``); the delivery loop takes batches of up to 10,000 events / 4 MB, asks for
their NDJSON (``Batch.ndjson_pieces()``, what the VictoriaLogs sink sends) and acknowledges
them. Events are realistic encoded syslog events (~270 bytes of JSON). Scenarios:

- ``live``: the reader keeps up (a batch is taken as soon as 10,000 events are waiting),
  as with a healthy sink;
- ``backlog``: everything is pushed first, then drained (a sink that was down);
- ``replay``: the backlog's directory opened again and drained (the restart path: the
  recovery scan of every segment, then reading from the files).

Each row is one buffer implementation run in its own process (``--compare DIR`` adds the
tree at DIR, e.g. a worktree of an older commit, run the same way), rounds interleaved;
the table shows medians of ``--rounds`` and, with ``--compare``, the ratio this/that.
CPU is the process's (the fsync thread included), per million events.

    .venv/bin/python benchmarks/bench_buffer.py [--events 1000000] [--chunk 300] [--rounds 3]
        [--compare /tmp/before] [--fsync interval] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAX_EVENTS = 10_000
MAX_BYTES = 4_000_000


def make_blobs(total: int, size: int) -> list[tuple[bytes, int]]:
    import orjson

    blobs = []
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
        blobs.append((b"".join(e + b"\n" for e in events), len(events)))
    return blobs


async def take_all(buffer, limit: int | None = None) -> int:  # type: ignore[no-untyped-def]
    """Take, read and acknowledge batches; all that is left, or until ``limit`` events."""
    n = 0
    while limit is None or n < limit:
        batch = await buffer.next_batch(MAX_EVENTS, MAX_BYTES, 1.0)
        if batch is None:
            break
        batch.ndjson_pieces()
        n += len(batch)
        buffer.ack(batch)
    return n


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def child(args: argparse.Namespace) -> dict[str, float]:
    from logpipe.buffer.disk import DiskBuffer
    from logpipe.config import Buffer as BufferConfig
    from logpipe.logs import configure
    from logpipe.metrics import Metrics

    configure("warning")  # the replay's info line would break the output
    blobs = make_blobs(args.events, args.chunk)
    config = BufferConfig(type="disk", max_bytes=1 << 40, fsync=args.fsync, fsync_interval_ms=1000)
    directory = tempfile.mkdtemp(prefix="bench-buffer-", dir=args.dir)
    out: dict[str, float] = {}
    try:
        def open_buffer() -> DiskBuffer:
            return DiskBuffer("bench", directory, config, Metrics(), segment_bytes=64 * 1024 * 1024)

        rss0 = peak_rss_mb()
        buffer = open_buffer()
        c0, t0 = time.process_time(), time.perf_counter()
        if args.scenario == "live":
            waiting = taken = 0
            for lines, count in blobs:
                buffer.push_lines(lines, count)
                waiting += count
                if waiting >= MAX_EVENTS:
                    got = await take_all(buffer, MAX_EVENTS)
                    waiting -= got
                    taken += got
            buffer.close()
            taken += await take_all(buffer)
            assert taken == args.events, taken
            await buffer.aclose()
        else:
            for lines, count in blobs:
                buffer.push_lines(lines, count)
            if args.scenario == "replay":
                await buffer.aclose()
                buffer = open_buffer()
            buffer.close()
            assert await take_all(buffer) == args.events
            await buffer.aclose()
        c1, t1 = time.process_time(), time.perf_counter()
        out = {"cpu_us": (c1 - c0) / args.events * 1e6, "events_s": args.events / (t1 - t0),
               "rss_mb": peak_rss_mb() - rss0}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return out


def run_child(root: str, scenario: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", scenario, "--events", str(args.events),
           "--chunk", str(args.chunk), "--fsync", args.fsync, "--dir", args.dir]
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=root)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", default="interval", choices=["always", "interval", "never"])
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--compare", default="", help="another tree of logpipe to run beside this one")
    parser.add_argument("--scenarios", default="live,backlog,replay")
    parser.add_argument("--_child", default="")
    args = parser.parse_args()
    if args._child:
        args.scenario = args._child
        print(json.dumps(asyncio.run(child(args))))
        return
    trees = [("this", ROOT)] + ([("that", os.path.abspath(args.compare))] if args.compare else [])
    scenarios = args.scenarios.split(",")
    results: dict[tuple[str, str], list[dict[str, float]]] = {(s, t): [] for s in scenarios for t, _ in trees}
    for _ in range(args.rounds):
        for scenario in scenarios:
            for name, root in trees:
                results[(scenario, name)].append(run_child(root, scenario, args))
    print(f"{args.events:,} events in NDJSON chunks of {args.chunk}, batches of {MAX_EVENTS:,} / {MAX_BYTES:,} B, "
          f"fsync={args.fsync}; medians of {args.rounds}, rounds interleaved")
    print(f"this = {ROOT}" + (f", that = {trees[1][1]}" if args.compare else ""))
    print()
    print("| scenario | tree | CPU µs / event | events/s | peak RSS growth (MB) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for scenario in scenarios:
        med = {}
        for name, _ in trees:
            rows = results[(scenario, name)]
            med[name] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            m = med[name]
            print(f"| {scenario} | {name} | {m['cpu_us']:.2f} | {m['events_s']:,.0f} | {m['rss_mb']:.0f} |")
        if args.compare:
            a, b = med["this"], med["that"]
            print(f"| {scenario} | this/that | {a['cpu_us'] / b['cpu_us']:.2f}x | {a['events_s'] / b['events_s']:.2f}x "
                  f"| {a['rss_mb'] - b['rss_mb']:+.0f} |")


if __name__ == "__main__":
    main()
