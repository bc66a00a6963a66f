"""UDP burst drain: how much CPU logpipe spends per datagram when a backlog waits.

The daemon (as in bench_e2e.py: enrichment on, counting sink, memory buffer of 32 MiB) is
stopped with SIGSTOP, N datagrams of the e2e corpus are queued in its UDP socket, and it is
resumed; CPU = utime+stime of the daemon until all N reached the sink, per line. This is
the listener's capacity when it is behind (the case that decides loss), without loggen or
other senders on the same cores. N must fit the socket's receive buffer (kernel drops are
printed).

    .venv/bin/python benchmarks/bench_udp_drain.py --datagrams 40000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_e2e as e2e  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datagrams", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--corpus", default=os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub"))
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-udp-drain-")
    rng = random.Random(7)
    containers = e2e.containers(300, rng)
    hosts = [c["hostname"] for c in containers] + [f"host-{i}" for i in range(30)]
    lines = e2e.build_corpus(1000, e2e.loghub_messages(args.corpus), hosts).splitlines()
    sink = e2e.CountingSink(workdir)
    daemon = e2e.Logpipe(workdir, sink.url, "none", "memory:32", containers, 1, 2)
    per_line = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(args.repeat):
                base = sink.lines()
                drops0 = e2e.udp_drops(daemon.udp[1])
                os.kill(daemon.pid, signal.SIGSTOP)
                try:
                    for i in range(args.datagrams):
                        sender.sendto(lines[i % len(lines)], daemon.udp)
                    cpu0 = e2e.cpu_seconds(daemon.pid)
                finally:
                    os.kill(daemon.pid, signal.SIGCONT)
                arrived, _ = e2e.wait_count(lambda base=base: sink.lines() - base, args.datagrams, idle_timeout=5)
                us = 1e6 * (e2e.cpu_seconds(daemon.pid) - cpu0) / max(arrived, 1)
                per_line.append(us)
                print(f"{args.datagrams:,} queued: {arrived:,} arrived, kernel drops "
                      f"{e2e.udp_drops(daemon.udp[1]) - drops0:,}, {us:.2f} us CPU per line", flush=True)
    finally:
        daemon.stop()
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"median {statistics.median(per_line):.2f} us, best {min(per_line):.2f} us CPU per line")


if __name__ == "__main__":
    main()
