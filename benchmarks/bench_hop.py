"""The typed hop's cost: CPU per event of an aggregator (``http`` source) next to an agent
(syslog over TCP) doing the same events, each daemon a process with a file sink.

Rows, each the daemon's CPU (utime + stime from /proc) from the first byte sent to the
file sink confirming the last event, divided by the events:
- syslog TCP -> file: RFC 5424 lines with JSON bodies, parsed (the agent's intake);
- syslog TCP -> logpipe sink: the same, shipped to an aggregator (the agent's whole cost);
- http (gzip) -> file and http (none) -> file: the stored events of the first row POSTed
  in batches of 10,000, the aggregator's intake (decode, no parse).

Run: ``.venv/bin/python benchmarks/bench_hop.py [--lines 100000] [--rounds 3]`` (medians).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import pathlib
import socket
import statistics
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import DaemonProcess, wait_until  # noqa: E402

CORPUS = pathlib.Path(os.environ.get("LOGPIPE_CORPUS", "/work/shared/corpus/loghub")) / "Linux" / "Linux_2k.log"
BATCH = 10_000
TOKEN = "bench-token"


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config(workdir: str, sources: str, sink: str) -> str:
    return f"""
[daemon]
data_dir = "{workdir}"
log_format = "json"

[api]
listen = "127.0.0.1:0"

{sources}

[enrich]
hold_ms = 0

{sink}
"""


FILE_SINK = '[sinks.out]\ntype = "file"\npath = "out"\nrotate_bytes = 4000000000\n'
SYSLOG = '[sources.syslog]\ntcp = "127.0.0.1:0"\n'
HTTP = f'[sources.agents]\ntype = "http"\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\n'


def syslog_lines(count: int) -> bytes:
    texts = [t for t in CORPUS.read_text(encoding="utf-8", errors="replace").splitlines() if t]
    out = []
    for i in range(count):
        body = json.dumps({"level": ("info", "warn", "error")[i % 3], "msg": texts[i % len(texts)][:200],
                           "status": 200 + i % 7, "latency_ms": i % 1000 / 10, "seq": i})
        out.append(f"<14>1 2026-11-21T10:00:{i % 60:02d}.{i % 1_000_000:06d}Z host-{i % 16} app 7 - - {body}\n")
    return "".join(out).encode()


def measure(daemon: DaemonProcess, sink: str, events: int, send) -> float:
    """CPU µs per event, first byte to the sink confirming the last event."""
    pid = daemon.proc.pid
    before = daemon.metric("logpipe_sent_events_total", f"sink={sink}")
    cpu0 = cpu_seconds(pid)
    send()
    wait_until(lambda: daemon.metric("logpipe_sent_events_total", f"sink={sink}") >= before + events, 300, "delivery")
    return (cpu_seconds(pid) - cpu0) / events * 1e6


def send_tcp(address, data: bytes):
    def go():
        with socket.create_connection(address) as sock:
            sock.sendall(data)
    return go


def post_all(address, bodies: list[bytes], gzipped: bool):
    def go():
        conn = http.client.HTTPConnection(*address)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        for body in bodies:
            conn.request("POST", "/logpipe/v1/events", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
        conn.close()
    return go


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = syslog_lines(args.lines)
    root = tempfile.mkdtemp(prefix="bench-hop-")
    results: dict[str, list[float]] = {}
    dirs = {name: os.path.join(root, name) for name in ("agent", "shipper", "aggregator")}
    for d in dirs.values():
        os.makedirs(d)
    agent = DaemonProcess(dirs["agent"], config(dirs["agent"], SYSLOG, FILE_SINK))
    aggregator = DaemonProcess(dirs["aggregator"], config(dirs["aggregator"], HTTP, FILE_SINK))
    hop_url = "http://%s:%d" % aggregator.listeners["agents.listen"]
    shipper = DaemonProcess(dirs["shipper"], config(dirs["shipper"], SYSLOG, f'[sinks.hop]\ntype = "logpipe"\nurl = "{hop_url}"\n'
                                                                              f'token = "{TOKEN}"\n'))
    try:
        results["syslog TCP -> file"] = [measure(agent, "out", args.lines, send_tcp(agent.tcp, lines))]
        stored = pathlib.Path(dirs["agent"], "out.ndjson").read_bytes().splitlines(keepends=True)[: args.lines]
        plain = [b"".join(stored[i:i + BATCH]) for i in range(0, len(stored), BATCH)]
        zipped = [gzip.compress(b, compresslevel=1) for b in plain]
        for _ in range(args.rounds):
            if len(results["syslog TCP -> file"]) < args.rounds:
                results["syslog TCP -> file"].append(measure(agent, "out", args.lines, send_tcp(agent.tcp, lines)))
            results.setdefault("syslog TCP -> logpipe sink", []).append(
                measure(shipper, "hop", args.lines, send_tcp(shipper.tcp, lines)))
            results.setdefault("http (gzip) -> file", []).append(
                measure(aggregator, "out", args.lines, post_all(aggregator.listeners["agents.listen"], zipped, True)))
            results.setdefault("http (none) -> file", []).append(
                measure(aggregator, "out", args.lines, post_all(aggregator.listeners["agents.listen"], plain, False)))
    finally:
        for daemon in (agent, shipper, aggregator):
            daemon.stop()
    base = statistics.median(results["syslog TCP -> file"])
    print(f"{args.lines} events, {sum(map(len, plain)) / args.lines:.0f} bytes each stored, median of {args.rounds} rounds")
    print(f"{'path':<28} {'CPU us/event':>12} {'events/CPU s':>13} {'vs syslog':>10}")
    for name, values in results.items():
        us = statistics.median(values)
        print(f"{name:<28} {us:>12.2f} {1e6 / us:>13,.0f} {us / base:>9.2f}x")


if __name__ == "__main__":
    main()
