"""The late-arrival hold's cost for lines from hosts that never announce.

Runs the daemon (file sink, one TCP connection) three ways and prints a table:
- hold off (``hold_ms = 0``): the baseline;
- hold on, first pass: every line waits ``hold_ms`` and pays the hold's bookkeeping;
- hold on, second pass after the first expired: the same hosts are now remembered as
  unannounced and their lines go straight on.

With ``--unit``, the hold on its own instead (in this process, no daemon): for 3,000 lines
with every host's lines sharing identifiers (1 and 40 hosts) and with every line from a new
host, the bytes a held line really takes (tracemalloc) against the bytes the hold counts for
it, and the time to add 30,000 lines from 300 hosts, announce the hosts and release them.
A before/after: ``--unit --tree <another checkout>`` imports that checkout's logpipe instead.

Run: ``.venv/bin/python benchmarks/bench_hold.py [--lines 200000] [--hold-ms 2000] [--unit]``
"""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import DaemonProcess, wait_until  # noqa: E402

CORPUS = pathlib.Path(os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub")) / "Linux" / "Linux_2k.log"


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_pass(daemon: DaemonProcess, data: bytes, lines: int, already: int) -> tuple[float, float]:
    """(seconds until every line was confirmed by the sink, CPU µs per line)."""
    pid = daemon.proc.pid
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    with socket.create_connection(daemon.tcp) as sock:
        sock.sendall(data)
    wait_until(lambda: daemon.metric("logpipe_sent_events_total", "sink=out") >= already + lines, 120, "delivery")
    return time.monotonic() - t0, (cpu_seconds(pid) - cpu0) / lines * 1e6


def run(hold_ms: int, lines: int, passes: int) -> list[tuple[float, float]]:
    text = [line.rstrip("\n") for line in CORPUS.read_text(encoding="utf-8", errors="replace").splitlines()]
    data = "".join(f"<14>{text[i % len(text)]}\n" for i in range(lines)).encode()
    workdir = tempfile.mkdtemp(prefix="bench-hold-")
    config = f"""
[daemon]
data_dir = "{workdir}/data"
log_format = "json"
[api]
listen = "127.0.0.1:0"
[sources.syslog]
tcp = "127.0.0.1:0"
[sources.metadata]
udp = "127.0.0.1:0"
[enrich]
hold_ms = {hold_ms}
# Bounds out of the way: the first pass measures every line held, not the hold_full path.
hold_max_events = 1000000
hold_max_bytes = 1073741824
[sinks.out]
type = "file"
path = "{workdir}/out"
"""
    daemon = DaemonProcess(workdir, config)
    try:
        results = []
        for n in range(passes):
            results.append(one_pass(daemon, data, lines, n * lines))
            if hold_ms:
                # Let the first pass's lines expire from the hold, so the hosts are remembered.
                wait_until(lambda: daemon.metric("logpipe_enrich_hold_events", "_") == 0, 30, "the hold to empty")
        return results
    finally:
        daemon.stop()


MATCH_ON = [("source_ip", "ip"), ("hostname", "hostname"), ("hostname", "container_id"), ("app_name", "container_id")]


def unit_lines(n: int, hosts: int) -> list[dict]:
    """Parsed lines as the readers make them (each its own strings, as off a socket)."""
    return [{"_time": "2026-12-05T12:04:58.495185Z", "_msg": f"message number {i} " + "x" * (i % 200),
             "hostname": f"host-{i % hosts}-abcdef", "app_name": f"app-{i % hosts % 8}", "proc_id": str(i),
             "source_ip": "127.0.0.1", "logpipe_source": "syslog"} for i in range(n)]


def unit(tree: str | None) -> None:
    if tree:
        assert "logpipe" not in sys.modules
        sys.path.insert(0, os.path.abspath(tree))
    import asyncio
    import statistics
    import tracemalloc
    from types import SimpleNamespace

    import msgspec

    import logpipe.hold
    from logpipe.hold import Hold
    from logpipe.metrics import Metrics

    async def memory(hosts: int) -> tuple[float, float, float]:
        n = 3000
        hold = Hold(60_000, 10**6, 10**9, MATCH_ON, lambda events, holdable: None, Metrics())
        json_bytes = sum(len(msgspec.json.encode(e)) for e in unit_lines(n, hosts))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, n, 300):
            hold.add(unit_lines(n, hosts)[start:start + 300], True)
        taken = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return json_bytes / n, taken / n, hold.bytes / n

    async def speed() -> float:
        times = []
        for _ in range(5):
            hold = Hold(60_000, 10**6, 10**9, MATCH_ON, lambda events, holdable: None, Metrics())
            lines = unit_lines(30_000, 300)
            t0 = time.perf_counter()
            for start in range(0, len(lines), 300):
                hold.add(lines[start:start + 300], True)
            for i in range(300):
                hold.announced(SimpleNamespace(ip=None, hostname=f"host-{i}-abcdef", container_id=None))
            await asyncio.sleep(0)  # the release runs on the next loop turn
            assert hold.events == 0
            times.append((time.perf_counter() - t0) / len(lines) * 1e6)
        return statistics.median(times)

    print(f"the hold of {os.path.dirname(logpipe.hold.__file__)}")
    print()
    print("| lines from | JSON bytes per line | bytes taken per held line | bytes counted per held line |")
    print("| --- | ---: | ---: | ---: |")
    for hosts, label in ((1, "1 host"), (40, "40 hosts"), (3000, "a new host each")):
        json_b, taken, counted = asyncio.run(memory(hosts))
        print(f"| {label} | {json_b:.0f} | {taken:.0f} | {counted:.0f} |")
    print()
    print(f"add, announce and release: {asyncio.run(speed()):.2f} µs per line (median of 5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--hold-ms", type=int, default=2000)
    ap.add_argument("--unit", action="store_true", help="the hold on its own: memory per held line and speed")
    ap.add_argument("--tree", help="with --unit: the logpipe of this checkout (a before)")
    args = ap.parse_args()
    if args.unit:
        unit(args.tree)
        return
    off = run(0, args.lines, 1)[0]
    first, second = run(args.hold_ms, args.lines, 2)
    print(f"{args.lines:,} lines from unannounced hosts (Linux_2k), one TCP connection, file sink")
    print()
    print("| run | seconds to last line confirmed | CPU µs per line |")
    print("| --- | ---: | ---: |")
    print(f"| hold off | {off[0]:.2f} | {off[1]:.2f} |")
    print(f"| hold_ms = {args.hold_ms}, first pass (every line held) | {first[0]:.2f} | {first[1]:.2f} |")
    print(f"| hold_ms = {args.hold_ms}, second pass (hosts remembered as unannounced) | {second[0]:.2f} | {second[1]:.2f} |")


if __name__ == "__main__":
    main()
