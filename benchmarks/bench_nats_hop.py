"""Lines/s through the JetStream hop: syslog TCP -> receiver logpipe -> nats sink -> a real
nats-server (JetStream, file storage) -> shipper logpipe(s) -> file sink, against the same
receiver writing the file itself (no hop), in one run.

Every logpipe is its own process (`python -m logpipe run`), as deployed; nats-server is
Debian's, started on loopback in a temp dir (tests/nats_server.py). For each shape the
receiver (and shippers) start fresh, N lines go in over one TCP connection, and the clock
runs from the first byte sent to the last line in the shippers' files. Shapes: the direct
file baseline, then the hop with ``events_per_message`` 1, 10 and 100, and 100 with two
shippers on one durable consumer. Bounded: N lines per shape, 300 s per shape at most.

    .venv/bin/python benchmarks/bench_nats_hop.py [--lines N] [--repeat R]

Note: this machine has 2 cores for the receiver, the shipper(s), nats-server and the
sender together, so the hop's figures are a lower bound for separate machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.nats_server import BINARY, NatsServer  # noqa: E402

LINE = '<14>Nov 21 10:00:01 web-{h} app{a}[7]: {{"msg":"GET /orders/{i} 200","seq":{i},"latency_ms":{l}}}\n'


def payload(n: int) -> bytes:
    return "".join(LINE.format(h=i % 7, a=i % 5, i=i, l=i % 977) for i in range(n)).encode()


class Process:
    def __init__(self, workdir: str, config: str) -> None:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "logpipe.toml")
        with open(path, "w") as f:
            f.write(config)
        self.log = open(os.path.join(workdir, "stderr.log"), "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "logpipe", "run", "-c", path], cwd=workdir,
                                     stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..")})
        self.workdir = workdir

    def api(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"logpipe exited: {open(self.log.name).read()[-2000:]}")
            with open(self.log.name) as f:
                for raw in f:
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        continue
                    if event.get("event") == "listening" and event.get("protocol") == "http":
                        return event["address"]
            time.sleep(0.05)
        raise RuntimeError("no API")

    def stats(self, api: str) -> dict:
        with urllib.request.urlopen(f"http://{api}/api/stats", timeout=5) as r:
            return json.load(r)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def common(data_dir: str) -> str:
    return f'[daemon]\ndata_dir = "{data_dir}"\nlog_format = "json"\nlog_level = "info"\nshutdown_timeout_s = 5\n' \
           f'[api]\nlisten = "127.0.0.1:0"\n'


def receiver(data_dir: str, server: str | None, per_message: int, stream: str) -> str:
    text = common(data_dir) + '[sources.syslog]\ntcp = "127.0.0.1:0"\n[enrich]\nhold_ms = 0\n'
    if server is None:
        return text + '[sinks.out]\ntype = "file"\npath = "out"\nrotate_bytes = 4000000000\n'
    return text + f"""[sinks.js]
type = "nats"
servers = ["{server}"]
subject = "{stream}.{{app_name}}"
default_subject = "{stream}.other"
stream = "{stream}"
create_stream = true
stream_subjects = ["{stream}.>"]
events_per_message = {per_message}
buffer = {{ type = "disk", max_bytes = 4000000000 }}
"""


def shipper(data_dir: str, server: str, stream: str) -> str:
    return common(data_dir) + f"""[sources.metadata]
udp = "127.0.0.1:0"
[sources.js]
type = "nats"
servers = ["{server}"]
stream = "{stream}"
consumer = "bench"
[sinks.out]
type = "file"
path = "out"
rotate_bytes = 4000000000
"""


def listening(proc: Process, api: str) -> tuple[str, int]:
    host, _, port = proc.stats(api)["listeners"]["syslog.tcp"].rpartition(":")
    return host, int(port)


def count_lines(paths: list[str]) -> int:
    total = 0
    for path in paths:
        if os.path.exists(path):
            with open(path, "rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def run_shape(root: str, server: NatsServer | None, per_message: int, shippers: int, data: bytes, n: int, tag: str) -> float:
    stream = f"B{tag}"
    rdir = os.path.join(root, f"r{tag}")
    r = Process(rdir, receiver(os.path.join(rdir, "data"), server.url if server else None, per_message, stream))
    others: list[Process] = []
    try:
        rapi = r.api()
        address = listening(r, rapi)
        if server is None:
            outputs = [os.path.join(rdir, "data", "out.ndjson")]
        else:
            # The stream exists once the receiver connected; shippers bind to it.
            for k in range(shippers):
                sdir = os.path.join(root, f"s{tag}{k}")
                others.append(Process(sdir, shipper(os.path.join(sdir, "data"), server.url, stream)))
            for proc in others:
                proc.api()
            outputs = [os.path.join(p.workdir, "data", "out.ndjson") for p in others]
        start = time.perf_counter()
        with socket.create_connection(address) as s:
            s.sendall(data)
        deadline = time.monotonic() + 300
        while count_lines(outputs) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {count_lines(outputs)} of {n} lines after 300 s")
            time.sleep(0.05)
        return n / (time.perf_counter() - start)
    finally:
        for proc in [*others, r]:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if BINARY is None:
        sys.exit("nats-server is not installed (apt-get install nats-server)")
    data = payload(args.lines)
    root = tempfile.mkdtemp(prefix="bench-nats-")
    print(f"working in {root}", file=sys.stderr, flush=True)
    server = NatsServer(os.path.join(root, "nats"))
    server.start()
    shapes = [("direct to file (no hop)", None, 1, 0), ("hop, 1 event/message", server, 1, 1),
              ("hop, 10 events/message", server, 10, 1), ("hop, 100 events/message", server, 100, 1),
              ("hop, 100/message, 2 shippers", server, 100, 2)]
    results: dict[str, list[float]] = {name: [] for name, *_ in shapes}
    try:
        for r in range(args.repeat):
            for k, (name, srv, per_message, shippers) in enumerate(shapes):
                results[name].append(run_shape(root, srv, per_message, shippers, data, args.lines, f"{r}x{k}"))
                print(f"  {name}: {results[name][-1]:,.0f} lines/s", file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(results[shapes[0][0]])
    print(f"{args.lines} lines per run, {args.repeat} runs, median lines/s (first byte to last line in the file)")
    print(f"{'shape':<32}{'lines/s':>10}{'vs direct':>11}   runs")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<32}{med:>10,.0f}{med / base:>10.2f}x   {', '.join(f'{v:,.0f}' for v in values)}")


if __name__ == "__main__":
    main()
