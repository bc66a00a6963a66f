"""The late-arrival hold's cost for lines from hosts that never announce.

Runs the daemon (file sink, one TCP connection) three ways and prints a table:
- hold off (``hold_ms = 0``): the baseline;
- hold on, first pass: every line waits ``hold_ms`` and pays the hold's bookkeeping;
- hold on, second pass after the first expired: the same hosts are now remembered as
  unannounced and their lines go straight on.

Run: ``.venv/bin/python benchmarks/bench_hold.py [--lines 200000] [--hold-ms 2000]``
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--hold-ms", type=int, default=2000)
    args = ap.parse_args()
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
